package services

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/podvnet/podvnet/pkg/maps"
)

// fakeMaps is the Services' maps in memory. After every operation it checks
// what a program could read at that moment: every slot below a frontend's
// count names a backend that exists.
type fakeMaps struct {
	t         *testing.T
	frontends map[maps.FrontendKey]maps.Frontend
	slots     map[maps.SvcSlotKey]uint32
	backends  map[uint32]maps.BackendAddr
	flags     map[uint32]uint8
	matches   map[maps.AffinityMatchKey]bool
	words     map[uint32]maps.PortBits
	ops       []string
}

func newFakeMaps(t *testing.T) *fakeMaps {
	return &fakeMaps{t: t, frontends: map[maps.FrontendKey]maps.Frontend{}, slots: map[maps.SvcSlotKey]uint32{},
		backends: map[uint32]maps.BackendAddr{}, flags: map[uint32]uint8{}, matches: map[maps.AffinityMatchKey]bool{},
		words: map[uint32]maps.PortBits{}}
}

// op records an operation and checks the state a program could read now:
// every slot below a count names a backend that exists, and every
// backend's port has its reply bit.
func (f *fakeMaps) op(format string, args ...any) {
	f.ops = append(f.ops, fmt.Sprintf(format, args...))
	for _, fe := range f.frontends {
		for slot := 1; slot <= int(fe.Count); slot++ {
			bid, ok := f.slots[maps.SvcSlotKey{ID: fe.ID, Slot: uint32(slot)}]
			if !ok {
				f.t.Fatalf("after %s: frontend %s (id %d, count %d) has no slot %d", f.ops[len(f.ops)-1], fe.Key(), fe.ID, fe.Count, slot)
			}
			b, ok := f.backends[bid]
			if !ok {
				f.t.Fatalf("after %s: slot %d of frontend %s names backend %d, which does not exist", f.ops[len(f.ops)-1], slot, fe.Key(), bid)
			}
			if ps, bit, _ := maps.PortSlot(b.Proto, b.Port); f.words[ps].Svc&bit == 0 {
				f.t.Fatalf("after %s: frontend %s reaches %s:%d, whose replies the filter does not pass", f.ops[len(f.ops)-1], fe.Key(), b.Addr, b.Port)
			}
		}
	}
}

func (f *fakeMaps) PutBackend(id uint32, b maps.BackendAddr, flags uint8, fresh bool) error {
	if old, ok := f.backends[id]; ok && old != b {
		f.t.Fatalf("backend %d rewritten from %v to %v while in use", id, old, b)
	}
	f.backends[id], f.flags[id] = b, flags
	f.op("put backend %d", id)
	return nil
}

func (f *fakeMaps) DeleteBackend(id uint32) error {
	delete(f.backends, id)
	f.op("delete backend %d", id)
	return nil
}

func (f *fakeMaps) PutSlot(id uint32, slot int, bid uint32) error {
	f.slots[maps.SvcSlotKey{ID: id, Slot: uint32(slot)}] = bid
	f.op("put slot %d/%d", id, slot)
	return nil
}

func (f *fakeMaps) DeleteSlot(id uint32, slot int) error {
	delete(f.slots, maps.SvcSlotKey{ID: id, Slot: uint32(slot)})
	f.op("delete slot %d/%d", id, slot)
	return nil
}

func (f *fakeMaps) PutAffinityMatch(id, bid uint32) error {
	f.matches[maps.AffinityMatchKey{ID: id, BackendID: bid}] = true
	f.op("put match %d/%d", id, bid)
	return nil
}

func (f *fakeMaps) DeleteAffinityMatch(id, bid uint32) error {
	delete(f.matches, maps.AffinityMatchKey{ID: id, BackendID: bid})
	f.op("delete match %d/%d", id, bid)
	return nil
}

func (f *fakeMaps) PutFrontend(fe maps.Frontend) error {
	f.frontends[fe.Key()] = fe
	f.op("put frontend %s", fe.Key())
	return nil
}

func (f *fakeMaps) DeleteFrontend(k maps.FrontendKey) error {
	delete(f.frontends, k)
	f.op("delete frontend %s", k)
	return nil
}

func (f *fakeMaps) PutPortWord(slot uint32, w maps.PortBits) error {
	f.words[slot] = w
	f.op("put port word %d", slot)
	return nil
}

// backendsOf returns the backends a frontend's slots name, in slot order.
func (f *fakeMaps) backendsOf(k maps.FrontendKey) []netip.AddrPort {
	fe, ok := f.frontends[k]
	if !ok {
		return nil
	}
	out := []netip.AddrPort{}
	for slot := 1; slot <= int(fe.Count); slot++ {
		b := f.backends[f.slots[maps.SvcSlotKey{ID: fe.ID, Slot: uint32(slot)}]]
		out = append(out, netip.AddrPortFrom(b.Addr, b.Port))
	}
	return out
}

// pinned is what the fake holds, as an agent finds it at start.
func (f *fakeMaps) pinned() Pinned {
	var p Pinned
	for _, fe := range f.frontends {
		p.Frontends = append(p.Frontends, fe)
	}
	for id, b := range f.backends {
		p.Backends = append(p.Backends, maps.BackendEntry{ID: id, BackendAddr: b, Flags: f.flags[id]})
	}
	p.Slots = map[maps.SvcSlotKey]uint32{}
	for k, v := range f.slots {
		p.Slots[k] = v
	}
	for m := range f.matches {
		p.AffinityMatches = append(p.AffinityMatches, m)
	}
	return p
}
