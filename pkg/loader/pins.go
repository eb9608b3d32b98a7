package loader

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/podvnet/podvnet/pkg/maps"
	"github.com/podvnet/podvnet/pkg/paths"
)

// linkPin is where the tcx link of a hook on an interface is pinned. Legacy
// filters need no pin; they live on the interface.
func linkPin(root string, h maps.Hook, ifname string) string {
	return paths.Node{BPFFSRoot: root}.LinkPin(h.String(), ifname)
}

// PinnedInterfaces lists the interface names with a pinned link for a hook.
func PinnedInterfaces(root string, h maps.Hook) ([]string, error) {
	entries, err := os.ReadDir(paths.Node{BPFFSRoot: root}.LinkDir(h.String()))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list pinned links: %w", err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names, nil
}
