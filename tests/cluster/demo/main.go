// Command demo brings up a real Kubernetes cluster in the simulated VNet
// (package cluster), installs podvnet with `kubectl apply -k` as the README
// says, runs a Deployment over both nodes, proves its pods talk to each
// other across nodes and to a VM, shows `podvnet-agent debug endpoints`
// from inside the agents' pods, and removes everything again, also on
// error or Ctrl-C. It exits 0 only if all of that held. `make
// demo-cluster` runs it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/podvnet/podvnet/tests/cluster"
	"github.com/podvnet/podvnet/tests/cluster/probe"
	"github.com/podvnet/podvnet/tests/internal/demo"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "\ndemo-cluster failed: %v\n", err)
		os.Exit(1)
	}
	fmt.Println("\ndemo-cluster: everything held")
}

func run() error {
	repo := flag.String("repo", ".", "the podvnet repository (deploy/ is installed from it)")
	kubeDir := flag.String("kube-dir", "", "the Kubernetes binaries (scripts/kube.sh --dir)")
	imageDir := flag.String("image-dir", "bin/images", "the image tarballs (make images)")
	cniBinDir := flag.String("cni-bin-dir", "bin/cni", "the reference CNI plugins (make cni-plugins)")
	keep := flag.Bool("keep-logs", false, "keep the work directory (every component's log)")
	hold := flag.Bool("hold", false, "keep the cluster up until Ctrl-C, to explore it")
	kubeProxy := flag.String("kube-proxy", "nftables", "kube-proxy's mode on the nodes: nftables, iptables or none")
	flag.Parse()
	if os.Geteuid() != 0 {
		return errors.New("run as root: the cluster needs network and mount namespaces, cgroups and a bpffs")
	}
	abs := func(p string) string { a, _ := filepath.Abs(p); return a }
	work, done, err := demo.WorkDir("podvnet-demo-cluster", *keep)
	if err != nil {
		return err
	}
	defer done()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	demo.Step("Bringing up Kubernetes in the simulated VNet %s", "10.240.0.0/16")
	c, err := cluster.New(ctx, cluster.Options{Repo: abs(*repo), WorkDir: work, KubeDir: *kubeDir,
		ImageDir: abs(*imageDir), CNIBinDir: abs(*cniBinDir), KubeProxy: *kubeProxy, KubeletFlags: cluster.KubeletFlags,
		Log: demo.IndentWriter{}})
	// Teardown runs on success, error and Ctrl-C alike.
	defer func() {
		if c == nil {
			return
		}
		demo.TearDown("pods, kubelets, containerd, control plane, mounts, cgroups, namespaces", c.Close, *keep, work)
	}()
	if err != nil {
		return err
	}
	kubectl := func(args ...string) error {
		fmt.Printf("  $ kubectl %s\n", strings.Join(args, " "))
		out, err := c.Kubectl(ctx, args...)
		fmt.Print(demo.Indent(out))
		return err
	}
	// The startup taint keeps pods off a node until its agent is ready.
	nodeNetwork := []string{"get", "nodes", "-o",
		`custom-columns=NAME:.metadata.name,TAINTS:.spec.taints[*].key,NETWORK-UNAVAILABLE:.status.conditions[?(@.type=="NetworkUnavailable")].reason`}
	if err := kubectl("get", "nodes", "-o", "wide"); err != nil {
		return err
	}
	if err := kubectl(nodeNetwork...); err != nil {
		return err
	}

	overlay, err := c.InstallOverlay()
	if err != nil {
		return err
	}
	demo.Step("Installing podvnet the user's way: kubectl apply -k on an overlay of deploy/")
	b, _ := os.ReadFile(filepath.Join(overlay, "kustomization.yaml"))
	fmt.Print(demo.Indent(string(b)))
	if err := kubectl("apply", "-k", overlay); err != nil {
		return err
	}
	if err := c.RolloutStatus(ctx, "podvnet", 5*time.Minute); err != nil {
		return err
	}
	if err := c.WaitNodesReady(ctx, 2*time.Minute); err != nil {
		return err
	}
	if err := kubectl("get", "nodes", "-o", "wide"); err != nil {
		return err
	}
	if err := kubectl("-n", "kube-system", "get", "pods", "-l", cluster.AgentSelector, "-o", "wide"); err != nil {
		return err
	}
	if err := c.WaitNodesNetworkReady(ctx, time.Minute); err != nil {
		return err
	}
	if err := kubectl(nodeNetwork...); err != nil {
		return err
	}

	demo.Step("A Deployment of 6 probe pods spread over both nodes")
	if _, err := c.Client.AppsV1().Deployments("default").Create(ctx, cluster.ProbeDeployment("default", "web", 6), metav1.CreateOptions{}); err != nil {
		return err
	}
	pods, err := c.WaitPodsReady(ctx, "default", "app=web", 6, 4*time.Minute)
	if err != nil {
		return err
	}
	if err := kubectl("get", "pods", "-o", "wide"); err != nil {
		return err
	}
	for _, p := range pods {
		ip, err := netip.ParseAddr(p.Status.PodIP)
		n := c.Node(p.Spec.NodeName)
		if err != nil || n == nil || !slices.Contains(n.Pool.Secondary, ip) {
			return fmt.Errorf("pod %s on %s has %q, not a secondary IP of its node", p.Name, p.Spec.NodeName, p.Status.PodIP)
		}
	}
	fmt.Println("  every pod's IP is a secondary IP of its node's NIC")

	demo.Step("Traffic: pod to pod across nodes, pod to a VM, the VM to a pod")
	vm, err := c.AddVM("vm", netip.MustParsePrefix("10.240.200.10/16"))
	if err != nil {
		return err
	}
	var a, b2 int = -1, -1
	for i, p := range pods {
		if p.Spec.NodeName == c.Nodes[0].Name && a < 0 {
			a = i
		}
		if p.Spec.NodeName == c.Nodes[1].Name && b2 < 0 {
			b2 = i
		}
	}
	if a < 0 || b2 < 0 {
		return errors.New("the pods are not on both nodes")
	}
	src, dst := pods[a], pods[b2]
	pr, err := c.Probe(&src)
	if err != nil {
		return err
	}
	dstIP := netip.MustParseAddr(dst.Status.PodIP)
	results, err := pr.Connect(ctx,
		probe.Target{Proto: probe.TCP, Addr: probe.HostPort(dstIP, 80), TimeoutMS: 3000},
		probe.Target{Proto: probe.UDP, Addr: probe.HostPort(dstIP, 80), TimeoutMS: 3000},
		probe.Target{Proto: probe.TCP, Addr: probe.HostPort(vm.IP, 80), TimeoutMS: 3000},
		probe.Target{Proto: probe.UDP, Addr: probe.HostPort(vm.IP, 80), TimeoutMS: 3000})
	if err != nil {
		return err
	}
	want := []string{dst.Name, dst.Name, "vm", "vm"}
	for i, r := range results {
		fmt.Printf("  %s (%s, %s) -> %s\n", src.Name, src.Status.PodIP, src.Spec.NodeName, r)
		if !r.OK || r.Reply != want[i] {
			return fmt.Errorf("%s -> %s: want an answer from %s", src.Name, r.Addr, want[i])
		}
	}
	r := cluster.ConnectFrom(vm, probe.Target{Proto: probe.TCP, Addr: probe.HostPort(dstIP, 81), TimeoutMS: 3000})
	fmt.Printf("  vm (%s) -> %s\n", vm.IP, r)
	if !r.OK || r.Reply != dst.Name {
		return fmt.Errorf("vm -> %s: want an answer from %s", dst.Name, dst.Name)
	}

	for _, n := range c.Nodes {
		pod, err := c.AgentPod(ctx, n.Name)
		if err != nil {
			return err
		}
		demo.Step("kubectl -n kube-system exec %s -- podvnet-agent debug endpoints   (%s)", pod, n.Name)
		out, err := c.AgentDebug(ctx, n.Name, "endpoints")
		if err != nil {
			return err
		}
		fmt.Print(demo.Indent(out))
	}
	if *hold {
		demo.Step("Holding the cluster up; press Ctrl-C to tear it down. kubectl:")
		fmt.Printf("  nsenter --net=%s %s/kubectl --kubeconfig %s get pods -A\n", c.ControlPlane.NS.Path(), *kubeDir, c.Kubeconfig())
		<-ctx.Done()
	}
	return ctx.Err()
}
