package main

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/podvnet/podvnet/pkg/kube"
	"github.com/podvnet/podvnet/tests/cluster"
)

// KubeMemory is the agent's memory as a client of an API server that
// holds many pods, most of them on other nodes.
type KubeMemory struct {
	PodsInAPI  int     `json:"pods_in_api"`
	Nodes      int     `json:"nodes"`
	LocalPods  int     `json:"local_pods"` // on the agent's node, each an endpoint
	RSSMiB     float64 `json:"rss_mib"`
	PeakRSSMiB float64 `json:"peak_rss_mib"`
}

// podsPerFakeNode spreads the API's pods over nodes the way a cluster of
// nodes near AKS's 30-pod default would be.
const podsPerFakeNode = 50

// kubeDir is where scripts/kube.sh put the Kubernetes binaries: --kube-dir,
// or what the script says.
func kubeDir(flagValue string) string {
	if flagValue != "" {
		return flagValue
	}
	out, err := exec.Command("scripts/kube.sh", "--dir").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// kubePhase measures the agent's resident memory with pods Pod objects in
// the API server: etcd and kube-apiserver of tests/cluster on a one-node
// VNet, a Node object for the agent's node and one per podsPerFakeNode
// other pods, the pods created through the API in parallel and bound to
// their nodes (no scheduler, no kubelet: the objects are what counts), and
// on the agent's node 30 of them, each an endpoint made through CNI with
// its address in the pod's status, as the 30-endpoint figure has.
func (b *bench) kubePhase(ctx context.Context, kubeDirs string, pods int) (err error) {
	work := filepath.Join(b.work, "kube")
	c, err := cluster.NewControlPlane(ctx, cluster.Options{WorkDir: work, KubeDir: kubeDirs, Nodes: 1, BinDir: b.binDir,
		Prefix: b.prefix + "k", Log: logWriter{b}})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, c.Close()) }()
	n := c.VNet.Nodes[0]
	rc := rest.CopyConfig(c.RESTConfig)
	rc.QPS, rc.Burst = 500, 1000
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return err
	}
	const local = 30
	fakeNodes := (pods - local + podsPerFakeNode - 1) / podsPerFakeNode
	start := time.Now()
	if err := createObjects(ctx, cs, n.Name, fakeNodes, pods, local); err != nil {
		return err
	}
	b.logf("kube: %d pods on %d nodes created through the API in %s", pods, fakeNodes+1, time.Since(start).Round(time.Second))

	if err := n.StartAgent("--kubeconfig", c.Kubeconfig(), "--node-name", n.Name, "--ip-cooldown", "0s"); err != nil {
		return err
	}
	pl := podvnetPlugin("podvnet")
	var eps []*pod
	defer func() { _, _, derr := delAll(context.WithoutCancel(ctx), eps, false); err = errors.Join(err, derr) }()
	for i := range local {
		p, err := newPod(b, n, pl, fmt.Sprintf("kube%d", i))
		if err != nil {
			return err
		}
		eps = append(eps, p)
		if _, err := p.add(ctx); err != nil {
			return err
		}
		// The address kubelet would report from the ADD's result.
		api, err := cs.CoreV1().Pods(benchNamespace).Get(ctx, fmt.Sprintf("kube%d", i), metav1.GetOptions{})
		if err == nil {
			api.Status.PodIP = p.ip.String()
			api.Status.PodIPs = []corev1.PodIP{{IP: p.ip.String()}}
			api.Status.Phase = corev1.PodRunning
			_, err = cs.CoreV1().Pods(benchNamespace).UpdateStatus(ctx, api, metav1.UpdateOptions{})
		}
		if err != nil {
			return fmt.Errorf("pod kube%d's status: %w", i, err)
		}
	}
	// Synced: the agent's pods file shows every local pod with its address.
	if err := waitFor(2*time.Minute, "the agent's view of its node's pods", func() bool {
		f, err := kube.ReadPodsFile(n.Paths())
		if err != nil || len(f.Pods) != local {
			return false
		}
		for _, p := range f.Pods {
			if !p.HasOwnIP() {
				return false
			}
		}
		return true
	}); err != nil {
		return err
	}
	time.Sleep(2 * time.Second) // steady, as agentMemory measures
	rss, peak, err := n.AgentMemoryKiB()
	if err != nil {
		return err
	}
	b.res.Kube = &KubeMemory{PodsInAPI: pods, Nodes: fakeNodes + 1, LocalPods: local,
		RSSMiB: float64(rss) / 1024, PeakRSSMiB: float64(peak) / 1024}
	b.logf("kube: agent RSS %.1f MiB (peak %.1f MiB) with %d pods in the API", b.res.Kube.RSSMiB, b.res.Kube.PeakRSSMiB, pods)
	return nil
}

// benchNamespace holds the pods the benchmark creates.
const benchNamespace = "bench"

// createNamespace creates a namespace and its default ServiceAccount, which
// admission wants for a Pod and no controller manager makes here.
func createNamespace(ctx context.Context, cs kubernetes.Interface, name string, labels map[string]string) error {
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	_, err := cs.CoreV1().ServiceAccounts(name).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{})
	return err
}

// createObjects creates the namespace, the Node objects (the agent's and
// fakeNodes others) and pods pods, local of them on the agent's node, in
// parallel.
func createObjects(ctx context.Context, cs kubernetes.Interface, node string, fakeNodes, pods, local int) error {
	if err := createNamespace(ctx, cs, benchNamespace, nil); err != nil {
		return err
	}
	nodes := []string{node}
	for i := range fakeNodes {
		nodes = append(nodes, fmt.Sprintf("fake-%03d", i))
	}
	for _, name := range nodes {
		nd := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"kubernetes.io/hostname": name}},
			Status: corev1.NodeStatus{Allocatable: corev1.ResourceList{corev1.ResourcePods: resource.MustParse("110")}}}
		if _, err := cs.CoreV1().Nodes().Create(ctx, nd, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("node %s: %w", name, err)
		}
	}
	work := make(chan int)
	errs := make(chan error, 1)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for i := range work {
				name, on := fmt.Sprintf("kube%d", i), node
				if i >= local {
					name, on = fmt.Sprintf("other%d", i), nodes[1+(i-local)/podsPerFakeNode]
				}
				if _, err := cs.CoreV1().Pods(benchNamespace).Create(ctx, benchPod(name, on, i), metav1.CreateOptions{}); err != nil {
					select {
					case errs <- fmt.Errorf("pod %s: %w", name, err):
					default:
					}
				}
			}
		})
	}
	for i := range pods {
		select {
		case work <- i:
		case err := <-errs:
			close(work)
			wg.Wait()
			return err
		}
	}
	close(work)
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

// benchPod is a pod as a Deployment makes it: labels, an owner, a
// container with ports, environment, resources and a probe.
func benchPod(name, node string, i int) *corev1.Pod {
	app := fmt.Sprintf("app%d", i%40)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: benchNamespace,
			Labels: map[string]string{"app": app, "pod-template-hash": "7d9f8c6b5", "tier": "backend", "team": "payments"},
			Annotations: map[string]string{"kubectl.kubernetes.io/restartedAt": "2026-11-30T12:00:00Z",
				"prometheus.io/scrape": "true", "prometheus.io/port": "9090"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: app + "-7d9f8c6b5", UID: "8d3f2a1e-0c4b-4f6a-9e2d-1b7c5a9f3e60"}},
		},
		Spec: corev1.PodSpec{
			NodeName:                     node,
			AutomountServiceAccountToken: new(bool),
			Containers: []corev1.Container{{
				Name: "app", Image: "registry.example.com/payments/" + app + ":1.42.0",
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}, {Name: "metrics", ContainerPort: 9090}},
				Env: []corev1.EnvVar{{Name: "LOG_LEVEL", Value: "info"}, {Name: "DB_HOST", Value: "payments-db.payments.svc.cluster.local"},
					{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}},
				Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"),
					corev1.ResourceMemory: resource.MustParse("128Mi")}},
				ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromString("http")}}},
			}},
		},
	}
}

// logWriter sends the cluster's progress lines to the benchmark's log.
type logWriter struct{ b *bench }

func (w logWriter) Write(p []byte) (int, error) {
	w.b.logf("kube: %s", strings.TrimSpace(string(p)))
	return len(p), nil
}

// waitFor polls cond every 100 ms until it holds; the timeout only bounds
// a failure.
func waitFor(timeout time.Duration, what string, cond func() bool) error {
	return pollEvery(100*time.Millisecond, timeout, what, cond)
}

// pollEvery polls cond every interval until it holds: where the time cond
// first holds is the measurement, the interval is its resolution.
func pollEvery(interval, timeout time.Duration, what string, cond func() bool) error {
	for deadline := time.Now().Add(timeout); !cond(); time.Sleep(interval) {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not within %s", what, timeout)
		}
	}
	return nil
}
