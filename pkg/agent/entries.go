package agent

import (
	"net/netip"
	"sync"

	"github.com/podvnet/podvnet/pkg/maps"
)

// endpointEntries is the one writer of the endpoints map. An entry has two
// parts with an owner each: where the pod is (ifindex, MACs, shaped: the
// endpoint code) and its NetworkPolicy (policy id, isolation flags: the
// policy writer, through SetEndpointPolicy). Each sets its part; the entry
// written is both, merged, so neither undoes the other.
type endpointEntries struct {
	mu     sync.Mutex
	m      *maps.Endpoints
	base   map[netip.Addr]maps.Endpoint
	policy map[netip.Addr]policyPart
}

type policyPart struct{ id, flags uint32 }

func newEndpointEntries(m *maps.Endpoints) *endpointEntries {
	return &endpointEntries{m: m, base: map[netip.Addr]maps.Endpoint{}, policy: map[netip.Addr]policyPart{}}
}

// keepPolicy takes the policy parts of pinned entries, so that rewriting an
// endpoint at start keeps the isolation the last agent gave it until this
// one's policy writer has its own.
func (e *endpointEntries) keepPolicy(pinned []maps.EndpointEntry) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, p := range pinned {
		if p.PolicyID != 0 {
			e.policy[p.IP] = policyPart{p.PolicyID, p.Flags & maps.EndpointPolicy}
		}
	}
}

// Put sets where the pod is and writes the entry.
func (e *endpointEntries) Put(ip netip.Addr, ep maps.Endpoint) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.base[ip] = ep
	return e.write(ip)
}

// SetEndpointPolicy sets the policy part, written at once if the endpoint
// is in the map, else with its first Put.
func (e *endpointEntries) SetEndpointPolicy(ip netip.Addr, id, flags uint32) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.policy[ip] = policyPart{id, flags}
	if _, ok := e.base[ip]; !ok {
		return nil
	}
	return e.write(ip)
}

// Delete removes the entry and both parts.
func (e *endpointEntries) Delete(ip netip.Addr) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.base, ip)
	delete(e.policy, ip)
	return e.m.Delete(ip)
}

func (e *endpointEntries) write(ip netip.Addr) error {
	ep := e.base[ip]
	p := e.policy[ip]
	ep.PolicyID = p.id
	ep.Flags = ep.Flags&^maps.EndpointPolicy | p.flags&maps.EndpointPolicy
	return e.m.Put(ip, ep)
}
