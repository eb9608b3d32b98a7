package maps

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"net/netip"

	"github.com/cilium/ebpf"

	"github.com/podvnet/podvnet/internal/ipproto"
)

// Policy is the NetworkPolicy maps of a node (bpf/lib/policy.h): the
// ipcache (peer IP -> identity), each endpoint's rules (peer entries, ipBlock
// prefixes, the sets for every peer), the port sets they name, per-endpoint
// statistics, the node's policy config, and the flow table.
type Policy struct {
	ipcache, peers, cidr, ports, endpoints, stats, config, flows *ebpf.Map
}

// NewPolicy wraps the opened NetworkPolicy maps, keyed by name.
func NewPolicy(m map[string]*ebpf.Map) *Policy {
	return &Policy{
		ipcache: m[IPCacheMap], peers: m[PolicyMap], cidr: m[PolicyCIDRMap], ports: m[PolicyPortsMap],
		endpoints: m[PolicyEndpointsMap], stats: m[PolicyStatsMap], config: m[PolicyConfigMap], flows: m[FlowsMap],
	}
}

// PortRange is one entry of a port set: Proto 0 allows every protocol and
// port; First 0 and Last 65535 every port of Proto.
type PortRange struct {
	Proto       uint8
	First, Last uint16
}

func (r PortRange) String() string {
	name := ipproto.Name(r.Proto)
	switch {
	case r.Proto == 0:
		return "any"
	case r.First == 0 && r.Last == 65535:
		return name
	case r.First == r.Last:
		return fmt.Sprintf("%s/%d", name, r.First)
	}
	return fmt.Sprintf("%s/%d-%d", name, r.First, r.Last)
}

// portsKeys are the trie entries of one range of set: the fewest prefixes
// covering [First, Last], as Cilium encodes port ranges.
func (r PortRange) portsKeys(set uint32) []PortsKey {
	if r.Proto == 0 {
		return []PortsKey{{Prefixlen: 32, Set: set}}
	}
	var out []PortsKey
	lo, hi := uint32(r.First), uint32(r.Last)
	for lo <= hi {
		// The largest aligned block starting at lo that fits.
		size := uint32(1) << bits.TrailingZeros32(lo|1<<16)
		for lo+size-1 > hi {
			size >>= 1
		}
		k := PortsKey{Prefixlen: 48 + 16 - uint32(bits.TrailingZeros32(size)), Set: set, Proto: r.Proto}
		binary.BigEndian.PutUint16(k.Port[:], uint16(lo))
		out = append(out, k)
		lo += size
	}
	return out
}

// PortSetKeys lists the trie entries of a port set.
func PortSetKeys(set uint32, ranges []PortRange) []PortsKey {
	var out []PortsKey
	for _, r := range ranges {
		out = append(out, r.portsKeys(set)...)
	}
	return out
}

// PutPortSet writes the entries of a port set. A set is written once under
// a number of its own and never changed: a new set gets a new number.
func (p *Policy) PutPortSet(set uint32, ranges []PortRange) error {
	for _, k := range PortSetKeys(set, ranges) {
		if err := p.ports.Put(&k, uint32(1)); err != nil {
			return fmt.Errorf("put port set %d: %w", set, err)
		}
	}
	return nil
}

// DeletePortSet removes the entries of a port set.
func (p *Policy) DeletePortSet(set uint32, ranges []PortRange) error {
	for _, k := range PortSetKeys(set, ranges) {
		if err := p.ports.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete port set %d: %w", set, err)
		}
	}
	return nil
}

// PortSets reads every port set back as ranges, by set number.
func (p *Policy) PortSets() (map[uint32][]PortRange, error) {
	keys, err := listMap(p.ports, "port sets", func(k PortsKey, _ uint32) PortsKey { return k },
		func(a, b PortsKey) int {
			return cmp.Or(cmp.Compare(a.Set, b.Set), cmp.Compare(a.Proto, b.Proto),
				cmp.Compare(binary.BigEndian.Uint16(a.Port[:]), binary.BigEndian.Uint16(b.Port[:])))
		})
	if err != nil {
		return nil, err
	}
	out := map[uint32][]PortRange{}
	for _, k := range keys {
		out[k.Set] = appendRange(out[k.Set], k.portRange())
	}
	return out, nil
}

// portRange is the range one trie entry covers.
func (k PortsKey) portRange() PortRange {
	if k.Prefixlen <= 32 {
		return PortRange{}
	}
	n := min(k.Prefixlen-48, 16)
	first := binary.BigEndian.Uint16(k.Port[:])
	return PortRange{Proto: k.Proto, First: first, Last: first | uint16(1<<(16-n)-1)}
}

// appendRange adds r to sorted ranges, merging it with the last one when
// they touch.
func appendRange(rs []PortRange, r PortRange) []PortRange {
	if n := len(rs); n > 0 {
		last := &rs[n-1]
		if last.Proto == r.Proto && r.Proto != 0 && uint32(last.Last)+1 >= uint32(r.First) {
			last.Last = max(last.Last, r.Last)
			return rs
		}
	}
	return append(rs, r)
}

// PeerEntry is one (endpoint, direction, peer identity) rule.
type PeerEntry struct {
	PolicyKey
	PolicyValue
}

// PutPeer writes a peer's rule; keepFlows: the entry exists, and keeps
// the flows it counted.
func (p *Policy) PutPeer(k PolicyKey, v PolicyValue, keepFlows bool) error {
	var old PolicyValue
	if keepFlows && p.peers.Lookup(&k, &old) == nil {
		v.Flows = old.Flows
	}
	if err := p.peers.Put(&k, &v); err != nil {
		return fmt.Errorf("put rule of endpoint %d for identity %d: %w", k.Endpoint, k.Peer, err)
	}
	return nil
}

// AddPeers writes new peer rules (no flows counted yet) in one batch, or
// one by one where the kernel has no batch operations.
func (p *Policy) AddPeers(keys []PolicyKey, values []PolicyValue) error {
	if len(keys) == 0 {
		return nil
	}
	_, err := p.peers.BatchUpdate(keys, values, nil)
	if errors.Is(err, ebpf.ErrNotSupported) {
		for i := range keys {
			if err := p.peers.Put(&keys[i], &values[i]); err != nil {
				return fmt.Errorf("put rule of endpoint %d for identity %d: %w", keys[i].Endpoint, keys[i].Peer, err)
			}
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("put %d policy rules: %w", len(keys), err)
	}
	return nil
}

// DeletePeers removes peer rules in one batch (one by one where the kernel
// has no batch operations); missing ones are not an error.
func (p *Policy) DeletePeers(keys []PolicyKey) error {
	if len(keys) == 0 {
		return nil
	}
	_, err := p.peers.BatchDelete(keys, nil)
	if err == nil {
		return nil
	}
	// A batch stops at a missing key, and some kernels have none: the rest
	// one by one.
	for _, k := range keys {
		if err := p.DeletePeer(k); err != nil {
			return err
		}
	}
	return nil
}

// DeletePeer removes a peer's rule.
func (p *Policy) DeletePeer(k PolicyKey) error {
	if err := p.peers.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete rule of endpoint %d for identity %d: %w", k.Endpoint, k.Peer, err)
	}
	return nil
}

// Peers lists every peer rule, by endpoint, direction and identity.
func (p *Policy) Peers() ([]PeerEntry, error) {
	return listMap(p.peers, "policy rules", func(k PolicyKey, v PolicyValue) PeerEntry { return PeerEntry{k, v} },
		func(a, b PeerEntry) int {
			return cmp.Or(cmp.Compare(a.Endpoint, b.Endpoint), cmp.Compare(a.Dir, b.Dir), cmp.Compare(a.Peer, b.Peer))
		})
}

// CIDREntry is one ipBlock prefix of an endpoint's rules.
type CIDREntry struct {
	Endpoint uint32
	Dir      uint8
	Prefix   netip.Prefix
	PolicyValue
}

// CIDRKeyOf is the trie key of an endpoint's prefix.
func CIDRKeyOf(endpoint uint32, dir uint8, prefix netip.Prefix) (CIDRKey, error) {
	if !prefix.Addr().Is4() {
		return CIDRKey{}, fmt.Errorf("ipBlock %s: not IPv4", prefix)
	}
	return CIDRKey{Prefixlen: 64 + uint32(prefix.Bits()), Endpoint: endpoint, Dir: dir, Addr: prefix.Masked().Addr().As4()}, nil
}

// PutCIDR writes an ipBlock prefix's entry, keeping its flow count.
func (p *Policy) PutCIDR(e CIDREntry) error {
	k, err := CIDRKeyOf(e.Endpoint, e.Dir, e.Prefix)
	if err != nil {
		return err
	}
	var old PolicyValue
	if err := p.cidr.Lookup(&k, &old); err == nil {
		e.Flows = old.Flows
	}
	if err := p.cidr.Put(&k, &e.PolicyValue); err != nil {
		return fmt.Errorf("put ipBlock %s of endpoint %d: %w", e.Prefix, e.Endpoint, err)
	}
	return nil
}

// DeleteCIDR removes an ipBlock prefix's entry.
func (p *Policy) DeleteCIDR(endpoint uint32, dir uint8, prefix netip.Prefix) error {
	k, err := CIDRKeyOf(endpoint, dir, prefix)
	if err != nil {
		return err
	}
	if err := p.cidr.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete ipBlock %s of endpoint %d: %w", prefix, endpoint, err)
	}
	return nil
}

// CIDRs lists every ipBlock prefix, by endpoint, direction and prefix.
func (p *Policy) CIDRs() ([]CIDREntry, error) {
	return listMap(p.cidr, "ipBlock rules", func(k CIDRKey, v PolicyValue) CIDREntry {
		return CIDREntry{Endpoint: k.Endpoint, Dir: k.Dir, Prefix: netip.PrefixFrom(netip.AddrFrom4(k.Addr), int(k.Prefixlen)-64), PolicyValue: v}
	}, func(a, b CIDREntry) int {
		return cmp.Or(cmp.Compare(a.Endpoint, b.Endpoint), cmp.Compare(a.Dir, b.Dir), a.Prefix.Addr().Compare(b.Prefix.Addr()),
			cmp.Compare(a.Prefix.Bits(), b.Prefix.Bits()))
	})
}

// SetEndpoint writes an endpoint's policy record (index id).
func (p *Policy) SetEndpoint(id uint32, e PolicyEndpoint) error {
	if err := p.endpoints.Put(id, &e); err != nil {
		return fmt.Errorf("write policy of endpoint %d: %w", id, err)
	}
	return nil
}

// Endpoint reads an endpoint's policy record.
func (p *Policy) Endpoint(id uint32) (PolicyEndpoint, error) {
	var e PolicyEndpoint
	if err := p.endpoints.Lookup(id, &e); err != nil {
		return e, fmt.Errorf("read policy of endpoint %d: %w", id, err)
	}
	return e, nil
}

// Stats sums an endpoint's statistics over the CPUs.
func (p *Policy) Stats(id uint32) (PolicyStats, error) {
	var perCPU []PolicyStats
	var sum PolicyStats
	if err := p.stats.Lookup(id, &perCPU); err != nil {
		return sum, fmt.Errorf("read policy statistics of endpoint %d: %w", id, err)
	}
	for _, s := range perCPU {
		for d := range 2 {
			sum.Flows[d] += s.Flows[d]
			sum.AnyFlows[d] += s.AnyFlows[d]
			sum.Denied[d] += s.Denied[d]
			sum.DeniedBytes[d] += s.DeniedBytes[d]
		}
	}
	return sum, nil
}

// ResetStats zeroes an endpoint's statistics (a new endpoint takes the id).
func (p *Policy) ResetStats(id uint32) error {
	zero := make([]PolicyStats, ebpf.MustPossibleCPU())
	if err := p.stats.Put(id, zero); err != nil {
		return fmt.Errorf("reset policy statistics of endpoint %d: %w", id, err)
	}
	return nil
}

// Config reads the node's policy config.
func (p *Policy) Config() (PolicyConfig, error) {
	var c PolicyConfig
	if err := p.config.Lookup(uint32(0), &c); err != nil {
		return c, fmt.Errorf("read policy config: %w", err)
	}
	return c, nil
}

// SetConfig writes the node's policy config.
func (p *Policy) SetConfig(c PolicyConfig) error {
	if err := p.config.Put(uint32(0), &c); err != nil {
		return fmt.Errorf("write policy config: %w", err)
	}
	return nil
}

// PutIdentity sets the identity of a peer IP.
func (p *Policy) PutIdentity(ip netip.Addr, id uint32) error {
	if !ip.Is4() {
		return fmt.Errorf("ipcache %s: not IPv4", ip)
	}
	k := IPCacheKey{IP: ip.As4()}
	if err := p.ipcache.Put(&k, &Identity{ID: id}); err != nil {
		return fmt.Errorf("put ipcache %s: %w", ip, err)
	}
	return nil
}

// DeleteIdentity removes a peer IP from the ipcache (it is the world's then).
func (p *Policy) DeleteIdentity(ip netip.Addr) error {
	if !ip.Is4() {
		return nil
	}
	k := IPCacheKey{IP: ip.As4()}
	if err := p.ipcache.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete ipcache %s: %w", ip, err)
	}
	return nil
}

// Identities reads the whole ipcache.
func (p *Policy) Identities() (map[netip.Addr]uint32, error) {
	out := map[netip.Addr]uint32{}
	var (
		k IPCacheKey
		v Identity
	)
	it := p.ipcache.Iterate()
	for it.Next(&k, &v) {
		out[netip.AddrFrom4(k.IP)] = v.ID
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("iterate ipcache: %w", err)
	}
	return out, nil
}

// DeleteFlow removes a flow from the table: its next packet is judged as
// a new flow's.
func (p *Policy) DeleteFlow(k FlowKey) error {
	if err := p.flows.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete flow: %w", err)
	}
	return nil
}

// FlowEntry is one flow of the flow table.
type FlowEntry struct {
	FlowKey
	Flow
}

// Flows reads the flow table (entries may have expired: see ExpiresNS).
func (p *Policy) Flows() ([]FlowEntry, error) {
	return listMap(p.flows, "flows", func(k FlowKey, v Flow) FlowEntry { return FlowEntry{k, v} }, func(a, b FlowEntry) int {
		return cmp.Or(netip.AddrFrom4(a.Addr[0]).Compare(netip.AddrFrom4(b.Addr[0])),
			netip.AddrFrom4(a.Addr[1]).Compare(netip.AddrFrom4(b.Addr[1])))
	})
}
