package loader

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/podvnet/podvnet/pkg/maps"
)

// Legacy tc (before tcx): a clsact qdisc and a direct-action cls_bpf filter
// on its ingress (on its egress for the egress hook). Filters are found again by their fixed place and name: a
// replacement at the same priority and handle swaps the program atomically.
const (
	legacyPriority = 1
	legacyHandle   = 0x5056 // "PV"
	legacyPrefix   = "podvnet-"
)

func legacyName(h maps.Hook) string { return legacyPrefix + h.String() }

// legacyParent is the clsact side a hook's filter sits on.
func legacyParent(h maps.Hook) uint32 {
	if h.Egress() {
		return netlink.HANDLE_MIN_EGRESS
	}
	return netlink.HANDLE_MIN_INGRESS
}

// clsact is the clsact qdisc of an interface.
func clsact(ifindex int) *netlink.GenericQdisc {
	return &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{LinkIndex: ifindex, Handle: netlink.MakeHandle(0xffff, 0), Parent: netlink.HANDLE_CLSACT},
		QdiscType:  "clsact",
	}
}

func attachLegacy(prog *ebpf.Program, h maps.Hook, ifindex int) error {
	if err := netlink.QdiscReplace(clsact(ifindex)); err != nil {
		return fmt.Errorf("add clsact qdisc: %w", err)
	}
	filter := &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: ifindex,
			Parent:    legacyParent(h),
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

// legacyFilters returns podvnet's cls_bpf filters on an interface's ingress
// and egress.
func legacyFilters(l netlink.Link) ([]*netlink.BpfFilter, error) {
	var ours []*netlink.BpfFilter
	for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
		filters, err := netlinksafe.FilterList(l, parent)
		if err != nil {
			// No clsact qdisc: no filters.
			if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
				return nil, nil
			}
			return nil, fmt.Errorf("list tc filters on ifindex %d: %w", l.Attrs().Index, err)
		}
		for _, f := range filters {
			if bf, ok := f.(*netlink.BpfFilter); ok && strings.HasPrefix(bf.Name, legacyPrefix) {
				ours = append(ours, bf)
			}
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
	if err := netlink.QdiscDel(clsact(l.Attrs().Index)); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("delete clsact qdisc on ifindex %d: %w", l.Attrs().Index, err)
	}
	return nil
}
