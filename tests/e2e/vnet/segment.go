package vnet

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"

	"github.com/podvnet/podvnet/internal/nettest"
)

// fabricLink is the fabric's end of n's NIC: the gateway n's neighbour
// table resolves, and what answers ARP for every other address.
func (v *VNet) fabricLink(n *Node) (netlink.Link, error) {
	return v.Fabric.NL.LinkByName("to-" + n.Name)
}

// FabricMAC is the MAC the fabric answers n's ARP requests with.
func (v *VNet) FabricMAC(n *Node) (net.HardwareAddr, error) {
	l, err := v.fabricLink(n)
	if err != nil {
		return nil, err
	}
	return l.Attrs().HardwareAddr, nil
}

// SetFabricMAC changes the MAC of the fabric's link to n, announced as a
// router changing its address announces it (arp_notify: a gratuitous ARP
// for the gateway), which the node's kernel applies to its entry at once.
func (v *VNet) SetFabricMAC(n *Node, mac net.HardwareAddr) error {
	l, err := v.fabricLink(n)
	if err != nil {
		return err
	}
	if err := v.Fabric.Sysctl("net.ipv4.conf."+l.Attrs().Name+".arp_notify", "1"); err != nil {
		return err
	}
	if err := v.Fabric.NL.LinkSetHardwareAddr(l, mac); err != nil {
		return fmt.Errorf("set the MAC of %s: %w", l.Attrs().Name, err)
	}
	return nil
}

// AddSegmentHost puts a host on n's segment as on a plain L2 network, not
// Azure's: it answers ARP for its own address with its own MAC (it is a
// macvlan of the fabric's link to n), the fabric knows nothing of it, and
// it reaches the subnet through n's primary IP.
func (v *VNet) AddSegmentHost(name string, n *Node, ip netip.Addr) (*Host, error) {
	ns, err := nettest.CreateNS(v.Opts.Prefix + "-" + name)
	if err != nil {
		return nil, err
	}
	v.onClose(ns.Delete)
	fl, err := v.fabricLink(n)
	if err != nil {
		return nil, err
	}
	err = v.Fabric.NL.LinkAdd(&netlink.Macvlan{LinkAttrs: netlink.LinkAttrs{Name: "l2-" + name, ParentIndex: fl.Attrs().Index,
		Namespace: netlink.NsFd(int(ns.Handle))}, Mode: netlink.MACVLAN_MODE_BRIDGE})
	if err != nil {
		return nil, fmt.Errorf("create %s's link on %s's segment: %w", name, n.Name, err)
	}
	l, err := ns.NL.LinkByName("l2-" + name)
	if err != nil {
		return nil, err
	}
	if err := ns.NL.AddrAdd(l, &netlink.Addr{IPNet: prefixNet(netip.PrefixFrom(ip, 32))}); err != nil {
		return nil, fmt.Errorf("host address: %w", err)
	}
	if err := ns.NL.LinkSetUp(l); err != nil {
		return nil, err
	}
	if err := ns.NL.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Dst: prefixNet(Subnet), Gw: n.Pool.Primary.AsSlice(),
		Flags: int(netlink.FLAG_ONLINK)}); err != nil {
		return nil, fmt.Errorf("host route to %s via %s: %w", Subnet, n.Pool.Primary, err)
	}
	return &Host{Name: name, NS: ns, IP: ip}, nil
}
