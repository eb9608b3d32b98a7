package main

import (
	"fmt"
	"io"
)

// writeAnalysis explains where the time goes, from this run's numbers.
func (r *Results) writeAnalysis(w io.Writer) {
	fmt.Fprintf(w, "## Where the time goes\n\n")
	var podNIC, podNICct, nicLocal, nicLocalCT float64
	for _, p := range r.ProgCost {
		switch {
		case p.Program == "from_pod" && p.Path == "pod -> pod on another node (redirect_neigh)" && !p.CTLookup:
			podNIC = p.NsPerPkt.Median
		case p.Program == "from_pod" && p.Path == "pod -> pod on another node (redirect_neigh)" && p.CTLookup:
			podNICct = p.NsPerPkt.Median
		case p.Program == "from_nic" && !p.CTLookup:
			nicLocal = p.NsPerPkt.Median
		case p.Program == "from_nic" && p.CTLookup:
			nicLocalCT = p.NsPerPkt.Median
		}
	}
	fmt.Fprintf(w, "- A packet across nodes runs from_pod (%.0f ns, %.0f ns with the conntrack lookup) on the\n"+
		"  sender's node and from_nic (%.0f ns, %.0f ns) on the receiver's: the conntrack lookup costs\n"+
		"  %.0f ns and %.0f ns per packet. Everything else is the veths and the fabric, which the\n"+
		"  node-to-node limit row pays too.\n", podNIC, podNICct, nicLocal, nicLocalCT, podNICct-podNIC, nicLocalCT-nicLocal)
	for _, t := range r.Targets {
		if !t.Met {
			fmt.Fprintf(w, "- Missed: %s (want %s, got %.2f%s).\n", t.Name, t.Want, t.Got, t.Unit)
		}
	}
	fmt.Fprintln(w)
}
