package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/podvnet/podvnet/internal/svcdev"
	"github.com/podvnet/podvnet/pkg/loader"
	"github.com/podvnet/podvnet/pkg/maps"
	"github.com/podvnet/podvnet/pkg/services"
)

// ServiceMode says who serves Services on the node (--service-mode).
type ServiceMode string

// Service modes: kube-proxy's rules in the kernel (the data path hands
// Service traffic to the stack), or the programs themselves.
const (
	ServiceModeKubeProxy ServiceMode = "kube-proxy"
	ServiceModeBPF       ServiceMode = "bpf"
)

// ParseServiceMode reads a --service-mode value.
func ParseServiceMode(s string) (ServiceMode, error) {
	switch m := ServiceMode(s); m {
	case ServiceModeKubeProxy, ServiceModeBPF:
		return m, nil
	}
	return "", fmt.Errorf("service mode %q: want kube-proxy or bpf", s)
}

// ServiceConfig is what the agent is told about Services.
type ServiceConfig struct {
	Mode ServiceMode
	// CgroupRoot is a cgroup v2 hierarchy; the agent mounts one there when
	// none is. PodCgroup is the pods' cgroup under it, where the socket
	// hooks attach ("auto": the kubepods cgroup the agent's own pod is in;
	// "none": no hooks, from_pod translates pods' Service packets).
	CgroupRoot string
	PodCgroup  string
	// CIDR is the Service CIDR: in mode bpf the node's route for it goes to
	// the Service device, where from_host translates the node's own
	// Service traffic.
	CIDR netip.Prefix
	// NATPortMin and NATPortMax are the source ports of NodePort traffic
	// SNAT'd to the node: above the node's ephemeral range, so that no
	// socket of the node uses them.
	NATPortMin, NATPortMax uint16
	// FromAPI: an API client feeds Services, nodes and pods (ApplyService
	// and the others). Without it (static mode) nothing is known of
	// Services: mode bpf is refused and the conntrack lookup stays on for
	// every packet.
	FromAPI bool
	// NodeName is this node's Kubernetes name: endpoints on it are local.
	NodeName string
}

// serviceState is the agent's side of Services: the syncer writing the
// maps, the source-port filter, the health check ports, and what decides
// whether the conntrack lookup may be limited to the filter's ports.
type serviceState struct {
	mu     sync.Mutex
	cfg    ServiceConfig
	syncer *services.Syncer
	filter *services.PortFilter
	health *services.HealthServer
	purge  chan []uint32
	// namesDirty: the names file (services.Names) lags the syncer.
	namesDirty bool

	// The conntrack lookup is limited to the filter's ports only while the
	// filter is known complete: every Service applied, this node's pods
	// known, the API server answering, no pod added that the API did not
	// show (its hostPorts unknown).
	servicesSynced bool
	podsSynced     bool
	apiUp          bool
	localPods      map[string]bool
	unknownPod     string

	programming prometheus.Histogram
}

// startServices prepares the data path for the service mode: in mode bpf
// the socket hooks on the pods' cgroup and the Service device with its
// route and from_host; under kube-proxy neither (an earlier agent's
// removed). It adopts what the Services' maps hold, which the first full
// sync then rewrites or sweeps.
func (a *Agent) startServices() (err error) {
	c := a.cfg.Services
	if c.Mode == "" {
		c.Mode = ServiceModeKubeProxy
	}
	if c.Mode == ServiceModeBPF && !c.FromAPI {
		return errors.New("service mode bpf needs the Kubernetes API (--node-name): Services come from it")
	}
	s := &serviceState{cfg: c, apiUp: true, localPods: map[string]bool{}, purge: make(chan []uint32, 64)}
	a.svc = s
	m := a.dp.Maps.Services
	words, err := m.PortWords()
	if err != nil {
		return err
	}
	s.filter = services.NewPortFilter(m, words[:])
	s.syncer = services.NewSyncer(m, s.filter, c.NodeName, c.Mode == ServiceModeBPF)
	pinned, err := readPinnedServices(m)
	if err != nil {
		return err
	}
	s.syncer.Adopt(pinned)

	if c.Mode == ServiceModeBPF {
		if err := a.startServiceDataPath(); err != nil {
			return err
		}
		s.health = services.NewHealthServer(services.ListenTCP, func() bool { ok, _ := a.ready.Get(); return ok })
	} else if err := a.stopServiceDataPath(); err != nil {
		return err
	}
	if a.metrics != nil {
		s.programming = prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "podvnet_service_programming_duration_seconds",
			Help:    "From an EndpointSlice's last change in the API (its last-change-trigger-time) to the data path's maps holding it.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		})
		a.metrics.Registry.MustRegister(s.programming)
	}
	a.log.Info("services", zap.String("mode", string(c.Mode)), zap.Bool("from_api", c.FromAPI))
	return nil
}

// startServiceDataPath puts mode bpf's hooks in place: the socket
// programs on the pods' cgroup, the Service device with from_host and the
// Service CIDR's route, the Service config; and tells the programs.
func (a *Agent) startServiceDataPath() error {
	c := a.cfg.Services
	if c.PodCgroup == "none" {
		// No cgroup v2 holds the pods: from_pod translates their Service
		// packets instead.
		if err := loader.DetachSock(a.dp.Root()); err != nil {
			return err
		}
		a.log.Info("no socket hooks (--pod-cgroup none): pods' Service traffic is translated per packet")
	} else {
		dir, err := podCgroupDir(c.CgroupRoot, c.PodCgroup)
		if err != nil {
			return err
		}
		if err := a.dp.AttachSock(dir); err != nil {
			return err
		}
		a.log.Info("socket hooks attached", zap.String("cgroup", dir), zap.Strings("progs", maps.SockPrograms))
	}
	dev, err := svcdev.Ensure(c.CIDR, a.cfg.Pool.Primary)
	if err != nil {
		return err
	}
	mode, err := a.dp.Attach(maps.HookHost, dev.Attrs().Index, dev.Attrs().Name, a.cfg.AttachMode)
	if err != nil {
		return err
	}
	a.log.Info("service device", zap.String("ifname", dev.Attrs().Name), zap.Int("ifindex", dev.Attrs().Index),
		zap.String("route", c.CIDR.String()), zap.String("prog", "from_host"), zap.String("mode", string(mode)))
	m := a.dp.Maps.Services
	if err := m.SetConfig(dev.Attrs().Index, dev.Attrs().HardwareAddr, c.NATPortMin, c.NATPortMax); err != nil {
		return err
	}
	if err := m.SetNodes(nil, a.cfg.Pool.Primary); err != nil {
		return err
	}
	return a.setConfigFlag(maps.ConfigServices, true)
}

// stopServiceDataPath removes what mode bpf put in place (an earlier
// agent's), the programs told first, so that kube-proxy's rules see every
// Service packet again.
func (a *Agent) stopServiceDataPath() error {
	if err := a.setConfigFlag(maps.ConfigServices, false); err != nil {
		return err
	}
	if err := loader.DetachSock(a.dp.Root()); err != nil {
		return err
	}
	if err := loader.Detach(a.dp.Root(), maps.HookHost, svcdev.Name); err != nil {
		return err
	}
	return svcdev.Remove()
}

// serviceConfigFlags are the config flags of Services a config write keeps:
// mode bpf's from the start (a restarting agent never lets the pinned
// frontends go unused), the conntrack gate as it stands.
func (a *Agent) serviceConfigFlags() uint32 {
	flags := a.config.Flags & maps.ConfigCTByPort
	if a.cfg.Services.Mode == ServiceModeBPF {
		flags |= maps.ConfigServices
	}
	return flags
}

// setConfigFlag sets or clears a config flag, in place.
func (a *Agent) setConfigFlag(flag uint32, on bool) error {
	a.configMu.Lock()
	defer a.configMu.Unlock()
	cfg := a.config
	if on {
		cfg.Flags |= flag
	} else {
		cfg.Flags &^= flag
	}
	if cfg == a.config {
		return nil
	}
	if err := a.dp.Maps.Config.Set(cfg); err != nil {
		return err
	}
	a.config = cfg
	return nil
}

func readPinnedServices(m *maps.Services) (services.Pinned, error) {
	var p services.Pinned
	var err error
	if p.Frontends, err = m.Frontends(); err != nil {
		return p, err
	}
	if p.Backends, err = m.Backends(); err != nil {
		return p, err
	}
	if p.Slots, err = m.SlotEntries(); err != nil {
		return p, err
	}
	p.AffinityMatches, err = m.AffinityMatches()
	return p, err
}

// ApplyService writes one Service (nil: deleted) with its EndpointSlices
// into the data path; changed is when the API last changed its endpoints
// (zero if unknown), for the programming latency. Safe for concurrent use.
func (a *Agent) ApplyService(key services.Key, svc *services.Service, slices []*services.EndpointSlice, changed time.Time) error {
	s := a.svc
	s.mu.Lock()
	defer s.mu.Unlock()
	removed, err := s.syncer.Apply(key, svc, slices)
	if err != nil {
		return err
	}
	if !changed.IsZero() && s.programming != nil {
		s.programming.Observe(time.Since(changed).Seconds())
	}
	if len(removed) > 0 {
		select {
		case s.purge <- removed:
		default: // the purger is behind: its next walk catches up on flows to gone backends
		}
	}
	s.namesDirty = s.cfg.Mode == ServiceModeBPF
	if s.health != nil {
		var port uint16
		if svc != nil && svc.ExternalLocal {
			port = svc.HealthCheckNodePort
		}
		if err := s.health.Set(key, port, services.LocalReadyIPs(slices, s.cfg.NodeName)); err != nil {
			a.log.Warn("health check node port", zap.String("service", key.String()), zap.Error(err))
		}
	}
	return nil
}

// ServicesSynced says every Service the API server had is applied: what
// an earlier agent pinned and no Service claimed goes, and the conntrack
// lookup may be limited to the filter's ports.
func (a *Agent) ServicesSynced() {
	s := a.svc
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := errors.Join(s.syncer.SweepAdopted(), s.filter.Sweep()); err != nil {
		a.log.Error("remove the Services an earlier agent left", zap.Error(err))
	}
	s.servicesSynced = true
	a.log.Info("services synced")
	a.updateCTByPort()
}

// SetNodeIPs sets the cluster's node IPs, on each of which a NodePort
// answers.
func (a *Agent) SetNodeIPs(ips []netip.Addr) error {
	if a.cfg.Services.Mode != ServiceModeBPF {
		return nil
	}
	return a.dp.Maps.Services.SetNodes(ips, a.cfg.Pool.Primary)
}

// SetLocalPods takes the pods of this node (namespace/name) and the
// container ports kernel NAT may answer from (hostPorts, through portmap;
// named ports, which a Service may target before its EndpointSlice shows
// the number).
func (a *Agent) SetLocalPods(pods []string, ports []services.ProtoPort) error {
	s := a.svc
	s.mu.Lock()
	defer s.mu.Unlock()
	commit, err := s.filter.Set("pods", services.PortSet{CT: ports})
	if err == nil {
		err = commit()
	}
	if err != nil {
		return err
	}
	s.localPods = map[string]bool{}
	for _, p := range pods {
		s.localPods[p] = true
	}
	if s.unknownPod != "" && s.localPods[s.unknownPod] {
		s.unknownPod = ""
	}
	s.podsSynced = true
	a.updateCTByPort()
	return nil
}

// SetAPIUp says whether the API server answers: while it does not, what it
// changes is unknown, and the conntrack lookup asks for every packet.
func (a *Agent) SetAPIUp(up bool) {
	s := a.svc
	s.mu.Lock()
	defer s.mu.Unlock()
	s.apiUp = up
	a.updateCTByPort()
}

// podAdded is told of every ADD: a pod the API has not shown yet may have
// hostPorts the filter lacks, so the conntrack lookup asks for every
// packet until the pod appears.
func (a *Agent) podAdded(namespace, name string) {
	s := a.svc
	if s == nil || namespace == "" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if pod := namespace + "/" + name; !s.localPods[pod] {
		s.unknownPod = pod
		a.updateCTByPort()
	}
}

// updateCTByPort limits the conntrack lookup to the filter's ports when
// the filter is known complete. Callers hold s.mu.
func (a *Agent) updateCTByPort() {
	s := a.svc
	on := s.cfg.FromAPI && s.podsSynced && s.apiUp && s.unknownPod == "" &&
		(s.servicesSynced || s.cfg.Mode == ServiceModeBPF)
	if err := a.setConfigFlag(maps.ConfigCTByPort, on); err != nil {
		a.log.Error("switch the conntrack lookup", zap.Bool("by_port", on), zap.Error(err))
	}
}

// purgeFlows drops translated flows to backends that left (their pinned
// NAT entries would otherwise live until the LRU evicts them), until ctx
// ends.
func (a *Agent) purgeFlows(ctx context.Context) {
	for {
		var gone []uint32
		select {
		case <-ctx.Done():
			return
		case gone = <-a.svc.purge:
		}
		set := map[uint32]bool{}
		for _, id := range gone {
			set[id] = true
		}
		// Take what else is queued: one walk for all.
		for more := true; more; {
			select {
			case ids := <-a.svc.purge:
				for _, id := range ids {
					set[id] = true
				}
			default:
				more = false
			}
		}
		flows, err := a.dp.Maps.Services.NATFlows()
		if err != nil {
			a.log.Warn("list translated flows", zap.Error(err))
			continue
		}
		n := 0
		for _, f := range flows {
			if set[f.BackendID] {
				if err := a.dp.Maps.Services.DeleteNATFlow(f.Key); err == nil {
					n++
				}
			}
		}
		a.log.Debug("translated flows to gone backends dropped", zap.Int("flows", n), zap.Int("backends", len(set)))
	}
}

// writeNamesEvery writes the names file when it lags the syncer, at most
// once a period (a full sync of 5,000 Services writes it once), until ctx
// ends, and a last time then.
func (a *Agent) writeNamesEvery(ctx context.Context, period time.Duration) {
	t := time.NewTicker(period)
	defer t.Stop()
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case <-t.C:
		}
		s := a.svc
		s.mu.Lock()
		var names services.Names
		if s.namesDirty {
			names, s.namesDirty = s.syncer.Names(), false
		}
		s.mu.Unlock()
		if names == nil {
			continue
		}
		if err := services.WriteNames(a.cfg.Paths.ServicesFile(), names); err != nil {
			a.log.Warn("write the Services' names for debug", zap.Error(err))
		}
	}
}

// closeServices stops the health check ports.
func (a *Agent) closeServices() {
	if a.svc != nil && a.svc.health != nil {
		a.svc.health.Close()
	}
}
