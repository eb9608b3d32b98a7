package loader

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/podvnet/podvnet/pkg/maps"
)

// Where tcx links are pinned: <root>/links/<hook>/<ifname>. Legacy filters
// need no pin; they live on the interface.

// LinksDir holds the pinned tcx links, one directory per hook.
func LinksDir(root string) string { return filepath.Join(root, "links") }

// LinkPinDir holds the pinned tcx links of a hook.
func LinkPinDir(root string, h maps.Hook) string { return filepath.Join(LinksDir(root), h.String()) }

// LinkPin is where the tcx link of a hook on an interface is pinned.
func LinkPin(root string, h maps.Hook, ifname string) string {
	return filepath.Join(LinkPinDir(root, h), ifname)
}

// PinnedInterfaces lists the interface names with a pinned link for a hook.
func PinnedInterfaces(root string, h maps.Hook) ([]string, error) {
	entries, err := os.ReadDir(LinkPinDir(root, h))
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
