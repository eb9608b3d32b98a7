package main

import (
	"math"
	"slices"
	"testing"
)

// TestProfileMerge: perf's samples are sorted into the path's, idle and
// other processes', and the merged rounds give each group its CPU time per
// datagram: shares alone would make a faster path look costlier.
func TestProfileMerge(t *testing.T) {
	round := func(fromPod, fib, datagrams int) profileRound {
		var out []byte
		add := func(n int, line string) {
			for range n {
				out = append(out, line+"\n"...)
			}
		}
		add(fromPod, "          iperf3  ffffffffc0123456 bpf_prog_0123456789abcdef_from_pod")
		add(fib, "     ksoftirqd/0  ffffffff81a2c3d4 fib_table_lookup")
		add(10, "         swapper  ffffffff821f2c2b pv_native_safe_halt")
		add(5, "         swapper  ffffffff81a2c3d4 __netif_receive_skb_core.constprop.0")
		add(20, "         compile  ffffffff81234567 clear_page_erms")
		add(1, "garbage")
		// 1 s recorded: every sample stands for 1 s / its number of samples.
		return parsePerfScript(out, 1e9, float64(datagrams))
	}
	r := round(40, 25, 1000)
	if r.total != 100 || r.samples != 70 || r.idle != 10 || r.others != 20 {
		t.Fatalf("total %d, path %d, idle %d, others %d; want 100, 70, 10, 20", r.total, r.samples, r.idle, r.others)
	}
	var p Profile
	p.add(r)
	p.add(round(40, 25, 3000))
	p.finish()
	// from_pod: 80 samples of 10 ms for 4000 datagrams.
	near := func(got, want float64) bool { return math.Abs(got-want) < 1e-6*want }
	if got := p.NsPerDatagram["podvnet programs"]; !near(got, 80*1e7/4000) {
		t.Errorf("podvnet programs: %.0f ns per datagram, want %.0f", got, 80*1e7/4000.0)
	}
	if got := p.NsPerDatagram["total"]; !near(got, 140*1e7/4000) {
		t.Errorf("total: %.0f ns per datagram, want %.0f", got, 140*1e7/4000.0)
	}
	if got := p.Groups["routing and forwarding"]; !near(got, 100*50.0/140) {
		t.Errorf("routing share %.2f%%, want %.2f%%", got, 100*50.0/140)
	}
	if p.Rounds != 2 || p.Samples != 140 || p.Top[0].Symbol != "bpf_prog_0123456789abcdef_from_pod" {
		t.Errorf("rounds %d, samples %d, top %+v", p.Rounds, p.Samples, p.Top)
	}
	if _, ok := p.NsPerDatagram["other"]; ok {
		t.Errorf("other processes' samples counted for the path: %v", p.NsPerDatagram)
	}
}

// TestProfileTableOrder: groups the first path does not spend on (ties)
// are ordered by the next path's figure, then by name, so that a report
// written again from saved results (--render) is the same report.
func TestProfileTableOrder(t *testing.T) {
	r := &Results{Profiles: []Profile{
		{NodeProfile: "bare", Path: "ptp", Rounds: 1, NsPerDatagram: map[string]float64{"routing and forwarding": 400, "podvnet programs": 0, "conntrack lookup (kfunc)": 0, "veth": 0, "total": 400}},
		{NodeProfile: "bare", Path: "podvnet", Rounds: 1, NsPerDatagram: map[string]float64{"routing and forwarding": 200, "podvnet programs": 60, "conntrack lookup (kfunc)": 15, "veth": 15, "total": 290}},
	}}
	want := []string{"routing and forwarding", "podvnet programs", "conntrack lookup (kfunc)", "veth", "total"}
	for range 20 {
		var got []string
		for _, row := range r.profileTable()[1:] {
			got = append(got, row[0])
		}
		if !slices.Equal(got, want) {
			t.Fatalf("rows %q, want %q", got, want)
		}
	}
}
