package loader

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/podvnet/podvnet/internal/nettest"
	"github.com/podvnet/podvnet/internal/packet"
	"github.com/podvnet/podvnet/pkg/maps"
)

// tc verdicts (linux/pkt_cls.h).
const (
	actOK       = 0
	actShot     = 2
	actRedirect = 7 // bpf_redirect, _peer and _neigh alike
)

var (
	nicMAC   = mac("02:00:00:00:00:01")
	fabricMA = mac("12:34:56:78:9a:bc") // what Azure answers every ARP with
	podAMAC  = mac("02:aa:00:00:00:05")
	hostAMAC = mac("02:bb:00:00:00:05")
	podBMAC  = mac("02:aa:00:00:00:06")
	hostBMAC = mac("02:bb:00:00:00:06")

	podA      = netip.MustParseAddr("10.240.0.5")
	podB      = netip.MustParseAddr("10.240.0.6")
	nodeIP    = netip.MustParseAddr("10.240.0.4")
	gatewayIP = netip.MustParseAddr("169.254.1.1")
	remote    = netip.MustParseAddr("10.240.0.40") // a pod on another node
	inet      = netip.MustParseAddr("198.51.100.7")
	subnet    = netip.MustParsePrefix("10.240.0.0/16")
	peering   = netip.MustParsePrefix("172.16.0.0/12")
)

func mac(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

// testbed is a loaded data path inside a private netns, with pod A's host
// veth stood in by a veth so skb->ifindex matches an endpoint.
type testbed struct {
	ns      *nettest.NS
	dp      *Datapath
	podAIdx int
	nicIdx  int
}

func newTestbed(t *testing.T) *testbed {
	t.Helper()
	nettest.RequireRoot(t)
	ns := nettest.NewNS(t, nettest.Prefix()+"-dp")
	dp, err := Load(nettest.BPFFS(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dp.Close() })

	tb := &testbed{ns: ns, dp: dp}
	tb.podAIdx, tb.nicIdx = tb.addDevice(t, "pva", hostAMAC), tb.addDevice(t, "eth0", nicMAC)

	var nm, nh [6]byte
	copy(nm[:], nicMAC)
	copy(nh[:], fabricMA)
	// Conntrack lookups on: the testbed's netns tracks nothing, so every
	// lookup misses and the fast path must still be taken. The next hop is
	// cached, as the agent does on Azure.
	must(t, dp.Maps.Config.Set(maps.Config{NICIfindex: uint32(tb.nicIdx), NodeIP: nodeIP.As4(), GatewayIP: gatewayIP.As4(),
		Subnet: subnet.Addr().As4(), SubnetMask: [4]byte{255, 255, 0, 0}, NextHopMAC: nh, NICMAC: nm, Flags: maps.ConfigCTLookup}))
	must(t, dp.Maps.NoSNAT.Sync([]netip.Prefix{subnet, peering}))
	must(t, dp.Maps.Endpoints.Put(podA, endpoint(tb.podAIdx, podAMAC, hostAMAC)))
	must(t, dp.Maps.Endpoints.Put(podB, endpoint(4242, podBMAC, hostBMAC)))
	return tb
}

// addDevice adds a device to the testbed's netns and returns its ifindex.
// No dummy driver on every kernel; a veth serves as a device to own the
// ifindex.
func (tb *testbed) addDevice(t *testing.T, name string, hw net.HardwareAddr) int {
	t.Helper()
	d := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name, HardwareAddr: hw}, PeerName: name + "p"}
	if err := tb.ns.NL.LinkAdd(d); err != nil {
		t.Fatalf("add %s: %v", name, err)
	}
	l, err := tb.ns.NL.LinkByName(name)
	if err != nil {
		t.Fatal(err)
	}
	return l.Attrs().Index
}

func endpoint(ifindex int, pod, host net.HardwareAddr) maps.Endpoint {
	ep := maps.Endpoint{Ifindex: uint32(ifindex)}
	copy(ep.PodMAC[:], pod)
	copy(ep.HostMAC[:], host)
	return ep
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// skbCtx is the head of struct __sk_buff up to tc_index, with the fields
// BPF_PROG_TEST_RUN takes: the device the frame is on (ifindex), the one it
// entered the node through (ingress_ifindex: 0 for the node's own) and
// skb->mark, which a program may change (read back from the context).
type skbCtx struct {
	_              [2]uint32
	Mark           uint32
	_              [6]uint32
	IngressIfindex uint32
	Ifindex        uint32
	_              uint32
}

// run feeds frame to the hook's program as if it arrived on ifindex and
// returns the verdict and the frame as the program left it.
func (tb *testbed) run(t *testing.T, h maps.Hook, ifindex int, frame []byte) (uint32, packet.Frame) {
	t.Helper()
	ret, out, err := tb.tryRun(h, ifindex, frame)
	if err != nil {
		t.Fatalf("run %s: %v", h, err)
	}
	return ret, out
}

func (tb *testbed) tryRun(h maps.Hook, ifindex int, frame []byte) (uint32, packet.Frame, error) {
	ret, out, _, err := tb.runCtx(h, skbCtx{Ifindex: uint32(ifindex)}, frame)
	return ret, out, err
}

// runCtx runs frame with the given context and returns the context as the
// program left it too.
func (tb *testbed) runCtx(h maps.Hook, in skbCtx, frame []byte) (uint32, packet.Frame, skbCtx, error) {
	out := make([]byte, len(frame)+64)
	// The kernel writes back the whole struct __sk_buff, or fails.
	var ctxOut [64]uint32
	opts := &ebpf.RunOptions{Data: frame, DataOut: out, Context: in, ContextOut: &ctxOut}
	var ret uint32
	err := tb.ns.Do(func() (err error) {
		ret, err = tb.dp.Program(h).Run(opts)
		return err
	})
	head := skbCtx{Mark: ctxOut[2], IngressIfindex: ctxOut[9], Ifindex: ctxOut[10]}
	return ret, packet.Frame(opts.DataOut), head, err
}

// TestTruncatedFrames: BPF_PROG_TEST_RUN itself refuses frames shorter than
// an Ethernet header, and IPv4 frames shorter than an IPv4 header (EINVAL),
// so the kernel never shows such frames to the programs this way; the
// verifier has proven every access bounded. Should a kernel start accepting
// them, the programs must drop (from_pod) or pass (from_nic) them.
func TestTruncatedFrames(t *testing.T) {
	tb := newTestbed(t)
	full := packet.IPv4{SrcMAC: podAMAC, DstMAC: hostAMAC, Src: podA, Dst: remote}.Build()
	for n := 0; n < 34; n++ {
		for _, h := range []maps.Hook{maps.HookPod, maps.HookNIC} {
			verdict, _, err := tb.tryRun(h, tb.podAIdx, full[:n])
			if errors.Is(err, unix.EINVAL) {
				continue
			}
			if err != nil {
				t.Fatalf("%s, %d bytes: %v", h, n, err)
			}
			want := uint32(actShot)
			if h == maps.HookNIC {
				want = actOK
			}
			if verdict != want {
				t.Errorf("%s, %d bytes: verdict %d, want %d", h, n, verdict, want)
			}
		}
	}
}

// runCounted runs frame through the hook's program, arriving on ifindex,
// checks the verdict and that reason counted the frame once, with its
// bytes, and returns the frame as the program left it.
func (tb *testbed) runCounted(t *testing.T, h maps.Hook, ifindex int, frame []byte, verdict uint32, reason maps.Reason) packet.Frame {
	t.Helper()
	size := uint64(len(frame))
	before := tb.counters(t)
	got, out := tb.run(t, h, ifindex, frame)
	if got != verdict {
		t.Fatalf("verdict %d, want %d", got, verdict)
	}
	after := tb.counters(t)
	if d := after[reason].Packets - before[reason].Packets; d != 1 {
		t.Errorf("counter %s moved by %d, want 1", reason, d)
	}
	if d := after[reason].Bytes - before[reason].Bytes; d != size {
		t.Errorf("counter %s bytes moved by %d, want %d", reason, d, size)
	}
	return out
}

// counters is indexed by Reason: All lists every reason in enum order.
func (tb *testbed) counters(t *testing.T) []maps.CounterEntry {
	t.Helper()
	all, err := tb.dp.Maps.Counters.All()
	if err != nil {
		t.Fatal(err)
	}
	return all
}

func TestFromPod(t *testing.T) {
	tb := newTestbed(t)
	fromA := func(dst netip.Addr) packet.IPv4 {
		return packet.IPv4{SrcMAC: podAMAC, DstMAC: hostAMAC, Src: podA, Dst: dst}
	}
	arp := packet.ARP(1, podAMAC, mac("ff:ff:ff:ff:ff:ff"), podAMAC, podA, mac("00:00:00:00:00:00"), remote)
	spoofIP := fromA(remote)
	spoofIP.Src = podB
	spoofMAC := fromA(remote)
	spoofMAC.SrcMAC = podBMAC
	ttl1 := fromA(remote)
	ttl1.TTL = 1
	frag := fromA(remote)
	frag.FragOff = 0x2000 | 185 // MF + offset: not the first fragment

	tests := []struct {
		name    string
		frame   []byte
		verdict uint32
		reason  maps.Reason
		// for redirects that rewrite MACs: the expected new header
		dstMAC, srcMAC net.HardwareAddr
		ttl            uint8
	}{
		{name: "same node pod", frame: fromA(podB).Build(), verdict: actRedirect, reason: maps.ReasonPodToLocal,
			dstMAC: podBMAC, srcMAC: hostBMAC, ttl: 63},
		{name: "VNet pod on another node", frame: fromA(remote).Build(), verdict: actRedirect, reason: maps.ReasonPodToNIC,
			dstMAC: fabricMA, srcMAC: nicMAC, ttl: 63},
		{name: "peered range", frame: fromA(netip.MustParseAddr("172.20.1.1")).Build(), verdict: actRedirect, reason: maps.ReasonPodToNIC, ttl: 63},
		{name: "fragment to VNet", frame: frag.Build(), verdict: actOK, reason: maps.ReasonPodToStackFrag, ttl: 64},
		{name: "fragment to a local pod", frame: withDst(frag, podB), verdict: actOK, reason: maps.ReasonPodToStackFrag, ttl: 64},
		{name: "ICMP error to VNet", frame: icmp(fromA(remote), 3), verdict: actOK, reason: maps.ReasonPodToStackFrag, ttl: 64},
		{name: "ICMP echo to VNet", frame: icmp(fromA(remote), 8), verdict: actRedirect, reason: maps.ReasonPodToNIC, ttl: 63},
		{name: "TCP to VNet", frame: tcp(fromA(remote)), verdict: actRedirect, reason: maps.ReasonPodToNIC, ttl: 63},
		{name: "this node", frame: fromA(nodeIP).Build(), verdict: actOK, reason: maps.ReasonPodToStack, ttl: 64},
		{name: "Internet", frame: fromA(inet).Build(), verdict: actOK, reason: maps.ReasonPodToStack, ttl: 64},
		{name: "Service CIDR", frame: fromA(netip.MustParseAddr("10.0.0.10")).Build(), verdict: actOK, reason: maps.ReasonPodToStack, ttl: 64},
		{name: "spoofed source IP", frame: spoofIP.Build(), verdict: actShot, reason: maps.ReasonDropSpoofedIP},
		{name: "unknown source IP", frame: withSrc(fromA(remote), inet), verdict: actShot, reason: maps.ReasonDropSpoofedIP},
		{name: "spoofed source MAC", frame: spoofMAC.Build(), verdict: actShot, reason: maps.ReasonDropSpoofedMAC},
		{name: "TTL 1", frame: ttl1.Build(), verdict: actShot, reason: maps.ReasonDropTTLExceeded},
		{name: "ARP for another IP", frame: arp, verdict: actOK, reason: maps.ReasonPodARP},
		{name: "IPv6", frame: packet.Ethernet(podAMAC, hostAMAC, packet.EtherTypeIPv6, 40), verdict: actShot, reason: maps.ReasonDropUnsupportedL3},
		{name: "VLAN tagged", frame: packet.Ethernet(podAMAC, hostAMAC, packet.EtherTypeVLAN, 46), verdict: actShot, reason: maps.ReasonDropUnsupportedL3},
		{name: "IHL below 5", frame: ihl4(fromA(remote)), verdict: actShot, reason: maps.ReasonDropMalformed},
		{name: "not IPv4 version", frame: badVersion(fromA(remote)), verdict: actShot, reason: maps.ReasonDropMalformed},
		{name: "bare ARP header", frame: packet.Ethernet(podAMAC, hostAMAC, packet.EtherTypeARP, 0), verdict: actOK, reason: maps.ReasonPodARP},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := append([]byte(nil), tt.frame...)
			out := tb.runCounted(t, maps.HookPod, tb.podAIdx, tt.frame, tt.verdict, tt.reason)
			if tt.ttl == 0 {
				return
			}
			if out.TTL() != tt.ttl {
				t.Errorf("TTL %d, want %d", out.TTL(), tt.ttl)
			}
			if !out.IPv4HeaderValid() {
				t.Errorf("IPv4 header checksum broken after the program: % x", out[14:34])
			}
			if tt.dstMAC != nil {
				if !bytes.Equal(out.DstMAC(), tt.dstMAC) || !bytes.Equal(out.SrcMAC(), tt.srcMAC) {
					t.Errorf("MACs %s <- %s, want %s <- %s", out.DstMAC(), out.SrcMAC(), tt.dstMAC, tt.srcMAC)
				}
			} else if tt.verdict == actOK && !bytes.Equal(out[:len(in)], in) {
				t.Errorf("a frame passed to the stack must be untouched")
			}
		})
	}
}

// TestARPResponder: the gateway answers ARP from the pod that owns the
// interface, in eBPF, straight back out of the host veth.
func TestARPResponder(t *testing.T) {
	tb := newTestbed(t)
	bcast := mac("ff:ff:ff:ff:ff:ff")
	zero := mac("00:00:00:00:00:00")
	tests := []struct {
		name    string
		frame   []byte
		verdict uint32
		reason  maps.Reason
	}{
		{"request for the gateway", packet.ARP(1, podAMAC, bcast, podAMAC, podA, zero, gatewayIP), actRedirect, maps.ReasonPodARPReply},
		{"request for another IP", packet.ARP(1, podAMAC, bcast, podAMAC, podA, zero, remote), actOK, maps.ReasonPodARP},
		{"reply", packet.ARP(2, podAMAC, hostAMAC, podAMAC, podA, hostAMAC, gatewayIP), actOK, maps.ReasonPodARP},
		{"sender IP of another pod", packet.ARP(1, podAMAC, bcast, podAMAC, podB, zero, gatewayIP), actShot, maps.ReasonDropSpoofedIP},
		{"sender MAC not the pod's", packet.ARP(1, podBMAC, bcast, podBMAC, podA, zero, gatewayIP), actShot, maps.ReasonDropSpoofedMAC},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := tb.runCounted(t, maps.HookPod, tb.podAIdx, tt.frame, tt.verdict, tt.reason)
			if tt.reason != maps.ReasonPodARPReply {
				return
			}
			arp := out.ARP()
			if !bytes.Equal(out.DstMAC(), podAMAC) || !bytes.Equal(out.SrcMAC(), hostAMAC) {
				t.Errorf("Ethernet %s <- %s, want %s <- %s", out.DstMAC(), out.SrcMAC(), podAMAC, hostAMAC)
			}
			want := packet.ARPFields{Op: 2, SHA: hostAMAC, SPA: gatewayIP, THA: podAMAC, TPA: podA}
			if arp.Op != want.Op || !bytes.Equal(arp.SHA, want.SHA) || arp.SPA != want.SPA || !bytes.Equal(arp.THA, want.THA) || arp.TPA != want.TPA {
				t.Errorf("ARP reply %+v, want %+v", arp, want)
			}
		})
	}
}

func TestFromPodOnInterfaceOfAnotherPod(t *testing.T) {
	tb := newTestbed(t)
	// Pod B's own, well-formed frame, but arriving on pod A's veth: B's IP
	// does not belong to this interface.
	f := packet.IPv4{SrcMAC: podBMAC, DstMAC: hostAMAC, Src: podB, Dst: remote}.Build()
	if v, _ := tb.run(t, maps.HookPod, tb.podAIdx, f); v != actShot {
		t.Fatalf("verdict %d, want drop", v)
	}
}

func TestFromNIC(t *testing.T) {
	tb := newTestbed(t)
	fromFabric := func(dst netip.Addr) packet.IPv4 {
		return packet.IPv4{SrcMAC: fabricMA, DstMAC: nicMAC, Src: remote, Dst: dst}
	}
	ttl1 := fromFabric(podA)
	ttl1.TTL = 1
	otherHost := fromFabric(podA)
	otherHost.DstMAC = mac("02:99:99:99:99:99")
	tests := []struct {
		name    string
		frame   []byte
		verdict uint32
		reason  maps.Reason
		dstMAC  net.HardwareAddr
		srcMAC  net.HardwareAddr
	}{
		{name: "to a local pod", frame: fromFabric(podA).Build(), verdict: actRedirect, reason: maps.ReasonNICToLocal, dstMAC: podAMAC, srcMAC: hostAMAC},
		{name: "to the node", frame: fromFabric(nodeIP).Build(), verdict: actOK, reason: maps.ReasonNICToStack},
		{name: "to an unknown IP", frame: fromFabric(netip.MustParseAddr("10.240.0.99")).Build(), verdict: actOK, reason: maps.ReasonNICToStack},
		{name: "ARP", frame: packet.Ethernet(fabricMA, mac("ff:ff:ff:ff:ff:ff"), packet.EtherTypeARP, 28), verdict: actOK, reason: maps.ReasonNICToStack},
		{name: "not addressed to this host", frame: otherHost.Build(), verdict: actOK, reason: maps.ReasonNICToStack},
		{name: "TTL 1 to a pod", frame: ttl1.Build(), verdict: actShot, reason: maps.ReasonDropTTLExceeded},
		{name: "IHL below 5", frame: ihl4(fromFabric(podA)), verdict: actOK, reason: maps.ReasonNICToStack},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out := tb.runCounted(t, maps.HookNIC, tb.nicIdx, tt.frame, tt.verdict, tt.reason)
			if tt.dstMAC != nil {
				if !bytes.Equal(out.DstMAC(), tt.dstMAC) || !bytes.Equal(out.SrcMAC(), tt.srcMAC) {
					t.Errorf("MACs %s <- %s, want %s <- %s", out.DstMAC(), out.SrcMAC(), tt.dstMAC, tt.srcMAC)
				}
				if out.TTL() != 63 || !out.IPv4HeaderValid() {
					t.Errorf("TTL %d (want 63), checksum valid %v", out.TTL(), out.IPv4HeaderValid())
				}
			}
		})
	}
}

func withSrc(p packet.IPv4, src netip.Addr) []byte {
	p.Src = src
	return p.Build()
}

func ihl4(p packet.IPv4) []byte {
	p.IHL = 4
	return p.Build()
}

func badVersion(p packet.IPv4) []byte {
	b := p.Build()
	b[14] = 6<<4 | 5
	return b
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

func withDst(p packet.IPv4, dst netip.Addr) []byte {
	p.Dst = dst
	return p.Build()
}

// icmp makes p an ICMP message of the given type.
func icmp(p packet.IPv4, typ byte) []byte {
	p.Proto = 1
	b := p.Build()
	b[34] = typ
	return b
}

func tcp(p packet.IPv4) []byte {
	p.Proto = 6
	p.Payload = 20
	return p.Build()
}

// TestMonitorEvents: while a monitor holds the lease, drops are reported
// with their reason and addresses (and filtered by IP); without a lease
// nothing is written.
func TestMonitorEvents(t *testing.T) {
	tb := newTestbed(t)
	spoofed := packet.IPv4{SrcMAC: podAMAC, DstMAC: hostAMAC, Src: podB, Dst: remote, Proto: 17}.Build()
	genuine := packet.IPv4{SrcMAC: podAMAC, DstMAC: hostAMAC, Src: podA, Dst: remote}.Build()
	binary.BigEndian.PutUint16(spoofed[34:], 40000) // UDP source port
	binary.BigEndian.PutUint16(spoofed[36:], 9100)

	mon, err := maps.OpenMonitor(tb.dp.Root(), maps.MonitorDrops, netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	tb.run(t, maps.HookPod, tb.podAIdx, genuine) // a redirect: not a drop, not reported
	tb.run(t, maps.HookPod, tb.podAIdx, spoofed)
	ev, err := mon.Read(time.Now().Add(time.Second))
	if err != nil {
		t.Fatalf("no event for a drop: %v", err)
	}
	src, dst := ev.Addrs()
	sport, dport := ev.Ports()
	if ev.Reason != maps.ReasonDropSpoofedIP || ev.Hook != maps.HookPod || ev.Ifindex != uint32(tb.podAIdx) ||
		src != podB || dst != remote || sport != 40000 || dport != 9100 || ev.Proto != 17 || ev.Len != uint32(len(spoofed)) {
		t.Errorf("event %+v (src %s dst %s ports %d->%d)", ev, src, dst, sport, dport)
	}
	if ev, err := mon.Read(time.Now().Add(100 * time.Millisecond)); err == nil {
		t.Errorf("a second event %+v: the redirect was reported too", ev)
	}
	mon.Close()

	// A filter for another address: nothing. No lease: nothing.
	other, err := maps.OpenMonitor(tb.dp.Root(), maps.MonitorDrops|maps.MonitorTrace, netip.MustParseAddr("10.9.9.9"))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	tb.run(t, maps.HookPod, tb.podAIdx, spoofed)
	tb.run(t, maps.HookPod, tb.podAIdx, genuine)
	if ev, err := other.Read(time.Now().Add(100 * time.Millisecond)); err == nil {
		t.Errorf("event %+v passed a filter for 10.9.9.9", ev)
	}
}

// TestShapedEndpoint: the traffic of a pod whose bandwidth tc shapes leaves
// the fast path: from it, "next" (so the bandwidth plugin's tc filters run,
// then the stack); to it, the stack (and the qdisc on its host veth).
func TestShapedEndpoint(t *testing.T) {
	tb := newTestbed(t)
	const actUnspec = ^uint32(0) // TC_ACT_UNSPEC (-1): tcx's "next"
	shapedA := endpoint(tb.podAIdx, podAMAC, hostAMAC)
	shapedA.Flags = maps.EndpointShaped
	must(t, tb.dp.Maps.Endpoints.Put(podA, shapedA))
	fromA := packet.IPv4{SrcMAC: podAMAC, DstMAC: hostAMAC, Src: podA, Dst: remote}.Build()
	if v, _ := tb.run(t, maps.HookPod, tb.podAIdx, fromA); v != actUnspec {
		t.Errorf("from a shaped pod: verdict %d, want TC_ACT_UNSPEC", int32(v))
	}
	spoofed := packet.IPv4{SrcMAC: podAMAC, DstMAC: hostAMAC, Src: podB, Dst: remote}.Build()
	if v, _ := tb.run(t, maps.HookPod, tb.podAIdx, spoofed); v != actShot {
		t.Errorf("shaping must not skip anti-spoofing: verdict %d", v)
	}
	toA := packet.IPv4{SrcMAC: fabricMA, DstMAC: nicMAC, Src: remote, Dst: podA}.Build()
	if v, _ := tb.run(t, maps.HookNIC, tb.nicIdx, toA); v != actOK {
		t.Errorf("from the NIC to a shaped pod: verdict %d, want the stack", v)
	}
	c := tb.counters(t)
	if c[maps.ReasonPodShaped].Packets != 1 || c[maps.ReasonNICShaped].Packets != 1 {
		t.Errorf("shaped counters: pod %d, nic %d, want 1 each", c[maps.ReasonPodShaped].Packets, c[maps.ReasonNICShaped].Packets)
	}
}

// TestSubnetWithoutShortcut: with no subnet in the config the nosnat trie
// alone decides, and a destination in it still takes the fast path.
func TestSubnetWithoutShortcut(t *testing.T) {
	tb := newTestbed(t)
	cfg, err := tb.dp.Maps.Config.Get()
	must(t, err)
	cfg.Subnet, cfg.SubnetMask = [4]byte{}, [4]byte{}
	must(t, tb.dp.Maps.Config.Set(cfg))
	for dst, want := range map[netip.Addr]uint32{remote: actRedirect, inet: actOK} {
		f := packet.IPv4{SrcMAC: podAMAC, DstMAC: hostAMAC, Src: podA, Dst: dst}.Build()
		if v, _ := tb.run(t, maps.HookPod, tb.podAIdx, f); v != want {
			t.Errorf("to %s: verdict %d, want %d", dst, v, want)
		}
	}
}
