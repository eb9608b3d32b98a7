package policy

import (
	"maps"
	"net/netip"
	"slices"
)

// Config is what the engine knows of its node.
type Config struct {
	// NodeIP is this node's address: the host identity in the ipcache.
	NodeIP netip.Addr
	// FirstIdentity is the first pod identity handed out; the agent starts
	// above every identity the pinned maps hold, so that a new number never
	// means what an old one did while the maps are rewritten.
	FirstIdentity uint32
}

// Snapshot is the cluster as the API server last showed it: every pod
// (with an address of its own, or on its node's network), namespace and
// NetworkPolicy.
type Snapshot struct {
	Pods       []Pod
	Namespaces []Namespace
	Policies   []Policy
}

// EndpointRules is what NetworkPolicy makes of a local endpoint.
type EndpointRules struct {
	Identity        uint32
	Ingress, Egress DirectionRules
	// Policies are the policies selecting the endpoint, namespace/name.
	Policies []string
}

// Isolated says whether a policy isolates the endpoint either way.
func (r *EndpointRules) Isolated() bool { return r.Ingress.Isolated || r.Egress.Isolated }

// DirectionRules are an endpoint's rules of one direction. Not isolated:
// the direction is open, and the rest is empty.
type DirectionRules struct {
	Isolated bool
	// Any is what every peer may use (rules without peers): pods, nodes,
	// the Internet.
	Any PortSet
	// Peers are the pod identities rules name, with their ports (Any
	// included).
	Peers map[uint32]PortSet
	// CIDRs are the ipBlock prefixes, longest match wins.
	CIDRs []CIDRRule
}

// Equal compares two endpoints' rules.
func (r *EndpointRules) Equal(o *EndpointRules) bool {
	return r.Identity == o.Identity && r.Ingress.equal(&o.Ingress) && r.Egress.equal(&o.Egress) &&
		slices.Equal(r.Policies, o.Policies)
}

func (d *DirectionRules) equal(o *DirectionRules) bool {
	return d.Isolated == o.Isolated && d.Any.Equal(o.Any) &&
		maps.EqualFunc(d.Peers, o.Peers, PortSet.Equal) &&
		slices.EqualFunc(d.CIDRs, o.CIDRs, func(a, b CIDRRule) bool {
			return a.Prefix == b.Prefix && a.Ports.Equal(b.Ports) && a.Except.Equal(b.Except)
		})
}

// Changes are what an update means for the maps: ipcache entries (0:
// delete) and the rules of local endpoints that changed (nil: the endpoint
// is gone).
type Changes struct {
	IPCache   map[netip.Addr]uint32
	Endpoints map[netip.Addr]*EndpointRules
}

// Empty says there is nothing to write.
func (c Changes) Empty() bool { return len(c.IPCache) == 0 && len(c.Endpoints) == 0 }

// Engine holds the cluster as the agent sees it and what it means for this
// node's endpoints. Not safe for concurrent use.
type Engine struct {
	cfg        Config
	ids        *identities
	namespaces map[string]Namespace
	pods       map[string]*podState
	policies   map[string]*policyState
	byNS       map[string][]*policyState // policies of each namespace
	selectors  map[string]*peerSelector
	endpoints  map[netip.Addr]*endpointState
	ipcache    map[netip.Addr]uint32
}

type podState struct {
	pod Pod
	id  *Identity // nil: no address of its own
}

type policyState struct {
	p    Policy
	sels []string // the selectors its rules use
}

type endpointState struct {
	ip    netip.Addr
	pod   Pod
	id    *Identity
	rules *EndpointRules
	sels  map[string]bool // selectors its rules used
	// refs are its rules by selector, per direction: what a new
	// identity's ports are computed from (updatePeers).
	refs [2][]selectorRef
	// podIPs: its rules resolve named ports of pods inside ipBlocks, so
	// any pod's address or ports matter.
	podIPs bool
}

// NewEngine returns an engine that knows nothing of the cluster yet.
func NewEngine(cfg Config) *Engine {
	return &Engine{
		cfg: cfg, ids: newIdentities(cfg.FirstIdentity),
		namespaces: map[string]Namespace{}, pods: map[string]*podState{}, policies: map[string]*policyState{},
		byNS: map[string][]*policyState{}, selectors: map[string]*peerSelector{},
		endpoints: map[netip.Addr]*endpointState{}, ipcache: map[netip.Addr]uint32{},
	}
}

// pending collects what an update touched, for the endpoints to compute
// again.
type pending struct {
	sels     map[string]bool // selectors whose identities changed
	policies map[string]bool // policies added, changed or removed
	podIPs   bool            // a pod's address, ports or identity changed
	forced   map[netip.Addr]bool
	// added and gone are the identities created and released: all a
	// selector's change can be (selectors change with their policies).
	added map[uint32]*Identity
	gone  map[uint32]bool
}

func newPending() *pending {
	return &pending{sels: map[string]bool{}, policies: map[string]bool{}, forced: map[netip.Addr]bool{},
		added: map[uint32]*Identity{}, gone: map[uint32]bool{}}
}

// Update replaces the engine's view of the cluster with s and returns what
// changed for the maps.
func (e *Engine) Update(s Snapshot) Changes {
	pd := newPending()

	// Namespaces first: a pod's identity holds its namespace's labels.
	nsChanged := map[string]bool{}
	next := make(map[string]Namespace, len(s.Namespaces))
	for _, ns := range s.Namespaces {
		next[ns.Name] = ns
		if old, ok := e.namespaces[ns.Name]; !ok || !maps.Equal(old.Labels, ns.Labels) {
			nsChanged[ns.Name] = true
		}
	}
	for name := range e.namespaces {
		if _, ok := next[name]; !ok {
			nsChanged[name] = true
		}
	}
	e.namespaces = next

	seen := make(map[string]bool, len(s.Pods))
	for _, p := range s.Pods {
		key := p.Key()
		seen[key] = true
		old := e.pods[key]
		if old != nil && podEqual(old.pod, p) && !nsChanged[p.Namespace] {
			continue
		}
		e.setPod(key, p, pd)
	}
	for key := range e.pods {
		if !seen[key] {
			e.setPod(key, Pod{}, pd)
		}
	}

	seenPol := make(map[string]bool, len(s.Policies))
	for _, p := range s.Policies {
		key := p.Key()
		seenPol[key] = true
		if old := e.policies[key]; old != nil && policyEqual(old.p, p) {
			continue
		}
		e.setPolicy(key, &p, pd)
	}
	for key := range e.policies {
		if !seenPol[key] {
			e.setPolicy(key, nil, pd)
		}
	}

	// Local endpoints follow their pod: labels, named ports, namespace.
	for _, ep := range e.endpoints {
		p := ep.pod
		if ps := e.pods[p.Key()]; ps != nil && (p.UID == "" || ps.pod.UID == p.UID) {
			p = ps.pod
		}
		if !podEqual(ep.pod, p) || nsChanged[p.Namespace] {
			ep.pod = p
			e.setEndpointIdentity(ep, pd)
		}
	}
	return e.finish(pd)
}

// AddEndpoint registers a local endpoint (CNI ADD): its address and its
// pod. The changes hold its rules, which the maps must have before its
// first packet.
func (e *Engine) AddEndpoint(ip netip.Addr, pod Pod) Changes {
	pd := newPending()
	ep := e.endpoints[ip]
	if ep == nil {
		ep = &endpointState{ip: ip}
		e.endpoints[ip] = ep
	}
	if ps := e.pods[pod.Key()]; ps != nil && ps.pod.UID == pod.UID {
		pod = ps.pod // the informer's is the newer
	}
	ep.pod = pod
	e.setEndpointIdentity(ep, pd)
	pd.forced[ip] = true
	return e.finish(pd)
}

// RemoveEndpoint forgets a local endpoint (CNI DEL).
func (e *Engine) RemoveEndpoint(ip netip.Addr) Changes {
	pd := newPending()
	ep := e.endpoints[ip]
	if ep == nil {
		return Changes{}
	}
	if ep.id != nil && e.ids.release(ep.id) {
		e.identityGone(ep.id, pd)
	}
	delete(e.endpoints, ip)
	ch := e.finish(pd)
	ch.Endpoints[ip] = nil
	return ch
}

// Endpoint returns the rules last computed for a local endpoint.
func (e *Engine) Endpoint(ip netip.Addr) (*EndpointRules, bool) {
	ep, ok := e.endpoints[ip]
	if !ok || ep.rules == nil {
		return nil, false
	}
	return ep.rules, true
}

// All is the whole state as changes: every endpoint's rules and the whole
// ipcache, for a writer that must make the maps hold exactly this (an agent
// that starts, over what the last one wrote).
func (e *Engine) All() Changes {
	ch := Changes{IPCache: e.IPCache(), Endpoints: map[netip.Addr]*EndpointRules{}}
	for ip, ep := range e.endpoints {
		if ep.rules != nil {
			ch.Endpoints[ip] = ep.rules
		}
	}
	return ch
}

// Identities lists every identity in use, by number.
func (e *Engine) Identities() []Identity {
	out := make([]Identity, 0, len(e.ids.byID))
	for _, id := range e.ids.byID {
		out = append(out, *id)
	}
	slices.SortFunc(out, func(a, b Identity) int { return int(a.ID) - int(b.ID) })
	return out
}

// Pod returns the pod of namespace/name as the engine knows it.
func (e *Engine) Pod(key string) (Pod, bool) {
	ps, ok := e.pods[key]
	if !ok {
		return Pod{}, false
	}
	return ps.pod, true
}

// nsLabels are a namespace's labels; one the engine has not seen yet still
// carries its name label, as every namespace does.
func (e *Engine) nsLabels(ns string) map[string]string {
	if n, ok := e.namespaces[ns]; ok && n.Labels != nil {
		return n.Labels
	}
	return map[string]string{NameLabel: ns}
}

// setPod replaces (or with a zero p removes) a pod and the identity it
// holds: pods with an address of their own hold one.
func (e *Engine) setPod(key string, p Pod, pd *pending) {
	old := e.pods[key]
	var oldID *Identity
	if old != nil {
		oldID = old.id
		if old.pod.IP != p.IP || !maps.Equal(old.pod.Ports, p.Ports) || old.pod.HostNetwork != p.HostNetwork {
			pd.podIPs = true
		}
	}
	if p.Name == "" {
		delete(e.pods, key)
		if old != nil && old.pod.IP.IsValid() {
			pd.podIPs = true
		}
	} else {
		ps := &podState{pod: p}
		if p.IP.IsValid() && !p.HostNetwork {
			id, created := e.ids.acquire(p.Namespace, e.nsLabels(p.Namespace), p.Labels, p.Ports)
			ps.id = id
			if created {
				e.identityNew(id, pd)
			}
		}
		e.pods[key] = ps
		if old == nil && p.IP.IsValid() {
			pd.podIPs = true
		}
		if ps.id != oldID {
			pd.podIPs = true
		}
	}
	if oldID != nil && e.ids.release(oldID) {
		e.identityGone(oldID, pd)
	}
}

// setEndpointIdentity gives a local endpoint the identity of its pod.
func (e *Engine) setEndpointIdentity(ep *endpointState, pd *pending) {
	id, created := e.ids.acquire(ep.pod.Namespace, e.nsLabels(ep.pod.Namespace), ep.pod.Labels, ep.pod.Ports)
	if created {
		e.identityNew(id, pd)
	}
	if old := ep.id; old != nil && e.ids.release(old) {
		e.identityGone(old, pd)
	}
	if ep.id != id {
		pd.forced[ep.ip] = true
	}
	ep.id = id
}

// identityNew adds a new identity to every selector matching it.
func (e *Engine) identityNew(id *Identity, pd *pending) {
	pd.added[id.ID] = id
	for key, s := range e.selectors {
		if s.matches(id) {
			s.matched[id.ID] = id
			pd.sels[key] = true
		}
	}
}

// identityGone takes a gone identity out of every selector.
func (e *Engine) identityGone(id *Identity, pd *pending) {
	if _, ok := pd.added[id.ID]; ok {
		delete(pd.added, id.ID) // came and went within the update
	} else {
		pd.gone[id.ID] = true
	}
	for key, s := range e.selectors {
		if _, ok := s.matched[id.ID]; ok {
			delete(s.matched, id.ID)
			pd.sels[key] = true
		}
	}
}

// setPolicy replaces (or with nil removes) a policy and the selectors its
// rules use.
func (e *Engine) setPolicy(key string, p *Policy, pd *pending) {
	pd.policies[key] = true
	if old := e.policies[key]; old != nil {
		for _, k := range old.sels {
			e.unuseSelector(k)
		}
		delete(e.policies, key)
		e.byNS[old.p.Namespace] = slices.DeleteFunc(e.byNS[old.p.Namespace], func(ps *policyState) bool { return ps == old })
	}
	if p == nil {
		return
	}
	ps := &policyState{p: *p}
	for _, rules := range [][]Rule{p.Ingress, p.Egress} {
		for _, r := range rules {
			if len(r.Peers) == 0 && hasNamed(r.Ports) {
				ps.sels = append(ps.sels, e.useSelector(everyPod()))
			}
			for _, pe := range r.Peers {
				if pe.IPBlock == nil {
					ps.sels = append(ps.sels, e.useSelector(newPeerSelector(p.Namespace, pe)))
				}
			}
		}
	}
	e.policies[key] = ps
	e.byNS[p.Namespace] = append(e.byNS[p.Namespace], ps)
}

func (e *Engine) useSelector(s *peerSelector) string {
	if have, ok := e.selectors[s.key]; ok {
		have.users++
		return s.key
	}
	s.users = 1
	for _, id := range e.ids.byID {
		if s.matches(id) {
			s.matched[id.ID] = id
		}
	}
	e.selectors[s.key] = s
	return s.key
}

func (e *Engine) unuseSelector(key string) {
	if s := e.selectors[key]; s != nil {
		s.users--
		if s.users == 0 {
			delete(e.selectors, key)
		}
	}
}

// finish computes the ipcache and the rules of every endpoint the update
// may have changed.
func (e *Engine) finish(pd *pending) Changes {
	ch := Changes{IPCache: map[netip.Addr]uint32{}, Endpoints: map[netip.Addr]*EndpointRules{}}
	e.syncIPCache(ch.IPCache)
	for ip, ep := range e.endpoints {
		var rules *EndpointRules
		switch e.stale(ep, pd) {
		case notStale:
			continue
		case peersStale:
			rules = e.updatePeers(ep, pd)
		default:
			rules = e.compile(ep)
		}
		if ep.rules != nil && ep.rules.Equal(rules) {
			continue
		}
		ep.rules = rules
		ch.Endpoints[ip] = rules
	}
	return ch
}

// staleness is how much of an endpoint's rules an update may have changed.
type staleness int

const (
	notStale   staleness = iota
	peersStale           // only the identities its selectors match: updatePeers
	wholeStale           // compile again
)

// stale says how much of an endpoint's rules may have changed.
func (e *Engine) stale(ep *endpointState, pd *pending) staleness {
	if ep.rules == nil || pd.forced[ep.ip] || ep.podIPs && pd.podIPs {
		return wholeStale
	}
	for _, key := range ep.rules.Policies {
		if pd.policies[key] {
			return wholeStale
		}
	}
	for key := range pd.policies {
		if ps := e.policies[key]; ps != nil && e.selects(ps, ep) {
			return wholeStale
		}
	}
	for key := range ep.sels {
		if pd.sels[key] {
			return peersStale
		}
	}
	return notStale
}

func (e *Engine) selects(ps *policyState, ep *endpointState) bool {
	return ps.p.Namespace == ep.pod.Namespace && ps.p.PodSelector.Matches(ep.pod.Labels)
}

// syncIPCache computes every peer address's identity and records the
// differences with what was written.
func (e *Engine) syncIPCache(ch map[netip.Addr]uint32) {
	want := make(map[netip.Addr]uint32, len(e.pods)+1)
	for _, ps := range e.pods {
		p := ps.pod
		switch {
		case !p.IP.IsValid():
		case p.HostNetwork:
			want[p.IP] = IdentityRemoteNode
		case ps.id != nil:
			want[p.IP] = ps.id.ID
		}
	}
	for ip, ep := range e.endpoints {
		want[ip] = ep.id.ID
	}
	if e.cfg.NodeIP.IsValid() {
		want[e.cfg.NodeIP] = IdentityHost
	}
	for ip, id := range want {
		if e.ipcache[ip] != id {
			ch[ip] = id
		}
	}
	for ip := range e.ipcache {
		if _, ok := want[ip]; !ok {
			ch[ip] = 0
		}
	}
	e.ipcache = want
}

// IPCache is the whole peer address -> identity map as last computed.
func (e *Engine) IPCache() map[netip.Addr]uint32 { return maps.Clone(e.ipcache) }

func podEqual(a, b Pod) bool {
	return a.Namespace == b.Namespace && a.Name == b.Name && a.UID == b.UID && a.IP == b.IP &&
		a.HostNetwork == b.HostNetwork && maps.Equal(a.Labels, b.Labels) && maps.Equal(a.Ports, b.Ports)
}
