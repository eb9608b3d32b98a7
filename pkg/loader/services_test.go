package loader

import (
	"bytes"
	"encoding/binary"
	"math"
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/podvnet/podvnet/internal/ipproto"
	"github.com/podvnet/podvnet/internal/packet"
	"github.com/podvnet/podvnet/pkg/maps"
)

// Services per packet (lib/nat.h) under BPF_PROG_TEST_RUN: what the
// programs make of each packet of a NodePort flow, the node's own Service
// traffic and a Service without endpoints, checked field by field,
// checksums included.

var (
	vm        = netip.MustParseAddr("10.240.200.10") // a VM in the VNet
	otherNode = netip.MustParseAddr("10.240.0.30")
	hostMAC   = mac("02:5e:00:00:00:01") // the Service device's
	clusterIP = netip.MustParseAddr("10.0.0.50")
	noEPIP    = netip.MustParseAddr("10.0.0.51")
)

const (
	natMin = 61000
	natMax = 65535
)

// svcbed is the testbed with the programs in service mode bpf and a
// Service device (the host's route for the Service CIDR ends there).
type svcbed struct {
	*testbed
	hostIdx int
	nextID  uint32
}

func newSvcbed(t *testing.T) *svcbed {
	t.Helper()
	tb := newTestbed(t)
	d := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "pvsvc", HardwareAddr: hostMAC}, PeerName: "pvsvcp"}
	if err := tb.ns.NL.LinkAdd(d); err != nil {
		t.Fatal(err)
	}
	l, err := tb.ns.NL.LinkByName("pvsvc")
	must(t, err)
	b := &svcbed{testbed: tb, hostIdx: l.Attrs().Index}
	cfg, err := tb.dp.Maps.Config.Get()
	must(t, err)
	cfg.Flags |= maps.ConfigServices
	must(t, tb.dp.Maps.Config.Set(cfg))
	must(t, tb.dp.Maps.Services.SetConfig(b.hostIdx, hostMAC, natMin, natMax))
	must(t, tb.dp.Maps.Services.SetNodes([]netip.Addr{nodeIP, otherNode}, nodeIP))
	return b
}

// service writes a frontend and its backends in the writer's order:
// backends, slots, then the frontend with its count; the backends' ports
// go into the reply filter.
func (b *svcbed) service(t *testing.T, f maps.Frontend, backends ...netip.AddrPort) uint32 {
	t.Helper()
	s := b.dp.Maps.Services
	b.nextID++
	f.ID = b.nextID
	for i, be := range backends {
		bid := f.ID*100 + uint32(i) + 1
		must(t, s.PutBackend(bid, maps.BackendAddr{Addr: be.Addr(), Port: be.Port(), Proto: f.Proto}, 0, true))
		must(t, s.PutSlot(f.ID, i+1, bid))
		if f.Flags&maps.SvcAffinity != 0 {
			must(t, s.PutAffinityMatch(f.ID, bid))
		}
		b.replyPort(t, f.Proto, be.Port(), true, false)
	}
	f.Count = uint16(len(backends))
	must(t, s.PutFrontend(f))
	return f.ID
}

// replyPort sets the svc and ct bits of a source port in svc_ports.
func (b *svcbed) replyPort(t *testing.T, proto uint8, port uint16, svc, ct bool) {
	t.Helper()
	slot, bit, ok := maps.PortSlot(proto, port)
	if !ok {
		t.Fatalf("no filter for protocol %d", proto)
	}
	words, err := b.dp.Maps.Services.PortWords()
	must(t, err)
	w := words[slot]
	if svc {
		w.Svc |= bit
	}
	if ct {
		w.CT |= bit
	}
	must(t, b.dp.Maps.Services.PutPortWord(slot, w))
}

func tcpFrame(srcMAC, dstMAC net.HardwareAddr, src netip.Addr, sport uint16, dst netip.Addr, dport uint16, flags uint8) []byte {
	return packet.L4{IPv4: packet.IPv4{SrcMAC: srcMAC, DstMAC: dstMAC, Src: src, Dst: dst, Proto: packet.ProtoTCP, Payload: 12},
		Sport: sport, Dport: dport, Flags: flags}.Build()
}

func udpFrame(srcMAC, dstMAC net.HardwareAddr, src netip.Addr, sport uint16, dst netip.Addr, dport uint16) []byte {
	return packet.L4{IPv4: packet.IPv4{SrcMAC: srcMAC, DstMAC: dstMAC, Src: src, Dst: dst, Proto: packet.ProtoUDP, Payload: 12},
		Sport: sport, Dport: dport}.Build()
}

// wantPacket checks the addresses and ports of a translated frame and that
// both checksums verify.
func wantPacket(t *testing.T, what string, f packet.Frame, src netip.Addr, sport uint16, dst netip.Addr, dport uint16) {
	t.Helper()
	gs, gd := f.Ports()
	if f.Src() != src || f.Dst() != dst || (sport != 0 && gs != sport) || gd != dport {
		t.Errorf("%s: %s:%d -> %s:%d, want %s:%d -> %s:%d", what, f.Src(), gs, f.Dst(), gd, src, sport, dst, dport)
	}
	if !f.IPv4HeaderValid() {
		t.Errorf("%s: IPv4 header checksum broken", what)
	}
	if !f.L4ChecksumValid() {
		t.Errorf("%s: %s checksum broken", what, ipproto.Name(f.Proto()))
	}
}

func wantMACs(t *testing.T, what string, f packet.Frame, dst, src net.HardwareAddr) {
	t.Helper()
	if !bytes.Equal(f.DstMAC(), dst) || !bytes.Equal(f.SrcMAC(), src) {
		t.Errorf("%s: MACs %s <- %s, want %s <- %s", what, f.DstMAC(), f.SrcMAC(), dst, src)
	}
}

// TestNodePortCluster: a VM's connection to a NodePort (Cluster policy)
// whose backend is on another node is DNAT'd to it and SNAT'd to the node
// from a port of the NAT range; the backend's reply, arriving at the NIC,
// becomes the NodePort answering the VM; later packets keep the port.
func TestNodePortCluster(t *testing.T) {
	b := newSvcbed(t)
	b.service(t, maps.Frontend{Addr: netip.IPv4Unspecified(), Port: 30080, Proto: packet.ProtoTCP, Scope: maps.ScopeExternal,
		Flags: maps.SvcNodePort}, netip.AddrPortFrom(remote, 8080))

	syn := tcpFrame(fabricMA, nicMAC, vm, 40000, nodeIP, 30080, packet.TCPSyn)
	out := b.runCounted(t, maps.HookNIC, b.nicIdx, syn, actRedirect, maps.ReasonPodToNIC)
	natPort, _ := out.Ports()
	wantPacket(t, "SYN to the backend", out, nodeIP, 0, remote, 8080)
	if natPort < natMin || natPort > natMax {
		t.Errorf("SNAT port %d outside %d-%d", natPort, natMin, natMax)
	}
	wantMACs(t, "SYN to the backend", out, fabricMA, nicMAC)
	if out.TTL() != 63 {
		t.Errorf("TTL %d, want 63", out.TTL())
	}

	reply := tcpFrame(fabricMA, nicMAC, remote, 8080, nodeIP, natPort, packet.TCPSyn|packet.TCPAck)
	out = b.runCounted(t, maps.HookNIC, b.nicIdx, reply, actRedirect, maps.ReasonSvcRevXlate)
	wantPacket(t, "SYN-ACK to the VM", out, nodeIP, 30080, vm, 40000)
	wantMACs(t, "SYN-ACK to the VM", out, fabricMA, nicMAC)

	ack := tcpFrame(fabricMA, nicMAC, vm, 40000, nodeIP, 30080, packet.TCPAck)
	out = b.runCounted(t, maps.HookNIC, b.nicIdx, ack, actRedirect, maps.ReasonSvcXlate)
	wantPacket(t, "ACK to the backend", out, nodeIP, natPort, remote, 8080)

	// A packet of no known flow that is not a SYN is the kernel's.
	stray := tcpFrame(fabricMA, nicMAC, vm, 40001, nodeIP, 30080, packet.TCPAck)
	b.runCounted(t, maps.HookNIC, b.nicIdx, stray, actOK, maps.ReasonNICToStack)
	// Nor is a port no Service has, on the node's IP.
	other := tcpFrame(fabricMA, nicMAC, vm, 40000, nodeIP, 22, packet.TCPSyn)
	b.runCounted(t, maps.HookNIC, b.nicIdx, other, actOK, maps.ReasonNICToStack)
}

// TestNodePortLocal: with the Local policy the backend is a pod of this
// node, the VM's address is kept, and the pod's reply is translated back in
// from_pod and sent into the VNet.
func TestNodePortLocal(t *testing.T) {
	b := newSvcbed(t)
	b.service(t, maps.Frontend{Addr: netip.IPv4Unspecified(), Port: 30081, Proto: packet.ProtoUDP, Scope: maps.ScopeExternal,
		Flags: maps.SvcNodePort | maps.SvcLocal | maps.SvcDrop}, netip.AddrPortFrom(podA, 5353))

	q := udpFrame(fabricMA, nicMAC, vm, 40000, nodeIP, 30081)
	out := b.runCounted(t, maps.HookNIC, b.nicIdx, q, actRedirect, maps.ReasonNICToLocal)
	wantPacket(t, "query to the pod", out, vm, 40000, podA, 5353)
	wantMACs(t, "query to the pod", out, podAMAC, hostAMAC)

	a := udpFrame(podAMAC, hostAMAC, podA, 5353, vm, 40000)
	out = b.runCounted(t, maps.HookPod, b.podAIdx, a, actRedirect, maps.ReasonSvcRevXlate)
	wantPacket(t, "answer to the VM", out, nodeIP, 30081, vm, 40000)
	wantMACs(t, "answer to the VM", out, fabricMA, nicMAC)

	// The same pod answering from another port is not a translated flow.
	plain := udpFrame(podAMAC, hostAMAC, podA, 5354, vm, 40000)
	b.runCounted(t, maps.HookPod, b.podAIdx, plain, actRedirect, maps.ReasonPodToNIC)

	// A UDP checksum of 0 (none) stays 0 through the translation.
	none := packet.L4{IPv4: packet.IPv4{SrcMAC: fabricMA, DstMAC: nicMAC, Src: vm, Dst: nodeIP, Proto: packet.ProtoUDP, Payload: 4},
		Sport: 40002, Dport: 30081, NoChecksum: true}.Build()
	out = b.runCounted(t, maps.HookNIC, b.nicIdx, none, actRedirect, maps.ReasonNICToLocal)
	if c := binary.BigEndian.Uint16(out.L4()[6:8]); c != 0 {
		t.Errorf("UDP checksum %#x after translation, want 0 (none)", c)
	}
}

// TestHostToService: the node's own connection to a ClusterIP, routed to
// the Service device, is DNAT'd to a pod of this node; the pod's reply is
// translated back and put into the host through the Service device.
func TestHostToService(t *testing.T) {
	b := newSvcbed(t)
	b.service(t, maps.Frontend{Addr: clusterIP, Port: 80, Proto: packet.ProtoTCP, Scope: maps.ScopeInternal}, netip.AddrPortFrom(podA, 8080))

	syn := tcpFrame(hostMAC, hostMAC, nodeIP, 50000, clusterIP, 80, packet.TCPSyn)
	out := b.runCounted(t, maps.HookHost, b.hostIdx, syn, actRedirect, maps.ReasonPodToLocal)
	wantPacket(t, "SYN to the pod", out, nodeIP, 50000, podA, 8080)
	wantMACs(t, "SYN to the pod", out, podAMAC, hostAMAC)

	synack := tcpFrame(podAMAC, hostAMAC, podA, 8080, nodeIP, 50000, packet.TCPSyn|packet.TCPAck)
	out = b.runCounted(t, maps.HookPod, b.podAIdx, synack, actRedirect, maps.ReasonSvcRevXlate)
	wantPacket(t, "SYN-ACK to the node", out, clusterIP, 80, nodeIP, 50000)
	if !bytes.Equal(out.DstMAC(), hostMAC) {
		t.Errorf("into the host with destination MAC %s, want the Service device's %s", out.DstMAC(), hostMAC)
	}

	// To the Service CIDR but no Service: dropped, not sent anywhere.
	b.runCounted(t, maps.HookHost, b.hostIdx, tcpFrame(hostMAC, hostMAC, nodeIP, 50001, clusterIP, 81, packet.TCPSyn),
		actShot, maps.ReasonSvcHostNoService)
}

// TestServiceWithoutEndpoints: kube-proxy rejects a Service without
// endpoints with ICMP port unreachable, and so do the programs: from the
// VNet (back out of the NIC) and from the node (into the host), for TCP and
// UDP. A Local policy without a local endpoint drops instead.
func TestServiceWithoutEndpoints(t *testing.T) {
	b := newSvcbed(t)
	b.service(t, maps.Frontend{Addr: noEPIP, Port: 53, Proto: packet.ProtoUDP, Scope: maps.ScopeInternal})
	b.service(t, maps.Frontend{Addr: netip.IPv4Unspecified(), Port: 30082, Proto: packet.ProtoTCP, Scope: maps.ScopeExternal,
		Flags: maps.SvcNodePort})
	b.service(t, maps.Frontend{Addr: netip.IPv4Unspecified(), Port: 30083, Proto: packet.ProtoTCP, Scope: maps.ScopeExternal,
		Flags: maps.SvcNodePort | maps.SvcLocal | maps.SvcDrop})

	checkICMP := func(what string, in []byte, out packet.Frame, from, to netip.Addr) {
		t.Helper()
		if out.Proto() != packet.ProtoICMP || out.Src() != from || out.Dst() != to || out.TotalLen() != 56 {
			t.Fatalf("%s: %s -> %s proto %d length %d, want ICMP %s -> %s of 56 bytes", what, out.Src(), out.Dst(), out.Proto(), out.TotalLen(), from, to)
		}
		if !out.IPv4HeaderValid() {
			t.Errorf("%s: IPv4 header checksum broken", what)
		}
		icmp := out.L4()
		if icmp[0] != 3 || icmp[1] != 3 {
			t.Errorf("%s: ICMP type %d code %d, want 3/3 (port unreachable)", what, icmp[0], icmp[1])
		}
		if packet.Checksum(icmp) != 0 {
			t.Errorf("%s: ICMP checksum broken", what)
		}
		if quote := in[14 : 14+28]; !bytes.Equal(icmp[8:36], quote) {
			t.Errorf("%s: quoted % x, want the packet's IPv4 header and 8 bytes % x", what, icmp[8:36], quote)
		}
	}

	q := udpFrame(hostMAC, hostMAC, nodeIP, 50000, noEPIP, 53)
	out := b.runCounted(t, maps.HookHost, b.hostIdx, q, actRedirect, maps.ReasonSvcNoBackend)
	checkICMP("from the node", q, out, noEPIP, nodeIP)
	if !bytes.Equal(out.DstMAC(), hostMAC) {
		t.Errorf("the node's unreachable goes to MAC %s, want the Service device's %s", out.DstMAC(), hostMAC)
	}

	syn := tcpFrame(fabricMA, nicMAC, vm, 40000, nodeIP, 30082, packet.TCPSyn)
	out = b.runCounted(t, maps.HookNIC, b.nicIdx, syn, actRedirect, maps.ReasonSvcNoBackend)
	checkICMP("from the VNet", syn, out, nodeIP, vm)
	wantMACs(t, "from the VNet", out, fabricMA, nicMAC)

	local := tcpFrame(fabricMA, nicMAC, vm, 40000, nodeIP, 30083, packet.TCPSyn)
	b.runCounted(t, maps.HookNIC, b.nicIdx, local, actShot, maps.ReasonSvcDrop)
}

// TestNATPortsExhausted: when no SNAT port of the range is free for a
// backend, a new flow is dropped and counted, never given a port in use.
func TestNATPortsExhausted(t *testing.T) {
	b := newSvcbed(t)
	must(t, b.dp.Maps.Services.SetConfig(b.hostIdx, hostMAC, natMin, natMin))
	b.service(t, maps.Frontend{Addr: netip.IPv4Unspecified(), Port: 30080, Proto: packet.ProtoTCP, Scope: maps.ScopeExternal,
		Flags: maps.SvcNodePort}, netip.AddrPortFrom(remote, 8080))
	out := b.runCounted(t, maps.HookNIC, b.nicIdx, tcpFrame(fabricMA, nicMAC, vm, 40000, nodeIP, 30080, packet.TCPSyn), actRedirect, maps.ReasonPodToNIC)
	if sport, _ := out.Ports(); sport != natMin {
		t.Fatalf("SNAT port %d, want %d, the only one", sport, natMin)
	}
	b.runCounted(t, maps.HookNIC, b.nicIdx, tcpFrame(fabricMA, nicMAC, vm, 40001, nodeIP, 30080, packet.TCPSyn), actShot, maps.ReasonSvcNATFull)
}

// TestSessionAffinityPerPacket: with sessionAffinity ClientIP every new flow
// of one client reaches the backend its first flow got; when that backend
// leaves the Service, the next flow gets another.
func TestSessionAffinityPerPacket(t *testing.T) {
	b := newSvcbed(t)
	backends := []netip.AddrPort{netip.AddrPortFrom(remote, 8080), netip.AddrPortFrom(netip.MustParseAddr("10.240.0.41"), 8080),
		netip.AddrPortFrom(netip.MustParseAddr("10.240.0.42"), 8080)}
	id := b.service(t, maps.Frontend{Addr: clusterIP, Port: 80, Proto: packet.ProtoTCP, Scope: maps.ScopeInternal,
		Flags: maps.SvcAffinity, AffinityTimeout: 3600}, backends...)

	first := netip.Addr{}
	for i := range 20 {
		out := b.runCounted(t, maps.HookHost, b.hostIdx, tcpFrame(hostMAC, hostMAC, nodeIP, uint16(50000+i), clusterIP, 80, packet.TCPSyn),
			actRedirect, maps.ReasonPodToNIC)
		if i == 0 {
			first = out.Dst()
		} else if out.Dst() != first {
			t.Fatalf("flow %d reached %s, the first %s", i, out.Dst(), first)
		}
	}
	// The backend leaves the Service as the writer removes it: the others
	// fill the slots, the count shrinks, its affinity pair goes.
	s := b.dp.Maps.Services
	slot := 0
	for i, be := range backends {
		bid := id*100 + uint32(i) + 1
		if be.Addr() == first {
			must(t, s.DeleteAffinityMatch(id, bid))
			continue
		}
		slot++
		must(t, s.PutSlot(id, slot, bid))
	}
	must(t, s.PutFrontend(maps.Frontend{Addr: clusterIP, Port: 80, Proto: packet.ProtoTCP, Scope: maps.ScopeInternal,
		Flags: maps.SvcAffinity, AffinityTimeout: 3600, ID: id, Count: uint16(slot)}))
	next := netip.Addr{}
	for i := range 20 {
		out := b.runCounted(t, maps.HookHost, b.hostIdx, tcpFrame(hostMAC, hostMAC, nodeIP, uint16(51000+i), clusterIP, 80, packet.TCPSyn),
			actRedirect, maps.ReasonPodToNIC)
		switch {
		case out.Dst() == first:
			t.Fatalf("flow %d reached %s, which left the Service", i, first)
		case i == 0:
			next = out.Dst()
		case out.Dst() != next:
			t.Fatalf("flow %d reached %s, the client's new backend is %s", i, out.Dst(), next)
		}
	}
}

// TestBackendSpread: N new flows over K backends are spread evenly: the
// counts pass a chi-square test of uniformity at p = 1e-6 (so that a fair
// spread fails it once in a million runs), and each backend's connection
// counter saw its flows.
func TestBackendSpread(t *testing.T) {
	b := newSvcbed(t)
	const n, k = 6000, 6
	var backends []netip.AddrPort
	for i := range k {
		backends = append(backends, netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 240, 1, byte(10 + i)}), 8080))
	}
	b.service(t, maps.Frontend{Addr: clusterIP, Port: 80, Proto: packet.ProtoTCP, Scope: maps.ScopeInternal}, backends...)
	seen := map[netip.Addr]int{}
	for i := range n {
		src := netip.AddrFrom4([4]byte{10, 240, 2, byte(i / 250)})
		_, out := b.run(t, maps.HookHost, b.hostIdx, tcpFrame(hostMAC, hostMAC, src, uint16(20000+i%250), clusterIP, 80, packet.TCPSyn))
		seen[out.Dst()]++
	}
	chi2 := 0.0
	expect := float64(n) / k
	for _, be := range backends {
		d := float64(seen[be.Addr()]) - expect
		chi2 += d * d / expect
	}
	// The chi-square quantile for 5 degrees of freedom at 1 - 1e-6.
	const limit = 35.9
	t.Logf("%d flows over %d backends: %v, chi-square %.1f (limit %.1f), max/min %.2f", n, k, seen, chi2, limit, ratio(seen))
	if chi2 > limit {
		t.Errorf("spread %v: chi-square %.1f above %.1f", seen, chi2, limit)
	}
	entries, err := b.dp.Maps.Services.Backends()
	must(t, err)
	for _, e := range entries {
		if int(e.Conns) != seen[e.Addr] {
			t.Errorf("backend %s counted %d connections, %d flows reached it", e.Addr, e.Conns, seen[e.Addr])
		}
	}
}

func ratio(m map[netip.Addr]int) float64 {
	lo, hi := math.MaxInt, 0
	for _, v := range m {
		lo, hi = min(lo, v), max(hi, v)
	}
	return float64(hi) / float64(lo)
}

// TestPodToServicePerPacket: a pod's Service packet no socket hook
// translated (--pod-cgroup none, a raw socket) is translated in from_pod;
// the remote backend's reply, arriving at the NIC, reaches the pod from the
// ClusterIP.
func TestPodToServicePerPacket(t *testing.T) {
	b := newSvcbed(t)
	b.service(t, maps.Frontend{Addr: clusterIP, Port: 80, Proto: packet.ProtoTCP, Scope: maps.ScopeInternal}, netip.AddrPortFrom(remote, 8080))

	syn := tcpFrame(podAMAC, hostAMAC, podA, 40000, clusterIP, 80, packet.TCPSyn)
	out := b.runCounted(t, maps.HookPod, b.podAIdx, syn, actRedirect, maps.ReasonPodToNIC)
	wantPacket(t, "SYN to the backend", out, podA, 40000, remote, 8080)

	synack := tcpFrame(fabricMA, nicMAC, remote, 8080, podA, 40000, packet.TCPSyn|packet.TCPAck)
	out = b.runCounted(t, maps.HookNIC, b.nicIdx, synack, actRedirect, maps.ReasonSvcRevXlate)
	wantPacket(t, "SYN-ACK to the pod", out, clusterIP, 80, podA, 40000)
	wantMACs(t, "SYN-ACK to the pod", out, podAMAC, hostAMAC)

	// Without the Services flag (kube-proxy mode) the same packet is the
	// kernel's.
	cfg, err := b.dp.Maps.Config.Get()
	must(t, err)
	cfg.Flags &^= maps.ConfigServices
	must(t, b.dp.Maps.Config.Set(cfg))
	b.runCounted(t, maps.HookPod, b.podAIdx, tcpFrame(podAMAC, hostAMAC, podA, 40001, clusterIP, 80, packet.TCPSyn), actOK, maps.ReasonPodToStack)
}
