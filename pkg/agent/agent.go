// Package agent is the node daemon: it owns the address pool, the pinned
// data path, the pods' host veths and the unix-socket API the CNI plugin
// calls. What works without a running agent is in pkg/node.
package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containernetworking/plugins/pkg/utils/sysctl"
	"github.com/vishvananda/netlink"
	"go.uber.org/zap"

	"github.com/podvnet/podvnet/pkg/agentapi"
	"github.com/podvnet/podvnet/pkg/ipam"
	"github.com/podvnet/podvnet/pkg/loader"
	"github.com/podvnet/podvnet/pkg/maps"
	"github.com/podvnet/podvnet/pkg/nexthop"
	"github.com/podvnet/podvnet/pkg/paths"
	"github.com/podvnet/podvnet/pkg/platform"
	"github.com/podvnet/podvnet/pkg/snat"
)

// Config is what `podvnet-agent run` is told.
type Config struct {
	NIC      string        // the VNet NIC, e.g. eth0
	Paths    paths.Node    // state dir, API socket, bpffs root
	Pool     ipam.Pool     // the node's addresses
	MaxPods  int           // upper bound on pods, <= pool size
	Cooldown time.Duration // rest of a released address
	NoSNAT   []netip.Prefix
	// AttachMode: tcx, legacy, or auto: tcx for the NIC (legacy where the
	// kernel has no tcx), legacy tc for pod veths except shaped pods (see
	// podMode).
	AttachMode loader.Mode
	// MTU of pod interfaces; 0 follows the NIC.
	MTU int
	// NoConntrackLookup turns off the programs' conntrack check before a
	// fast-path redirect. Replies of NAT'd connections (Services) then
	// break: it exists to measure what the lookup costs.
	NoConntrackLookup bool
	// Blocked are the destinations pods must not reach (blocked.go).
	Blocked []platform.Endpoint
	// NextHop is how from_pod finds the next hop into the VNet (nexthop.go).
	NextHop nexthop.Mode
	// Policy turns NetworkPolicy on (policy.go); nil: pods are never
	// isolated (static mode).
	Policy *PolicyOptions
	// Services says who serves Services and how (services.go).
	Services ServiceConfig

	// Version is the agent's build version, recorded in the settings file.
	Version string

	// Events, when set, receives warnings for the cluster (Events on the
	// Node): the pool exhausted or withdrawn, kubelet's max-pods too high.
	Events Events

	// Metrics and Ready, when set, receive the agent's metrics and its
	// readiness (they outlive New, which may wait for the NIC).
	Metrics *Metrics
	Ready   *Readiness
}

// ErrMTUAboveNIC refuses a pod MTU (Config.MTU) the NIC cannot carry.
var ErrMTUAboveNIC = errors.New("exceeds the MTU")

// Agent is a running node daemon.
type Agent struct {
	cfg   Config
	log   *zap.Logger
	dp    *loader.Datapath
	alloc *ipam.Allocator
	nic   netlink.Link // guarded by mu once the NIC watch runs
	// nicIndex is nic's index, for the NIC watch to compare every link
	// update with, without waiting for mu.
	nicIndex atomic.Int64

	// mu serialises changes to endpoints (ADD, DEL, reconcile); lookups of
	// the allocator are safe without it.
	mu      sync.Mutex
	ready   *Readiness
	metrics *Metrics
	jobs    *hostJobs

	// configMu serialises writes of the config map; config is what it holds.
	configMu sync.Mutex
	config   maps.Config

	// nexthopMu guards the next hop's watch: its stop, and whether the
	// agent has stopped it for good.
	nexthopMu   sync.Mutex
	nexthopStop func()
	nexthopDone bool

	maxPodsMu      sync.Mutex
	kubeletMaxPods int    // the Node's allocatable pods; 0 unknown
	maxPodsWarned  [2]int // the (kubelet, limit) pair last warned of

	// entries writes the endpoints map: where a pod is, and its policy.
	entries *endpointEntries
	// policy keeps NetworkPolicy in the maps; nil when it is off.
	policy *policyCtl
	svc    *serviceState
}

// New waits for the NIC, loads the data path (adopting what is pinned),
// reads the persisted allocations, reconciles both with the node, and
// attaches from_nic. It does not serve yet.
func New(ctx context.Context, cfg Config, log *zap.Logger) (_ *Agent, err error) {
	if cfg.Ready == nil {
		cfg.Ready = NewReadiness("starting")
	}
	if cfg.NextHop == "" {
		cfg.NextHop = nexthop.Auto
	}
	if err := cfg.Pool.Validate(); err != nil {
		return nil, fmt.Errorf("pool: %w", err)
	}
	nic, err := waitForLink(ctx, cfg.NIC, cfg.Ready, log)
	if err != nil {
		return nil, err
	}
	cfg.Ready.Set(false, "loading the data path")
	alloc, err := ipam.NewAllocator(cfg.Pool, ipam.FileStore{Path: cfg.Paths.StateFile()},
		ipam.Options{MaxPods: cfg.MaxPods, Cooldown: cfg.Cooldown})
	if err != nil {
		return nil, err
	}
	dp, err := loader.Load(cfg.Paths.BPFFSRoot)
	if err != nil {
		return nil, fmt.Errorf("load data path: %w", err)
	}
	for _, r := range dp.Replaced {
		log.Warn("replaced a pinned map of another podvnet release; its entries are rebuilt", zap.String("map", r))
	}
	a := &Agent{cfg: cfg, log: log, dp: dp, alloc: alloc, nic: nic, ready: cfg.Ready, metrics: cfg.Metrics, jobs: newHostJobs(),
		entries: newEndpointEntries(dp.Maps.Endpoints)}
	a.nicIndex.Store(int64(nic.Attrs().Index))
	defer func() {
		if err != nil {
			dp.Close()
		}
	}()
	if err := a.setupPolicy(); err != nil {
		return nil, err
	}
	if a.mtu() > nic.Attrs().MTU {
		return nil, fmt.Errorf("%d %w %d of NIC %s: pods would send frames the VNet drops", cfg.MTU, ErrMTUAboveNIC, nic.Attrs().MTU, cfg.NIC)
	}

	if err := a.prepareNode(); err != nil {
		return nil, err
	}
	if err := a.writeConfigMaps(); err != nil {
		return nil, err
	}
	if err := a.startServices(); err != nil {
		return nil, err
	}
	if err := a.syncBlocked(); err != nil {
		return nil, err
	}
	// Releases queued by plugins while no agent ran, before anything else
	// looks at the allocations.
	if err := a.replayDelQueue(); err != nil {
		log.Error("replay DEL queue", zap.Error(err))
	}
	if err := a.reconcile(); err != nil {
		return nil, fmt.Errorf("reconcile: %w", err)
	}
	nicMode, err := dp.Attach(maps.HookNIC, nic.Attrs().Index, nic.Attrs().Name, cfg.AttachMode)
	if err != nil {
		return nil, err
	}
	if err := a.detachOtherNICs(); err != nil {
		return nil, err
	}
	if err := a.attachPolicyNIC(nic); err != nil {
		return nil, err
	}
	if err := a.writeSettings(nicMode); err != nil {
		return nil, err
	}
	a.metrics.registerAgent(a)
	cfg.Ready.Set(false, "starting the plugin API")
	log.Info("data path attached", zap.String("ifname", nic.Attrs().Name), zap.Int("ifindex", nic.Attrs().Index),
		zap.String("prog", "from_nic"), zap.String("mode", string(nicMode)), zap.String("pod_mode", string(a.podMode(false))),
		zap.Bool("conntrack_lookup", dp.ConntrackLookup() && !cfg.NoConntrackLookup), zap.Int("pod_mtu", a.mtu()))
	return a, nil
}

// waitForLink returns the named interface, waiting for it to appear (a
// NIC can show up late at boot) rather than crash-looping; readiness says
// what the agent waits for.
func waitForLink(ctx context.Context, name string, ready *Readiness, log *zap.Logger) (netlink.Link, error) {
	delay := 100 * time.Millisecond
	for logged := false; ; {
		l, err := netlink.LinkByName(name)
		if err == nil {
			return l, nil
		}
		var notFound netlink.LinkNotFoundError
		if !errors.As(err, &notFound) {
			return nil, fmt.Errorf("find NIC %q: %w", name, err)
		}
		ready.Set(false, fmt.Sprintf("waiting for NIC %s to appear", name))
		if !logged {
			log.Warn("NIC not found, waiting for it", zap.String("ifname", name))
			logged = true
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("find NIC %q: %w (gave up: %v)", name, err, ctx.Err())
		case <-time.After(delay):
		}
		delay = min(2*delay, 2*time.Second)
	}
}

// podMode is how from_pod is attached to a pod's veth. In auto, legacy tc:
// a tcx attachment waits for an RCU grace period holding the RTNL lock
// (5-12 ms here), stalling every netlink user on the node, where a cls_bpf
// filter takes 0.2 ms; pods come and go all the time, the NIC's program is
// attached once. A shaped pod gets tcx: the bandwidth plugin puts an
// ingress qdisc on its veth, which cannot share it with clsact.
func (a *Agent) podMode(shaped bool) loader.Mode {
	if a.cfg.AttachMode == loader.ModeAuto && !shaped {
		return loader.ModeLegacy
	}
	return a.cfg.AttachMode
}

// mtu is the MTU pods get.
func (a *Agent) mtu() int {
	if a.cfg.MTU > 0 {
		return a.cfg.MTU
	}
	return a.nic.Attrs().MTU
}

// noSNAT is every range pods reach with their own IP: the subnet first,
// and 168.63.129.16 always, as Azure CNI excludes it from masquerading: a
// pod's reply to a load balancer health probe from there must keep the
// pod's address (blocked.go).
func (a *Agent) noSNAT() []netip.Prefix {
	return append([]netip.Prefix{a.cfg.Pool.Subnet.Masked(), wireserverPrefix}, a.cfg.NoSNAT...)
}

// prepareNode sets what the node needs besides the programs:
//   - net.ipv4.ip_forward=1: the kernel path (Services, masquerading,
//     replies of NAT'd flows) forwards between the NIC and pod veths.
//   - the masquerade table: pod traffic to anything outside the no-SNAT
//     ranges leaves with the node's IP.
func (a *Agent) prepareNode() error {
	forward, err := sysctl.Sysctl("net/ipv4/ip_forward")
	if err != nil {
		return fmt.Errorf("read net.ipv4.ip_forward: %w", err)
	}
	if forward != "1" {
		if _, err := sysctl.Sysctl("net/ipv4/ip_forward", "1"); err != nil {
			return fmt.Errorf("set net.ipv4.ip_forward=1: %w", err)
		}
		a.log.Info("enabled IPv4 forwarding (net.ipv4.ip_forward=1)")
	}
	if err := snat.Apply(snat.Rules{PodIfPrefix: agentapi.HostVethPrefix, NoSNAT: a.noSNAT(), Blocked: a.cfg.Blocked}); err != nil {
		return err
	}
	a.log.Info("masquerade rules in place", zap.String("table", snat.TableName), zap.Stringers("no_snat", a.noSNAT()))
	return nil
}

// writeConfigMaps writes what the programs read about the node: the config
// map (NIC, node IP, gateway, subnet, next hop, flags), updated in place,
// and the no-SNAT ranges.
func (a *Agent) writeConfigMaps() error {
	attrs := a.nic.Attrs()
	hop := a.readNextHop(a.nic)
	cfg := maps.Config{
		NICIfindex: uint32(attrs.Index),
		NodeIP:     a.cfg.Pool.Primary.As4(),
		GatewayIP:  netip.MustParseAddr(agentapi.GatewayIP).As4(),
		Subnet:     a.cfg.Pool.Subnet.Masked().Addr().As4(),
		SubnetMask: [4]byte(net.CIDRMask(a.cfg.Pool.Subnet.Bits(), 32)),
	}
	if !a.cfg.NoConntrackLookup {
		cfg.Flags |= maps.ConfigCTLookup
	}
	cfg.Flags |= a.serviceConfigFlags()
	copy(cfg.NICMAC[:], attrs.HardwareAddr)
	cfg = withHop(cfg, hop)
	a.configMu.Lock()
	defer a.configMu.Unlock()
	if err := a.dp.Maps.Config.Set(cfg); err != nil {
		return err
	}
	a.config = cfg
	a.logNextHop(hop)
	return a.dp.Maps.NoSNAT.Sync(a.noSNAT())
}

// detachOtherNICs removes from_nic from interfaces that are no longer the
// NIC (--nic changed since the last agent).
func (a *Agent) detachOtherNICs() error {
	atts, err := loader.ListAttachments(a.cfg.Paths.BPFFSRoot)
	if err != nil {
		return err
	}
	for _, att := range atts {
		if (att.Hook == maps.HookNIC || att.Hook == maps.HookToNIC) && att.IfName != a.nic.Attrs().Name {
			if err := loader.Detach(a.cfg.Paths.BPFFSRoot, att.Hook, att.IfName); err != nil {
				return err
			}
			a.log.Info("detached from former NIC", zap.String("ifname", att.IfName), zap.String("mode", string(att.Mode)))
		}
	}
	return nil
}

// Serve answers the plugin on the unix socket until ctx ends.
func (a *Agent) Serve(ctx context.Context) error {
	ln, err := listenUnix(a.cfg.Paths.Socket)
	if err != nil {
		return err
	}
	srv := newServer(a)
	a.ready.Set(true, "")
	a.log.Info("serving", zap.String("socket", a.cfg.Paths.Socket), zap.Int("limit", a.alloc.Limit()),
		zap.Int("allocated", a.alloc.Allocated()))
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	go a.replayDelQueueEvery(ctx, delQueueInterval)
	if a.policy != nil {
		a.policy.start(ctx)
	}
	go a.purgeFlows(ctx)
	go a.writeNamesEvery(ctx, time.Second)
	a.mu.Lock()
	nic := a.nic
	a.mu.Unlock()
	a.startNextHop(ctx, nic)
	defer a.stopNextHop()
	select {
	case <-ctx.Done():
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", a.cfg.Paths.Socket, err)
	}
	a.ready.Set(false, "stopping")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("shut down API: %w", err)
	}
	return nil
}

// Close finishes the background veth work and releases file descriptors.
// The pinned data path keeps forwarding.
func (a *Agent) Close() error {
	a.jobs.waitAll()
	a.closeServices()
	return a.dp.Close()
}
