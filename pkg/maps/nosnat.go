package maps

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
)

// NoSNAT is the LPM trie of destination ranges that pods reach directly,
// with their own source IP (the VNet, peered VNets, on-premises).
type NoSNAT struct{ m *ebpf.Map }

// NewNoSNAT wraps an opened nosnat map.
func NewNoSNAT(m *ebpf.Map) *NoSNAT { return &NoSNAT{m: m} }

func nosnatKeyOf(p netip.Prefix) (NoSNATKey, error) {
	if !p.Addr().Is4() {
		return NoSNATKey{}, fmt.Errorf("no-SNAT range %s: not IPv4", p)
	}
	p = p.Masked()
	return NoSNATKey{Prefixlen: uint32(p.Bits()), Addr: p.Addr().As4()}, nil
}

// List returns the ranges in the map, sorted.
func (n *NoSNAT) List() ([]netip.Prefix, error) {
	return listMap(n.m, "no-SNAT ranges", func(k NoSNATKey, _ uint8) netip.Prefix {
		return netip.PrefixFrom(netip.AddrFrom4(k.Addr), int(k.Prefixlen))
	}, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
}

// Sync makes the map hold exactly want: new ranges are added before stale
// ones are removed, so a range present in both never disappears.
func (n *NoSNAT) Sync(want []netip.Prefix) error {
	keep := make(map[netip.Prefix]bool, len(want))
	for _, p := range want {
		k, err := nosnatKeyOf(p)
		if err != nil {
			return err
		}
		if err := n.m.Put(&k, uint8(1)); err != nil {
			return fmt.Errorf("add no-SNAT range %s: %w", p, err)
		}
		keep[p.Masked()] = true
	}
	have, err := n.List()
	if err != nil {
		return err
	}
	for _, p := range have {
		if keep[p] {
			continue
		}
		k, _ := nosnatKeyOf(p)
		if err := n.m.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("remove no-SNAT range %s: %w", p, err)
		}
	}
	return nil
}
