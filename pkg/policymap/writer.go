// Package policymap writes what pkg/policy computes into the NetworkPolicy
// maps (pkg/maps): it numbers endpoints (their policy id) and port sets,
// keeps what the maps hold, and writes only the differences, in an order
// under which no packet meets a half-written rule set:
//
//  1. new port sets (a set is written once under a number of its own and
//     never changed, so an entry naming it is complete when written);
//  2. peer and ipBlock entries, added or changed;
//  3. the endpoints' records (the set for every peer, ipBlock flags), and
//     the node's flags, turned on;
//  4. the endpoints' isolation flags (the endpoints map entry, which the
//     agent owns: through Isolation);
//  5. ipcache entries, added or changed: a peer's new identity meets rules
//     written for it;
//  6. what is gone: entries, endpoints, ipcache entries, unused sets;
//  7. the generation: flows judged before are judged again, against the
//     rules as they are now.
//
// An agent that starts adopts what the maps hold (Adopt): its diffs then
// remove what the last agent wrote and nothing computes any more.
package policymap

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"sync"

	podvnetmaps "github.com/podvnet/podvnet/pkg/maps"
	"github.com/podvnet/podvnet/pkg/policy"
)

// Isolation writes an endpoint's policy id and isolation flags into its
// endpoints map entry, merged with the rest of the entry, which is not
// this package's.
type Isolation interface {
	SetEndpointPolicy(ip netip.Addr, id, flags uint32) error
}

// MaxEndpoints is the size of the per-endpoint arrays (PV_MAX_ENDPOINTS):
// policy ids are 1..MaxEndpoints-1.
const MaxEndpoints = 1024

// ErrNoEndpointID: more endpoints than the policy arrays hold.
var ErrNoEndpointID = errors.New("no free NetworkPolicy endpoint id")

// Writer is the one writer of the NetworkPolicy maps.
type Writer struct {
	mu  sync.Mutex
	m   *podvnetmaps.Policy
	iso Isolation

	ids     map[netip.Addr]uint32 // endpoint -> policy id
	eps     map[uint32]*written   // by policy id
	sets    map[string]*portSet   // by PortSet.String()
	setIDs  map[uint32]*portSet
	nextSet uint32
	ipcache map[netip.Addr]uint32
	cfg     podvnetmaps.PolicyConfig
}

type portSet struct {
	id     uint32
	ranges []podvnetmaps.PortRange
	refs   int
}

// written is what the maps hold for one endpoint.
type written struct {
	ip     netip.Addr
	flags  uint32 // isolation flags of its endpoints map entry
	record podvnetmaps.PolicyEndpoint
	peers  map[podvnetmaps.PolicyKey]podvnetmaps.PolicyValue
	cidrs  map[cidrKey]podvnetmaps.PolicyValue
	// told: the endpoint's entry holds its policy id (Isolation was told).
	told bool
	// rules are what was written, nil if adopted: entries whose ports
	// are unchanged are carried over without a set lookup.
	rules *policy.EndpointRules
}

type cidrKey struct {
	dir    uint8
	prefix netip.Prefix
}

// New returns a writer of m that holds nothing yet; Adopt gives it what
// the maps hold.
func New(m *podvnetmaps.Policy, iso Isolation) *Writer {
	return &Writer{
		m: m, iso: iso, ids: map[netip.Addr]uint32{}, eps: map[uint32]*written{},
		sets: map[string]*portSet{}, setIDs: map[uint32]*portSet{}, nextSet: 1, ipcache: map[netip.Addr]uint32{},
	}
}

// Pinned is an endpoint as the endpoints map holds it: its policy id and
// isolation flags, written by the agent before this one.
type Pinned struct {
	IP    netip.Addr
	ID    uint32
	Flags uint32
}

// Adopt reads what the maps hold, for the endpoints the agent still has:
// their entries are kept until a computed update replaces them, and the
// rest (other endpoints', unknown sets) goes with the first Apply. It
// returns the highest identity the maps name, so that new identities are
// numbered above it.
func (w *Writer) Adopt(endpoints []Pinned) (maxIdentity uint32, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.cfg, err = w.m.Config(); err != nil {
		return 0, err
	}
	sets, err := w.m.PortSets()
	if err != nil {
		return 0, err
	}
	for id, ranges := range sets {
		ps := &portSet{id: id, ranges: ranges}
		w.setIDs[id] = ps
		w.sets[setKey(ranges)] = ps
		w.nextSet = max(w.nextSet, id+1)
	}
	for _, ep := range endpoints {
		if ep.ID == 0 || ep.ID >= MaxEndpoints || w.eps[ep.ID] != nil {
			continue
		}
		rec, err := w.m.Endpoint(ep.ID)
		if err != nil {
			return 0, err
		}
		w.ids[ep.IP] = ep.ID
		w.eps[ep.ID] = &written{ip: ep.IP, flags: ep.Flags & podvnetmaps.EndpointPolicy, record: rec, told: true,
			peers: map[podvnetmaps.PolicyKey]podvnetmaps.PolicyValue{}, cidrs: map[cidrKey]podvnetmaps.PolicyValue{}}
		w.ref(rec.IngressPorts)
		w.ref(rec.EgressPorts)
	}
	// Entries of endpoints gone while no agent ran are kept under an
	// orphan record, removed by the first Apply.
	orphans := map[uint32]*written{}
	orphan := func(id uint32) *written {
		if wr := w.eps[id]; wr != nil {
			return wr
		}
		if orphans[id] == nil {
			orphans[id] = &written{peers: map[podvnetmaps.PolicyKey]podvnetmaps.PolicyValue{}, cidrs: map[cidrKey]podvnetmaps.PolicyValue{}}
		}
		return orphans[id]
	}
	peers, err := w.m.Peers()
	if err != nil {
		return 0, err
	}
	for _, p := range peers {
		v := p.PolicyValue
		v.Flows = 0
		orphan(p.Endpoint).peers[p.PolicyKey] = v
		w.ref(v.Ports)
		maxIdentity = max(maxIdentity, p.Peer)
	}
	cidrs, err := w.m.CIDRs()
	if err != nil {
		return 0, err
	}
	for _, c := range cidrs {
		v := c.PolicyValue
		v.Flows = 0
		orphan(c.Endpoint).cidrs[cidrKey{c.Dir, c.Prefix}] = v
		w.ref(v.Ports)
		w.ref(v.ExceptPorts)
	}
	ipc, err := w.m.Identities()
	if err != nil {
		return 0, err
	}
	for ip, id := range ipc {
		w.ipcache[ip] = id
		maxIdentity = max(maxIdentity, id)
	}
	for id, o := range orphans {
		w.eps[id] = o // no ip: Apply removes it
	}
	return maxIdentity, nil
}

// setKey identifies a set by its ranges (in normal form: equal sets are
// equal lists): five bytes each.
func setKey(ranges []podvnetmaps.PortRange) string {
	b := make([]byte, 0, 5*len(ranges))
	for _, r := range ranges {
		b = append(b, r.Proto, byte(r.First>>8), byte(r.First), byte(r.Last>>8), byte(r.Last))
	}
	return string(b)
}

func (w *Writer) ref(id uint32) {
	if ps := w.setIDs[id]; ps != nil {
		ps.refs++
	}
}

// EndpointID returns the policy id of an endpoint, allocated on first use.
func (w *Writer) EndpointID(ip netip.Addr) (uint32, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.endpointID(ip)
}

func (w *Writer) endpointID(ip netip.Addr) (uint32, error) {
	if id, ok := w.ids[ip]; ok {
		return id, nil
	}
	for id := uint32(1); id < MaxEndpoints; id++ {
		if w.eps[id] == nil {
			w.ids[ip] = id
			w.eps[id] = &written{ip: ip, peers: map[podvnetmaps.PolicyKey]podvnetmaps.PolicyValue{}, cidrs: map[cidrKey]podvnetmaps.PolicyValue{}}
			// A new endpoint starts from zero, not from the last one's.
			if err := w.m.ResetStats(id); err != nil {
				return 0, err
			}
			return id, nil
		}
	}
	return 0, fmt.Errorf("%w: %d endpoints", ErrNoEndpointID, MaxEndpoints-1)
}

// Endpoint returns the policy id and isolation flags written for ip.
func (w *Writer) Endpoint(ip netip.Addr) (id, flags uint32, ok bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	id, ok = w.ids[ip]
	if !ok {
		return 0, 0, false
	}
	return id, w.eps[id].flags, true
}

// Endpoints lists every endpoint the writer holds, by IP.
func (w *Writer) Endpoints() map[netip.Addr]uint32 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return maps.Clone(w.ids)
}
