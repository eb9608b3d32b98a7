package agent

import (
	"fmt"
	"strings"

	"go.uber.org/zap"

	"github.com/podvnet/podvnet/pkg/ipam"
)

// Events reports to the cluster what an operator of the node must act on:
// Warning Events on the Node when the agent talks to the API server
// (pkg/kube), nothing in static mode.
type Events interface {
	Warn(reason, message string)
}

// Reasons of the agent's Warning Events.
const (
	// ReasonMaxPodsAbovePool: kubelet accepts more pods than the node has
	// addresses for; the scheduler places pods that cannot start.
	ReasonMaxPodsAbovePool = "MaxPodsAbovePodAddresses"
	// ReasonPoolExhausted: an ADD was refused for lack of addresses.
	ReasonPoolExhausted = "PodAddressesExhausted"
	// ReasonAddressesWithdrawn: the pool source no longer lists addresses
	// pods hold; the fabric may stop routing them here.
	ReasonAddressesWithdrawn = "PodAddressesWithdrawn"
)

func (a *Agent) warn(reason, message string) {
	if a.cfg.Events != nil {
		a.cfg.Events.Warn(reason, message)
	}
}

// SetKubeletMaxPods is told kubelet's max-pods (the Node's allocatable
// pods) whenever it may have changed, and warns when it exceeds the pod
// address limit.
func (a *Agent) SetKubeletMaxPods(n int) {
	a.maxPodsMu.Lock()
	a.kubeletMaxPods = n
	a.maxPodsMu.Unlock()
	a.checkMaxPods()
}

// checkMaxPods warns once per (kubelet max-pods, limit) pair in which
// kubelet's is the higher: again when either changes or the excess comes
// back, not on every node update.
func (a *Agent) checkMaxPods() {
	limit := a.alloc.Limit()
	a.maxPodsMu.Lock()
	kubelet := a.kubeletMaxPods
	pair := [2]int{kubelet, limit}
	warn := kubelet > limit && pair != a.maxPodsWarned
	switch {
	case warn:
		a.maxPodsWarned = pair
	case kubelet <= limit:
		a.maxPodsWarned = [2]int{} // fixed: a later excess is news again
	}
	a.maxPodsMu.Unlock()
	if !warn {
		return
	}
	msg := fmt.Sprintf("kubelet max-pods is %d, but this node has %d pod addresses (the smaller of podvnet's --max-pods %d and %d secondary IPs of the NIC): "+
		"pods scheduled here beyond %d cannot start; set kubelet's max-pods to %d, or give the NIC more secondary IPs",
		kubelet, limit, a.cfg.MaxPods, len(a.alloc.Pool().Secondary), limit, limit)
	a.log.Warn("kubelet max-pods above the pod address limit", zap.Int("kubelet_max_pods", kubelet), zap.Int("limit", limit))
	a.warn(ReasonMaxPodsAbovePool, msg)
}

// warnWithdrawn reports allocations whose address the pool source no
// longer lists, in one Event.
func (a *Agent) warnWithdrawn(als []ipam.Allocation) {
	if len(als) == 0 {
		return
	}
	held := make([]string, len(als))
	for i, al := range als {
		held[i] = fmt.Sprintf("%s (%s)", al.IP, podName(al))
	}
	a.warn(ReasonAddressesWithdrawn, fmt.Sprintf("the pool source no longer lists %s: each stays with its pod but the fabric may stop routing it to this node; "+
		"recreate those pods to move them to listed addresses", strings.Join(held, ", ")))
}

// podName is namespace/name, or the container ID when the runtime passed
// no pod name.
func podName(al ipam.Allocation) string {
	if al.PodName == "" {
		return "container " + al.ContainerID
	}
	return al.PodNamespace + "/" + al.PodName
}
