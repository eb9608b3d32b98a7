package services

import (
	"errors"

	"github.com/podvnet/podvnet/pkg/maps"
)

// PortWriter writes one word of svc_ports (pkg/maps).
type PortWriter interface {
	PutPortWord(slot uint32, w maps.PortBits) error
}

// PortSet is what one owner (a Service, the node's pods) contributes to
// the source-port filter: Svc, ports our own translation's replies come
// from (a backend's); CT, ports kernel NAT's replies may come from (under
// kube-proxy a backend's, a Service's target port; portmap's container
// ports), for which the programs ask conntrack.
type PortSet struct {
	Svc, CT []ProtoPort
}

// PortFilter keeps svc_ports as the union of its owners' sets. A port's bit
// is set as soon as one owner wants it and cleared once none does; both
// only after the owner says when (Set's commit), so that a bit is never
// missing while a frontend that needs it is in the maps.
type PortFilter struct {
	w      PortWriter
	owners map[string]portSets
	refs   [2]map[ProtoPort]int // svc, ct
	words  map[uint32]maps.PortBits
	// adopted: the words an earlier agent left, kept set until Sweep.
	adopted map[uint32]maps.PortBits
}

type portSets [2]map[ProtoPort]bool

// NewPortFilter takes over svc_ports as found (pinned holds its words, or
// nil): its bits stay until Sweep, once every owner has been set.
func NewPortFilter(w PortWriter, pinned []maps.PortBits) *PortFilter {
	f := &PortFilter{w: w, owners: map[string]portSets{}, refs: [2]map[ProtoPort]int{{}, {}},
		words: map[uint32]maps.PortBits{}, adopted: map[uint32]maps.PortBits{}}
	for slot, b := range pinned {
		if b != (maps.PortBits{}) {
			f.words[uint32(slot)] = b
			f.adopted[uint32(slot)] = b
		}
	}
	return f
}

// Set makes owner's contribution want: the bits of ports it adds are
// written now, and commit clears those of ports it no longer has (once the
// frontends that needed them are gone). An empty want removes the owner.
func (f *PortFilter) Set(owner string, want PortSet) (commit func() error, err error) {
	old := f.owners[owner]
	next := portSets{{}, {}}
	for i, ports := range [2][]ProtoPort{want.Svc, want.CT} {
		for _, p := range ports {
			if _, _, ok := maps.PortSlot(p.Proto, p.Port); ok {
				next[i][p] = true
			}
		}
	}
	dirty := map[uint32]bool{}
	for i := range next {
		for p := range next[i] {
			if old[i][p] {
				continue
			}
			if f.refs[i][p]++; f.refs[i][p] == 1 {
				slot, _, _ := maps.PortSlot(p.Proto, p.Port)
				dirty[slot] = true
			}
		}
	}
	if len(next[0])+len(next[1]) == 0 {
		delete(f.owners, owner)
	} else {
		f.owners[owner] = next
	}
	if err := f.flush(dirty); err != nil {
		return nil, err
	}
	return func() error {
		dirty := map[uint32]bool{}
		for i := range old {
			for p := range old[i] {
				if next[i][p] {
					continue
				}
				if f.refs[i][p]--; f.refs[i][p] == 0 {
					delete(f.refs[i], p)
					slot, _, _ := maps.PortSlot(p.Proto, p.Port)
					dirty[slot] = true
				}
			}
		}
		return f.flush(dirty)
	}, nil
}

// Sweep drops the bits an earlier agent left that no owner wants.
func (f *PortFilter) Sweep() error {
	dirty := map[uint32]bool{}
	for slot := range f.adopted {
		dirty[slot] = true
	}
	f.adopted = map[uint32]maps.PortBits{}
	return f.flush(dirty)
}

// flush writes the words of slots whose bits may have changed.
func (f *PortFilter) flush(slots map[uint32]bool) error {
	want := map[uint32]maps.PortBits{}
	for slot := range slots {
		want[slot] = f.adopted[slot]
	}
	for i := range f.refs {
		for p := range f.refs[i] {
			slot, bit, _ := maps.PortSlot(p.Proto, p.Port)
			if !slots[slot] {
				continue
			}
			w := want[slot]
			if i == 0 {
				w.Svc |= bit
			} else {
				w.CT |= bit
			}
			want[slot] = w
		}
	}
	var errs []error
	for slot, w := range want {
		if f.words[slot] == w {
			continue
		}
		if err := f.w.PutPortWord(slot, w); err != nil {
			errs = append(errs, err)
			continue
		}
		f.words[slot] = w
	}
	return errors.Join(errs...)
}

// Has reports whether port's bit is set for svc (false: ct).
func (f *PortFilter) Has(p ProtoPort, svc bool) bool {
	slot, bit, ok := maps.PortSlot(p.Proto, p.Port)
	if !ok {
		return false
	}
	w := f.words[slot]
	if svc {
		return w.Svc&bit != 0
	}
	return w.CT&bit != 0
}
