package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/podvnet/podvnet/internal/netlinkdump"
	"github.com/podvnet/podvnet/pkg/agentapi"
	"github.com/podvnet/podvnet/pkg/ipam"
	"github.com/podvnet/podvnet/pkg/loader"
	"github.com/podvnet/podvnet/pkg/maps"
)

// GC releases every endpoint of req.Network that the runtime no longer
// knows (allocation, map entry, route, link pin, veth), then whatever podvnet
// left that belongs to no endpoint of any network. Like the spec asks, it
// goes on after an error and reports them all at the end.
func (a *Agent) GC(_ context.Context, req agentapi.GCRequest) (agentapi.GCResponse, error) {
	// Absent and empty differ: absent is a broken caller, empty releases the
	// whole network.
	if req.Valid == nil {
		return agentapi.GCResponse{}, errBadRequest("valid is required (an empty list releases every endpoint of the network)")
	}
	valid := map[ipam.Key]bool{}
	owned := map[string]bool{}
	for i, v := range req.Valid {
		if v.ContainerID == "" || v.IfName == "" {
			return agentapi.GCResponse{}, errBadRequest("valid[%d]: container_id and ifname are required", i)
		}
		valid[ipam.Key{Network: req.Network, ContainerID: v.ContainerID, IfName: v.IfName}] = true
		// A valid attachment's veth stays even if its allocation is gone.
		owned[agentapi.HostVethName(v.ContainerID, v.IfName)] = true
	}
	var errs []error
	// Releases the plugin queued while the agent was away come first, so
	// their files go too.
	if err := a.replayDelQueue(); err != nil {
		errs = append(errs, err)
	}

	a.mu.Lock()
	defer a.mu.Unlock()
	resp := agentapi.GCResponse{Released: []agentapi.Released{}}
	ownedIPs := map[netip.Addr]bool{}
	for _, al := range a.alloc.List() {
		if al.Network == req.Network && !valid[al.Key] {
			err := a.release(al.Key)
			if err == nil {
				resp.Released = append(resp.Released, agentapi.Released{IP: al.IP.String(), ContainerID: al.ContainerID, IfName: al.IfName})
				continue
			}
			errs = append(errs, fmt.Errorf("release %s: %w", al.Key, err))
		}
		owned[agentapi.HostVethName(al.ContainerID, al.IfName)] = true
		ownedIPs[al.IP] = true
	}
	st, err := a.removeStrays(owned, ownedIPs)
	if err != nil {
		errs = append(errs, err)
	}
	resp.StrayVeths, resp.StrayEntries, resp.StrayPins = st.veths, st.entries, st.pins
	a.log.Info("GC done", zap.String("network", req.Network), zap.Int("valid", len(req.Valid)),
		zap.Int("released", len(resp.Released)), zap.Int("stray_veths", st.veths),
		zap.Int("stray_map_entries", st.entries), zap.Int("stray_link_pins", st.pins))
	return resp, errors.Join(errs...)
}

// strays counts what removeStrays removed.
type strays struct{ veths, entries, pins int }

// removeStrays removes podvnet host veths, endpoints map entries and pod
// link pins that belong to no endpoint: owned holds the host veth names to
// keep, ownedIPs the map entries. It removes what it can and reports every
// failure. The caller holds a.mu.
func (a *Agent) removeStrays(owned map[string]bool, ownedIPs map[netip.Addr]bool) (strays, error) {
	var st strays
	var errs []error
	links, err := netlinkdump.Links()
	if err != nil {
		errs = append(errs, err)
	}
	for _, l := range links {
		name := l.Attrs().Name
		if agentapi.IsHostVethName(name) && l.Type() == "veth" && !owned[name] {
			// It may be on its way out in the background already.
			a.jobs.wait(name)
			if err := netlink.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
				errs = append(errs, fmt.Errorf("delete stray veth %s: %w", name, err))
				continue
			}
			st.veths++
		}
	}
	entries, err := a.dp.Maps.Endpoints.List()
	if err != nil {
		errs = append(errs, err)
	}
	for _, e := range entries {
		if !ownedIPs[e.IP] {
			if err := a.entries.Delete(e.IP); err != nil {
				errs = append(errs, err)
				continue
			}
			st.entries++
		}
	}
	for _, h := range []maps.Hook{maps.HookPod, maps.HookToPod} {
		pinned, err := loader.PinnedInterfaces(a.dp.Root(), h)
		if err != nil {
			errs = append(errs, err)
		}
		for _, name := range pinned {
			if !owned[name] {
				if err := loader.Detach(a.dp.Root(), h, name); err != nil {
					errs = append(errs, err)
					continue
				}
				st.pins++
			}
		}
	}
	return st, errors.Join(errs...)
}
