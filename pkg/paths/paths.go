// Package paths owns where podvnet keeps things on a node: the state
// directory, the agent's API socket and the bpffs root, and every file and
// directory under them. Nothing else builds such a path, so the agent, the
// plugin, `debug`, `cleanup` and the tests always agree. It imports nothing
// of podvnet: every other package may use it.
package paths

import "path/filepath"

// Defaults: where the DaemonSet puts each, and where the plugin looks when
// its config names nothing, so that the two meet unconfigured.
const (
	DefaultStateDir  = "/var/lib/podvnet"
	DefaultSocket    = "/run/podvnet/agent.sock"
	DefaultBPFFSRoot = "/sys/fs/bpf/podvnet"
)

// Node is where one node's podvnet lives.
type Node struct {
	// StateDir holds what survives a restart: the allocations, the
	// settings of the last agent, the plugin's DEL queue.
	StateDir string
	// Socket is the agent's API socket, which the plugin dials.
	Socket string
	// BPFFSRoot is the bpffs directory maps and links are pinned under.
	BPFFSRoot string
}

// Default is the node as the DaemonSet lays it out.
func Default() Node {
	return Node{StateDir: DefaultStateDir, Socket: DefaultSocket, BPFFSRoot: DefaultBPFFSRoot}
}

// StateFile is the allocation state (ipam.json).
func (n Node) StateFile() string { return filepath.Join(n.StateDir, "ipam.json") }

// SettingsFile is where the agent records the settings it put in force.
func (n Node) SettingsFile() string { return filepath.Join(n.StateDir, "settings.json") }

// PodsFile is this node's pods as the API server last showed them
// (namespace, name, UID, labels): the agent writes it, `debug endpoints`
// reads it while the agent is down.
func (n Node) PodsFile() string { return filepath.Join(n.StateDir, "pods.json") }

// PolicyIdentitiesFile is what the agent's NetworkPolicy identities stand
// for (namespace, labels), for `debug policy`; the maps hold only numbers.
func (n Node) PolicyIdentitiesFile() string {
	return filepath.Join(n.StateDir, "policy-identities.json")
}

// ServicesFile names the Services' frontend ids (the agent writes it in
// service mode bpf; debug reads it).
func (n Node) ServicesFile() string { return filepath.Join(n.StateDir, "services.json") }

// DelQueueDir is where the plugin queues the releases it could not hand to
// the agent.
func (n Node) DelQueueDir() string { return filepath.Join(n.StateDir, "del-queue") }

// StateFiles are the files directly under the state dir, in the order a
// cleanup removes them (the DEL queue is a directory of its own).
func (n Node) StateFiles() []string {
	return []string{n.StateFile(), n.SettingsFile(), n.PodsFile(), n.PolicyIdentitiesFile(), n.ServicesFile()}
}

// MapsDir holds the pinned maps.
func (n Node) MapsDir() string { return filepath.Join(n.BPFFSRoot, "maps") }

// MapPin is where the map called name is pinned.
func (n Node) MapPin(name string) string { return filepath.Join(n.MapsDir(), name) }

// LinksDir holds the pinned tcx links, one directory per hook.
func (n Node) LinksDir() string { return filepath.Join(n.BPFFSRoot, "links") }

// LinkDir holds the pinned tcx links of a hook ("nic", "pod").
func (n Node) LinkDir(hook string) string { return filepath.Join(n.LinksDir(), hook) }

// LinkPin is where the tcx link of a hook on an interface is pinned.
func (n Node) LinkPin(hook, ifname string) string { return filepath.Join(n.LinkDir(hook), ifname) }
