package main

import (
	"fmt"
	"net"
	"net/netip"
	"os"

	"golang.org/x/sys/unix"

	"github.com/podvnet/podvnet/internal/nettest"
	"github.com/podvnet/podvnet/internal/packet"
	"github.com/podvnet/podvnet/pkg/loader"
	"github.com/podvnet/podvnet/pkg/maps"
)

// ProgCostRow is what one program costs per packet on one path, measured
// with BPF_PROG_TEST_RUN and timed by the kernel. A test run returns the
// redirect's verdict without performing it: what the kernel does next (for
// redirect_neigh a route and a neighbour lookup) is not in it.
type ProgCostRow struct {
	Program string `json:"program"`
	Path    string `json:"path"`
	// Conntrack is how the program asks conntrack (ctOff, ctEvery,
	// ctByPort), Services whether it serves Services (--service-mode bpf).
	Conntrack string `json:"conntrack"`
	Services  bool   `json:"services,omitempty"`
	NsPerPkt  Stat   `json:"ns_per_packet"`
}

// How a program run asks conntrack.
const (
	ctOff    = "off"          // no lookup (--no-conntrack-lookup)
	ctEvery  = "every packet" // static mode, or before the Services are synced
	ctByPort = "by port"      // only for a reply from a port kernel NAT answers from; this one is not
)

// progModes are the configurations each path is timed in: the lookup's
// three modes under kube-proxy, and service mode bpf (where the lookup is
// by port, for hostPorts only).
var progModes = []struct {
	conntrack string
	services  bool
	flags     uint32
}{
	{ctOff, false, 0},
	{ctEvery, false, maps.ConfigCTLookup},
	{ctByPort, false, maps.ConfigCTLookup | maps.ConfigCTByPort},
	{ctByPort, true, maps.ConfigCTLookup | maps.ConfigCTByPort | maps.ConfigServices},
}

// The paths the analysis quotes.
const (
	pathCachedNextHop = "pod -> pod on another node (cached next hop, redirect)"
	pathFromNIC       = "VNet -> local pod (redirect_peer)"
	pathSameNode      = "pod -> pod on the same node (redirect_peer)"
)

// progCost loads the data path in a private netns and bpffs and times each
// program's fast path in each of progModes. A repeated run
// keeps modifying the same frame, so a frame starts at TTL 255 and each
// timed batch runs it 200 times, all on the redirect path.
func (b *bench) progCost() (err error) {
	netns, err := nettest.CreateNS(b.prefix + "-progcost")
	if err != nil {
		return err
	}
	defer netns.Delete()
	root, err := os.MkdirTemp("", "podvnet-bench-bpf-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(root)
	if err := unix.Mount("bpffs", root, "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("mount bpffs: %w", err)
	}
	defer unix.Unmount(root, unix.MNT_DETACH)
	dp, err := loader.Load(root)
	if err != nil {
		return err
	}
	defer dp.Close()

	mac := func(s string) net.HardwareAddr { m, _ := net.ParseMAC(s); return m }
	podA, podB, remote := netip.MustParseAddr("10.240.0.5"), netip.MustParseAddr("10.240.0.6"), netip.MustParseAddr("10.240.0.40")
	podAMAC, hostAMAC := mac("02:aa:00:00:00:05"), mac("02:bb:00:00:00:05")
	ep := func(ifindex uint32, pod, host net.HardwareAddr) maps.Endpoint {
		e := maps.Endpoint{Ifindex: ifindex}
		copy(e.PodMAC[:], pod)
		copy(e.HostMAC[:], host)
		return e
	}
	// Without a context the test run delivers frames on lo (ifindex 1),
	// so pod A's veth is lo here.
	if err := dp.Maps.Endpoints.Put(podA, ep(1, podAMAC, hostAMAC)); err != nil {
		return err
	}
	// Pod B's "host MAC" is pod A's MAC: the local redirect rewrites the
	// source MAC to it, and the next of the 200 runs must still pass the
	// anti-spoofing check on the same, rewritten frame.
	if err := dp.Maps.Endpoints.Put(podB, ep(1, mac("02:aa:00:00:00:06"), podAMAC)); err != nil {
		return err
	}
	if err := dp.Maps.NoSNAT.Sync([]netip.Prefix{netip.MustParsePrefix("10.240.0.0/16")}); err != nil {
		return err
	}
	tcp := func(src, dst netip.Addr, srcMAC, dstMAC net.HardwareAddr) []byte {
		return packet.IPv4{SrcMAC: srcMAC, DstMAC: dstMAC, Src: src, Dst: dst, TTL: 255, Proto: 6, Payload: 20}.Build()
	}
	lo := mac("00:00:00:00:00:00") // lo's address: from_nic sees PACKET_HOST
	cases := []struct {
		prog maps.Hook
		path string
		in   []byte
		// cached: a next hop in the config. As the local redirect's, the
		// MACs it writes are the frame's own (NIC MAC = pod A's, next
		// hop = its host veth's), so every run still passes the
		// anti-spoofing check.
		cached bool
		reason maps.Reason // what every run must count
		// policy: pod A is isolated both ways, with a rule allowing the
		// flow, which the first run enters into the flow table: the rest
		// cost what every packet of an allowed flow costs.
		policy bool
	}{
		{maps.HookPod, pathCachedNextHop, tcp(podA, remote, podAMAC, hostAMAC), true, maps.ReasonPodToNIC, false},
		{maps.HookPod, pathCachedNextHop + ", NetworkPolicy", tcp(podA, remote, podAMAC, hostAMAC), true, maps.ReasonPodToNIC, true},
		{maps.HookPod, "pod -> pod on another node (redirect_neigh)", tcp(podA, remote, podAMAC, hostAMAC), false, maps.ReasonPodToNICNeigh, false},
		{maps.HookPod, pathSameNode, tcp(podA, podB, podAMAC, hostAMAC), false, maps.ReasonPodToLocal, false},
		{maps.HookNIC, pathFromNIC, tcp(remote, podA, mac("12:34:56:78:9a:bc"), lo), false, maps.ReasonNICToLocal, false},
		{maps.HookNIC, pathFromNIC + ", NetworkPolicy", tcp(remote, podA, mac("12:34:56:78:9a:bc"), lo), false, maps.ReasonNICToLocal, true},
	}
	// The rules of the NetworkPolicy cases: every port of every protocol,
	// for every peer.
	if err := dp.Maps.Policy.PutPortSet(1, []maps.PortRange{{}}); err != nil {
		return err
	}
	if err := dp.Maps.Policy.SetEndpoint(1, maps.PolicyEndpoint{IngressPorts: 1, EgressPorts: 1}); err != nil {
		return err
	}
	if err := dp.Maps.Policy.SetConfig(maps.PolicyConfig{Gen: 1, Flags: maps.PolicyConfigEgress | maps.PolicyConfigIsolated}); err != nil {
		return err
	}
	// counted is how many runs the counters hold: under reason r, and in
	// all. A run interrupted by a signal (the Go runtime's preemption) is
	// restarted whole by cilium/ebpf, so a batch may count more than its
	// 200 runs; what must hold is that every run took r's path.
	counted := func(r maps.Reason) (onPath, all uint64, err error) {
		counters, err := dp.Maps.Counters.All()
		if err != nil {
			return 0, 0, err
		}
		for _, c := range counters {
			all += c.Packets
		}
		return counters[r].Packets, all, nil
	}
	batches := 500
	if b.smoke {
		batches = 20
	}
	for _, mode := range progModes {
		for _, c := range cases {
			cfg := maps.Config{NICIfindex: 1, NodeIP: netip.MustParseAddr("10.240.0.4").As4(),
				Subnet: [4]byte{10, 240, 0, 0}, SubnetMask: [4]byte{255, 255, 0, 0}}
			copy(cfg.NICMAC[:], podAMAC)
			if c.cached {
				copy(cfg.NextHopMAC[:], hostAMAC)
			}
			cfg.Flags = mode.flags
			if err := dp.Maps.Config.Set(cfg); err != nil {
				return err
			}
			a := ep(1, podAMAC, hostAMAC)
			if c.policy {
				a.Flags, a.PolicyID = maps.EndpointPolicy, 1
			}
			if err := dp.Maps.Endpoints.Put(podA, a); err != nil {
				return err
			}
			before, beforeAll, err := counted(c.reason)
			if err != nil {
				return err
			}
			var samples []float64
			for range batches {
				frame := append([]byte(nil), c.in...)
				var perRun float64
				runErr := netns.Do(func() error {
					ret, d, err := dp.Program(c.prog).Benchmark(frame, 200, nil)
					if err != nil {
						return err
					}
					if ret != 7 {
						return fmt.Errorf("%s: verdict %d, want a redirect", c.path, ret)
					}
					perRun = float64(d.Nanoseconds())
					return nil
				})
				if runErr != nil {
					return runErr
				}
				samples = append(samples, perRun)
			}
			after, afterAll, err := counted(c.reason)
			if err != nil {
				return err
			}
			if on, all := after-before, afterAll-beforeAll; on < uint64(batches*200) || on != all {
				return fmt.Errorf("%s: %s counted %d of %d runs (%d counted in all): another path was timed", c.path, c.reason, on, batches*200, all)
			}
			b.res.ProgCost = append(b.res.ProgCost, ProgCostRow{Program: c.prog.Program(), Path: c.path, Conntrack: mode.conntrack,
				Services: mode.services, NsPerPkt: stat(samples)})
		}
	}
	return nil
}
