package main

import (
	"context"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/podvnet/podvnet/tests/e2e/vnet"
)

// bench holds what every phase needs.
type bench struct {
	prefix    string
	work      string
	binDir    string
	cniBinDir string
	reps      int
	dur       time.Duration
	smoke     bool
	agentArgs []string // extra flags for podvnet-agent run
	paths     map[string]bool
	progress  io.Writer
	res       *Results
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.progress, "[%s] "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// Stat is a measurement repeated: median with min and max.
type Stat struct {
	Median float64   `json:"median"`
	Min    float64   `json:"min"`
	Max    float64   `json:"max"`
	All    []float64 `json:"samples"`
}

func stat(xs []float64) Stat {
	if len(xs) == 0 {
		return Stat{}
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return Stat{Median: med, Min: s[0], Max: s[len(s)-1], All: xs}
}

// DataRow is one path measured between one pair in one node profile.
type DataRow struct {
	Profile string `json:"profile"` // bare or loaded
	Path    string `json:"path"`    // limit, ptp, bridge, podvnet
	Pair    string `json:"pair"`    // across_nodes or same_node
	UDPKpps Stat   `json:"udp_kpps"`
	RRP50   Stat   `json:"rr_p50_us"`
	RRP99   Stat   `json:"rr_p99_us"`
	TCPGbps Stat   `json:"tcp_gbps"`
}

// measure runs every data metric reps times between src and dst.
func (b *bench) measure(ctx context.Context, profile, path, pair string, src, dst peer) error {
	if err := reachable(ctx, src, dst); err != nil {
		return fmt.Errorf("%s %s %s: %w", profile, path, pair, err)
	}
	var udp, p50, p99, tcp []float64
	for i := range b.reps {
		b.logf("%s %s %s: repetition %d of %d", profile, path, pair, i+1, b.reps)
		k, err := udpKpps(ctx, src, dst, b.dur)
		if err != nil {
			return err
		}
		l50, l99, err := tcpRR(ctx, src, dst, b.dur)
		if err != nil {
			return err
		}
		g, err := tcpGbps(ctx, src, dst, b.dur)
		if err != nil {
			return err
		}
		udp, p50, p99, tcp = append(udp, k), append(p50, l50), append(p99, l99), append(tcp, g)
	}
	b.res.Data = append(b.res.Data, DataRow{Profile: profile, Path: path, Pair: pair,
		UDPKpps: stat(udp), RRP50: stat(p50), RRP99: stat(p99), TCPGbps: stat(tcp)})
	return nil
}

// loadedRules is what a real node carries besides the CNI: kube-proxy at
// scale (5,000 Service DNAT rules walked by every new connection, as
// iptables mode does), its conntrack-based forward rules, and a masquerade
// rule. Conntrack then tracks every packet the kernel forwards.
func loadedRules(services int) string {
	var b strings.Builder
	b.WriteString(`table ip kubeproxy {
  chain prerouting { type nat hook prerouting priority -100; policy accept; jump services; }
  chain output { type nat hook output priority -100; policy accept; jump services; }
  chain postrouting { type nat hook postrouting priority 100; policy accept;
    meta mark & 0x4000 == 0x4000 masquerade
    ip saddr 10.240.0.0/16 ip daddr != 10.240.0.0/16 masquerade
  }
  chain forward { type filter hook forward priority 0; policy accept;
    ct state invalid drop
    ct state related,established accept
  }
  chain services {
`)
	for i := range services {
		fmt.Fprintf(&b, "    ip daddr 10.0.%d.%d tcp dport 80 dnat to 10.240.200.%d:8080\n", i/250, i%250+1, i%250+1)
	}
	b.WriteString("  }\n}\n")
	return b.String()
}

func nodePeer(n *vnet.Node) peer {
	return peer{name: n.Name, nsPath: n.NS.Path(), ip: n.Pool.Primary}
}

// dataPhase builds the simulated VNet for a profile and measures every
// path on it: the node-to-node limit, then each plugin in turn with two
// pods on node1 and one on node2.
func (b *bench) dataPhase(ctx context.Context, profile string) (err error) {
	v, err := vnet.New(vnet.Options{Prefix: b.prefix + profile[:1], PerNode: 30, AlignedPools: true,
		BinDir: b.binDir, WorkDir: b.work + "/" + profile})
	if err != nil {
		return err
	}
	defer func() {
		if cerr := v.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	n1, n2 := v.Nodes[0], v.Nodes[1]
	if profile == "loaded" {
		services := 5000
		for _, n := range v.Nodes {
			if err := n.NFT(loadedRules(services)); err != nil {
				return err
			}
		}
	}
	if b.paths["limit"] {
		if err := b.measure(ctx, profile, "limit", "across_nodes", nodePeer(n1), nodePeer(n2)); err != nil {
			return err
		}
	}
	plugins := []plugin{ptpPlugin(b.work + "/" + profile), bridgePlugin(b.work + "/" + profile),
		// No IP cooldown: the control phase reuses the same addresses
		// round after round, as host-local does.
		podvnetPlugin("podvnet", append([]string{"--ip-cooldown", "0s"}, b.agentArgs...)...),
		// The design's alternative for pod veths, side by side.
		podvnetPlugin("podvnet-tcx", "--ip-cooldown", "0s", "--attach-mode", "tcx"),
	}
	for _, pl := range plugins {
		if !b.paths[pl.name] {
			continue
		}
		if pl.agent != nil {
			for _, n := range v.Nodes {
				n.StopAgent(syscall.SIGTERM)
				if err := n.StartAgent(pl.agent...); err != nil {
					return err
				}
			}
		}
		pods, err := b.attach(ctx, pl, []*vnet.Node{n1, n1, n2}, []string{"a", "b", "c"})
		if err != nil {
			return err
		}
		if err := b.measure(ctx, profile, pl.name, "same_node", pods[0].peer, pods[1].peer); err != nil {
			return err
		}
		if err := b.measure(ctx, profile, pl.name, "across_nodes", pods[0].peer, pods[2].peer); err != nil {
			return err
		}
		if profile == "bare" && (pl.name == "ptp" || pl.name == "podvnet") {
			b.profileFlood(ctx, pl.name, pods[0].peer, pods[2].peer)
		}
		if _, _, err := delAll(ctx, pods, false); err != nil {
			return err
		}
		if pl.name == "bridge" {
			for _, n := range v.Nodes {
				if l, err := n.NS.NL.LinkByName("cni0"); err == nil {
					n.NS.NL.LinkDel(l)
				}
			}
			continue
		}
		if profile == "bare" {
			if err := b.controlPhase(ctx, v, pl); err != nil {
				return err
			}
		}
	}
	return nil
}

// attach creates and ADDs one pod per name, on the given nodes.
func (b *bench) attach(ctx context.Context, pl plugin, nodes []*vnet.Node, names []string) ([]*pod, error) {
	var pods []*pod
	for i, n := range nodes {
		p, err := newPod(b, n, pl, names[i])
		if err != nil {
			return nil, err
		}
		if _, err := p.add(ctx); err != nil {
			p.ns.Delete()
			delAll(ctx, pods, false)
			return nil, err
		}
		p.peer.name = pl.name + ":" + p.peer.name
		pods = append(pods, p)
	}
	return pods, nil
}

// ControlRow is CNI latency for one plugin and mode.
type ControlRow struct {
	Plugin    string  `json:"plugin"`
	Mode      string  `json:"mode"` // sequential or parallel
	Pods      int     `json:"pods"`
	AddMedMS  float64 `json:"add_median_ms"`
	AddP99MS  float64 `json:"add_p99_ms"`
	AddWallMS float64 `json:"add_wall_ms"`
	DelMedMS  float64 `json:"del_median_ms"`
	DelP99MS  float64 `json:"del_p99_ms"`
	DelWallMS float64 `json:"del_wall_ms"`
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func percentile(ds []time.Duration, p float64) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	idx := int(float64(len(s)-1) * p)
	return s[idx]
}

// controlPhase times CNI ADD and DEL of 30 pods, one after another and
// all at once; for podvnet also the first ADD after an agent restart and
// the agent's memory with 30 pods.
func (b *bench) controlPhase(ctx context.Context, v *vnet.VNet, pl plugin) error {
	n1 := v.Nodes[0]
	const count = 30
	for _, parallel := range []bool{false, true} {
		mode := map[bool]string{false: "sequential", true: "parallel"}[parallel]
		b.logf("control path: %s, %d ADDs %s", pl.name, count, mode)
		pods := make([]*pod, count)
		for i := range pods {
			p, err := newPod(b, n1, pl, fmt.Sprintf("ctl%d", i))
			if err != nil {
				return err
			}
			pods[i] = p
		}
		before := agentCNIMetrics(v.Nodes[0])
		addLat, addWall, err := addAll(ctx, pods, parallel)
		if err != nil {
			delAll(ctx, pods, false)
			return fmt.Errorf("%s %s ADDs: %w", pl.name, mode, err)
		}
		if pl.name == "podvnet" && !parallel {
			if err := b.agentMemory(n1); err != nil {
				return err
			}
		}
		delLat, delWall, err := delAll(ctx, pods, parallel)
		if err != nil {
			return fmt.Errorf("%s %s DELs: %w", pl.name, mode, err)
		}
		if pl.name == "podvnet" && !parallel {
			after := agentCNIMetrics(v.Nodes[0])
			b.res.AgentAddMS = after.mean("add", before)
			b.res.AgentDelMS = after.mean("del", before)
		}
		b.res.Control = append(b.res.Control, ControlRow{Plugin: pl.name, Mode: mode, Pods: count,
			AddMedMS: ms(percentile(addLat, 0.5)), AddP99MS: ms(percentile(addLat, 0.99)), AddWallMS: ms(addWall),
			DelMedMS: ms(percentile(delLat, 0.5)), DelP99MS: ms(percentile(delLat, 0.99)), DelWallMS: ms(delWall)})
	}
	if pl.name != "podvnet" {
		return nil
	}

	b.logf("control path: first ADD after an agent restart")
	n1.StopAgent(syscall.SIGTERM)
	if err := n1.StartAgent(pl.agent...); err != nil {
		return err
	}
	p, err := newPod(b, n1, pl, "first")
	if err != nil {
		return err
	}
	d, err := p.add(ctx)
	if err != nil {
		return err
	}
	b.res.FirstAddMS = ms(d)
	_, err = p.del(ctx)
	return err
}

// agentMemory reads the agent's resident memory now (steady, after a
// pause) and its peak since start.
func (b *bench) agentMemory(n *vnet.Node) error {
	time.Sleep(2 * time.Second)
	rss, peak, err := n.AgentMemoryKiB()
	if err != nil {
		return err
	}
	b.res.AgentRSSMiB = float64(rss) / 1024
	b.res.AgentPeakRSSMiB = float64(peak) / 1024
	return nil
}

// cniMetrics are the agent's podvnet_cni_request_duration_seconds sums and
// counts of successful requests, by operation.
type cniMetrics map[string][2]float64

// agentCNIMetrics reads them now; what cannot be read counts as 0.
func agentCNIMetrics(n *vnet.Node) cniMetrics {
	m := cniMetrics{}
	for _, op := range []string{"add", "del"} {
		labels := []string{`op="` + op + `"`, `result="success"`}
		sum, _ := n.Metric("podvnet_cni_request_duration_seconds_sum", labels...)
		count, _ := n.Metric("podvnet_cni_request_duration_seconds_count", labels...)
		m[op] = [2]float64{sum, count}
	}
	return m
}

// mean is the average duration in ms of op's requests since before.
func (m cniMetrics) mean(op string, before cniMetrics) float64 {
	n := m[op][1] - before[op][1]
	if n <= 0 {
		return 0
	}
	return (m[op][0] - before[op][0]) / n * 1000
}

// execCosts times starting each plugin binary (CNI VERSION), which every
// CNI command pays once per binary: ptp runs host-local too.
func (b *bench) execCosts() {
	b.res.ExecMS = map[string]float64{}
	for name, path := range map[string]string{
		"podvnet": filepath.Join(b.binDir, "podvnet"), "ptp": filepath.Join(b.cniBinDir, "ptp"),
		"host-local": filepath.Join(b.cniBinDir, "host-local"),
	} {
		var ds []time.Duration
		for range 30 {
			cmd := exec.Command(path)
			cmd.Env = []string{"CNI_COMMAND=VERSION"}
			cmd.Stdin = strings.NewReader(`{"cniVersion":"1.0.0"}`)
			start := time.Now()
			if err := cmd.Run(); err != nil {
				break
			}
			ds = append(ds, time.Since(start))
		}
		if len(ds) > 0 {
			b.res.ExecMS[name] = ms(percentile(ds, 0.5))
		}
	}
}
