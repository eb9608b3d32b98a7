package services

import (
	"cmp"
	"errors"
	"fmt"
	"slices"

	"github.com/podvnet/podvnet/pkg/maps"
)

// Writer is the Services' maps, one map operation a call (pkg/maps).
type Writer interface {
	PutBackend(id uint32, b maps.BackendAddr, flags uint8, fresh bool) error
	DeleteBackend(id uint32) error
	PutSlot(id uint32, slot int, backendID uint32) error
	DeleteSlot(id uint32, slot int) error
	PutAffinityMatch(id, backendID uint32) error
	DeleteAffinityMatch(id, backendID uint32) error
	PutFrontend(f maps.Frontend) error
	DeleteFrontend(k maps.FrontendKey) error
}

// Pinned is what the maps held when the agent started (Syncer.Adopt).
type Pinned struct {
	Frontends       []maps.Frontend
	Backends        []maps.BackendEntry
	Slots           map[maps.SvcSlotKey]uint32 // -> backend id
	AffinityMatches []maps.AffinityMatchKey
}

// MaxBackendID is the highest backend id (PV_MAX_BACKENDS - 1: ids index
// the connection counters).
const MaxBackendID = 65535

// ErrBackendsExhausted means every backend id is in use.
var ErrBackendsExhausted = errors.New("every backend id is in use")

// Syncer writes Services into the maps, one Service at a time, and
// remembers what it wrote, so that a change writes only its difference.
// Not safe for concurrent use: one worker applies changes.
type Syncer struct {
	w    Writer
	node string
	// frontends: the programs serve Services (--service-mode=bpf); else
	// kube-proxy does, and only the conntrack filter follows them.
	frontends bool
	filter    *PortFilter

	// Frontend ids: one per backend list of a Service.
	listIDs map[listRef]uint32
	nextID  uint32
	freeIDs []uint32
	idOwner map[uint32]listRef

	// Backends are shared between the Services that use the same address,
	// port and protocol, counted by reference.
	backends  map[maps.BackendAddr]*backend
	backendID map[uint32]maps.BackendAddr
	nextBE    uint32
	freeBEs   []uint32

	written map[Key]*written

	// What the agent found pinned at start and has not claimed yet
	// (Adopt, SweepAdopted).
	adopted *adoption
}

type listRef struct {
	svc  Key
	list ListKey
}

type backend struct {
	id    uint32
	refs  int
	flags uint8
}

// written is what the maps hold for one Service.
type written struct {
	frontends map[maps.FrontendKey]maps.Frontend
	lists     map[uint32][]uint32 // id -> backend ids by slot (1-based in the map)
	affinity  map[uint32]bool     // ids whose affinity pairs are written
	held      map[maps.BackendAddr]bool
}

type adoption struct {
	frontends map[maps.FrontendKey]maps.Frontend
	backends  map[maps.BackendAddr]maps.BackendEntry
	slots     map[uint32]int // id -> highest slot pinned
	slotBE    map[maps.SvcSlotKey]uint32
	matches   map[maps.AffinityMatchKey]bool
}

// NewSyncer writes through w and filter for the node called node: the
// Services' frontends and backends when frontends is set (the programs
// serve Services), the conntrack bits of their ports otherwise.
func NewSyncer(w Writer, filter *PortFilter, node string, frontends bool) *Syncer {
	return &Syncer{
		w: w, node: node, frontends: frontends, filter: filter,
		listIDs: map[listRef]uint32{}, idOwner: map[uint32]listRef{}, nextID: 1,
		backends: map[maps.BackendAddr]*backend{}, backendID: map[uint32]maps.BackendAddr{}, nextBE: 1,
		written: map[Key]*written{},
	}
}

// Adopt takes in what an earlier agent left pinned: its ids are reused for
// the same frontends and backends (so a restart rewrites nothing that did
// not change, and connection counts go on), and nothing of it is removed
// until SweepAdopted, once every Service has been applied: until then the
// programs go on serving from it.
func (s *Syncer) Adopt(p Pinned) {
	a := &adoption{frontends: map[maps.FrontendKey]maps.Frontend{}, backends: map[maps.BackendAddr]maps.BackendEntry{},
		slots: map[uint32]int{}, slotBE: p.Slots, matches: map[maps.AffinityMatchKey]bool{}}
	for _, f := range p.Frontends {
		a.frontends[f.Key()] = f
		s.reserveID(f.ID)
	}
	for _, b := range p.Backends {
		a.backends[b.BackendAddr] = b
		s.backendID[b.ID] = b.BackendAddr
		s.nextBE = max(s.nextBE, b.ID+1)
	}
	for k := range p.Slots {
		a.slots[k.ID] = max(a.slots[k.ID], int(k.Slot))
		s.reserveID(k.ID)
	}
	for _, m := range p.AffinityMatches {
		a.matches[m] = true
	}
	s.adopted = a
}

func (s *Syncer) reserveID(id uint32) {
	if _, ok := s.idOwner[id]; !ok {
		s.idOwner[id] = listRef{} // pinned, nobody's yet
	}
	s.nextID = max(s.nextID, id+1)
}

// SweepAdopted removes what an earlier agent pinned and no Service claimed:
// frontends first, then their slots, affinity pairs and backends.
func (s *Syncer) SweepAdopted() error {
	a := s.adopted
	if a == nil {
		return nil
	}
	var errs []error
	for k := range a.frontends {
		errs = append(errs, s.w.DeleteFrontend(k))
	}
	for id, max := range a.slots {
		if owner, ok := s.idOwner[id]; ok && owner != (listRef{}) {
			continue // claimed: its writer deletes the excess slots
		}
		for slot := 1; slot <= max; slot++ {
			errs = append(errs, s.w.DeleteSlot(id, slot))
		}
		delete(s.idOwner, id)
		s.freeIDs = append(s.freeIDs, id)
	}
	for m := range a.matches {
		errs = append(errs, s.w.DeleteAffinityMatch(m.ID, m.BackendID))
	}
	for addr, b := range a.backends {
		if _, claimed := s.backends[addr]; claimed {
			continue
		}
		errs = append(errs, s.w.DeleteBackend(b.ID))
		delete(s.backendID, b.ID)
		s.freeBEs = append(s.freeBEs, b.ID)
	}
	s.adopted = nil
	return errors.Join(errs...)
}

// listID returns the frontend id of a Service's list, taking the id a
// pinned frontend of the list had when it is still free.
func (s *Syncer) listID(ref listRef, fronts []FrontendSpec) uint32 {
	if id, ok := s.listIDs[ref]; ok {
		return id
	}
	var id uint32
	if s.adopted != nil {
		for _, f := range fronts {
			if f.List != ref.list {
				continue
			}
			if old, ok := s.adopted.frontends[f.Key]; ok && s.idOwner[old.ID] == (listRef{}) {
				id = old.ID
				break
			}
		}
	}
	if id == 0 {
		if n := len(s.freeIDs); n > 0 {
			id, s.freeIDs = s.freeIDs[n-1], s.freeIDs[:n-1]
		} else {
			id = s.nextID
			s.nextID++
		}
	}
	s.listIDs[ref] = id
	s.idOwner[id] = ref
	return id
}

func (s *Syncer) releaseList(ref listRef) {
	id, ok := s.listIDs[ref]
	if !ok {
		return
	}
	delete(s.listIDs, ref)
	delete(s.idOwner, id)
	s.freeIDs = append(s.freeIDs, id)
}

// acquire takes a reference on a backend, writing it if it is new to the
// maps (or its flags changed).
func (s *Syncer) acquire(b BackendRef) (uint32, error) {
	var flags uint8
	if b.Local {
		flags = maps.BackendLocal
	}
	if be, ok := s.backends[b.BackendAddr]; ok {
		be.refs++
		if be.flags != flags {
			if err := s.w.PutBackend(be.id, b.BackendAddr, flags, false); err != nil {
				return 0, err
			}
			be.flags = flags
		}
		return be.id, nil
	}
	var id uint32
	fresh := true
	if old, ok := s.adoptedBackend(b.BackendAddr); ok {
		if old.Flags == flags {
			// As pinned: nothing to write, its connection count goes on.
			s.backends[b.BackendAddr] = &backend{id: old.ID, refs: 1, flags: flags}
			return old.ID, nil
		}
		id, fresh = old.ID, false
	} else if n := len(s.freeBEs); n > 0 {
		id, s.freeBEs = s.freeBEs[n-1], s.freeBEs[:n-1]
	} else {
		for s.nextBE <= MaxBackendID && s.backendID[s.nextBE] != (maps.BackendAddr{}) {
			s.nextBE++
		}
		if s.nextBE > MaxBackendID {
			return 0, fmt.Errorf("backend %s:%d: %w (%d)", b.Addr, b.Port, ErrBackendsExhausted, MaxBackendID)
		}
		id = s.nextBE
		s.nextBE++
	}
	if err := s.w.PutBackend(id, b.BackendAddr, flags, fresh); err != nil {
		s.freeBEs = append(s.freeBEs, id)
		return 0, err
	}
	s.backends[b.BackendAddr] = &backend{id: id, refs: 1, flags: flags}
	s.backendID[id] = b.BackendAddr
	return id, nil
}

// adoptedList is the backends an earlier agent pinned in id's slots, or
// nil.
func (s *Syncer) adoptedList(id uint32) []uint32 {
	if s.adopted == nil {
		return nil
	}
	var out []uint32
	for slot := 1; slot <= s.adopted.slots[id]; slot++ {
		out = append(out, s.adopted.slotBE[maps.SvcSlotKey{ID: id, Slot: uint32(slot)}])
	}
	return out
}

func (s *Syncer) adoptedMatch(id, bid uint32) bool {
	return s.adopted != nil && s.adopted.matches[maps.AffinityMatchKey{ID: id, BackendID: bid}]
}

func (s *Syncer) adoptedBackend(addr maps.BackendAddr) (maps.BackendEntry, bool) {
	if s.adopted == nil {
		return maps.BackendEntry{}, false
	}
	b, ok := s.adopted.backends[addr]
	return b, ok
}

// release drops a reference; the last one deletes the backend (after every
// slot naming it is gone) and returns its id.
func (s *Syncer) release(addr maps.BackendAddr) (uint32, error) {
	be, ok := s.backends[addr]
	if !ok {
		return 0, nil
	}
	if be.refs--; be.refs > 0 {
		return 0, nil
	}
	if err := s.w.DeleteBackend(be.id); err != nil {
		be.refs++
		return 0, err
	}
	delete(s.backends, addr)
	delete(s.backendID, be.id)
	s.freeBEs = append(s.freeBEs, be.id)
	return be.id, nil
}

// Apply makes the maps hold svc (nil: deleted) with the endpoints of its
// slices, and returns the ids of backends it removed (their translated
// flows can go). Only this Service's entries are written, in this order:
// new backends; slots (overwritten in place, grown); affinity pairs;
// frontends (id and count in one update); removed frontends; slots beyond
// the new counts; stale affinity pairs; unused backends. A program reading
// at any moment finds every slot below a count it sees pointing at a
// backend that exists.
func (s *Syncer) Apply(key Key, svc *Service, eps []*EndpointSlice) (removed []uint32, err error) {
	commit, err := s.filter.Set("service "+key.String(), s.ports(svc, eps))
	if err != nil {
		return nil, fmt.Errorf("service %s: %w", key, err)
	}
	if !s.frontends {
		return nil, commit()
	}
	defer func() {
		if err == nil {
			err = commit()
		}
	}()
	var d Desired
	if svc != nil {
		d = Compute(svc, eps, s.node)
	}
	old := s.written[key]
	if old == nil {
		old = &written{frontends: map[maps.FrontendKey]maps.Frontend{}, lists: map[uint32][]uint32{}, affinity: map[uint32]bool{},
			held: map[maps.BackendAddr]bool{}}
	}
	next := &written{frontends: map[maps.FrontendKey]maps.Frontend{}, lists: map[uint32][]uint32{}, affinity: map[uint32]bool{},
		held: map[maps.BackendAddr]bool{}}
	// On failure the next attempt starts from what may be written: both
	// states' backends stay held, both states' slots are cleaned.
	defer func() {
		if err != nil {
			for a := range next.held {
				if old.held[a] {
					s.backends[a].refs-- // taken twice: once is enough
				}
				old.held[a] = true
			}
			for id, l := range next.lists {
				if len(l) > len(old.lists[id]) {
					old.lists[id] = l
				}
			}
			s.written[key] = old
		}
	}()

	// Lists: ids, backends, slots.
	affinity := svc != nil && svc.AffinityTimeout > 0
	listOf := map[ListKey]uint32{}
	taken := map[maps.BackendAddr]uint32{} // one reference per Service and backend
	for _, lk := range sortedLists(d.Lists) {
		refs := d.Lists[lk]
		ref := listRef{key, lk}
		id := s.listID(ref, d.Frontends)
		listOf[lk] = id
		ids := make([]uint32, 0, len(refs))
		for _, b := range refs {
			bid, ok := taken[b.BackendAddr]
			if !ok {
				if bid, err = s.acquire(b); err != nil {
					return nil, fmt.Errorf("service %s: %w", key, err)
				}
				taken[b.BackendAddr] = bid
				next.held[b.BackendAddr] = true
			}
			ids = append(ids, bid)
		}
		next.lists[id] = ids
		have := old.lists[id]
		if len(have) == 0 {
			have = s.adoptedList(id)
		}
		for i, bid := range ids {
			if i < len(have) && have[i] == bid {
				continue
			}
			if err := s.w.PutSlot(id, i+1, bid); err != nil {
				return nil, fmt.Errorf("service %s: %w", key, err)
			}
		}
		if affinity {
			next.affinity[id] = true
			for _, bid := range ids {
				if old.affinity[id] && slices.Contains(have, bid) || s.adoptedMatch(id, bid) {
					continue
				}
				if err := s.w.PutAffinityMatch(id, bid); err != nil {
					return nil, fmt.Errorf("service %s: %w", key, err)
				}
			}
		}
	}

	// Frontends.
	for _, f := range d.Frontends {
		v := maps.Frontend{Addr: f.Key.Addr, Port: f.Key.Port, Proto: f.Key.Proto, Scope: f.Key.Scope,
			ID: listOf[f.List], Count: uint16(len(d.Lists[f.List])), Flags: f.Flags, AffinityTimeout: f.AffinityTimeout}
		next.frontends[f.Key] = v
		prev, ok := old.frontends[f.Key]
		if s.adopted != nil && !ok {
			prev, ok = s.adopted.frontends[f.Key]
			delete(s.adopted.frontends, f.Key) // claimed: not the sweep's
		}
		if ok && prev == v {
			continue
		}
		if err := s.w.PutFrontend(v); err != nil {
			return nil, fmt.Errorf("service %s: %w", key, err)
		}
	}
	for k := range old.frontends {
		if _, keep := next.frontends[k]; !keep {
			if err := s.w.DeleteFrontend(k); err != nil {
				return nil, fmt.Errorf("service %s: %w", key, err)
			}
		}
	}

	// What the new counts no longer reach.
	for id, have := range old.lists {
		want := next.lists[id]
		from := len(want) + 1
		to := len(have)
		if s.adopted != nil {
			to = max(to, s.adopted.slots[id])
		}
		for slot := from; slot <= to; slot++ {
			if err := s.w.DeleteSlot(id, slot); err != nil {
				return nil, fmt.Errorf("service %s: %w", key, err)
			}
		}
		if old.affinity[id] {
			for _, bid := range have {
				if next.affinity[id] && slices.Contains(want, bid) {
					continue
				}
				if err := s.w.DeleteAffinityMatch(id, bid); err != nil {
					return nil, fmt.Errorf("service %s: %w", key, err)
				}
			}
		}
	}
	if s.adopted != nil {
		// Slots and pairs of claimed ids are this writer's now.
		for id := range next.lists {
			if to := s.adopted.slots[id]; to > len(next.lists[id]) && len(old.lists[id]) == 0 {
				for slot := len(next.lists[id]) + 1; slot <= to; slot++ {
					if err := s.w.DeleteSlot(id, slot); err != nil {
						return nil, fmt.Errorf("service %s: %w", key, err)
					}
				}
			}
			delete(s.adopted.slots, id)
			for m := range s.adopted.matches {
				if m.ID == id && !(next.affinity[id] && slices.Contains(next.lists[id], m.BackendID)) {
					if err := s.w.DeleteAffinityMatch(m.ID, m.BackendID); err != nil {
						return nil, fmt.Errorf("service %s: %w", key, err)
					}
				}
				if m.ID == id {
					delete(s.adopted.matches, m)
				}
			}
		}
	}
	for ref := range s.listIDs {
		if ref.svc != key {
			continue
		}
		if _, keep := d.Lists[ref.list]; !keep {
			s.releaseList(ref)
		}
	}

	// Backends no list of this Service names any more.
	for a := range old.held {
		if next.held[a] {
			s.backends[a].refs-- // taken again above: one reference per Service
			continue
		}
		id, err := s.release(a)
		if err != nil {
			return nil, fmt.Errorf("service %s: %w", key, err)
		}
		if id != 0 {
			removed = append(removed, id)
		}
	}
	if svc == nil {
		delete(s.written, key)
	} else {
		s.written[key] = next
	}
	return removed, nil
}

// sortedLists orders a Service's lists, so that ids are handed out the same
// way every time.
func sortedLists(l map[ListKey][]BackendRef) []ListKey {
	keys := make([]ListKey, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b ListKey) int {
		return cmp.Or(cmp.Compare(a.Port, b.Port), cmp.Compare(a.Proto, b.Proto), compareBool(a.Local, b.Local))
	})
	return keys
}

func compareBool(a, b bool) int {
	switch {
	case a == b:
		return 0
	case !a:
		return -1
	}
	return 1
}

// ports is what a Service contributes to the source-port filter: the ports
// its endpoints serve on (whatever their conditions, so that the bit is
// there before an endpoint turns ready and kube-proxy can DNAT to it) and,
// under kube-proxy, its numeric target ports too (known from the Service
// before its EndpointSlice exists). In service mode bpf they are our own
// translation's (svc bits); under kube-proxy, conntrack's (ct bits).
func (s *Syncer) ports(svc *Service, eps []*EndpointSlice) PortSet {
	if svc == nil {
		return PortSet{}
	}
	seen := map[ProtoPort]bool{}
	var out []ProtoPort
	add := func(p ProtoPort) {
		if p.Port != 0 && !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	for _, e := range eps {
		for _, p := range e.Ports {
			add(ProtoPort{p.Proto, p.Port})
		}
	}
	if s.frontends {
		return PortSet{Svc: out}
	}
	for _, p := range svc.Ports {
		switch {
		case p.TargetPort != 0:
			add(ProtoPort{p.Proto, p.TargetPort})
		case p.TargetPortName == "":
			add(ProtoPort{p.Proto, p.Port}) // targetPort defaults to port
		}
	}
	return PortSet{CT: out}
}
