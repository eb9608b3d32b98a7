package maps

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/cilium/ebpf"

	"github.com/podvnet/podvnet/internal/ipproto"
)

// Go mirrors of the Services' structs in bpf/include/podvnet.h (keep in
// sync: TestLayoutMatchesBTF). Addresses and ports in network order.

// SvcKey mirrors struct pv_svc_key: a frontend.
type SvcKey struct {
	Addr  [4]byte // 0.0.0.0: a NodePort, on every node IP
	Port  [2]byte
	Proto uint8
	Scope uint8
}

// Svc mirrors struct pv_svc: the frontend's backends and behaviour.
type Svc struct {
	ID              uint32
	Count           uint16
	Flags           uint16
	AffinityTimeout uint32
}

// SvcSlotKey mirrors struct pv_svc_slot_key.
type SvcSlotKey struct {
	ID   uint32
	Slot uint32
}

// Backend mirrors struct pv_backend.
type Backend struct {
	Addr  [4]byte
	Port  [2]byte
	Proto uint8
	Flags uint8
}

// AffinityKey mirrors struct pv_affinity_key.
type AffinityKey struct {
	Client uint64
	ID     uint32
	Pad    uint32
}

// Affinity mirrors struct pv_affinity.
type Affinity struct {
	LastUsedNS uint64
	BackendID  uint32
	Pad        uint32
}

// AffinityMatchKey mirrors struct pv_affinity_match_key.
type AffinityMatchKey struct {
	ID        uint32
	BackendID uint32
}

// SockKey mirrors struct pv_sock_key.
type SockKey struct {
	Cookie uint64
	Addr   [4]byte
	Port   [2]byte
	Pad    uint16
}

// SockRevNAT mirrors struct pv_sock_revnat.
type SockRevNAT struct {
	Addr [4]byte
	Port [2]byte
	Pad  uint16
	ID   uint32
}

// NATKey mirrors struct pv_nat_key: one direction of a flow as it arrives.
type NATKey struct {
	Saddr [4]byte
	Daddr [4]byte
	Sport [2]byte
	Dport [2]byte
	Proto uint8
	Pad   [3]uint8
}

// NAT mirrors struct pv_nat: what that direction's packets become.
type NAT struct {
	Saddr     [4]byte
	Daddr     [4]byte
	Sport     [2]byte
	Dport     [2]byte
	ID        uint32
	BackendID uint32
	Flags     uint32
}

// SvcConfig mirrors struct pv_svc_config.
type SvcConfig struct {
	HostIfindex uint32
	HostMAC     [6]byte
	NATPortMin  uint16 // host order
	NATPortMax  uint16
	Pad         uint16
}

// PortBits mirrors struct pv_port_bits: one word of the source-port filter.
type PortBits struct {
	Svc uint64
	CT  uint64
}

// Frontend scopes (PV_SVC_SCOPE_*).
const (
	ScopeExternal uint8 = 0 // from outside the cluster (from_nic)
	ScopeInternal uint8 = 1 // from pods and the node
)

// Frontend flags (PV_SVC_F_*).
const (
	SvcNodePort uint16 = 1 << 0
	SvcExternal uint16 = 1 << 1
	SvcLocal    uint16 = 1 << 2
	SvcAffinity uint16 = 1 << 3
	SvcDrop     uint16 = 1 << 4
)

// BackendLocal (PV_BE_F_LOCAL): the backend is a pod of this node.
const BackendLocal uint8 = 1 << 0

// NAT entry flags (PV_NAT_F_*).
const (
	NATReply  uint32 = 1 << 0
	NATToHost uint32 = 1 << 1
)

// PortFilterSlots is the size of svc_ports, PortsUDP the first UDP word.
const (
	PortFilterSlots = 2048
	PortsUDP        = 1024
)

// Map names of the Services (bpf/lib/svc_maps.h).
const (
	SvcFrontendsMap     = "svc_frontends"
	SvcSlotsMap         = "svc_slots"
	SvcBackendsMap      = "svc_backends"
	SvcBackendConnsMap  = "svc_backend_conns"
	SvcAffinityMap      = "svc_affinity"
	SvcAffinityMatchMap = "svc_affinity_match"
	SvcSockRevNATMap    = "svc_sock_revnat"
	SvcNATMap           = "svc_nat"
	SvcNodesMap         = "svc_nodes"
	SvcConfigMap        = "svc_config"
	SvcPortsMap         = "svc_ports"
)

var serviceMapNames = []string{SvcFrontendsMap, SvcSlotsMap, SvcBackendsMap, SvcBackendConnsMap, SvcAffinityMap,
	SvcAffinityMatchMap, SvcSockRevNATMap, SvcNATMap, SvcNodesMap, SvcConfigMap, SvcPortsMap}

// Frontend is one entry of svc_frontends, for people and for the writer.
type Frontend struct {
	Addr            netip.Addr // 0.0.0.0: a NodePort
	Port            uint16
	Proto           uint8
	Scope           uint8
	ID              uint32
	Count           uint16
	Flags           uint16
	AffinityTimeout uint32
}

// FrontendKey is a frontend's identity (its map key).
type FrontendKey struct {
	Addr  netip.Addr
	Port  uint16
	Proto uint8
	Scope uint8
}

// Key is the frontend's identity.
func (f Frontend) Key() FrontendKey {
	return FrontendKey{Addr: f.Addr, Port: f.Port, Proto: f.Proto, Scope: f.Scope}
}

func (k FrontendKey) raw() SvcKey {
	r := SvcKey{Proto: k.Proto, Scope: k.Scope}
	if k.Addr.Is4() {
		r.Addr = k.Addr.As4()
	}
	binary.BigEndian.PutUint16(r.Port[:], k.Port)
	return r
}

// String is addr:port/proto (scope), with * for a NodePort.
func (k FrontendKey) String() string {
	addr := k.Addr.String()
	if k.Addr == netip.IPv4Unspecified() {
		addr = "*"
	}
	scope := "internal"
	if k.Scope == ScopeExternal {
		scope = "external"
	}
	return fmt.Sprintf("%s:%d/%s (%s)", addr, k.Port, ipproto.Name(k.Proto), scope)
}

// BackendAddr is a backend's address, port and protocol.
type BackendAddr struct {
	Addr  netip.Addr
	Port  uint16
	Proto uint8
}

// BackendEntry is one entry of svc_backends with its connection count.
type BackendEntry struct {
	ID uint32
	BackendAddr
	Flags uint8
	Conns uint64
}

// Services is the Services' maps. The writer (pkg/services) orders its
// calls so that the programs never see a slot pointing at a missing
// backend; each method here is one map operation or a walk.
type Services struct {
	frontends, slots, backends, conns, affinityMatch, nat, nodes, config, ports *ebpf.Map
}

// NewServices wraps the opened Services' maps, keyed by name.
func NewServices(m map[string]*ebpf.Map) *Services {
	return &Services{
		frontends: m[SvcFrontendsMap], slots: m[SvcSlotsMap], backends: m[SvcBackendsMap], conns: m[SvcBackendConnsMap],
		affinityMatch: m[SvcAffinityMatchMap], nat: m[SvcNATMap], nodes: m[SvcNodesMap], config: m[SvcConfigMap],
		ports: m[SvcPortsMap],
	}
}

// PutBackend writes a backend and, for a new one, zeroes its connection
// count (the id may have served another backend before).
func (s *Services) PutBackend(id uint32, b BackendAddr, flags uint8, fresh bool) error {
	if !b.Addr.Is4() {
		return fmt.Errorf("backend %s: not an IPv4 address", b.Addr)
	}
	v := Backend{Addr: b.Addr.As4(), Proto: b.Proto, Flags: flags}
	binary.BigEndian.PutUint16(v.Port[:], b.Port)
	if fresh {
		if err := s.conns.Put(id, uint64(0)); err != nil {
			return fmt.Errorf("reset connections of backend %d: %w", id, err)
		}
	}
	if err := s.backends.Put(id, &v); err != nil {
		return fmt.Errorf("write backend %d (%s:%d): %w", id, b.Addr, b.Port, err)
	}
	return nil
}

// DeleteBackend removes a backend.
func (s *Services) DeleteBackend(id uint32) error {
	return deleteKey(s.backends, id, fmt.Sprintf("backend %d", id))
}

// PutSlot points slot (1-based) of frontend id at a backend.
func (s *Services) PutSlot(id uint32, slot int, backendID uint32) error {
	if err := s.slots.Put(SvcSlotKey{ID: id, Slot: uint32(slot)}, backendID); err != nil {
		return fmt.Errorf("write slot %d of service %d: %w", slot, id, err)
	}
	return nil
}

// DeleteSlot removes a slot.
func (s *Services) DeleteSlot(id uint32, slot int) error {
	return deleteKey(s.slots, SvcSlotKey{ID: id, Slot: uint32(slot)}, fmt.Sprintf("slot %d of service %d", slot, id))
}

// PutAffinityMatch says backendID serves id (session affinity follows it).
func (s *Services) PutAffinityMatch(id, backendID uint32) error {
	if err := s.affinityMatch.Put(AffinityMatchKey{ID: id, BackendID: backendID}, uint8(1)); err != nil {
		return fmt.Errorf("write affinity match %d/%d: %w", id, backendID, err)
	}
	return nil
}

// DeleteAffinityMatch says backendID no longer serves id.
func (s *Services) DeleteAffinityMatch(id, backendID uint32) error {
	return deleteKey(s.affinityMatch, AffinityMatchKey{ID: id, BackendID: backendID}, fmt.Sprintf("affinity match %d/%d", id, backendID))
}

// PutFrontend writes a frontend, its id and count in one update.
func (s *Services) PutFrontend(f Frontend) error {
	v := Svc{ID: f.ID, Count: f.Count, Flags: f.Flags, AffinityTimeout: f.AffinityTimeout}
	if err := s.frontends.Put(f.Key().raw(), &v); err != nil {
		return fmt.Errorf("write frontend %s: %w", f.Key(), err)
	}
	return nil
}

// DeleteFrontend removes a frontend.
func (s *Services) DeleteFrontend(k FrontendKey) error {
	return deleteKey(s.frontends, k.raw(), "frontend "+k.String())
}

// Frontends lists svc_frontends, sorted by address, port, protocol, scope.
func (s *Services) Frontends() ([]Frontend, error) {
	return listMap(s.frontends, "frontends", func(k SvcKey, v Svc) Frontend {
		return Frontend{Addr: netip.AddrFrom4(k.Addr), Port: binary.BigEndian.Uint16(k.Port[:]), Proto: k.Proto, Scope: k.Scope,
			ID: v.ID, Count: v.Count, Flags: v.Flags, AffinityTimeout: v.AffinityTimeout}
	}, func(a, b Frontend) int {
		return cmp.Or(a.Addr.Compare(b.Addr), cmp.Compare(a.Port, b.Port), cmp.Compare(a.Proto, b.Proto), cmp.Compare(a.Scope, b.Scope))
	})
}

// LookupFrontend reads one frontend; false when the map has none for k.
func (s *Services) LookupFrontend(k FrontendKey) (Frontend, bool, error) {
	var v Svc
	err := s.frontends.Lookup(k.raw(), &v)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return Frontend{}, false, nil
	}
	if err != nil {
		return Frontend{}, false, fmt.Errorf("read frontend %s: %w", k, err)
	}
	return Frontend{Addr: k.Addr, Port: k.Port, Proto: k.Proto, Scope: k.Scope, ID: v.ID, Count: v.Count, Flags: v.Flags,
		AffinityTimeout: v.AffinityTimeout}, true, nil
}

// Slots returns the backend ids of id's slots 1..count (0 for a missing one).
func (s *Services) Slots(id uint32, count int) ([]uint32, error) {
	out := make([]uint32, count)
	for i := range out {
		err := s.slots.Lookup(SvcSlotKey{ID: id, Slot: uint32(i + 1)}, &out[i])
		if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil, fmt.Errorf("read slot %d of service %d: %w", i+1, id, err)
		}
	}
	return out, nil
}

// Backends lists svc_backends with their connection counts, by id.
func (s *Services) Backends() ([]BackendEntry, error) {
	out, err := listMap(s.backends, "backends", func(id uint32, b Backend) BackendEntry {
		return BackendEntry{ID: id, BackendAddr: BackendAddr{Addr: netip.AddrFrom4(b.Addr), Port: binary.BigEndian.Uint16(b.Port[:]), Proto: b.Proto}, Flags: b.Flags}
	}, func(a, b BackendEntry) int { return cmp.Compare(a.ID, b.ID) })
	if err != nil {
		return nil, err
	}
	for i := range out {
		if err := s.conns.Lookup(out[i].ID, &out[i].Conns); err != nil {
			return nil, fmt.Errorf("read connections of backend %d: %w", out[i].ID, err)
		}
	}
	return out, nil
}

// SlotEntries returns every slot written with the backend it names, for
// an agent adopting what an earlier one pinned.
func (s *Services) SlotEntries() (map[SvcSlotKey]uint32, error) {
	out := map[SvcSlotKey]uint32{}
	var (
		k SvcSlotKey
		v uint32
	)
	it := s.slots.Iterate()
	for it.Next(&k, &v) {
		out[k] = v
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("iterate slots: %w", err)
	}
	return out, nil
}

// AffinityMatches lists every (id, backend) affinity pair written.
func (s *Services) AffinityMatches() ([]AffinityMatchKey, error) {
	return listMap(s.affinityMatch, "affinity matches", func(k AffinityMatchKey, _ uint8) AffinityMatchKey { return k },
		func(a, b AffinityMatchKey) int {
			return cmp.Or(cmp.Compare(a.ID, b.ID), cmp.Compare(a.BackendID, b.BackendID))
		})
}

// SetNodes makes svc_nodes hold exactly the cluster's node IPs (local: this
// node's), new ones first.
func (s *Services) SetNodes(ips []netip.Addr, local netip.Addr) error {
	want := map[[4]byte]uint32{}
	for _, ip := range ips {
		if ip.Is4() {
			want[ip.As4()] = 0
		}
	}
	if local.Is4() {
		want[local.As4()] = 1
	}
	for k, v := range want {
		if err := s.nodes.Put(k, v); err != nil {
			return fmt.Errorf("write node %s: %w", netip.AddrFrom4(k), err)
		}
	}
	have, err := listMap(s.nodes, "nodes", func(k [4]byte, _ uint32) [4]byte { return k }, func(a, b [4]byte) int { return 0 })
	if err != nil {
		return err
	}
	for _, k := range have {
		if _, ok := want[k]; !ok {
			if err := deleteKey(s.nodes, k, "node "+netip.AddrFrom4(k).String()); err != nil {
				return err
			}
		}
	}
	return nil
}

// SetConfig writes svc_config.
func (s *Services) SetConfig(hostIfindex int, hostMAC net.HardwareAddr, natMin, natMax uint16) error {
	c := SvcConfig{HostIfindex: uint32(hostIfindex), NATPortMin: natMin, NATPortMax: natMax}
	copy(c.HostMAC[:], hostMAC)
	if err := s.config.Put(uint32(0), &c); err != nil {
		return fmt.Errorf("write service config: %w", err)
	}
	return nil
}

// Config reads svc_config.
func (s *Services) Config() (SvcConfig, error) {
	var c SvcConfig
	if err := s.config.Lookup(uint32(0), &c); err != nil {
		return c, fmt.Errorf("read service config: %w", err)
	}
	return c, nil
}

// PortSlot is where a (protocol, port) sits in svc_ports, with its bit;
// false for a protocol the filter does not cover.
func PortSlot(proto uint8, port uint16) (slot uint32, bit uint64, ok bool) {
	slot = uint32(port >> 6)
	switch proto {
	case 6:
	case 17:
		slot += PortsUDP
	default:
		return 0, 0, false
	}
	return slot, 1 << (port & 63), true
}

// PortWords reads the whole svc_ports filter.
func (s *Services) PortWords() ([PortFilterSlots]PortBits, error) {
	var out [PortFilterSlots]PortBits
	for i := range out {
		if err := s.ports.Lookup(uint32(i), &out[i]); err != nil {
			return out, fmt.Errorf("read port filter word %d: %w", i, err)
		}
	}
	return out, nil
}

// PutPortWord writes one word of svc_ports.
func (s *Services) PutPortWord(slot uint32, w PortBits) error {
	if err := s.ports.Put(slot, &w); err != nil {
		return fmt.Errorf("write port filter word %d: %w", slot, err)
	}
	return nil
}

// NATFlow is one direction of a flow in svc_nat.
type NATFlow struct {
	Key NATKey
	NAT
}

// NATFlows lists svc_nat.
func (s *Services) NATFlows() ([]NATFlow, error) {
	return listMap(s.nat, "translated flows", func(k NATKey, v NAT) NATFlow { return NATFlow{Key: k, NAT: v} },
		func(a, b NATFlow) int { return cmp.Compare(a.BackendID, b.BackendID) })
}

// DeleteNATFlow removes one direction of a flow.
func (s *Services) DeleteNATFlow(k NATKey) error {
	return deleteKey(s.nat, k, "translated flow")
}

// deleteKey deletes k; a key already gone is not an error.
func deleteKey(m *ebpf.Map, k any, what string) error {
	if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete %s: %w", what, err)
	}
	return nil
}
