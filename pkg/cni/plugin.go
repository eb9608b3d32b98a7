package cni

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/podvnet/podvnet/pkg/agentapi"
)

// Bounds on one call to the agent; kubelet's own CNI timeouts are longer.
// DEL gives up sooner: past that it queues the release rather than hold
// up pod deletion.
const (
	addTimeout = 30 * time.Second
	delTimeout = 10 * time.Second
)

// agentClient is the agent API as the plugin uses it; *agentapi.Client in
// production, a fake in tests.
type agentClient interface {
	Add(context.Context, agentapi.AddRequest) (agentapi.AddResponse, error)
	Del(context.Context, agentapi.DelRequest) error
	Check(context.Context, agentapi.CheckRequest) (agentapi.CheckResponse, error)
	GC(context.Context, agentapi.GCRequest) (agentapi.GCResponse, error)
	Status(context.Context) (agentapi.Status, error)
}

// plugin is one run of the binary: its config, logger, the agent, the host
// network and where the result goes.
type plugin struct {
	conf  *NetConf
	log   *zap.Logger
	agent agentClient
	net   podNetwork
	queue agentapi.DelQueue
	out   io.Writer // stdout: the result or error JSON and nothing else
}

// Funcs are the CNI commands for skel.PluginMainFuncs.
func Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{
		Add:    command("ADD", addTimeout, (*plugin).add),
		Del:    command("DEL", delTimeout, (*plugin).del),
		Check:  command("CHECK", addTimeout, (*plugin).check),
		Status: command("STATUS", delTimeout, (*plugin).status),
		GC:     command("GC", addTimeout, (*plugin).gc),
	}
}

// command wires a plugin method to skel: config, logger, agent client,
// timeout, and the log line of a failure.
func command(name string, timeout time.Duration, run func(*plugin, context.Context, *skel.CmdArgs) error) func(*skel.CmdArgs) error {
	return func(args *skel.CmdArgs) error {
		conf, err := ParseConf(args.StdinData)
		if err != nil {
			return types.NewError(types.ErrInvalidNetworkConfig, err.Error(), "")
		}
		log, closeLog := newLogger(conf)
		defer closeLog()
		log = log.With(zap.String("cmd", name), zap.String("container_id", args.ContainerID),
			zap.String("ifname", args.IfName), zap.String("netns", args.Netns))
		p := &plugin{
			conf: conf, log: log, agent: agentapi.NewClient(conf.Socket), net: linuxPodNetwork{},
			queue: agentapi.DelQueue{Dir: conf.DelQueueDir}, out: os.Stdout,
		}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		if err := run(p, ctx, args); err != nil {
			// Runtimes poll STATUS; an agent that is down is logged by
			// the commands that need it.
			level := zapcore.ErrorLevel
			if name == "STATUS" {
				level = zapcore.DebugLevel
			}
			log.Log(level, name+" failed", zap.Error(err))
			return err
		}
		return nil
	}
}

// newLogger writes to the config's log file, or to stderr; never to stdout.
// A log file that cannot be opened must not fail the command (a DEL that
// fails for that would wedge pod deletion): the logs go to stderr instead.
func newLogger(conf *NetConf) (*zap.Logger, func()) {
	level := zapcore.InfoLevel
	if conf.LogLevel != "" {
		level, _ = zapcore.ParseLevel(conf.LogLevel)
	}
	var ws zapcore.WriteSyncer = zapcore.Lock(os.Stderr)
	closeFn := func() {}
	var openErr error
	if conf.LogFile != "" {
		f, err := os.OpenFile(conf.LogFile, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
		if err == nil {
			ws = zapcore.Lock(f)
			closeFn = func() { f.Close() }
		}
		openErr = err
	}
	enc := zap.NewProductionEncoderConfig()
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	core := zapcore.NewCore(zapcore.NewJSONEncoder(enc), ws, level)
	log := zap.New(core).With(zap.String("component", "podvnet-cni"), zap.Int("pid", os.Getpid()))
	if openErr != nil {
		log.Warn("cannot open logFile; logging to stderr", zap.Error(openErr))
	}
	return log, closeFn
}

// agentError turns an agent failure into the CNI error a runtime acts on.
func agentError(op string, err error) error {
	var unreachable *agentapi.UnreachableError
	switch {
	case errors.As(err, &unreachable):
		return types.NewError(types.ErrTryAgainLater,
			fmt.Sprintf("%s: podvnet agent not reachable at %s (is the podvnet agent running on this node?)", op, unreachable.Socket),
			err.Error())
	case agentapi.IsCode(err, agentapi.CodePoolExhausted):
		return types.NewError(types.ErrTryAgainLater, op+": no pod IP left on this node: "+err.Error(), "")
	case agentapi.IsCode(err, agentapi.CodePolicyUnknown):
		return types.NewError(types.ErrTryAgainLater, op+": the pod's NetworkPolicy is not known yet: "+err.Error(), "")
	case agentapi.IsCode(err, agentapi.CodeBadRequest):
		return types.NewError(types.ErrInvalidEnvironmentVariables, op+": agent refused the request: "+err.Error(), "")
	default:
		return types.NewError(types.ErrInternal, op+": "+err.Error(), "")
	}
}

// add wires the pod: veth, endpoint at the agent, pod side, result. Any
// failure undoes what this call made: the agent owns the host veth from the
// ADD request on and removes it with the endpoint; when it does not have
// the veth (the request never reached it, or it cannot be reached to
// release), the plugin deletes it itself, the one fallback.
func (p *plugin) add(ctx context.Context, args *skel.CmdArgs) (err error) {
	k8s, err := ParseArgs(args.Args)
	if err != nil {
		return types.NewError(types.ErrInvalidEnvironmentVariables, err.Error(), "")
	}
	if err := p.net.CheckPodNetns(args.Netns); err != nil {
		return err
	}
	hostName := agentapi.HostVethName(args.ContainerID, args.IfName)
	delReq := agentapi.DelRequest{Network: p.conf.Name, ContainerID: args.ContainerID, IfName: args.IfName}

	var vethMade, agentAsked bool
	defer func() {
		if err == nil || !vethMade {
			return
		}
		var rerr error
		if agentAsked {
			// ctx may be what ran out; the rollback gets its own time.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), delTimeout)
			defer cancel()
			rerr = p.agent.Del(rctx, delReq)
		}
		var unreachable *agentapi.UnreachableError
		if !agentAsked || errors.As(rerr, &unreachable) {
			verr, qerr := p.withoutAgent(delReq, agentAsked, "")
			rerr = errors.Join(verr, qerr)
		}
		if rerr != nil {
			p.log.Error("roll back", zap.String("host_ifname", hostName), zap.Error(rerr))
		}
	}()

	vethMade = true // a half-made pair is removed too
	podMAC, err := p.net.CreateVeth(args.Netns, hostName, args.IfName)
	if err != nil {
		// A name taken belongs to another veth, which is not this ADD's.
		vethMade = !errors.Is(err, errExists)
		return err
	}
	agentAsked = true
	resp, err := p.agent.Add(ctx, agentapi.AddRequest{
		Network: p.conf.Name, ContainerID: args.ContainerID, IfName: args.IfName, Netns: args.Netns,
		HostIfName: hostName, PodMAC: podMAC.String(),
		PodNamespace: string(k8s.K8S_POD_NAMESPACE), PodName: string(k8s.K8S_POD_NAME), PodUID: string(k8s.K8S_POD_UID),
		Shaped: p.conf.Shaped(),
	})
	if err != nil {
		agentAsked = !agentapi.NeverSent(err)
		return agentError("ADD", err)
	}
	cfg, err := parseAddResponse(resp)
	if err != nil {
		return err
	}
	if err := p.net.ConfigurePod(args.Netns, args.IfName, cfg); err != nil {
		return err
	}
	res, err := buildResult(p.conf, attachment{
		HostName: hostName, HostMAC: cfg.HostMAC.String(), PodName: args.IfName, PodMAC: podMAC.String(),
		Netns: args.Netns, IP: cfg.IP, Gateway: cfg.Gateway, MTU: cfg.MTU,
	})
	if err != nil {
		return err
	}
	if err := printResult(p.out, res, p.conf.CNIVersion); err != nil {
		return err
	}
	p.log.Info("ADD done", zap.String("ip", cfg.IP.String()), zap.String("host_ifname", hostName),
		zap.String("pod", string(k8s.K8S_POD_NAMESPACE)+"/"+string(k8s.K8S_POD_NAME)))
	return nil
}

func parseAddResponse(resp agentapi.AddResponse) (podConfig, error) {
	ip, err := netip.ParsePrefix(resp.IP)
	if err != nil || !ip.Addr().Is4() || ip.Bits() != 32 {
		return podConfig{}, fmt.Errorf("agent answered IP %q, want an IPv4 /32", resp.IP)
	}
	gw, err := netip.ParseAddr(resp.Gateway)
	if err != nil || !gw.Is4() {
		return podConfig{}, fmt.Errorf("agent answered gateway %q, want an IPv4 address", resp.Gateway)
	}
	hostMAC, err := net.ParseMAC(resp.HostMAC)
	if err != nil || len(hostMAC) != 6 {
		return podConfig{}, fmt.Errorf("agent answered host MAC %q, want an Ethernet MAC", resp.HostMAC)
	}
	if resp.MTU < 0 {
		return podConfig{}, fmt.Errorf("agent answered MTU %d", resp.MTU)
	}
	return podConfig{IP: ip, Gateway: gw, HostMAC: hostMAC, MTU: resp.MTU}, nil
}

// withoutAgent is the plugin's one fallback for an attachment the agent
// cannot take care of: it deletes the host veth itself (the agent's job
// otherwise), and when the agent may hold the endpoint (queue), leaves its
// release to the agent, durably, in the DEL queue. ip is for the agent's
// logs.
func (p *plugin) withoutAgent(req agentapi.DelRequest, queue bool, ip string) (vethErr, queueErr error) {
	vethErr = p.net.DeleteHostVeth(agentapi.HostVethName(req.ContainerID, req.IfName))
	if queue {
		queueErr = p.queue.Put(agentapi.QueuedDel{
			Network: req.Network, ContainerID: req.ContainerID, IfName: req.IfName, IP: ip, QueuedAt: time.Now().UTC(),
		})
	}
	return vethErr, queueErr
}

// del releases the endpoint. It succeeds when things are already gone, when
// the netns is gone or empty (the veth is found by its derived name), and
// while the agent is unreachable: pod deletion must never wait for the
// agent, so the plugin then deletes the veth itself and queues the release
// for the agent.
func (p *plugin) del(ctx context.Context, args *skel.CmdArgs) error {
	hostName := agentapi.HostVethName(args.ContainerID, args.IfName)
	req := agentapi.DelRequest{Network: p.conf.Name, ContainerID: args.ContainerID, IfName: args.IfName}
	err := p.agent.Del(ctx, req)
	var unreachable *agentapi.UnreachableError
	switch {
	case errors.As(err, &unreachable):
		verr, qerr := p.withoutAgent(req, true, prevResultIP(p.conf, args))
		if qerr != nil {
			return types.NewError(types.ErrTryAgainLater,
				fmt.Sprintf("DEL: podvnet agent not reachable at %s and the release could not be queued in %s", p.conf.Socket, p.queue.Dir),
				errors.Join(err, qerr, verr).Error())
		}
		if verr != nil {
			return types.NewError(types.ErrInternal, "DEL: "+verr.Error(), "")
		}
		p.log.Warn("agent unreachable: removed the veth, queued the release for the agent",
			zap.String("socket", p.conf.Socket), zap.String("queue", p.queue.Dir), zap.Error(err))
		return nil
	case err != nil:
		return agentError("DEL", err)
	}
	// The agent has unrouted the pod and deletes the veth in the background
	// (deleting a device waits for the kernel's RCU grace periods, which
	// pod deletion need not wait for). The pod end moves out of the way,
	// for an ADD in the same netns.
	if args.Netns != "" {
		if err := p.net.RetirePodIface(args.Netns, args.IfName, hostName); err != nil {
			p.log.Warn("pod interface left in place; the agent deletes it shortly", zap.Error(err))
		}
	}
	p.log.Info("DEL done")
	return nil
}

// prevResultIP is the pod IP a DEL's prevResult names, if any.
func prevResultIP(conf *NetConf, args *skel.CmdArgs) string {
	if conf.PrevResult == nil {
		return ""
	}
	e, err := expectedFrom(conf.PrevResult, args.ContainerID, args.IfName)
	if err != nil {
		return ""
	}
	return e.IP.Addr().String()
}

// check compares the attachment with what ADD left (from prevResult): the
// pod interface, address, route and neighbour, the host veth, and, through
// the agent, the allocation, map entry, /32 route and from_pod. Every
// problem found is named.
func (p *plugin) check(ctx context.Context, args *skel.CmdArgs) error {
	if p.conf.PrevResult == nil {
		return types.NewError(types.ErrInvalidNetworkConfig, `field "prevResult": missing; CHECK needs the result of ADD`, "")
	}
	want, err := expectedFrom(p.conf.PrevResult, args.ContainerID, args.IfName)
	if err != nil {
		return types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf(`field "prevResult": %v`, err), "")
	}

	var problems []string
	pod, err := p.net.InspectPod(args.Netns, args.IfName)
	if err != nil {
		problems = append(problems, err.Error())
	} else {
		problems = append(problems, want.podProblems(args.Netns, pod)...)
	}
	host, err := p.net.InspectHost(want.HostName)
	if err != nil {
		problems = append(problems, err.Error())
	} else {
		problems = append(problems, want.hostProblems(host, pod)...)
	}
	resp, err := p.agent.Check(ctx, agentapi.CheckRequest{
		Network: p.conf.Name, ContainerID: args.ContainerID, IfName: args.IfName, IP: want.IP.String(),
	})
	if err != nil {
		if len(problems) == 0 {
			return agentError("CHECK", err)
		}
		problems = append(problems, "agent: "+err.Error())
	}
	problems = append(problems, resp.Problems...)
	if len(problems) > 0 {
		return types.NewError(types.ErrInternal, "CHECK: "+strings.Join(problems, "; "), "")
	}
	p.log.Debug("CHECK done")
	return nil
}

// status is ready when the agent answers, is ready and has a free address.
func (p *plugin) status(ctx context.Context, _ *skel.CmdArgs) error {
	st, err := p.agent.Status(ctx)
	if err != nil {
		var unreachable *agentapi.UnreachableError
		if errors.As(err, &unreachable) {
			return types.NewError(types.ErrPluginNotAvailable,
				fmt.Sprintf("podvnet agent not reachable at %s (is the podvnet agent running on this node?)", p.conf.Socket), err.Error())
		}
		return types.NewError(types.ErrPluginNotAvailable, "podvnet agent status: "+err.Error(), "")
	}
	if !st.Ready {
		return types.NewError(types.ErrPluginNotAvailable, fmt.Sprintf("podvnet agent at %s is not ready: %s", p.conf.Socket, st.Reason), "")
	}
	if st.Free <= 0 {
		msg := fmt.Sprintf("no free pod IP on this node: %d of the node's limit of %d in use", st.Allocated, st.Limit)
		if st.Allocated < st.Limit {
			msg += "; the others were released recently and are cooling down"
		}
		return types.NewError(types.ErrLimitedConnectivity, msg, "")
	}
	return nil
}

// gc hands the runtime's valid attachments to the agent, which releases
// every other endpoint of this network.
func (p *plugin) gc(ctx context.Context, _ *skel.CmdArgs) error {
	if p.conf.ValidAttachments == nil {
		// Absent is not empty: releasing the whole network on a malformed
		// request would cut every pod off.
		return types.NewError(types.ErrInvalidNetworkConfig, `field "cni.dev/valid-attachments": missing`, "")
	}
	req := agentapi.GCRequest{Network: p.conf.Name, Valid: make([]agentapi.Attachment, 0, len(p.conf.ValidAttachments))}
	for _, a := range p.conf.ValidAttachments {
		req.Valid = append(req.Valid, agentapi.Attachment{ContainerID: a.ContainerID, IfName: a.IfName})
	}
	resp, err := p.agent.GC(ctx, req)
	if err != nil {
		return agentError("GC", err)
	}
	p.log.Info("GC done", zap.Int("valid", len(req.Valid)), zap.Int("released", len(resp.Released)),
		zap.Int("stray_veths", resp.StrayVeths), zap.Int("stray_map_entries", resp.StrayEntries),
		zap.Int("stray_link_pins", resp.StrayPins))
	return nil
}
