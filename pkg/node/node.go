// Package node works on what podvnet keeps on a node without asking a
// running agent: it reads the allocation state, checks the node the way an
// engineer would (`debug doctor`) and removes everything podvnet made
// (`cleanup`). The agent may be down, or must be, for all three.
package node

import (
	"fmt"
	"os"

	"github.com/podvnet/podvnet/pkg/ipam"
	"github.com/podvnet/podvnet/pkg/paths"
)

// ReadState reads the allocations for a reader other than the agent (debug,
// doctor). The agent loads a missing file as empty; here it is an error:
// every agent writes the file at start, so a missing one means a wrong
// --state-dir, and reading it as empty would call every endpoint
// unallocated.
func ReadState(n paths.Node) (*ipam.State, error) {
	path := n.StateFile()
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("state file: %w (is --state-dir right?)", err)
	}
	return ipam.FileStore{Path: path}.Load()
}
