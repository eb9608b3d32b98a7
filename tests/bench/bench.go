package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/podvnet/podvnet/tests/cluster"
	"github.com/podvnet/podvnet/tests/e2e/vnet"
)

// bench holds what every phase needs.
type bench struct {
	prefix    string
	work      string
	binDir    string
	cniBinDir string
	rounds    int
	dur       time.Duration
	smoke     bool
	// profileOnly: only the sender's CPU profile of each path across nodes,
	// rounds times interleaved (--profile-only).
	profileOnly bool
	agentArgs   []string // extra flags for podvnet-agent run
	kubeDir     string   // the Kubernetes binaries (the API servers of podvnet's paths)
	paths       map[string]bool
	progress    io.Writer
	res         *Results
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.progress, "[%s] "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// DataRow is one path measured between one pair in one node profile, every
// metric once per round.
type DataRow struct {
	Profile string `json:"profile"` // bare or loaded
	Path    string `json:"path"`    // limit, ptp, bridge, podvnet, podvnet-tcx
	Pair    string `json:"pair"`    // same_node, across_nodes or service
	UDPKpps Stat   `json:"udp_kpps"`
	RRP50   Stat   `json:"rr_p50_us"`
	RRP99   Stat   `json:"rr_p99_us"`
	TCPGbps Stat   `json:"tcp_gbps,omitzero"` // not measured through a Service
}

// Pairs of a row.
const (
	sameNode    = "same_node"
	acrossNodes = "across_nodes"
	viaService  = "service" // pod -> ClusterIP -> pod on the other node
)

// bed is one simulated VNet given to one path: its own fabric and nodes,
// so that no path's programs, routes or netfilter tables touch another's
// packets (podvnet's from_nic runs on every packet its node's NIC receives
// and its masquerade table makes conntrack track every packet the node
// forwards; ptp's and bridge's routes and gateways would meet on one node).
// Its pods are made once, before the rounds: setup stays out of every
// measurement and each row keeps the same pods throughout.
type bed struct {
	path    string
	service bool    // kube-proxy forwards clusterIP to the pod on node 2
	pl      *plugin // nil for the node-to-node limit
	v       *vnet.VNet
	pods    []*pod
	// cluster is the policy path's control plane, which owns v.
	cluster *cluster.Cluster
}

// series is one row being measured: its flow and the samples so far.
type series struct {
	profile, path, pair string
	flow
	udp, p50, p99, gbps []float64
}

func (s *series) row() DataRow {
	return DataRow{Profile: s.profile, Path: s.path, Pair: s.pair,
		UDPKpps: stat(s.udp), RRP50: stat(s.p50), RRP99: stat(s.p99), TCPGbps: stat(s.gbps)}
}

// streams says whether the row measures TCP throughput: a single stream
// through a Service would only repeat what the stream across nodes shows.
func (s *series) streams() bool {
	return s.pair != viaService
}

// inLockstep measures mode (lockstep's "udp" or "rr") for every row of
// rows at once, d each, and keeps every row's sample.
func (b *bench) inLockstep(ctx context.Context, mode string, rows []*series, d time.Duration) error {
	flows := make([]flow, len(rows))
	for i, s := range rows {
		flows[i] = s.flow
	}
	res, err := b.lockstep(ctx, mode, flows, d*time.Duration(len(rows)))
	if err != nil {
		return err
	}
	for i, s := range rows {
		if mode == "udp" {
			s.udp = append(s.udp, res[i].Kpps)
		} else {
			s.p50, s.p99 = append(s.p50, res[i].P50us), append(s.p99, res[i].P99us)
		}
	}
	return nil
}

// orderSeed fixes the shuffled order of the rows in every round, so that a
// rerun measures in the same order.
const orderSeed = 18

// interleaved measures every row once per round: UDP and RR with all rows
// in lockstep (lockstep.go), then TCP throughput row by row in a new
// shuffled order, so that no row always runs first or after the same
// neighbour.
func (b *bench) interleaved(ctx context.Context, all []*series) error {
	if len(all) == 0 {
		return nil
	}
	order := rand.New(rand.NewPCG(orderSeed, 0))
	profile := all[0].profile
	for r := range b.rounds {
		for _, mode := range []string{"udp", "rr"} {
			b.logf("%s round %d of %d, %s: %d rows in lockstep", profile, r+1, b.rounds, mode, len(all))
			if err := b.inLockstep(ctx, mode, all, b.dur); err != nil {
				return fmt.Errorf("%s round %d, %s: %w", profile, r+1, mode, err)
			}
		}
		for _, i := range order.Perm(len(all)) {
			s := all[i]
			if !s.streams() {
				continue
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			b.logf("%s round %d of %d, TCP stream: %s %s %s", s.profile, r+1, b.rounds, s.path, s.pair, s.flow)
			g, err := tcpGbps(ctx, s.flow, b.dur)
			if err != nil {
				return fmt.Errorf("%s %s %s: %w", s.profile, s.path, s.pair, err)
			}
			s.gbps = append(s.gbps, g)
		}
	}
	return nil
}

func nodePeer(n *vnet.Node) peer {
	return peer{name: n.Name, nsPath: n.NS.Path(), ip: n.Pool.Primary}
}

// plugins are the paths made by a CNI plugin, in the order rows are shown.
func (b *bench) plugins() []plugin {
	return []plugin{ptpPlugin(), bridgePlugin(),
		// No IP cooldown: the control phase reuses the same addresses
		// round after round, as host-local does.
		b.podvnet("podvnet", append([]string{"--ip-cooldown", "0s"}, b.agentArgs...)...),
		// The design's alternative for pod veths, side by side.
		b.podvnet("podvnet-tcx", "--ip-cooldown", "0s", "--attach-mode", "tcx"),
		// NetworkPolicy on, its agents against an API server (policy.go).
		podvnetPolicyPlugin("podvnet-policy", append([]string{"--ip-cooldown", "0s"}, b.agentArgs...)...),
	}
}

// podvnet is podvnet as deployed, against an API server, or without one
// where the Kubernetes binaries are missing (Results.AgentsAlone).
func (b *bench) podvnet(name string, args ...string) plugin {
	if b.res.AgentsAlone {
		return podvnetPlugin(name, args...)
	}
	return podvnetAPIPlugin(name, args...)
}

// servicePaths are the paths measured through a Service too.
var servicePaths = map[string]bool{"ptp": true, "podvnet": true}

// dataPhase builds one bed per path of the profile (and one per path
// measured through a Service), measures every row in interleaved rounds,
// and in the bare profile profiles the flood and times the control path.
func (b *bench) dataPhase(ctx context.Context, profile string) (err error) {
	var beds []*bed
	defer func() {
		for i := len(beds) - 1; i >= 0; i-- {
			if cerr := beds[i].close(ctx); cerr != nil && err == nil {
				err = cerr
			}
		}
	}()
	add := func(path string, pl *plugin, svc bool) error {
		b.logf("%s: setting up %s%s", profile, path, map[bool]string{true: " behind a Service"}[svc])
		bd, err := b.newBed(ctx, profile, len(beds), path, pl, svc)
		if err != nil {
			return err
		}
		beds = append(beds, bd)
		return nil
	}
	if b.paths["limit"] {
		if err := add("limit", nil, false); err != nil {
			return err
		}
	}
	for _, pl := range b.plugins() {
		if !b.paths[pl.name] {
			continue
		}
		if err := add(pl.name, &pl, false); err != nil {
			return err
		}
		if servicePaths[pl.name] && !b.profileOnly {
			if err := add(pl.name, &pl, true); err != nil {
				return err
			}
		}
	}

	var all []*series
	for _, bd := range beds {
		for _, s := range bd.series(profile) {
			if err := reachable(ctx, s.flow); err != nil {
				return fmt.Errorf("%s %s %s: %w", profile, s.path, s.pair, err)
			}
			all = append(all, s)
		}
	}
	if b.profileOnly {
		b.profileAcross(ctx, profile, all, b.rounds, nil)
		return nil
	}
	if err := b.interleaved(ctx, all); err != nil {
		return err
	}
	for _, s := range all {
		b.res.Data = append(b.res.Data, s.row())
	}
	if profile != "bare" {
		return nil
	}
	b.profileAcross(ctx, profile, all, 1, map[string]bool{"ptp": true, "podvnet": true})
	for _, bd := range beds {
		if bd.pl == nil || bd.service || bd.path == "bridge" {
			continue
		}
		if bd.pl.policy {
			b.logf("NetworkPolicy update latency")
			if err := b.updateLatency(ctx, bd.pl.api); err != nil {
				return err
			}
		}
		// The control phase fills node 1's pool.
		if _, _, err := delAll(ctx, bd.pods, false); err != nil {
			return err
		}
		bd.pods = nil
		pl := *bd.pl
		if pl.apiServer && !pl.policy {
			// The control path's podvnet rows are the agent alone, as they
			// have been since the first run: ADD does the same work with an
			// API server and NetworkPolicy off, and the memory figure is the
			// agent's without one (the kube phase has it with one).
			var err error
			if pl, err = b.standalone(bd.v, pl); err != nil {
				return err
			}
		}
		if err := b.controlPhase(ctx, bd.v, pl); err != nil {
			return err
		}
	}
	return nil
}

// newBed builds a VNet for one path: its agents if the path is podvnet's,
// the pods (two on node 1 and one on node 2; one on each behind a Service),
// and kube-proxy's rules where the profile or the Service needs them.
func (b *bench) newBed(ctx context.Context, profile string, i int, path string, pl *plugin, service bool) (_ *bed, err error) {
	dir := filepath.Join(b.work, profile, path)
	if service {
		dir += "-service"
	}
	prefix := fmt.Sprintf("%s%s%d", b.prefix, profile[:1], i)
	bd := &bed{path: path, service: service, pl: pl}
	defer func() {
		if err != nil {
			bd.close(ctx)
		}
	}()
	// A ClusterIP row's agents run alone: its Service is kube-proxy's rules
	// as the e2e tests emulate them, which no API server knows of, so they
	// must ask conntrack for every packet.
	if pl != nil && pl.apiServer && !service {
		c, api, err := b.apiCluster(ctx, dir, prefix, pl.policy)
		if err != nil {
			return nil, fmt.Errorf("the %s path's API server: %w", pl.name, err)
		}
		withAPI := *pl
		withAPI.api = api
		bd.pl, bd.cluster, bd.v = &withAPI, c, c.VNet
	} else if bd.v, err = vnet.New(vnet.Options{Prefix: prefix, PerNode: 30, AlignedPools: true, BinDir: b.binDir, WorkDir: dir}); err != nil {
		return nil, err
	}
	v := bd.v
	pl = bd.pl
	n1, n2 := v.Nodes[0], v.Nodes[1]
	if pl != nil {
		if pl.agent != nil {
			for _, n := range v.Nodes {
				args := pl.agent
				if pl.api != nil {
					args = append(pl.api.agentArgs(n), args...)
				}
				if err := n.StartAgent(args...); err != nil {
					return nil, err
				}
			}
		}
		nodes, names := []*vnet.Node{n1, n1, n2}, []string{"a", "b", "c"}
		if service {
			nodes, names = []*vnet.Node{n1, n2}, []string{"a", "c"}
		}
		if bd.pods, err = b.attach(ctx, *pl, nodes, names); err != nil {
			return nil, err
		}
		if pl.api != nil {
			if err := waitCTByPort(v.Nodes); err != nil {
				return nil, err
			}
		}
	}
	others := 0
	if profile == "loaded" {
		others = loadedServices
	}
	if others > 0 || service {
		var backend netip.Addr
		if service {
			backend = bd.pods[len(bd.pods)-1].ip
		}
		for _, n := range v.Nodes {
			if err := n.NFT(kubeProxyRules(others, backend)); err != nil {
				return nil, err
			}
		}
	}
	return bd, nil
}

// waitCTByPort waits until every node's agent asks conntrack only for the
// ports kernel NAT may answer from, as an agent does once it knows every
// Service and every pod of its node: the state the API-backed rows measure.
func waitCTByPort(nodes []*vnet.Node) error {
	deadline := time.Now().Add(time.Minute)
	for _, n := range nodes {
		for {
			var rows []struct{ Setting, Value string }
			out, err := n.Debug("config", "-o", "json")
			if err == nil {
				err = json.Unmarshal([]byte(out), &rows)
			}
			value := ""
			for _, r := range rows {
				if r.Setting == "conntrack_lookup" {
					value = r.Value
				}
			}
			if strings.HasPrefix(value, "on, by port") {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s: the agent's conntrack lookup is %q a minute after its pods were added, not by port (err %v)", n.Name, value, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil
}

// standalone restarts the agents of v without their API server and
// returns pl as that: the control path's podvnet rows.
func (b *bench) standalone(v *vnet.VNet, pl plugin) (plugin, error) {
	for _, n := range v.Nodes {
		n.StopAgent(syscall.SIGTERM)
		if err := n.StartAgent(pl.agent...); err != nil {
			return pl, err
		}
	}
	pl.apiServer, pl.api = false, nil
	return pl, nil
}

// series are the rows the bed measures.
func (bd *bed) series(profile string) []*series {
	one := func(pair string, src, dst peer, addr netip.Addr) *series {
		return &series{profile: profile, path: bd.path, pair: pair, flow: flow{src: src, dst: dst, addr: addr}}
	}
	switch {
	case bd.pl == nil:
		n1, n2 := nodePeer(bd.v.Nodes[0]), nodePeer(bd.v.Nodes[1])
		return []*series{one(acrossNodes, n1, n2, n2.ip)}
	case bd.service:
		a, c := bd.pods[0].peer, bd.pods[1].peer
		return []*series{one(viaService, a, c, clusterIP)}
	}
	a, pb, c := bd.pods[0].peer, bd.pods[1].peer, bd.pods[2].peer
	return []*series{one(sameNode, a, pb, pb.ip), one(acrossNodes, a, c, c.ip)}
}

// close removes the bed's pods and its VNet (with the control plane of
// the policy path's), also after a cancel.
func (bd *bed) close(ctx context.Context) error {
	_, _, derr := delAll(context.WithoutCancel(ctx), bd.pods, false)
	bd.pods = nil
	switch {
	case bd.cluster != nil:
		return errors.Join(derr, bd.cluster.Close())
	case bd.v != nil:
		return errors.Join(derr, bd.v.Close())
	}
	return derr
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
