package snat

import (
	"encoding/binary"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// addBlocked adds the chain that drops forwarded pod traffic to each
// blocked destination:
//
//	chain forward {
//	  type filter hook forward priority filter; policy accept;
//	  iifname "pv*" ip daddr 168.63.129.16 meta l4proto tcp th dport 80 counter drop
//	  ...                                    # one rule per blocked endpoint
//	}
//
// from_pod drops these before any forwarding decision, but a pod's packets
// take the kernel path while no program runs on its veth: from ADD until
// the agent attaches from_pod just after answering, and whenever the
// programs are detached. This is AKS's iptables rule
// (`-A FORWARD -d 168.63.129.16 -p tcp --dport 80 -j DROP`) for that path.
// It also catches a Service whose backend is a blocked endpoint: kube-proxy
// DNATs in prerouting, before forward sees the packet. Conntrack reassembles
// fragments before forward, so unlike the map it needs no fragment guard.
// The node's own traffic goes through output, not forward: hostNetwork pods
// (the node) keep their access.
func addBlocked(c *nftables.Conn, t *nftables.Table, r Rules) {
	if len(r.Blocked) == 0 {
		return
	}
	ch := c.AddChain(&nftables.Chain{
		Name:     "forward",
		Table:    t,
		Type:     nftables.ChainTypeFilter,
		Hooknum:  nftables.ChainHookForward,
		Priority: nftables.ChainPriorityFilter,
	})
	for _, e := range r.Blocked {
		addr := e.Addr.As4()
		port := binary.BigEndian.AppendUint16(nil, e.Port)
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte(r.PodIfPrefix)},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: addr[:]},
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{byte(e.Proto)}},
			// TCP, UDP and SCTP keep the destination port at offset 2.
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: port},
			&expr.Counter{},
			&expr.Verdict{Kind: expr.VerdictDrop},
		}})
	}
}
