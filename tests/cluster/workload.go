package cluster

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podvnet/podvnet/tests/cluster/image"
	"github.com/podvnet/podvnet/tests/cluster/probe"
	"github.com/podvnet/podvnet/tests/e2e/vnet"
)

// ProbeVolume is the emptyDir a probe pod needs for its control socket.
const ProbeVolume = "probe"

// ProbeContainer is a container running the probe image's server; add
// ProbePodVolume to the pod. Probe(pod) then controls it.
func ProbeContainer(name string) corev1.Container {
	return corev1.Container{
		Name:            name,
		Image:           image.ProbeRef,
		ImagePullPolicy: corev1.PullNever,
		Args:            []string{"serve"},
		VolumeMounts:    []corev1.VolumeMount{{Name: ProbeVolume, MountPath: probe.ControlDir}},
		ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{
			Command: []string{"/usr/local/bin/probe", "connect", "--proto", "tcp", "--addr", "127.0.0.1:80"},
		}}, PeriodSeconds: 2},
	}
}

// ProbePodVolume is the emptyDir volume ProbeContainer mounts.
func ProbePodVolume() corev1.Volume {
	return corev1.Volume{Name: ProbeVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}
}

// Probe returns a client of the probe running in pod, reached through the
// pod's emptyDir on its node.
func (c *Cluster) Probe(pod *corev1.Pod) (*probe.Client, error) {
	n := c.Node(pod.Spec.NodeName)
	if n == nil {
		return nil, fmt.Errorf("pod %s/%s is on %q, not a node of this cluster", pod.Namespace, pod.Name, pod.Spec.NodeName)
	}
	dir := filepath.Join("/var/lib/kubelet/pods", string(pod.UID), "volumes/kubernetes.io~empty-dir", ProbeVolume)
	return probe.NewClient(n.Path(filepath.Join(dir, probe.ControlSocket))), nil
}

// ProbeDeployment is a Deployment of probe pods labelled app=name, spread
// evenly over the nodes (at most one more on any node than on another).
func ProbeDeployment(namespace, name string, replicas int32) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					Containers: []corev1.Container{ProbeContainer("probe")},
					Volumes:    []corev1.Volume{ProbePodVolume()},
					TopologySpreadConstraints: []corev1.TopologySpreadConstraint{{
						MaxSkew: 1, TopologyKey: "kubernetes.io/hostname",
						WhenUnsatisfiable: corev1.DoNotSchedule,
						LabelSelector:     &metav1.LabelSelector{MatchLabels: labels},
					}},
					// The probe holds no state worth a graceful stop.
					TerminationGracePeriodSeconds: new(int64),
				},
			},
		},
	}
}

// ProbePod is a probe pod labelled labels, placed on node (empty: wherever
// the scheduler puts it).
func ProbePod(namespace, name, node string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Labels: labels},
		Spec: corev1.PodSpec{
			NodeName:                      node,
			Containers:                    []corev1.Container{ProbeContainer("probe")},
			Volumes:                       []corev1.Volume{ProbePodVolume()},
			TerminationGracePeriodSeconds: new(int64),
		},
	}
}

// AddVM adds a VM to the VNet (addr with the subnet's prefix length for a
// VM of the subnet) running a probe server that answers with name on
// probe.DefaultPorts, TCP and UDP; it goes with the cluster.
func (c *Cluster) AddVM(name string, addr netip.Prefix) (*vnet.Host, error) {
	h, err := c.VNet.AddHost(name, vnet.HostOptions{Addr: addr})
	if err != nil {
		return nil, err
	}
	var s *probe.Server
	// Sockets stay in the namespace they were made in.
	if err := h.Do(func() (err error) {
		s, err = probe.Serve(probe.ServeOptions{Name: name, TCP: probe.DefaultPorts, UDP: probe.DefaultPorts})
		return err
	}); err != nil {
		return nil, fmt.Errorf("probe server on %s: %w", name, err)
	}
	c.VNet.OnClose(func() error { s.Close(); return nil })
	return h, nil
}

// ConnectFrom tries target from inside a host of the VNet (a VM).
func ConnectFrom(h *vnet.Host, target probe.Target) probe.Result {
	var r probe.Result
	h.Do(func() error {
		r = probe.Connect(context.Background(), target)
		return nil
	})
	return r
}
