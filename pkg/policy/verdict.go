package policy

import "net/netip"

// Allowed says whether the rules computed for this node allow a new flow
// from src to dst's port, as the data path decides it (bpf/lib/policy.h):
// the source's egress if it is a local endpoint, the destination's ingress
// if it is one; a peer's own entry, else the set for every peer, else the
// longest ipBlock prefix holding the peer's address. This node always
// reaches its own pods. A port of 0 stands for a protocol without ports.
func (e *Engine) Allowed(src, dst netip.Addr, proto uint8, port uint16) bool {
	if ep, ok := e.endpoints[src]; ok && ep.rules != nil && ep.rules.Egress.Isolated {
		if !ep.rules.Egress.allows(e.peerIdentity(dst), dst, proto, port) {
			return false
		}
	}
	if ep, ok := e.endpoints[dst]; ok && ep.rules != nil && ep.rules.Ingress.Isolated {
		id := e.peerIdentity(src)
		if id != IdentityHost && !ep.rules.Ingress.allows(id, src, proto, port) {
			return false
		}
	}
	return true
}

func (e *Engine) peerIdentity(ip netip.Addr) uint32 {
	if id, ok := e.ipcache[ip]; ok {
		return id
	}
	return IdentityWorld
}

func (d *DirectionRules) allows(id uint32, ip netip.Addr, proto uint8, port uint16) bool {
	set, ok := d.Peers[id]
	if !ok {
		set = d.Any
	}
	if set.Contains(proto, port) {
		return true
	}
	var best *CIDRRule
	for i, c := range d.CIDRs {
		if c.Prefix.Contains(ip) && (best == nil || c.Prefix.Bits() > best.Prefix.Bits()) {
			best = &d.CIDRs[i]
		}
	}
	return best != nil && best.Ports.Contains(proto, port)
}
