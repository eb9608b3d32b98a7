// Package nexthop finds the next hop of pods' packets into the VNet, so that
// from_pod can write their Ethernet header itself and send them with
// bpf_redirect, rather than have the kernel route and resolve every packet
// (bpf_redirect_neigh).
//
// That is right only where one MAC is the next hop of every destination.
// Azure's fabric answers ARP for every address of the subnet with one MAC,
// the gateway's, and routes whatever reaches it; a plain L2 network answers
// each address with its owner's MAC, and there only the kernel's resolution
// per destination is right. The Mode says which holds; Auto reads it from
// the neighbours the NIC has learned.
package nexthop

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/vishvananda/netlink"
)

// Mode is how the next hop is chosen.
type Mode string

const (
	// Auto caches the gateway's MAC while every neighbour the NIC has
	// learned carries it, and leaves the next hop to the kernel as soon as
	// one does not.
	Auto Mode = "auto"
	// Gateway caches the gateway's MAC whatever else the NIC learns: the
	// operator says the network is a one-MAC fabric (Azure).
	Gateway Mode = "gateway"
	// Kernel never caches: the kernel resolves each packet's next hop.
	Kernel Mode = "kernel"
)

// Modes lists every mode.
var Modes = []Mode{Auto, Gateway, Kernel}

// ParseMode reads a mode's name.
func ParseMode(s string) (Mode, error) {
	for _, m := range Modes {
		if string(m) == s {
			return m, nil
		}
	}
	return "", fmt.Errorf("%q: want auto, gateway or kernel", s)
}

// Neighbor is one entry of the NIC's neighbour table.
type Neighbor struct {
	IP    netip.Addr
	MAC   net.HardwareAddr
	State int // netlink.NUD_*
}

// Hop is the Ethernet header the data path writes on frames into the VNet.
type Hop struct {
	// MAC is the next hop's address; nil leaves the next hop to the kernel.
	MAC net.HardwareAddr
	// NIC is the NIC's own address, the frames' source.
	NIC net.HardwareAddr
	// Why says how MAC was chosen, for the log.
	Why string
}

// Equal reports whether h and o lead to the same frames and reasons.
func (h Hop) Equal(o Hop) bool {
	return bytes.Equal(h.MAC, o.MAC) && bytes.Equal(h.NIC, o.NIC) && h.Why == o.Why
}

// learnedStates hold an address the kernel would send to. NOARP entries are
// the broadcast and multicast addresses, which answer nothing.
const learnedStates = netlink.NUD_REACHABLE | netlink.NUD_STALE | netlink.NUD_DELAY | netlink.NUD_PROBE | netlink.NUD_PERMANENT

// learned reports whether n is a unicast address resolved to a unicast MAC.
func learned(n Neighbor) bool {
	return n.State&learnedStates != 0 && n.IP.Is4() && !n.IP.IsMulticast() && n.IP != netip.AddrFrom4([4]byte{255, 255, 255, 255}) &&
		unicastMAC(n.MAC)
}

func unicastMAC(m net.HardwareAddr) bool {
	return len(m) == 6 && m[0]&1 == 0 && !bytes.Equal(m, make(net.HardwareAddr, 6))
}

// Decide chooses the next hop in mode from the NIC's neighbour table and
// the NIC's MAC. Without a unicast MAC for the NIC or the gateway, the
// kernel resolves. formerGateway are MACs the gateway had before: an entry
// the fabric answered with one of them is not yet re-learned, not evidence
// of a host with its own MAC.
func Decide(mode Mode, gateway netip.Addr, nic net.HardwareAddr, neighs []Neighbor, formerGateway []net.HardwareAddr) Hop {
	h := Hop{NIC: nic}
	if mode == Kernel {
		h.Why = "mode kernel"
		return h
	}
	if !unicastMAC(nic) {
		h.Why = fmt.Sprintf("the NIC has no Ethernet address (%s)", nic)
		return h
	}
	// Sorted, so that the same table always gives the same reason.
	neighs = slices.Clone(neighs)
	slices.SortFunc(neighs, func(a, b Neighbor) int { return a.IP.Compare(b.IP) })
	var gw net.HardwareAddr
	for _, n := range neighs {
		if n.IP == gateway && learned(n) {
			gw = n.MAC
		}
	}
	if gw == nil {
		h.Why = fmt.Sprintf("gateway %s not resolved", gateway)
		return h
	}
	isGateway := func(m net.HardwareAddr) bool {
		return bytes.Equal(m, gw) || slices.ContainsFunc(formerGateway, func(f net.HardwareAddr) bool { return bytes.Equal(m, f) })
	}
	if mode == Auto {
		for _, n := range neighs {
			if learned(n) && !isGateway(n.MAC) {
				h.Why = fmt.Sprintf("%s answers with %s, not the gateway's %s: each address has its own next hop", n.IP, n.MAC, gw)
				return h
			}
		}
	}
	h.MAC = gw
	h.Why = fmt.Sprintf("gateway %s (mode %s)", gateway, mode)
	if mode == Auto {
		h.Why = fmt.Sprintf("gateway %s, and every neighbour the NIC learned answers with its MAC", gateway)
	}
	return h
}
