package main

import (
	"math"
	"strings"
	"testing"
)

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

func TestStat(t *testing.T) {
	for _, tc := range []struct {
		name                   string
		in                     []float64
		median, min, max, madP float64
	}{
		{"odd", []float64{100, 104, 98, 102, 101}, 101, 98, 104, 100.0 / 101},
		{"even", []float64{10, 14, 12, 16}, 13, 10, 16, 2.0 / 13 * 100},
		// One disturbed round widens the range, not the MAD.
		{"outlier", []float64{100, 101, 99, 100, 60}, 100, 60, 101, 1},
		{"one", []float64{7}, 7, 7, 7, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := stat(tc.in)
			if !near(s.Median, tc.median) || s.Min != tc.min || s.Max != tc.max || !near(s.MADPct, tc.madP) {
				t.Errorf("stat(%v) = median %v min %v max %v MAD %v%%, want %v %v %v %v%%",
					tc.in, s.Median, s.Min, s.Max, s.MADPct, tc.median, tc.min, tc.max, tc.madP)
			}
			if len(s.All) != len(tc.in) || s.All[0] != tc.in[0] {
				t.Errorf("samples %v: want them in round order %v", s.All, tc.in)
			}
		})
	}
}

func TestRatioNoise(t *testing.T) {
	for _, tc := range []struct {
		name     string
		perRound []float64
		noise    string
		printed  string
	}{
		{"every round faster", []float64{1.05, 1.08, 1.02, 1.10, 1.04}, beyondNoise, "1.05x (1.02-1.10)"},
		{"every round slower", []float64{0.95, 0.97, 0.92}, beyondNoise, "0.95x (0.92-0.97)"},
		{"rounds disagree", []float64{0.97, 1.02, 0.99, 1.01, 0.95}, withinNoise, "0.99x (0.95-1.02), within noise"},
		{"a round exactly even", []float64{1.03, 1.00, 1.05}, withinNoise, "1.03x (1.00-1.05), within noise"},
		{"one round", []float64{1.2}, tooFewRounds, "1.20x (noise unknown)"},
		{"two rounds", []float64{1.2, 1.3}, tooFewRounds, "1.25x (noise unknown)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRatio(tc.perRound)
			if r.Noise != tc.noise {
				t.Errorf("noise %q, want %q", r.Noise, tc.noise)
			}
			if got := r.String(); got != tc.printed {
				t.Errorf("printed %q, want %q", got, tc.printed)
			}
		})
	}
	if got := (*Ratio)(nil).String(); got != "-" {
		t.Errorf("a missing ratio prints %q, want -", got)
	}
}

func TestRatioTarget(t *testing.T) {
	for _, tc := range []struct {
		name     string
		perRound []float64
		atLeast  bool
		goal     float64
		result   string
		detail   string
	}{
		{"at least, every round", []float64{1.31, 1.35, 1.4}, true, 1.3, targetMet, "met"},
		{"at least, no round", []float64{1.05, 1.1, 1.0}, true, 1.3, targetMissed, "missed by 19%"},
		{"at least, some rounds", []float64{1.25, 1.32, 1.35}, true, 1.3, targetWithinNoise, "within noise (rounds 1.25-1.35x)"},
		{"at most, every round", []float64{0.8, 0.84, 0.85}, false, 0.85, targetMet, "met"},
		{"at most, no round", []float64{0.9, 0.91, 0.95}, false, 0.85, targetMissed, "missed by 7%"},
		{"at most, no round, by a hair", []float64{0.852, 0.853, 0.855}, false, 0.85, targetMissed, "missed by 0.4%"},
		{"at most, some rounds", []float64{0.98, 1.01, 1.0}, false, 1.0, targetWithinNoise, "within noise (rounds 0.98-1.01x)"},
		{"one round, median decides", []float64{0.97}, true, 1.0, targetMissed, "missed by 3% (1 round: noise unknown)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := ratioTarget("t", "w", newRatio(tc.perRound), tc.atLeast, tc.goal)
			if got.Result != tc.result || got.Detail != tc.detail || got.Met != (tc.result == targetMet) {
				t.Errorf("result %q detail %q met %v, want %q %q", got.Result, got.Detail, got.Met, tc.result, tc.detail)
			}
		})
	}
}

// A machine that drifts between rounds (each slower or faster as a whole)
// must not hide a steady 5% lead: the ratios are taken within each round.
func TestCompareIsPairedByRound(t *testing.T) {
	r := &Results{Data: []DataRow{
		{Profile: "bare", Path: "limit", Pair: acrossNodes, UDPKpps: stat([]float64{200, 240, 280})},
		{Profile: "bare", Path: "ptp", Pair: acrossNodes, UDPKpps: stat([]float64{100, 120, 140}), RRP50: stat([]float64{20, 18, 22})},
		{Profile: "bare", Path: "podvnet", Pair: acrossNodes, UDPKpps: stat([]float64{105, 126, 147}), RRP50: stat([]float64{21, 17, 23})},
		{Profile: "bare", Path: "ptp", Pair: viaService, UDPKpps: stat([]float64{90, 100, 110}), RRP50: stat([]float64{25, 25, 25})},
		{Profile: "bare", Path: "podvnet", Pair: viaService, UDPKpps: stat([]float64{95, 99, 120}), RRP50: stat([]float64{24, 24, 24})},
		{Profile: "bare", Path: "podvnet", Pair: sameNode, UDPKpps: stat([]float64{300, 300, 300})},
	}}
	r.compare()
	udp := r.ratio("bare", acrossNodes, "podvnet", metricUDP, "ptp")
	if udp == nil || udp.Noise != beyondNoise || !near(udp.Min, 1.05) || !near(udp.Max, 1.05) {
		t.Fatalf("podvnet vs ptp UDP across nodes: %+v, want 1.05 in every round, beyond noise", udp)
	}
	if rr := r.ratio("bare", acrossNodes, "podvnet", metricRRP50, "ptp"); rr == nil || rr.Noise != withinNoise {
		t.Errorf("RR p50 faster in one round and slower in two: %+v, want within noise", rr)
	}
	// The Service row crosses nodes too: compared with the limit.
	if lim := r.ratio("bare", viaService, "podvnet", metricUDP, "limit"); lim == nil || !near(lim.PerRound[0], 95.0/200) {
		t.Errorf("Service row vs the limit: %+v, want 95/200 in round 1", lim)
	}
	if x := r.ratio("bare", sameNode, "podvnet", metricUDP, "limit"); x != nil {
		t.Errorf("a row on one node compared with the limit across nodes: %+v", x)
	}
	if x := r.ratio("bare", sameNode, "podvnet", metricUDP, "ptp"); x != nil {
		t.Errorf("compared with a ptp row that was not measured: %+v", x)
	}

	r.evaluate()
	var bareUDP *Target
	for i := range r.Targets {
		if r.Targets[i].Name == "bare, across nodes: UDP pps vs ptp" {
			bareUDP = &r.Targets[i]
		}
	}
	if bareUDP == nil || !bareUDP.Met {
		t.Fatalf("bare UDP target: %+v, want met (1.05x >= 1.00x in every round)", bareUDP)
	}
	var table strings.Builder
	markdownTable(&table, r.ratioTable())
	if !strings.Contains(table.String(), "| bare | across nodes | podvnet | 0.53x (0.53-0.53) | 1.05x (1.05-1.05) | - | 1.05x (0.94-1.05), within noise | - |") {
		t.Errorf("ratio table:\n%s", table.String())
	}
}
