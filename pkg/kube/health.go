package kube

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/kubernetes"
)

// APIStatus says whether the API server answers.
type APIStatus struct {
	Up bool
	// Since is when the API server last became reachable or unreachable;
	// zero before the first answer or failure.
	Since time.Time
	// LastSuccess is when the API server last answered.
	LastSuccess time.Time
	// Err is why it is unreachable.
	Err error
}

// How often the API server's /readyz is asked: rarely while it answers
// (every node's agent asks, and broken watches say sooner that it went
// away), often while it does not, to report its return quickly.
const (
	healthEvery     = 30 * time.Second
	healthEveryDown = 2 * time.Second
	healthTimeout   = 5 * time.Second
)

// health tracks the API server's reachability from its /readyz (open to
// every authenticated client: no RBAC rule is needed) and from the
// informers' failing watches.
type health struct {
	ping      func(context.Context) error // nil: never asked (tests)
	every     time.Duration
	downEvery time.Duration
	log       *zap.Logger
	onChange  func(APIStatus)
	kick      chan struct{}

	mu sync.Mutex
	st APIStatus
	// known: an answer or a failure was seen.
	known bool

	up          prometheus.Gauge
	lastSuccess prometheus.Gauge
}

// readyz asks the API server's /readyz.
func readyz(cs kubernetes.Interface) func(context.Context) error {
	return func(ctx context.Context) error {
		return cs.Discovery().RESTClient().Get().AbsPath("/readyz").Timeout(healthTimeout).Do(ctx).Error()
	}
}

func newHealth(ping func(context.Context) error, reg prometheus.Registerer, onChange func(APIStatus), log *zap.Logger) *health {
	h := &health{
		ping: ping, every: healthEvery, downEvery: healthEveryDown,
		log: log, onChange: onChange, kick: make(chan struct{}, 1),
		up: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "podvnet_apiserver_up",
			Help: "1 while the Kubernetes API server answers the agent, 0 while it does not (CNI and forwarding go on either way).",
		}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "podvnet_apiserver_last_success_timestamp_seconds",
			Help: "When the Kubernetes API server last answered the agent (Unix time).",
		}),
	}
	if reg != nil {
		reg.MustRegister(h.up, h.lastSuccess)
	}
	return h
}

func (h *health) status() APIStatus {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.st
}

// run asks /readyz until ctx ends.
func (h *health) run(ctx context.Context) {
	if h.ping == nil {
		return
	}
	for {
		err := h.ping(ctx)
		if ctx.Err() != nil {
			return
		}
		h.set(err)
		wait := h.every
		if err != nil {
			wait = h.downEvery
		}
		select {
		case <-ctx.Done():
			return
		case <-h.kick:
		case <-time.After(wait):
		}
	}
}

// watchFailed is told of every failed list or watch. The end of a watch
// (EOF) is how watches normally end, and an error the API server answered
// (an expired resource version, forbidden) says it is there.
func (h *health) watchFailed(err error) {
	var answered apierrors.APIStatus
	if errors.Is(err, io.EOF) || errors.As(err, &answered) {
		return
	}
	h.set(err)
	// Check again soon: the answer, not the watch's backoff, says when it
	// is back.
	select {
	case h.kick <- struct{}{}:
	default:
	}
}

// set records an answer (err nil) or a failure and reports a change.
func (h *health) set(err error) {
	now := time.Now()
	h.mu.Lock()
	changed := !h.known || h.st.Up != (err == nil)
	h.known = true
	if changed {
		h.st.Since = now
	}
	h.st.Up, h.st.Err = err == nil, err
	if err == nil {
		h.st.LastSuccess = now
	}
	st := h.st
	h.mu.Unlock()

	if st.Up {
		h.up.Set(1)
		h.lastSuccess.Set(float64(now.UnixNano()) / 1e9)
	} else {
		h.up.Set(0)
	}
	if !changed {
		return
	}
	if st.Up {
		h.log.Info("Kubernetes API server reachable")
	} else {
		h.log.Warn("Kubernetes API server unreachable; CNI and forwarding go on, the node's status and Events wait",
			zap.Error(err))
	}
	if h.onChange != nil {
		h.onChange(st)
	}
}
