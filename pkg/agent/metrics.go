package agent

import (
	"errors"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/podvnet/podvnet/pkg/agentapi"
	"github.com/podvnet/podvnet/pkg/ipam"
	"github.com/podvnet/podvnet/pkg/maps"
)

// Metrics are what the agent exposes to Prometheus.
type Metrics struct {
	Registry *prometheus.Registry

	cniRequests *prometheus.CounterVec
	cniDuration *prometheus.HistogramVec
	reconciled  *prometheus.GaugeVec
}

// NewMetrics registers the agent's metrics, the Go runtime's and the
// process's, and build info.
func NewMetrics(version, commit string) *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		Registry: reg,
		cniRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "podvnet_cni_requests_total",
			Help: "CNI requests the agent answered, by operation (add, del) and result.",
		}, []string{"op", "result"}),
		cniDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "podvnet_cni_request_duration_seconds",
			Help:    "Time the agent took to answer a CNI request, by operation and result.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
		}, []string{"op", "result"}),
		reconciled: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "podvnet_reconcile_objects",
			Help: "What the last start-up reconcile found: endpoints kept, released, and strays removed.",
		}, []string{"outcome"}),
	}
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "podvnet_build_info",
		Help:        "Version of the running agent.",
		ConstLabels: prometheus.Labels{"version": version, "commit": commit, "goversion": runtime.Version()},
	})
	build.Set(1)
	reg.MustRegister(m.cniRequests, m.cniDuration, m.reconciled, build,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// observeCNI records one answered request; deferred with the named error.
func (m *Metrics) observeCNI(op string, start time.Time, errp *error) {
	if m == nil {
		return
	}
	err := *errp
	result := "success"
	var br badRequest
	switch {
	case err == nil:
	case errors.Is(err, ipam.ErrPoolExhausted):
		result = agentapi.CodePoolExhausted
	case errors.Is(err, ErrPolicyUnknown):
		result = agentapi.CodePolicyUnknown
	case errors.As(err, &br):
		result = agentapi.CodeBadRequest
	default:
		result = "error"
	}
	m.cniRequests.WithLabelValues(op, result).Inc()
	m.cniDuration.WithLabelValues(op, result).Observe(time.Since(start).Seconds())
}

func (m *Metrics) setReconciled(outcome string, n int) {
	if m != nil {
		m.reconciled.WithLabelValues(outcome).Set(float64(n))
	}
}

// registerAgent adds the metrics read from a running agent on each scrape:
// the pool and the data path counters.
func (m *Metrics) registerAgent(a *Agent) {
	if m == nil {
		return
	}
	pool := func(state string, f func() float64) prometheus.GaugeFunc {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "podvnet_pool_addresses",
			Help: "Pod addresses of this node: limit (min of --max-pods and secondary IPs), allocated, free, " +
				"and withdrawn (held by a pod but no longer listed by the pool source).",
			ConstLabels: prometheus.Labels{"state": state},
		}, f)
	}
	m.Registry.MustRegister(
		pool("limit", func() float64 { return float64(a.alloc.Limit()) }),
		pool("allocated", func() float64 { return float64(a.alloc.Allocated()) }),
		pool("free", func() float64 { return float64(a.alloc.Free()) }),
		pool("withdrawn", func() float64 { return float64(len(a.alloc.Withdrawn())) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "podvnet_host_veth_jobs",
			Help: "Pods' host veths with background work not yet done (attaching from_pod after an ADD, deleting the veth after a DEL): 0 when the agent is idle.",
		}, func() float64 { return float64(a.jobs.inFlight()) }),
		&datapathCollector{counters: a.dp.Maps.Counters},
		endpointCollector{alloc: a.alloc},
	)
}

// endpointCollector names the pod of every endpoint on each scrape, the
// join key for anything measured per pod IP. Kubernetes labels stay out:
// they would multiply the series.
type endpointCollector struct{ alloc *ipam.Allocator }

var endpointInfoDesc = prometheus.NewDesc("podvnet_endpoint_info",
	"One per endpoint of this node: its IP and its pod's namespace and name (empty when the runtime passed none).",
	[]string{"ip", "namespace", "pod"}, nil)

func (c endpointCollector) Describe(ch chan<- *prometheus.Desc) { ch <- endpointInfoDesc }

func (c endpointCollector) Collect(ch chan<- prometheus.Metric) {
	for _, al := range c.alloc.List() {
		ch <- prometheus.MustNewConstMetric(endpointInfoDesc, prometheus.GaugeValue, 1, al.IP.String(), al.PodNamespace, al.PodName)
	}
}

// datapathCollector reads the per-CPU counters map on each scrape.
type datapathCollector struct{ counters *maps.Counters }

var (
	packetsDesc = prometheus.NewDesc("podvnet_datapath_packets_total",
		"Packets the tc programs handled, by reason and verdict (redirect, pass, drop).", []string{"reason", "verdict"}, nil)
	bytesDesc = prometheus.NewDesc("podvnet_datapath_bytes_total",
		"Bytes the tc programs handled, by reason and verdict.", []string{"reason", "verdict"}, nil)
)

func (c *datapathCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- packetsDesc
	ch <- bytesDesc
}

func (c *datapathCollector) Collect(ch chan<- prometheus.Metric) {
	all, err := c.counters.All()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(packetsDesc, err)
		return
	}
	for _, e := range all {
		ch <- prometheus.MustNewConstMetric(packetsDesc, prometheus.CounterValue, float64(e.Packets), e.Reason.String(), e.Reason.Verdict())
		ch <- prometheus.MustNewConstMetric(bytesDesc, prometheus.CounterValue, float64(e.Bytes), e.Reason.String(), e.Reason.Verdict())
	}
}
