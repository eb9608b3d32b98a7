package agent

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/podvnet/podvnet/internal/atomicfile"
	"github.com/podvnet/podvnet/pkg/loader"
	"github.com/podvnet/podvnet/pkg/paths"
)

// Settings are the settings a running agent put in force, written to the
// state dir at start so `debug config` can show them with the agent down.
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
	BPFFSRoot       string    `json:"bpffs_root"`
	Socket          string    `json:"socket"`
	StateDir        string    `json:"state_dir"`
}

// ReadSettings reads what the last agent put in force.
func ReadSettings(stateDir string) (*Settings, error) {
	path := paths.Node{StateDir: stateDir}.SettingsFile()
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read agent settings: %w", err)
	}
	var s Settings
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("parse %s: %w", path, err)
	}
	return &s, nil
}

// writeSettings records the settings in force; nicMode is how from_nic
// went onto the NIC.
func (a *Agent) writeSettings(nicMode loader.Mode) error {
	pool := a.alloc.Pool()
	s := Settings{
		Version:         a.cfg.Version,
		StartedAt:       time.Now().UTC().Truncate(time.Second),
		NIC:             a.nic.Attrs().Name,
		NICMTU:          a.nic.Attrs().MTU,
		PodMTU:          a.mtu(),
		Subnet:          pool.Subnet.String(),
		Gateway:         pool.Gateway.String(),
		Primary:         pool.Primary.String(),
		SecondaryIPs:    len(pool.Secondary),
		MaxPods:         a.cfg.MaxPods,
		PodLimit:        a.alloc.Limit(),
		IPCooldown:      a.cfg.Cooldown.String(),
		AttachMode:      a.describeAttachModes(nicMode),
		ConntrackLookup: a.dp.ConntrackLookup() && !a.cfg.NoConntrackLookup,
		BPFFSRoot:       a.cfg.Paths.BPFFSRoot,
		Socket:          a.cfg.Paths.Socket,
		StateDir:        a.cfg.Paths.StateDir,
	}
	for _, p := range a.noSNAT() {
		s.NoSNATCIDRs = append(s.NoSNATCIDRs, p.String())
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(a.cfg.Paths.SettingsFile(), append(b, '\n'), 0o600)
}

// describeAttachModes says how programs attach, per kind of interface.
func (a *Agent) describeAttachModes(nic loader.Mode) string {
	shaped := a.podMode(true)
	if shaped == loader.ModeAuto {
		shaped = nic
	}
	return fmt.Sprintf("%s (nic %s, pods %s, shaped pods %s)", a.cfg.AttachMode, nic, a.podMode(false), shaped)
}
