package loader

import (
	"fmt"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"

	"github.com/podvnet/podvnet/pkg/maps"
)

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
			a := Attachment{Hook: h, IfName: name, Mode: ModeTCX, Pin: linkPin(root, h, name)}
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

// Attached reports how the hook's program runs on an interface: through a
// tcx link pinned for it, or a legacy filter; an error says why neither.
func Attached(root string, h maps.Hook, ifname string, ifindex int) (Mode, error) {
	pin := linkPin(root, h, ifname)
	if l, err := link.LoadPinnedLink(pin, nil); err == nil {
		info, ierr := l.Info()
		l.Close()
		if ierr == nil && servesIfindex(info, ifindex) {
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
