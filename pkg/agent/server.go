package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/podvnet/podvnet/pkg/agentapi"
	"github.com/podvnet/podvnet/pkg/ipam"
)

func newServer(a *Agent) *http.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+agentapi.PathEndpoints, func(w http.ResponseWriter, r *http.Request) {
		var req agentapi.AddRequest
		if !decode(w, r, &req) {
			return
		}
		start := time.Now()
		resp, err := a.Add(r.Context(), req)
		a.metrics.observeCNI("add", start, err)
		if err != nil {
			a.writeError(w, "ADD", err)
			return
		}
		writeJSON(w, http.StatusOK, resp)
	})
	mux.HandleFunc("DELETE "+agentapi.PathEndpoints, func(w http.ResponseWriter, r *http.Request) {
		var req agentapi.DelRequest
		if !decode(w, r, &req) {
			return
		}
		start := time.Now()
		err := a.Del(r.Context(), req)
		a.metrics.observeCNI("del", start, err)
		if err != nil {
			a.writeError(w, "DEL", err)
			return
		}
		writeJSON(w, http.StatusOK, struct{}{})
	})
	mux.HandleFunc("GET "+agentapi.PathStatus, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, a.Status())
	})
	return &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
}

// decode reads one JSON object of bounded size with no unknown fields.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, agentapi.MaxBodyBytes))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil && dec.Decode(&struct{}{}) != io.EOF {
		err = errors.New("trailing data after the JSON object")
	}
	if err != nil {
		var tooBig *http.MaxBytesError
		status := http.StatusBadRequest
		if errors.As(err, &tooBig) {
			status = http.StatusRequestEntityTooLarge
		}
		writeJSON(w, status, agentapi.ErrorResponse{Code: agentapi.CodeBadRequest, Message: "decode request: " + err.Error()})
		return false
	}
	return true
}

func (a *Agent) writeError(w http.ResponseWriter, op string, err error) {
	var br badRequest
	switch {
	case errors.As(err, &br):
		writeJSON(w, http.StatusBadRequest, agentapi.ErrorResponse{Code: agentapi.CodeBadRequest, Message: err.Error()})
	case errors.Is(err, ipam.ErrPoolExhausted):
		writeJSON(w, http.StatusServiceUnavailable, agentapi.ErrorResponse{Code: agentapi.CodePoolExhausted, Message: err.Error()})
	default:
		a.log.Error(op+" failed", zap.Error(err))
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
