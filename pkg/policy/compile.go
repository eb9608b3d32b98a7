package policy

import (
	"net/netip"
	"reflect"
	"slices"
)

// peerSelector is a from/to item's pod selection, cached with the
// identities it matches: a new identity is matched against every selector
// once, and an endpoint's rules read the cache.
type peerSelector struct {
	key       string
	namespace string    // the policy's namespace, when nsSel is nil
	nsSel     *Selector // nil: the policy's namespace
	podSel    *Selector // nil: every pod of the namespaces
	matched   map[uint32]*Identity
	users     int // policies using it
}

func newPeerSelector(policyNS string, pe Peer) *peerSelector {
	s := &peerSelector{namespace: policyNS, nsSel: pe.Namespaces, podSel: pe.Pods, matched: map[uint32]*Identity{}}
	s.key = "ns " + policyNS
	if s.nsSel != nil {
		s.namespace = ""
		s.key = "namespaces " + s.nsSel.String()
	}
	if s.podSel != nil {
		s.key += " pods " + s.podSel.String()
	}
	return s
}

// everyPod selects every pod of every namespace: an egress rule without
// peers resolves its named ports on each destination pod.
func everyPod() *peerSelector { return newPeerSelector("", Peer{Namespaces: &Selector{}}) }

func (s *peerSelector) matches(id *Identity) bool {
	if s.nsSel == nil {
		if id.Namespace != s.namespace {
			return false
		}
	} else if !s.nsSel.Matches(id.NamespaceLabels) {
		return false
	}
	return s.podSel == nil || s.podSel.Matches(id.Labels)
}

// selectorRef is one use of a selector in an endpoint's rules of one
// direction: the peers it matches may use ports, and the named ports of an
// egress rule resolved on each of them.
type selectorRef struct {
	sel   string
	ports PortSet
	named []Port // egress: resolved on each destination identity
}

// portsFor is what refs give identity id; nil when no ref matches it.
func (e *Engine) portsFor(refs []selectorRef, id *Identity) PortSet {
	var out PortSet
	for _, r := range refs {
		s := e.selectors[r.sel]
		if s == nil {
			continue
		}
		if _, ok := s.matched[id.ID]; !ok {
			continue
		}
		out = out.Union(r.ports)
		if len(r.named) > 0 {
			out = out.Union(namedPorts(r.named, id.Ports))
		}
	}
	return out
}

// updatePeers updates an endpoint's rules for the identities created and
// released: nothing else of them changed (its policies, its own identity,
// the pods in its ipBlocks did not), so only those peers' entries can.
func (e *Engine) updatePeers(ep *endpointState, pd *pending) *EndpointRules {
	r := *ep.rules
	for d, dir := range []*DirectionRules{&r.Ingress, &r.Egress} {
		if !dir.Isolated {
			continue
		}
		peers := make(map[uint32]PortSet, len(dir.Peers)+len(pd.added))
		for id, ports := range dir.Peers {
			if !pd.gone[id] {
				peers[id] = ports
			}
		}
		for id, ident := range pd.added {
			if ports := e.portsFor(ep.refs[d], ident); len(ports) > 0 {
				peers[id] = ports.Union(dir.Any)
			} else {
				delete(peers, id)
			}
		}
		dir.Peers = peers
	}
	return &r
}

// compile computes an endpoint's rules from the policies selecting it.
func (e *Engine) compile(ep *endpointState) *EndpointRules {
	r := &EndpointRules{Identity: ep.id.ID}
	ep.sels = map[string]bool{}
	ep.refs = [2][]selectorRef{}
	ep.podIPs = false
	var in, out []Rule
	var isoIn, isoOut bool
	for _, ps := range e.byNS[ep.pod.Namespace] {
		if !e.selects(ps, ep) {
			continue
		}
		r.Policies = append(r.Policies, ps.p.Key())
		if ps.p.IngressIsolation {
			isoIn = true
			in = append(in, ps.p.Ingress...)
		}
		if ps.p.EgressIsolation {
			isoOut = true
			out = append(out, ps.p.Egress...)
		}
	}
	slices.Sort(r.Policies)
	if isoIn {
		r.Ingress, ep.refs[0] = e.direction(ep, in, false)
	}
	if isoOut {
		r.Egress, ep.refs[1] = e.direction(ep, out, true)
	}
	return r
}

// direction computes one isolated direction: the union of its rules.
// Named ports resolve on the pod receiving the traffic: the endpoint for
// ingress, each destination pod for egress (an identity holds its pods'
// named ports, so each destination identity resolves exactly).
func (e *Engine) direction(ep *endpointState, rules []Rule, egress bool) (DirectionRules, []selectorRef) {
	d := DirectionRules{Isolated: true, Peers: map[uint32]PortSet{}}
	var refs []selectorRef
	add := func(id uint32, ports PortSet) {
		if len(ports) > 0 {
			d.Peers[id] = d.Peers[id].Union(ports)
		}
	}
	var blocks []block
	for _, rule := range rules {
		num := numericPorts(rule.Ports)
		named := hasNamed(rule.Ports)
		own := num
		if named && !egress {
			own = num.Union(namedPorts(rule.Ports, ep.id.Ports))
		}
		if len(rule.Peers) == 0 {
			d.Any = d.Any.Union(own)
			if named && egress {
				s := everyPod()
				ep.sels[s.key] = true
				refs = append(refs, selectorRef{sel: s.key, named: rule.Ports})
				for _, id := range e.selectors[s.key].matched {
					add(id.ID, namedPorts(rule.Ports, id.Ports))
				}
			}
			continue
		}
		for _, pe := range rule.Peers {
			if pe.IPBlock != nil {
				blocks = append(blocks, block{cidr: pe.IPBlock.CIDR, except: pe.IPBlock.Except, ports: own})
				if named && egress {
					blocks = append(blocks, e.namedInBlock(ep, pe.IPBlock, rule.Ports)...)
				}
				continue
			}
			s := e.selectors[newPeerSelector(ep.pod.Namespace, pe).key]
			if s == nil {
				continue // not possible: the policy's selectors are registered
			}
			ep.sels[s.key] = true
			ref := selectorRef{sel: s.key, ports: own}
			if named && egress {
				ref.named = rule.Ports
			}
			refs = append(refs, ref)
			for _, id := range s.matched {
				ports := own
				if named && egress {
					ports = ports.Union(namedPorts(rule.Ports, id.Ports))
				}
				add(id.ID, ports)
			}
		}
	}
	if len(d.Any) > 0 {
		// One lookup decides a peer with an entry of its own: it holds the
		// ports of the rules for every peer too.
		for id, ports := range d.Peers {
			d.Peers[id] = ports.Union(d.Any)
		}
	}
	d.CIDRs = unionCIDRs(blocks)
	return d, refs
}

// namedInBlock resolves an egress rule's named ports on the pods whose
// address lies in an ipBlock (outside its excepts): a /32 block each. A
// node or the Internet declares no ports.
func (e *Engine) namedInBlock(ep *endpointState, b *IPBlock, ports []Port) []block {
	ep.podIPs = true
	var out []block
	for _, ps := range e.pods {
		p := ps.pod
		if !p.IP.IsValid() || p.HostNetwork || !b.CIDR.Contains(p.IP) ||
			slices.ContainsFunc(b.Except, func(x netip.Prefix) bool { return x.Contains(p.IP) }) {
			continue
		}
		if set := namedPorts(ports, p.Ports); len(set) > 0 {
			out = append(out, block{cidr: netip.PrefixFrom(p.IP, 32), ports: set})
		}
	}
	return out
}

func policyEqual(a, b Policy) bool { return reflect.DeepEqual(a, b) }
