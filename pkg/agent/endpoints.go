package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/containernetworking/plugins/pkg/utils/sysctl"
	"github.com/vishvananda/netlink"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/podvnet/podvnet/internal/podroute"
	"github.com/podvnet/podvnet/pkg/agentapi"
	"github.com/podvnet/podvnet/pkg/ipam"
	"github.com/podvnet/podvnet/pkg/loader"
	"github.com/podvnet/podvnet/pkg/maps"
)

// badRequest marks errors caused by the caller's input.
type badRequest struct{ error }

func errBadRequest(format string, args ...any) error {
	return badRequest{fmt.Errorf(format, args...)}
}

// Add takes over the host veth the plugin made, gives it the pods' MTU,
// allocates the endpoint's IP and wires it (map entry, /32 route,
// rp_filter), and attaches from_pod right after answering. Asking twice
// for the same key answers the same. On failure nothing of this call is
// left behind, the veth included: the agent owns it from the request on.
func (a *Agent) Add(ctx context.Context, req agentapi.AddRequest) (_ agentapi.AddResponse, err error) {
	defer a.metrics.observeCNI("add", time.Now(), &err)
	if req.ContainerID == "" || req.IfName == "" {
		return agentapi.AddResponse{}, errBadRequest("container_id and ifname are required")
	}
	if want := agentapi.HostVethName(req.ContainerID, req.IfName); req.HostIfName != want {
		return agentapi.AddResponse{}, errBadRequest("host_ifname %q does not match %q derived from the container ID and ifname", req.HostIfName, want)
	}
	podMAC, err := net.ParseMAC(req.PodMAC)
	if err != nil || len(podMAC) != 6 {
		return agentapi.AddResponse{}, errBadRequest("pod_mac %q: not an Ethernet MAC", req.PodMAC)
	}
	// NetworkPolicy: the pod's labels and the cluster's policies are known
	// before it gets an address, or the ADD fails (the runtime retries).
	pod, policyKnown, err := a.policy.podForAdd(ctx, req.PodNamespace, req.PodName, req.PodUID)
	if err != nil {
		return agentapi.AddResponse{}, err
	}

	a.podAdded(req.PodNamespace, req.PodName)
	a.mu.Lock()
	defer a.mu.Unlock()
	// The veth of an earlier attachment of the same name may still be
	// going away in the background.
	a.jobs.wait(req.HostIfName)

	host, err := netlink.LinkByName(req.HostIfName)
	if err != nil {
		return agentapi.AddResponse{}, errBadRequest("host veth %s: %v", req.HostIfName, err)
	}
	if host.Type() != "veth" {
		return agentapi.AddResponse{}, errBadRequest("host interface %s is a %s, not a veth", req.HostIfName, host.Type())
	}

	key := ipam.Key{Network: req.Network, ContainerID: req.ContainerID, IfName: req.IfName}
	_, existed := a.alloc.Get(key)
	var ip netip.Addr // allocated by this call
	defer func() {
		if err == nil || existed {
			return
		}
		// Before answering: a failed ADD is not the fast path, and its
		// caller expects nothing left.
		if terr := a.teardown(ip, req.HostIfName); terr != nil {
			a.log.Error("remove endpoint after failed ADD", zap.String("host_ifname", req.HostIfName), zap.Error(terr))
		}
		if !ip.IsValid() {
			return
		}
		if _, _, rerr := a.alloc.Release(key); rerr != nil {
			a.log.Error("release after failed ADD", zap.String("ip", ip.String()), zap.Error(rerr))
		}
	}()
	al, err := a.allocate(key, ipam.Owner{
		PodNamespace: req.PodNamespace, PodName: req.PodName, PodUID: req.PodUID,
		Netns: req.Netns, HostIfName: req.HostIfName, PodMAC: podMAC.String(), Shaped: req.Shaped,
	})
	if err != nil {
		return agentapi.AddResponse{}, err
	}
	if !existed {
		ip = al.IP
	}
	if policyKnown {
		if err := a.policy.addEndpoint(al.IP, pod); err != nil {
			return agentapi.AddResponse{}, err
		}
	}

	// The pod end gets the same MTU from the answer. Set at ADD only: a
	// later --mtu must not split the two ends of a running pod's veth.
	if host.Attrs().MTU != a.mtu() {
		if err := netlink.LinkSetMTU(host, a.mtu()); err != nil {
			return agentapi.AddResponse{}, fmt.Errorf("set MTU %d on %s: %w", a.mtu(), req.HostIfName, err)
		}
	}
	if a.policy != nil {
		// No window: the pod's rules are in the maps and its programs run
		// before anything is routed to it (a cls_bpf filter goes in in
		// 0.2 ms; a shaped pod's tcx link takes longer).
		if err := a.attachPod(host.Attrs().Index, req.HostIfName, al.Shaped); err != nil {
			return agentapi.AddResponse{}, err
		}
		if err := a.wireEndpoint(al.IP, host, podMAC, al.Shaped); err != nil {
			return agentapi.AddResponse{}, err
		}
	} else {
		if err := a.wireEndpoint(al.IP, host, podMAC, al.Shaped); err != nil {
			return agentapi.AddResponse{}, err
		}
		a.attachLater(host, al.Shaped)
	}
	a.log.Info("endpoint added", zap.String("container_id", req.ContainerID), zap.String("ifname", req.IfName),
		zap.String("ip", al.IP.String()), zap.String("host_ifname", req.HostIfName), zap.Int("ifindex", host.Attrs().Index),
		zap.String("pod", req.PodNamespace+"/"+req.PodName))
	return agentapi.AddResponse{
		IP:      netip.PrefixFrom(al.IP, 32).String(),
		Gateway: agentapi.GatewayIP,
		HostMAC: host.Attrs().HardwareAddr.String(),
		MTU:     a.mtu(),
	}, nil
}

// allocate returns key's address, allocating one if it has none; a pool
// with none left is also a warning to the cluster, naming the pod.
func (a *Agent) allocate(key ipam.Key, o ipam.Owner) (ipam.Allocation, error) {
	al, err := a.alloc.Allocate(key, o)
	if errors.Is(err, ipam.ErrPoolExhausted) {
		a.warn(ReasonPoolExhausted, fmt.Sprintf("no pod address for %s: %v", podName(ipam.Allocation{Key: key, Owner: o}), err))
	}
	return al, err
}

// restoreEndpoint wires the endpoint and attaches its programs at once.
// Each step replaces what may be there, so reconcile repairs an endpoint
// with it.
func (a *Agent) restoreEndpoint(ip netip.Addr, host netlink.Link, podMAC net.HardwareAddr, shaped bool) error {
	if err := a.wireEndpoint(ip, host, podMAC, shaped); err != nil {
		return err
	}
	return a.attachPod(host.Attrs().Index, host.Attrs().Name, shaped)
}

// attachLater attaches from_pod to the host veth in the background. Until
// it runs, the pod's packets take the kernel path, which the /32 route and
// strict reverse-path filtering already make work and keep honest; the
// pod's containers typically start well after ADD returns. A failure is
// logged and CHECK reports it; the pod keeps the kernel path.
func (a *Agent) attachLater(host netlink.Link, shaped bool) {
	name, index := host.Attrs().Name, host.Attrs().Index
	a.jobs.start(name, func() {
		if _, err := a.dp.Attach(maps.HookPod, index, name, a.podMode(shaped)); err != nil {
			a.log.Error("attach from_pod; the pod stays on the kernel path", zap.String("ifname", name),
				zap.Int("ifindex", index), zap.Error(err))
		}
	})
}

// wireEndpoint makes the pod reachable and keeps it honest, everything of
// an endpoint but its program: the endpoints map entry (the fast path), the
// /32 route (the kernel path) and strict rp_filter on the host veth.
func (a *Agent) wireEndpoint(ip netip.Addr, host netlink.Link, podMAC net.HardwareAddr, shaped bool) error {
	attrs := host.Attrs()
	ep := maps.Endpoint{Ifindex: uint32(attrs.Index)}
	if shaped {
		ep.Flags |= maps.EndpointShaped
	}
	copy(ep.PodMAC[:], podMAC)
	copy(ep.HostMAC[:], attrs.HardwareAddr)
	if err := a.entries.Put(ip, ep); err != nil {
		return err
	}
	// The kernel path to the pod: replies the stack delivers (masqueraded
	// flows, Services, node-to-pod) still arrive when they skip from_nic.
	if err := podroute.Replace(ip, host); err != nil {
		return err
	}
	// Strict reverse-path filtering: on the kernel path the only source
	// the veth accepts is the pod's own /32 (its route points back here),
	// anti-spoofing that holds before from_pod is attached and whenever the
	// programs are gone. A pod reaching itself through its Service still
	// passes: its source routes back to this very veth.
	// The slash form: interface names may hold dots.
	if _, err := sysctl.Sysctl("net/ipv4/conf/"+attrs.Name+"/rp_filter", "1"); err != nil {
		return fmt.Errorf("set rp_filter=1 on %s: %w", attrs.Name, err)
	}
	return nil
}

// teardown removes the data path of an endpoint: map entry, route, host
// veth and its program. Every step tolerates what is already gone.
func (a *Agent) teardown(ip netip.Addr, hostIfName string) error {
	errs := []error{a.unroute(ip)}
	if hostIfName != "" {
		a.jobs.wait(hostIfName)
		errs = append(errs, a.removeVeth(hostIfName, nil))
	}
	return errors.Join(errs...)
}

// unroute removes what steers traffic to ip: its map entry and /32 route.
// With them gone nothing reaches the pod any more, from the fast path or
// the kernel's.
func (a *Agent) unroute(ip netip.Addr) error {
	if !ip.IsValid() {
		return nil
	}
	return errors.Join(a.entries.Delete(ip), podroute.Delete(ip), a.policy.removeEndpoint(ip))
}

// removeVeth deletes a host veth (link, when known, pins the very device:
// a new veth of the same name is never touched) and then its program's pin.
// Deleting the device first detaches the program as part of it, so the
// unpin is cheap.
func (a *Agent) removeVeth(name string, link netlink.Link) error {
	var errs []error
	if link == nil {
		if l, err := netlink.LinkByName(name); err == nil {
			link = l
		}
	}
	if link != nil {
		if err := netlink.LinkDel(link); err != nil && !errors.Is(err, unix.ENODEV) {
			errs = append(errs, fmt.Errorf("delete host veth %s: %w", name, err))
		}
	}
	errs = append(errs, detachPod(a.dp.Root(), name))
	return errors.Join(errs...)
}

// detachPod removes every program of a host veth: from_pod, and to_pod.
func detachPod(root, name string) error {
	return errors.Join(loader.Detach(root, maps.HookPod, name), loader.Detach(root, maps.HookToPod, name))
}

// Del tears down the endpoint's data path and releases its IP, in that
// order: a crash in between leaves an allocation that reconcile finishes.
// Unknown endpoints succeed (DEL is idempotent).
func (a *Agent) Del(ctx context.Context, req agentapi.DelRequest) (err error) {
	defer a.metrics.observeCNI("del", time.Now(), &err)
	if req.ContainerID == "" || req.IfName == "" {
		return errBadRequest("container_id and ifname are required")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.release(ipam.Key{Network: req.Network, ContainerID: req.ContainerID, IfName: req.IfName}); err != nil {
		return err
	}
	// A DEL queued while the agent was unreachable has now been done.
	return a.delQueue().Remove(req.Network, req.ContainerID, req.IfName)
}

// release unroutes the endpoint of key, releases its IP, and deletes its
// veth in the background: the IP cools down for far longer than that takes,
// and a veth left by a crash is a stray that reconcile removes. Without an
// allocation it still removes a veth a half-made ADD may have left. The
// caller holds a.mu.
func (a *Agent) release(key ipam.Key) error {
	hostIfName := agentapi.HostVethName(key.ContainerID, key.IfName)
	// A pending attach must not pin a link after the veth is gone.
	a.jobs.wait(hostIfName)
	al, ok := a.alloc.Get(key)
	if ok {
		if err := a.unroute(al.IP); err != nil {
			return err
		}
		if _, _, err := a.alloc.Release(key); err != nil {
			return err
		}
	}
	if link, err := netlink.LinkByName(hostIfName); err == nil {
		a.jobs.start(hostIfName, func() {
			if err := a.removeVeth(hostIfName, link); err != nil {
				a.log.Error("delete host veth; reconcile removes it at the next start", zap.String("ifname", hostIfName), zap.Error(err))
			}
		})
	} else if err := detachPod(a.dp.Root(), hostIfName); err != nil {
		return err
	}
	if !ok {
		return nil
	}
	a.log.Info("endpoint deleted", zap.String("container_id", key.ContainerID), zap.String("ifname", key.IfName),
		zap.String("ip", al.IP.String()), zap.String("pod", al.PodNamespace+"/"+al.PodName))
	return nil
}

// Status reports readiness and free addresses.
func (a *Agent) Status() agentapi.Status {
	ready, reason := a.ready.Get()
	st := agentapi.Status{
		Ready:     ready,
		Reason:    reason,
		Limit:     a.alloc.Limit(),
		Allocated: a.alloc.Allocated(),
		Free:      a.alloc.Free(),
	}
	return st
}
