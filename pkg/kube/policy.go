package kube

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/tools/cache"

	"github.com/podvnet/podvnet/internal/ipproto"
	"github.com/podvnet/podvnet/pkg/policy"
)

// NetworkPolicy's view: every pod of the cluster (stored as the engine's
// policy.Pod: labels, address, hostNetwork, named ports), every namespace
// (name and labels) and every NetworkPolicy, one factory with no field
// selector. Each change enqueues one rebuild of the whole snapshot from the
// stores, which the listeners receive; nothing is sent before all three
// have listed.

// syncPolicy is the view's key.
const syncPolicy syncKey = "policy"

type policyInformers struct {
	pods, namespaces, policies cache.SharedIndexInformer
	listeners                  []func(policy.Snapshot)
}

// OnPolicySnapshot registers f, called from the worker with the whole
// cluster after every change of a pod, namespace or NetworkPolicy; the
// first registration adds the cluster-wide informers. Register before
// Start.
func (c *Client) OnPolicySnapshot(f func(policy.Snapshot)) {
	if c.policy == nil {
		c.enablePolicy()
	}
	c.policy.listeners = append(c.policy.listeners, f)
}

func (c *Client) enablePolicy() {
	all := c.factory("")
	p := &policyInformers{
		pods:       all.Core().V1().Pods().Informer(),
		namespaces: all.Core().V1().Namespaces().Informer(),
		policies:   all.Networking().V1().NetworkPolicies().Informer(),
	}
	c.policy = p
	c.syncs[syncPolicy] = c.syncPolicy
	c.watch(p.pods, policyPodTransform(), syncPolicy)
	c.watch(p.namespaces, trimNamespace, syncPolicy)
	c.watch(p.policies, trimNetworkPolicy, syncPolicy)
	// Its own wait: the rest of the agent's views need not wait for the
	// cluster's pods to list.
	c.afterStart = append(c.afterStart, func(ctx context.Context) {
		if cache.WaitForCacheSync(ctx.Done(), p.pods.HasSynced, p.namespaces.HasSynced, p.policies.HasSynced) {
			c.log.Info("Kubernetes API synced: the cluster's pods, namespaces and NetworkPolicies")
			c.queue.Add(syncPolicy)
		}
	})
}

func (p *policyInformers) synced() bool {
	return p.pods.HasSynced() && p.namespaces.HasSynced() && p.policies.HasSynced()
}

// syncPolicy rebuilds the snapshot from the stores and hands it on.
func (c *Client) syncPolicy(context.Context) error {
	p := c.policy
	if !p.synced() {
		return nil // enqueued again once they have
	}
	var s policy.Snapshot
	pods := p.pods.GetStore().List()
	s.Pods = make([]policy.Pod, 0, len(pods))
	for _, obj := range pods {
		// The maps are the store's: the engine only reads them.
		if o, ok := obj.(*policyPodObject); ok && !o.finished {
			s.Pods = append(s.Pods, o.pod)
		}
	}
	for _, obj := range p.namespaces.GetStore().List() {
		if ns, ok := obj.(*corev1.Namespace); ok {
			s.Namespaces = append(s.Namespaces, policy.Namespace{Name: ns.Name, Labels: ns.Labels})
		}
	}
	for _, obj := range p.policies.GetStore().List() {
		if np, ok := obj.(*networkingv1.NetworkPolicy); ok {
			s.Policies = append(s.Policies, policyOf(np))
		}
	}
	for _, f := range p.listeners {
		f(s)
	}
	return nil
}

// GetPod asks the API server for a pod (one the informer has not shown
// yet: CNI ADD comes moments after the scheduler bound it).
func (c *Client) GetPod(ctx context.Context, namespace, name string) (policy.Pod, error) {
	p, err := c.client.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return policy.Pod{}, fmt.Errorf("get pod %s/%s: %w", namespace, name, err)
	}
	return policyPod(p), nil
}

// policyPodObject is what the cluster-wide Pod informer stores of a pod:
// the engine's policy.Pod, converted once as the pod arrives rather than at
// every snapshot, and nothing else. A trimmed *corev1.Pod still costs over
// 1.5 KiB of mostly empty structs; at 5,000 pods those, and a converted
// copy made at every rebuild, were most of the agent's memory. The
// factory's Pod lister cannot read this store: it holds no *corev1.Pod.
type policyPodObject struct {
	pod policy.Pod
	// traits holds pod.Labels and pod.Ports, shared with every pod that
	// has the same (policyPodTransform).
	traits          *podTraits
	resourceVersion string // the informer tells an update from a resync by it
	finished        bool   // Succeeded or Failed: it holds no address any more
}

// podTraits are a pod's labels and named ports, what its identity is made
// of besides its namespace.
type podTraits struct {
	labels map[string]string
	ports  map[string]policy.NamedPort
}

// GetObjectMeta makes the object a metav1.ObjectMetaAccessor: the
// informer's store keys it by namespace/name, and its handlers compare
// resource versions.
func (o *policyPodObject) GetObjectMeta() metav1.Object {
	return &metav1.ObjectMeta{Namespace: o.pod.Namespace, Name: o.pod.Name, UID: types.UID(o.pod.UID), ResourceVersion: o.resourceVersion}
}

// policyPodTransform is the cluster-wide Pod informer's transform: a Pod
// becomes a policyPodObject whose labels and named ports are one copy
// shared by all the pods with the same; anything else (a tombstone) passes
// unchanged.
func policyPodTransform() cache.TransformFunc {
	var traits interner[podTraits]
	return func(obj any) (any, error) {
		p, ok := obj.(*corev1.Pod)
		if !ok {
			return obj, nil
		}
		v := policyPod(p)
		t := traits.get(traitsKey(v.Labels, v.Ports), func() podTraits { return podTraits{labels: v.Labels, ports: v.Ports} })
		v.Labels, v.Ports = t.labels, t.ports
		return &policyPodObject{pod: v, traits: t, resourceVersion: p.ResourceVersion,
			finished: p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed}, nil
	}
}

// traitsKey is a canonical form of labels and named ports: equal ones,
// and only those, have the same key (label keys and values, and port
// names, hold no NUL or '=').
func traitsKey(labels map[string]string, ports map[string]policy.NamedPort) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(labels[k])
		b.WriteByte(0)
	}
	b.WriteByte(0)
	for _, name := range slices.Sorted(maps.Keys(ports)) {
		p := ports[name]
		fmt.Fprintf(&b, "%s=%d/%d\x00", name, p.Port, p.Protocol)
	}
	return b.String()
}

// trimNamespace keeps a namespace's name and labels.
func trimNamespace(obj any) (any, error) {
	ns, ok := obj.(*corev1.Namespace)
	if !ok {
		return obj, nil
	}
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns.Name, UID: ns.UID, ResourceVersion: ns.ResourceVersion, Labels: ns.Labels}}, nil
}

// trimNetworkPolicy keeps a policy's spec.
func trimNetworkPolicy(obj any) (any, error) {
	np, ok := obj.(*networkingv1.NetworkPolicy)
	if !ok {
		return obj, nil
	}
	return &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: np.Name, Namespace: np.Namespace, UID: np.UID,
		ResourceVersion: np.ResourceVersion}, Spec: np.Spec}, nil
}

// policyPod is what NetworkPolicy reads of a pod.
func policyPod(p *corev1.Pod) policy.Pod {
	v := podOf(p)
	out := policy.Pod{Namespace: v.Namespace, Name: v.Name, UID: v.UID, IP: v.IP, HostNetwork: v.HostNetwork, Labels: v.Labels}
	for name, port := range v.Ports {
		if out.Ports == nil {
			out.Ports = map[string]policy.NamedPort{}
		}
		out.Ports[name] = policy.NamedPort{Port: uint16(port.Port), Protocol: protocol(corev1.Protocol(port.Protocol))}
	}
	return out
}

// protocol is the IP protocol number of a Kubernetes protocol (TCP when
// unset, as the API defaults it), for NetworkPolicy and Services alike.
func protocol(p corev1.Protocol) uint8 {
	switch p {
	case corev1.ProtocolUDP:
		return ipproto.UDP
	case corev1.ProtocolSCTP:
		return ipproto.SCTP
	}
	return ipproto.TCP
}

// policyOf converts a NetworkPolicy, applying the defaults the API server
// applies (a client may see an object written before they existed).
func policyOf(np *networkingv1.NetworkPolicy) policy.Policy {
	out := policy.Policy{Namespace: np.Namespace, Name: np.Name, PodSelector: selectorOf(&np.Spec.PodSelector)}
	for _, t := range np.Spec.PolicyTypes {
		switch t {
		case networkingv1.PolicyTypeIngress:
			out.IngressIsolation = true
		case networkingv1.PolicyTypeEgress:
			out.EgressIsolation = true
		}
	}
	if len(np.Spec.PolicyTypes) == 0 {
		out.IngressIsolation = true
		out.EgressIsolation = len(np.Spec.Egress) > 0
	}
	for _, r := range np.Spec.Ingress {
		out.Ingress = append(out.Ingress, ruleOf(r.From, r.Ports))
	}
	for _, r := range np.Spec.Egress {
		out.Egress = append(out.Egress, ruleOf(r.To, r.Ports))
	}
	return out
}

func ruleOf(peers []networkingv1.NetworkPolicyPeer, ports []networkingv1.NetworkPolicyPort) policy.Rule {
	var r policy.Rule
	for _, p := range peers {
		var peer policy.Peer
		if p.PodSelector != nil {
			s := selectorOf(p.PodSelector)
			peer.Pods = &s
		}
		if p.NamespaceSelector != nil {
			s := selectorOf(p.NamespaceSelector)
			peer.Namespaces = &s
		}
		if p.IPBlock != nil {
			peer.IPBlock = ipBlockOf(p.IPBlock)
		}
		r.Peers = append(r.Peers, peer)
	}
	for _, p := range ports {
		port := policy.Port{Protocol: policy.TCP}
		if p.Protocol != nil {
			port.Protocol = protocol(*p.Protocol)
		}
		if p.Port != nil {
			if p.Port.Type == intstr.String {
				port.Name = p.Port.StrVal
			} else {
				port.Port = uint16(p.Port.IntVal)
			}
		}
		if p.EndPort != nil {
			port.EndPort = uint16(*p.EndPort)
		}
		r.Ports = append(r.Ports, port)
	}
	return r
}

// ipBlockOf converts an ipBlock. An IPv6 block (podvnet is IPv4-only), or
// one that does not parse (the API server validates them), matches no
// address: a /32 minus itself.
func ipBlockOf(b *networkingv1.IPBlock) *policy.IPBlock {
	cidr, err := netip.ParsePrefix(b.CIDR)
	if err != nil || !cidr.Addr().Is4() {
		none := netip.MustParsePrefix("0.0.0.0/32")
		return &policy.IPBlock{CIDR: none, Except: []netip.Prefix{none}}
	}
	out := &policy.IPBlock{CIDR: cidr.Masked()}
	for _, e := range b.Except {
		if p, err := netip.ParsePrefix(e); err == nil && p.Addr().Is4() {
			out.Except = append(out.Except, p.Masked())
		}
	}
	return out
}

func selectorOf(s *metav1.LabelSelector) policy.Selector {
	out := policy.Selector{MatchLabels: s.MatchLabels}
	for _, e := range s.MatchExpressions {
		vals := slices.Clone(e.Values)
		out.MatchExpressions = append(out.MatchExpressions, policy.Requirement{Key: e.Key, Operator: string(e.Operator), Values: vals})
	}
	return out
}
