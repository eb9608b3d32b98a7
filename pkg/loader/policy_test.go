package loader

import (
	"encoding/binary"
	"net"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/podvnet/podvnet/internal/packet"
	"github.com/podvnet/podvnet/pkg/maps"
)

// Identities of the policy testbed's peers.
const (
	idPodA   uint32 = 300
	idPodB   uint32 = 301
	idRemote uint32 = 302

	epA uint32 = 1 // policy ids
	epB uint32 = 2

	tcpSYN = 0x02
	tcpACK = 0x10
	tcpRST = 0x04

	markJudged = 0x50560e00 // PV_MARK_JUDGED
)

var (
	service         = netip.MustParsePrefix("10.0.0.0/16")
	policyServiceIP = netip.MustParseAddr("10.0.0.10")
)

// policyBed is the testbed with pod B on a real veth too (to_pod runs on
// the destination's own device), the ipcache as the agent writes it, and
// helpers that write rules the way the agent's compiler does.
type policyBed struct {
	*testbed
	pol     *maps.Policy
	podBIdx int
	nextSet uint32
}

func newPolicyBed(t *testing.T) *policyBed {
	t.Helper()
	tb := newTestbed(t)
	pb := &policyBed{testbed: tb, pol: tb.dp.Maps.Policy, nextSet: 10}
	pb.podBIdx = tb.addDevice(t, "pvb", hostBMAC)
	must(t, pb.pol.SetConfig(maps.PolicyConfig{Gen: 1, Flags: maps.PolicyConfigEgress | maps.PolicyConfigIsolated,
		ServiceNet: service.Addr().As4(), ServiceMask: [4]byte{255, 255, 0, 0}}))
	for ip, id := range map[netip.Addr]uint32{podA: idPodA, podB: idPodB, remote: idRemote, nodeIP: maps.IdentityHost} {
		must(t, pb.pol.PutIdentity(ip, id))
	}
	pb.isolate(t, podA, 0)
	pb.isolate(t, podB, 0)
	return pb
}

// isolate writes pod A's or B's endpoint entry with the isolation flags.
func (pb *policyBed) isolate(t *testing.T, ip netip.Addr, flags uint32) {
	t.Helper()
	ep := endpoint(pb.podAIdx, podAMAC, hostAMAC)
	ep.PolicyID = epA
	if ip == podB {
		ep = endpoint(pb.podBIdx, podBMAC, hostBMAC)
		ep.PolicyID = epB
	}
	ep.Flags = flags
	must(t, pb.dp.Maps.Endpoints.Put(ip, ep))
}

// set writes a new port set and returns its number.
func (pb *policyBed) set(t *testing.T, ranges ...maps.PortRange) uint32 {
	t.Helper()
	pb.nextSet++
	must(t, pb.pol.PutPortSet(pb.nextSet, ranges))
	return pb.nextSet
}

func (pb *policyBed) peer(t *testing.T, ep uint32, dir uint8, peer, set uint32) {
	t.Helper()
	must(t, pb.pol.PutPeer(maps.PolicyKey{Endpoint: ep, Peer: peer, Dir: dir}, maps.PolicyValue{Ports: set}, true))
}

func (pb *policyBed) bumpGen(t *testing.T) {
	t.Helper()
	c, err := pb.pol.Config()
	must(t, err)
	c.Gen++
	must(t, pb.pol.SetConfig(c))
}

func (pb *policyBed) flowCount(t *testing.T) int {
	t.Helper()
	fl, err := pb.pol.Flows()
	must(t, err)
	return len(fl)
}

func tcpRange(first, last uint16) maps.PortRange {
	return maps.PortRange{Proto: protoTCP, First: first, Last: last}
}
func tcpPort(p uint16) maps.PortRange { return tcpRange(p, p) }

// seg builds a TCP segment with flags, or a UDP or SCTP datagram (flags
// ignored), from src to dst.
func seg(srcMAC, dstMAC net.HardwareAddr, src, dst netip.Addr, proto uint8, sport, dport uint16, flags byte) []byte {
	b := l4(packet.IPv4{SrcMAC: srcMAC, DstMAC: dstMAC, Src: src, Dst: dst}, proto, sport, dport, 20)
	if proto == protoTCP {
		b[14+20+12] = 5 << 4 // data offset
		b[14+20+13] = flags
	}
	return b
}

func fromA(dst netip.Addr, proto uint8, sport, dport uint16, flags byte) []byte {
	return seg(podAMAC, hostAMAC, podA, dst, proto, sport, dport, flags)
}

func toA(src netip.Addr, proto uint8, sport, dport uint16, flags byte) []byte {
	return seg(fabricMA, nicMAC, src, podA, proto, sport, dport, flags)
}

// stackToA is what the stack hands pod A's veth (to_pod's view).
func stackToA(src netip.Addr, proto uint8, sport, dport uint16, flags byte) []byte {
	return seg(hostAMAC, podAMAC, src, podA, proto, sport, dport, flags)
}

// icmpError is an ICMP error from src to dst quoting the first 28 bytes of
// quoted (an IPv4 frame).
func icmpError(srcMAC, dstMAC net.HardwareAddr, src, dst netip.Addr, typ byte, quoted []byte) []byte {
	b := packet.IPv4{SrcMAC: srcMAC, DstMAC: dstMAC, Src: src, Dst: dst, Proto: 1, Payload: 8 + 28}.Build()
	b[34] = typ
	copy(b[42:], quoted[14:14+28])
	return b
}

func echo(p packet.IPv4, typ byte, id uint16) []byte {
	p.Proto, p.Payload = 1, 8
	b := p.Build()
	b[34] = typ
	binary.BigEndian.PutUint16(b[38:], id)
	return b
}

// verdictCase is one packet through a hook and what must come of it.
type verdictCase struct {
	name    string
	hook    maps.Hook
	ctx     skbCtx
	frame   []byte
	verdict uint32
	reason  maps.Reason // 0 (pod_to_stack) is checked too; noCount: nothing counted
}

const noCount = maps.ReasonMax

func (pb *policyBed) check(t *testing.T, cases []verdictCase) {
	t.Helper()
	for _, c := range cases {
		before := pb.counters(t)
		got, _, _, err := pb.runCtx(c.hook, c.ctx, c.frame)
		if err != nil {
			t.Fatalf("%s: run %s: %v", c.name, c.hook, err)
		}
		after := pb.counters(t)
		if got != c.verdict {
			t.Errorf("%s: verdict %d, want %d", c.name, int32(got), int32(c.verdict))
		}
		var moved []string
		for r := range maps.ReasonMax {
			if after[r].Packets != before[r].Packets {
				moved = append(moved, r.String())
			}
		}
		want := []string{c.reason.String()}
		if c.reason == noCount {
			want = nil
		}
		if len(moved) != len(want) || (len(want) == 1 && moved[0] != want[0]) {
			t.Errorf("%s: counted %v, want %v", c.name, moved, want)
		}
	}
}

func (pb *policyBed) onA() skbCtx   { return skbCtx{Ifindex: uint32(pb.podAIdx)} }
func (pb *policyBed) onB() skbCtx   { return skbCtx{Ifindex: uint32(pb.podBIdx)} }
func (pb *policyBed) onNIC() skbCtx { return skbCtx{Ifindex: uint32(pb.nicIdx)} }

// TestPolicyOpenEndpoint: a pod no policy isolates is forwarded as before,
// and none of its flows enters the table.
func TestPolicyOpenEndpoint(t *testing.T) {
	pb := newPolicyBed(t)
	pb.check(t, []verdictCase{
		{"to a remote pod", maps.HookPod, pb.onA(), fromA(remote, protoTCP, 40000, 80, tcpSYN), actRedirect, maps.ReasonPodToNIC},
		{"from a remote pod", maps.HookNIC, pb.onNIC(), toA(remote, protoTCP, 40000, 80, tcpSYN), actRedirect, maps.ReasonNICToLocal},
		{"to a local pod", maps.HookPod, pb.onA(), fromA(podB, protoUDP, 40000, 53, 0), actRedirect, maps.ReasonPodToLocal},
		{"from the stack", maps.HookToPod, skbCtx{Ifindex: uint32(pb.podAIdx), IngressIfindex: uint32(pb.nicIdx)},
			stackToA(inet, protoTCP, 443, 40000, tcpSYN|tcpACK), actOK, maps.ReasonStackToPod},
	})
	if n := pb.flowCount(t); n != 0 {
		t.Errorf("%d flows entered for pods no policy isolates", n)
	}
	_, _, out, err := pb.runCtx(maps.HookPod, pb.onA(), fromA(remote, protoTCP, 40000, 80, tcpSYN))
	must(t, err)
	if out.Mark != 0 {
		t.Errorf("mark %#x on a packet no policy judged", out.Mark)
	}
}

// TestPolicyEgress: a pod isolated for egress reaches exactly the peers and
// ports its rules name: one port, an endPort range (LPM prefixes), not UDP
// for a TCP rule, not the world, not another identity; a Service IP is not
// judged before kube-proxy translates it.
func TestPolicyEgress(t *testing.T) {
	pb := newPolicyBed(t)
	pb.isolate(t, podA, maps.EndpointPolicyEgress)
	pb.peer(t, epA, maps.DirEgress, idRemote, pb.set(t, tcpPort(80), tcpRange(8000, 8010)))
	must(t, pb.pol.SetEndpoint(epA, maps.PolicyEndpoint{}))
	pb.check(t, []verdictCase{
		{"allowed port", maps.HookPod, pb.onA(), fromA(remote, protoTCP, 40000, 80, tcpSYN), actRedirect, maps.ReasonPodToNIC},
		{"other port", maps.HookPod, pb.onA(), fromA(remote, protoTCP, 40000, 81, tcpSYN), actShot, maps.ReasonDropPolicyEgress},
		{"range start", maps.HookPod, pb.onA(), fromA(remote, protoTCP, 40000, 8000, tcpSYN), actRedirect, maps.ReasonPodToNIC},
		{"inside the range", maps.HookPod, pb.onA(), fromA(remote, protoTCP, 40000, 8005, tcpSYN), actRedirect, maps.ReasonPodToNIC},
		{"range end", maps.HookPod, pb.onA(), fromA(remote, protoTCP, 40000, 8010, tcpSYN), actRedirect, maps.ReasonPodToNIC},
		{"past the range", maps.HookPod, pb.onA(), fromA(remote, protoTCP, 40000, 8011, tcpSYN), actShot, maps.ReasonDropPolicyEgress},
		{"UDP to a TCP port", maps.HookPod, pb.onA(), fromA(remote, protoUDP, 40000, 80, 0), actShot, maps.ReasonDropPolicyEgress},
		{"the Internet", maps.HookPod, pb.onA(), fromA(inet, protoTCP, 40000, 80, tcpSYN), actShot, maps.ReasonDropPolicyEgress},
		{"a local pod of another identity", maps.HookPod, pb.onA(), fromA(podB, protoTCP, 40000, 80, tcpSYN), actShot, maps.ReasonDropPolicyEgress},
		{"the node", maps.HookPod, pb.onA(), fromA(nodeIP, protoTCP, 40000, 10250, tcpSYN), actShot, maps.ReasonDropPolicyEgress},
		{"a Service IP: judged after DNAT", maps.HookPod, pb.onA(), fromA(policyServiceIP, protoUDP, 40000, 53, 0), actOK, maps.ReasonPodToStack},
	})
	// What from_pod judged and sends out itself is marked for to_nic.
	_, _, out, err := pb.runCtx(maps.HookPod, pb.onA(), fromA(remote, protoTCP, 40001, 80, tcpSYN))
	must(t, err)
	if out.Mark != markJudged {
		t.Errorf("mark %#x, want %#x", out.Mark, markJudged)
	}
	st, err := pb.pol.Stats(epA)
	must(t, err)
	if st.Denied[maps.DirEgress] != 6 || st.Flows[maps.DirEgress] != 5 || st.Denied[maps.DirIngress] != 0 {
		t.Errorf("stats %+v, want 6 denied and 5 flows egress", st)
	}
	peers, err := pb.pol.Peers()
	must(t, err)
	if len(peers) != 1 || peers[0].Flows != 5 {
		t.Errorf("peer entries %+v, want one that allowed 5 flows", peers)
	}
}

// TestPolicyIngress: from the VNet (from_nic) and from the stack (to_pod),
// a pod isolated for ingress takes what its rules allow, and its own node
// always (kubelet's probes), whatever source address the node uses.
func TestPolicyIngress(t *testing.T) {
	pb := newPolicyBed(t)
	pb.isolate(t, podA, maps.EndpointPolicyIngress)
	pb.peer(t, epA, maps.DirIngress, idRemote, pb.set(t, tcpPort(80)))
	must(t, pb.pol.SetEndpoint(epA, maps.PolicyEndpoint{}))
	fromStack := skbCtx{Ifindex: uint32(pb.podAIdx), IngressIfindex: uint32(pb.nicIdx)}
	fromNode := skbCtx{Ifindex: uint32(pb.podAIdx)} // no ingress interface: the node's own
	pb.check(t, []verdictCase{
		{"allowed peer and port", maps.HookNIC, pb.onNIC(), toA(remote, protoTCP, 40000, 80, tcpSYN), actRedirect, maps.ReasonNICToLocal},
		{"other port", maps.HookNIC, pb.onNIC(), toA(remote, protoTCP, 40000, 81, tcpSYN), actShot, maps.ReasonDropPolicyIngress},
		{"the world", maps.HookNIC, pb.onNIC(), toA(inet, protoTCP, 40000, 80, tcpSYN), actShot, maps.ReasonDropPolicyIngress},
		{"through the stack", maps.HookToPod, fromStack, stackToA(remote, protoTCP, 40001, 80, tcpSYN), actOK, maps.ReasonStackToPod},
		{"through the stack, other port", maps.HookToPod, fromStack, stackToA(remote, protoTCP, 40001, 82, tcpSYN), actShot, maps.ReasonDropPolicyIngress},
		{"the node's own", maps.HookToPod, fromNode, stackToA(netip.MustParseAddr("172.17.0.1"), protoTCP, 40002, 8080, tcpSYN), actOK, maps.ReasonStackToPod},
		{"the node's IP", maps.HookToPod, fromStack, stackToA(nodeIP, protoTCP, 40003, 8080, tcpSYN), actOK, maps.ReasonStackToPod},
		{"a local pod of another identity", maps.HookPod, pb.onB(), seg(podBMAC, hostBMAC, podB, podA, protoTCP, 40000, 80, tcpSYN), actShot, maps.ReasonDropPolicyIngress},
	})
	st, err := pb.pol.Stats(epA)
	must(t, err)
	if st.Denied[maps.DirIngress] != 4 {
		t.Errorf("stats %+v, want 4 denied ingress", st)
	}
}

// TestPolicyStateful: replies of an allowed flow pass both ways, and so do
// ICMP errors about it; what is not a reply is judged. A rule change (the
// generation) makes established flows be judged again.
func TestPolicyStateful(t *testing.T) {
	pb := newPolicyBed(t)
	pb.isolate(t, podA, maps.EndpointPolicyIngress) // nothing may come in; egress open
	must(t, pb.pol.SetEndpoint(epA, maps.PolicyEndpoint{}))
	out := fromA(remote, protoTCP, 40000, 80, tcpSYN)
	quotedUnknown := fromA(remote, protoUDP, 40000, 9999, 0)
	fromStack := skbCtx{Ifindex: uint32(pb.podAIdx), IngressIfindex: uint32(pb.nicIdx)}
	pb.check(t, []verdictCase{
		{"out", maps.HookPod, pb.onA(), out, actRedirect, maps.ReasonPodToNIC},
		{"the reply", maps.HookNIC, pb.onNIC(), toA(remote, protoTCP, 80, 40000, tcpSYN|tcpACK), actRedirect, maps.ReasonNICToLocal},
		{"a new flow in", maps.HookNIC, pb.onNIC(), toA(remote, protoTCP, 40001, 80, tcpSYN), actShot, maps.ReasonDropPolicyIngress},
		{"a SYN in on the flow's ports", maps.HookNIC, pb.onNIC(), toA(remote, protoTCP, 80, 40000, tcpSYN), actShot, maps.ReasonDropPolicyIngress},
		{"an ICMP error about the flow", maps.HookToPod, fromStack, icmpError(hostAMAC, podAMAC, remote, podA, 3, out), actOK, maps.ReasonStackToPod},
		{"an ICMP error about nothing", maps.HookToPod, fromStack, icmpError(hostAMAC, podAMAC, remote, podA, 3, quotedUnknown), actShot, maps.ReasonDropPolicyIngress},
		{"an echo request in", maps.HookNIC, pb.onNIC(), echo(packet.IPv4{SrcMAC: fabricMA, DstMAC: nicMAC, Src: remote, Dst: podA}, 8, 7), actShot, maps.ReasonDropPolicyIngress},
		{"an echo request out", maps.HookPod, pb.onA(), echo(packet.IPv4{SrcMAC: podAMAC, DstMAC: hostAMAC, Src: podA, Dst: remote}, 8, 9), actRedirect, maps.ReasonPodToNIC},
		{"its echo reply", maps.HookNIC, pb.onNIC(), echo(packet.IPv4{SrcMAC: fabricMA, DstMAC: nicMAC, Src: remote, Dst: podA}, 0, 9), actRedirect, maps.ReasonNICToLocal},
	})

	// The rules change but still allow the flow: it goes on.
	pb.bumpGen(t)
	pb.check(t, []verdictCase{
		{"reply after a change that keeps it", maps.HookNIC, pb.onNIC(), toA(remote, protoTCP, 80, 40000, tcpACK), actRedirect, maps.ReasonNICToLocal},
	})
	// Now egress is isolated too, with nothing allowed: the established
	// flow is judged again, refused, and gone.
	pb.isolate(t, podA, maps.EndpointPolicy)
	pb.bumpGen(t)
	pb.check(t, []verdictCase{
		{"reply after egress was denied", maps.HookNIC, pb.onNIC(), toA(remote, protoTCP, 80, 40000, tcpACK), actShot, maps.ReasonDropPolicyEgress},
		{"and the next packet out", maps.HookPod, pb.onA(), fromA(remote, protoTCP, 40000, 80, tcpACK), actShot, maps.ReasonDropPolicyEgress},
	})
}

// TestPolicyLostFlow: a TCP flow the table lost (evicted, expired, older
// than the table) goes on when the flow, as its opener sent it, is allowed;
// a SYN from the other side is not let through that way, nor is UDP.
func TestPolicyLostFlow(t *testing.T) {
	pb := newPolicyBed(t)
	pb.isolate(t, podA, maps.EndpointPolicy)
	pb.peer(t, epA, maps.DirIngress, idRemote, pb.set(t, tcpPort(80), maps.PortRange{Proto: protoUDP, First: 53, Last: 53}))
	must(t, pb.pol.SetEndpoint(epA, maps.PolicyEndpoint{}))
	pb.check(t, []verdictCase{
		{"TCP in", maps.HookNIC, pb.onNIC(), toA(remote, protoTCP, 40000, 80, tcpSYN), actRedirect, maps.ReasonNICToLocal},
		{"UDP in", maps.HookNIC, pb.onNIC(), toA(remote, protoUDP, 5000, 53, 0), actRedirect, maps.ReasonNICToLocal},
	})
	fl, err := pb.pol.Flows()
	must(t, err)
	if len(fl) != 2 {
		t.Fatalf("%d flows, want 2", len(fl))
	}
	for _, f := range fl {
		must(t, pb.dp.Maps.Policy.DeleteFlow(f.FlowKey))
	}
	pb.check(t, []verdictCase{
		{"the server's segment", maps.HookPod, pb.onA(), fromA(remote, protoTCP, 80, 40000, tcpACK), actRedirect, maps.ReasonPodToNIC},
		{"a SYN from the server's port", maps.HookPod, pb.onA(), fromA(remote, protoTCP, 80, 40001, tcpSYN), actShot, maps.ReasonDropPolicyEgress},
		{"a UDP answer", maps.HookPod, pb.onA(), fromA(remote, protoUDP, 53, 5000, 0), actShot, maps.ReasonDropPolicyEgress},
	})
	if n := pb.flowCount(t); n != 1 {
		t.Errorf("%d flows, want the TCP one entered again", n)
	}
}

// TestPolicyIPBlock: an ipBlock matches any address in it, pod IPs
// included; its except refuses (and says so) what the block alone would
// allow, and leaves other rules' ports alone (the compiler's union).
func TestPolicyIPBlock(t *testing.T) {
	pb := newPolicyBed(t)
	pb.isolate(t, podA, maps.EndpointPolicyEgress)
	must(t, pb.pol.SetEndpoint(epA, maps.PolicyEndpoint{Flags: maps.PolicyEgressCIDR}))
	web, dns := pb.set(t, tcpPort(80)), pb.set(t, maps.PortRange{Proto: protoUDP, First: 53, Last: 53})
	// 10.240.0.0/16 except 10.240.0.40/32 on tcp/80, and a second rule:
	// 10.240.0.0/24 on udp/53, which the except leaves alone.
	both := pb.set(t, tcpPort(80), maps.PortRange{Proto: protoUDP, First: 53, Last: 53})
	for _, e := range []maps.CIDREntry{
		{Endpoint: epA, Dir: maps.DirEgress, Prefix: subnet, PolicyValue: maps.PolicyValue{Ports: web}},
		{Endpoint: epA, Dir: maps.DirEgress, Prefix: netip.MustParsePrefix("10.240.0.0/24"), PolicyValue: maps.PolicyValue{Ports: both}},
		{Endpoint: epA, Dir: maps.DirEgress, Prefix: netip.PrefixFrom(remote, 32), PolicyValue: maps.PolicyValue{Ports: dns, ExceptPorts: web}},
	} {
		must(t, pb.pol.PutCIDR(e))
	}
	other := netip.MustParseAddr("10.240.3.9")
	pb.check(t, []verdictCase{
		{"in the block", maps.HookPod, pb.onA(), fromA(other, protoTCP, 40000, 80, tcpSYN), actRedirect, maps.ReasonPodToNIC},
		{"in the block, other port", maps.HookPod, pb.onA(), fromA(other, protoTCP, 40000, 81, tcpSYN), actShot, maps.ReasonDropPolicyEgress},
		{"a pod IP in the except", maps.HookPod, pb.onA(), fromA(remote, protoTCP, 40000, 80, tcpSYN), actShot, maps.ReasonDropIPBlockExceptEgress},
		{"the except, the other rule's port", maps.HookPod, pb.onA(), fromA(remote, protoUDP, 40000, 53, 0), actRedirect, maps.ReasonPodToNIC},
		{"outside every block", maps.HookPod, pb.onA(), fromA(inet, protoTCP, 40000, 80, tcpSYN), actShot, maps.ReasonDropPolicyEgress},
	})
	cidrs, err := pb.pol.CIDRs()
	must(t, err)
	for _, c := range cidrs {
		if c.Prefix.Bits() == 32 && c.Flows != 1 || c.Prefix == subnet && c.Flows != 1 {
			t.Errorf("%s allowed %d flows, want 1", c.Prefix, c.Flows)
		}
	}
}

// TestPolicyPending: a pod whose policy is not written yet is refused, and
// the drop says why.
func TestPolicyPending(t *testing.T) {
	pb := newPolicyBed(t)
	pb.isolate(t, podA, maps.EndpointPolicy)
	must(t, pb.pol.SetEndpoint(epA, maps.PolicyEndpoint{Flags: maps.PolicyIngressPending | maps.PolicyEgressPending}))
	pb.check(t, []verdictCase{
		{"out", maps.HookPod, pb.onA(), fromA(remote, protoTCP, 40000, 80, tcpSYN), actShot, maps.ReasonDropPolicyPendingEgress},
		{"in", maps.HookNIC, pb.onNIC(), toA(remote, protoTCP, 40000, 80, tcpSYN), actShot, maps.ReasonDropPolicyPendingIngress},
		{"the node still", maps.HookToPod, pb.onA(), stackToA(nodeIP, protoTCP, 40000, 80, tcpSYN), actOK, maps.ReasonStackToPod},
	})
}

// TestPolicyAfterDNAT: kube-proxy translates a Service IP in the stack, so
// the egress of a pod is judged where the stack hands the packet on: to_nic
// for a remote backend, to_pod for a local one. The node's own traffic and
// what from_pod judged pass to_nic untouched; a Service's answer reaches
// the pod that asked.
func TestPolicyAfterDNAT(t *testing.T) {
	pb := newPolicyBed(t)
	pb.isolate(t, podA, maps.EndpointPolicyEgress)
	must(t, pb.pol.SetEndpoint(epA, maps.PolicyEndpoint{}))
	fromPodA := skbCtx{Ifindex: uint32(pb.nicIdx), IngressIfindex: uint32(pb.podAIdx)}
	toB := skbCtx{Ifindex: uint32(pb.podBIdx), IngressIfindex: uint32(pb.podAIdx)}
	aToB := seg(hostBMAC, podBMAC, podA, podB, protoTCP, 40000, 80, tcpSYN)
	pb.check(t, []verdictCase{
		{"to the Service IP", maps.HookPod, pb.onA(), fromA(policyServiceIP, protoTCP, 40000, 80, tcpSYN), actOK, maps.ReasonPodToStack},
		{"DNAT'd to a remote pod", maps.HookToNIC, fromPodA, fromA(remote, protoTCP, 40000, 80, tcpSYN), actShot, maps.ReasonDropPolicyEgress},
		{"DNAT'd to a local pod", maps.HookToPod, toB, aToB, actShot, maps.ReasonDropPolicyEgress},
		{"the node's own", maps.HookToNIC, skbCtx{Ifindex: uint32(pb.nicIdx)}, fromA(remote, protoTCP, 40000, 80, tcpSYN), actOK, noCount},
		{"judged by from_pod", maps.HookToNIC, skbCtx{Ifindex: uint32(pb.nicIdx), IngressIfindex: uint32(pb.podAIdx), Mark: markJudged},
			fromA(remote, protoTCP, 40000, 81, tcpSYN), actOK, noCount},
	})
	pb.peer(t, epA, maps.DirEgress, idRemote, pb.set(t, tcpPort(80)))
	pb.peer(t, epA, maps.DirEgress, idPodB, pb.set(t, tcpPort(80)))
	pb.check(t, []verdictCase{
		{"allowed remote backend", maps.HookToNIC, fromPodA, fromA(remote, protoTCP, 40001, 80, tcpSYN), actOK, maps.ReasonStackToNIC},
		{"allowed local backend", maps.HookToPod, toB, aToB, actOK, maps.ReasonStackToPod},
	})
	_, _, out, err := pb.runCtx(maps.HookToNIC, skbCtx{Ifindex: uint32(pb.nicIdx), IngressIfindex: uint32(pb.podAIdx), Mark: markJudged},
		fromA(remote, protoTCP, 40000, 81, tcpSYN))
	must(t, err)
	if out.Mark != 0 {
		t.Errorf("to_nic left mark %#x", out.Mark)
	}
}

// TestPolicyProtocols: SCTP never matches a TCP rule nor TCP an SCTP one;
// ICMP matches only a rule for every protocol.
func TestPolicyProtocols(t *testing.T) {
	pb := newPolicyBed(t)
	pb.isolate(t, podA, maps.EndpointPolicyIngress)
	pb.peer(t, epA, maps.DirIngress, idRemote, pb.set(t, maps.PortRange{Proto: protoSCTP, First: 81, Last: 81}))
	// The set for every other peer: every protocol (a rule without ports).
	must(t, pb.pol.SetEndpoint(epA, maps.PolicyEndpoint{IngressPorts: pb.set(t, maps.PortRange{})}))
	pingFrom := func(src netip.Addr, id uint16) []byte {
		return echo(packet.IPv4{SrcMAC: fabricMA, DstMAC: nicMAC, Src: src, Dst: podA}, 8, id)
	}
	pb.check(t, []verdictCase{
		{"SCTP on the SCTP port", maps.HookNIC, pb.onNIC(), toA(remote, protoSCTP, 5000, 81, 0), actRedirect, maps.ReasonNICToLocal},
		{"TCP on the SCTP port", maps.HookNIC, pb.onNIC(), toA(remote, protoTCP, 5000, 81, tcpSYN), actShot, maps.ReasonDropPolicyIngress},
		{"SCTP on another port", maps.HookNIC, pb.onNIC(), toA(remote, protoSCTP, 5000, 80, 0), actShot, maps.ReasonDropPolicyIngress},
		{"ICMP from a peer of the every-protocol rule", maps.HookNIC, pb.onNIC(), pingFrom(inet, 3), actRedirect, maps.ReasonNICToLocal},
		{"ICMP from the SCTP rule's peer", maps.HookNIC, pb.onNIC(), pingFrom(remote, 4), actShot, maps.ReasonDropPolicyIngress},
	})
	must(t, pb.pol.SetEndpoint(epA, maps.PolicyEndpoint{}))
	pb.check(t, []verdictCase{
		{"ICMP without the every-protocol rule", maps.HookNIC, pb.onNIC(), pingFrom(inet, 5), actShot, maps.ReasonDropPolicyIngress},
	})
}

// TestPolicyFragments: the later fragments of an allowed datagram carry no
// ports; they pass with the first fragment's, and a fragment of no known
// datagram is refused.
func TestPolicyFragments(t *testing.T) {
	pb := newPolicyBed(t)
	pb.isolate(t, podA, maps.EndpointPolicyEgress)
	pb.peer(t, epA, maps.DirEgress, idRemote, pb.set(t, maps.PortRange{Proto: protoUDP, First: 53, Last: 53}))
	must(t, pb.pol.SetEndpoint(epA, maps.PolicyEndpoint{}))
	frag := func(id uint16, off uint16, sport, dport uint16) []byte {
		p := packet.IPv4{SrcMAC: podAMAC, DstMAC: hostAMAC, Src: podA, Dst: remote, FragOff: off}
		b := l4(p, protoUDP, sport, dport, 24)
		binary.BigEndian.PutUint16(b[18:], id)
		b[24], b[25] = 0, 0
		binary.BigEndian.PutUint16(b[24:], packet.Checksum(b[14:34]))
		return b
	}
	pb.check(t, []verdictCase{
		{"first fragment, allowed", maps.HookPod, pb.onA(), frag(77, 0x2000, 5000, 53), actOK, maps.ReasonPodToStackFrag},
		{"a later one", maps.HookPod, pb.onA(), frag(77, 185, 0, 0), actOK, maps.ReasonPodToStackFrag},
		{"first fragment, refused", maps.HookPod, pb.onA(), frag(78, 0x2000, 5000, 54), actShot, maps.ReasonDropPolicyEgress},
		{"a later one of no known datagram", maps.HookPod, pb.onA(), frag(79, 185, 0, 0), actShot, maps.ReasonDropPolicyEgress},
	})
}

// TestPolicyMonitor: a policy drop reaches `debug monitor` with its
// direction in the reason, and the peer and port.
func TestPolicyMonitor(t *testing.T) {
	pb := newPolicyBed(t)
	pb.isolate(t, podA, maps.EndpointPolicyIngress)
	must(t, pb.pol.SetEndpoint(epA, maps.PolicyEndpoint{}))
	mon, err := maps.OpenMonitor(pb.dp.Root(), maps.MonitorDrops, netip.Addr{})
	must(t, err)
	defer mon.Close()
	pb.run(t, maps.HookNIC, pb.nicIdx, toA(remote, protoTCP, 40000, 8443, tcpSYN))
	ev, err := mon.Read(time.Now().Add(time.Second))
	must(t, err)
	src, dst := ev.Addrs()
	_, dport := ev.Ports()
	if ev.Reason != maps.ReasonDropPolicyIngress || ev.Reason.PolicyDirection() != "ingress" || src != remote || dst != podA || dport != 8443 || ev.Hook != maps.HookNIC {
		t.Errorf("event %+v", ev)
	}
}

// TestAttachEgressHooks: to_pod and to_nic attach on tc egress in either
// mode, side by side with the ingress program on the same device, are
// listed under their own hooks, and detach without touching the other.
func TestAttachEgressHooks(t *testing.T) {
	for _, mode := range []Mode{ModeTCX, ModeLegacy} {
		t.Run(string(mode), func(t *testing.T) {
			tb := newTestbed(t)
			must(t, tb.ns.Do(func() error {
				for _, h := range []maps.Hook{maps.HookPod, maps.HookToPod} {
					if _, err := tb.dp.Attach(h, tb.podAIdx, "pva", mode); err != nil {
						return err
					}
				}
				_, err := tb.dp.Attach(maps.HookToNIC, tb.nicIdx, "eth0", mode)
				return err
			}))
			list := func() map[string]string {
				var atts []Attachment
				must(t, tb.ns.Do(func() (err error) {
					atts, err = ListAttachments(tb.dp.Root())
					return err
				}))
				got := map[string]string{}
				for _, a := range atts {
					got[a.Hook.String()+"@"+a.IfName] = a.ProgName + "/" + string(a.Mode)
				}
				return got
			}
			want := map[string]string{"pod@pva": "from_pod/" + string(mode), "to-pod@pva": "to_pod/" + string(mode),
				"to-nic@eth0": "to_nic/" + string(mode)}
			if got := list(); !reflect.DeepEqual(got, want) {
				t.Errorf("attachments %v, want %v", got, want)
			}
			must(t, tb.ns.Do(func() error {
				if m, err := Attached(tb.dp.Root(), maps.HookToPod, "pva", tb.podAIdx); err != nil || m != mode {
					t.Errorf("Attached(to_pod) = %s, %v", m, err)
				}
				return Detach(tb.dp.Root(), maps.HookToPod, "pva")
			}))
			delete(want, "to-pod@pva")
			if got := list(); !reflect.DeepEqual(got, want) {
				t.Errorf("after detaching to_pod: %v, want %v", got, want)
			}
		})
	}
}
