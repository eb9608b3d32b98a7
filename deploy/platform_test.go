package deploy

import (
	"slices"
	"testing"

	"github.com/podvnet/podvnet/pkg/platform"
)

// TestShippedConfigBlocksThePlatform: the ConfigMap a cluster gets blocks
// what AKS blocks for pods; an empty or mistyped value would expose the
// WireServer on every node.
func TestShippedConfigBlocksThePlatform(t *testing.T) {
	_, a := loadAgent(t, bins(t))
	eps, err := platform.ParseList(a.flag(t, "blocked-endpoints"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []platform.Endpoint{platform.Wireserver, platform.HostGAPlugin} {
		if !slices.Contains(eps, want) {
			t.Errorf("--blocked-endpoints=%s does not block %s", platform.Format(eps), want)
		}
	}
	if a.flag(t, "block-imds") != "false" {
		t.Errorf("--block-imds=%s: Azure lets pods reach IMDS, and so does the shipped default", a.flag(t, "block-imds"))
	}
}
