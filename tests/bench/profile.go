package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Profile is where the sender's vCPU goes during a 64-byte UDP flood across
// nodes: perf on CPU 0, where the sender runs and, through the veths'
// softirq processing, the whole path to the receiver's socket, merged over
// the rounds and grouped by what the kernel does. Compared per datagram: a
// path that moves more datagrams spends a smaller share of the same CPU on
// each, so shares alone mislead.
type Profile struct {
	NodeProfile string `json:"profile"` // bare or loaded
	Path        string `json:"path"`
	Rounds      int    `json:"rounds"`
	// Samples are the path's (the sender, its softirqs, ksoftirqd); Idle
	// and Others (other processes on CPU 0, a shared machine's) are left
	// out of every group.
	Samples   int     `json:"samples"`
	Idle      int     `json:"idle_samples"`
	Others    int     `json:"other_samples"`
	Datagrams float64 `json:"datagrams"` // received while perf recorded, every round
	// NsPerDatagram is each group's CPU time per datagram received, and the
	// path's whole ("total").
	NsPerDatagram map[string]float64 `json:"ns_per_datagram"`
	Groups        map[string]float64 `json:"groups_percent"` // share of the path's samples
	Top           []ProfileSymbol    `json:"top_symbols"`
	Error         string             `json:"error,omitempty"`

	symNs map[string]float64 // sampled CPU ns per symbol, every round
}

// ProfileSymbol is one kernel or user symbol: its share of the path's
// samples and its CPU time per datagram.
type ProfileSymbol struct {
	Symbol        string  `json:"symbol"`
	Percent       float64 `json:"percent"`
	NsPerDatagram float64 `json:"ns_per_datagram"`
}

// profileGroups classify symbols; the first match wins, the rest is
// "other". Order matters: bpf programs before helpers, conntrack before
// hashing.
var profileGroups = []struct {
	name string
	re   *regexp.Regexp
}{
	{"podvnet programs", regexp.MustCompile(`^bpf_prog_.*_(from_pod|from_nic)$`)},
	{"conntrack lookup (kfunc)", regexp.MustCompile(`nf_ct|conntrack|__bpf_nf_ct_lookup|siphash|lookup_nulls`)},
	{"bpf maps and helpers", regexp.MustCompile(`^(bpf_|__htab|htab_|trie_|percpu_array|array_map|bpf_skb)`)},
	{"redirect and qdisc", regexp.MustCompile(`redirect|dev_queue_xmit|dev_hard_start|sch_handle|tcx|tcf_|cls_bpf|validate_xmit|netif_skb_features`)},
	{"veth", regexp.MustCompile(`^veth_`)},
	{"routing and forwarding", regexp.MustCompile(`fib_|ip_route|ip_forward|neigh|ip_finish_output|ip_output|rt_dst|dst_release`)},
	{"netfilter", regexp.MustCompile(`nf_hook|nft_|ipt_|nf_nat|nf_conntrack_in`)},
	{"receive path (backlog, softirq)", regexp.MustCompile(`netif_|napi|process_backlog|net_rx_action|__netif_receive|enqueue_to_backlog|ip_rcv|ip_local_deliver|eth_type_trans|do_softirq|__do_softirq|skb_defer`)},
	{"UDP and sockets", regexp.MustCompile(`udp|sock_|skb_copy|_copy_|__ip_append|ip_make_skb|__ip_make_skb|sk_`)},
	{"locks, irq and RCU", regexp.MustCompile(`spin|irq|rcu_read`)},
	{"skb memory", regexp.MustCompile(`alloc|free|kmem_|slab|kmalloc|page_frag|skb_release|consume_skb`)},
	{"syscalls and user space", regexp.MustCompile(`do_syscall|entry_SYSCALL|vfs_|__GI_|ksys_|__x64_sys|write|read|__vdso|libc|iperf`)},
}

// groupOf names the group of a symbol.
func groupOf(sym string) string {
	for _, g := range profileGroups {
		if g.re.MatchString(sym) {
			return g.name
		}
	}
	return "other"
}

// The path's samples: the sender (iperf3 on CPU 0) with the softirqs it
// runs, softirqs deferred to ksoftirqd, and those run on an idle CPU
// (swapper, outside its idle loop).
var (
	pathComm   = regexp.MustCompile(`^(iperf3|ksoftirqd/0|swapper(/0)?)$`)
	idleSymbol = regexp.MustCompile(`(^|_)(idle|halt)|^cpuidle|^do_idle|^cpu_startup_entry|^mwait`)
	// perf script -F comm,ip,sym: the command, the address, the symbol.
	scriptLine = regexp.MustCompile(`^\s*(.+?)\s+([0-9a-f]+)\s+(\S+)`)
)

// profileRound is one flood recorded.
type profileRound struct {
	symSamples     map[string]int // the path's samples, by symbol
	idle, others   int
	windowNs       float64
	datagrams      float64
	total, samples int
}

// profileFlood runs a UDP flood along f and records CPU 0 with perf for a
// few seconds in the middle of it.
func (b *bench) profileFlood(ctx context.Context, path string, f flow) (profileRound, error) {
	if _, err := exec.LookPath("perf"); err != nil {
		return profileRound{}, fmt.Errorf("perf not installed (apt-get install linux-perf)")
	}
	secs := 6 * time.Second
	if b.smoke {
		secs = 2 * time.Second
	}
	window := max(1, int(secs/time.Second)/2)
	type result struct {
		kpps float64
		err  error
	}
	done := make(chan result, 1)
	go func() { k, err := udpKpps(ctx, f, secs); done <- result{k, err} }()
	time.Sleep(secs / 4)
	data := filepath.Join(b.work, "perf-"+path+".data")
	defer os.Remove(data)
	// cpu-clock samples at a fixed rate, busy or idle, PMU or not: a
	// sample stands for the same CPU time in every round and path.
	rec := exec.CommandContext(ctx, "perf", "record", "-e", "cpu-clock", "-F", "1999", "-C", "0", "-o", data, "--", "sleep", strconv.Itoa(window))
	if out, err := rec.CombinedOutput(); err != nil {
		<-done
		return profileRound{}, fmt.Errorf("perf record: %v: %s", err, snippet(out))
	}
	res := <-done
	if res.err != nil {
		return profileRound{}, res.err
	}
	out, err := exec.CommandContext(ctx, "perf", "script", "-i", data, "-F", "comm,ip,sym").Output()
	if err != nil {
		return profileRound{}, fmt.Errorf("perf script: %w", err)
	}
	r := parsePerfScript(out, float64(window)*1e9, res.kpps*1000*float64(window))
	if r.total == 0 {
		return profileRound{}, fmt.Errorf("perf recorded no samples on CPU 0")
	}
	return r, nil
}

// parsePerfScript sorts the samples of `perf script -F comm,ip,sym` into
// the path's (by symbol), idle and other processes'.
func parsePerfScript(out []byte, windowNs, datagrams float64) profileRound {
	r := profileRound{symSamples: map[string]int{}, windowNs: windowNs, datagrams: datagrams}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		m := scriptLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		comm, sym := m[1], m[3]
		r.total++
		switch {
		case !pathComm.MatchString(comm):
			r.others++
		case strings.HasPrefix(comm, "swapper") && idleSymbol.MatchString(sym):
			r.idle++
		default:
			r.symSamples[sym]++
			r.samples++
		}
	}
	return r
}

// add merges a round into p.
func (p *Profile) add(r profileRound) {
	if p.symNs == nil {
		p.symNs = map[string]float64{}
	}
	p.Rounds++
	p.Samples += r.samples
	p.Idle += r.idle
	p.Others += r.others
	p.Datagrams += r.datagrams
	perSample := r.windowNs / float64(r.total)
	for sym, n := range r.symSamples {
		p.symNs[sym] += float64(n) * perSample
	}
}

// finish computes the groups and top symbols from the merged rounds.
func (p *Profile) finish() {
	if p.Samples == 0 || p.Datagrams == 0 {
		return
	}
	var totalNs float64
	for _, ns := range p.symNs {
		totalNs += ns
	}
	p.NsPerDatagram, p.Groups = map[string]float64{}, map[string]float64{}
	for sym, ns := range p.symNs {
		g := groupOf(sym)
		p.NsPerDatagram[g] += ns / p.Datagrams
		p.Groups[g] += 100 * ns / totalNs
	}
	p.NsPerDatagram["total"] = totalNs / p.Datagrams
	syms := make([]string, 0, len(p.symNs))
	for s := range p.symNs {
		syms = append(syms, s)
	}
	sort.Slice(syms, func(i, j int) bool { return p.symNs[syms[i]] > p.symNs[syms[j]] })
	for _, s := range syms[:min(20, len(syms))] {
		p.Top = append(p.Top, ProfileSymbol{Symbol: s, Percent: 100 * p.symNs[s] / totalNs, NsPerDatagram: p.symNs[s] / p.Datagrams})
	}
}

// profileAcross profiles the across-nodes flow of every series whose path
// only names (nil: all), rounds times, the paths in a new order each round
// (ptp, podvnet, podvnet, ptp, ...) so that drift hits them alike, and keeps
// one merged Profile per path.
func (b *bench) profileAcross(ctx context.Context, nodeProfile string, all []*series, rounds int, only map[string]bool) {
	var flows []*series
	for _, s := range all {
		if s.pair == acrossNodes && (only == nil || only[s.path]) {
			flows = append(flows, s)
		}
	}
	profiles := make([]Profile, len(flows))
	for i, s := range flows {
		profiles[i].NodeProfile, profiles[i].Path = nodeProfile, s.path
	}
	for r := range rounds {
		for k := range flows {
			i := k
			if r%2 == 1 {
				i = len(flows) - 1 - k
			}
			p := &profiles[i]
			if p.Error != "" || ctx.Err() != nil {
				continue
			}
			b.logf("%s profile round %d of %d: %s %s", nodeProfile, r+1, rounds, p.Path, flows[i].flow)
			round, err := b.profileFlood(ctx, nodeProfile+"-"+p.Path, flows[i].flow)
			if err != nil {
				p.Error = err.Error()
				continue
			}
			p.add(round)
		}
	}
	for i := range profiles {
		profiles[i].finish()
	}
	b.res.Profiles = append(b.res.Profiles, profiles...)
}

// profile returns the profile of a path in a node profile, if one was
// recorded.
func (r *Results) profile(nodeProfile, path string) *Profile {
	for i := range r.Profiles {
		if p := &r.Profiles[i]; p.NodeProfile == nodeProfile && p.Path == path && p.NsPerDatagram != nil {
			return p
		}
	}
	return nil
}

// profileTable compares the profiles' groups side by side, in ns of the
// sender's CPU per datagram (and the share of its samples).
func (r *Results) profileTable() [][]string {
	var ps []*Profile
	for i := range r.Profiles {
		if r.Profiles[i].NsPerDatagram != nil {
			ps = append(ps, &r.Profiles[i])
		}
	}
	if len(ps) == 0 {
		return nil
	}
	head := []string{"ns of CPU 0 per datagram"}
	groups := map[string]bool{}
	for _, p := range ps {
		head = append(head, fmt.Sprintf("%s, %s (%d rounds)", p.Path, p.NodeProfile, p.Rounds))
		for g := range p.NsPerDatagram {
			groups[g] = g != "total"
		}
	}
	names := make([]string, 0, len(groups))
	for g, ok := range groups {
		if ok {
			names = append(names, g)
		}
	}
	// Largest first in the first column, then in the others, then by name:
	// the same results always give the same table (--render).
	sort.Slice(names, func(i, j int) bool {
		for _, p := range ps {
			if a, b := p.NsPerDatagram[names[i]], p.NsPerDatagram[names[j]]; a != b {
				return a > b
			}
		}
		return names[i] < names[j]
	})
	rows := [][]string{head}
	for _, g := range append(names, "total") {
		row := []string{g}
		for _, p := range ps {
			cell := fmt.Sprintf("%.0f", p.NsPerDatagram[g])
			if g != "total" {
				cell += fmt.Sprintf(" (%.1f%%)", p.Groups[g])
			}
			row = append(row, cell)
		}
		rows = append(rows, row)
	}
	return rows
}

// topTable lists each profile's costliest symbols.
func (r *Results) topTable(p *Profile) [][]string {
	rows := [][]string{{p.Path + ", " + p.NodeProfile + ": symbol", "group", "ns/datagram", "share"}}
	for _, s := range p.Top {
		rows = append(rows, []string{s.Symbol, groupOf(s.Symbol), fmt.Sprintf("%.1f", s.NsPerDatagram), fmt.Sprintf("%.1f%%", s.Percent)})
	}
	return rows
}
