package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRenderSaved: a report written again from the results a run saved
// beside it is the report the run wrote.
func TestRenderSaved(t *testing.T) {
	r := &Results{Rounds: 3, Seconds: 3, ExecMS: map[string]float64{"podvnet": 2.9, "ptp": 2.0, "host-local": 2.0},
		ServicesLoaded: 5000, ServicesInLockstep: true, Kube: &KubeMemory{PodsInAPI: 5000, Nodes: 101, LocalPods: 30, RSSMiB: 48.5, PeakRSSMiB: 50},
		Services: []ServiceRow{
			{Path: pathLimit, UDPKpps: stat([]float64{420, 430, 410}), RRP50: stat([]float64{6.5, 6.4, 6.6}), CRR: stat([]float64{19000, 19100, 18900})},
			{Path: pathFloor, UDPKpps: stat([]float64{410, 415, 405}), RRP50: stat([]float64{6.9, 6.8, 7.0}), CRR: stat([]float64{18900, 19000, 18800})},
			{Path: pathBPF, UDPKpps: stat([]float64{400, 410, 390}), RRP50: stat([]float64{8.4, 8.3, 8.5}), CRR: stat([]float64{18000, 18100, 17900})},
			{Path: pathDirect, UDPKpps: stat([]float64{390, 420, 380}), RRP50: stat([]float64{8.2, 8.1, 8.4}), CRR: stat([]float64{18800, 18900, 18700})},
			{Path: "ptp + kube-proxy nftables", UDPKpps: stat([]float64{330, 331, 332}), RRP50: stat([]float64{8.6, 8.6, 8.7}), CRR: stat([]float64{18000, 18066, 18100})},
		},
		Changes: []ChangeRow{{Path: pathBPF, Changes: 20, P50MS: 3.8, P99MS: 8.6, MaxMS: 8.6}},
		ProgCost: []ProgCostRow{
			{Program: "from_pod", Path: pathCachedNextHop, Conntrack: ctByPort, Services: true, NsPerPkt: stat([]float64{88, 90, 86})},
			{Program: "from_nic", Path: pathFromNIC, Conntrack: ctByPort, Services: true, NsPerPkt: stat([]float64{43, 44, 42})},
		},
	}
	r.compare()
	r.evaluate()
	md := filepath.Join(t.TempDir(), "benchmarks.md")
	if err := r.saveMarkdown(md); err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(md)
	if err != nil {
		t.Fatal(err)
	}
	again := filepath.Join(t.TempDir(), "again.md")
	if err := renderSaved(savedResults(md), again); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(again)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Errorf("rendered again:\n%s\nwant:\n%s", got, want)
	}
	for _, why := range []string{"Even the direct path, with no Service at all", "The node-to-node limit measured beside them",
		"takes 1.06x (1.06-1.06) the limit's round trip and is 1.25x (1.24-1.26) faster than ptp + kube-proxy nftables: in no round does a pod path on veths reach 1.3x",
		"podvnet's direct path takes 1.19x (1.19-1.20) the floor's (+1.3 us), of which its programs' own time is 0.26 us"} {
		if !strings.Contains(string(want), why) {
			t.Errorf("the report does not explain the Service target against ptp + kube-proxy (%q):\n%s", why, want)
		}
	}
}

// TestRenderRefusesOlderResults: results measured before the lockstep rows
// (sockperf in the machine line) or before the Service configurations ran
// at once are not written again under a report that describes another
// method.
func TestRenderRefusesOlderResults(t *testing.T) {
	for _, c := range []struct{ saved, why string }{
		{`{"machine":{"date":"2026-12-01 01:30 UTC","sockperf":"sockperf, version 3.7-no.git"},"rounds":5}`, "before UDP and RR ran in lockstep"},
		{`{"machine":{"date":"2026-12-01 04:48 UTC"},"rounds":5,"services":[{"path":"podvnet bpf"}]}`, "before the Service configurations ran at once"},
		{`{"machine":{"date":"2026-12-01 08:41 UTC"},"rounds":5,"services_in_lockstep":true,"services":[{"path":"podvnet bpf"}]}`, "before the services phase's pods were Pods in the API"},
	} {
		old := filepath.Join(t.TempDir(), "benchmarks.json")
		if err := os.WriteFile(old, []byte(c.saved), 0o644); err != nil {
			t.Fatal(err)
		}
		err := renderSaved(old, filepath.Join(t.TempDir(), "benchmarks.md"))
		if err == nil || !strings.Contains(err.Error(), c.why) {
			t.Errorf("render of %s: %v, want a refusal saying %q", c.saved, err, c.why)
		}
	}
}

// TestHistQuantile: the smallest bucket holding at least q of the round
// trips, in microseconds (bucket middles).
func TestHistQuantile(t *testing.T) {
	h := make([]uint32, rrBuckets)
	h[100], h[200], h[300], h[400] = 1, 1, 1, 1 // 1, 2, 3 and 4 us
	for _, c := range []struct{ q, want float64 }{{0.25, 1.005}, {0.5, 2.005}, {0.51, 3.005}, {0.99, 4.005}} {
		if got := histQuantile(h, c.q); got < c.want-1e-9 || got > c.want+1e-9 {
			t.Errorf("quantile %.2f = %.3f us, want %.3f", c.q, got, c.want)
		}
	}
	if got := histQuantile(make([]uint32, rrBuckets), 0.5); got != 0 {
		t.Errorf("empty histogram: %.3f, want 0", got)
	}
}
