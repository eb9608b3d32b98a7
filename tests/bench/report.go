package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
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
	Reps            int                `json:"repetitions"`
	Seconds         int                `json:"seconds_per_measurement"`
	Data            []DataRow          `json:"data_path"`
	Control         []ControlRow       `json:"control_path"`
	FirstAddMS      float64            `json:"first_add_after_agent_start_ms"`
	AgentAddMS      float64            `json:"agent_add_mean_ms"` // the agent's own part of a sequential ADD (its metric)
	AgentDelMS      float64            `json:"agent_del_mean_ms"`
	ExecMS          map[string]float64 `json:"exec_ms"` // median time to start each plugin binary (VERSION)
	AgentRSSMiB     float64            `json:"agent_rss_mib_30_endpoints"`
	AgentPeakRSSMiB float64            `json:"agent_peak_rss_mib"`
	ProgCost        []ProgCostRow      `json:"program_cost"`
	Profiles        []Profile          `json:"profiles"`
	Targets         []Target           `json:"targets"`
}

// Machine names where the numbers come from.
type Machine struct {
	Date     string `json:"date"`
	Kernel   string `json:"kernel"`
	CPU      string `json:"cpu"`
	VCPUs    int    `json:"vcpus"`
	MemGiB   int    `json:"mem_gib"`
	Go       string `json:"go"`
	Commit   string `json:"commit"`
	Iperf3   string `json:"iperf3"`
	Sockperf string `json:"sockperf"`
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
	if out, err := exec.Command("sockperf", "--version").CombinedOutput(); err == nil {
		for _, line := range strings.Split(string(out), "\n") {
			if strings.Contains(line, "version") {
				m.Sockperf = strings.TrimSpace(line)
				break
			}
		}
	}
	return m
}

// Target is one goal of issue 9 and whether this run met it.
type Target struct {
	Name   string  `json:"name"`
	Want   string  `json:"want"`
	Got    float64 `json:"got"`
	Unit   string  `json:"unit"`
	Met    bool    `json:"met"`
	Detail string  `json:"detail"`
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

// evaluate compares the run with the targets, each a ratio within it.
func (r *Results) evaluate() {
	ratio := func(name, want string, a, b *DataRow, get func(*DataRow) float64, atLeast bool, goal float64) {
		if a == nil || b == nil || get(b) == 0 {
			return
		}
		x := get(a) / get(b)
		met := x >= goal
		if !atLeast {
			met = x <= goal
		}
		r.Targets = append(r.Targets, target(name, want, x, "x", met, goal))
	}
	udp := func(d *DataRow) float64 { return d.UDPKpps.Median }
	rr := func(d *DataRow) float64 { return d.RRP50.Median }
	ratio("loaded, across nodes: UDP pps vs ptp", ">= 1.30x", r.row("loaded", "podvnet", "across_nodes"), r.row("loaded", "ptp", "across_nodes"), udp, true, 1.3)
	ratio("loaded, across nodes: RR p50 vs ptp", "<= 0.85x", r.row("loaded", "podvnet", "across_nodes"), r.row("loaded", "ptp", "across_nodes"), rr, false, 0.85)
	ratio("bare, across nodes: UDP pps vs ptp", ">= 1.00x", r.row("bare", "podvnet", "across_nodes"), r.row("bare", "ptp", "across_nodes"), udp, true, 1.0)
	ratio("bare, across nodes: RR p50 vs ptp", "<= 1.00x", r.row("bare", "podvnet", "across_nodes"), r.row("bare", "ptp", "across_nodes"), rr, false, 1.0)
	ratio("bare, across nodes: UDP pps vs the node-to-node limit", ">= 0.85x", r.row("bare", "podvnet", "across_nodes"), r.row("bare", "limit", "across_nodes"), udp, true, 0.85)
	ratio("one node: RR p50 vs ptp", "<= 0.90x", r.row("bare", "podvnet", "same_node"), r.row("bare", "ptp", "same_node"), rr, false, 0.9)
	ratio("one node: UDP pps vs ptp", ">= 1.10x", r.row("bare", "podvnet", "same_node"), r.row("bare", "ptp", "same_node"), udp, true, 1.1)

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
}

func target(name, want string, got float64, unit string, met bool, goal float64) Target {
	detail := "met"
	if !met {
		detail = fmt.Sprintf("missed by %.0f%%", 100*math.Abs(got-goal)/goal)
	}
	return Target{Name: name, Want: want, Got: got, Unit: unit, Met: met, Detail: detail}
}

func fmtStat(s Stat, prec int) string {
	if len(s.All) <= 1 {
		return fmt.Sprintf("%.*f", prec, s.Median)
	}
	return fmt.Sprintf("%.*f (%.*f-%.*f)", prec, s.Median, prec, s.Min, prec, s.Max)
}

func fmtRatio(a, b float64) string {
	if b == 0 || a == 0 {
		return "-"
	}
	return fmt.Sprintf("%.2fx", a/b)
}

// dataTable returns the data path rows with ratios to the limit and the
// peers of the same profile and pair.
func (r *Results) dataTable() [][]string {
	rows := [][]string{{"profile", "pair", "path", "UDP 64B kpps", "x limit", "x ptp", "x bridge",
		"TCP RR p50 us", "x ptp", "x bridge", "TCP RR p99 us", "TCP Gbit/s"}}
	for _, d := range r.Data {
		limit := r.row(d.Profile, "limit", "across_nodes")
		ptp := r.row(d.Profile, "ptp", d.Pair)
		br := r.row(d.Profile, "bridge", d.Pair)
		get := func(x *DataRow, f func(*DataRow) float64) float64 {
			if x == nil || x == &d {
				return 0
			}
			return f(x)
		}
		udp := func(x *DataRow) float64 { return x.UDPKpps.Median }
		rr := func(x *DataRow) float64 { return x.RRP50.Median }
		xLimit := "-"
		if d.Pair == "across_nodes" && d.Path != "limit" {
			xLimit = fmtRatio(d.UDPKpps.Median, get(limit, udp))
		}
		rows = append(rows, []string{d.Profile, strings.ReplaceAll(d.Pair, "_", " "), d.Path,
			fmtStat(d.UDPKpps, 0), xLimit, ratioOrDash(d.Path, "ptp", d.UDPKpps.Median, get(ptp, udp)),
			ratioOrDash(d.Path, "bridge", d.UDPKpps.Median, get(br, udp)),
			fmtStat(d.RRP50, 1), ratioOrDash(d.Path, "ptp", d.RRP50.Median, get(ptp, rr)),
			ratioOrDash(d.Path, "bridge", d.RRP50.Median, get(br, rr)),
			fmtStat(d.RRP99, 1), fmtStat(d.TCPGbps, 1)})
	}
	return rows
}

func ratioOrDash(path, peer string, a, b float64) string {
	if path == peer || path == "limit" {
		return "-"
	}
	return fmtRatio(a, b)
}

func (r *Results) controlTable() [][]string {
	rows := [][]string{{"plugin", "30 pods", "ADD median ms", "ADD p99 ms", "ADD wall ms", "DEL median ms", "DEL p99 ms", "DEL wall ms"}}
	for _, c := range r.Control {
		rows = append(rows, []string{c.Plugin, c.Mode, f1(c.AddMedMS), f1(c.AddP99MS), f1(c.AddWallMS), f1(c.DelMedMS), f1(c.DelP99MS), f1(c.DelWallMS)})
	}
	return rows
}

func (r *Results) progTable() [][]string {
	rows := [][]string{{"program", "path", "conntrack lookup", "ns/packet"}}
	for _, p := range r.ProgCost {
		rows = append(rows, []string{p.Program, p.Path, map[bool]string{true: "on", false: "off"}[p.CTLookup], fmtStat(p.NsPerPkt, 0)})
	}
	return rows
}

func (r *Results) targetTable() [][]string {
	rows := [][]string{{"target", "want", "got", "result"}}
	for _, t := range r.Targets {
		got := fmt.Sprintf("%.2f%s", t.Got, t.Unit)
		if t.Unit != "x" {
			got = fmt.Sprintf("%.1f %s", t.Got, t.Unit)
		}
		rows = append(rows, []string{t.Name, t.Want, got, t.Detail})
	}
	return rows
}

func f1(x float64) string { return fmt.Sprintf("%.1f", x) }

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
	fmt.Fprintf(w, "\nData path (%d repetitions of %ds, median (min-max)):\n", r.Reps, r.Seconds)
	printTable(w, r.dataTable())
	fmt.Fprintln(w, "\nControl path (CNI through libcni with the real binaries):")
	printTable(w, r.controlTable())
	fmt.Fprintf(w, "first ADD after agent start: %.1f ms; agent RSS with 30 endpoints: %.1f MiB (peak %.1f MiB)\n",
		r.FirstAddMS, r.AgentRSSMiB, r.AgentPeakRSSMiB)
	fmt.Fprintln(w, "\nPer-packet program cost (BPF_PROG_TEST_RUN, kernel-timed):")
	printTable(w, r.progTable())
	if rows := r.profileTable(); rows != nil {
		fmt.Fprintln(w, "\nWhere CPU 0 goes during a 64 B UDP flood across nodes (perf, bare profile):")
		printTable(w, rows)
	}
	fmt.Fprintln(w, "\nTargets:")
	printTable(w, r.targetTable())
}

func (r *Results) writeJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}
