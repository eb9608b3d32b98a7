package agent

import (
	"fmt"
	"time"

	"github.com/podvnet/podvnet/pkg/loader"
	"github.com/podvnet/podvnet/pkg/settings"
)

// writeSettings records the settings in force; nicMode is how from_nic
// went onto the NIC.
func (a *Agent) writeSettings(nicMode loader.Mode) error {
	pool := a.alloc.Pool()
	s := settings.Settings{
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
		NextHop:         string(a.cfg.NextHop),
		NetworkPolicy:   a.describePolicy(),
		BPFFSRoot:       a.cfg.Paths.BPFFSRoot,
		Socket:          a.cfg.Paths.Socket,
		StateDir:        a.cfg.Paths.StateDir,
	}
	for _, p := range a.noSNAT() {
		s.NoSNATCIDRs = append(s.NoSNATCIDRs, p.String())
	}
	return settings.Write(a.cfg.Paths, s)
}

// describeAttachModes says how programs attach, per kind of interface.
func (a *Agent) describeAttachModes(nic loader.Mode) string {
	shaped := a.podMode(true)
	if shaped == loader.ModeAuto {
		shaped = nic
	}
	return fmt.Sprintf("%s (nic %s, pods %s, shaped pods %s)", a.cfg.AttachMode, nic, a.podMode(false), shaped)
}
