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
)

// tcx (kernel 6.6+): a link per program and interface, pinned so that it
// outlives the agent, and updated in place (BPF_LINK_UPDATE) on upgrade.

// attachTCX runs prog on the interface's tcx ingress (egress) through the
// link pinned at pin: the pinned link is updated if it still serves
// ifindex, else a new link is attached and pinned.
func attachTCX(prog *ebpf.Program, pin string, ifindex int, ifname string, egress bool) error {
	if err := os.MkdirAll(filepath.Dir(pin), 0o700); err != nil {
		return fmt.Errorf("create link pin dir: %w", err)
	}
	updated, err := updatePinned(pin, prog, ifindex)
	if err != nil || updated {
		return err
	}
	attach, side := ebpf.AttachTCXIngress, "ingress"
	if egress {
		attach, side = ebpf.AttachTCXEgress, "egress"
	}
	l, err := link.AttachTCX(link.TCXOptions{
		Interface: ifindex,
		Program:   prog,
		Attach:    attach,
	})
	if err != nil {
		return fmt.Errorf("attach tcx %s %s: %w", side, ifname, err)
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
	if err == nil && servesIfindex(info, ifindex) {
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

// servesIfindex reports whether a link is a tcx link on ifindex.
func servesIfindex(info *link.Info, ifindex int) bool {
	return info.Type == link.TCXType && info.TCX() != nil && int(info.TCX().Ifindex) == ifindex
}

// unpin removes a pinned link (detaching its program once no one holds it).
func unpin(pin string) error {
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
