package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"
)

// Results is one run of the benchmark, everything measured side by side.
type Results struct {
	Machine         Machine            `json:"machine"`
	Smoke           bool               `json:"smoke"`
	Rounds          int                `json:"rounds"`
	Seconds         int                `json:"seconds_per_measurement"`
	Data            []DataRow          `json:"data_path"`
	Ratios          []Ratio            `json:"ratios"`
	Control         []ControlRow       `json:"control_path"`
	FirstAddMS      float64            `json:"first_add_after_agent_start_ms"`
	AgentAddMS      float64            `json:"agent_add_mean_ms"` // the agent's own part of a sequential ADD (its metric)
	AgentDelMS      float64            `json:"agent_del_mean_ms"`
	ExecMS          map[string]float64 `json:"exec_ms"` // median time to start each plugin binary (VERSION)
	AgentRSSMiB     float64            `json:"agent_rss_mib_30_endpoints"`
	AgentPeakRSSMiB float64            `json:"agent_peak_rss_mib"`
	Kube            *KubeMemory        `json:"agent_memory_with_api,omitempty"`
	ProgCost        []ProgCostRow      `json:"program_cost"`
	// PolicyUpdates: how long NetworkPolicy changes take to reach every
	// node's maps, at PolicyScale.
	PolicyUpdates  []PolicyUpdateRow `json:"policy_updates"`
	PolicyScale    string            `json:"policy_scale,omitempty"`
	ServicesLoaded int               `json:"services_loaded,omitempty"`
	Services       []ServiceRow      `json:"services,omitempty"`
	Changes        []ChangeRow       `json:"endpoint_changes,omitempty"`
	Profiles       []Profile         `json:"profiles"`
	Targets        []Target          `json:"targets"`
	// AgentsAlone: podvnet's data path rows ran their agents without an
	// API server (no Kubernetes binaries), asking conntrack for every packet.
	AgentsAlone bool `json:"agents_alone,omitempty"`
	// ServicesInLockstep: the services phase's rows ran at once, measured in
	// lockstep (before, its configurations ran minutes apart).
	ServicesInLockstep bool `json:"services_in_lockstep,omitempty"`
}

// Machine names where the numbers come from.
type Machine struct {
	Date   string `json:"date"`
	Kernel string `json:"kernel"`
	CPU    string `json:"cpu"`
	VCPUs  int    `json:"vcpus"`
	MemGiB int    `json:"mem_gib"`
	Go     string `json:"go"`
	Commit string `json:"commit"`
	Iperf3 string `json:"iperf3"`
}

func machine() Machine {
	m := Machine{Date: time.Now().UTC().Format("2006-01-02 15:04 UTC"), VCPUs: runtime.NumCPU(), Go: runtime.Version()}
	if out, err := exec.Command("uname", "-r").Output(); err == nil {
		m.Kernel = strings.TrimSpace(string(out))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "model name") {
				m.CPU = strings.TrimSpace(strings.SplitN(line, ":", 2)[1])
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int
		fmt.Sscanf(strings.SplitN(string(b), "\n", 2)[0], "MemTotal: %d kB", &kb)
		m.MemGiB = (kb + 512*1024) / (1024 * 1024)
	}
	if out, err := exec.Command("git", "describe", "--always", "--dirty").Output(); err == nil {
		m.Commit = strings.TrimSpace(string(out))
	}
	if out, err := exec.Command("iperf3", "--version").Output(); err == nil {
		m.Iperf3 = strings.SplitN(strings.TrimSpace(string(out)), "\n", 2)[0]
	}
	return m
}

func (r *Results) row(profile, path, pair string) *DataRow {
	for i := range r.Data {
		d := &r.Data[i]
		if d.Profile == profile && d.Path == path && d.Pair == pair {
			return d
		}
	}
	return nil
}

func (r *Results) control(plugin, mode string) *ControlRow {
	for i := range r.Control {
		if r.Control[i].Plugin == plugin && r.Control[i].Mode == mode {
			return &r.Control[i]
		}
	}
	return nil
}

// compare pairs every row round by round with the limit, ptp and bridge
// rows of its profile: UDP against all three, RR p50 against the plugins.
// The limit crosses nodes, so rows across nodes and through a Service are
// compared with it.
func (r *Results) compare() {
	r.Ratios = nil
	for _, d := range r.Data {
		for _, vs := range []string{"limit", "ptp", "bridge", "podvnet"} {
			if d.Path == vs || d.Path == "limit" || (vs == "limit" && d.Pair == sameNode) {
				continue
			}
			// NetworkPolicy's cost: podvnet with rules against podvnet.
			if vs == "podvnet" && d.Path != "podvnet-policy" {
				continue
			}
			pair := d.Pair
			if vs == "limit" {
				pair = acrossNodes
			}
			o := r.row(d.Profile, vs, pair)
			if o == nil {
				continue
			}
			metrics := []struct {
				name string
				a, b Stat
			}{{metricUDP, d.UDPKpps, o.UDPKpps}, {metricRRP50, d.RRP50, o.RRP50}}
			if vs == "limit" {
				metrics = metrics[:1]
			}
			for _, m := range metrics {
				per := pairedRatios(m.a.All, m.b.All)
				if per == nil {
					continue
				}
				x := newRatio(per)
				x.Profile, x.Pair, x.Path, x.Metric, x.Versus = d.Profile, d.Pair, d.Path, m.name, vs
				r.Ratios = append(r.Ratios, x)
			}
		}
	}
}

func (r *Results) ratio(profile, pair, path, metric, versus string) *Ratio {
	for i := range r.Ratios {
		x := &r.Ratios[i]
		if x.Profile == profile && x.Pair == pair && x.Path == path && x.Metric == metric && x.Versus == versus {
			return x
		}
	}
	return nil
}

// evaluate compares the run with the targets of issues 9 and 18, each a
// ratio within it, paired round by round.
func (r *Results) evaluate() {
	r.Targets = nil
	ratio := func(name, want, profile, pair, metric, versus string, atLeast bool, goal float64) {
		if x := r.ratio(profile, pair, "podvnet", metric, versus); x != nil {
			r.Targets = append(r.Targets, ratioTarget(name, want, *x, atLeast, goal))
		}
	}
	ratio("loaded, across nodes: UDP pps vs ptp", ">= 1.30x", "loaded", acrossNodes, metricUDP, "ptp", true, 1.3)
	ratio("loaded, across nodes: RR p50 vs ptp", "<= 0.85x", "loaded", acrossNodes, metricRRP50, "ptp", false, 0.85)
	ratio("bare, across nodes: UDP pps vs ptp", ">= 1.00x", "bare", acrossNodes, metricUDP, "ptp", true, 1.0)
	ratio("bare, across nodes: RR p50 vs ptp", "<= 1.00x", "bare", acrossNodes, metricRRP50, "ptp", false, 1.0)
	ratio("bare, across nodes: UDP pps vs the node-to-node limit", ">= 0.85x", "bare", acrossNodes, metricUDP, "limit", true, 0.85)
	ratio("one node: RR p50 vs ptp", "<= 0.90x", "bare", sameNode, metricRRP50, "ptp", false, 0.9)
	ratio("one node: UDP pps vs ptp", ">= 1.10x", "bare", sameNode, metricUDP, "ptp", true, 1.1)

	pv, ptp := r.control("podvnet", "sequential"), r.control("ptp", "sequential")
	if pv != nil && ptp != nil && ptp.AddMedMS > 0 && ptp.DelMedMS > 0 {
		add := pv.AddMedMS / ptp.AddMedMS
		r.Targets = append(r.Targets, target("CNI ADD median vs ptp+host-local", "<= 0.80x", add, "x", add <= 0.8, 0.8))
		del := pv.DelMedMS / ptp.DelMedMS
		r.Targets = append(r.Targets, target("CNI DEL median vs ptp", "<= 0.80x", del, "x", del <= 0.8, 0.8))
	}
	if par := r.control("podvnet", "parallel"); par != nil {
		r.Targets = append(r.Targets, target("30 parallel ADDs, wall time", "<= 1000 ms", par.AddWallMS, "ms", par.AddWallMS <= 1000, 1000))
	}
	if r.AgentRSSMiB > 0 {
		r.Targets = append(r.Targets, target("agent steady RSS, 30 endpoints", "<= 40 MiB", r.AgentRSSMiB, "MiB", r.AgentRSSMiB <= 40, 40))
	}
	if k := r.Kube; k != nil {
		r.Targets = append(r.Targets, target(fmt.Sprintf("agent steady RSS, %s Pods in the API", thousands(k.PodsInAPI)), "<= 60 MiB",
			k.RSSMiB, "MiB", k.RSSMiB <= 60, 60))
	}
	r.evaluateServices()
	r.evaluatePolicy()
}

// evaluatePolicy adds issue 16's targets: NetworkPolicy's cost on the fast
// path (rules on both pods against none), on ADD, and how fast a change
// reaches every node.
func (r *Results) evaluatePolicy() {
	for _, pair := range []string{sameNode, acrossNodes} {
		for _, profile := range []string{"bare", "loaded"} {
			if x := r.ratio(profile, pair, "podvnet-policy", metricUDP, "podvnet"); x != nil {
				r.Targets = append(r.Targets, ratioTarget(fmt.Sprintf("%s, %s: UDP pps, %d rules per pod vs none", profile, pairNames[pair], policyRulesPerPod),
					">= 0.97x", *x, true, 0.97))
			}
			if x := r.ratio(profile, pair, "podvnet-policy", metricRRP50, "podvnet"); x != nil {
				r.Targets = append(r.Targets, ratioTarget(fmt.Sprintf("%s, %s: RR p50, %d rules per pod vs none", profile, pairNames[pair], policyRulesPerPod),
					"<= 1.03x", *x, false, 1.03))
			}
		}
	}
	pv, pol := r.control("podvnet", "sequential"), r.control("podvnet-policy", "sequential")
	if pv != nil && pol != nil {
		more := pol.AddMedMS - pv.AddMedMS
		r.Targets = append(r.Targets, target("CNI ADD median with NetworkPolicy, more than without", "<= 5 ms", more, "ms", more <= 5, 5))
	}
	for _, u := range r.PolicyUpdates {
		if u.Change == "any" {
			r.Targets = append(r.Targets, target("NetworkPolicy change to every node's maps, p99 ("+r.PolicyScale+")", "<= 200 ms",
				u.P99MS, "ms", u.P99MS <= 200, 200))
		}
	}
}

// policyTable is how long each kind of NetworkPolicy change took.
func (r *Results) policyTable() [][]string {
	rows := [][]string{{"change", "n", "p50 ms", "p99 ms", "max ms"}}
	for _, u := range r.PolicyUpdates {
		rows = append(rows, []string{u.Change, fmt.Sprint(u.N), f1(u.P50MS), f1(u.P99MS), f1(u.MaxMS)})
	}
	return rows
}

// fmtStat is a row's metric: the median, and over several rounds the
// range and the relative median absolute deviation.
func fmtStat(s Stat, prec int) string {
	switch len(s.All) {
	case 0:
		return "-"
	case 1:
		return fmt.Sprintf("%.*f", prec, s.Median)
	}
	return fmt.Sprintf("%.*f (%.*f-%.*f) ±%.1f%%", prec, s.Median, prec, s.Min, prec, s.Max, s.MADPct)
}

var pairNames = map[string]string{sameNode: "same node", acrossNodes: "across nodes", viaService: "ClusterIP, across nodes"}

// dataTable returns every row's measurements.
func (r *Results) dataTable() [][]string {
	rows := [][]string{{"profile", "pair", "path", "UDP 64B kpps", "TCP RR p50 us", "TCP RR p99 us", "TCP Gbit/s"}}
	for _, d := range r.Data {
		rows = append(rows, []string{d.Profile, pairNames[d.Pair], d.Path,
			fmtStat(d.UDPKpps, 0), fmtStat(d.RRP50, 1), fmtStat(d.RRP99, 1), fmtStat(d.TCPGbps, 1)})
	}
	return rows
}

// ratioTable returns every row's paired ratios to the limit and the
// reference plugins of the same profile and pair.
func (r *Results) ratioTable() [][]string {
	cols := []struct{ metric, versus string }{
		{metricUDP, "limit"}, {metricUDP, "ptp"}, {metricUDP, "bridge"}, {metricRRP50, "ptp"}, {metricRRP50, "bridge"},
		{metricUDP, "podvnet"}, {metricRRP50, "podvnet"},
	}
	rows := [][]string{{"profile", "pair", "path", "UDP x limit", "UDP x ptp", "UDP x bridge", "RR p50 x ptp", "RR p50 x bridge",
		"UDP x podvnet", "RR p50 x podvnet"}}
	for _, d := range r.Data {
		row := []string{d.Profile, pairNames[d.Pair], d.Path}
		any := false
		for _, c := range cols {
			x := r.ratio(d.Profile, d.Pair, d.Path, c.metric, c.versus)
			any = any || x != nil
			row = append(row, x.String())
		}
		if any {
			rows = append(rows, row)
		}
	}
	return rows
}

func (r *Results) controlTable() [][]string {
	rows := [][]string{{"plugin", "30 pods", "ADD median ms", "ADD p99 ms", "ADD wall ms", "DEL median ms", "DEL p99 ms", "DEL wall ms"}}
	for _, c := range r.Control {
		rows = append(rows, []string{c.Plugin, c.Mode, f1(c.AddMedMS), f1(c.AddP99MS), f1(c.AddWallMS), f1(c.DelMedMS), f1(c.DelP99MS), f1(c.DelWallMS)})
	}
	return rows
}

func (r *Results) progTable() [][]string {
	rows := [][]string{{"program", "path", "services", "conntrack lookup", "ns/packet"}}
	for _, p := range r.ProgCost {
		rows = append(rows, []string{p.Program, p.Path, map[bool]string{true: "bpf", false: "kube-proxy"}[p.Services], p.Conntrack, fmtStat(p.NsPerPkt, 0)})
	}
	return rows
}

func (r *Results) targetTable() [][]string {
	rows := [][]string{{"target", "want", "got", "result"}}
	for _, t := range r.Targets {
		rows = append(rows, []string{t.Name, t.Want, t.got(), t.Detail})
	}
	return rows
}

// got is what the run measured, with the rounds' range for a ratio.
func (t Target) got() string {
	if t.Unit != "x" {
		return fmt.Sprintf("%.1f %s", t.Got, t.Unit)
	}
	if t.Min == t.Max {
		return fmt.Sprintf("%.2fx", t.Got)
	}
	return fmt.Sprintf("%.2fx (%.2f-%.2f)", t.Got, t.Min, t.Max)
}

func f1(x float64) string { return fmt.Sprintf("%.1f", x) }

// kubeMemory is the sentence on the agent's memory as an API client, empty
// when not measured.
func (r *Results) kubeMemory() string {
	k := r.Kube
	if k == nil {
		return ""
	}
	return fmt.Sprintf("agent RSS with %s Pod objects in the API server (%d of them on its node, each an endpoint; the rest on %d other nodes): %.1f MiB (peak %.1f MiB)",
		thousands(k.PodsInAPI), k.LocalPods, k.Nodes-1, k.RSSMiB, k.PeakRSSMiB)
}

// thousands writes n with a comma every three digits (5,000).
func thousands(n int) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

func printTable(w io.Writer, rows [][]string) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for i, r := range rows {
		if i == 0 {
			for j := range r {
				r[j] = strings.ToUpper(r[j])
			}
		}
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	tw.Flush()
}

func markdownTable(w io.Writer, rows [][]string) {
	for i, r := range rows {
		fmt.Fprintf(w, "| %s |\n", strings.Join(r, " | "))
		if i == 0 {
			fmt.Fprintf(w, "|%s\n", strings.Repeat("---|", len(r)))
		}
	}
}

func (r *Results) writeText(w io.Writer) {
	if len(r.Data) > 0 {
		fmt.Fprintf(w, "\nData path (%d rounds of %ds; median (min-max) ±median absolute deviation):\n", r.Rounds, r.Seconds)
		printTable(w, r.dataTable())
		fmt.Fprintln(w, "\nRatios, paired round by round (median (min-max) of the rounds' ratios):")
		printTable(w, r.ratioTable())
	}
	if len(r.Control) > 0 {
		fmt.Fprintln(w, "\nControl path (CNI through libcni with the real binaries):")
		printTable(w, r.controlTable())
		fmt.Fprintf(w, "first ADD after agent start: %.1f ms; agent RSS with 30 endpoints: %.1f MiB (peak %.1f MiB)\n",
			r.FirstAddMS, r.AgentRSSMiB, r.AgentPeakRSSMiB)
	}
	if s := r.kubeMemory(); s != "" {
		fmt.Fprintln(w, "\n"+s)
	}
	if len(r.PolicyUpdates) > 0 {
		fmt.Fprintf(w, "\nNetworkPolicy changes to every node's maps (%s):\n", r.PolicyScale)
		printTable(w, r.policyTable())
	}
	if len(r.ProgCost) > 0 {
		fmt.Fprintln(w, "\nPer-packet program cost (BPF_PROG_TEST_RUN, kernel-timed):")
		printTable(w, r.progTable())
	}
	r.writeProfileText(w)
	if len(r.Services) > 0 {
		fmt.Fprintf(w, "\nServices (%s Services in the API server; every configuration at once, %d rounds in lockstep):\n", thousands(r.ServicesLoaded), r.Rounds)
		r.writeServices(w, printTable)
	}
	fmt.Fprintln(w, "\nTargets:")
	printTable(w, r.targetTable())
}

// writeProfileText prints the profiles side by side, then each one's
// costliest symbols, and why a profile is missing.
func (r *Results) writeProfileText(w io.Writer) {
	if rows := r.profileTable(); rows != nil {
		fmt.Fprintln(w, "\nWhere the sender's CPU goes during a 64 B UDP flood across nodes (perf on CPU 0; ns per datagram, share):")
		printTable(w, rows)
	}
	for i := range r.Profiles {
		p := &r.Profiles[i]
		switch {
		case p.Error != "":
			fmt.Fprintf(w, "\nno profile of %s (%s): %s\n", p.Path, p.NodeProfile, p.Error)
		case p.NsPerDatagram != nil:
			fmt.Fprintf(w, "\n%s (%s): %d samples of the path, %d idle, %d of other processes, %.0f datagrams\n",
				p.Path, p.NodeProfile, p.Samples, p.Idle, p.Others, p.Datagrams)
			printTable(w, r.topTable(p))
		}
	}
}

// writeProfiles writes only the profiles (--profile-only).
func (r *Results) writeProfiles(w io.Writer, output string) error {
	switch output {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(struct {
			Machine  Machine   `json:"machine"`
			Profiles []Profile `json:"profiles"`
		}{r.Machine, r.Profiles})
	case "table":
		r.writeProfileText(w)
		return nil
	}
	return fmt.Errorf("-o %q: want table or json", output)
}

func (r *Results) writeJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}
