package cni

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/podvnet/podvnet/pkg/agentapi"
)

// Funcs are the CNI commands for skel.PluginMainFuncs.
func Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{Add: cmdAdd, Del: cmdDel, Check: cmdCheck, Status: cmdStatus, GC: cmdGC}
}

// opTimeout bounds one call to the agent; kubelet's own CNI timeout is longer.
const opTimeout = 30 * time.Second

// invocation is one plugin run: its config, logger and agent client.
type invocation struct {
	conf   *NetConf
	log    *zap.Logger
	client *agentapi.Client
	close  func()
}

func begin(args *skel.CmdArgs) (*invocation, error) {
	conf, err := ParseConf(args.StdinData)
	if err != nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, err.Error(), "")
	}
	log, closeLog, err := newLogger(conf)
	if err != nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, err.Error(), "")
	}
	log = log.With(zap.String("container_id", args.ContainerID), zap.String("ifname", args.IfName),
		zap.String("netns", args.Netns))
	return &invocation{conf: conf, log: log, client: agentapi.NewClient(conf.Socket), close: closeLog}, nil
}

// newLogger writes to the config's log file, or to stderr; never to stdout.
func newLogger(conf *NetConf) (*zap.Logger, func(), error) {
	level := zapcore.InfoLevel
	if conf.LogLevel != "" {
		level, _ = zapcore.ParseLevel(conf.LogLevel)
	}
	var ws zapcore.WriteSyncer = zapcore.Lock(os.Stderr)
	closeFn := func() {}
	if conf.LogFile != "" {
		f, err := os.OpenFile(conf.LogFile, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
		if err != nil {
			return nil, nil, fmt.Errorf(`field "logFile": %w`, err)
		}
		ws = zapcore.Lock(f)
		closeFn = func() { f.Close() }
	}
	enc := zap.NewProductionEncoderConfig()
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	core := zapcore.NewCore(zapcore.NewJSONEncoder(enc), ws, level)
	return zap.New(core).With(zap.String("component", "podvnet-cni"), zap.Int("pid", os.Getpid())), closeFn, nil
}

// agentError turns an agent failure into the CNI error a runtime acts on.
func agentError(op string, err error) error {
	var unreachable *agentapi.UnreachableError
	var apiErr *agentapi.APIError
	switch {
	case errors.As(err, &unreachable):
		return types.NewError(types.ErrTryAgainLater,
			fmt.Sprintf("%s: podvnet agent not reachable at %s (is the podvnet DaemonSet pod running on this node?)", op, unreachable.Socket),
			err.Error())
	case errors.As(err, &apiErr) && apiErr.Code == agentapi.CodePoolExhausted:
		return types.NewError(types.ErrTryAgainLater, op+": no pod IP left on this node: "+apiErr.Message, "")
	case errors.As(err, &apiErr) && apiErr.Code == agentapi.CodeBadRequest:
		return types.NewError(types.ErrInvalidEnvironmentVariables, op+": agent refused the request: "+apiErr.Message, "")
	default:
		return types.NewError(types.ErrInternal, op+": "+err.Error(), "")
	}
}

func cmdAdd(args *skel.CmdArgs) (err error) {
	inv, err := begin(args)
	if err != nil {
		return err
	}
	defer inv.close()
	k8s, err := ParseArgs(args.Args)
	if err != nil {
		return types.NewError(types.ErrInvalidEnvironmentVariables, err.Error(), "")
	}
	netns, err := ns.GetNS(args.Netns)
	if err != nil {
		return types.NewError(types.ErrInvalidNetNS, fmt.Sprintf("open pod netns %q: %v", args.Netns, err), "")
	}
	defer netns.Close()

	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	hostName := agentapi.HostVethName(args.ContainerID, args.IfName)
	delReq := agentapi.DelRequest{Network: inv.conf.Name, ContainerID: args.ContainerID, IfName: args.IfName}

	// Everything below is undone if a later step fails: the veth (and with
	// it the pod side), and the agent's endpoint if it was registered.
	registered := false
	defer func() {
		if err == nil {
			return
		}
		if registered {
			if derr := inv.client.Del(ctx, delReq); derr != nil {
				inv.log.Error("roll back endpoint", zap.Error(derr))
			}
		}
		if derr := deleteLink(hostName); derr != nil {
			inv.log.Error("roll back veth", zap.Error(derr))
		}
		inv.log.Error("ADD failed", zap.Error(err))
	}()

	host, pod, err := createVeth(netns, hostName, args.IfName)
	if err != nil {
		return err
	}
	resp, err := inv.client.Add(ctx, agentapi.AddRequest{
		Network: inv.conf.Name, ContainerID: args.ContainerID, IfName: args.IfName, Netns: args.Netns,
		HostIfName: hostName, PodMAC: pod.HardwareAddr.String(),
		PodNamespace: string(k8s.K8S_POD_NAMESPACE), PodName: string(k8s.K8S_POD_NAME), PodUID: string(k8s.K8S_POD_UID),
	})
	if err != nil {
		return agentError("ADD", err)
	}
	registered = true
	ipNet, gw, hostMAC, err := parseAddResponse(resp)
	if err != nil {
		return err
	}
	if err := configurePod(netns, args.IfName, ipNet, gw, hostMAC, resp.MTU); err != nil {
		return err
	}
	if resp.MTU > 0 {
		if err := netlink.LinkSetMTU(host, resp.MTU); err != nil {
			return fmt.Errorf("set MTU %d on %s: %w", resp.MTU, hostName, err)
		}
	}

	result := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{
			{Name: hostName, Mac: hostMAC.String()},
			{Name: args.IfName, Mac: pod.HardwareAddr.String(), Sandbox: args.Netns},
		},
		IPs:    []*current.IPConfig{{Address: *ipNet, Gateway: gw, Interface: current.Int(1)}},
		Routes: []*types.Route{{Dst: net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}, GW: gw}},
		DNS:    inv.conf.DNS,
	}
	inv.log.Info("ADD done", zap.String("ip", ipNet.String()), zap.String("host_ifname", hostName))
	return types.PrintResult(result, inv.conf.CNIVersion)
}

func parseAddResponse(resp agentapi.AddResponse) (*net.IPNet, net.IP, net.HardwareAddr, error) {
	ip, ipNet, err := net.ParseCIDR(resp.IP)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("agent answered a bad IP %q: %w", resp.IP, err)
	}
	ipNet.IP = ip
	gw := net.ParseIP(resp.Gateway).To4()
	if gw == nil {
		return nil, nil, nil, fmt.Errorf("agent answered a bad gateway %q", resp.Gateway)
	}
	hostMAC, err := net.ParseMAC(resp.HostMAC)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("agent answered a bad host MAC %q: %w", resp.HostMAC, err)
	}
	return ipNet, gw, hostMAC, nil
}

// createVeth makes the pair with the pod end created straight inside the
// pod's netns under its final name, so no temporary name is ever visible on
// the host. A host end left by an earlier, failed attempt is replaced.
func createVeth(netns ns.NetNS, hostName, podName string) (host netlink.Link, pod *netlink.LinkAttrs, err error) {
	if err := deleteLink(hostName); err != nil {
		return nil, nil, err
	}
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: hostName},
		PeerName:      podName,
		PeerNamespace: netlink.NsFd(int(netns.Fd())),
	}
	if err := netlink.LinkAdd(veth); err != nil {
		return nil, nil, fmt.Errorf("create veth %s with peer %s in %s: %w", hostName, podName, netns.Path(), err)
	}
	if host, err = netlinksafe.LinkByName(hostName); err != nil {
		return nil, nil, fmt.Errorf("find new veth %s: %w", hostName, err)
	}
	// Up before the agent adds the /32 route: the kernel refuses routes
	// through a device that is down.
	if err := netlink.LinkSetUp(host); err != nil {
		return nil, nil, fmt.Errorf("set %s up: %w", hostName, err)
	}
	err = netns.Do(func(ns.NetNS) error {
		l, err := netlinksafe.LinkByName(podName)
		if err != nil {
			return fmt.Errorf("find %s in pod netns: %w", podName, err)
		}
		pod = l.Attrs()
		return nil
	})
	return host, pod, err
}

// configurePod gives the pod its /32, and a default route via GatewayIP with
// a permanent neighbour entry for it: the pod never ARPs for its gateway.
func configurePod(netns ns.NetNS, ifname string, ipNet *net.IPNet, gw net.IP, hostMAC net.HardwareAddr, mtu int) error {
	return netns.Do(func(ns.NetNS) error {
		l, err := netlinksafe.LinkByName(ifname)
		if err != nil {
			return fmt.Errorf("find %s in pod netns: %w", ifname, err)
		}
		if mtu > 0 {
			if err := netlink.LinkSetMTU(l, mtu); err != nil {
				return fmt.Errorf("set MTU %d on %s: %w", mtu, ifname, err)
			}
		}
		if err := netlink.AddrAdd(l, &netlink.Addr{IPNet: ipNet}); err != nil {
			return fmt.Errorf("add %s to %s: %w", ipNet, ifname, err)
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return fmt.Errorf("set %s up: %w", ifname, err)
		}
		neigh := &netlink.Neigh{
			LinkIndex:    l.Attrs().Index,
			Family:       netlink.FAMILY_V4,
			State:        netlink.NUD_PERMANENT,
			IP:           gw,
			HardwareAddr: hostMAC,
		}
		if err := netlink.NeighSet(neigh); err != nil {
			return fmt.Errorf("add permanent neighbour %s -> %s: %w", gw, hostMAC, err)
		}
		route := &netlink.Route{
			LinkIndex: l.Attrs().Index,
			Dst:       &net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)},
			Gw:        gw,
			Flags:     int(netlink.FLAG_ONLINK),
		}
		if err := netlink.RouteAdd(route); err != nil {
			return fmt.Errorf("add default route via %s onlink: %w", gw, err)
		}
		return nil
	})
}

// deleteLink removes a host interface; one that does not exist is fine.
func deleteLink(name string) error {
	l, err := netlinksafe.LinkByName(name)
	if err != nil {
		var notFound netlink.LinkNotFoundError
		if errors.As(err, &notFound) {
			return nil
		}
		return fmt.Errorf("look up %s: %w", name, err)
	}
	if err := netlink.LinkDel(l); err != nil {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return nil
}

func cmdDel(args *skel.CmdArgs) error {
	inv, err := begin(args)
	if err != nil {
		return err
	}
	defer inv.close()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	err = inv.client.Del(ctx, agentapi.DelRequest{Network: inv.conf.Name, ContainerID: args.ContainerID, IfName: args.IfName})
	// The agent normally removes the veth; make sure, whatever it said.
	if derr := deleteLink(agentapi.HostVethName(args.ContainerID, args.IfName)); derr != nil && err == nil {
		err = derr
	}
	if err != nil {
		inv.log.Error("DEL failed", zap.Error(err))
		return agentError("DEL", err)
	}
	inv.log.Info("DEL done")
	return nil
}

func cmdCheck(args *skel.CmdArgs) error {
	return types.NewError(types.ErrInternal, "CHECK is not implemented yet", "")
}

func cmdStatus(args *skel.CmdArgs) error {
	return types.NewError(types.ErrInternal, "STATUS is not implemented yet", "")
}

func cmdGC(args *skel.CmdArgs) error {
	return types.NewError(types.ErrInternal, "GC is not implemented yet", "")
}
