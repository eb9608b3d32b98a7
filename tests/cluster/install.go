package cluster

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podvnet/podvnet/pkg/kube"
	"github.com/podvnet/podvnet/tests/cluster/image"
)

// The reference deploy/ and deploy/uninstall set for podvnet's image.
const releasedImage = "ghcr.io/podvnet/podvnet"

// AgentSelector selects the agent's pods.
const AgentSelector = "app.kubernetes.io/name=podvnet"

// Settings are the ConfigMap values the simulated VNet needs, merged over
// deploy/config/agent.env: the pool comes from the wireserver the fabric
// serves, as on Azure (the default, stated so that a change of default
// does not go unnoticed here), a test that changes what the wireserver
// serves sees the agents notice within seconds, and debug logs help a
// failing test.
var Settings = map[string]string{
	"IPAM_SOURCE":  "nmagent",
	"POOL_REFRESH": "3s",
	"LOG_LEVEL":    "debug",
}

// KubeletFlags are what docs/operations.md tells operators to give
// kubelet: nodes register with podvnet's startup taint, which the agent
// removes once the node's pod network is in place.
var KubeletFlags = []string{"--register-with-taints=" + kube.NotReadyTaint + ":NoSchedule"}

// Overlay writes a kustomization under the work dir whose only resource is
// the repository's base (e.g. "deploy" or "deploy/uninstall"), with the
// image set to the locally imported podvnet image and, for deploy/, the
// ConfigMap values in settings, the way a user adapts deploy/ to a cluster.
// It returns the overlay's directory, for kubectl apply -k.
func (c *Cluster) Overlay(name, base string, settings map[string]string) (string, error) {
	dir := filepath.Join(c.dir, "overlays", name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	rel, err := filepath.Rel(dir, filepath.Join(c.Opts.Repo, base))
	if err != nil {
		return "", err
	}
	ref := image.PodvnetRef
	colon := strings.LastIndex(ref, ":")
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: kube-system\nresources:\n- %s\n", rel)
	fmt.Fprintf(&b, "images:\n- name: %s\n  newName: %s\n  newTag: %s\n", releasedImage, ref[:colon], ref[colon+1:])
	if len(settings) > 0 {
		b.WriteString("configMapGenerator:\n- name: podvnet-config\n  behavior: merge\n  literals:\n")
		for _, k := range slices.Sorted(maps.Keys(settings)) {
			fmt.Fprintf(&b, "  - %s=%s\n", k, settings[k])
		}
	}
	return dir, os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(b.String()), 0o644)
}

// InstallOverlay writes the overlay of deploy/ that Install applies:
// Settings with Options.AgentSettings over them. `kubectl delete -k` of it
// is the first step of an uninstall.
func (c *Cluster) InstallOverlay() (string, error) {
	settings := maps.Clone(Settings)
	if c.Opts.KubeProxy == "none" {
		// Without kube-proxy the kubernetes Service's ClusterIP leads
		// nowhere from the agent's host network: the API server's own
		// address, as docs/operations.md says.
		settings["KUBERNETES_SERVICE_HOST"] = APIServerIP.String()
		settings["KUBERNETES_SERVICE_PORT"] = strconv.Itoa(APIServerPort)
	}
	maps.Copy(settings, c.Opts.AgentSettings)
	return c.Overlay("install", "deploy", settings)
}

// Install installs podvnet as the README says (kubectl apply -k, here on an
// overlay of deploy/), waits for the DaemonSet's rollout, for every node to
// turn Ready and for every agent to declare its node's pod network ready.
func (c *Cluster) Install(ctx context.Context) error {
	dir, err := c.InstallOverlay()
	if err != nil {
		return err
	}
	if _, err := c.Kubectl(ctx, "apply", "-k", dir); err != nil {
		return err
	}
	if err := c.RolloutStatus(ctx, "podvnet", 5*time.Minute); err != nil {
		return err
	}
	if err := c.WaitNodesReady(ctx, 2*time.Minute); err != nil {
		return err
	}
	return c.WaitNodesNetworkReady(ctx, time.Minute)
}

// RolloutStatus waits for a kube-system DaemonSet's rollout to finish.
func (c *Cluster) RolloutStatus(ctx context.Context, daemonSet string, timeout time.Duration) error {
	_, err := c.Kubectl(ctx, "-n", "kube-system", "rollout", "status", "daemonset/"+daemonSet, "--timeout="+timeout.String())
	return err
}

// AgentPod returns the name of the agent pod on node.
func (c *Cluster) AgentPod(ctx context.Context, node string) (string, error) {
	pods, err := c.Client.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{LabelSelector: AgentSelector, FieldSelector: "spec.nodeName=" + node})
	if err != nil {
		return "", err
	}
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil {
			return p.Name, nil
		}
	}
	return "", fmt.Errorf("no podvnet agent pod on %s", node)
}

// AgentDebug runs `podvnet-agent debug ARGS` in node's agent pod, as
// docs/operations.md tells users to.
func (c *Cluster) AgentDebug(ctx context.Context, node string, args ...string) (string, error) {
	pod, err := c.AgentPod(ctx, node)
	if err != nil {
		return "", err
	}
	return c.Exec(ctx, "kube-system", pod, "agent", append([]string{"podvnet-agent", "debug"}, args...)...)
}
