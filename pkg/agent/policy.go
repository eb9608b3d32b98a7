package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"
	"go.uber.org/zap"

	"github.com/podvnet/podvnet/internal/atomicfile"
	"github.com/podvnet/podvnet/pkg/loader"
	"github.com/podvnet/podvnet/pkg/maps"
	"github.com/podvnet/podvnet/pkg/paths"
	"github.com/podvnet/podvnet/pkg/policy"
	"github.com/podvnet/podvnet/pkg/policymap"
	"github.com/podvnet/podvnet/pkg/settings"
)

// PolicySource is the API server's side of NetworkPolicy (pkg/kube's
// client): the cluster's pods, namespaces and policies, and a pod the
// informer has not shown yet.
type PolicySource interface {
	// OnPolicySnapshot registers f, called with the whole cluster whenever
	// it changed (never before the informers have synced). Register before
	// the source starts.
	OnPolicySnapshot(f func(policy.Snapshot))
	// GetPod asks the API server for a pod.
	GetPod(ctx context.Context, namespace, name string) (policy.Pod, error)
}

// Unknown-policy settings (--policy-unknown): what a pod gets while its
// NetworkPolicy cannot be known (no API server since the agent started).
const (
	PolicyUnknownDeny  = "deny"
	PolicyUnknownAllow = "allow"
)

// PolicyOptions turn NetworkPolicy on. Without them (static mode, no API
// server) pods are never isolated.
type PolicyOptions struct {
	Source PolicySource
	// Unknown is PolicyUnknownDeny (the default: ADD fails, the runtime
	// retries) or PolicyUnknownAllow (the pod starts open, isolated once
	// its policy is known).
	Unknown string
	// Wait bounds how long an ADD waits for the policy to be known.
	Wait time.Duration
	// ServiceCIDR is what kube-proxy translates in the stack: egress to it
	// is judged after the DNAT.
	ServiceCIDR netip.Prefix
	// Applied, when set, is called after each update is in the maps, with
	// the snapshot it came from (the control path benchmark times it).
	Applied func(policy.Snapshot)
}

// ErrPolicyUnknown refuses an ADD whose pod's NetworkPolicy is not known.
var ErrPolicyUnknown = errors.New("NetworkPolicy not known")

// policyCtl keeps the maps in step with the cluster's NetworkPolicy: the
// engine computes, the writer writes, one update at a time.
type policyCtl struct {
	opts   PolicyOptions
	log    *zap.Logger
	paths  paths.Node
	dp     *maps.Policy
	local  func() []localEndpoint
	mu     sync.Mutex
	engine *policy.Engine
	writer *policymap.Writer
	// synced is closed when the first snapshot is in the maps.
	synced     chan struct{}
	syncedOnce sync.Once
	// syncTime observes how long updates take (nil: no metrics).
	syncTime prometheus.Histogram
	// idsDirty asks the identities file to be written again.
	idsDirty chan struct{}
}

// localEndpoint is an endpoint of this node as the allocator holds it.
type localEndpoint struct {
	ip                   netip.Addr
	namespace, name, uid string
}

// newPolicyCtl adopts what the pinned maps hold for the endpoints the
// agent has: their rules stay in force until the first snapshot replaces
// them.
func newPolicyCtl(opts PolicyOptions, m *maps.Set, iso policymap.Isolation, nodeIP netip.Addr, p paths.Node,
	local func() []localEndpoint, log *zap.Logger) (*policyCtl, error) {
	if opts.Unknown == "" {
		opts.Unknown = PolicyUnknownDeny
	}
	if opts.Wait <= 0 {
		opts.Wait = 5 * time.Second
	}
	w := policymap.New(m.Policy, iso)
	eps, err := m.Endpoints.List()
	if err != nil {
		return nil, err
	}
	have := map[netip.Addr]bool{}
	for _, l := range local() {
		have[l.ip] = true
	}
	var pinned []policymap.Pinned
	for _, e := range eps {
		if have[e.IP] {
			pinned = append(pinned, policymap.Pinned{IP: e.IP, ID: e.PolicyID, Flags: e.Flags})
		}
	}
	maxID, err := w.Adopt(pinned)
	if err != nil {
		return nil, fmt.Errorf("adopt the pinned NetworkPolicy maps: %w", err)
	}
	if err := w.SetServiceCIDR(opts.ServiceCIDR); err != nil {
		return nil, err
	}
	c := &policyCtl{opts: opts, log: log, paths: p, dp: m.Policy, local: local, writer: w,
		engine: policy.NewEngine(policy.Config{NodeIP: nodeIP, FirstIdentity: maxID + 1}),
		synced: make(chan struct{}), idsDirty: make(chan struct{}, 1)}
	return c, nil
}

// run writes the identities file when it changed, at most once a second,
// until ctx ends; it registers the snapshot listener first.
func (c *policyCtl) start(ctx context.Context) {
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-c.idsDirty:
			}
			c.mu.Lock()
			ids := c.engine.Identities()
			c.mu.Unlock()
			if err := writeIdentities(c.paths, ids); err != nil {
				c.log.Warn("write the NetworkPolicy identities file (debug policy shows numbers only)", zap.Error(err))
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
	}()
}

func writeIdentities(p paths.Node, ids []policy.Identity) error {
	b, err := json.Marshal(ids)
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(p.PolicyIdentitiesFile(), b, 0o600)
}

func (c *policyCtl) identitiesChanged() {
	select {
	case c.idsDirty <- struct{}{}:
	default:
	}
}

func (c *policyCtl) isSynced() bool {
	select {
	case <-c.synced:
		return true
	default:
		return false
	}
}

// onSnapshot brings the maps in step with a new view of the cluster. The
// first one registers every local endpoint and writes the whole state over
// what the last agent left.
func (c *policyCtl) onSnapshot(s policy.Snapshot) {
	start := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	first := !c.isSynced()
	if first {
		byKey := map[string]policy.Pod{}
		for _, p := range s.Pods {
			byKey[p.Key()] = p
		}
		for _, l := range c.local() {
			pod := policy.Pod{Namespace: l.namespace, Name: l.name, UID: l.uid}
			if p, ok := byKey[pod.Key()]; ok && (l.uid == "" || p.UID == l.uid) {
				pod = p
			}
			c.engine.AddEndpoint(l.ip, pod)
		}
	}
	ch := c.engine.Update(s)
	var st policymap.Stats
	var err error
	if first {
		st, err = c.writer.Sync(c.engine.All())
	} else if !ch.Empty() {
		st, err = c.writer.Apply(ch)
	}
	if err != nil {
		// The maps hold a consistent older state; the next snapshot (every
		// change brings one) writes again what differs.
		c.log.Error("write NetworkPolicy into the maps", zap.Error(err))
		return
	}
	if first {
		c.syncedOnce.Do(func() { close(c.synced) })
		c.log.Info("NetworkPolicy in force", zap.Int("pods", len(s.Pods)), zap.Int("namespaces", len(s.Namespaces)),
			zap.Int("policies", len(s.Policies)), zap.Int("endpoints", len(c.local())), zap.Duration("took", time.Since(start)))
	} else if !ch.Empty() {
		c.log.Debug("NetworkPolicy updated", zap.Int("endpoints", len(ch.Endpoints)), zap.Int("ipcache", st.IPCache),
			zap.Int("rules", st.Peers+st.CIDRs), zap.Int("deleted", st.Deleted), zap.Duration("took", time.Since(start)))
	}
	if c.syncTime != nil {
		c.syncTime.Observe(time.Since(start).Seconds())
	}
	c.identitiesChanged()
	if c.opts.Applied != nil {
		c.opts.Applied(s)
	}
}

// podForAdd finds the pod of an ADD, for its labels and named ports: the
// informer's, or the API server's when the informer has not shown it yet.
// It waits (bounded) for the policy to be known; known is false when the
// pod starts open (not a Kubernetes pod, or unknown policy allowed).
func (c *policyCtl) podForAdd(ctx context.Context, namespace, name, uid string) (pod policy.Pod, known bool, err error) {
	if c == nil || name == "" {
		return policy.Pod{}, false, nil
	}
	wait := time.NewTimer(c.opts.Wait)
	defer wait.Stop()
	select {
	case <-c.synced:
	case <-wait.C:
	case <-ctx.Done():
	}
	if !c.isSynced() {
		return c.unknown(namespace, name, fmt.Errorf("the agent has not heard from the API server since it started (waited %s)", c.opts.Wait))
	}
	c.mu.Lock()
	pod, ok := c.engine.Pod(namespace + "/" + name)
	c.mu.Unlock()
	if ok && (uid == "" || pod.UID == uid) {
		return pod, true, nil
	}
	gctx, cancel := context.WithTimeout(ctx, c.opts.Wait)
	defer cancel()
	pod, err = c.opts.Source.GetPod(gctx, namespace, name)
	if err != nil {
		return c.unknown(namespace, name, fmt.Errorf("get the pod's labels from the API server: %w", err))
	}
	return pod, true, nil
}

// unknown is what a pod whose policy cannot be known gets: refused, or
// (--policy-unknown=allow) started open.
func (c *policyCtl) unknown(namespace, name string, why error) (policy.Pod, bool, error) {
	if c.opts.Unknown == PolicyUnknownAllow {
		c.log.Warn("NetworkPolicy unknown: the pod starts open (--policy-unknown=allow)", zap.String("pod", namespace+"/"+name), zap.Error(why))
		return policy.Pod{}, false, nil
	}
	return policy.Pod{}, false, fmt.Errorf("%w for pod %s/%s: %v; the pod is refused until it is (--policy-unknown=deny)", ErrPolicyUnknown, namespace, name, why)
}

// addEndpoint computes a new endpoint's rules and writes them before its
// first packet can flow.
func (c *policyCtl) addEndpoint(ip netip.Addr, pod policy.Pod) error {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := c.engine.AddEndpoint(ip, pod)
	if !c.isSynced() {
		return nil // the first snapshot writes everything
	}
	if _, err := c.writer.Apply(ch); err != nil {
		return fmt.Errorf("write the NetworkPolicy of %s: %w", pod.Key(), err)
	}
	c.identitiesChanged()
	return nil
}

// removeEndpoint forgets an endpoint and removes its rules.
func (c *policyCtl) removeEndpoint(ip netip.Addr) error {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := c.engine.RemoveEndpoint(ip)
	if !c.isSynced() || ch.Empty() {
		return nil
	}
	_, err := c.writer.Apply(ch)
	return err
}

// setupPolicy turns NetworkPolicy on (PolicyOptions given) or off. On, the
// entries keep the isolation the pinned maps hold until the first snapshot
// rewrites it, and the controller adopts the pinned rules. Off, the
// entries are rewritten without isolation at reconcile, and the node's
// policy flags are cleared so that to_pod and to_nic (detached too) would
// judge nothing.
func (a *Agent) setupPolicy() error {
	if a.cfg.Policy == nil {
		if err := a.dp.Maps.Policy.SetConfig(maps.PolicyConfig{}); err != nil {
			return err
		}
		a.log.Info("NetworkPolicy off: pods are never isolated (no Kubernetes API server, or --network-policy=false)")
		return nil
	}
	pinned, err := a.dp.Maps.Endpoints.List()
	if err != nil {
		return err
	}
	a.entries.keepPolicy(pinned)
	ctl, err := newPolicyCtl(*a.cfg.Policy, a.dp.Maps, a.entries, a.cfg.Pool.Primary, a.cfg.Paths, a.localEndpoints, a.log)
	if err != nil {
		return err
	}
	a.policy = ctl
	ctl.syncTime = a.metrics.registerPolicy(a)
	if err := a.pendUnknownEndpoints(); err != nil {
		return err
	}
	a.cfg.Policy.Source.OnPolicySnapshot(ctl.onSnapshot)
	return nil
}

// pendUnknownEndpoints isolates, as pending, the endpoints whose policy
// the maps lost: the last agent enforced NetworkPolicy, but a map of its
// was replaced (another release's layout) and took their rules along.
// Until the first snapshot rewrites them they are denied where unknown
// policy is (--policy-unknown=deny), and open otherwise. Endpoints that
// were never under an agent enforcing NetworkPolicy stay as they were:
// open.
func (a *Agent) pendUnknownEndpoints() error {
	if a.cfg.Policy.Unknown == PolicyUnknownAllow {
		return nil
	}
	prev, err := settings.Read(a.cfg.Paths)
	if err != nil || !strings.HasPrefix(prev.NetworkPolicy, "on") {
		return nil
	}
	lost := false
	for _, r := range a.dp.Replaced {
		name, _, _ := strings.Cut(r, ":")
		lost = lost || name == maps.EndpointsMap || slices.Contains(maps.PolicyNames, name)
	}
	if !lost {
		return nil
	}
	n := 0
	for _, l := range a.localEndpoints() {
		if err := a.policy.writer.SetPending(l.ip); err != nil {
			return err
		}
		n++
	}
	a.log.Warn("NetworkPolicy of running pods lost with a replaced map: they are denied (pending) until the API server's view is in the maps",
		zap.Int("endpoints", n), zap.Strings("replaced", a.dp.Replaced))
	return nil
}

// describePolicy is the settings file's account of NetworkPolicy.
func (a *Agent) describePolicy() string {
	if a.policy == nil {
		return "off"
	}
	return "on, unknown policy: " + a.policy.opts.Unknown
}

// localEndpoints are the endpoints the allocator holds.
func (a *Agent) localEndpoints() []localEndpoint {
	var out []localEndpoint
	for _, al := range a.alloc.List() {
		out = append(out, localEndpoint{ip: al.IP, namespace: al.PodNamespace, name: al.PodName, uid: al.PodUID})
	}
	return out
}

// podHooks are the programs a pod's host veth runs: from_pod, and to_pod
// where NetworkPolicy is on.
func (a *Agent) podHooks() []maps.Hook {
	if a.policy == nil {
		return []maps.Hook{maps.HookPod}
	}
	return []maps.Hook{maps.HookPod, maps.HookToPod}
}

// attachPod attaches the pod's programs to its host veth now; where
// NetworkPolicy is off it removes a to_pod an earlier agent left.
func (a *Agent) attachPod(index int, name string, shaped bool) error {
	for _, h := range a.podHooks() {
		if _, err := a.dp.Attach(h, index, name, a.podMode(shaped)); err != nil {
			return err
		}
	}
	if a.policy == nil {
		return loader.Detach(a.dp.Root(), maps.HookToPod, name)
	}
	return nil
}

// attachPolicyNIC attaches to_nic to the NIC where NetworkPolicy is on,
// and removes it where it is off.
func (a *Agent) attachPolicyNIC(nic netlink.Link) error {
	if a.policy == nil {
		return loader.Detach(a.dp.Root(), maps.HookToNIC, nic.Attrs().Name)
	}
	_, err := a.dp.Attach(maps.HookToNIC, nic.Attrs().Index, nic.Attrs().Name, a.cfg.AttachMode)
	return err
}
