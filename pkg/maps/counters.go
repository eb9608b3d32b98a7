package maps

import (
	"fmt"

	"github.com/cilium/ebpf"
)

// Counters is the per-CPU (packets, bytes) array indexed by Reason.
type Counters struct{ m *ebpf.Map }

// NewCounters wraps an opened counters map.
func NewCounters(m *ebpf.Map) *Counters { return &Counters{m: m} }

// CounterEntry is the sum over all CPUs for one reason.
type CounterEntry struct {
	Reason Reason
	Counter
}

// All returns every reason with its counts summed over CPUs, in enum order.
func (c *Counters) All() ([]CounterEntry, error) {
	out := make([]CounterEntry, 0, ReasonMax)
	for r := Reason(0); r < ReasonMax; r++ {
		var perCPU []Counter
		if err := c.m.Lookup(uint32(r), &perCPU); err != nil {
			return nil, fmt.Errorf("read counter %s: %w", r, err)
		}
		e := CounterEntry{Reason: r}
		for _, v := range perCPU {
			e.Packets += v.Packets
			e.Bytes += v.Bytes
		}
		out = append(out, e)
	}
	return out, nil
}
