package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/containernetworking/plugins/pkg/netlinksafe"

	"github.com/podvnet/podvnet/internal/podroute"
	"github.com/podvnet/podvnet/pkg/agentapi"
	"github.com/podvnet/podvnet/pkg/ipam"
	"github.com/podvnet/podvnet/pkg/loader"
	"github.com/podvnet/podvnet/pkg/maps"
)

// Check verifies the agent's side of an endpoint as ADD left it: the
// allocation, the host veth, the endpoints map entry, the /32 route and
// from_pod on the veth. Each problem is named; none means all is well.
func (a *Agent) Check(_ context.Context, req agentapi.CheckRequest) (agentapi.CheckResponse, error) {
	if req.ContainerID == "" || req.IfName == "" {
		return agentapi.CheckResponse{}, errBadRequest("container_id and ifname are required")
	}
	var want netip.Addr
	if req.IP != "" {
		var err error
		if want, err = parseAddrOrPrefix(req.IP); err != nil {
			return agentapi.CheckResponse{}, errBadRequest("ip %q: %v", req.IP, err)
		}
	}
	// Under the lock: a concurrent DEL or GC must not show as half-done.
	a.mu.Lock()
	defer a.mu.Unlock()

	key := ipam.Key{Network: req.Network, ContainerID: req.ContainerID, IfName: req.IfName}
	resp := agentapi.CheckResponse{Problems: []string{}}
	problem := func(format string, args ...any) { resp.Problems = append(resp.Problems, fmt.Sprintf(format, args...)) }
	al, ok := a.alloc.Get(key)
	if !ok {
		problem("the agent holds no address for network %q, container %s, ifname %s", req.Network, req.ContainerID, req.IfName)
		return resp, nil
	}
	resp.IP = netip.PrefixFrom(al.IP, 32).String()
	if want.IsValid() && want != al.IP {
		problem("the agent allocated %s to this pod, not %s", al.IP, want)
	}

	name := agentapi.HostVethName(req.ContainerID, req.IfName)
	host, err := netlinksafe.LinkByName(name)
	if err != nil {
		problem("host veth %s: %v", name, err)
		host = nil
	} else {
		if host.Type() != "veth" {
			problem("host interface %s is a %s, not a veth", name, host.Type())
		}
		if host.Attrs().Flags&net.FlagUp == 0 {
			problem("host veth %s is down", name)
		}
	}

	ep, found, err := a.dp.Maps.Endpoints.Get(al.IP)
	switch {
	case err != nil:
		problem("endpoints map: %v", err)
	case !found:
		problem("endpoints map has no entry for %s", al.IP)
	default:
		if host != nil && int(ep.Ifindex) != host.Attrs().Index {
			problem("endpoints map sends %s to ifindex %d, but %s is ifindex %d", al.IP, ep.Ifindex, name, host.Attrs().Index)
		}
		if got := maps.MAC(ep.PodMAC); !strings.EqualFold(got, al.PodMAC) {
			problem("endpoints map has pod MAC %s for %s, the pod's is %s", got, al.IP, al.PodMAC)
		}
		if host != nil {
			if got, hw := maps.MAC(ep.HostMAC), host.Attrs().HardwareAddr.String(); got != hw {
				problem("endpoints map has host MAC %s for %s, %s has %s", got, al.IP, name, hw)
			}
		}
	}

	if host != nil {
		if err := podroute.Check(al.IP, host); err != nil {
			problem("%v", err)
		}
		if err := a.checkAttached(name, host.Attrs().Index); err != nil {
			problem("%v", err)
		}
	}
	return resp, nil
}

// checkAttached verifies the pod's programs run on the host veth, through
// pinned tcx links or legacy filters, once its attach job is done.
func (a *Agent) checkAttached(name string, ifindex int) error {
	a.jobs.wait(name)
	var errs []error
	for _, h := range a.podHooks() {
		if _, err := loader.Attached(a.dp.Root(), h, name, ifindex); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func parseAddrOrPrefix(s string) (netip.Addr, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Addr(), nil
	}
	return netip.ParseAddr(s)
}
