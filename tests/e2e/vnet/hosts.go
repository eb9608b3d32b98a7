package vnet

import (
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"

	"github.com/podvnet/podvnet/internal/nettest"
)

// Host is a machine the fabric reaches that is not a node: a VM in the
// VNet, a host in a peered or on-premises range, or an Internet host.
type Host struct {
	Name string
	NS   *nettest.NS
	IP   netip.Addr
}

// HostOptions place a host.
type HostOptions struct {
	// Addr is the host's address with its prefix length, e.g.
	// 10.240.200.10/16 (a VM in the subnet) or 172.16.5.10/24.
	Addr netip.Prefix
	// Routes the host has towards the fabric. nil means a default route;
	// an Internet host gets routes to the nodes' IPs only, so that only
	// masqueraded traffic can be answered.
	Routes []netip.Prefix
}

// AddHost connects a new host namespace to the fabric. A host inside the
// subnet is reached like the nodes (a /32 on the fabric, proxy ARP); one
// outside it gets its own on-link range on the fabric.
func (v *VNet) AddHost(name string, o HostOptions) (*Host, error) {
	ns, err := nettest.CreateNS(v.Opts.Prefix + "-" + name)
	if err != nil {
		return nil, err
	}
	v.onClose(ns.Delete)
	h := &Host{Name: name, NS: ns, IP: o.Addr.Addr()}
	inSubnet := Subnet.Contains(h.IP)
	gw, fabricAddr := Gateway, netip.PrefixFrom(Gateway, 32)
	if !inSubnet {
		gw = o.Addr.Masked().Addr().Next()
		fabricAddr = netip.PrefixFrom(gw, o.Addr.Bits())
	}
	fl, err := v.connect("to-"+name, ns, fabricAddr)
	if err != nil {
		return nil, err
	}
	if inSubnet {
		if err := v.inSubnet(fl, h.IP); err != nil {
			return nil, err
		}
	}

	hl, err := ns.NL.LinkByName("eth0")
	if err != nil {
		return nil, err
	}
	if err := ns.NL.AddrAdd(hl, &netlink.Addr{IPNet: prefixNet(o.Addr)}); err != nil {
		return nil, fmt.Errorf("host address: %w", err)
	}
	if err := ns.NL.LinkSetUp(hl); err != nil {
		return nil, err
	}
	if o.Routes == nil {
		o.Routes = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}
	}
	for _, r := range o.Routes {
		if err := ns.NL.RouteAdd(&netlink.Route{LinkIndex: hl.Attrs().Index, Dst: prefixNet(r), Gw: gw.AsSlice()}); err != nil {
			return nil, fmt.Errorf("host route %s via %s: %w", r, gw, err)
		}
	}
	return h, nil
}

// Do runs f inside the host's network namespace.
func (h *Host) Do(f func() error) error { return h.NS.Do(f) }
