package settings

import (
	"os"
	"testing"

	"github.com/podvnet/podvnet/pkg/paths"
)

// TestReadSkipsWhatANewerAgentAdded: `debug` may be older than the agent
// that wrote the record (a node debug pod of another release); it shows
// what it knows rather than nothing.
func TestReadSkipsWhatANewerAgentAdded(t *testing.T) {
	n := paths.Node{StateDir: t.TempDir()}
	if err := Write(n, Settings{Version: "v1", NIC: "eth0", PodMTU: 1400}); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(n.SettingsFile())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(n.SettingsFile(), append([]byte(`{"added_later":true,`), b[1:]...), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Read(n)
	if err != nil || s.NIC != "eth0" || s.PodMTU != 1400 {
		t.Fatalf("Read = %+v, %v", s, err)
	}
	if _, err := Read(paths.Node{StateDir: t.TempDir()}); err == nil {
		t.Fatal("Read of a state dir without the record succeeded")
	}
}
