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

// Profile is where the sender's CPU goes during a UDP flood across nodes:
// perf samples of CPU 0 (where the sender and, through the veths' softirq
// processing, the whole path run), grouped by what the kernel does.
type Profile struct {
	Path    string             `json:"path"`
	Samples int                `json:"samples"`
	Groups  map[string]float64 `json:"groups_percent"`
	Top     []ProfileSymbol    `json:"top_symbols"`
	Error   string             `json:"error,omitempty"`
}

// ProfileSymbol is one kernel or user symbol and its share of samples.
type ProfileSymbol struct {
	Symbol  string  `json:"symbol"`
	Percent float64 `json:"percent"`
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
	{"routing and forwarding", regexp.MustCompile(`fib_|ip_route|ip_forward|neigh|ip_finish_output|ip_output|rt_dst`)},
	{"netfilter", regexp.MustCompile(`nf_hook|nft_|ipt_|nf_nat|nf_conntrack_in`)},
	{"receive path (backlog, softirq)", regexp.MustCompile(`netif_|napi|process_backlog|net_rx_action|__netif_receive|enqueue_to_backlog|ip_rcv|ip_local_deliver|eth_type_trans|do_softirq|__do_softirq|skb_defer`)},
	{"UDP and sockets", regexp.MustCompile(`udp|sock_|skb_copy|_copy_|__ip_append|ip_make_skb|__ip_make_skb|sk_`)},
	{"syscalls and user space", regexp.MustCompile(`do_syscall|entry_SYSCALL|vfs_|__GI_|ksys_|__x64_sys|write|read`)},
	{"locks and irq", regexp.MustCompile(`spin|irq|rcu_read`)},
}

var perfLine = regexp.MustCompile(`^\s+([\d.]+)%\s+(?:\S+\s+)?\[[k.]\]\s+(\S+)`)

// profileFlood runs a UDP flood along f and records CPU 0 with perf for a
// few seconds in the middle of it.
func (b *bench) profileFlood(ctx context.Context, path string, f flow) {
	p := Profile{Path: path}
	defer func() { b.res.Profiles = append(b.res.Profiles, p) }()
	if _, err := exec.LookPath("perf"); err != nil {
		p.Error = "perf not installed (apt-get install linux-perf)"
		return
	}
	secs := 6 * time.Second
	if b.smoke {
		secs = 2 * time.Second
	}
	done := make(chan error, 1)
	go func() { _, err := udpKpps(ctx, f, secs); done <- err }()
	time.Sleep(secs / 4)
	data := filepath.Join(b.work, "perf-"+path+".data")
	rec := exec.CommandContext(ctx, "perf", "record", "-C", "0", "-o", data, "--", "sleep", strconv.Itoa(max(1, int(secs/time.Second)/2)))
	if out, err := rec.CombinedOutput(); err != nil {
		p.Error = fmt.Sprintf("perf record: %v: %s", err, snippet(out))
		<-done
		return
	}
	if err := <-done; err != nil {
		p.Error = err.Error()
		return
	}
	out, err := exec.CommandContext(ctx, "perf", "report", "-i", data, "--stdio", "--no-children", "--sort", "symbol").Output()
	os.Remove(data)
	if err != nil {
		p.Error = fmt.Sprintf("perf report: %v", err)
		return
	}
	p.Groups = map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "# Samples:") {
			fmt.Sscanf(strings.TrimPrefix(line, "# Samples: "), "%d", &p.Samples)
			if strings.Contains(line, "K of") {
				p.Samples *= 1000
			}
		}
		m := perfLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		pct, _ := strconv.ParseFloat(m[1], 64)
		sym := m[2]
		group := "other"
		for _, g := range profileGroups {
			if g.re.MatchString(sym) {
				group = g.name
				break
			}
		}
		p.Groups[group] += pct
		if len(p.Top) < 12 {
			p.Top = append(p.Top, ProfileSymbol{Symbol: sym, Percent: pct})
		}
	}
}

// profileTable compares the profiles' groups side by side.
func (r *Results) profileTable() [][]string {
	if len(r.Profiles) == 0 {
		return nil
	}
	head := []string{"share of CPU 0"}
	groups := map[string]bool{}
	for _, p := range r.Profiles {
		head = append(head, p.Path)
		for g := range p.Groups {
			groups[g] = true
		}
	}
	names := make([]string, 0, len(groups))
	for g := range groups {
		names = append(names, g)
	}
	sort.Slice(names, func(i, j int) bool { return r.Profiles[0].Groups[names[i]] > r.Profiles[0].Groups[names[j]] })
	rows := [][]string{head}
	for _, g := range names {
		row := []string{g}
		for _, p := range r.Profiles {
			row = append(row, fmt.Sprintf("%.1f%%", p.Groups[g]))
		}
		rows = append(rows, row)
	}
	return rows
}
