package loader

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

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

// Legacy filters are found again by their fixed place and name: a
// replacement at the same priority and handle swaps the program atomically.
const (
	legacyPriority = 1
	legacyHandle   = 0x5056 // "PV"
	legacyPrefix   = "podvnet-"
)

func legacyName(h maps.Hook) string { return legacyPrefix + h.String() }

// LinksDir holds the pinned tcx links, one directory per hook.
func LinksDir(root string) string { return filepath.Join(root, "links") }

// LinkPinDir holds the pinned tcx links of a hook.
func LinkPinDir(root string, h maps.Hook) string { return filepath.Join(LinksDir(root), h.String()) }

// LinkPin is where the tcx link of a hook on an interface is pinned.
func LinkPin(root string, h maps.Hook, ifname string) string {
	return filepath.Join(LinkPinDir(root, h), ifname)
}

// Attach runs the hook's program on the interface's tc ingress: with tcx,
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
			return mode, fmt.Errorf("attach legacy tc ingress %s: %w", ifname, err)
		}
		return mode, Unpin(LinkPin(d.root, h, ifname))
	}
	err := d.attachTCX(h, ifindex, ifname)
	if errors.Is(err, ebpf.ErrNotSupported) && mode == ModeAuto {
		d.noTCX.Store(true)
		return d.Attach(h, ifindex, ifname, ModeLegacy)
	}
	if err != nil {
		return ModeTCX, err
	}
	return ModeTCX, detachLegacy(h, ifindex)
}

func (d *Datapath) attachTCX(h maps.Hook, ifindex int, ifname string) error {
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

func attachLegacy(prog *ebpf.Program, h maps.Hook, ifindex int) error {
	qdisc := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: ifindex, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT},
		QdiscType:  "clsact",
	}
	if err := netlink.QdiscReplace(qdisc); err != nil {
		return fmt.Errorf("add clsact qdisc: %w", err)
	}
	filter := &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: ifindex,
			Parent:    netlink.HANDLE_MIN_INGRESS,
			Handle:    legacyHandle,
			Priority:  legacyPriority,
			Protocol:  unix.ETH_P_ALL,
		},
		Fd:           prog.FD(),
		Name:         legacyName(h),
		DirectAction: true,
	}
	if err := netlink.FilterReplace(filter); err != nil {
		return fmt.Errorf("replace cls_bpf filter: %w", err)
	}
	return nil
}

// legacyFilters returns podvnet's cls_bpf filters on an interface's ingress.
func legacyFilters(l netlink.Link) ([]*netlink.BpfFilter, error) {
	filters, err := netlinksafe.FilterList(l, netlink.HANDLE_MIN_INGRESS)
	if err != nil {
		// No clsact qdisc: no filters.
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
			return nil, nil
		}
		return nil, fmt.Errorf("list tc filters on ifindex %d: %w", l.Attrs().Index, err)
	}
	var ours []*netlink.BpfFilter
	for _, f := range filters {
		if bf, ok := f.(*netlink.BpfFilter); ok && strings.HasPrefix(bf.Name, legacyPrefix) {
			ours = append(ours, bf)
		}
	}
	return ours, nil
}

// detachLegacy removes podvnet's legacy filter for h from an interface, and
// the clsact qdisc with it when nothing else uses that qdisc.
func detachLegacy(h maps.Hook, ifindex int) error {
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		var notFound netlink.LinkNotFoundError
		if errors.As(err, &notFound) {
			return nil
		}
		return err
	}
	filters, err := legacyFilters(l)
	if err != nil {
		return err
	}
	removed := false
	for _, f := range filters {
		if f.Name != legacyName(h) {
			continue
		}
		if err := netlink.FilterDel(f); err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("delete cls_bpf filter %s: %w", f.Name, err)
		}
		removed = true
	}
	if !removed {
		// Not ours: an empty clsact may be another tool's, about to get
		// its filters.
		return nil
	}
	return removeEmptyClsact(l)
}

func removeEmptyClsact(l netlink.Link) error {
	for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
		filters, err := netlinksafe.FilterList(l, parent)
		if err != nil || len(filters) > 0 {
			return nil // no clsact, or someone else's filters: leave it
		}
	}
	qdisc := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: l.Attrs().Index, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT},
		QdiscType:  "clsact",
	}
	if err := netlink.QdiscDel(qdisc); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("delete clsact qdisc on ifindex %d: %w", l.Attrs().Index, err)
	}
	return nil
}

// Detach removes the hook's program from the interface: the pinned tcx link
// and any legacy filter. What is already gone is not an error.
func (d *Datapath) Detach(h maps.Hook, ifname string) error { return Detach(d.root, h, ifname) }

// Detach removes the hook's program from a named interface of the current
// network namespace, however it is attached.
func Detach(root string, h maps.Hook, ifname string) error {
	if err := Unpin(LinkPin(root, h, ifname)); err != nil {
		return err
	}
	if l, err := netlink.LinkByName(ifname); err == nil {
		return detachLegacy(h, l.Attrs().Index)
	}
	return nil
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
func PinnedInterfaces(root string, h maps.Hook) ([]string, error) {
	entries, err := os.ReadDir(LinkPinDir(root, h))
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

// Attachment is one program podvnet runs on an interface.
type Attachment struct {
	Hook     maps.Hook `json:"hook"`
	IfName   string    `json:"ifname"`
	Ifindex  int       `json:"ifindex"`
	Mode     Mode      `json:"mode"`
	ProgID   uint32    `json:"prog_id"`
	ProgName string    `json:"prog_name"`
	LinkID   uint32    `json:"link_id,omitempty"` // tcx only
	Pin      string    `json:"pin,omitempty"`     // tcx only
	Defunct  bool      `json:"defunct,omitempty"` // tcx link whose interface is gone
}

// ListAttachments finds podvnet's programs in the current network
// namespace: tcx links from the pins under root, legacy filters from the
// interfaces. Sorted by hook name, then interface name.
func ListAttachments(root string) ([]Attachment, error) {
	var out []Attachment
	for _, h := range maps.Hooks {
		names, err := PinnedInterfaces(root, h)
		if err != nil {
			return nil, err
		}
		for _, name := range names {
			a := Attachment{Hook: h, IfName: name, Mode: ModeTCX, Pin: LinkPin(root, h, name)}
			l, err := link.LoadPinnedLink(a.Pin, nil)
			if err != nil {
				return nil, fmt.Errorf("open pinned link %s: %w", a.Pin, err)
			}
			info, err := l.Info()
			l.Close()
			if err != nil {
				return nil, fmt.Errorf("link info %s: %w", a.Pin, err)
			}
			a.LinkID, a.ProgID = uint32(info.ID), uint32(info.Program)
			if tcx := info.TCX(); tcx != nil {
				a.Ifindex = int(tcx.Ifindex)
			}
			a.Defunct = a.Ifindex == 0
			a.ProgName = programName(a.ProgID)
			out = append(out, a)
		}
	}
	links, err := netlinksafe.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	for _, l := range links {
		filters, err := legacyFilters(l)
		if err != nil {
			return nil, err
		}
		for _, f := range filters {
			h, err := maps.ParseHook(strings.TrimPrefix(f.Name, legacyPrefix))
			if err != nil {
				continue // a hook this build does not know (a newer podvnet's): not ours to touch
			}
			out = append(out, Attachment{
				Hook: h, IfName: l.Attrs().Name, Ifindex: l.Attrs().Index,
				Mode: ModeLegacy, ProgID: uint32(f.Id), ProgName: programName(uint32(f.Id)),
			})
		}
	}
	slices.SortFunc(out, func(a, b Attachment) int {
		if c := strings.Compare(a.Hook.String(), b.Hook.String()); c != 0 {
			return c
		}
		if c := strings.Compare(a.IfName, b.IfName); c != 0 {
			return c
		}
		return strings.Compare(string(a.Mode), string(b.Mode))
	})
	return out, nil
}

func programName(id uint32) string {
	p, err := ebpf.NewProgramFromID(ebpf.ProgramID(id))
	if err != nil {
		return ""
	}
	defer p.Close()
	info, err := p.Info()
	if err != nil {
		return ""
	}
	return info.Name
}

// RemoveAttachment detaches one attachment found by ListAttachments.
func RemoveAttachment(a Attachment) error {
	if a.Mode == ModeTCX {
		return Unpin(a.Pin)
	}
	return detachLegacy(a.Hook, a.Ifindex)
}

// Attached reports how the hook's program runs on an interface: through a
// tcx link pinned for it, or a legacy filter; an error says why neither.
func Attached(root string, h maps.Hook, ifname string, ifindex int) (Mode, error) {
	pin := LinkPin(root, h, ifname)
	if l, err := link.LoadPinnedLink(pin, nil); err == nil {
		info, ierr := l.Info()
		l.Close()
		if ierr == nil && info.Type == link.TCXType && info.TCX() != nil && int(info.TCX().Ifindex) == ifindex {
			return ModeTCX, nil
		}
		return "", fmt.Errorf("%s link %s is not attached to %s (ifindex %d)", h.Program(), pin, ifname, ifindex)
	}
	l, err := netlink.LinkByIndex(ifindex)
	if err != nil {
		return "", fmt.Errorf("list tc filters on %s: %w", ifname, err)
	}
	filters, err := legacyFilters(l)
	if err != nil {
		return "", fmt.Errorf("list tc filters on %s: %w", ifname, err)
	}
	for _, f := range filters {
		if f.Name == legacyName(h) {
			return ModeLegacy, nil
		}
	}
	return "", fmt.Errorf("%s is not attached to %s: no pinned link %s and no legacy tc filter", h.Program(), ifname, pin)
}
