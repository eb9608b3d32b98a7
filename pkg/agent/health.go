package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
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
// with NewReadiness. Besides the agent's own progress (Set), it holds
// faults, fatal conditions found while running (the NIC gone, the pool
// lost), which make it not ready until cleared, and details, which /readyz
// reports without changing the verdict (the API server unreachable: the
// node's CNI must not go down with the control plane).
type Readiness struct {
	mu      sync.Mutex
	ready   bool
	reason  string
	faults  map[string]string // what failed -> the cause
	details map[string]string // topic -> what to report
	first   chan struct{}     // closed when first ready
	once    bool              // first is closed
	subs    []chan struct{}
}

// NewReadiness starts not ready, for reason.
func NewReadiness(reason string) *Readiness {
	return &Readiness{reason: reason, first: make(chan struct{}), faults: map[string]string{}, details: map[string]string{}}
}

// Set records the agent's own progress: ready once it serves.
func (r *Readiness) Set(ready bool, reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	changed := r.ready != ready || r.reason != reason
	r.ready, r.reason = ready, reason
	if ready && !r.once {
		close(r.first)
		r.once = true
	}
	if changed {
		r.notify()
	}
}

// SetFault records a fatal condition of what ("nic", "pool"), or clears it
// with an empty cause, and says whether that changed anything.
func (r *Readiness) SetFault(what, cause string) bool {
	return r.setIn(r.faults, what, cause)
}

// HasFault says whether a fault of what is recorded.
func (r *Readiness) HasFault(what string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.faults[what]
	return ok
}

// SetDetail records what /readyz reports about topic, or clears it with
// an empty text. Details never make the agent unready.
func (r *Readiness) SetDetail(topic, text string) { r.setIn(r.details, topic, text) }

func (r *Readiness) setIn(m map[string]string, key, value string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if m[key] == value {
		return false
	}
	if value == "" {
		delete(m, key)
	} else {
		m[key] = value
	}
	r.notify()
	return true
}

// notify wakes every subscriber; the caller holds r.mu.
func (r *Readiness) notify() {
	for _, ch := range r.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// Changed returns a channel that receives after each change (changes in a
// burst may arrive as one).
func (r *Readiness) Changed() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	ch := make(chan struct{}, 1)
	r.subs = append(r.subs, ch)
	return ch
}

// FirstReady is closed the first time the agent is ready (the socket
// serves) and stays closed: what must not happen before a pod can be
// served, such as installing the CNI config, waits for it.
func (r *Readiness) FirstReady() <-chan struct{} { return r.first }

// Get returns the current state: ready when the agent serves and no fault
// is recorded; otherwise why not.
func (r *Readiness) Get() (bool, string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if f := joinValues(r.faults); f != "" {
		return false, f
	}
	return r.ready, r.reason
}

// Faults returns the recorded faults, joined; empty when there are none.
func (r *Readiness) Faults() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return joinValues(r.faults)
}

// Details returns the details, one "topic: text" each, sorted.
func (r *Readiness) Details() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, k := range slices.Sorted(maps.Keys(r.details)) {
		out = append(out, k+": "+r.details[k])
	}
	return out
}

// joinValues joins m's values in the order of its keys.
func joinValues(m map[string]string) string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, m[k])
	}
	return strings.Join(out, "; ")
}

// readyzHandler answers 200 "ready" or 503 "not ready: why", then one line
// per detail.
func readyzHandler(ready *Readiness) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		ok, reason := ready.Get()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		if ok {
			fmt.Fprintln(w, "ready")
		} else {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "not ready: "+reason)
		}
		for _, d := range ready.Details() {
			fmt.Fprintln(w, d)
		}
	})
}

// ServeHTTP starts the metrics and health endpoint. /healthz answers as long
// as the process runs; /readyz only once programs are attached, the pool is
// known and the plugin socket serves, and while no fault is recorded; its
// body adds the details (whether the API server answers), which do not
// change the status code. It listens before the agent starts so probes see
// a starting agent as alive but not ready.
func ServeHTTP(addr string, m *Metrics, ready *Readiness) (*http.Server, error) {
	mux := http.NewServeMux()
	mux.HandleFunc(HealthzPath, func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.Handle(ReadyzPath, readyzHandler(ready))
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
