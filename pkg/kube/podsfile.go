package kube

import (
	"fmt"
	"time"

	"github.com/podvnet/podvnet/internal/atomicfile"
	"github.com/podvnet/podvnet/pkg/paths"
)

// PodsFile is this node's pods as the API server last showed them, which
// the agent keeps in the state dir (paths.Node.PodsFile) so that `debug
// endpoints` can name an endpoint's labels while the agent is down. It is
// a cache: the allocations in the state file are the record of what runs.
type PodsFile struct {
	Node string `json:"node"`
	// UpdatedAt is when the view last changed, not when the API server
	// last answered (the agent's /readyz and metrics say that).
	UpdatedAt time.Time `json:"updated_at"`
	Pods      []Pod     `json:"pods"`
}

// WritePodsFile replaces the pods file, atomically.
func WritePodsFile(n paths.Node, node string, pods []Pod) error {
	if pods == nil {
		pods = []Pod{}
	}
	return atomicfile.WriteJSON(n.PodsFile(), PodsFile{Node: node, UpdatedAt: time.Now().UTC().Truncate(time.Second), Pods: pods}, 0o600)
}

// ReadPodsFile reads the pods file. Fields a newer agent added are ignored:
// the reader may be older than the writer.
func ReadPodsFile(n paths.Node) (*PodsFile, error) {
	var f PodsFile
	if err := atomicfile.ReadJSON(n.PodsFile(), &f); err != nil {
		return nil, fmt.Errorf("read pods file: %w", err)
	}
	return &f, nil
}
