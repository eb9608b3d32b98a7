// Package snat owns podvnet's nftables table: pod traffic to anything
// outside the no-SNAT ranges (the Internet) is masqueraded to the node's IP.
// Traffic to the VNet and peered ranges keeps the pod's own IP, and most of it
// never reaches netfilter at all (from_pod redirects it past the stack).
// The same table drops forwarded pod traffic to the blocked platform
// endpoints (blocked.go), for the packets that take the kernel path.
package snat

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/podvnet/podvnet/pkg/platform"
)

// TableName is podvnet's one nftables table (family ip).
const TableName = "podvnet"

// Rules describe what to masquerade.
type Rules struct {
	// PodIfPrefix starts every pod's host veth name: only traffic that came
	// from a pod is masqueraded.
	PodIfPrefix string
	// NoSNAT are destinations pods reach with their own IP.
	NoSNAT []netip.Prefix
	// Blocked are destinations pods must not reach (blocked.go).
	Blocked []platform.Endpoint
}

// Apply replaces the table in one netlink transaction: readers never see
// it half-written, and a failed batch leaves the previous table in force.
//
//	table ip podvnet {
//	  chain postrouting {
//	    type nat hook postrouting priority srcnat; policy accept;
//	    iifname != "pv*" return
//	    ip daddr 10.240.0.0/16 return        # one rule per no-SNAT range
//	    counter masquerade
//	  }
//	  chain forward { ... }                  # with Blocked: blocked.go
//	}
func Apply(r Rules) error {
	if r.PodIfPrefix == "" {
		return errors.New("snat: no pod interface prefix")
	}
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("open nftables: %w", err)
	}
	t := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: TableName}
	// add + delete + add: replaces an existing table, creates a missing one,
	// in the same batch.
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)
	ch := c.AddChain(&nftables.Chain{
		Name:     "postrouting",
		Table:    t,
		Type:     nftables.ChainTypeNAT,
		Hooknum:  nftables.ChainHookPostrouting,
		Priority: nftables.ChainPriorityNATSource,
	})
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		// Comparing only the prefix's bytes is what `iifname "pv*"` does.
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte(r.PodIfPrefix)},
		&expr.Verdict{Kind: expr.VerdictReturn},
	}})
	for _, p := range mergePrefixes(r.NoSNAT) {
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: daddrIn(p, &expr.Verdict{Kind: expr.VerdictReturn})})
	}
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
		&expr.Counter{},
		&expr.Masq{},
	}})
	addBlocked(c, t, r)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("replace nftables table %s: %w", TableName, err)
	}
	return nil
}

// daddrIn matches the IPv4 destination against p, then runs then.
func daddrIn(p netip.Prefix, then expr.Any) []expr.Any {
	addr := p.Masked().Addr().As4()
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: net.CIDRMask(p.Bits(), 32), Xor: []byte{0, 0, 0, 0}},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: addr[:]},
		then,
	}
}

// mergePrefixes drops prefixes covered by another, so each address needs
// one rule at most.
func mergePrefixes(in []netip.Prefix) []netip.Prefix {
	ps := make([]netip.Prefix, 0, len(in))
	for _, p := range in {
		ps = append(ps, p.Masked())
	}
	slices.SortFunc(ps, func(a, b netip.Prefix) int { return a.Bits() - b.Bits() })
	var out []netip.Prefix
	for _, p := range ps {
		covered := false
		for _, q := range out {
			if q.Contains(p.Addr()) {
				covered = true
				break
			}
		}
		if !covered {
			out = append(out, p)
		}
	}
	return out
}

// Remove deletes the table; a missing table is not an error.
func Remove() error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("open nftables: %w", err)
	}
	c.DelTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: TableName})
	if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete nftables table %s: %w", TableName, err)
	}
	return nil
}

// Present reports whether podvnet's table exists.
func Present() (bool, error) {
	c, err := nftables.New()
	if err != nil {
		return false, fmt.Errorf("open nftables: %w", err)
	}
	tables, err := c.ListTablesOfFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return false, fmt.Errorf("list nftables tables: %w", err)
	}
	for _, t := range tables {
		if t.Name == TableName {
			return true, nil
		}
	}
	return false, nil
}
