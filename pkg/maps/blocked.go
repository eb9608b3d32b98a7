package maps

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/cilium/ebpf"
)

// Blocked is the hash map of destinations (address, port, protocol) that
// from_pod drops, each counted under its own reason, with its filter. An
// entry with port 0 is a guard: a fragment after the first carries no
// ports, and the program looks it up with port 0, so it is dropped when any
// port of its address and protocol is blocked.
//
// The filter (an array of FilterSlots bitmaps) spares the other packets the
// hash lookup: a packet is looked up only if the bit of its destination
// port is set in the slot of its address. Sync keeps the two consistent.
type Blocked struct{ m, filter *ebpf.Map }

// NewBlocked wraps the opened blocked map and its filter.
func NewBlocked(m, filter *ebpf.Map) *Blocked { return &Blocked{m: m, filter: filter} }

// FilterSlots is the size of the filter (PV_BLOCKED_FILTER_SLOTS).
const FilterSlots = 256

// filterSlot and filterBit place a destination in the filter as
// pv_blocked_reason does: the XOR of the address's octets, the port's low
// six bits.
func filterSlot(a [4]byte) uint32  { return uint32(a[0] ^ a[1] ^ a[2] ^ a[3]) }
func filterBit(port uint16) uint64 { return 1 << (port & 63) }

// BlockedDest is one entry of the blocked map.
type BlockedDest struct {
	Addr   netip.Addr
	Port   uint16 // 0: the guard for fragments
	Proto  uint8  // IP protocol number
	Reason Reason
}

func (d BlockedDest) key() (BlockedKey, error) {
	if !d.Addr.Is4() {
		return BlockedKey{}, fmt.Errorf("blocked destination %s: not an IPv4 address", d.Addr)
	}
	k := BlockedKey{Addr: d.Addr.As4(), Proto: d.Proto}
	binary.BigEndian.PutUint16(k.Port[:], d.Port)
	return k, nil
}

func (k BlockedKey) dest(v BlockedValue) BlockedDest {
	return BlockedDest{Addr: netip.AddrFrom4(k.Addr), Port: binary.BigEndian.Uint16(k.Port[:]), Proto: k.Proto, Reason: v.Reason}
}

// List returns every entry, sorted by address, protocol and port.
func (b *Blocked) List() ([]BlockedDest, error) {
	return listMap(b.m, "blocked destinations", BlockedKey.dest, func(x, y BlockedDest) int {
		return cmp.Or(x.Addr.Compare(y.Addr), cmp.Compare(x.Proto, y.Proto), cmp.Compare(x.Port, y.Port))
	})
}

// Sync makes the maps hold exactly want, in place: the programs keep
// running and see each change on their next packet. New and changed
// entries and their filter bits are written before stale ones are removed,
// so a destination in both the old and the new list is never let through.
func (b *Blocked) Sync(want []BlockedDest) error {
	keep := make(map[BlockedKey]bool, len(want))
	var filter [FilterSlots]uint64
	for _, d := range want {
		k, err := d.key()
		if err != nil {
			return err
		}
		if err := b.m.Put(&k, &BlockedValue{Reason: d.Reason}); err != nil {
			return fmt.Errorf("add blocked destination %s:%d proto %d: %w", d.Addr, d.Port, d.Proto, err)
		}
		keep[k] = true
		filter[filterSlot(k.Addr)] |= filterBit(d.Port)
	}
	// Each slot's new bitmap holds every bit a wanted entry needs: the
	// bits of entries in both lists stay set throughout.
	for slot, bits := range filter {
		var have uint64
		if err := b.filter.Lookup(uint32(slot), &have); err != nil {
			return fmt.Errorf("read blocked filter slot %d: %w", slot, err)
		}
		if have == bits {
			continue
		}
		if err := b.filter.Put(uint32(slot), bits); err != nil {
			return fmt.Errorf("write blocked filter slot %d: %w", slot, err)
		}
	}
	have, err := b.List()
	if err != nil {
		return err
	}
	for _, d := range have {
		k, _ := d.key()
		if keep[k] {
			continue
		}
		if err := b.m.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("remove blocked destination %s:%d proto %d: %w", d.Addr, d.Port, d.Proto, err)
		}
	}
	return nil
}
