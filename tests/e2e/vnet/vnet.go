// Package vnet builds a simulated Azure VNet in network namespaces and drives
// the real podvnet binaries in it: a "fabric" router that is the subnet
// gateway, routes every node IP and secondary IP to the owning node and
// answers ARP for all of them (proxy ARP, as Azure answers every ARP); node
// namespaces with an eth0 towards it, each running podvnet-agent; pods
// created by the podvnet plugin through libcni, as container runtimes do.
// Nothing is created in the root namespace; Close removes everything.
package vnet

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/podvnet/podvnet/internal/nettest"
	"github.com/podvnet/podvnet/pkg/ipam"
)

// Options shape the simulated VNet.
type Options struct {
	Prefix     string // unique per run; names every namespace
	Nodes      int    // default 2
	PerNode    int    // secondary IPs per node, default 30
	BinDir     string // podvnet-agent, podvnet (and reference plugins)
	WorkDir    string // state, pins, sockets, logs
	NICMTU     int    // default 1500
	AgentArgs  []string
	CNIVersion string // of the conflist, default 1.0.0
	Log        io.Writer
	// IPAMSource is where agents learn their pool: "static" (default, a
	// pool file per node), or "nmagent" or "imds" served by Metadata.
	IPAMSource string
	// AlignedPools gives node i the secondary IPs 10.240.i.2 and up, inside
	// Node.PodBlock 10.240.i.0/24, so that plugins that want a per-node
	// range and gateway (the reference ptp and bridge, for the benchmarks)
	// can use the very addresses podvnet uses.
	AlignedPools bool
}

// Subnet is the VNet subnet of every simulated node.
var Subnet = netip.MustParsePrefix("10.240.0.0/16")

// Gateway is the fabric's address in the subnet.
var Gateway = netip.MustParseAddr("10.240.0.1")

// VNet is a running simulation.
type VNet struct {
	Opts     Options
	Fabric   *nettest.NS
	Nodes    []*Node
	Metadata *Metadata // the fake wireserver and IMDS; nil with a static pool

	mu      sync.Mutex
	cleanup []func() error
}

func (v *VNet) onClose(f func() error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.cleanup = append(v.cleanup, f)
}

// Close stops agents and removes pods, nodes, the fabric and every bpffs
// mount, in reverse order of creation. It is safe to call more than once.
func (v *VNet) Close() error {
	v.mu.Lock()
	fns := v.cleanup
	v.cleanup = nil
	v.mu.Unlock()
	var errs []error
	for i := len(fns) - 1; i >= 0; i-- {
		errs = append(errs, fns[i]())
	}
	return errors.Join(errs...)
}

// New builds the fabric and the nodes (agents not started). On error all
// that was built is removed.
func New(opts Options) (_ *VNet, err error) {
	if opts.Nodes == 0 {
		opts.Nodes = 2
	}
	if opts.PerNode == 0 {
		opts.PerNode = 30
	}
	if opts.NICMTU == 0 {
		opts.NICMTU = 1500
	}
	if opts.CNIVersion == "" {
		opts.CNIVersion = "1.0.0"
	}
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	v := &VNet{Opts: opts}
	defer func() {
		if err != nil {
			v.Close()
		}
	}()

	if v.Fabric, err = nettest.CreateNS(opts.Prefix + "-fabric"); err != nil {
		return nil, err
	}
	fabric := v.Fabric
	v.onClose(fabric.Delete)
	for _, kv := range [][2]string{{"net.ipv4.ip_forward", "1"}, {"net.ipv4.conf.all.rp_filter", "0"}, {"net.ipv4.conf.default.rp_filter", "0"}} {
		if err := fabric.Sysctl(kv[0], kv[1]); err != nil {
			return nil, err
		}
	}

	next := netip.MustParseAddr("10.240.0.4") // Azure reserves .0-.3 (and the last)
	for i := 1; i <= opts.Nodes; i++ {
		n := &Node{vnet: v, Index: i, Name: "node" + strconv.Itoa(i)}
		n.Pool = ipam.Pool{Subnet: Subnet, Gateway: Gateway, Primary: next}
		sec := next
		if opts.AlignedPools {
			if opts.PerNode > 253 || opts.Nodes > 254 {
				return nil, errors.New("AlignedPools: at most 254 nodes of 253 secondary IPs")
			}
			n.PodBlock = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 240, byte(i), 0}), 24)
			n.Pool.Primary = netip.AddrFrom4([4]byte{10, 240, 0, byte(3 + i)})
			sec = n.PodBlock.Addr().Next() // .1 is the block's gateway for ptp and bridge
		}
		for range opts.PerNode {
			sec = sec.Next()
			n.Pool.Secondary = append(n.Pool.Secondary, sec)
		}
		if !opts.AlignedPools {
			next = sec.Next()
		}
		if err := v.addNode(n); err != nil {
			return nil, fmt.Errorf("build %s: %w", n.Name, err)
		}
		v.Nodes = append(v.Nodes, n)
	}
	switch opts.IPAMSource {
	case "", "static":
	case "nmagent", "imds":
		if v.Metadata, err = v.serveMetadata(); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("IPAMSource %q: want static, nmagent or imds", opts.IPAMSource)
	}
	return v, nil
}

func (v *VNet) addNode(n *Node) error {
	var err error
	if n.NS, err = nettest.CreateNS(v.Opts.Prefix + "-" + n.Name); err != nil {
		return err
	}
	v.onClose(n.NS.Delete)
	n.Dir = filepath.Join(v.Opts.WorkDir, n.Name)
	if err := os.MkdirAll(n.Dir, 0o700); err != nil {
		return err
	}
	n.BPFFS = filepath.Join(n.Dir, "bpf")
	if err := os.MkdirAll(n.BPFFS, 0o700); err != nil {
		return err
	}
	// The agent mounts a bpffs here; whatever is mounted goes at Close.
	v.onClose(func() error {
		for {
			if err := unix.Unmount(n.BPFFS, unix.MNT_DETACH); err != nil {
				return nil
			}
		}
	})

	fl, err := v.connect("to-"+n.Name, n.NS, netip.PrefixFrom(Gateway, 32))
	if err != nil {
		return err
	}
	// The fabric knows where every address of the node lives.
	if err := v.inSubnet(fl, n.Pool.Primary); err != nil {
		return err
	}
	for _, ip := range n.Pool.Secondary {
		if err := v.Fabric.NL.RouteAdd(&netlink.Route{LinkIndex: fl.Attrs().Index,
			Dst: prefixNet(netip.PrefixFrom(ip, 32)), Gw: n.Pool.Primary.AsSlice()}); err != nil {
			return fmt.Errorf("fabric route to %s via %s: %w", ip, n.Pool.Primary, err)
		}
	}

	if err := n.ConfigureNIC(); err != nil {
		return err
	}
	return n.NS.Sysctl("net.ipv4.ip_forward", "1")
}

// ConfigureNIC gives the node's eth0 the node's address and brings it up
// with the default route via the fabric: at creation, and when a test
// brings the NIC back after taking it away (an interface that leaves a
// namespace loses its addresses and routes).
func (n *Node) ConfigureNIC() error {
	nl, err := n.NS.NL.LinkByName("eth0")
	if err != nil {
		return err
	}
	n.NICMAC = nl.Attrs().HardwareAddr
	if err := n.NS.NL.AddrAdd(nl, &netlink.Addr{IPNet: prefixNet(netip.PrefixFrom(n.Pool.Primary, Subnet.Bits()))}); err != nil {
		return fmt.Errorf("node address: %w", err)
	}
	if err := n.NS.NL.LinkSetUp(nl); err != nil {
		return err
	}
	if err := n.NS.NL.RouteAdd(&netlink.Route{Gw: Gateway.AsSlice(), LinkIndex: nl.Attrs().Index}); err != nil {
		return fmt.Errorf("node default route: %w", err)
	}
	return nil
}

// connect links ns's new eth0 to the fabric's new fabricSide (made inside
// the fabric namespace with the peer created straight in ns), which gets
// addr and is brought up.
func (v *VNet) connect(fabricSide string, ns *nettest.NS, addr netip.Prefix) (netlink.Link, error) {
	if len(fabricSide) > 15 {
		return nil, fmt.Errorf("%q too long for an interface name", fabricSide)
	}
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: fabricSide, MTU: v.Opts.NICMTU},
		PeerName:      "eth0",
		PeerNamespace: netlink.NsFd(int(ns.Handle)),
		PeerMTU:       uint32(v.Opts.NICMTU),
	}
	if err := v.Fabric.NL.LinkAdd(veth); err != nil {
		return nil, fmt.Errorf("create fabric link %s: %w", fabricSide, err)
	}
	fl, err := v.Fabric.NL.LinkByName(fabricSide)
	if err != nil {
		return nil, err
	}
	if err := v.Fabric.NL.AddrAdd(fl, &netlink.Addr{IPNet: prefixNet(addr)}); err != nil {
		return nil, fmt.Errorf("fabric address %s on %s: %w", addr, fabricSide, err)
	}
	return fl, v.Fabric.NL.LinkSetUp(fl)
}

// inSubnet makes the fabric reach ip, a VM of the subnet, over fl as Azure
// does: it answers ARP for the subnet there and routes ip on-link.
func (v *VNet) inSubnet(fl netlink.Link, ip netip.Addr) error {
	// Azure's fabric answers at once; Linux delays proxy ARP replies to
	// broadcast requests by up to proxy_delay (0.8 s) unless told not to.
	for _, kv := range [][2]string{{"conf.%s.proxy_arp", "1"}, {"conf.%s.rp_filter", "0"}, {"neigh.%s.proxy_delay", "0"}} {
		if err := v.Fabric.Sysctl("net.ipv4."+fmt.Sprintf(kv[0], fl.Attrs().Name), kv[1]); err != nil {
			return err
		}
	}
	if err := v.Fabric.NL.RouteAdd(&netlink.Route{LinkIndex: fl.Attrs().Index, Scope: netlink.SCOPE_LINK,
		Dst: prefixNet(netip.PrefixFrom(ip, 32))}); err != nil {
		return fmt.Errorf("fabric route to %s: %w", ip, err)
	}
	return nil
}

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
