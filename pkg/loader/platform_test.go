package loader

import (
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/podvnet/podvnet/internal/packet"
	"github.com/podvnet/podvnet/pkg/maps"
	"github.com/podvnet/podvnet/pkg/platform"
)

const (
	protoTCP  = 6
	protoUDP  = 17
	protoSCTP = 132
)

var (
	wireserver = platform.WireserverIP
	imds       = platform.IMDSIP
	// An address of the VNet whose octets XOR to what 168.63.129.16's do:
	// it shares the blocked map's filter slot, so port 80 to it passes the
	// filter and must be cleared by the hash lookup.
	filterTwin = netip.MustParseAddr("10.240.0.252")
)

// operatorEntries are an operator's additions to the defaults, each to a
// destination the fast path would otherwise reach.
var operatorEntries = []platform.Endpoint{
	{Addr: remote, Port: 9999, Proto: platform.UDP},
	{Addr: remote, Port: 3868, Proto: platform.SCTP},
}

// blockedTestbed is the testbed with the blocked map as the agent writes it
// with --block-imds and operatorEntries, and 168.63.129.16 a no-SNAT
// destination as the agent makes it.
func blockedTestbed(t *testing.T) *testbed {
	tb := newTestbed(t)
	eps := append([]platform.Endpoint{platform.Wireserver, platform.HostGAPlugin, platform.IMDS}, operatorEntries...)
	must(t, tb.dp.Maps.Blocked.Sync(platform.Entries(eps)))
	must(t, tb.dp.Maps.NoSNAT.Sync([]netip.Prefix{subnet, peering, netip.PrefixFrom(wireserver, 32)}))
	return tb
}

// l4 builds a frame of proto with ports; payload is what follows the IPv4
// header (at least the 4 bytes of ports, unless a test wants fewer).
func l4(p packet.IPv4, proto uint8, sport, dport uint16, payload int) []byte {
	p.Proto, p.Payload = proto, payload
	b := p.Build()
	if payload >= 4 {
		binary.BigEndian.PutUint16(b[34:], sport)
		binary.BigEndian.PutUint16(b[36:], dport)
	}
	return b
}

func fromPodA(dst netip.Addr) packet.IPv4 {
	return packet.IPv4{SrcMAC: podAMAC, DstMAC: hostAMAC, Src: podA, Dst: dst}
}

// TestBlockedDestinations: from_pod drops each blocked (address, port,
// protocol) with its own reason, before any forwarding decision (the VNet
// fast path included), and lets everything else of 168.63.129.16 through:
// DNS over UDP and TCP, other ports, other protocols, replies.
func TestBlockedDestinations(t *testing.T) {
	tb := blockedTestbed(t)
	nonFirst := func(proto uint8, dst netip.Addr) []byte {
		p := fromPodA(dst)
		p.FragOff = 185 // offset 1480 bytes, last fragment: no ports
		return l4(p, proto, 0, 0, 16)
	}
	firstFrag := func(dport uint16) []byte {
		p := fromPodA(wireserver)
		p.FragOff = 0x2000 // MF, offset 0: the ports are there
		return l4(p, protoTCP, 40000, dport, 20)
	}
	tests := []struct {
		name    string
		frame   []byte
		verdict uint32
		reason  maps.Reason
	}{
		{"WireServer", l4(fromPodA(wireserver), protoTCP, 40000, 80, 20), actShot, maps.ReasonDropWireserver},
		{"HostGAPlugin", l4(fromPodA(wireserver), protoTCP, 40000, 32526, 20), actShot, maps.ReasonDropHostGAPlugin},
		{"IMDS", l4(fromPodA(imds), protoTCP, 40000, 80, 20), actShot, maps.ReasonDropIMDS},
		{"operator's UDP entry in the VNet", l4(fromPodA(remote), protoUDP, 40000, 9999, 8), actShot, maps.ReasonDropBlockedEndpoint},
		{"operator's SCTP entry", l4(fromPodA(remote), protoSCTP, 40000, 3868, 12), actShot, maps.ReasonDropBlockedEndpoint},
		{"first fragment to the WireServer", firstFrag(80), actShot, maps.ReasonDropWireserver},
		{"later fragment to 168.63.129.16 TCP", nonFirst(protoTCP, wireserver), actShot, maps.ReasonDropWireserver},
		{"TCP to 168.63.129.16 too short for ports", l4(fromPodA(wireserver), protoTCP, 0, 0, 2), actShot, maps.ReasonDropWireserver},

		{"DNS over UDP", l4(fromPodA(wireserver), protoUDP, 40000, 53, 8), actRedirect, maps.ReasonPodToNIC},
		{"DNS over TCP", l4(fromPodA(wireserver), protoTCP, 40000, 53, 20), actRedirect, maps.ReasonPodToNIC},
		{"another port of 168.63.129.16", l4(fromPodA(wireserver), protoTCP, 40000, 443, 20), actRedirect, maps.ReasonPodToNIC},
		{"UDP to port 80", l4(fromPodA(wireserver), protoUDP, 40000, 80, 8), actRedirect, maps.ReasonPodToNIC},
		{"a pod's reply to a health probe", l4(fromPodA(wireserver), protoTCP, 8080, 51234, 20), actRedirect, maps.ReasonPodToNIC},
		{"ICMP echo", icmp(fromPodA(wireserver), 8), actRedirect, maps.ReasonPodToNIC},
		{"first fragment to DNS", firstFrag(53), actOK, maps.ReasonPodToStackFrag},
		{"later fragment to 168.63.129.16 UDP (nothing of it blocked)", nonFirst(protoUDP, wireserver), actOK, maps.ReasonPodToStackFrag},
		{"the operator's address, another port", l4(fromPodA(remote), protoUDP, 40000, 9998, 8), actRedirect, maps.ReasonPodToNIC},
		{"an address sharing the filter slot", l4(fromPodA(filterTwin), protoTCP, 40000, 80, 20), actRedirect, maps.ReasonPodToNIC},
		{"IMDS on another port", l4(fromPodA(imds), protoTCP, 40000, 443, 20), actOK, maps.ReasonPodToStack},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb.runCounted(t, maps.HookPod, tb.podAIdx, tt.frame, tt.verdict, tt.reason)
		})
	}
}

// TestBlockedBeforeShaping: a shaped pod's packets leave from_pod with
// "next" for the bandwidth plugin's filters, but a blocked destination is
// dropped before that branch.
func TestBlockedBeforeShaping(t *testing.T) {
	tb := blockedTestbed(t)
	shaped := endpoint(tb.podAIdx, podAMAC, hostAMAC)
	shaped.Flags = maps.EndpointShaped
	must(t, tb.dp.Maps.Endpoints.Put(podA, shaped))
	if v, _ := tb.run(t, maps.HookPod, tb.podAIdx, l4(fromPodA(wireserver), protoTCP, 40000, 80, 20)); v != actShot {
		t.Errorf("shaped pod to the WireServer: verdict %d, want a drop", int32(v))
	}
	if v, _ := tb.run(t, maps.HookPod, tb.podAIdx, l4(fromPodA(wireserver), protoUDP, 40000, 53, 8)); v != ^uint32(0) {
		t.Errorf("shaped pod to DNS: verdict %d, want TC_ACT_UNSPEC", int32(v))
	}
}

// TestFromWireserverToPod: what 168.63.129.16 sends a pod (health probes,
// DNS answers), from any source port, is delivered.
func TestFromWireserverToPod(t *testing.T) {
	tb := blockedTestbed(t)
	from := packet.IPv4{SrcMAC: fabricMA, DstMAC: nicMAC, Src: wireserver, Dst: podA}
	for _, f := range [][]byte{
		l4(from, protoTCP, 51234, 8080, 20), // a health probe
		l4(from, protoUDP, 53, 40000, 8),    // a DNS answer
		l4(from, protoTCP, 80, 40000, 20),   // from the blocked port itself
	} {
		tb.runCounted(t, maps.HookNIC, tb.nicIdx, f, actRedirect, maps.ReasonNICToLocal)
	}
}

// TestBlockedListChanges: the list is a map update, in force on the next
// packet: an entry removed lets its traffic through, one added drops it,
// an empty list drops nothing.
func TestBlockedListChanges(t *testing.T) {
	tb := blockedTestbed(t)
	toIMDS := l4(fromPodA(imds), protoTCP, 40000, 80, 20)
	toWire := l4(fromPodA(wireserver), protoTCP, 40000, 80, 20)
	verdict := func(f []byte) uint32 {
		v, _ := tb.run(t, maps.HookPod, tb.podAIdx, f)
		return v
	}
	if verdict(toIMDS) != actShot {
		t.Fatal("IMDS not blocked to begin with")
	}
	must(t, tb.dp.Maps.Blocked.Sync(platform.Entries([]platform.Endpoint{platform.Wireserver, platform.HostGAPlugin})))
	if v := verdict(toIMDS); v != actOK {
		t.Errorf("IMDS removed from the list: verdict %d, want the stack", v)
	}
	if v := verdict(toWire); v != actShot {
		t.Errorf("the WireServer, still listed: verdict %d, want a drop", v)
	}
	must(t, tb.dp.Maps.Blocked.Sync(nil))
	if v := verdict(toWire); v != actRedirect {
		t.Errorf("empty list: the WireServer got verdict %d, want the fast path", v)
	}
	if got, err := tb.dp.Maps.Blocked.List(); err != nil || len(got) != 0 {
		t.Errorf("empty list: the map holds %v (%v)", got, err)
	}
	must(t, tb.dp.Maps.Blocked.Sync(platform.Entries([]platform.Endpoint{platform.IMDS})))
	if verdict(toIMDS) != actShot || verdict(toWire) != actRedirect {
		t.Error("IMDS added back: it must be dropped again, and the WireServer not")
	}
}

// TestBlockedDropMonitored: the monitor shows a blocked drop with the
// pod's IP, the destination, its port and the reason.
func TestBlockedDropMonitored(t *testing.T) {
	tb := blockedTestbed(t)
	mon, err := maps.OpenMonitor(tb.dp.Root(), maps.MonitorDrops, podA)
	if err != nil {
		t.Fatal(err)
	}
	defer mon.Close()
	tb.run(t, maps.HookPod, tb.podAIdx, l4(fromPodA(wireserver), protoTCP, 40000, 32526, 20))
	ev, err := mon.Read(time.Now().Add(time.Second))
	if err != nil {
		t.Fatalf("no event for the drop: %v", err)
	}
	src, dst := ev.Addrs()
	_, dport := ev.Ports()
	if ev.Reason != maps.ReasonDropHostGAPlugin || ev.Hook != maps.HookPod || src != podA || dst != wireserver || dport != 32526 || ev.Proto != protoTCP {
		t.Errorf("event %+v: reason %s, %s -> %s:%d", ev, ev.Reason, src, dst, dport)
	}
}
