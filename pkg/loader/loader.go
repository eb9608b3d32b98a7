package loader

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync/atomic"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"

	"github.com/podvnet/podvnet/pkg/maps"
	"github.com/podvnet/podvnet/pkg/paths"
)

// Datapath is the loaded programs and the pinned maps they share.
// Closing it releases file descriptors only: pinned maps and links keep the
// data path running without the agent.
type Datapath struct {
	root       string
	noTCX      atomic.Bool // the kernel refused a tcx attachment
	ctOptsSize uint32
	Maps       *maps.Set
	progs      podvnetPrograms
	rawMaps    map[string]*ebpf.Map

	// Replaced lists the pinned maps of another layout that Load replaced
	// (name: what differed), for the agent to log.
	Replaced []string
}

// Load makes sure root is on a bpffs, adopts the maps pinned there (or
// creates and pins them, replacing any of another layout), and loads every
// program against those maps.
// Nothing is attached yet.
func Load(root string) (_ *Datapath, err error) {
	if err := EnsureBPFFS(root); err != nil {
		return nil, err
	}
	spec, err := loadPodvnet()
	if err != nil {
		return nil, fmt.Errorf("parse BPF object: %w", err)
	}

	d := &Datapath{root: root, rawMaps: map[string]*ebpf.Map{}}
	defer func() {
		if err != nil {
			d.Close()
		}
	}()

	pins := paths.Node{BPFFSRoot: root}
	if err := os.MkdirAll(pins.MapsDir(), 0o700); err != nil {
		return nil, fmt.Errorf("create map pin dir: %w", err)
	}
	for _, name := range maps.Names {
		ms, ok := spec.Maps[name]
		if !ok {
			return nil, fmt.Errorf("object has no map %q", name)
		}
		m, replaced, err := openOrCreateMap(ms, pins.MapPin(name))
		if err != nil {
			return nil, err
		}
		if replaced != nil {
			d.Replaced = append(d.Replaced, fmt.Sprintf("%s: %v", name, replaced))
		}
		d.rawMaps[name] = m
	}
	if d.Maps, err = maps.NewSet(d.rawMaps); err != nil {
		return nil, err
	}

	d.ctOptsSize = kernelCTOptsSize()
	v, ok := spec.Variables[podvnetVarPvCtOptsSize]
	if !ok {
		return nil, fmt.Errorf("object has no %s", podvnetVarPvCtOptsSize)
	}
	if err := v.Set(d.ctOptsSize); err != nil {
		return nil, fmt.Errorf("set %s: %w", podvnetVarPvCtOptsSize, err)
	}
	// The replacements are the pinned maps: the programs use what is
	// pinned, not fresh copies.
	if err := spec.LoadAndAssign(&d.progs, &ebpf.CollectionOptions{MapReplacements: d.rawMaps}); err != nil {
		return nil, loadError(err)
	}
	return d, nil
}

// kernelCTOptsSize is the size of struct bpf_ct_opts in the running
// kernel (its layout grew in 6.9), or 0 when the kernel has no conntrack
// kfuncs: the programs then skip the lookup.
func kernelCTOptsSize() uint32 {
	k, err := btf.LoadKernelSpec()
	if err != nil {
		return 0
	}
	var opts *btf.Struct
	if k.TypeByName("bpf_ct_opts", &opts) != nil {
		return 0
	}
	var fn *btf.Func
	if k.TypeByName("bpf_skb_ct_lookup", &fn) != nil {
		return 0
	}
	if opts.Size != 12 && opts.Size != 16 {
		return 0 // a layout this build does not know: no lookup rather than a wrong one
	}
	return opts.Size
}

// ConntrackLookup reports whether the programs can ask conntrack (kernel
// 5.18+ with nf_conntrack).
func (d *Datapath) ConntrackLookup() bool { return d.ctOptsSize != 0 }

// loadError keeps the whole verifier log: a rejected program must explain
// itself without a rebuild. err names the program.
func loadError(err error) error {
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) {
		return fmt.Errorf("load programs: %w; verifier log:\n%+v", err, ve)
	}
	return fmt.Errorf("load programs: %w", err)
}

// openOrCreateMap adopts the map pinned at path, or creates and pins a new
// one. A pinned map whose layout differs from spec (another podvnet release
// wrote it) is replaced, never reinterpreted: every map's content is
// rebuilt by the agent at start (endpoints from the allocation state,
// config and range maps from the settings), counters start again at zero.
// The programs still attached keep the old map until their links are
// updated to the new programs, so forwarding never sees a half-built map
// of the wrong shape. replaced names why the old map went.
func openOrCreateMap(spec *ebpf.MapSpec, path string) (m *ebpf.Map, replaced error, err error) {
	m, err = ebpf.LoadPinnedMap(path, nil)
	switch {
	case err == nil:
		layoutErr := checkLayout(spec, m)
		if layoutErr == nil {
			return m, nil, nil
		}
		m.Close()
		m, err = createPinnedMap(spec, path)
		if err != nil {
			return nil, nil, fmt.Errorf("replace pinned map %s of another layout (%v): %w", path, layoutErr, err)
		}
		return m, layoutErr, nil
	case !errors.Is(err, fs.ErrNotExist):
		return nil, nil, fmt.Errorf("open pinned map %s: %w", path, err)
	}
	m, err = createPinnedMap(spec, path)
	return m, nil, err
}

// createPinnedMap creates a map and pins it at path, over whatever is
// pinned there, in one rename: a reader of the pin sees the old map or the
// new one, never none.
func createPinnedMap(spec *ebpf.MapSpec, path string) (*ebpf.Map, error) {
	m, err := ebpf.NewMap(spec)
	if err != nil {
		return nil, fmt.Errorf("create map %s: %w", spec.Name, err)
	}
	tmp := path + "_replacing" // bpffs refuses names with a dot
	os.Remove(tmp)             // a crash between pin and rename left it
	if err := m.Pin(tmp); err != nil {
		m.Close()
		return nil, fmt.Errorf("pin map %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		m.Unpin()
		m.Close()
		return nil, fmt.Errorf("pin map %s: %w", path, err)
	}
	return m, nil
}

// Program returns the loaded program for a hook.
func (d *Datapath) Program(h maps.Hook) *ebpf.Program {
	switch h {
	case maps.HookPod:
		return d.progs.FromPod
	case maps.HookNIC:
		return d.progs.FromNic
	case maps.HookToPod:
		return d.progs.ToPod
	case maps.HookToNIC:
		return d.progs.ToNic
	case maps.HookHost:
		return d.progs.FromHost
	}
	return nil
}

// Root is the bpffs root the data path is pinned under.
func (d *Datapath) Root() string { return d.root }

// Close releases file descriptors; pins stay and the data path keeps running.
func (d *Datapath) Close() error {
	errs := []error{d.progs.Close()}
	for _, m := range d.rawMaps {
		errs = append(errs, m.Close())
	}
	return errors.Join(errs...)
}
