// Command bench measures podvnet's data path and control path side by side
// with the node-to-node limit and the reference ptp and bridge plugins, each
// on its own simulated VNet, in interleaved rounds, and reports ratios within
// the run with whether each exceeds the noise. `make bench` runs it in full;
// `make bench-smoke` one short round, so the harness never rots.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/podvnet/podvnet/internal/nettest"
	"github.com/podvnet/podvnet/tests/cluster"
)

// isSet says whether the command line set the flag.
func isSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func main() {
	// The benchmark binary is also the tools it runs in pods.
	if ok, err := lockstepMain(os.Args); ok {
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench %s: %v\n", os.Args[1], err)
			os.Exit(1)
		}
		return
	}
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		binDir    = flag.String("bin-dir", "bin", "directory with podvnet-agent and podvnet")
		cniBinDir = flag.String("cni-bin-dir", "", "directory with the reference plugins (ptp, bridge, host-local); built with make cni-plugins when empty")
		rounds    = flag.Int("rounds", 5, "rounds; each measures every row once, in a shuffled order (at least 3 to judge the noise)")
		dur       = flag.Duration("duration", 5*time.Second, "length of each measurement")
		smoke     = flag.Bool("smoke", false, "one short round of every row: checks the harness, not the numbers")
		profiles  = flag.String("profiles", "bare,loaded", "node profiles to measure")
		paths     = flag.String("paths", "limit,ptp,bridge,podvnet,podvnet-tcx,podvnet-policy", "paths to measure (ptp and podvnet also through a Service; the control path in the bare profile; podvnet-policy: NetworkPolicy on, against an API server)")
		output    = flag.String("o", "table", "table or json")
		markdown  = flag.String("markdown", "", "also write the report as markdown to this file (docs/benchmarks.md)")
		agentArgs = flag.String("agent-args", "", "extra flags for podvnet-agent run, space-separated (e.g. \"--attach-mode legacy\")")
		profOnly  = flag.Bool("profile-only", false, "only profile the sender's CPU during a UDP flood across nodes, for each path of --paths side by side, over --rounds interleaved rounds (e.g. --profiles bare --paths ptp,podvnet); nothing else is measured")
		phases    = flag.String("phases", "data,progcost,kube,services", "what to measure: data (data and control path, per --profiles), progcost (per-packet program cost), kube (the agent's memory with --kube-pods pods in an API server), services (pod -> ClusterIP -> pod with podvnet and with the real kube-proxy, --services Services loaded; endpoint changes)")
		kubeDirs  = flag.String("kube-dir", "", "the Kubernetes binaries of the kube and services phases (scripts/kube.sh --dir when empty)")
		kubePods  = flag.Int("kube-pods", 5000, "Pod objects in the API server for the kube phase, most on other nodes (500 with --smoke)")
		svcCount  = flag.Int("services", loadedServices, "Services (each with an EndpointSlice) in the API server for the services phase (200 with --smoke)")
		render    = flag.String("render", "", "measure nothing: write --markdown again from the results a run saved beside it (docs/benchmarks.json), e.g. after the report's prose changed")
	)
	flag.Parse()
	if *render != "" {
		return renderSaved(*render, *markdown)
	}
	if os.Geteuid() != 0 {
		return errors.New("run as root: the benchmark builds network namespaces")
	}
	for _, tool := range []string{"iperf3", "nsenter", "taskset", "nft", "ping", "ss"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found: apt-get install iperf3 util-linux nftables iputils-ping iproute2", tool)
		}
	}
	if *smoke {
		*rounds, *dur = 1, time.Second
		if !isSet("kube-pods") {
			*kubePods = 500
		}
		if !isSet("services") {
			*svcCount = 200
		}
	}
	phase := map[string]bool{}
	for _, p := range strings.Split(*phases, ",") {
		switch p {
		case "data", "progcost", "kube", "services":
			phase[p] = true
		default:
			return fmt.Errorf("--phases: %q is not data, progcost, kube or services", p)
		}
	}
	*kubeDirs = kubeDir(*kubeDirs)
	kubeErr := cluster.CheckControlPlane(*kubeDirs)
	for _, p := range []string{"kube", "services"} {
		if !phase[p] || kubeErr == nil {
			continue
		}
		if os.Getenv("CI") == "true" {
			return fmt.Errorf("the %s phase needs the Kubernetes binaries (make kube), and CI=true forbids skipping it: %w", p, kubeErr)
		}
		fmt.Fprintf(os.Stderr, "bench: %s phase skipped: %v (make kube)\n", p, kubeErr)
		delete(phase, p)
	}
	if *rounds < 1 {
		return fmt.Errorf("--rounds %d: want at least 1", *rounds)
	}
	bin, err := filepath.Abs(*binDir)
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "podvnet-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	if *cniBinDir == "" {
		// As make test and the e2e tests build them.
		cmd := exec.Command("make", "-s", "cni-plugins", "BIN="+work)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("build the reference CNI plugins: %w", err)
		}
		*cniBinDir = filepath.Join(work, "cni")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	b := &bench{prefix: nettest.Prefix(), work: work, binDir: bin, cniBinDir: *cniBinDir, rounds: *rounds, dur: *dur,
		smoke: *smoke, profileOnly: *profOnly, agentArgs: strings.Fields(*agentArgs), progress: os.Stderr, kubeDir: *kubeDirs,
		res: &Results{Machine: machine(), Smoke: *smoke, Rounds: *rounds, Seconds: int(dur.Seconds())}}
	b.paths = map[string]bool{}
	for _, p := range strings.Split(*paths, ",") {
		switch p {
		case "limit", "ptp", "bridge", "podvnet", "podvnet-tcx", "podvnet-policy":
			b.paths[p] = true
		default:
			return fmt.Errorf("--paths: %q is not limit, ptp, bridge, podvnet, podvnet-tcx or podvnet-policy", p)
		}
	}
	// podvnet's paths run their agents against an API server, as deployed.
	if kubeErr != nil && (b.paths["podvnet"] || b.paths["podvnet-tcx"] || b.paths["podvnet-policy"]) && phase["data"] {
		if os.Getenv("CI") == "true" {
			return fmt.Errorf("podvnet's paths run their agents against an API server, which needs the Kubernetes binaries (make kube), and CI=true forbids going without: %w", kubeErr)
		}
		fmt.Fprintf(os.Stderr, "bench: podvnet's agents run without an API server (asking conntrack for every packet), podvnet-policy skipped: %v (make kube)\n", kubeErr)
		delete(b.paths, "podvnet-policy")
		b.res.AgentsAlone = true
	}
	for _, profile := range strings.Split(*profiles, ",") {
		if !phase["data"] {
			break
		}
		if profile != "bare" && profile != "loaded" {
			return fmt.Errorf("--profiles: %q is not bare or loaded", profile)
		}
		b.logf("profile %s", profile)
		if err := b.dataPhase(ctx, profile); err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	if *profOnly {
		if *markdown != "" {
			return fmt.Errorf("--markdown writes the whole benchmark: not with --profile-only")
		}
		return b.res.writeProfiles(os.Stdout, *output)
	}
	if phase["data"] {
		b.execCosts()
	}
	if phase["progcost"] {
		b.logf("per-packet program cost")
		if err := b.progCost(); err != nil {
			return err
		}
	}
	if phase["kube"] {
		b.logf("the agent's memory with %d pods in the API server", *kubePods)
		if err := b.kubePhase(ctx, *kubeDirs, *kubePods); err != nil {
			return fmt.Errorf("kube phase: %w", err)
		}
	}
	if phase["services"] {
		b.logf("Services: podvnet and the real kube-proxy with %d Services in the API server", *svcCount)
		if err := b.servicesPhase(ctx, *kubeDirs, *svcCount); err != nil {
			return fmt.Errorf("services phase: %w", err)
		}
	}
	b.res.compare()
	b.res.evaluate()

	switch *output {
	case "json":
		if err := b.res.writeJSON(os.Stdout); err != nil {
			return err
		}
	case "table":
		b.res.writeText(os.Stdout)
	default:
		return fmt.Errorf("-o %q: want table or json", *output)
	}
	if *markdown != "" {
		return b.res.saveMarkdown(*markdown)
	}
	return nil
}

// savedResults is where a run keeps its results beside its markdown
// report, so that the report can be written again without measuring.
func savedResults(markdown string) string {
	return strings.TrimSuffix(markdown, filepath.Ext(markdown)) + ".json"
}

// saveMarkdown writes the report and, beside it, the results it came from.
func (r *Results) saveMarkdown(markdown string) error {
	var js bytes.Buffer
	if err := r.writeJSON(&js); err != nil {
		return err
	}
	if err := os.WriteFile(savedResults(markdown), js.Bytes(), 0o644); err != nil {
		return err
	}
	var md bytes.Buffer
	r.writeMarkdown(&md)
	return os.WriteFile(markdown, md.Bytes(), 0o644)
}

// renderSaved writes the markdown report, and the results beside it, again
// from saved results: the targets are judged and the prose written by this
// binary's code.
func renderSaved(saved, markdown string) error {
	if markdown == "" {
		return errors.New("--render needs --markdown: the report to write")
	}
	b, err := os.ReadFile(saved)
	if err != nil {
		return err
	}
	var r Results
	if err := json.Unmarshal(b, &r); err != nil {
		return fmt.Errorf("%s: %w", saved, err)
	}
	// Results of runs before the lockstep rows (sockperf's version in the
	// machine line) were measured another way than the report says.
	var old struct {
		Machine map[string]any `json:"machine"`
	}
	if json.Unmarshal(b, &old) == nil && old.Machine["sockperf"] != nil {
		return fmt.Errorf("%s was measured before UDP and RR ran in lockstep (sockperf, one row at a time): its report cannot be written again; rerun make bench", saved)
	}
	if len(r.Services) > 0 && !r.ServicesInLockstep {
		return fmt.Errorf("%s was measured before the Service configurations ran at once (one after the other, minutes apart): its report cannot be written again; rerun make bench", saved)
	}
	if len(r.Services) > 0 && r.serviceRow(pathFloor) == nil {
		return fmt.Errorf("%s was measured before the services phase's pods were Pods in the API (its podvnet rows asked conntrack for every packet) and had a veth floor: its report cannot be written again; rerun make bench", saved)
	}
	r.compare()
	r.evaluate()
	// The ratios and targets beside the report are judged again with it;
	// the measurements are written back as they were read.
	return r.saveMarkdown(markdown)
}
