package agent

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	"golang.org/x/sys/unix"

	"github.com/podvnet/podvnet/internal/nettest"
	"github.com/podvnet/podvnet/internal/strictjson"
	"github.com/podvnet/podvnet/pkg/agentapi"
	"github.com/podvnet/podvnet/pkg/ipam"
)

// fakeAPI answers every call and counts them; err, when set, is every
// call's error.
type fakeAPI struct {
	calls atomic.Int32
	err   error
}

func (f *fakeAPI) Add(context.Context, agentapi.AddRequest) (agentapi.AddResponse, error) {
	f.calls.Add(1)
	return agentapi.AddResponse{IP: "10.240.0.5/32"}, f.err
}

func (f *fakeAPI) Del(context.Context, agentapi.DelRequest) error { f.calls.Add(1); return f.err }

func (f *fakeAPI) Check(context.Context, agentapi.CheckRequest) (agentapi.CheckResponse, error) {
	f.calls.Add(1)
	return agentapi.CheckResponse{Problems: []string{}}, f.err
}

func (f *fakeAPI) GC(context.Context, agentapi.GCRequest) (agentapi.GCResponse, error) {
	f.calls.Add(1)
	return agentapi.GCResponse{}, f.err
}

func (f *fakeAPI) Status() agentapi.Status { f.calls.Add(1); return agentapi.Status{Ready: true} }

func call(t *testing.T, h http.Handler, method, path, body string) (int, agentapi.ErrorResponse) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, strings.NewReader(body)))
	var e agentapi.ErrorResponse
	if rec.Code/100 != 2 {
		if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil {
			t.Fatalf("%s %s: %d with a body that is not a JSON error: %q", method, path, rec.Code, rec.Body.String())
		}
	}
	return rec.Code, e
}

// TestAPIContract: the API is versioned, strict about its input and
// answers every error in JSON; a refused request never reaches the agent.
func TestAPIContract(t *testing.T) {
	big := make([]agentapi.Attachment, 250)
	for i := range big {
		big[i] = agentapi.Attachment{ContainerID: fmt.Sprintf("%064x", i), IfName: "eth0"}
	}
	bigGC, _ := json.Marshal(agentapi.GCRequest{Network: "podvnet", Valid: big})
	tooBig := `{"network":"` + strings.Repeat("x", agentapi.MaxBodyBytes) + `","container_id":"a","ifname":"eth0"}`
	tests := []struct {
		name, method, path, body string
		status                   int
		msg                      string // in the error message
	}{
		{"add", "POST", "/v1/endpoints", `{"container_id":"a","ifname":"eth0"}`, 200, ""},
		{"del", "DELETE", "/v1/endpoints", `{"container_id":"a","ifname":"eth0"}`, 200, ""},
		{"check", "POST", "/v1/endpoints/check", `{"container_id":"a","ifname":"eth0","ip":"10.240.0.5"}`, 200, ""},
		{"gc of 250 pods", "POST", "/v1/gc", string(bigGC), 200, ""},
		{"status", "GET", "/v1/status", "", 200, ""},
		{"index", "GET", "/v1", "", 200, ""},
		{"unknown field", "POST", "/v1/endpoints", `{"container_id":"a","ifname":"eth0","colour":"red"}`, 400, `unknown field "colour"`},
		{"wrong type", "DELETE", "/v1/endpoints", `{"container_id":7}`, 400, "container_id"},
		{"trailing data", "POST", "/v1/endpoints", `{"container_id":"a"}{"container_id":"b"}`, 400, "trailing data"},
		{"not JSON", "POST", "/v1/gc", `network=podvnet`, 400, "invalid character"},
		{"empty body", "POST", "/v1/endpoints/check", ``, 400, "EOF"},
		{"oversized body", "POST", "/v1/endpoints", tooBig, 413, fmt.Sprintf("larger than %d bytes", agentapi.MaxBodyBytes)},
		{"another version", "POST", "/v2/endpoints", `{}`, 404, "/v1/endpoints"},
		{"unversioned", "GET", "/status", ``, 404, "/v1/status"},
		{"wrong method", "PUT", "/v1/endpoints", `{}`, 404, "not served"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api := &fakeAPI{}
			status, e := call(t, newAPIServer(api, zaptest.NewLogger(t)).Handler, tt.method, tt.path, tt.body)
			if status != tt.status || !strings.Contains(e.Message, tt.msg) {
				t.Fatalf("%d %+v, want %d with a message containing %q", status, e, tt.status, tt.msg)
			}
			if tt.status != 200 && api.calls.Load() != 0 {
				t.Fatal("a refused request reached the agent")
			}
		})
	}
}

func TestAPIErrorCodes(t *testing.T) {
	tests := []struct {
		err    error
		status int
		code   string
	}{
		{fmt.Errorf("allocate: %w: all 30 addresses in use", ipam.ErrPoolExhausted), 503, agentapi.CodePoolExhausted},
		{errBadRequest("host_ifname %q does not match", "x"), 400, agentapi.CodeBadRequest},
		{errors.New("attach tcx: boom"), 500, agentapi.CodeInternal},
	}
	for _, tt := range tests {
		t.Run(tt.code, func(t *testing.T) {
			h := newAPIServer(&fakeAPI{err: tt.err}, zaptest.NewLogger(t)).Handler
			status, e := call(t, h, "POST", "/v1/endpoints", `{"container_id":"a","ifname":"eth0"}`)
			if status != tt.status || e.Code != tt.code || e.Message != tt.err.Error() {
				t.Fatalf("%d %+v, want %d %s %q", status, e, tt.status, tt.code, tt.err)
			}
		})
	}
}

// FuzzDecode feeds the API's request decoder arbitrary bodies: it never
// panics, refuses with a JSON 400/413, and what it accepts is a request that
// fits the size limit and survives a round trip unchanged.
func FuzzDecode(f *testing.F) {
	for _, seed := range []string{
		`{"network":"podvnet","container_id":"a","ifname":"eth0","netns":"/run/netns/x","host_ifname":"pv0123456789ab","pod_mac":"02:00:00:00:00:01","pod_namespace":"default","pod_name":"web","pod_uid":"u"}`,
		`{"network":"podvnet","valid":[{"container_id":"a","ifname":"eth0"}]}`,
		`{"network":"podvnet","valid":null}`,
		`{"container_id":"a","colour":"red"}`,
		`{"container_id":"a"} {"x":1}`,
		`{"container_id":"\ud800"}`,
		`{"ip":1e400}`,
		`[`, `null`, ``, "\x00",
		`{"network":"` + strings.Repeat("x", agentapi.MaxBodyBytes) + `"}`,
	} {
		f.Add([]byte(seed))
	}
	targets := []func() any{
		func() any { return &agentapi.AddRequest{} }, func() any { return &agentapi.DelRequest{} },
		func() any { return &agentapi.CheckRequest{} }, func() any { return &agentapi.GCRequest{} },
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, newReq := range targets {
			req := newReq()
			rec := httptest.NewRecorder()
			if !decode(rec, httptest.NewRequest("POST", "/v1/x", bytes.NewReader(body)), req) {
				var e agentapi.ErrorResponse
				if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Code != agentapi.CodeBadRequest {
					t.Fatalf("refusal is not a JSON bad_request: %d %q", rec.Code, rec.Body.String())
				}
				if rec.Code != 400 && !(rec.Code == 413 && len(body) > agentapi.MaxBodyBytes) {
					t.Fatalf("refused %d bytes with status %d", len(body), rec.Code)
				}
				continue
			}
			if len(body) > agentapi.MaxBodyBytes {
				t.Fatalf("accepted %d bytes, more than the limit", len(body))
			}
			again, err := json.Marshal(req)
			if err != nil {
				t.Fatal(err)
			}
			back := newReq()
			if err := strictjson.Unmarshal(again, back); err != nil || !reflect.DeepEqual(req, back) {
				t.Fatalf("accepted %q as %+v, which comes back as %+v (%v)", body, req, back, err)
			}
		}
	})
}

// asUser runs f on a thread whose effective uid is uid (capabilities
// dropped, as for any non-root process). The thread is never handed back
// to the runtime: it ends with the goroutine, credentials and all.
func asUser(uid int, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// setresuid(-1, uid, -1) on this thread only; the syscall package
		// would change every thread of the process.
		if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), uintptr(uid), ^uintptr(0)); e != 0 {
			errc <- fmt.Errorf("setresuid: %w", e)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// statusOver asks GET /v1/status over a connection made on this thread, so
// the connecting credentials are the thread's.
func statusOver(socket string) error {
	c, err := net.DialTimeout("unix", socket, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: podvnet-agent\r\nConnection: close\r\n\r\n", agentapi.PathStatus); err != nil {
		return err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("status %s", resp.Status)
	}
	return nil
}

// TestSocketRootOnly: root is served; anyone else cannot connect (mode
// 0600), and is dropped even when the mode is opened up (SO_PEERCRED).
func TestSocketRootOnly(t *testing.T) {
	nettest.RequireRoot(t)
	const nobody = 65534
	// Others may traverse the directory (t.TempDir's parent is 0700), so
	// the socket's own mode is what keeps them out.
	dir, err := os.MkdirTemp("", "podvnet-socket-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	socket := filepath.Join(dir, "agent.sock")
	ln, err := listenUnix(socket)
	if err != nil {
		t.Fatal(err)
	}
	api := &fakeAPI{}
	srv := newAPIServer(api, zaptest.NewLogger(t))
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	st, err := os.Stat(socket)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want 0600", st.Mode().Perm())
	}
	if err := statusOver(socket); err != nil {
		t.Fatalf("root: %v", err)
	}
	served := api.calls.Load()

	err = asUser(nobody, func() error { return statusOver(socket) })
	if !errors.Is(err, unix.EACCES) {
		t.Fatalf("uid %d through mode 0600: %v, want permission denied", nobody, err)
	}
	if err := os.Chmod(socket, 0o666); err != nil {
		t.Fatal(err)
	}
	err = asUser(nobody, func() error { return statusOver(socket) })
	if err == nil || errors.Is(err, unix.EACCES) {
		t.Fatalf("uid %d through mode 0666: %v, want a connection that is dropped", nobody, err)
	}
	if api.calls.Load() != served {
		t.Fatal("a non-root peer reached the agent")
	}
	// The control: the same request as root still works.
	if err := statusOver(socket); err != nil {
		t.Fatalf("root after the refusals: %v", err)
	}
}
