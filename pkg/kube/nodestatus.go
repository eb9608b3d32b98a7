package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// NotReadyTaint keeps the scheduler off a node whose pod network is not in
// place: kubelet registers the node with it (--register-with-taints=
// podvnet.io/agent-not-ready:NoSchedule), the agent removes it once ready
// and puts it back on a fatal error.
const NotReadyTaint = "podvnet.io/agent-not-ready"

// Reasons of the NetworkUnavailable condition the agent sets.
const (
	ReasonReady    = "PodvnetReady"
	ReasonNotReady = "PodvnetNotReady"
)

// NetworkState is the agent's verdict on the node's pod network.
type NetworkState int

const (
	// NetworkPending: the agent is starting (or stopping) and the node is
	// left as it is: a restarting agent must not taint a node whose pinned
	// data path keeps forwarding, and a new node keeps kubelet's taint.
	NetworkPending NetworkState = iota
	// NetworkReady: data path, pool and CNI config in place; no taint,
	// NetworkUnavailable False.
	NetworkReady
	// NetworkFailed: a fatal error (the NIC gone, the pool lost); the
	// taint, NetworkUnavailable True with the cause.
	NetworkFailed
)

// NetworkStatus is what the node's taint and NetworkUnavailable condition
// should say.
type NetworkStatus struct {
	State   NetworkState
	Message string
}

// SetNetwork sets what the node should say; the worker patches the Node
// until it does, retrying while the API server is away.
func (c *Client) SetNetwork(s NetworkStatus) {
	c.mu.Lock()
	changed := c.network != s
	c.network = s
	c.mu.Unlock()
	if changed {
		c.queue.Add(syncNodeStatus)
	}
}

// syncNodeStatus patches this node's startup taint and NetworkUnavailable
// condition to match the network status, from the cached node: a patch
// only where they differ. With the taint being added, the taint goes first
// (the scheduler stops at once); with it being removed, the condition.
func (c *Client) syncNodeStatus(ctx context.Context) error {
	c.mu.Lock()
	want := c.network
	c.mu.Unlock()
	if want.State == NetworkPending {
		return nil
	}
	n, err := c.cachedNode()
	if err != nil {
		return err
	}
	failed := want.State == NetworkFailed
	steps := []func(context.Context, *corev1.Node, NetworkStatus) error{c.patchCondition, c.patchTaint}
	if failed {
		steps = []func(context.Context, *corev1.Node, NetworkStatus) error{c.patchTaint, c.patchCondition}
	}
	for _, step := range steps {
		if err := step(ctx, n, want); err != nil {
			return err
		}
	}
	return nil
}

// patchTaint adds or removes NotReadyTaint. The API has no merge key for
// taints, so the patch carries the whole list and the node's
// resourceVersion: a taint someone else changed meanwhile makes it fail
// with a conflict, and the next try starts from the newer node.
func (c *Client) patchTaint(ctx context.Context, n *corev1.Node, want NetworkStatus) error {
	has := slices.ContainsFunc(n.Spec.Taints, isNotReadyTaint)
	wantTaint := want.State == NetworkFailed
	if has == wantTaint {
		return nil
	}
	taints := slices.DeleteFunc(slices.Clone(n.Spec.Taints), isNotReadyTaint)
	if wantTaint {
		taints = append(taints, corev1.Taint{Key: NotReadyTaint, Effect: corev1.TaintEffectNoSchedule})
	}
	if taints == nil {
		taints = []corev1.Taint{}
	}
	patch, err := json.Marshal(map[string]any{
		"metadata": map[string]any{"resourceVersion": n.ResourceVersion},
		"spec":     map[string]any{"taints": taints},
	})
	if err != nil {
		return err
	}
	if _, err := c.client.CoreV1().Nodes().Patch(ctx, n.Name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("patch taint %s on node %s: %w", NotReadyTaint, n.Name, err)
	}
	if wantTaint {
		c.log.Warn("node tainted: the pod network failed", zap.String("taint", NotReadyTaint+":NoSchedule"), zap.String("cause", want.Message))
	} else {
		c.log.Info("node taint removed: the pod network is ready", zap.String("taint", NotReadyTaint+":NoSchedule"))
	}
	return nil
}

func isNotReadyTaint(t corev1.Taint) bool {
	return t.Key == NotReadyTaint && t.Effect == corev1.TaintEffectNoSchedule
}

// patchCondition sets NetworkUnavailable with a strategic merge patch of
// the status (conditions merge by type, so kubelet's own are untouched).
// The transition time changes only when the status does.
func (c *Client) patchCondition(ctx context.Context, n *corev1.Node, want NetworkStatus) error {
	status, reason := corev1.ConditionFalse, ReasonReady
	if want.State == NetworkFailed {
		status, reason = corev1.ConditionTrue, ReasonNotReady
	}
	now := metav1.NewTime(time.Now())
	cond := corev1.NodeCondition{Type: corev1.NodeNetworkUnavailable, Status: status, Reason: reason, Message: want.Message,
		LastHeartbeatTime: now, LastTransitionTime: now}
	if i := slices.IndexFunc(n.Status.Conditions, func(c corev1.NodeCondition) bool { return c.Type == corev1.NodeNetworkUnavailable }); i >= 0 {
		old := n.Status.Conditions[i]
		if old.Status == status && old.Reason == reason && old.Message == want.Message {
			return nil
		}
		if old.Status == status {
			cond.LastTransitionTime = old.LastTransitionTime
		}
	}
	patch, err := json.Marshal(map[string]any{"status": map[string]any{"conditions": []corev1.NodeCondition{cond}}})
	if err != nil {
		return err
	}
	if _, err := c.client.CoreV1().Nodes().PatchStatus(ctx, n.Name, patch); err != nil {
		return fmt.Errorf("set condition %s=%s on node %s: %w", corev1.NodeNetworkUnavailable, status, n.Name, err)
	}
	c.log.Info("node condition set", zap.String("condition", string(corev1.NodeNetworkUnavailable)),
		zap.String("status", string(status)), zap.String("reason", reason), zap.String("message", want.Message))
	return nil
}
