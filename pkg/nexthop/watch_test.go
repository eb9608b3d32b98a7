package nexthop

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/podvnet/podvnet/internal/nettest"
)

// segment is a node's NIC on a simulated fabric: node's eth0 is a veth to
// the fabric's gw, which holds the gateway's address and answers ARP by
// proxy for what it routes elsewhere (10.240.0.50, as Azure answers for
// every address), and a host on the same segment (a macvlan of gw in its own
// namespace, 10.240.0.99) answers for itself with its own MAC, as hosts of
// a plain L2 network do.
type segment struct {
	node, fabric *nettest.NS
	nicIndex     int
	gw           netlink.Link
	hostMAC      net.HardwareAddr
}

func newSegment(t *testing.T) *segment {
	t.Helper()
	nettest.RequireRoot(t)
	p := nettest.Prefix()
	s := &segment{node: nettest.NewNS(t, p+"-node"), fabric: nettest.NewNS(t, p+"-fabric")}
	host := nettest.NewNS(t, p+"-host")
	must(t, s.fabric.NL.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "gw"}, PeerName: "eth0",
		PeerNamespace: netlink.NsFd(int(s.node.Handle))}))
	must(t, s.fabric.NL.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "far"}, PeerName: "farp"}))
	var err error
	s.gw, err = s.fabric.NL.LinkByName("gw")
	must(t, err)
	must(t, s.fabric.NL.LinkAdd(&netlink.Macvlan{LinkAttrs: netlink.LinkAttrs{Name: "l2host", ParentIndex: s.gw.Attrs().Index,
		Namespace: netlink.NsFd(int(host.Handle))}, Mode: netlink.MACVLAN_MODE_BRIDGE}))

	addr := func(ns *nettest.NS, name, prefix string) netlink.Link {
		l, err := ns.NL.LinkByName(name)
		must(t, err)
		if prefix != "" {
			must(t, ns.NL.AddrAdd(l, &netlink.Addr{IPNet: ipnet(prefix)}))
		}
		must(t, ns.NL.LinkSetUp(l))
		return l
	}
	nic := addr(s.node, "eth0", "10.240.0.4/16")
	s.nicIndex = nic.Attrs().Index
	addr(s.fabric, "gw", "10.240.0.1/32")
	far := addr(s.fabric, "far", "")
	s.hostMAC = addr(host, "l2host", "10.240.0.99/16").Attrs().HardwareAddr
	must(t, s.fabric.NL.RouteAdd(&netlink.Route{LinkIndex: s.gw.Attrs().Index, Dst: ipnet("10.240.0.4/32"), Scope: netlink.SCOPE_LINK}))
	must(t, s.fabric.NL.RouteAdd(&netlink.Route{LinkIndex: far.Attrs().Index, Dst: ipnet("10.240.0.50/32"), Scope: netlink.SCOPE_LINK}))
	for k, v := range map[string]string{"net.ipv4.ip_forward": "1", "net.ipv4.conf.gw.proxy_arp": "1", "net.ipv4.neigh.gw.proxy_delay": "0",
		"net.ipv4.conf.gw.arp_notify": "1"} {
		must(t, s.fabric.Sysctl(k, v))
	}
	return s
}

func ipnet(s string) *net.IPNet {
	p := netip.MustParsePrefix(s)
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func (s *segment) config(mode Mode) Config {
	return Config{Mode: mode, Link: s.nicIndex, Gateway: gateway, Netns: &s.node.Handle, Revalidate: time.Hour}
}

// resolve makes the node resolve ip, as its own traffic would.
func (s *segment) resolve(t *testing.T, ip string) {
	t.Helper()
	must(t, s.node.NL.NeighSet(&netlink.Neigh{LinkIndex: s.nicIndex, Family: netlink.FAMILY_V4,
		IP: net.ParseIP(ip), Flags: netlink.NTF_USE}))
}

// awaitEntry waits for the node to resolve ip and returns its MAC; the
// deadline only bounds a failure.
func (s *segment) awaitEntry(t *testing.T, ip string) net.HardwareAddr {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		neighs, err := s.node.NL.NeighList(s.nicIndex, netlink.FAMILY_V4)
		must(t, err)
		for _, n := range neighs {
			if n.IP.Equal(net.ParseIP(ip)) && n.State&learnedStates != 0 {
				return n.HardwareAddr
			}
		}
	}
	t.Fatalf("the node never resolved %s", ip)
	return nil
}

func (s *segment) gwMAC(t *testing.T) net.HardwareAddr {
	t.Helper()
	l, err := s.fabric.NL.LinkByIndex(s.gw.Attrs().Index)
	must(t, err)
	return l.Attrs().HardwareAddr
}

// watch runs Watch until the test ends and hands over what it publishes.
func watch(t *testing.T, cfg Config) <-chan Hop {
	t.Helper()
	hops := make(chan Hop, 64)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	cfg.OnError = func(err error) { t.Logf("watch: %v", err) }
	go func() { done <- Watch(ctx, cfg, func(h Hop) { hops <- h }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Watch: %v", err)
		}
	})
	return hops
}

// await returns the first published hop that ok accepts; the deadline only
// bounds a failure.
func await(t *testing.T, hops <-chan Hop, what string, ok func(Hop) bool) Hop {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case h := <-hops:
			t.Logf("published: %s (%s)", h.MAC, h.Why)
			if ok(h) {
				return h
			}
		case <-deadline:
			t.Fatalf("never published %s", what)
		}
	}
}

func is(m net.HardwareAddr) func(Hop) bool {
	return func(h Hop) bool { return bytes.Equal(h.MAC, m) }
}

// TestWatchFollowsTheNeighbourTable: the gateway, never resolved by the
// node, is resolved by the watcher and becomes the next hop; addresses the
// fabric answers for keep it; a host answering with its own MAC makes the
// kernel resolve (auto), until its entry goes; a new gateway MAC, announced
// by gratuitous ARP, is followed.
func TestWatchFollowsTheNeighbourTable(t *testing.T) {
	s := newSegment(t)
	hops := watch(t, s.config(Auto))
	gw := s.gwMAC(t)
	h := await(t, hops, "the gateway's MAC", is(gw))
	if !strings.Contains(h.Why, "every neighbour") {
		t.Errorf("why: %s", h.Why)
	}
	nic, err := s.node.NL.LinkByIndex(s.nicIndex)
	must(t, err)
	if !bytes.Equal(h.NIC, nic.Attrs().HardwareAddr) {
		t.Errorf("NIC MAC %s, want %s", h.NIC, nic.Attrs().HardwareAddr)
	}

	// The fabric answers for 10.240.0.50 with its own MAC: still one MAC.
	s.resolve(t, "10.240.0.50")
	if m := s.awaitEntry(t, "10.240.0.50"); !bytes.Equal(m, gw) {
		t.Fatalf("the fabric answered for 10.240.0.50 with %s, not %s: the segment is miswired", m, gw)
	}
	if h, err := Read(s.config(Auto)); err != nil || !bytes.Equal(h.MAC, gw) {
		t.Errorf("with an address the fabric answers for: %s (%s), %v; want the gateway's MAC", h.MAC, h.Why, err)
	}
	// The host answers with its own: the kernel must resolve each address.
	s.resolve(t, "10.240.0.99")
	h = await(t, hops, "the fallback to the kernel", is(nil))
	if !strings.Contains(h.Why, "10.240.0.99 answers with "+s.hostMAC.String()) {
		t.Errorf("why: %s", h.Why)
	}
	if gw, err := Read(s.config(Gateway)); err != nil || !bytes.Equal(gw.MAC, s.gwMAC(t)) {
		t.Errorf("mode gateway: %s, %v; want the gateway's MAC whatever the host says", gw.MAC, err)
	}

	must(t, s.node.NL.NeighDel(&netlink.Neigh{LinkIndex: s.nicIndex, Family: netlink.FAMILY_V4, IP: net.ParseIP("10.240.0.99")}))
	await(t, hops, "the gateway's MAC once the host's entry is gone", is(gw))

	// The fabric's MAC changes and it says so (arp_notify): the kernel
	// updates the gateway's entry, the watcher follows, although the
	// fabric's answer for 10.240.0.50 still holds the former MAC.
	newMAC := mac("02:12:34:56:78:9a")
	must(t, s.fabric.NL.LinkSetHardwareAddr(s.gw, newMAC))
	await(t, hops, "the gateway's new MAC", is(newMAC))
	if m := s.awaitEntry(t, "10.240.0.50"); !bytes.Equal(m, gw) {
		t.Errorf("10.240.0.50 was learned again (%s): the step proves nothing about the former MAC", m)
	}
}

// TestWatchKernelMode: in mode kernel nothing is cached and nothing is
// followed: Watch publishes once and returns.
func TestWatchKernelMode(t *testing.T) {
	s := newSegment(t)
	s.resolve(t, "10.240.0.1")
	var got []Hop
	err := Watch(context.Background(), s.config(Kernel), func(h Hop) { got = append(got, h) })
	if err != nil || len(got) != 1 || got[0].MAC != nil {
		t.Fatalf("Watch in mode kernel: %v, published %+v", err, got)
	}
}

// TestPermanentGatewayEntryKept: marking an entry in use would turn an
// operator's permanent entry into a resolved one; the watcher leaves it.
func TestPermanentGatewayEntryKept(t *testing.T) {
	s := newSegment(t)
	pinned := mac("02:00:00:00:aa:01")
	must(t, s.node.NL.NeighSet(&netlink.Neigh{LinkIndex: s.nicIndex, Family: netlink.FAMILY_V4, IP: net.ParseIP("10.240.0.1"),
		HardwareAddr: pinned, State: netlink.NUD_PERMANENT}))
	w, err := newWatcher(s.config(Gateway))
	must(t, err)
	defer w.nl.Close()
	w.revalidate()
	h, err := w.read()
	must(t, err)
	if !bytes.Equal(h.MAC, pinned) {
		t.Errorf("next hop %s, want the pinned %s (%s)", h.MAC, pinned, h.Why)
	}
	_, gw, err := w.neighbors()
	must(t, err)
	if gw == nil || gw.State != netlink.NUD_PERMANENT {
		t.Errorf("the permanent entry was changed: %+v", gw)
	}
}
