package agent

import (
	"net/netip"

	"github.com/prometheus/client_golang/prometheus"
)

// NetworkPolicy's metrics: per pod and direction, read from the per-endpoint
// statistics on each scrape; and how long an update takes to reach the
// maps.
var (
	policyDropsDesc = prometheus.NewDesc("podvnet_policy_drops_total",
		"Packets NetworkPolicy dropped, by pod and direction (ingress: into the pod, egress: out of it).",
		[]string{"namespace", "pod", "direction"}, nil)
	policyFlowsDesc = prometheus.NewDesc("podvnet_policy_flows_total",
		"New flows NetworkPolicy allowed, by pod and direction.", []string{"namespace", "pod", "direction"}, nil)
)

// registerPolicy adds the NetworkPolicy metrics, and returns the histogram
// of update times (nil without metrics).
func (m *Metrics) registerPolicy(a *Agent) prometheus.Histogram {
	if m == nil {
		return nil
	}
	sync := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "podvnet_policy_sync_duration_seconds",
		Help:    "Time from a change of the cluster's pods, namespaces or NetworkPolicies reaching the agent to the maps holding it.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	})
	m.Registry.MustRegister(policyCollector{a: a}, sync)
	return sync
}

// policyCollector reads each endpoint's policy statistics.
type policyCollector struct{ a *Agent }

func (c policyCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- policyDropsDesc
	ch <- policyFlowsDesc
}

func (c policyCollector) Collect(ch chan<- prometheus.Metric) {
	pods := map[netip.Addr][2]string{}
	for _, al := range c.a.alloc.List() {
		pods[al.IP] = [2]string{al.PodNamespace, al.PodName}
	}
	for ip, id := range c.a.policy.writer.Endpoints() {
		st, err := c.a.dp.Maps.Policy.Stats(id)
		if err != nil {
			ch <- prometheus.NewInvalidMetric(policyDropsDesc, err)
			return
		}
		pod, ok := pods[ip]
		if !ok {
			continue
		}
		for dir, name := range [2]string{"ingress", "egress"} {
			ch <- prometheus.MustNewConstMetric(policyDropsDesc, prometheus.CounterValue, float64(st.Denied[dir]), pod[0], pod[1], name)
			ch <- prometheus.MustNewConstMetric(policyFlowsDesc, prometheus.CounterValue, float64(st.Flows[dir]), pod[0], pod[1], name)
		}
	}
}
