package node

import (
	"os"
	"strings"
	"testing"

	"github.com/podvnet/podvnet/pkg/paths"
)

// TestReadStateRefusesAMissingFile: debug and doctor must not read a wrong
// --state-dir as a node with no allocations.
func TestReadStateRefusesAMissingFile(t *testing.T) {
	dir := t.TempDir()
	if _, err := ReadState(paths.Node{StateDir: dir}); err == nil || !strings.Contains(err.Error(), "is --state-dir right?") {
		t.Fatalf("missing state file: %v", err)
	}
	if err := os.WriteFile(paths.Node{StateDir: dir}.StateFile(), []byte(`{"version":2,"allocations":[{"ip":"10.240.0.5","network":"podvnet","container_id":"c1","ifname":"eth0","since":"2026-01-01T00:00:00Z"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := ReadState(paths.Node{StateDir: dir})
	if err != nil || len(st.Allocations) != 1 || st.Allocations[0].ContainerID != "c1" {
		t.Fatalf("ReadState = %+v, %v", st, err)
	}
}
