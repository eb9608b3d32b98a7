package loader

import (
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/podvnet/podvnet/internal/nettest"
	"github.com/podvnet/podvnet/internal/packet"
	"github.com/podvnet/podvnet/pkg/maps"
)

// TestConntrackLookupByPort: a reply of a flow the kernel DNAT'd (as
// kube-proxy does a Service) leaves the fast path for conntrack; with
// ConfigCTByPort only a reply from a source port whose ct bit is set is
// looked up, so the same reply stays on the fast path (and breaks) until
// the bit is set. The control without the flag is today's unconditional
// lookup.
func TestConntrackLookupByPort(t *testing.T) {
	nettest.RequireTool(t, "nft", "for the kernel NAT the programs must find")
	b := newSvcbed(t)
	// Pod B is the client, pod A the backend; 10.0.0.10:53 the Service,
	// DNAT'd to pod A's 5353 in the testbed's own netns.
	kernelDNAT(t, b, "udp dport 53 dnat to 10.240.0.5:5353")
	must(t, b.ns.Do(func() error {
		c, err := net.DialUDP("udp4", &net.UDPAddr{IP: podB.AsSlice(), Port: 40000}, &net.UDPAddr{IP: net.ParseIP("10.0.0.10"), Port: 53})
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("query"))
		return err
	}))

	reply := udpFrame(podAMAC, hostAMAC, podA, 5353, podB, 40000)
	cfg, err := b.dp.Maps.Config.Get()
	must(t, err)
	cfg.Flags &^= maps.ConfigServices
	must(t, b.dp.Maps.Config.Set(cfg))
	b.runCounted(t, maps.HookPod, b.podAIdx, reply, actOK, maps.ReasonPodToStackNAT)

	cfg.Flags |= maps.ConfigCTByPort
	must(t, b.dp.Maps.Config.Set(cfg))
	b.runCounted(t, maps.HookPod, b.podAIdx, reply, actRedirect, maps.ReasonPodToLocal)

	// The svc bit (our own translation's replies) does not ask conntrack;
	// the ct bit does.
	b.replyPort(t, 17, 5353, true, false)
	b.runCounted(t, maps.HookPod, b.podAIdx, reply, actRedirect, maps.ReasonPodToLocal)
	b.replyPort(t, 17, 5353, false, true)
	b.runCounted(t, maps.HookPod, b.podAIdx, reply, actOK, maps.ReasonPodToStackNAT)
}

// kernelDNAT puts pods A and B on the testbed netns' loopback, routes the
// Service CIDR there and DNATs what the netns sends to 10.0.0.10 by rule,
// as kube-proxy would: the conntrack entries the programs look up are real.
func kernelDNAT(t *testing.T, b *svcbed, rule string) {
	t.Helper()
	lo, err := b.ns.NL.LinkByName("lo")
	must(t, err)
	for _, a := range []netip.Addr{podA, podB} {
		must(t, b.ns.NL.AddrAdd(lo, &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(32, 32)}}))
	}
	_, svcNet, _ := net.ParseCIDR("10.0.0.0/16")
	must(t, b.ns.NL.RouteAdd(&netlink.Route{LinkIndex: lo.Attrs().Index, Dst: svcNet}))
	nft := exec.Command("nsenter", "--net="+b.ns.Path(), "nft", "-f", "-")
	nft.Stdin = strings.NewReader(`table ip kubeproxy {
  chain output { type nat hook output priority -100; policy accept; ip daddr 10.0.0.10 ` + rule + `; }
}`)
	if out, err := nft.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v\n%s", err, out)
	}
}

// TestConntrackEndedConnectionClaimsNoReply: a client that reached a
// backend through its Service and then connects to the backend directly
// from the same port (the kernel allows it: the peer differs) gets replies
// with the old connection's reply tuple. While the old connection lives,
// they are its replies and leave the fast path for conntrack; once it has
// ended (here by a reset: CLOSE), they are the new connection's and stay
// on the fast path. Sent to conntrack they would be translated back as the
// old connection's, or dropped as invalid, until its entry expired.
func TestConntrackEndedConnectionClaimsNoReply(t *testing.T) {
	nettest.RequireTool(t, "nft", "for the kernel NAT the programs must find")
	b := newSvcbed(t)
	kernelDNAT(t, b, "tcp dport 80 dnat to 10.240.0.5:8080")
	cfg, err := b.dp.Maps.Config.Get()
	must(t, err)
	cfg.Flags = cfg.Flags&^maps.ConfigServices | maps.ConfigCTByPort
	must(t, b.dp.Maps.Config.Set(cfg))
	b.replyPort(t, 6, 8080, false, true)

	var client *net.TCPConn
	var server net.Conn
	must(t, b.ns.Do(func() error {
		ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: podA.AsSlice(), Port: 8080})
		if err != nil {
			return err
		}
		defer ln.Close()
		c, err := net.DialTCP("tcp4", &net.TCPAddr{IP: podB.AsSlice()}, &net.TCPAddr{IP: net.ParseIP("10.0.0.10"), Port: 80})
		if err != nil {
			return err
		}
		client = c
		server, err = ln.Accept()
		return err
	}))
	defer server.Close()
	port := uint16(client.LocalAddr().(*net.TCPAddr).Port)
	state := func() uint8 {
		flows, err := b.ns.NL.ConntrackTableList(netlink.ConntrackTable, netlink.FAMILY_V4)
		must(t, err)
		for _, f := range flows {
			if tcp, ok := f.ProtoInfo.(*netlink.ProtoInfoTCP); ok && f.Reverse.SrcPort == 8080 && f.Reverse.DstPort == port {
				return tcp.State
			}
		}
		t.Fatalf("conntrack holds no entry with the reply tuple %s:8080 -> %s:%d", podA, podB, port)
		return 0
	}
	const established, closed = 3, 8 // enum tcp_conntrack

	ack := tcpFrame(podAMAC, hostAMAC, podA, 8080, podB, port, packet.TCPAck)
	if s := state(); s != established {
		t.Fatalf("the connection through the Service is in conntrack state %d, want %d (established)", s, established)
	}
	b.runCounted(t, maps.HookPod, b.podAIdx, ack, actOK, maps.ReasonPodToStackNAT)

	must(t, client.SetLinger(0))
	must(t, client.Close()) // a reset
	if s := state(); s != closed {
		t.Fatalf("after the reset the connection is in conntrack state %d, want %d (close)", s, closed)
	}
	synAck := tcpFrame(podAMAC, hostAMAC, podA, 8080, podB, port, packet.TCPSyn|packet.TCPAck)
	b.runCounted(t, maps.HookPod, b.podAIdx, synAck, actRedirect, maps.ReasonPodToLocal)
}
