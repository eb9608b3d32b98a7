package kube

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// trimPod keeps of a Pod what the views read and drops the rest (managed
// fields, annotations, owner references, volumes, most of spec and status)
// before the informer stores it: a node's pods are few, but the same
// transform serves cluster-wide informers, where the store is the agent's
// largest. Anything other than a Pod (a tombstone) passes unchanged.
func trimPod(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return obj, nil
	}
	out := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: p.Name, Namespace: p.Namespace, UID: p.UID, ResourceVersion: p.ResourceVersion,
			Labels: p.Labels, DeletionTimestamp: p.DeletionTimestamp,
		},
		Spec: corev1.PodSpec{NodeName: p.Spec.NodeName, HostNetwork: p.Spec.HostNetwork},
		Status: corev1.PodStatus{
			Phase: p.Status.Phase, PodIP: p.Status.PodIP,
		},
	}
	for _, ctr := range p.Spec.Containers {
		var ports []corev1.ContainerPort
		for _, cp := range ctr.Ports {
			// Named ports (a Service's targetPort may name one) and
			// hostPorts (portmap NATs them: the conntrack lookup must see
			// their replies).
			if cp.Name != "" || cp.HostPort != 0 {
				ports = append(ports, corev1.ContainerPort{Name: cp.Name, ContainerPort: cp.ContainerPort, Protocol: cp.Protocol, HostPort: cp.HostPort})
			}
		}
		if len(ports) > 0 {
			out.Spec.Containers = append(out.Spec.Containers, corev1.Container{Ports: ports})
		}
	}
	return out, nil
}

// trimNode keeps of a Node its identity, taints, allocatable pods and
// conditions: what the max-pods check and the node status reconcile read
// (the taint patch writes back the whole list, so all taints stay).
func trimNode(obj any) (any, error) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil
	}
	out := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: n.Name, UID: n.UID, ResourceVersion: n.ResourceVersion},
		Spec:       corev1.NodeSpec{Taints: n.Spec.Taints},
		Status:     corev1.NodeStatus{Conditions: n.Status.Conditions},
	}
	if q, ok := n.Status.Allocatable[corev1.ResourcePods]; ok {
		out.Status.Allocatable = corev1.ResourceList{corev1.ResourcePods: q}
	}
	return out, nil
}
