package agent

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"go.uber.org/zap"

	"github.com/podvnet/podvnet/internal/netlinkdump"
	"github.com/podvnet/podvnet/pkg/agentapi"
)

// reconcile makes the node match the persisted allocations: endpoints whose
// veth exists are wired again and get their program; allocations whose veth is gone are released;
// veths, map entries and link pins that belong to no allocation are removed.
func (a *Agent) reconcile() error {
	a.mu.Lock()
	defer a.mu.Unlock()

	links, err := netlinkdump.Links()
	if err != nil {
		return err
	}
	byName := map[string]netlink.Link{}
	for _, l := range links {
		byName[l.Attrs().Name] = l
	}

	var kept, released int
	owned := map[string]bool{}
	ownedIPs := map[netip.Addr]bool{}
	for _, al := range a.alloc.List() {
		name := agentapi.HostVethName(al.ContainerID, al.IfName)
		host, ok := byName[name]
		podMAC, macErr := net.ParseMAC(al.PodMAC)
		if ok && macErr == nil {
			if err := a.restoreEndpoint(al.IP, host, podMAC, al.Shaped); err != nil {
				return fmt.Errorf("restore endpoint %s on %s: %w", al.IP, name, err)
			}
			owned[name] = true
			ownedIPs[al.IP] = true
			kept++
			continue
		}
		if err := a.teardown(al.IP, name); err != nil {
			return fmt.Errorf("clean up endpoint %s: %w", al.IP, err)
		}
		if _, _, err := a.alloc.Release(al.Key); err != nil {
			return err
		}
		a.log.Info("released endpoint whose veth is gone", zap.String("ip", al.IP.String()),
			zap.String("container_id", al.ContainerID), zap.String("ifname", al.IfName))
		released++
	}

	st, err := a.removeStrays(owned, ownedIPs)
	if err != nil {
		return err
	}
	for outcome, n := range map[string]int{"kept": kept, "released": released, "stray_veths": st.veths,
		"stray_map_entries": st.entries, "stray_link_pins": st.pins} {
		a.metrics.setReconciled(outcome, n)
	}
	a.log.Info("reconciled", zap.Int("kept", kept), zap.Int("released", released),
		zap.Int("stray_veths", st.veths), zap.Int("stray_map_entries", st.entries), zap.Int("stray_link_pins", st.pins))
	return nil
}
