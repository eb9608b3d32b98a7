package loader

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"

	"github.com/podvnet/podvnet/pkg/maps"
)

// Mode is how programs are attached to tc ingress.
type Mode string

// Attach modes. tcx (kernel 6.6+) gives pinnable links that update
// atomically; legacy is clsact + a direct-action cls_bpf filter, for the
// 5.15 kernels that AKS nodes still run.
const (
	ModeAuto   Mode = "auto"
	ModeTCX    Mode = "tcx"
	ModeLegacy Mode = "legacy"
)

// ParseMode reads an --attach-mode value.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case ModeAuto, ModeTCX, ModeLegacy:
		return m, nil
	}
	return "", fmt.Errorf("attach mode %q: want auto, tcx or legacy", s)
}

// Attach runs the hook's program on the interface's tc ingress (egress for
// an egress hook): with tcx,
// legacy tc, or in ModeAuto tcx where the kernel has it and legacy tc
// otherwise. What is attached already is replaced in place, never detached
// first: a tcx link is updated, a legacy filter replaced. When the mode
// changed since the last attachment, the new one goes in before the old one
// is removed (tcx runs before legacy tc, so the switch has no gap). It
// returns the mode used. Safe for concurrent use on different interfaces.
func (d *Datapath) Attach(h maps.Hook, ifindex int, ifname string, mode Mode) (Mode, error) {
	if mode == ModeAuto && d.noTCX.Load() {
		mode = ModeLegacy
	}
	if mode == ModeLegacy {
		if err := attachLegacy(d.Program(h), h, ifindex); err != nil {
			return mode, fmt.Errorf("attach legacy tc %s: %w", ifname, err)
		}
		return mode, unpin(linkPin(d.root, h, ifname))
	}
	err := attachTCX(d.Program(h), linkPin(d.root, h, ifname), ifindex, ifname, h.Egress())
	if errors.Is(err, ebpf.ErrNotSupported) && mode == ModeAuto {
		d.noTCX.Store(true)
		return d.Attach(h, ifindex, ifname, ModeLegacy)
	}
	if err != nil {
		return ModeTCX, err
	}
	return ModeTCX, detachLegacy(h, ifindex)
}

// Detach removes the hook's program from a named interface of the current
// network namespace, however it is attached: the tcx link pinned under root
// and any legacy filter. What is already gone is not an error.
func Detach(root string, h maps.Hook, ifname string) error {
	if err := unpin(linkPin(root, h, ifname)); err != nil {
		return err
	}
	if l, err := netlink.LinkByName(ifname); err == nil {
		return detachLegacy(h, l.Attrs().Index)
	}
	return nil
}
