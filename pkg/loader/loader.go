package loader

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/podvnet/podvnet/pkg/maps"
)

// Datapath is the loaded programs and the pinned maps they share.
// Closing it releases file descriptors only: pinned maps and links keep the
// data path running without the agent.
type Datapath struct {
	root    string
	Maps    *maps.Set
	fromPod *ebpf.Program
	fromNIC *ebpf.Program
	rawMaps map[string]*ebpf.Map
}

// Load makes sure root is on a bpffs, adopts the maps pinned there (or
// creates and pins them), and loads both programs against those maps.
// Nothing is attached yet.
func Load(root string) (_ *Datapath, err error) {
	if err := EnsureBPFFS(root); err != nil {
		return nil, err
	}
	podSpec, err := loadFromPod()
	if err != nil {
		return nil, fmt.Errorf("parse from_pod object: %w", err)
	}
	nicSpec, err := loadFromNic()
	if err != nil {
		return nil, fmt.Errorf("parse from_nic object: %w", err)
	}

	d := &Datapath{root: root, rawMaps: map[string]*ebpf.Map{}}
	defer func() {
		if err != nil {
			d.Close()
		}
	}()

	dir := maps.PinDir(root)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create map pin dir: %w", err)
	}
	for _, name := range maps.Names {
		spec, ok := podSpec.Maps[name]
		if !ok {
			return nil, fmt.Errorf("object has no map %q", name)
		}
		m, err := openOrCreateMap(spec, filepath.Join(dir, name))
		if err != nil {
			return nil, err
		}
		d.rawMaps[name] = m
	}
	if d.Maps, err = maps.NewSet(d.rawMaps); err != nil {
		return nil, err
	}

	opts := &ebpf.CollectionOptions{MapReplacements: d.rawMaps}
	var podProgs fromPodPrograms
	if err := podSpec.LoadAndAssign(&podProgs, opts); err != nil {
		return nil, loadError("from_pod", err)
	}
	d.fromPod = podProgs.FromPod
	var nicProgs fromNicPrograms
	if err := nicSpec.LoadAndAssign(&nicProgs, opts); err != nil {
		return nil, loadError("from_nic", err)
	}
	d.fromNIC = nicProgs.FromNic
	return d, nil
}

// loadError keeps the whole verifier log: a rejected program must explain
// itself without a rebuild.
func loadError(prog string, err error) error {
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) {
		return fmt.Errorf("load %s: verifier rejected it:\n%+v", prog, ve)
	}
	return fmt.Errorf("load %s: %w", prog, err)
}

// openOrCreateMap adopts the map pinned at path, refusing one whose layout
// differs from spec, or creates and pins a new one.
func openOrCreateMap(spec *ebpf.MapSpec, path string) (*ebpf.Map, error) {
	m, err := ebpf.LoadPinnedMap(path, nil)
	switch {
	case err == nil:
		if err := checkLayout(spec, m); err != nil {
			m.Close()
			return nil, fmt.Errorf("pinned map %s was written by an incompatible podvnet (%w); "+
				"run `podvnet-agent cleanup` to remove the old data path, then start again", path, err)
		}
		return m, nil
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("open pinned map %s: %w", path, err)
	}
	m, err = ebpf.NewMap(spec)
	if err != nil {
		return nil, fmt.Errorf("create map %s: %w", spec.Name, err)
	}
	if err := m.Pin(path); err != nil {
		m.Close()
		return nil, fmt.Errorf("pin map %s: %w", path, err)
	}
	return m, nil
}

// Program returns the loaded program for a hook, for tests and benchmarks.
func (d *Datapath) Program(h Hook) *ebpf.Program {
	if h == HookPod {
		return d.fromPod
	}
	return d.fromNIC
}

// Root is the bpffs root the data path is pinned under.
func (d *Datapath) Root() string { return d.root }

// Close releases file descriptors; pins stay and the data path keeps running.
func (d *Datapath) Close() error {
	var errs []error
	for _, p := range []*ebpf.Program{d.fromPod, d.fromNIC} {
		if p != nil {
			errs = append(errs, p.Close())
		}
	}
	for _, m := range d.rawMaps {
		errs = append(errs, m.Close())
	}
	return errors.Join(errs...)
}

// Hook says which program an interface runs.
type Hook string

// The two attach points.
const (
	HookPod Hook = "pod" // host-side veth ingress: from_pod
	HookNIC Hook = "nic" // VNet NIC ingress: from_nic
)

// LinkPin is where the link of a hook on an interface is pinned.
func LinkPin(root string, h Hook, ifname string) string {
	return filepath.Join(root, "links", string(h), ifname)
}

// Attach runs the hook's program on the interface's tc ingress. A link
// already pinned for that interface is updated in place (the old program
// keeps running until the new one takes over, never a gap); a stale pin
// whose interface is gone is replaced.
func (d *Datapath) Attach(h Hook, ifindex int, ifname string) error {
	prog := d.Program(h)
	pin := LinkPin(d.root, h, ifname)
	if err := os.MkdirAll(filepath.Dir(pin), 0o700); err != nil {
		return fmt.Errorf("create link pin dir: %w", err)
	}
	updated, err := updatePinned(pin, prog, ifindex)
	if err != nil || updated {
		return err
	}
	l, err := link.AttachTCX(link.TCXOptions{
		Interface: ifindex,
		Program:   prog,
		Attach:    ebpf.AttachTCXIngress,
	})
	if err != nil {
		return fmt.Errorf("attach tcx ingress %s: %w", ifname, err)
	}
	defer l.Close()
	// Until it is pinned, the link lives only as long as this FD; a crash
	// here detaches it rather than leaving an unmanaged program behind.
	if err := l.Pin(pin); err != nil {
		return fmt.Errorf("pin link %s: %w", pin, err)
	}
	return nil
}

// updatePinned swaps prog into the link pinned at pin if it still serves
// ifindex. It reports false when there is nothing to update.
func updatePinned(pin string, prog *ebpf.Program, ifindex int) (bool, error) {
	l, err := link.LoadPinnedLink(pin, nil)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("open pinned link %s: %w", pin, err)
	}
	defer l.Close()
	info, err := l.Info()
	if err == nil && info.Type == link.TCXType && info.TCX() != nil && int(info.TCX().Ifindex) == ifindex {
		err = l.Update(prog)
		if err == nil {
			return true, nil
		}
		if !errors.Is(err, unix.ENOLINK) {
			return false, fmt.Errorf("update pinned link %s: %w", pin, err)
		}
	}
	// The interface is gone or was recreated: this link serves nothing.
	if err := l.Unpin(); err != nil {
		return false, fmt.Errorf("unpin stale link %s: %w", pin, err)
	}
	return false, nil
}

// Detach removes the hook's program from the interface by dropping the
// pinned link. A missing pin is not an error.
func (d *Datapath) Detach(h Hook, ifname string) error {
	return Unpin(LinkPin(d.root, h, ifname))
}

// Unpin removes a pinned link (detaching its program once no one holds it).
func Unpin(pin string) error {
	l, err := link.LoadPinnedLink(pin, nil)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		// Not a link we can open: remove the pin file all the same.
		if rmErr := os.Remove(pin); rmErr != nil && !errors.Is(rmErr, fs.ErrNotExist) {
			return fmt.Errorf("remove pin %s: %w (open: %v)", pin, rmErr, err)
		}
		return nil
	}
	defer l.Close()
	if err := l.Unpin(); err != nil {
		return fmt.Errorf("unpin link %s: %w", pin, err)
	}
	return nil
}

// PinnedInterfaces lists the interface names with a pinned link for a hook.
func PinnedInterfaces(root string, h Hook) ([]string, error) {
	entries, err := os.ReadDir(filepath.Dir(LinkPin(root, h, "x")))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list pinned links: %w", err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names, nil
}
