package main

import (
	"fmt"
	"io"
	"strings"
)

// writeAnalysis explains where the time goes and what would close each
// missed target, with this run's numbers only.
func (r *Results) writeAnalysis(w io.Writer) {
	fmt.Fprintf(w, "## Where the time goes\n\n")
	r.writeProgramCost(w)

	ptpProf, pvProf := r.profile("bare", "ptp"), r.profile("bare", "podvnet")
	if ptpProf != nil && pvProf != nil {
		g := func(p *Profile, name string) float64 { return p.NsPerDatagram[name] }
		saved := g(ptpProf, "routing and forwarding") - g(pvProf, "routing and forwarding") +
			g(ptpProf, "receive path (backlog, softirq)") - g(pvProf, "receive path (backlog, softirq)")
		added := g(pvProf, "conntrack lookup (kfunc)") - g(ptpProf, "conntrack lookup (kfunc)") +
			g(pvProf, "podvnet programs") + g(pvProf, "bpf maps and helpers") - g(ptpProf, "bpf maps and helpers") +
			g(pvProf, "redirect and qdisc") - g(ptpProf, "redirect and qdisc")
		fmt.Fprintf(w, "**The flood, profiled.** In a 64-byte UDP flood the sender's vCPU runs the whole path, both\n"+
			"nodes' veths and the fabric included (veths process what they receive in the sender's softirq).\n"+
			"perf on that vCPU (table below, ns of its time per datagram received; other processes and idle\n"+
			"time left out) shows podvnet skipping %.0f ns per datagram that ptp spends routing, forwarding\n"+
			"and re-queueing packets, and spending %.0f ns on the conntrack lookup, the programs, their maps\n"+
			"and the redirects: %.0f ns in all against ptp's %.0f. The conntrack lookup alone is %.0f ns.\n"+
			"`--profile-only --profiles bare --paths ptp,podvnet` records this alone, over --rounds.\n\n",
			saved, added, g(pvProf, "total"), g(ptpProf, "total"), g(pvProf, "conntrack lookup (kfunc)"))
		markdownTable(w, r.profileTable())
		fmt.Fprintln(w)
	}
	for _, p := range r.Profiles {
		if p.Error != "" {
			fmt.Fprintf(w, "(No perf profile for %s: %s.)\n\n", p.Path, p.Error)
		}
	}

	if pv := r.control("podvnet", "sequential"); pv != nil {
		fmt.Fprintf(w, "**CNI ADD.** podvnet's median ADD takes %.1f ms end to end through libcni; the agent's own\n"+
			"part (its podvnet_cni_request_duration_seconds, read before and after the round) is %.1f ms,\n"+
			"of which persisting the allocation (temp file, fsync, rename, directory fsync) is the largest.\n"+
			"Starting a plugin binary costs %.1f ms (podvnet), %.1f ms (ptp) and %.1f ms (host-local, which\n"+
			"ptp runs too). The rest is libcni and the plugin's netlink work: the veth pair and the pod's\n"+
			"address, neighbour and route. from_pod is attached after ADD answers; a tcx attach would hold\n"+
			"the RTNL lock through an RCU grace period, as the podvnet-tcx rows show (%s).\n\n",
			pv.AddMedMS, r.AgentAddMS, r.ExecMS["podvnet"], r.ExecMS["ptp"], r.ExecMS["host-local"], tcxADD(r))
	}

	r.writeService(w)

	open := false
	said := map[string]bool{}
	for _, t := range r.Targets {
		if t.Met {
			continue
		}
		if !open {
			fmt.Fprintf(w, "## Targets not met and what would close them\n\n")
			open = true
		}
		why := r.closeGap(t)
		if why != "" && said[why] {
			why = "As above."
		}
		said[why] = true
		fmt.Fprintf(w, "- **%s**: want %s, got %s, %s. %s\n", t.Name, t.Want, t.got(), t.Detail, why)
	}
	fmt.Fprintln(w)
}

// writeService compares ptp and podvnet through a Service, per profile.
func (r *Results) writeService(w io.Writer) {
	first := true
	for _, profile := range []string{"bare", "loaded"} {
		pv, ptp := r.row(profile, "podvnet", viaService), r.row(profile, "ptp", viaService)
		if pv == nil || ptp == nil {
			continue
		}
		if first {
			fmt.Fprintf(w, "**Through a Service.** On the client's node both plugins hand the request to the kernel,\n"+
				"where kube-proxy's DNAT sends it to the backend; podvnet's programs then take it past the stack\n"+
				"into the backend on the other node and the reply out of it, and on the client's node from_nic\n"+
				"finds the reply's connection NAT'd and hands it to the stack, which translates it back.\n")
			first = false
		}
		fmt.Fprintf(w, "In the %s profile: podvnet %.0f kpps and RR p50 %.1f us, ptp %.0f kpps and %.1f us (UDP %s, RR %s).\n",
			profile, pv.UDPKpps.Median, pv.RRP50.Median, ptp.UDPKpps.Median, ptp.RRP50.Median,
			r.ratio(profile, viaService, "podvnet", metricUDP, "ptp"), r.ratio(profile, viaService, "podvnet", metricRRP50, "ptp"))
	}
	if !first {
		fmt.Fprintln(w)
	}
}

func tcxADD(r *Results) string {
	if c := r.control("podvnet-tcx", "sequential"); c != nil {
		return fmt.Sprintf("ADD median %.1f ms", c.AddMedMS)
	}
	return "not measured"
}

// writeProgramCost says what the programs cost per packet, with and
// without the conntrack lookup; nothing when the progcost phase did not run.
func (r *Results) writeProgramCost(w io.Writer) {
	cost := r.progCost
	podOff, podOn := cost("from_pod", pathCachedNextHop, ctOff, false), cost("from_pod", pathCachedNextHop, ctEvery, false)
	nicOff, nicOn := cost("from_nic", pathFromNIC, ctOff, false), cost("from_nic", pathFromNIC, ctEvery, false)
	if podOn == 0 || nicOn == 0 {
		return
	}
	fmt.Fprintf(w, "**The programs.** A packet across nodes runs from_pod on the sender's node (%.0f ns; %.0f ns\n"+
		"with the conntrack lookup) and from_nic on the receiver's (%.0f ns; %.0f ns). The conntrack lookup,\n"+
		"which keeps replies of NAT'd connections (Services, NodePorts, hostPorts) correct, is the largest\n"+
		"part: %.0f ns and %.0f ns.\n\n", podOff, podOn, nicOff, nicOn, podOn-podOff, nicOn-nicOff)
	podPort, nicPort := cost("from_pod", pathCachedNextHop, ctByPort, false), cost("from_nic", pathFromNIC, ctByPort, false)
	podBPF, nicBPF := cost("from_pod", pathCachedNextHop, ctByPort, true), cost("from_nic", pathFromNIC, ctByPort, true)
	fmt.Fprintf(w, "**The lookup by port.** With the agent watching the API, the lookup asks conntrack only for a\n"+
		"packet whose source port a Service's backend (or a hostPort) serves on, where kernel NAT may have\n"+
		"a reply to translate: any other packet costs from_pod %.0f ns and from_nic %.0f ns (every packet:\n"+
		"%.0f and %.0f). In --service-mode bpf, where only hostPorts are NAT'd by the kernel and the\n"+
		"programs look for their own translations' replies instead: %.0f ns and %.0f ns.\n\n",
		podPort, nicPort, podOn, nicOn, podBPF, nicBPF)
}

// progCost is the median ns per packet of a program on a path, with the
// conntrack lookup mode and Services mode given; 0 when not measured.
func (r *Results) progCost(prog, path, ct string, svc bool) float64 {
	for _, p := range r.ProgCost {
		if p.Program == prog && p.Path == path && p.Conntrack == ct && p.Services == svc {
			return p.NsPerPkt.Median
		}
	}
	return 0
}

// closeGap says, per target, what stands in the way, from the run.
func (r *Results) closeGap(t Target) string {
	cost := r.progCost
	ptpLoaded, pvLoaded := r.row("loaded", "ptp", "across_nodes"), r.row("loaded", "podvnet", "across_nodes")
	pvBare, limitLoaded := r.row("bare", "podvnet", "across_nodes"), r.row("loaded", "limit", "across_nodes")
	switch t.Name {
	case "loaded, across nodes: UDP pps vs ptp", "loaded, across nodes: RR p50 vs ptp":
		if ptpLoaded == nil || pvLoaded == nil || pvBare == nil || limitLoaded == nil {
			return ""
		}
		return fmt.Sprintf("The fast path does not feel the load (%.0f kpps loaded, %.0f bare); ptp pays conntrack and "+
			"5,000 rules (%.0f kpps). The target asks for about the node-to-node limit of the loaded profile "+
			"(%.0f kpps, %.1f us), which crosses two veths where a pod path crosses four.",
			pvLoaded.UDPKpps.Median, pvBare.UDPKpps.Median, ptpLoaded.UDPKpps.Median, limitLoaded.UDPKpps.Median, limitLoaded.RRP50.Median)
	case "one node: RR p50 vs ptp":
		pv, ptp := r.row("bare", "podvnet", sameNode), r.row("bare", "ptp", sameNode)
		prog := cost("from_pod", pathSameNode, ctByPort, false)
		if pv == nil || ptp == nil || pv.RRP50.Median == 0 || prog == 0 {
			return ""
		}
		return fmt.Sprintf("On one node podvnet's message is one redirect_peer after the sending pod's veth; ptp's also "+
			"passes the host's ip_rcv, forwarding and a second veth pair (%.1f against %.1f us a round trip). What is left "+
			"is what both pay: per round trip two veth transmits and softirq passes, four syscalls and two wake-ups on one "+
			"vCPU. from_pod runs once per message, %.0f ns, %.1f%% of the round trip: programs that cost nothing would "+
			"still miss. Only taking the pod's veth out would close it: netkit (not on this kernel), or passing the bytes "+
			"from socket to socket (sockmap), which skips TCP/IP and with it tc's NetworkPolicy, counters and packet "+
			"captures; not built.", pv.RRP50.Median, ptp.RRP50.Median, prog, 100*2*prog/1000/pv.RRP50.Median)
	case "bare, across nodes: UDP pps vs ptp", "bare, across nodes: RR p50 vs ptp", "one node: UDP pps vs ptp":
		lookup := "The conntrack lookup is already asked only for packets of the ports kernel NAT may answer from"
		if podPort, podOn := cost("from_pod", pathCachedNextHop, ctByPort, false), cost("from_pod", pathCachedNextHop, ctEvery, false); podPort > 0 {
			lookup += fmt.Sprintf(" (from_pod %.0f ns instead of %.0f)", podPort, podOn)
		}
		return "On a bare node the kernel's routed path costs about what the programs do (profile above). " + lookup +
			", and not at all for flows --service-mode bpf translates; what is left is the programs' own checks " +
			"(anti-spoofing, blocked endpoints, policy, the endpoint lookups) against a routed path that, on an idle " +
			"node, has no netfilter rules to walk. Each path crosses the pod's veth pair; netkit, which this kernel " +
			"lacks, would remove that hop from podvnet's and not from ptp's."
	case "bare, across nodes: UDP pps vs the node-to-node limit":
		return "The limit crosses the two node veths; a pod path crosses the pod's veth pair at each end too. " +
			"redirect_peer spares the receiving pod's backlog pass, but the sending pod's veth still queues " +
			"every packet to the host side's backlog (ptp pays the same). netkit, which this kernel lacks, " +
			"would remove that hop."
	case "CNI ADD median vs ptp+host-local":
		return fmt.Sprintf("Starting the plugin (%.1f ms) and the agent's part (%.1f ms) leave little; "+
			"the agent could batch its fsyncs across concurrent ADDs, and the plugin enter the pod's netns once "+
			"instead of three times.", r.ExecMS["podvnet"], r.AgentAddMS)
	}
	if bpf, direct := r.serviceRow(pathBPF), r.serviceRow(pathDirect); bpf != nil && direct != nil {
		for _, kp := range []string{"nftables", "iptables"} {
			ptp := r.serviceRow("ptp + kube-proxy " + kp)
			if ptp == nil {
				continue
			}
			// What a Service could reach at best: the path with no Service.
			switch t.Name {
			case "Service (bpf): UDP pps vs ptp + kube-proxy " + kp:
				return fmt.Sprintf("Even the direct path, with no Service at all, is %s ptp + kube-proxy %s in this run "+
					"(%.0f against %.0f kpps, paired by round): on this fabric kube-proxy's NAT costs little next to what every "+
					"path pays (four veths, softirq, scheduling). A Service can at best ride the direct path, and the ClusterIP "+
					"does (%s of it).", pairedString(direct.UDPKpps, ptp.UDPKpps), kp,
					direct.UDPKpps.Median, ptp.UDPKpps.Median, pairedString(bpf.UDPKpps, direct.UDPKpps))
			case "Service (bpf): RR speed-up vs ptp + kube-proxy " + kp:
				return fmt.Sprintf("Even the direct path, with no Service at all, is only %s faster than ptp + kube-proxy %s "+
					"in this run (RR p50 %.1f against %.1f us, paired by round), and a Service can at best ride the direct "+
					"path: the ClusterIP does (RR p50 %s of it).%s", pairedString(ptp.RRP50, direct.RRP50), kp,
					direct.RRP50.Median, ptp.RRP50.Median, pairedString(bpf.RRP50, direct.RRP50), r.limitVsService(ptp, direct, serviceGoal))
			}
		}
		if strings.HasPrefix(t.Name, "Service (bpf): UDP pps vs podvnet direct") && t.Result == targetMissed {
			return "After connect() the client's datagrams carry the backend's address and take the direct path's " +
				"programs, so a gap beyond the noise is not in the per-packet path: profile the two floods side by side."
		}
	}
	if strings.Contains(t.Name, "UDP pps, ") && strings.Contains(t.Name, "rules per pod vs none") && t.Result == targetMissed {
		if why := r.policyCost(t.Name); why != "" {
			return why
		}
	}
	if t.Result == targetWithinNoise {
		return fmt.Sprintf("The rounds lie on both sides of the goal (%.2f-%.2fx): this run cannot tell the two apart "+
			"(two VNets of one configuration measure up to 2-3%% apart, docs/design.md).", t.Min, t.Max)
	}
	return ""
}

// policyCost explains a NetworkPolicy UDP target with what the rules add
// per packet, against the whole path's time per datagram.
func (r *Results) policyCost(name string) string {
	profile := strings.SplitN(name, ",", 2)[0]
	pair := acrossNodes
	if strings.Contains(name, "same node") {
		pair = sameNode
	}
	pv := r.row(profile, "podvnet", pair)
	pod, podPol := r.progCost("from_pod", pathCachedNextHop, ctByPort, false), r.progCost("from_pod", pathCachedNextHop+", NetworkPolicy", ctByPort, false)
	nic, nicPol := r.progCost("from_nic", pathFromNIC, ctByPort, false), r.progCost("from_nic", pathFromNIC+", NetworkPolicy", ctByPort, false)
	if pv == nil || pv.UDPKpps.Median == 0 || podPol == 0 || nicPol == 0 {
		return ""
	}
	perDatagram := 1e6 / pv.UDPKpps.Median
	rest := "The rest of the gap is close to what two VNets of one configuration differ by (up to 2-3%, docs/design.md)."
	if pair == sameNode {
		return fmt.Sprintf("A datagram on one node takes %.0f ns of the sender's vCPU without rules. from_pod judges "+
			"the sender's egress and the receiver's ingress with one flow table lookup, which costs from_pod %+.0f ns "+
			"across nodes, timed alone (no same-node row times it): %.1f%% of that. %s",
			perDatagram, podPol-pod, 100*(podPol-pod)/perDatagram, rest)
	}
	added := podPol - pod + nicPol - nic
	return fmt.Sprintf("A datagram across nodes takes %.0f ns of the sender's vCPU without rules. The rules add a flow "+
		"table lookup to from_pod (%+.0f ns) and from_nic (%+.0f ns), timed alone: %.1f%% of that; and to_nic runs on "+
		"the NIC's egress for every packet out once NetworkPolicy is on (it passes what from_pod judged at once; not "+
		"timed here). %s", perDatagram, podPol-pod, nicPol-nic, 100*added/perDatagram, rest)
}

// pairedString is a over b, paired by round: median (range), for prose.
func pairedString(a, b Stat) string {
	r := newRatio(pairedRatios(a.All, b.All))
	return fmt.Sprintf("%.2fx (%.2f-%.2f)", r.Median, r.Min, r.Max)
}

// limitVsService says what the node-to-node limit and the veth floor
// measured beside the Service rows leave a pod path against ptp +
// kube-proxy (paired by round), and what stands between the direct path
// and the floor.
func (r *Results) limitVsService(ptp, direct *ServiceRow, goal float64) string {
	limit, floor := r.serviceRow(pathLimit), r.serviceRow(pathFloor)
	if limit == nil || floor == nil {
		return ""
	}
	speedup := newRatio(pairedRatios(ptp.RRP50.All, limit.RRP50.All))
	s := fmt.Sprintf(" The node-to-node limit measured beside them (node eth0 to node eth0 on a pair that runs nothing) "+
		"is %s faster than %s (RR p50 %.1f us)", speedup.String(), ptp.Path, limit.RRP50.Median)
	if speedup.Median < goal {
		return s + fmt.Sprintf(": a pod path reaching %.1fx would have to beat the fabric's own limit.", goal)
	}
	s += fmt.Sprintf(": %.1fx asks a pod path to come within %.0f%% of the nodes' own round trip.", goal, 100*(speedup.Median/goal-1))
	least := newRatio(pairedRatios(ptp.RRP50.All, floor.RRP50.All))
	s += fmt.Sprintf(" The veth floor beside them (ptp's pods, whose packets two programs of a few instructions move "+
		"between the pod's veth and the NIC: no check, map or Service, the least a pod path on veths pays) takes %s "+
		"the limit's round trip and is %s faster than %s", pairedString(floor.RRP50, limit.RRP50), least.String(), ptp.Path)
	switch {
	case least.Max < goal:
		s += fmt.Sprintf(": in no round does a pod path on veths reach %.1fx. netkit, which this kernel lacks, would take "+
			"the sending pod's veth out.", goal)
	case least.Min >= goal:
		s += fmt.Sprintf(": %.1fx is within a veth pod path's reach.", goal)
	default:
		s += fmt.Sprintf(": its rounds lie on both sides of %.1fx.", goal)
	}
	s += fmt.Sprintf(" podvnet's direct path takes %s the floor's (%+.1f us)", pairedString(direct.RRP50, floor.RRP50),
		direct.RRP50.Median-floor.RRP50.Median)
	pod, nic := r.progCost("from_pod", pathCachedNextHop, ctByPort, true), r.progCost("from_nic", pathFromNIC, ctByPort, true)
	if pod == 0 || nic == 0 {
		return s + "."
	}
	// A round trip is two messages, each through from_pod and from_nic.
	return s + fmt.Sprintf(", of which its programs' own time is %.2f us (from_pod %.0f and from_nic %.0f ns a message, "+
		"program cost table); a test run does not time the rest: their maps' cache misses between two processes' "+
		"round trips, and legacy tc's classifier around them (the floor attaches through tcx).", 2*(pod+nic)/1000, pod, nic)
}
