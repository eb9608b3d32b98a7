package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/podvnet/podvnet/internal/strictjson"
	"github.com/podvnet/podvnet/pkg/agentapi"
	"github.com/podvnet/podvnet/pkg/ipam"
)

// endpointAPI is what the socket serves. *Agent implements it; the server's
// tests use a fake, so the HTTP contract is tested without a data path.
type endpointAPI interface {
	Add(context.Context, agentapi.AddRequest) (agentapi.AddResponse, error)
	Del(context.Context, agentapi.DelRequest) error
	Check(context.Context, agentapi.CheckRequest) (agentapi.CheckResponse, error)
	GC(context.Context, agentapi.GCRequest) (agentapi.GCResponse, error)
	Status() agentapi.Status
}

func newServer(a *Agent) *http.Server { return newAPIServer(a, a.log) }

// apiPaths is what GET /v1 answers: the API describes itself.
var apiPaths = []string{
	"POST " + agentapi.PathEndpoints, "DELETE " + agentapi.PathEndpoints,
	"POST " + agentapi.PathCheck, "POST " + agentapi.PathGC, "GET " + agentapi.PathStatus,
}

func newAPIServer(api endpointAPI, log *zap.Logger) *http.Server {
	mux := http.NewServeMux()
	mux.Handle("POST "+agentapi.PathEndpoints, handle(log, "ADD", api.Add))
	mux.Handle("DELETE "+agentapi.PathEndpoints, handle(log, "DEL", func(ctx context.Context, req agentapi.DelRequest) (struct{}, error) {
		return struct{}{}, api.Del(ctx, req)
	}))
	mux.Handle("POST "+agentapi.PathCheck, handle(log, "CHECK", api.Check))
	mux.Handle("POST "+agentapi.PathGC, handle(log, "GC", api.GC))
	mux.HandleFunc("GET "+agentapi.PathStatus, func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, api.Status())
	})
	mux.HandleFunc("GET "+agentapi.PathIndex, func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string][]string{"paths": apiPaths})
	})
	// Anything else, including another API version, gets a JSON answer that
	// says what this agent serves.
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, agentapi.ErrorResponse{Code: agentapi.CodeNotFound,
			Message: fmt.Sprintf("%s %s: not served; this agent serves %v", r.Method, r.URL.Path, apiPaths)})
	})
	return &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
}

// handle decodes the request strictly, calls fn and encodes its answer or
// error.
func handle[Req, Resp any](log *zap.Logger, op string, fn func(context.Context, Req) (Resp, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req Req
		if !decode(w, r, &req) {
			return
		}
		resp, err := fn(r.Context(), req)
		if err != nil {
			writeError(w, log, op, err)
			return
		}
		writeJSON(w, http.StatusOK, resp)
	})
}

// decode reads one JSON object of bounded size with no unknown fields and
// answers 400 (413 when too big) if it is not one.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	err := strictjson.Decode(http.MaxBytesReader(w, r.Body, agentapi.MaxBodyBytes), v)
	if err == nil {
		return true
	}
	status := http.StatusBadRequest
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		status = http.StatusRequestEntityTooLarge
		err = fmt.Errorf("body larger than %d bytes", agentapi.MaxBodyBytes)
	}
	writeJSON(w, status, agentapi.ErrorResponse{Code: agentapi.CodeBadRequest, Message: "decode request: " + err.Error()})
	return false
}

func writeError(w http.ResponseWriter, log *zap.Logger, op string, err error) {
	var br badRequest
	switch {
	case errors.As(err, &br):
		writeJSON(w, http.StatusBadRequest, agentapi.ErrorResponse{Code: agentapi.CodeBadRequest, Message: err.Error()})
	case errors.Is(err, ipam.ErrPoolExhausted):
		writeJSON(w, http.StatusServiceUnavailable, agentapi.ErrorResponse{Code: agentapi.CodePoolExhausted, Message: err.Error()})
	case errors.Is(err, ErrPolicyUnknown):
		log.Warn(op+" refused", zap.Error(err))
		writeJSON(w, http.StatusServiceUnavailable, agentapi.ErrorResponse{Code: agentapi.CodePolicyUnknown, Message: err.Error()})
	default:
		log.Error(op+" failed", zap.Error(err))
		writeJSON(w, http.StatusInternalServerError, agentapi.ErrorResponse{Code: agentapi.CodeInternal, Message: err.Error()})
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// listenUnix opens the API socket, readable and writable by root only, and
// accepts only peers whose credentials say root.
func listenUnix(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create socket dir: %w", err)
	}
	// A socket file left by a killed agent would make bind fail.
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("remove stale socket %s: %w", path, err)
	}
	old := syscall.Umask(0o177)
	ln, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("chmod %s: %w", path, err)
	}
	return &rootOnlyListener{ln.(*net.UnixListener)}, nil
}

// rootOnlyListener drops connections from non-root peers. The file mode
// already keeps them out; this holds even if the mode is changed.
type rootOnlyListener struct{ *net.UnixListener }

func (l *rootOnlyListener) Accept() (net.Conn, error) {
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			return nil, err
		}
		if peerIsRoot(c) {
			return c, nil
		}
		c.Close()
	}
}

func peerIsRoot(c *net.UnixConn) bool {
	raw, err := c.SyscallConn()
	if err != nil {
		return false
	}
	var cred *unix.Ucred
	raw.Control(func(fd uintptr) {
		cred, err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	})
	return err == nil && cred != nil && cred.Uid == 0
}
