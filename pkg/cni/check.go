package cni

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/podvnet/podvnet/pkg/agentapi"
)

// expected is what ADD left, read back from the prevResult CHECK gets.
type expected struct {
	IfName   string
	PodMAC   string // empty when the result did not say
	HostName string
	HostMAC  string
	IP       netip.Prefix
	Gateway  netip.Addr
}

// expectedFrom finds this attachment in a prevResult of any version: the
// pod interface (by name, in a sandbox), the host veth (by its derived
// name) and the pod's IP. Later plugins in a chain may have added to the
// result, so only podvnet's own entries are looked at.
func expectedFrom(prev types.Result, containerID, ifname string) (expected, error) {
	res, err := current.NewResultFromResult(prev)
	if err != nil {
		return expected{}, err
	}
	e := expected{IfName: ifname, HostName: agentapi.HostVethName(containerID, ifname)}
	podIdx := -1
	for i, itf := range res.Interfaces {
		switch {
		case itf.Name == ifname && itf.Sandbox != "":
			podIdx, e.PodMAC = i, itf.Mac
		case itf.Name == e.HostName && itf.Sandbox == "":
			e.HostMAC = itf.Mac
		}
	}
	if podIdx < 0 {
		return e, fmt.Errorf("names no interface %s in a sandbox", ifname)
	}
	for _, ipc := range res.IPs {
		if ipc.Interface != nil && *ipc.Interface != podIdx {
			continue
		}
		ip, ok := netip.AddrFromSlice(ipc.Address.IP.To4())
		if !ok {
			continue
		}
		ones, _ := ipc.Address.Mask.Size()
		e.IP = netip.PrefixFrom(ip, ones)
		e.Gateway, _ = netip.AddrFromSlice(ipc.Gateway.To4())
		break
	}
	if !e.IP.IsValid() {
		return e, fmt.Errorf("names no IPv4 address for %s", ifname)
	}
	if !e.Gateway.IsValid() {
		e.Gateway = netip.MustParseAddr(agentapi.GatewayIP)
	}
	return e, nil
}

// podProblems compares the pod side with what ADD left there.
func (e expected) podProblems(netnsPath string, s podState) []string {
	if !s.Found {
		return []string{fmt.Sprintf("pod interface %s is missing from netns %s", e.IfName, netnsPath)}
	}
	p := linkProblems("pod interface "+e.IfName, s.Type, s.Up, s.MAC, e.PodMAC)
	if !slices.Contains(s.Addrs, e.IP) {
		p = append(p, fmt.Sprintf("pod interface %s lacks its address %s (has %v)", e.IfName, e.IP, s.Addrs))
	}
	if !slices.ContainsFunc(s.Routes, func(r routeState) bool { return r.Dst.Bits() == 0 && r.GW == e.Gateway }) {
		p = append(p, fmt.Sprintf("pod has no default route via %s dev %s", e.Gateway, e.IfName))
	}
	if !slices.ContainsFunc(s.Neighs, func(n neighState) bool {
		return n.IP == e.Gateway && n.Permanent && (e.HostMAC == "" || strings.EqualFold(n.MAC, e.HostMAC))
	}) {
		p = append(p, fmt.Sprintf("pod has no permanent neighbour entry %s -> %s on %s", e.Gateway, e.HostMAC, e.IfName))
	}
	return p
}

// hostProblems compares the host veth with what ADD left.
func (e expected) hostProblems(h hostState, pod podState) []string {
	if !h.Found {
		return []string{fmt.Sprintf("host veth %s is missing", e.HostName)}
	}
	p := linkProblems("host veth "+e.HostName, h.Type, h.Up, h.MAC, e.HostMAC)
	if pod.Found && h.PeerIndex != pod.Index {
		p = append(p, fmt.Sprintf("host veth %s is not the peer of the pod's %s", e.HostName, e.IfName))
	}
	return p
}

// linkProblems names what is off with one end of the veth ADD made: its
// type, state and MAC (wantMAC empty: not compared).
func linkProblems(what, typ string, up bool, mac, wantMAC string) []string {
	var p []string
	if typ != "veth" {
		p = append(p, fmt.Sprintf("%s is a %s, not a veth", what, typ))
	}
	if !up {
		p = append(p, fmt.Sprintf("%s is down", what))
	}
	if wantMAC != "" && !strings.EqualFold(mac, wantMAC) {
		p = append(p, fmt.Sprintf("%s has MAC %s, ADD gave it %s", what, mac, wantMAC))
	}
	return p
}
