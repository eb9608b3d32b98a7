package policy

import (
	"cmp"
	"net/netip"
	"slices"
)

// CIDRRule is an ipBlock prefix of an endpoint's rules, as the data path's
// LPM trie holds it: an address whose longest match is Prefix may use
// Ports; Except are the ports a block holding it would allow but for one of
// its excepts (the drop is reported as an except's).
type CIDRRule struct {
	Prefix netip.Prefix
	Ports  PortSet
	Except PortSet
}

// block is one ipBlock peer with the ports of its rule.
type block struct {
	cidr   netip.Prefix
	except []netip.Prefix
	ports  PortSet
}

// unionCIDRs turns blocks into trie entries. A trie lookup returns one
// entry, the longest match, so each prefix (every block's CIDR and every
// except) carries what all blocks together mean for the addresses whose
// longest match it is: the union of the ports of every block that contains
// it and does not except it. Prefixes are nested or disjoint, so an address
// whose longest match is p lies in a listed prefix q exactly when q holds
// p. Without the union, an except of one block would hide another rule's
// ports there (AWS's policy agent, issue #326).
func unionCIDRs(blocks []block) []CIDRRule {
	var prefixes []netip.Prefix
	for _, b := range blocks {
		prefixes = append(prefixes, b.cidr.Masked())
		for _, e := range b.except {
			prefixes = append(prefixes, e.Masked())
		}
	}
	slices.SortFunc(prefixes, func(a, b netip.Prefix) int {
		return cmp.Or(a.Addr().Compare(b.Addr()), cmp.Compare(a.Bits(), b.Bits()))
	})
	prefixes = slices.Compact(prefixes)
	var out []CIDRRule
	for _, p := range prefixes {
		r := CIDRRule{Prefix: p}
		for _, b := range blocks {
			if !contains(b.cidr, p) {
				continue
			}
			excepted := slices.ContainsFunc(b.except, func(e netip.Prefix) bool { return contains(e, p) })
			if excepted {
				r.Except = r.Except.Union(b.ports)
			} else {
				r.Ports = r.Ports.Union(b.ports)
			}
		}
		out = append(out, r)
	}
	return out
}

// contains says whether prefix a holds prefix b.
func contains(a, b netip.Prefix) bool {
	return a.Bits() <= b.Bits() && a.Contains(b.Addr())
}
