package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/podvnet/podvnet/pkg/kube"
)

func (c *Cluster) restConfig() (*rest.Config, error) {
	read := func(name string) ([]byte, error) { return os.ReadFile(c.pki.path(name)) }
	ca, err := read("ca.crt")
	if err != nil {
		return nil, err
	}
	cert, err := read("admin.crt")
	if err != nil {
		return nil, err
	}
	key, err := read("admin.key")
	if err != nil {
		return nil, err
	}
	return &rest.Config{
		Host:            APIServerURL(),
		TLSClientConfig: rest.TLSClientConfig{CAData: ca, CertData: cert, KeyData: key},
		Dial:            c.dialCP,
		QPS:             50,
		Burst:           100,
	}, nil
}

// Kubeconfig is the cluster-admin kubeconfig; kubectl with it must run in
// the control plane's network namespace (Kubectl does).
func (c *Cluster) Kubeconfig() string { return c.adminConfig }

// Kubectl runs the pinned kubectl as cluster-admin and returns its stdout;
// an error carries stderr.
func (c *Cluster) Kubectl(ctx context.Context, args ...string) (string, error) {
	return c.kubectlIn(ctx, nil, args...)
}

func (c *Cluster) kubectlIn(ctx context.Context, stdin []byte, args ...string) (string, error) {
	argv := append([]string{"--net=" + c.ControlPlane.NS.Path(), filepath.Join(c.Opts.KubeDir, "kubectl"), "--kubeconfig=" + c.adminConfig}, args...)
	cmd := exec.CommandContext(ctx, "nsenter", argv...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// Apply applies manifests (YAML, several documents allowed).
func (c *Cluster) Apply(ctx context.Context, manifests string) error {
	_, err := c.kubectlIn(ctx, []byte(manifests), "apply", "-f", "-")
	return err
}

// Exec runs cmd in a container of a pod (kubectl exec, through the API
// server and the pod's kubelet) and returns its stdout.
func (c *Cluster) Exec(ctx context.Context, namespace, pod, container string, cmd ...string) (string, error) {
	return c.Kubectl(ctx, append([]string{"-n", namespace, "exec", pod, "-c", container, "--"}, cmd...)...)
}

// waitNodesRegistered waits for every kubelet to have registered its Node.
func (c *Cluster) waitNodesRegistered(ctx context.Context) error {
	return poll(2*time.Minute, 250*time.Millisecond, "nodes registered", func() (bool, error) {
		if err := c.nodeProcessesRunning(); err != nil {
			return false, fatal(err)
		}
		nodes, err := c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		return len(nodes.Items) == len(c.Nodes), fmt.Errorf("%d of %d nodes registered", len(nodes.Items), len(c.Nodes))
	})
}

func (c *Cluster) nodeProcessesRunning() error {
	for _, n := range c.Nodes {
		for _, p := range n.procs {
			if !p.running() {
				return p.exitError()
			}
		}
	}
	return nil
}

// WaitNodesReady waits until every node reports Ready.
func (c *Cluster) WaitNodesReady(ctx context.Context, timeout time.Duration) error {
	return poll(timeout, 500*time.Millisecond, "nodes Ready", func() (bool, error) {
		if err := c.nodeProcessesRunning(); err != nil {
			return false, fatal(err)
		}
		nodes, err := c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		var notReady []string
		for _, n := range nodes.Items {
			if cond := NodeCondition(&n, corev1.NodeReady); cond == nil || cond.Status != corev1.ConditionTrue {
				msg := "no Ready condition"
				if cond != nil {
					msg = cond.Reason + ": " + cond.Message
				}
				notReady = append(notReady, n.Name+" ("+msg+")")
			}
		}
		if len(notReady) > 0 || len(nodes.Items) != len(c.Nodes) {
			return false, fmt.Errorf("not Ready: %s", strings.Join(notReady, "; "))
		}
		return true, nil
	})
}

// WaitNodesNetworkReady waits until every node's agent has declared the
// node's pod network ready (NodeNetworkReady).
func (c *Cluster) WaitNodesNetworkReady(ctx context.Context, timeout time.Duration) error {
	return poll(timeout, 500*time.Millisecond, "nodes' pod network ready", func() (bool, error) {
		nodes, err := c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		var errs []error
		for i := range nodes.Items {
			if err := NodeNetworkReady(&nodes.Items[i]); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", nodes.Items[i].Name, err))
			}
		}
		return len(errs) == 0 && len(nodes.Items) == len(c.Nodes), errors.Join(errs...)
	})
}

// NodeNetworkReady says whether podvnet has declared the node's pod
// network ready: its startup taint removed, NetworkUnavailable False.
func NodeNetworkReady(n *corev1.Node) error {
	cond := NodeCondition(n, corev1.NodeNetworkUnavailable)
	if HasNotReadyTaint(n) || cond == nil || cond.Status != corev1.ConditionFalse || cond.Reason != kube.ReasonReady {
		return fmt.Errorf("taints %+v, NetworkUnavailable %+v", n.Spec.Taints, cond)
	}
	return nil
}

// HasNotReadyTaint says whether the node has podvnet's startup taint.
func HasNotReadyTaint(n *corev1.Node) bool {
	return slices.ContainsFunc(n.Spec.Taints, func(t corev1.Taint) bool {
		return t.Key == kube.NotReadyTaint && t.Effect == corev1.TaintEffectNoSchedule
	})
}

// NodeCondition returns the node's condition of type t, or nil.
func NodeCondition(n *corev1.Node, t corev1.NodeConditionType) *corev1.NodeCondition {
	for i := range n.Status.Conditions {
		if n.Status.Conditions[i].Type == t {
			return &n.Status.Conditions[i]
		}
	}
	return nil
}

// WaitPodsReady waits until exactly want pods match selector in namespace,
// each Running with every container ready, and returns them.
func (c *Cluster) WaitPodsReady(ctx context.Context, namespace, selector string, want int, timeout time.Duration) ([]corev1.Pod, error) {
	var ready []corev1.Pod
	err := poll(timeout, 500*time.Millisecond, fmt.Sprintf("%d pods %q ready in %s", want, selector, namespace), func() (bool, error) {
		pods, err := c.Client.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return false, err
		}
		ready = ready[:0]
		var waiting []string
		for _, p := range pods.Items {
			if p.DeletionTimestamp == nil && PodReady(&p) {
				ready = append(ready, p)
			} else {
				waiting = append(waiting, p.Name+" "+string(p.Status.Phase))
			}
		}
		if len(ready) == want && len(waiting) == 0 {
			return true, nil
		}
		return false, fmt.Errorf("%d ready, waiting for %v", len(ready), waiting)
	})
	return ready, err
}

// PodReady says whether the pod is Running with its Ready condition true.
func PodReady(p *corev1.Pod) bool {
	if p.Status.Phase != corev1.PodRunning {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
