package kube

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
)

// Pod is what the agent knows of a pod.
type Pod struct {
	Namespace   string            `json:"namespace"`
	Name        string            `json:"name"`
	UID         string            `json:"uid"`
	Node        string            `json:"node"`
	IP          netip.Addr        `json:"ip"` // status.podIP; the node's own with HostNetwork
	HostNetwork bool              `json:"host_network,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	// Ports are the containers' named ports (what a Service's targetPort
	// or a NetworkPolicy's port may name).
	Ports map[string]Port `json:"ports,omitempty"`
	// HostPorts are the container ports a hostPort maps to (portmap
	// DNATs the node's port to them).
	HostPorts []Port `json:"host_ports,omitempty"`
	// Finished: Succeeded or Failed. Such a pod holds no address any
	// more, even if its status still shows one.
	Finished    bool `json:"finished,omitempty"`
	Terminating bool `json:"terminating,omitempty"`
}

// Port is a container port.
type Port struct {
	Port     int32  `json:"port"`
	Protocol string `json:"protocol"`
}

// String is namespace/name.
func (p Pod) String() string { return p.Namespace + "/" + p.Name }

// HasOwnIP says whether the pod holds an address of its own: it has one,
// is not on the node's network and has not finished.
func (p Pod) HasOwnIP() bool { return p.IP.IsValid() && !p.HostNetwork && !p.Finished }

// Node is what the agent knows of its own node.
type Node struct {
	Name string
	// AllocatablePods is kubelet's max-pods (status.allocatable pods).
	AllocatablePods int
	Taints          []Taint
	Conditions      []Condition
}

// Taint is a node taint.
type Taint struct{ Key, Value, Effect string }

// Condition is a node condition.
type Condition struct{ Type, Status, Reason, Message string }

// HasTaint says whether the node has a taint with key and effect.
func (n Node) HasTaint(key, effect string) bool {
	return slices.ContainsFunc(n.Taints, func(t Taint) bool { return t.Key == key && t.Effect == effect })
}

// Condition returns the condition of type t.
func (n Node) Condition(t string) (Condition, bool) {
	i := slices.IndexFunc(n.Conditions, func(c Condition) bool { return c.Type == t })
	if i < 0 {
		return Condition{}, false
	}
	return n.Conditions[i], true
}

func podOf(p *corev1.Pod) Pod {
	ip, _ := netip.ParseAddr(p.Status.PodIP) // invalid or empty: none yet
	out := Pod{
		Namespace: p.Namespace, Name: p.Name, UID: string(p.UID), Node: p.Spec.NodeName, IP: ip,
		HostNetwork: p.Spec.HostNetwork, Labels: p.Labels,
		Finished:    p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed,
		Terminating: p.DeletionTimestamp != nil,
	}
	for _, ctr := range p.Spec.Containers {
		for _, cp := range ctr.Ports {
			if cp.HostPort != 0 {
				out.HostPorts = append(out.HostPorts, Port{Port: cp.ContainerPort, Protocol: string(cp.Protocol)})
			}
			if cp.Name == "" {
				continue
			}
			if out.Ports == nil {
				out.Ports = map[string]Port{}
			}
			if _, dup := out.Ports[cp.Name]; !dup {
				out.Ports[cp.Name] = Port{Port: cp.ContainerPort, Protocol: string(cp.Protocol)}
			}
		}
	}
	return out
}

func nodeOf(n *corev1.Node) Node {
	out := Node{Name: n.Name}
	if q, ok := n.Status.Allocatable[corev1.ResourcePods]; ok {
		out.AllocatablePods = int(q.Value())
	}
	for _, t := range n.Spec.Taints {
		out.Taints = append(out.Taints, Taint{Key: t.Key, Value: t.Value, Effect: string(t.Effect)})
	}
	for _, c := range n.Status.Conditions {
		out.Conditions = append(out.Conditions, Condition{Type: string(c.Type), Status: string(c.Status), Reason: c.Reason, Message: c.Message})
	}
	return out
}

// Node returns this node as the API server last showed it; false until the
// informer has synced and the node exists.
func (c *Client) Node() (Node, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.node == nil {
		return Node{}, false
	}
	return *c.node, true
}

// LocalPods returns this node's pods, sorted by namespace and name.
func (c *Client) LocalPods() []Pod {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.local)
}

// PodByIP returns the pod of this node that holds ip (never a hostNetwork
// or finished pod).
func (c *Client) PodByIP(ip netip.Addr) (Pod, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.byIP[ip]
	return p, ok
}

// cachedNode is the node in the informer's store.
func (c *Client) cachedNode() (*corev1.Node, error) {
	obj, ok, err := c.nodes.GetStore().GetByKey(c.cfg.NodeName)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("node %s not found", c.cfg.NodeName)
	}
	return obj.(*corev1.Node), nil
}

// syncNode rebuilds the Node view and tells the listeners when it changed.
func (c *Client) syncNode(context.Context) error {
	n, err := c.cachedNode()
	if err != nil {
		return err
	}
	view := nodeOf(n)
	c.mu.Lock()
	changed := c.node == nil || !nodeEqual(*c.node, view)
	c.node = &view
	listeners := c.onNode
	c.mu.Unlock()
	if changed {
		for _, f := range listeners {
			f(view)
		}
	}
	return nil
}

func nodeEqual(a, b Node) bool {
	return a.Name == b.Name && a.AllocatablePods == b.AllocatablePods &&
		slices.Equal(a.Taints, b.Taints) && slices.Equal(a.Conditions, b.Conditions)
}

// syncLocalPods rebuilds this node's pods from the whole store, so that a
// pod deleted while the watch was down (gone from the store after the
// relist) leaves the view too; it rewrites the pods file and tells the
// listeners when the view changed.
func (c *Client) syncLocalPods(context.Context) error {
	var pods []Pod
	for _, obj := range c.pods.GetStore().List() {
		p, ok := obj.(*corev1.Pod)
		// The field selector scopes the watch; this guards the view.
		if !ok || p.Spec.NodeName != c.cfg.NodeName {
			continue
		}
		pods = append(pods, podOf(p))
	}
	slices.SortFunc(pods, func(a, b Pod) int { return strings.Compare(a.String(), b.String()) })
	byIP := map[netip.Addr]Pod{}
	for _, p := range pods {
		if p.HasOwnIP() {
			byIP[p.IP] = p
		}
	}
	c.mu.Lock()
	changed := !slices.EqualFunc(c.local, pods, podEqual)
	c.local, c.byIP = pods, byIP
	c.podsFileStale = c.podsFileStale || changed
	stale := c.podsFileStale
	listeners := c.onPods
	c.mu.Unlock()
	if changed {
		c.log.Debug("this node's pods changed", zap.Int("pods", len(pods)), zap.Int("with_own_ip", len(byIP)))
		for _, f := range listeners {
			f(slices.Clone(pods))
		}
	}
	if !stale || c.cfg.Paths.StateDir == "" {
		return nil
	}
	// A failed write is retried (the sync fails) until the file matches.
	if err := WritePodsFile(c.cfg.Paths, c.cfg.NodeName, pods); err != nil {
		return err
	}
	c.mu.Lock()
	c.podsFileStale = !slices.EqualFunc(c.local, pods, podEqual)
	c.mu.Unlock()
	return nil
}

func podEqual(a, b Pod) bool {
	return a.Namespace == b.Namespace && a.Name == b.Name && a.UID == b.UID && a.Node == b.Node && a.IP == b.IP &&
		a.HostNetwork == b.HostNetwork && a.Finished == b.Finished && a.Terminating == b.Terminating &&
		maps.Equal(a.Labels, b.Labels) && maps.Equal(a.Ports, b.Ports) && slices.Equal(a.HostPorts, b.HostPorts)
}
