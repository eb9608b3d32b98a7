package policy

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/podvnet/podvnet/internal/ipproto"
)

// PortRange is a protocol's ports First..Last; Proto 0 is every protocol
// and port (a rule without ports).
type PortRange struct {
	Proto       uint8
	First, Last uint16
}

func (r PortRange) String() string {
	switch {
	case r.Proto == 0:
		return "any"
	case r.First == 0 && r.Last == 65535:
		return ipproto.Name(r.Proto)
	case r.First == r.Last:
		return fmt.Sprintf("%s/%d", ipproto.Name(r.Proto), r.First)
	}
	return fmt.Sprintf("%s/%d-%d", ipproto.Name(r.Proto), r.First, r.Last)
}

// PortSet is a set of ports in normal form: sorted by protocol and port,
// overlapping and adjacent ranges merged, and every protocol alone when it
// is there. Equal sets are equal slices.
type PortSet []PortRange

// AllPorts is every port of every protocol.
var AllPorts = PortSet{{}}

// Union is the normal form of both sets together.
func (s PortSet) Union(o PortSet) PortSet {
	if len(o) == 0 {
		return s
	}
	if len(s) == 0 {
		return o
	}
	return normalize(append(slices.Clone(s), o...))
}

func normalize(rs []PortRange) PortSet {
	if slices.ContainsFunc(rs, func(r PortRange) bool { return r.Proto == 0 }) {
		return AllPorts
	}
	slices.SortFunc(rs, func(a, b PortRange) int {
		return cmp.Or(cmp.Compare(a.Proto, b.Proto), cmp.Compare(a.First, b.First), cmp.Compare(a.Last, b.Last))
	})
	var out PortSet
	for _, r := range rs {
		if n := len(out); n > 0 && out[n-1].Proto == r.Proto && uint32(out[n-1].Last)+1 >= uint32(r.First) {
			out[n-1].Last = max(out[n-1].Last, r.Last)
			continue
		}
		out = append(out, r)
	}
	return out
}

// Contains says whether the set allows proto and port (port 0 for a
// protocol without ports).
func (s PortSet) Contains(proto uint8, port uint16) bool {
	for _, r := range s {
		if r.Proto == 0 || r.Proto == proto && r.First <= port && port <= r.Last {
			return true
		}
	}
	return false
}

// Equal compares two sets in normal form.
func (s PortSet) Equal(o PortSet) bool { return slices.Equal(s, o) }

func (s PortSet) String() string {
	if len(s) == 0 {
		return "none"
	}
	parts := make([]string, len(s))
	for i, r := range s {
		parts[i] = r.String()
	}
	return strings.Join(parts, ",")
}

// numericPorts is what a rule's ports allow without names: every port of
// every protocol when it lists none.
func numericPorts(ports []Port) PortSet {
	if len(ports) == 0 {
		return AllPorts
	}
	var rs []PortRange
	for _, p := range ports {
		if p.Name != "" {
			continue
		}
		r := PortRange{Proto: p.Protocol, First: p.Port, Last: p.Port}
		switch {
		case p.Port == 0:
			r.First, r.Last = 0, 65535
		case p.EndPort >= p.Port:
			r.Last = p.EndPort
		}
		rs = append(rs, r)
	}
	return normalize(rs)
}

// namedPorts resolves a rule's named ports against the container ports of
// the pod receiving the traffic: a name it does not declare, or declares
// for another protocol, allows nothing.
func namedPorts(ports []Port, declared map[string]NamedPort) PortSet {
	var rs []PortRange
	for _, p := range ports {
		if p.Name == "" {
			continue
		}
		if d, ok := declared[p.Name]; ok && d.Protocol == p.Protocol && d.Port != 0 {
			rs = append(rs, PortRange{Proto: d.Protocol, First: d.Port, Last: d.Port})
		}
	}
	return normalize(rs)
}

func hasNamed(ports []Port) bool {
	return slices.ContainsFunc(ports, func(p Port) bool { return p.Name != "" })
}
