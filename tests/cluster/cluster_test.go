package cluster_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/podvnet/podvnet/internal/nettest"
	"github.com/podvnet/podvnet/pkg/kube"
	"github.com/podvnet/podvnet/tests/cluster"
	"github.com/podvnet/podvnet/tests/cluster/probe"
	"github.com/podvnet/podvnet/tests/e2e/vnet"
)

// One cluster serves every test of the package: bringing one up costs a
// minute or more on the test machine. Tests leave it as they found it
// (installed or not, the web Deployment present), except the uninstall
// test, which runs last and says so.
var shared struct {
	once      sync.Once
	c         *cluster.Cluster
	err       error
	work      string
	installed bool
	vm        *vnet.Host
}

func TestMain(m *testing.M) {
	// Ctrl-C or a CI timeout's SIGTERM must not leave a cluster behind.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sig
		teardown()
		os.Exit(130)
	}()
	code := m.Run()
	teardown()
	os.Exit(code)
}

var teardownOnce sync.Once

func teardown() {
	teardownOnce.Do(func() {
		if shared.c != nil {
			if err := shared.c.Close(); err != nil {
				fmt.Fprintf(os.Stderr, "tear down the cluster: %v\n", err)
			}
		}
		closeOtherClusters()
		if shared.work != "" && os.Getenv("PODVNET_KEEP") == "" {
			os.RemoveAll(shared.work)
		}
	})
}

// repo is the repository root, from this package's directory.
const repo = "../.."

// kubeDir is where scripts/kube.sh put the pinned Kubernetes binaries.
func kubeDir(t *testing.T) string {
	if d := os.Getenv("PODVNET_KUBE_DIR"); d != "" {
		return d
	}
	out, err := exec.Command(filepath.Join(repo, "scripts/kube.sh"), "--dir").Output()
	if err != nil {
		t.Fatalf("scripts/kube.sh --dir: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// requireCluster returns the shared cluster, bringing it up on first use.
// Without root or the Kubernetes binaries the test skips, except under
// CI=true, where it fails: CI builds them (make kube).
func requireCluster(t *testing.T) *cluster.Cluster {
	t.Helper()
	dir := clusterPrerequisites(t)
	shared.once.Do(func() {
		if shared.work, shared.err = os.MkdirTemp("", "podvnet-cluster-"); shared.err != nil {
			return
		}
		// PODVNET_KUBE_PROXY=iptables|none runs the suite with another
		// kube-proxy mode than nftables, or without kube-proxy.
		opts := clusterOptions(dir, shared.work)
		opts.KubeProxy = os.Getenv("PODVNET_KUBE_PROXY")
		shared.c, shared.err = newCluster(opts)
	})
	if shared.err != nil {
		t.Fatalf("bring the cluster up: %v", shared.err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			logTails(t, shared.c)
		}
	})
	return shared.c
}

// clusterPrerequisites skips the test (fails it under CI=true) without
// root or the Kubernetes binaries, and returns where the binaries are.
func clusterPrerequisites(t *testing.T) string {
	t.Helper()
	nettest.RequireRoot(t)
	dir := kubeDir(t)
	if err := cluster.CheckPrerequisites(dir); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("the cluster tests need the Kubernetes binaries and host tools, and CI=true forbids skipping: %v", err)
		}
		t.Skipf("no cluster: %v (make kube; scripts/deps.sh test)", err)
	}
	return dir
}

// clusterOptions are what every cluster of the package starts from: this
// repository, kubeDir's binaries, work as the work dir, and the images and
// reference plugins make test built.
func clusterOptions(kubeDir, work string) cluster.Options {
	abs, _ := filepath.Abs(repo)
	opts := cluster.Options{Repo: abs, WorkDir: work, KubeDir: kubeDir, Log: testLog{},
		// As docs/operations.md tells operators: the scheduler keeps pods
		// off a node until its agent has the network in place.
		KubeletFlags: cluster.KubeletFlags}
	if b := os.Getenv("PODVNET_BIN_DIR"); b != "" {
		opts.CNIBinDir = filepath.Join(b, "cni")
		if _, err := os.Stat(filepath.Join(b, "images")); err == nil {
			opts.ImageDir = filepath.Join(b, "images")
		}
	}
	return opts
}

// newCluster brings a cluster up and says how long it took.
func newCluster(opts cluster.Options) (*cluster.Cluster, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	c, err := cluster.New(ctx, opts)
	fmt.Fprintf(os.Stderr, "cluster: bring-up took %s\n", time.Since(start).Round(time.Second))
	return c, err
}

type testLog struct{}

func (testLog) Write(b []byte) (int, error) {
	return os.Stderr.Write(append([]byte("cluster: "), b...))
}

// logTails shows the end of every component's log for a failed test.
func logTails(t *testing.T, c *cluster.Cluster) {
	for _, p := range c.Logs() {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if len(b) > 2500 {
			b = b[len(b)-2500:]
		}
		t.Logf("--- %s (end):\n%s", p, b)
	}
}

// installed returns the shared cluster with podvnet installed.
func installed(t *testing.T) *cluster.Cluster {
	t.Helper()
	c := requireCluster(t)
	if !shared.installed {
		if err := c.Install(ctx(t, 8*time.Minute)); err != nil {
			t.Fatalf("install podvnet: %v", err)
		}
		shared.installed = true
	}
	return c
}

func ctx(t *testing.T, d time.Duration) context.Context {
	c, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return c
}

const webApp = "web"

// webReplicas are spread over both nodes, 3 and 3.
const webReplicas int32 = 6

// webPods returns the web Deployment's ready pods, creating it if needed.
func webPods(t *testing.T, c *cluster.Cluster) []corev1.Pod {
	t.Helper()
	cx := ctx(t, 5*time.Minute)
	_, err := c.Client.AppsV1().Deployments("default").Get(cx, webApp, metav1.GetOptions{})
	if err != nil {
		if _, err := c.Client.AppsV1().Deployments("default").Create(cx, cluster.ProbeDeployment("default", webApp, webReplicas), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	pods, err := c.WaitPodsReady(cx, "default", "app="+webApp, int(webReplicas), 4*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	for i := range pods {
		pr, err := c.Probe(&pods[i])
		if err != nil {
			t.Fatal(err)
		}
		if !pr.Ready(cx) {
			t.Fatalf("pod %s: the probe's control socket %s does not answer", pods[i].Name, pr.Socket)
		}
	}
	return pods
}

func podIP(t *testing.T, p *corev1.Pod) netip.Addr {
	t.Helper()
	ip, err := netip.ParseAddr(p.Status.PodIP)
	if err != nil {
		t.Fatalf("pod %s: IP %q: %v", p.Name, p.Status.PodIP, err)
	}
	return ip
}

func probeOf(t *testing.T, c *cluster.Cluster, p *corev1.Pod) *probe.Client {
	t.Helper()
	pr, err := c.Probe(p)
	if err != nil {
		t.Fatal(err)
	}
	return pr
}

// reach checks that every target answers from the pod, by the name wanted.
func reach(t *testing.T, c *cluster.Cluster, from *corev1.Pod, want map[probe.Target]string) {
	t.Helper()
	var targets []probe.Target
	for tg := range want {
		targets = append(targets, tg)
	}
	results, err := probeOf(t, c, from).Connect(ctx(t, time.Minute), targets...)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range results {
		if !r.OK || r.Reply != want[r.Target] {
			t.Errorf("%s (%s on %s) -> %s; want an answer from %s", from.Name, from.Status.PodIP, from.Spec.NodeName, r, want[r.Target])
		}
	}
}

// TestInstallTurnsNodesReady: the nodes wait NotReady for a CNI; `kubectl
// apply -k` of deploy/ starts the agents under the real kubelet, with the
// manifests' mounts, probes and ServiceAccount; they install the plugin and
// conflist on their node, and the nodes turn Ready. Nothing lands in the
// host's own directories.
func TestInstallTurnsNodesReady(t *testing.T) {
	c := requireCluster(t)
	cx := ctx(t, 10*time.Minute)
	var early *corev1.Pod
	if !shared.installed {
		nodes, err := c.Client.CoreV1().Nodes().List(cx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range nodes.Items {
			if cond := cluster.NodeCondition(&n, corev1.NodeReady); cond == nil || cond.Status == corev1.ConditionTrue || !strings.Contains(cond.Message, "network") {
				t.Errorf("%s before podvnet: Ready condition %+v; want not ready for want of a network plugin", n.Name, cond)
			}
			if !cluster.HasNotReadyTaint(&n) {
				t.Errorf("%s before podvnet: taints %+v; kubelet registers it with %s", n.Name, n.Spec.Taints, kube.NotReadyTaint)
			}
		}
		// A pod created before any node's network is ready, tolerating
		// every taint but podvnet's, stays unscheduled until an agent
		// removes it.
		// The default ServiceAccount, which admission wants, comes a moment
		// after the controller manager starts.
		var lastErr error
		if err := eventually(time.Minute, func() bool {
			early, lastErr = c.Client.CoreV1().Pods("default").Create(cx, untaintedOnlyPod("early", ""), metav1.CreateOptions{})
			return lastErr == nil
		}); err != nil {
			t.Fatalf("create a pod: %v", lastErr)
		}
		t.Cleanup(func() { deletePod(t, c, early.Name) })
		var names []string
		for _, n := range c.Nodes {
			names = append(names, n.Name)
		}
		waitUnschedulable(t, c, early.Name, names...)
	}
	c = installed(t)
	for _, n := range c.Nodes {
		waitNode(t, c, n.Name, "taint removed, NetworkUnavailable False", cluster.NodeNetworkReady)
	}
	if early != nil {
		if _, err := c.WaitPodsReady(cx, "default", "app=early", 1, 3*time.Minute); err != nil {
			t.Errorf("the pod created before the agents were ready: %v", err)
		}
	}

	pods, err := c.Client.CoreV1().Pods("kube-system").List(cx, metav1.ListOptions{LabelSelector: cluster.AgentSelector})
	if err != nil {
		t.Fatal(err)
	}
	onNode := map[string]bool{}
	for _, p := range pods.Items {
		onNode[p.Spec.NodeName] = cluster.PodReady(&p)
		if p.Spec.ServiceAccountName != "podvnet" || !p.Spec.HostNetwork {
			t.Errorf("agent pod %s: service account %q, host network %v", p.Name, p.Spec.ServiceAccountName, p.Spec.HostNetwork)
		}
	}
	for _, n := range c.Nodes {
		if !onNode[n.Name] {
			t.Errorf("%s: no ready agent pod (%v)", n.Name, onNode)
		}
		for _, f := range []string{"/etc/cni/net.d/05-podvnet.conflist", "/opt/cni/bin/podvnet", "/var/lib/podvnet/ipam.json", "/run/podvnet/agent.sock", "/sys/fs/bpf/podvnet/maps/endpoints"} {
			if _, err := os.Stat(n.Path(f)); err != nil {
				t.Errorf("%s: %v", n.Name, err)
			}
		}
	}
	for _, f := range []string{"/etc/cni", "/opt/cni", "/var/lib/podvnet", "/run/podvnet", "/etc/podvnet", "/sys/fs/bpf/podvnet", "/var/lib/kubelet", "/var/lib/containerd", "/run/containerd"} {
		if _, err := os.Stat(f); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("the host has %s (%v): a node's files leaked out of its mount namespace", f, err)
		}
	}
}

// TestDeploymentGetsPoolAddresses: a Deployment spread over both nodes gets
// its pods' IPs from each node's pool of secondary IPs, no IP twice.
func TestDeploymentGetsPoolAddresses(t *testing.T) {
	c := installed(t)
	pods := webPods(t, c)
	perNode := map[string]int{}
	seen := map[netip.Addr]string{}
	for i := range pods {
		p := &pods[i]
		ip := podIP(t, p)
		n := c.Node(p.Spec.NodeName)
		if n == nil {
			t.Fatalf("pod %s on unknown node %q", p.Name, p.Spec.NodeName)
		}
		if !slices.Contains(n.Pool.Secondary, ip) {
			t.Errorf("pod %s on %s has %s, not one of the node's secondary IPs %s-%s", p.Name, n.Name, ip, n.Pool.Secondary[0], n.Pool.Secondary[len(n.Pool.Secondary)-1])
		}
		if other, dup := seen[ip]; dup {
			t.Errorf("pods %s and %s both have %s", other, p.Name, ip)
		}
		seen[ip] = p.Name
		perNode[n.Name]++
		t.Logf("%s on %s: %s", p.Name, n.Name, ip)
	}
	for _, n := range c.Nodes {
		if perNode[n.Name] != int(webReplicas)/len(c.Nodes) {
			t.Errorf("%s runs %d web pods; want %d (spread evenly): %v", n.Name, perNode[n.Name], int(webReplicas)/len(c.Nodes), perNode)
		}
	}
}

// vm returns a VM of the VNet running a probe server named "vm".
func vm(t *testing.T, c *cluster.Cluster) *vnet.Host {
	t.Helper()
	if shared.vm == nil {
		h, err := c.AddVM("vm", netip.MustParsePrefix("10.240.200.10/16"))
		if err != nil {
			t.Fatal(err)
		}
		shared.vm = h
	}
	return shared.vm
}

// TestPodsTalkAcrossNodesAndToVM: every web pod reaches every other (same
// node and across nodes) over TCP and UDP, and reaches a VM of the VNet,
// which reaches it back.
func TestPodsTalkAcrossNodesAndToVM(t *testing.T) {
	c := installed(t)
	pods := webPods(t, c)
	h := vm(t, c)
	for i := range pods {
		want := map[probe.Target]string{}
		for j := range pods {
			if i != j {
				for _, proto := range []string{probe.TCP, probe.UDP} {
					want[probe.Target{Proto: proto, Addr: probe.HostPort(podIP(t, &pods[j]), 80), TimeoutMS: 3000}] = pods[j].Name
				}
			}
		}
		for _, proto := range []string{probe.TCP, probe.UDP} {
			want[probe.Target{Proto: proto, Addr: probe.HostPort(h.IP, 81), TimeoutMS: 3000}] = "vm"
		}
		reach(t, c, &pods[i], want)

		r := cluster.ConnectFrom(h, probe.Target{Proto: probe.TCP, Addr: probe.HostPort(podIP(t, &pods[i]), 81), TimeoutMS: 3000})
		if !r.OK || r.Reply != pods[i].Name {
			t.Errorf("vm -> %s: %s", pods[i].Name, r)
		}
	}
}

// TestClusterIPReachesPods: kube-proxy's ClusterIP for the web pods works
// from a pod (the agent leaves the Service CIDR to the kernel path).
func TestClusterIPReachesPods(t *testing.T) {
	c := installed(t)
	if c.Opts.KubeProxy == "none" {
		t.Skip("this cluster runs no kube-proxy")
	}
	pods := webPods(t, c)
	cx := ctx(t, 2*time.Minute)
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: webApp, Namespace: "default"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": webApp}, Ports: []corev1.ServicePort{
			{Name: "tcp", Protocol: corev1.ProtocolTCP, Port: 8080, TargetPort: intstr.FromInt32(80)},
		}},
	}
	created, err := c.Client.CoreV1().Services("default").Create(cx, svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Client.CoreV1().Services("default").Delete(context.Background(), webApp, metav1.DeleteOptions{})
	})
	names := map[string]bool{}
	for i := range pods {
		names[pods[i].Name] = true
	}
	target := probe.Target{Proto: probe.TCP, Addr: created.Spec.ClusterIP + ":8080", TimeoutMS: 2000}
	// kube-proxy programs the Service a moment after it is created.
	var last probe.Result
	if err := eventually(time.Minute, func() bool {
		rs, err := probeOf(t, c, &pods[0]).Connect(cx, target)
		if err != nil {
			t.Fatal(err)
		}
		last = rs[0]
		return last.OK && names[last.Reply]
	}); err != nil {
		t.Errorf("%s -> ClusterIP %s: %s", pods[0].Name, target.Addr, last)
	}
}

// TestAPIServerOutage: the harness stops and restarts the API server (for
// tests of what the agent does meanwhile); the running pods keep talking
// while it is away.
func TestAPIServerOutage(t *testing.T) {
	c := installed(t)
	pods := webPods(t, c)
	c.StopAPIServer()
	if _, err := c.Client.CoreV1().Nodes().List(ctx(t, 10*time.Second), metav1.ListOptions{}); err == nil {
		t.Error("the API answered while stopped")
	}
	reach(t, c, &pods[0], map[probe.Target]string{{Proto: probe.TCP, Addr: probe.HostPort(podIP(t, &pods[len(pods)-1]), 80), TimeoutMS: 3000}: pods[len(pods)-1].Name})
	if err := c.StartAPIServer(); err != nil {
		t.Fatal(err)
	}
	webPods(t, c)
}

// eventually polls cond until it holds; the timeout only bounds a failure.
func eventually(timeout time.Duration, cond func() bool) error {
	for deadline := time.Now().Add(timeout); !cond(); time.Sleep(250 * time.Millisecond) {
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s", timeout)
		}
	}
	return nil
}

// ipamRow is a row of `podvnet-agent debug ipam -o json` (and the fields
// `debug endpoints` shares with it).
type ipamRow struct {
	IP      string `json:"ip"`
	State   string `json:"state"`
	PodName string `json:"pod_name"`
}

// debugJSON runs `podvnet-agent debug VIEW -o json` in node's agent pod
// and decodes its rows.
func debugJSON[T any](t *testing.T, c *cluster.Cluster, node, view string) []T {
	t.Helper()
	out, err := c.AgentDebug(ctx(t, time.Minute), node, view, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var rows []T
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("debug %s -o json: %v\n%s", view, err, out)
	}
	return rows
}

// debugIPAM maps each address of `debug ipam` to its row.
func debugIPAM(t *testing.T, c *cluster.Cluster, node string) map[string]ipamRow {
	m := map[string]ipamRow{}
	for _, r := range debugJSON[ipamRow](t, c, node, "ipam") {
		m[r.IP] = r
	}
	return m
}

// debugEndpoints maps each IP of the endpoints map to its pod.
func debugEndpoints(t *testing.T, c *cluster.Cluster, node string) map[string]string {
	m := map[string]string{}
	for _, r := range debugJSON[ipamRow](t, c, node, "endpoints") {
		m[r.IP] = r.PodName
	}
	return m
}

// TestDeletePodReleasesAddress: `kubectl delete pod` makes the real kubelet
// run CNI DEL; the agent releases the address (cooling, then free) and
// removes its endpoint, as `debug ipam` and `debug endpoints` in the agent's
// pod show; the replacement pod gets another address and works.
func TestDeletePodReleasesAddress(t *testing.T) {
	c := installed(t)
	pods := webPods(t, c)
	victim := pods[0]
	ip := podIP(t, &victim).String()
	node := victim.Spec.NodeName
	if row := debugIPAM(t, c, node)[ip]; row.State != "allocated" || row.PodName != victim.Name {
		t.Fatalf("before delete: %s is %+v; want allocated to %s", ip, row, victim.Name)
	}
	if _, err := c.Kubectl(ctx(t, 2*time.Minute), "delete", "pod", victim.Name, "--wait=true"); err != nil {
		t.Fatal(err)
	}
	// The Pod object goes as soon as its containers are stopped; kubelet
	// tears the sandbox down (CNI DEL) right after.
	var row ipamRow
	if err := eventually(time.Minute, func() bool {
		row = debugIPAM(t, c, node)[ip]
		return row.State != "allocated"
	}); err != nil || row.State != "cooling" {
		t.Errorf("after delete: %s is %+v; want cooling (released, not yet reusable)", ip, row)
	}
	if pod, ok := debugEndpoints(t, c, node)[ip]; ok {
		t.Errorf("after delete: the endpoints map still routes %s to %s", ip, pod)
	}
	pods = webPods(t, c)
	for i := range pods {
		if pods[i].Status.PodIP == ip {
			t.Errorf("replacement pod %s got %s, which is cooling down", pods[i].Name, ip)
		}
	}
	reach(t, c, &pods[len(pods)-1], map[probe.Target]string{
		{Proto: probe.TCP, Addr: probe.HostPort(podIP(t, &pods[0]), 80), TimeoutMS: 3000}: pods[0].Name,
	})
}

// TestRestartedContainerKeepsWorking: a container that exits is restarted
// by kubelet in the same sandbox; the pod keeps its IP and its traffic.
func TestRestartedContainerKeepsWorking(t *testing.T) {
	c := installed(t)
	pods := webPods(t, c)
	p := pods[0]
	var peer *corev1.Pod
	for i := range pods {
		if pods[i].Spec.NodeName != p.Spec.NodeName {
			peer = &pods[i]
		}
	}
	restarts := p.Status.ContainerStatuses[0].RestartCount
	if err := probeOf(t, c, &p).Exit(ctx(t, time.Minute), 3); err != nil {
		t.Fatal(err)
	}
	cx := ctx(t, 3*time.Minute)
	var now *corev1.Pod
	if err := eventually(2*time.Minute, func() bool {
		var err error
		now, err = c.Client.CoreV1().Pods("default").Get(cx, p.Name, metav1.GetOptions{})
		return err == nil && len(now.Status.ContainerStatuses) == 1 && now.Status.ContainerStatuses[0].RestartCount > restarts && cluster.PodReady(now)
	}); err != nil {
		t.Fatalf("pod %s not restarted and ready: %v", p.Name, err)
	}
	if now.Status.PodIP != p.Status.PodIP {
		t.Errorf("pod %s: IP %s after the restart, %s before", p.Name, now.Status.PodIP, p.Status.PodIP)
	}
	if err := eventually(time.Minute, func() bool { return probeOf(t, c, now).Ready(cx) }); err != nil {
		t.Fatalf("restarted probe's control socket: %v", err)
	}
	reach(t, c, now, map[probe.Target]string{{Proto: probe.TCP, Addr: probe.HostPort(podIP(t, peer), 80), TimeoutMS: 3000}: peer.Name})
	reach(t, c, peer, map[probe.Target]string{{Proto: probe.UDP, Addr: probe.HostPort(podIP(t, now), 80), TimeoutMS: 3000}: now.Name})
}

// TestRolloutRestartLosesNothing: `kubectl rollout restart
// daemonset/podvnet` replaces every agent, node by node, while UDP flows
// run both ways between pods on the two nodes and a TCP connection carries
// messages: no datagram is lost, the connection survives, and the pods
// keep their IPs (the data path is pinned and does not need the agent).
func TestRolloutRestartLosesNothing(t *testing.T) {
	c := installed(t)
	pods := webPods(t, c)
	var a, b *corev1.Pod
	for i := range pods {
		if pods[i].Spec.NodeName == c.Nodes[0].Name && a == nil {
			a = &pods[i]
		}
		if pods[i].Spec.NodeName == c.Nodes[1].Name && b == nil {
			b = &pods[i]
		}
	}
	cx := ctx(t, 10*time.Minute)
	before, err := c.Client.CoreV1().Pods("kube-system").List(cx, metav1.ListOptions{LabelSelector: cluster.AgentSelector})
	if err != nil {
		t.Fatal(err)
	}
	type flow struct {
		name string
		stop func(context.Context) (probe.FlowReport, error)
	}
	var flows []flow
	for _, f := range []struct {
		from, to *corev1.Pod
		proto    string
	}{{a, b, probe.UDP}, {b, a, probe.UDP}, {a, b, probe.TCP}} {
		stop, err := probeOf(t, c, f.from).StartFlow(cx, probe.Flow{Proto: f.proto, Addr: probe.HostPort(podIP(t, f.to), 80), PPS: 500})
		if err != nil {
			t.Fatal(err)
		}
		flows = append(flows, flow{fmt.Sprintf("%s %s -> %s", f.proto, f.from.Name, f.to.Name), stop})
	}
	if _, err := c.Kubectl(cx, "-n", "kube-system", "rollout", "restart", "daemonset/podvnet"); err != nil {
		t.Fatal(err)
	}
	if err := c.RolloutStatus(cx, "podvnet", 5*time.Minute); err != nil {
		t.Fatal(err)
	}
	for _, f := range flows {
		rep, err := f.stop(cx)
		if err != nil {
			t.Fatal(err)
		}
		// What the network lost, that is: a datagram a starved process's
		// full socket queue dropped is not the data path's.
		if rep.Error != "" || rep.LostInNetwork() > 0 {
			t.Errorf("%s during the rollout: %s", f.name, rep)
		} else if rep.Sent < 500 {
			t.Errorf("%s: only %d messages: the flow did not run", f.name, rep.Sent)
		} else {
			t.Logf("%s: %s", f.name, rep)
		}
	}
	after, err := c.Client.CoreV1().Pods("kube-system").List(cx, metav1.ListOptions{LabelSelector: cluster.AgentSelector})
	if err != nil {
		t.Fatal(err)
	}
	for _, old := range before.Items {
		for _, p := range after.Items {
			if p.UID == old.UID {
				t.Errorf("agent pod %s was not replaced by the rollout", p.Name)
			}
		}
	}
	now, err := c.WaitPodsReady(cx, "default", "app="+webApp, int(webReplicas), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	ips := func(ps []corev1.Pod) map[string]string {
		m := map[string]string{}
		for _, p := range ps {
			m[p.Name] = p.Status.PodIP
		}
		return m
	}
	if got, want := ips(now), ips(pods); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("pods and IPs after the rollout %v; before %v", got, want)
	}
}
