package cluster

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/vishvananda/netlink"

	"github.com/podvnet/podvnet/internal/nettest"
)

// What the tests break on purpose: a node's NIC, a pod's sandbox.

// mgmtNet holds the management links: node i gets 192.168.250.4i/30, the
// control plane .4i+1, the node .4i+2. Outside the VNet and the Service
// CIDR, so that nothing of podvnet's routes or rules applies to it.
var mgmtNet = netip.MustParsePrefix("192.168.250.0/24")

// mgmtLink gives the node a second way to the control plane, a veth
// straight into its namespace, with a default route of lower priority than
// eth0's: the node reaches the API server (its own address, or the
// kubernetes Service's ClusterIP through kube-proxy) over it once eth0 is
// gone, as a node whose pods' NIC is not its management NIC would.
func (n *Node) mgmtLink() error {
	if n.mgmtUp {
		return nil
	}
	base := mgmtNet.Addr().As4()
	base[3] = byte(4 * n.Index)
	cpAddr := netip.PrefixFrom(netip.AddrFrom4(base).Next(), 30)
	nodeAddr := netip.PrefixFrom(cpAddr.Addr().Next(), 30)
	cp := n.c.ControlPlane.NS
	name := "mg-" + n.Name
	if err := cp.NL.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: "mgmt0",
		PeerNamespace: netlink.NsFd(int(n.NS.Handle))}); err != nil {
		return fmt.Errorf("management link of %s: %w", n.Name, err)
	}
	for _, side := range []struct {
		ns   *nettest.NS
		name string
		addr netip.Prefix
	}{{cp, name, cpAddr}, {n.NS, "mgmt0", nodeAddr}} {
		l, err := side.ns.NL.LinkByName(side.name)
		if err == nil {
			err = side.ns.NL.AddrAdd(l, &netlink.Addr{IPNet: ipNet(side.addr)})
		}
		if err == nil {
			err = side.ns.NL.LinkSetUp(l)
		}
		if err != nil {
			return fmt.Errorf("management link %s: %w", side.name, err)
		}
	}
	l, err := n.NS.NL.LinkByName("mgmt0")
	if err != nil {
		return err
	}
	if err := n.NS.NL.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: cpAddr.Addr().AsSlice(), Priority: 1000}); err != nil {
		return fmt.Errorf("%s: default route over the management link: %w", n.Name, err)
	}
	n.mgmtUp = true
	return nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// TakeNIC takes the node's eth0 away, as a NIC that disappears: it moves
// into a namespace of its own (the fabric's end stays, so its routes do).
// The node keeps its kubelet and agent in touch with the API server over a
// management link (mgmtLink). restore brings eth0 back with its address
// and default route; it is safe to call more than once.
func (n *Node) TakeNIC() (restore func() error, err error) {
	if err := n.mgmtLink(); err != nil {
		return nil, err
	}
	park, err := nettest.CreateNS(n.c.VNet.Opts.Prefix + "-park-" + n.Name)
	if err != nil {
		return nil, err
	}
	restored := false
	n.c.VNet.OnClose(func() error {
		if restored {
			return nil
		}
		return park.Delete()
	})
	nic, err := n.NS.NL.LinkByName("eth0")
	if err == nil {
		err = n.NS.NL.LinkSetNsFd(nic, int(park.Handle))
	}
	if err != nil {
		return nil, fmt.Errorf("%s: move eth0 away: %w", n.Name, err)
	}
	return func() error {
		if restored {
			return nil
		}
		l, err := park.NL.LinkByName("eth0")
		if err != nil {
			return fmt.Errorf("%s: eth0 in %s: %w", n.Name, park.Name, err)
		}
		if err := park.NL.LinkSetNsFd(l, int(n.NS.Handle)); err != nil {
			return fmt.Errorf("%s: move eth0 back: %w", n.Name, err)
		}
		restored = true
		return errors.Join(n.ConfigureNIC(), park.Delete(), n.removeMgmtLink())
	}, nil
}

// removeMgmtLink takes the management link away again once eth0 is back:
// its address would otherwise be a source the kernel may pick for the
// node's own and masqueraded traffic (kube-proxy's NodePort SNAT picked
// 192.168.250.x over the node IP, as the device list now holds mgmt0
// before the returned eth0).
func (n *Node) removeMgmtLink() error {
	if !n.mgmtUp {
		return nil
	}
	l, err := n.NS.NL.LinkByName("mgmt0")
	if err == nil {
		err = n.NS.NL.LinkDel(l)
	}
	if err != nil {
		return fmt.Errorf("%s: remove the management link: %w", n.Name, err)
	}
	n.mgmtUp = false
	return nil
}

// KillSandbox kills the sandbox (pause) process of the pod with uid on
// this node, as a crash would: kubelet then makes a new sandbox, which
// means CNI DEL of the old and ADD of the new, with no API server needed.
func (n *Node) KillSandbox(uid string) error {
	root := filepath.Join("/sys/fs/cgroup/pids", n.cgroup, "kubepods")
	var killed []int
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.Name() != "cgroup.procs" || !strings.Contains(p, "/pod"+uid+"/") {
			return nil
		}
		b, _ := os.ReadFile(p)
		for _, f := range strings.Fields(string(b)) {
			pid, _ := strconv.Atoi(f)
			cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			if string(cmdline) == "/pause\x00" {
				if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
					return fmt.Errorf("kill the sandbox %d: %w", pid, err)
				}
				killed = append(killed, pid)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(killed) != 1 {
		return fmt.Errorf("%s: %d sandbox processes of pod %s under %s, want 1", n.Name, len(killed), uid, root)
	}
	return nil
}
