// Package podroute owns the kernel's route to a pod, POD_IP/32 dev <host
// veth>: what the stack delivers to a pod (replies of NAT'd flows,
// Services, node-to-pod traffic, every packet when the programs are gone)
// takes it. The agent adds and removes it; the agent's CHECK and `debug
// doctor` look for it.
package podroute

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/podvnet/podvnet/internal/netlinkdump"
)

func dst(ip netip.Addr) *net.IPNet { return &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(32, 32)} }

// Replace routes ip to link, replacing a route to ip through another one.
func Replace(ip netip.Addr, link netlink.Link) error {
	route := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: dst(ip), Scope: netlink.SCOPE_LINK}
	if err := netlink.RouteReplace(route); err != nil {
		return fmt.Errorf("add route %s/32 dev %s: %w", ip, link.Attrs().Name, err)
	}
	return nil
}

// Delete removes the route to ip; one that is gone already is fine.
func Delete(ip netip.Addr) error {
	route := &netlink.Route{Dst: dst(ip), Scope: netlink.SCOPE_LINK}
	if err := netlink.RouteDel(route); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("delete route %s/32: %w", ip, err)
	}
	return nil
}

// Check says why the route to ip does not go through link, nil if it does.
func Check(ip netip.Addr, link netlink.Link) error {
	d := dst(ip)
	routes, err := netlinkdump.Retry(func() ([]netlink.Route, error) {
		return netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: d}, netlink.RT_FILTER_DST)
	})
	if err != nil {
		return fmt.Errorf("list routes to %s: %w", d, err)
	}
	for _, r := range routes {
		if r.LinkIndex == link.Attrs().Index {
			return nil
		}
	}
	return fmt.Errorf("no route %s dev %s", d, link.Attrs().Name)
}
