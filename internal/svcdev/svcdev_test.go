package svcdev

import (
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/podvnet/podvnet/internal/nettest"
)

// TestEnsureAndRemove: the device comes up NOARP with the Service CIDR
// routed to it from the node's IP; a second Ensure changes nothing; Remove
// takes device and route, and removing twice is fine.
func TestEnsureAndRemove(t *testing.T) {
	nettest.RequireRoot(t)
	ns := nettest.NewNS(t, nettest.Prefix()+"-svcdev")
	cidr, node := netip.MustParsePrefix("10.96.0.0/12"), netip.MustParseAddr("10.240.0.4")
	lo, err := ns.NL.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	// The source must be the node's own address, as the NIC's is.
	if err := ns.NL.AddrAdd(lo, &netlink.Addr{IPNet: &net.IPNet{IP: node.AsSlice(), Mask: net.CIDRMask(32, 32)}}); err != nil {
		t.Fatal(err)
	}
	err = ns.Do(func() error {
		for range 2 {
			l, err := Ensure(cidr, node)
			if err != nil {
				return err
			}
			if l.Attrs().RawFlags&0x80 == 0 { // IFF_NOARP
				t.Errorf("%s is not NOARP", Name)
			}
			routes, err := netlink.RouteList(l, netlink.FAMILY_V4)
			if err != nil {
				return err
			}
			if len(routes) != 1 || routes[0].Dst.String() != cidr.String() || !routes[0].Src.Equal(node.AsSlice()) {
				t.Errorf("routes on %s: %v, want %s src %s", Name, routes, cidr, node)
			}
		}
		if err := Remove(); err != nil {
			return err
		}
		if _, err := netlink.LinkByName(Name); err == nil {
			t.Errorf("%s still there after Remove", Name)
		}
		return Remove()
	})
	if err != nil {
		t.Fatal(err)
	}
}
