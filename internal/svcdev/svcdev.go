// Package svcdev owns the Service device of service mode bpf: a veth the
// node's route for the Service CIDR points at, whose egress program
// (from_host) translates what the node itself sends to a Service. The
// agent makes it, cleanup removes it.
package svcdev

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"

	"github.com/containernetworking/plugins/pkg/utils/sysctl"
	"github.com/vishvananda/netlink"
)

// Name is the Service device's name. A veth, because every kernel has it
// (the dummy driver is a module some lack); its peer only keeps it up. Not
// named pv*: podvnet's nftables rules and sweeps take those for pods.
const (
	Name = "podvnet-svc"
	peer = "podvnet-svcp"
)

// Ensure makes the Service device and routes cidr to it with
// the node's IP as source. NOARP: the host addresses frames to it without
// resolving anything (from_host writes the real addresses). IPv6 off: it
// would only send router solicitations.
func Ensure(cidr netip.Prefix, nodeIP netip.Addr) (netlink.Link, error) {
	if !cidr.IsValid() {
		return nil, errors.New("service mode bpf needs the Service CIDR (--service-cidr)")
	}
	l, err := netlink.LinkByName(Name)
	if err != nil {
		var notFound netlink.LinkNotFoundError
		if !errors.As(err, &notFound) {
			return nil, fmt.Errorf("find %s: %w", Name, err)
		}
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: Name}, PeerName: peer}
		if err := netlink.LinkAdd(veth); err != nil {
			return nil, fmt.Errorf("add %s: %w", Name, err)
		}
		if l, err = netlink.LinkByName(Name); err != nil {
			return nil, fmt.Errorf("find %s: %w", Name, err)
		}
	} else if l.Type() != "veth" {
		return nil, fmt.Errorf("%s exists and is a %s, not podvnet's veth", Name, l.Type())
	}
	for _, name := range []string{Name, peer} {
		if _, err := sysctl.Sysctl("net/ipv6/conf/"+name+"/disable_ipv6", "1"); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("disable IPv6 on %s: %w", name, err)
		}
	}
	if err := netlink.LinkSetARPOff(l); err != nil {
		return nil, fmt.Errorf("set %s NOARP: %w", Name, err)
	}
	for _, name := range []string{Name, peer} {
		if err := netlink.LinkSetUp(&netlink.Device{LinkAttrs: netlink.LinkAttrs{Name: name}}); err != nil {
			return nil, fmt.Errorf("set %s up: %w", name, err)
		}
	}
	route := &netlink.Route{LinkIndex: l.Attrs().Index, Dst: &net.IPNet{IP: cidr.Masked().Addr().AsSlice(), Mask: net.CIDRMask(cidr.Bits(), 32)},
		Src: nodeIP.AsSlice(), Scope: netlink.SCOPE_LINK}
	if err := netlink.RouteReplace(route); err != nil {
		return nil, fmt.Errorf("route %s to %s: %w", cidr, Name, err)
	}
	return netlink.LinkByName(Name)
}

// Remove deletes the Service device (its route goes with it);
// a device already gone is not an error.
func Remove() error {
	l, err := netlink.LinkByName(Name)
	if err != nil {
		return nil
	}
	if err := netlink.LinkDel(l); err != nil {
		return fmt.Errorf("delete %s: %w", Name, err)
	}
	return nil
}
