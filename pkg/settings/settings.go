// Package settings is the record of the settings a running agent put in
// force. The agent writes it to the state dir at start, so that `debug
// config` and `debug ipam` show them while the agent is down.
package settings

import (
	"fmt"
	"time"

	"github.com/podvnet/podvnet/internal/atomicfile"
	"github.com/podvnet/podvnet/pkg/paths"
)

// Settings are what one agent put in force.
type Settings struct {
	Version         string    `json:"version"`
	StartedAt       time.Time `json:"started_at"`
	NIC             string    `json:"nic"`
	NICMTU          int       `json:"nic_mtu"`
	PodMTU          int       `json:"pod_mtu"`
	Subnet          string    `json:"subnet"`
	Gateway         string    `json:"gateway"`
	Primary         string    `json:"primary"`
	SecondaryIPs    int       `json:"secondary_ips"`
	MaxPods         int       `json:"max_pods"`
	PodLimit        int       `json:"pod_limit"`
	IPCooldown      string    `json:"ip_cooldown"`
	NoSNATCIDRs     []string  `json:"no_snat_cidrs"`
	AttachMode      string    `json:"attach_mode"`
	ConntrackLookup bool      `json:"conntrack_lookup"`
	NextHop         string    `json:"next_hop"`
	// NetworkPolicy says how the agent enforced NetworkPolicy: "off"
	// (static mode, or turned off), or "on, unknown policy: deny|allow".
	NetworkPolicy string `json:"network_policy,omitempty"`
	BPFFSRoot     string `json:"bpffs_root"`
	Socket        string `json:"socket"`
	StateDir      string `json:"state_dir"`
}

// Write replaces the node's record with s, atomically.
func Write(n paths.Node, s Settings) error {
	return atomicfile.WriteJSON(n.SettingsFile(), s, 0o600)
}

// Read reads what the last agent on the node put in force. Fields a newer
// agent added are ignored: the reader may be older than the writer.
func Read(n paths.Node) (*Settings, error) {
	var s Settings
	if err := atomicfile.ReadJSON(n.SettingsFile(), &s); err != nil {
		return nil, fmt.Errorf("read agent settings: %w", err)
	}
	return &s, nil
}
