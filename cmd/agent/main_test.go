package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// runCLI runs podvnet-agent with args and returns stdout and the error
// main would print before exiting 1.
func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := newRootCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	return out.String(), err
}

// runCLISplit runs the CLI and keeps stdout and stderr apart.
func runCLISplit(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cmd := newRootCommand()
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(args)
	err = cmd.Execute()
	return out.String(), errOut.String(), err
}

func TestPlanCommand(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantOut []string
		wantErr string // "" means exit 0
	}{
		{
			name:    "fits",
			args:    []string{"--subnet", "10.240.0.0/21", "--nodes", "50"},
			wantOut: []string{"NEEDED     1555 (50 x 31 + 0 + 5)", "FITS       yes", "MAX NODES  65"},
		},
		{
			name:    "does not fit",
			args:    []string{"--subnet", "10.240.0.0/22", "--nodes", "50", "--extra-ips", "20"},
			wantOut: []string{"NEEDED     1575 (50 x 31 + 20 + 5)", "FITS       no", "MAX NODES  32"},
			wantErr: "the plan does not fit: 1575 addresses needed, 10.240.0.0/22 has 1024 (at most 32 nodes of 30 pods)",
		},
		{
			name:    "above Azure CNI's VNet limit",
			args:    []string{"--subnet", "10.240.0.0/16", "--nodes", "3", "--max-pods", "110"},
			wantOut: []string{"NEEDED     338 (3 x 111 + 0 + 5)", "warning: subnet 10.240.0.0/16 has 65536 addresses, more than the 4096"},
		},
		{
			name:    "colliding settings",
			args:    []string{"--subnet", "10.0.0.0/20", "--nodes", "3"},
			wantOut: []string{"FITS       yes", "problem: --service-cidr 10.0.0.0/16 overlaps the node subnet 10.0.0.0/20"},
			wantErr: "cluster settings: --service-cidr 10.0.0.0/16 overlaps the node subnet 10.0.0.0/20",
		},
		{
			name:    "bad DNS IP",
			args:    []string{"--subnet", "10.240.0.0/20", "--nodes", "3", "--dns-service-ip", "10.0.0.1"},
			wantErr: "--dns-service-ip 10.0.0.1 is the first address of --service-cidr 10.0.0.0/16",
		},
		{name: "no subnet", args: []string{"--nodes", "3"}, wantErr: `required flag(s) "subnet" not set`},
		{name: "bad subnet", args: []string{"--subnet", "10.240.0.0", "--nodes", "3"}, wantErr: `--subnet "10.240.0.0": not an IPv4 CIDR`},
		{name: "bad output", args: []string{"--subnet", "10.240.0.0/20", "--nodes", "3", "-o", "yaml"}, wantErr: `-o "yaml": want table or json`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := runCLI(t, append([]string{"plan"}, tt.args...)...)
			if tt.wantErr == "" && err != nil {
				t.Fatalf("exit 1: %v\n%s", err, out)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("got %v, want an error containing %q\n%s", err, tt.wantErr, out)
			}
			for _, want := range tt.wantOut {
				if !strings.Contains(out, want) {
					t.Errorf("output lacks %q:\n%s", want, out)
				}
			}
		})
	}
}

func TestPlanJSON(t *testing.T) {
	out, err := runCLI(t, "plan", "--subnet", "10.240.0.0/22", "--nodes", "50", "-o", "json", "--docker-bridge-cidr", "10.240.1.1/24")
	if err == nil {
		t.Fatal("a plan that does not fit exited 0")
	}
	var p planOutput
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		t.Fatalf("stdout is not the JSON plan: %v\n%s", err, out)
	}
	if p.Needed != 1555 || p.Addresses != 1024 || p.Fits || p.MaxNodes != 32 || p.PerNode != 31 || p.Reserved != 5 {
		t.Fatalf("plan = %+v", p)
	}
	if len(p.Problems) != 1 || !strings.Contains(p.Problems[0], "--docker-bridge-cidr 10.240.1.1/24 overlaps the node subnet 10.240.0.0/22") {
		t.Fatalf("problems = %q", p.Problems)
	}
}

func TestDebugIPAM(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "ipam.json"), []byte(`{"version":2,
		"pool":{"subnet":"10.240.0.0/16","primary":"10.240.0.4","secondary":["10.240.0.5","10.240.0.6","10.240.0.7","10.240.0.8"]},
		"allocations":[
			{"ip":"10.240.0.5","network":"podvnet","container_id":"0123456789abcdef","ifname":"eth0","pod_namespace":"default","pod_name":"web-0","host_ifname":"pv0123456789ab","since":"2026-01-01T00:00:00Z"},
			{"ip":"10.240.0.9","network":"podvnet","container_id":"fedcba","ifname":"eth0","since":"2026-01-01T00:00:00Z"}],
		"cooling":[{"ip":"10.240.0.6","until":"2999-01-01T00:00:00Z"},{"ip":"10.240.0.7","until":"2001-01-01T00:00:00Z"},{"ip":"10.240.0.20","until":"2999-01-01T00:00:00Z"}]}`), 0o600)

	// No agent pinned maps here: the endpoints check is skipped, on stderr.
	noMaps := t.TempDir()
	out, stderr, err := runCLISplit(t, "debug", "ipam", "--state-dir", dir, "--bpffs-root", noMaps, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stderr, "warning: endpoints not checked") || !strings.Contains(stderr, noMaps) {
		t.Errorf("stderr %q, want a warning naming %s", stderr, noMaps)
	}
	var rows []ipamRow
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	got := map[string]string{}
	var order []string
	for _, r := range rows {
		got[r.IP] = r.State
		order = append(order, r.IP)
	}
	want := map[string]string{
		"10.240.0.5": "allocated", "10.240.0.6": "cooling", "10.240.0.7": "free", "10.240.0.8": "free",
		"10.240.0.9": "withdrawn", // held, but the pool no longer lists it
		// 10.240.0.20 cools but left the pool: it is not coming back.
	}
	if len(got) != len(want) || strings.Join(order, " ") != "10.240.0.5 10.240.0.6 10.240.0.7 10.240.0.8 10.240.0.9" {
		t.Fatalf("rows %v, want %v sorted by IP", got, want)
	}
	for ip, st := range want {
		if got[ip] != st {
			t.Errorf("%s is %q, want %q", ip, got[ip], st)
		}
	}

	table, _, err := runCLISplit(t, "debug", "ipam", "--state-dir", dir, "--bpffs-root", noMaps)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(table, "IP          STATE") || !strings.Contains(table, "default/web-0  0123456789ab") ||
		!strings.Contains(table, "5 addresses, 4 in the pool of 10.240.0.0/16 (node IP 10.240.0.4): 1 allocated, 1 withdrawn, 1 cooling, 2 free\n") ||
		!strings.HasSuffix(table, "warning: 10.240.0.9 (-): held by a pod but no longer listed by the pool source: the fabric may not route it here\n") {
		t.Fatalf("table:\n%s", table)
	}

	if _, err := runCLI(t, "debug", "ipam", "--state-dir", filepath.Join(dir, "nope")); err == nil || !strings.Contains(err.Error(), "is --state-dir right?") {
		t.Fatalf("missing state file: %v", err)
	}
}

// TestRunRefusesBadSettings: `run` checks the cluster settings against the
// pool it learned before it touches the node.
func TestRunRefusesBadSettings(t *testing.T) {
	pool := filepath.Join(t.TempDir(), "pool.json")
	os.WriteFile(pool, []byte(`{"subnet":"10.240.0.0/16","gateway":"10.240.0.1","primary":"10.240.0.4","secondary":["10.240.0.5"]}`), 0o600)
	// No metrics endpoint: a test must not take a port of the root namespace.
	base := []string{"run", "--ipam-source", "static", "--pool-file", pool, "--state-dir", t.TempDir(), "--log-level", "error", "--metrics-addr", ""}
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"service CIDR overlaps the pool subnet", []string{"--service-cidr", "10.240.0.0/12", "--dns-service-ip", "10.240.0.10"},
			"cluster settings: --service-cidr 10.240.0.0/12 overlaps the node subnet 10.240.0.0/16"},
		{"service CIDR overlaps a no-SNAT range", []string{"--no-snat-cidrs", "10.0.0.0/8"},
			"--service-cidr 10.0.0.0/16 overlaps --no-snat-cidrs range 10.0.0.0/8"},
		{"DNS IP outside", []string{"--dns-service-ip", "10.1.0.10"}, "--dns-service-ip 10.1.0.10 is outside --service-cidr 10.0.0.0/16"},
		{"docker bridge overlaps the pool subnet", []string{"--docker-bridge-cidr", "10.240.255.1/24"},
			"--docker-bridge-cidr 10.240.255.1/24 overlaps the node subnet 10.240.0.0/16"},
		{"malformed service CIDR", []string{"--service-cidr", "10.0.0.0/40"}, `--service-cidr "10.0.0.0/40": not an IPv4 CIDR`},
		{"unknown source", []string{"--ipam-source", "dhcp"}, `--ipam-source "dhcp": want nmagent, imds or static`},
		{"unknown next hop mode", []string{"--next-hop", "neigh"}, `--next-hop "neigh": want auto, gateway or kernel`},
		{"bad pool file", []string{"--pool-file", filepath.Join(t.TempDir(), "none.json")}, "learn the pool from static"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := runCLI(t, append(append([]string{}, base...), tt.args...)...)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}
