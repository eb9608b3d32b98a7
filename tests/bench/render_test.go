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
		ServicesLoaded: 5000, Kube: &KubeMemory{PodsInAPI: 5000, Nodes: 101, LocalPods: 30, RSSMiB: 48.5, PeakRSSMiB: 50},
		Services: []ServiceRow{
			{Path: pathBPF, UDPKpps: stat([]float64{400, 410, 390}), RRP50: stat([]float64{8.4, 8.3, 8.5}), CRR: stat([]float64{18000, 18100, 17900})},
			{Path: pathDirect, UDPKpps: stat([]float64{390, 420, 380}), RRP50: stat([]float64{8.2, 8.1, 8.4}), CRR: stat([]float64{18800, 18900, 18700})},
			{Path: "ptp + kube-proxy nftables", UDPKpps: stat([]float64{330, 331, 332}), RRP50: stat([]float64{8.6, 8.6, 8.7}), CRR: stat([]float64{18000, 18066, 18100})},
		},
		Changes: []ChangeRow{{Path: pathBPF, Changes: 20, P50MS: 3.8, P99MS: 8.6, MaxMS: 8.6}},
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
	if !strings.Contains(string(want), "Even the direct path, with no Service at all") {
		t.Errorf("the report does not explain the Service target against ptp + kube-proxy:\n%s", want)
	}
}
