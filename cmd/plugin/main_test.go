package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLinksNeitherEBPFNorMaps keeps the plugin thin: everything about the
// data path goes through the agent's API, so the binary the runtime execs
// for every pod links no eBPF library and no map layout.
func TestLinksNeitherEBPFNorMaps(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.HasPrefix(dep, "github.com/cilium/ebpf") ||
			dep == "github.com/podvnet/podvnet/pkg/maps" || dep == "github.com/podvnet/podvnet/pkg/loader" {
			t.Errorf("the plugin links %s", dep)
		}
	}
}
