package loader

import (
	"testing"

	"github.com/podvnet/podvnet/internal/nettest"
)

func TestLoadAdoptsPinnedMaps(t *testing.T) {
	nettest.RequireRoot(t)
	root := nettest.BPFFS(t)

	d, err := Load(root)
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	d2, err := Load(root)
	if err != nil {
		t.Fatalf("second load must adopt the pinned maps: %v", err)
	}
	d2.Close()
}
