package cni

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/podvnet/podvnet/internal/netlinkdump"
)

// podNetwork is the plugin's netlink work on a pod's network: the veth pair
// it makes for the agent, and everything inside the pod's netns. One method
// per step of ADD, DEL and CHECK, so that tests can make any step fail and
// watch the rollback. Methods take the pod's netns path; only ConfigurePod
// (the one entry of an ADD), RetirePodIface and InspectPod enter it, the
// others act from the calling thread's netns (the node's).
type podNetwork interface {
	// CheckPodNetns makes sure the pod netns exists and is not the
	// plugin's own.
	CheckPodNetns(netnsPath string) error
	// CreateVeth creates the pair in one request: the host end up, the pod
	// end born inside the pod's netns under its final name, with the MAC
	// it returns. A name taken on either side fails it, naming which.
	CreateVeth(netnsPath, hostName, podName string) (net.HardwareAddr, error)
	// ConfigurePod sets the pod end's MTU, address, neighbour and route.
	ConfigurePod(netnsPath, ifname string, cfg podConfig) error
	// DeleteHostVeth removes the host end (and with it the pod end); a
	// missing one is fine. The agent deletes host veths: the plugin calls
	// this only as the fallback, when the agent does not have the veth.
	DeleteHostVeth(hostName string) error
	// RetirePodIface takes the pod end of the veth hostName out of the way
	// in the pod's netns (down, renamed), so that an ADD right after the
	// DEL can use ifname while the agent deletes the pair in the
	// background. An interface that is not that veth's peer is left alone.
	RetirePodIface(netnsPath, ifname, hostName string) error
	InspectPod(netnsPath, ifname string) (podState, error)
	InspectHost(hostName string) (hostState, error)
}

// podConfig is what the pod side gets from the agent's answer.
type podConfig struct {
	IP      netip.Prefix // a /32
	Gateway netip.Addr
	HostMAC net.HardwareAddr
	MTU     int
}

// linuxPodNetwork is podNetwork over netlink.
type linuxPodNetwork struct{}

// errNetnsGone marks a pod netns that does not exist.
var errNetnsGone = errors.New("pod netns does not exist")

// errExists marks a veth name taken: by another attachment, or by one that
// is still going away. The interface that holds it is not the caller's.
var errExists = errors.New("already exists")

func openNetns(path string) (ns.NetNS, error) {
	n, err := ns.GetNS(path)
	if err != nil {
		var gone ns.NSPathNotExistErr
		if errors.As(err, &gone) || errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%w: %s", errNetnsGone, path)
		}
		return nil, fmt.Errorf("open pod netns %s: %w", path, err)
	}
	return n, nil
}

func (linuxPodNetwork) CheckPodNetns(netnsPath string) error {
	netns, err := openNetns(netnsPath)
	if err != nil {
		return types.NewError(types.ErrInvalidNetNS, err.Error(), "")
	}
	defer netns.Close()
	node, err := ns.GetCurrentNS()
	if err != nil {
		return fmt.Errorf("open the node's netns: %w", err)
	}
	defer node.Close()
	// Creating the "pod" end in the node's own netns would put a second
	// eth0 next to the node's NIC.
	if vnetns.NsHandle(node.Fd()).Equal(vnetns.NsHandle(netns.Fd())) {
		return types.NewError(types.ErrInvalidNetNS, fmt.Sprintf("CNI_NETNS %s is the node's own network namespace", netnsPath), "")
	}
	return nil
}

// CreateVeth makes the pair from the node's netns: the pod end is created
// straight inside the pod's netns under its final name (no temporary name
// is ever visible on the host) with a MAC chosen here, so nothing has to be
// read back from inside. The host end is born up, in the same request: the
// agent's /32 route needs it up (the kernel refuses routes through a device
// that is down), and a pair whose host end cannot come up is not created.
// The kernel creates both ends or neither.
func (linuxPodNetwork) CreateVeth(netnsPath, hostName, podName string) (net.HardwareAddr, error) {
	netns, err := openNetns(netnsPath)
	if err != nil {
		return nil, err
	}
	defer netns.Close()
	mac := randomMAC()
	veth := &netlink.Veth{
		LinkAttrs:        netlink.LinkAttrs{Name: hostName, Flags: net.FlagUp},
		PeerName:         podName,
		PeerHardwareAddr: mac,
		PeerNamespace:    netlink.NsFd(int(netns.Fd())),
	}
	err = netlink.LinkAdd(veth)
	if errors.Is(err, unix.EEXIST) {
		// The agent owns host veths: one of this name is left alone, and
		// gone once the agent is done with it (DEL, GC).
		if _, lerr := netlinksafe.LinkByName(hostName); lerr == nil {
			return nil, fmt.Errorf("host veth %s %w (ADD twice without DEL, or the agent is still deleting the veth of an earlier attempt)", hostName, errExists)
		}
		return nil, fmt.Errorf("interface %s %w in pod netns %s (ADD twice without DEL?)", podName, errExists, netnsPath)
	}
	if err != nil {
		return nil, fmt.Errorf("create veth %s with peer %s in %s: %w", hostName, podName, netnsPath, err)
	}
	return mac, nil
}

// randomMAC is a random unicast, locally administered MAC, as the kernel
// gives a veth end it is not told one for.
func randomMAC() net.HardwareAddr {
	mac := make(net.HardwareAddr, 6)
	rand.Read(mac)
	mac[0] = mac[0]&^0x01 | 0x02
	return mac
}

// ConfigurePod sets the pod end's MTU, gives the pod its /32 and a default
// route via the gateway, with a permanent neighbour entry for it (the pod
// never ARPs for its gateway), all in the one entry into the pod's netns
// an ADD makes.
func (linuxPodNetwork) ConfigurePod(netnsPath, ifname string, cfg podConfig) error {
	return ns.WithNetNSPath(netnsPath, func(ns.NetNS) error {
		l, err := netlinksafe.LinkByName(ifname)
		if err != nil {
			return fmt.Errorf("find %s in pod netns: %w", ifname, err)
		}
		if cfg.MTU > 0 {
			if err := netlink.LinkSetMTU(l, cfg.MTU); err != nil {
				return fmt.Errorf("set MTU %d on %s: %w", cfg.MTU, ifname, err)
			}
		}
		if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: prefixNet(cfg.IP)}); err != nil {
			return fmt.Errorf("add %s to %s: %w", cfg.IP, ifname, err)
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return fmt.Errorf("set %s up: %w", ifname, err)
		}
		neigh := &netlink.Neigh{
			LinkIndex:    l.Attrs().Index,
			Family:       netlink.FAMILY_V4,
			State:        netlink.NUD_PERMANENT,
			IP:           cfg.Gateway.AsSlice(),
			HardwareAddr: cfg.HostMAC,
		}
		if err := netlink.NeighSet(neigh); err != nil {
			return fmt.Errorf("add permanent neighbour %s -> %s: %w", cfg.Gateway, cfg.HostMAC, err)
		}
		route := &netlink.Route{
			LinkIndex: l.Attrs().Index,
			Dst:       defaultDst(),
			Gw:        cfg.Gateway.AsSlice(),
			Flags:     int(netlink.FLAG_ONLINK),
		}
		if err := netlink.RouteAdd(route); err != nil {
			return fmt.Errorf("add default route via %s onlink: %w", cfg.Gateway, err)
		}
		return nil
	})
}

func (linuxPodNetwork) DeleteHostVeth(name string) error {
	l, err := netlinksafe.LinkByName(name)
	if err != nil {
		if isNotFound(err) {
			return nil
		}
		return fmt.Errorf("look up %s: %w", name, err)
	}
	// ENODEV: the agent's background deletion got there first.
	if err := netlink.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return nil
}

func (linuxPodNetwork) RetirePodIface(netnsPath, ifname, hostName string) error {
	host, err := netlinksafe.LinkByName(hostName)
	if err != nil {
		if isNotFound(err) {
			return nil // gone already, and its peer with it
		}
		return fmt.Errorf("look up %s: %w", hostName, err)
	}
	netns, err := openNetns(netnsPath)
	if err != nil {
		if errors.Is(err, errNetnsGone) {
			return nil
		}
		return err
	}
	defer netns.Close()
	return netns.Do(func(ns.NetNS) error {
		l, err := netlinksafe.LinkByName(ifname)
		if err != nil {
			if isNotFound(err) {
				return nil
			}
			return fmt.Errorf("look up %s in pod netns: %w", ifname, err)
		}
		// A veth's IFLA_LINK is its peer's ifindex: only our own pod end.
		if l.Type() != "veth" || l.Attrs().ParentIndex != host.Attrs().Index {
			return nil
		}
		if err := netlink.LinkSetDown(l); err != nil {
			return fmt.Errorf("set %s down: %w", ifname, err)
		}
		if err := netlink.LinkSetName(l, retiredName()); err != nil {
			return fmt.Errorf("rename %s out of the way: %w", ifname, err)
		}
		return nil
	})
}

// retiredName is a unique name for a pod end awaiting deletion.
func retiredName() string {
	b := make([]byte, 6)
	rand.Read(b)
	return "pvdel" + hex.EncodeToString(b)[:10]
}

// podState is what CHECK finds on the pod side.
type podState struct {
	Found  bool
	Type   string
	Up     bool
	MAC    string
	Index  int
	Addrs  []netip.Prefix
	Routes []routeState
	Neighs []neighState
}

type routeState struct {
	Dst    netip.Prefix
	GW     netip.Addr
	OnLink bool
}

type neighState struct {
	IP        netip.Addr
	MAC       string
	Permanent bool
}

// hostState is what CHECK finds of the host veth.
type hostState struct {
	Found     bool
	Type      string
	Up        bool
	MAC       string
	PeerIndex int // the pod end's ifindex, in the pod's netns
}

func (linuxPodNetwork) InspectPod(netnsPath, ifname string) (podState, error) {
	var st podState
	netns, err := openNetns(netnsPath)
	if err != nil {
		return st, err
	}
	defer netns.Close()
	err = netns.Do(func(ns.NetNS) error {
		l, err := netlinksafe.LinkByName(ifname)
		if isNotFound(err) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("look up %s in pod netns: %w", ifname, err)
		}
		a := l.Attrs()
		st = podState{Found: true, Type: l.Type(), Up: a.Flags&net.FlagUp != 0, MAC: a.HardwareAddr.String(), Index: a.Index}
		addrs, err := netlinksafe.AddrList(l, netlink.FAMILY_V4)
		if err != nil {
			return fmt.Errorf("list addresses of %s: %w", ifname, err)
		}
		for _, ad := range addrs {
			if p, ok := netipPrefix(ad.IPNet); ok {
				st.Addrs = append(st.Addrs, p)
			}
		}
		routes, err := netlinksafe.RouteList(l, netlink.FAMILY_V4)
		if err != nil {
			return fmt.Errorf("list routes of %s: %w", ifname, err)
		}
		for _, r := range routes {
			rs := routeState{OnLink: r.Flags&int(netlink.FLAG_ONLINK) != 0}
			rs.Dst = netip.MustParsePrefix("0.0.0.0/0")
			if p, ok := netipPrefix(r.Dst); ok {
				rs.Dst = p
			}
			rs.GW, _ = netip.AddrFromSlice(r.Gw.To4())
			st.Routes = append(st.Routes, rs)
		}
		neighs, err := netlinkdump.Retry(func() ([]netlink.Neigh, error) { return netlink.NeighList(a.Index, netlink.FAMILY_V4) })
		if err != nil {
			return fmt.Errorf("list neighbours of %s: %w", ifname, err)
		}
		for _, n := range neighs {
			ip, _ := netip.AddrFromSlice(n.IP.To4())
			st.Neighs = append(st.Neighs, neighState{IP: ip, MAC: n.HardwareAddr.String(), Permanent: n.State&netlink.NUD_PERMANENT != 0})
		}
		return nil
	})
	return st, err
}

func (linuxPodNetwork) InspectHost(hostName string) (hostState, error) {
	l, err := netlinksafe.LinkByName(hostName)
	if isNotFound(err) {
		return hostState{}, nil
	}
	if err != nil {
		return hostState{}, fmt.Errorf("look up %s: %w", hostName, err)
	}
	a := l.Attrs()
	st := hostState{Found: true, Type: l.Type(), Up: a.Flags&net.FlagUp != 0, MAC: a.HardwareAddr.String()}
	if v, ok := l.(*netlink.Veth); ok {
		if st.PeerIndex, err = netlink.VethPeerIndex(v); err != nil {
			return st, fmt.Errorf("peer of %s: %w", hostName, err)
		}
	}
	return st, nil
}

func isNotFound(err error) bool {
	var nf netlink.LinkNotFoundError
	return errors.As(err, &nf)
}

func defaultDst() *net.IPNet { return &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)} }

func prefixNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

func netipPrefix(n *net.IPNet) (netip.Prefix, bool) {
	if n == nil {
		return netip.Prefix{}, false
	}
	ip, ok := netip.AddrFromSlice(n.IP.To4())
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := n.Mask.Size()
	return netip.PrefixFrom(ip, ones), true
}
