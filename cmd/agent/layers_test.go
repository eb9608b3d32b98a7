package main

import (
	"os/exec"
	"strings"
	"testing"
)

// layers orders podvnet's packages top-down, as docs/design.md draws them:
// a package imports only packages of lower layers, so nothing imports back
// up (the daemon never imports what runs without it, the plugin never the
// agent). A new package gets a layer here.
var layers = [][]string{
	{"cmd/agent", "cmd/plugin"},
	{"pkg/agent", "pkg/node", "pkg/install"},
	{"pkg/cni", "pkg/loader", "pkg/snat", "pkg/nexthop"},
	{"pkg/agentapi", "pkg/ipam", "pkg/ipplan", "pkg/platform", "pkg/settings", "pkg/kube", "pkg/policymap", "internal/podroute", "internal/svcdev"},
	{"pkg/services"},
	{"pkg/maps", "pkg/policy", "internal/atomicfile", "internal/strictjson", "internal/netlinkdump", "internal/nettest", "internal/packet"},
	{"pkg/paths", "internal/ipproto"},
}

// TestPackagesImportDownward reads the import graph of the module's
// packages (tests and tools aside) and checks each import against layers.
func TestPackagesImportDownward(t *testing.T) {
	const module = "github.com/podvnet/podvnet/"
	layerOf := map[string]int{}
	for i, pkgs := range layers {
		for _, p := range pkgs {
			layerOf[p] = i
		}
	}
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}} {{join .Imports " "}}`, module+"...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg := strings.TrimPrefix(fields[0], module)
		if strings.HasPrefix(pkg, "tests/") || pkg == "deploy" {
			continue
		}
		from, ok := layerOf[pkg]
		if !ok {
			t.Errorf("%s is in no layer: add it to layers and to docs/design.md's map of the code", pkg)
			continue
		}
		for _, imp := range fields[1:] {
			dep, ours := strings.CutPrefix(imp, module)
			if !ours {
				continue
			}
			if to, known := layerOf[dep]; known && to <= from {
				t.Errorf("%s imports %s, a package of its own layer or above", pkg, dep)
			}
		}
	}
}

// TestOnlyKubeImportsKubernetes: pkg/kube is the agent's one client of the
// API server; every other package (tests of the cluster and of deploy/
// aside) sees its plain Go views, never client-go or the API types, so
// that the data path cannot grow a dependency on the API server's objects.
func TestOnlyKubeImportsKubernetes(t *testing.T) {
	const module = "github.com/podvnet/podvnet/"
	out, err := exec.Command("go", "list", "-f",
		`{{.ImportPath}} {{join .Imports " "}} {{join .TestImports " "}} {{join .XTestImports " "}}`, module+"...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	checked := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg := strings.TrimPrefix(fields[0], module)
		if pkg == "pkg/kube" || strings.HasPrefix(pkg, "tests/") || pkg == "deploy" {
			continue
		}
		checked++
		for _, imp := range fields[1:] {
			if strings.HasPrefix(imp, "k8s.io/") || strings.HasPrefix(imp, "sigs.k8s.io/") {
				t.Errorf("%s imports %s: only pkg/kube talks to Kubernetes", pkg, imp)
			}
		}
	}
	if checked < 10 {
		t.Fatalf("checked only %d packages: is the go list output what the test expects?\n%s", checked, out)
	}
}
