package maps

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/cilium/ebpf"

	"github.com/podvnet/podvnet/pkg/paths"
)

// Set is every podvnet map, opened.
type Set struct {
	Endpoints *Endpoints
	Config    *ConfigArray
	Counters  *Counters
	NoSNAT    *NoSNAT
	Blocked   *Blocked
	Policy    *Policy
	Services  *Services

	all []*ebpf.Map
}

// ErrNotInstalled means no podvnet maps are pinned under the bpffs root.
var ErrNotInstalled = errors.New("no podvnet maps pinned")

// NewSet wraps opened maps, keyed by their names.
func NewSet(m map[string]*ebpf.Map) (*Set, error) {
	s := &Set{}
	for _, name := range Names {
		if m[name] == nil {
			return nil, fmt.Errorf("map %q missing", name)
		}
		s.all = append(s.all, m[name])
	}
	s.Endpoints = NewEndpoints(m[EndpointsMap])
	s.Config = NewConfigArray(m[ConfigMap])
	s.Counters = NewCounters(m[CountersMap])
	s.NoSNAT = NewNoSNAT(m[NoSNATMap])
	s.Blocked = NewBlocked(m[BlockedMap], m[BlockedFilterMap])
	s.Policy = NewPolicy(m)
	s.Services = NewServices(m)
	return s, nil
}

// OpenPinned opens the maps pinned under root read-only, for inspection
// while the agent runs or after it is gone.
func OpenPinned(root string) (*Set, error) {
	opened := map[string]*ebpf.Map{}
	closeAll := func() {
		for _, m := range opened {
			m.Close()
		}
	}
	for _, name := range Names {
		path := paths.Node{BPFFSRoot: root}.MapPin(name)
		m, err := ebpf.LoadPinnedMap(path, &ebpf.LoadPinOptions{ReadOnly: true})
		if err != nil {
			closeAll()
			if errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("open %s: %w (is the agent installed on this node, and is --bpffs-root right?)", path, ErrNotInstalled)
			}
			return nil, fmt.Errorf("open pinned map %s: %w", path, err)
		}
		opened[name] = m
	}
	return NewSet(opened)
}

// Close closes the map file descriptors; pins stay.
func (s *Set) Close() error {
	var errs []error
	for _, m := range s.all {
		errs = append(errs, m.Close())
	}
	return errors.Join(errs...)
}
