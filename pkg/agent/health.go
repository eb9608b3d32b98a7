package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Paths of the agent's HTTP endpoint (--metrics-addr). The DaemonSet's
// probes use HealthzPath (liveness) and ReadyzPath (readiness).
const (
	DefaultMetricsAddr = ":9965"
	HealthzPath        = "/healthz"
	ReadyzPath         = "/readyz"
	MetricsPath        = "/metrics"
)

// Readiness is whether the agent can serve pods, and if not, why. Make one
// with NewReadiness.
type Readiness struct {
	mu     sync.Mutex
	ready  bool
	reason string
	first  chan struct{} // closed when first ready
	once   bool          // first is closed
}

// NewReadiness starts not ready, for reason.
func NewReadiness(reason string) *Readiness {
	return &Readiness{reason: reason, first: make(chan struct{})}
}

// Set records the current state.
func (r *Readiness) Set(ready bool, reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ready, r.reason = ready, reason
	if ready && !r.once {
		close(r.first)
		r.once = true
	}
}

// FirstReady is closed the first time the agent is ready (the socket
// serves) and stays closed: what must not happen before a pod can be
// served, such as installing the CNI config, waits for it.
func (r *Readiness) FirstReady() <-chan struct{} { return r.first }

// Get returns the current state.
func (r *Readiness) Get() (bool, string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ready, r.reason
}

// ServeHTTP starts the metrics and health endpoint. /healthz answers as long
// as the process runs; /readyz only once programs are attached, the pool is
// known and the plugin socket serves. It listens before the agent starts
// so probes see a starting agent as alive but not ready.
func ServeHTTP(addr string, m *Metrics, ready *Readiness) (*http.Server, error) {
	mux := http.NewServeMux()
	mux.HandleFunc(HealthzPath, func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc(ReadyzPath, func(w http.ResponseWriter, _ *http.Request) {
		ok, reason := ready.Get()
		if !ok {
			http.Error(w, "not ready: "+reason, http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.Handle(MetricsPath, promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	// The index lists what is served, for whoever curls the port.
	mux.HandleFunc("/{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode([]string{HealthzPath, ReadyzPath, MetricsPath})
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			ready.Set(false, "metrics endpoint failed: "+err.Error())
		}
	}()
	return srv, nil
}
