package cluster_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/podvnet/podvnet/tests/cluster"
	"github.com/podvnet/podvnet/tests/cluster/probe"
	"github.com/podvnet/podvnet/tests/e2e/vnet"
)

// The Service suite: what users rely on kube-proxy for, checked against
// the real API server and EndpointSlice controller. TestServices runs it in
// the shared cluster (kube-proxy deployed, --service-mode=kube-proxy: the
// data path hands Service traffic to the kernel, and its conntrack lookup
// is limited to the ports kernel NAT answers from); TestServicesWithoutKubeProxy
// in a cluster without kube-proxy, with --service-mode=bpf.

// svcEnv is one run of the suite: its cluster, namespace, VM and pods.
type svcEnv struct {
	t   *testing.T
	c   *cluster.Cluster
	ns  string
	vm  *vnet.Host
	bpf bool
	// be1 on the first node, be2 on the second; client1 and client2 the
	// same; sa1..sa3 the backends of the scaled and affinity Services.
	pods map[string]*corev1.Pod
}

func (e *svcEnv) ctx(d time.Duration) context.Context { return ctx(e.t, d) }

// pod runs a probe pod on node with labels and waits for it.
func (e *svcEnv) startPods(specs map[string]struct {
	node   string
	labels map[string]string
}) {
	e.t.Helper()
	cx := e.ctx(5 * time.Minute)
	for name, s := range specs {
		if _, err := e.c.Client.CoreV1().Pods(e.ns).Create(cx, cluster.ProbePod(e.ns, name, s.node, s.labels), metav1.CreateOptions{}); err != nil {
			e.t.Fatal(err)
		}
	}
	pods, err := e.c.WaitPodsReady(cx, e.ns, "", len(specs), 4*time.Minute)
	if err != nil {
		e.t.Fatal(err)
	}
	for i := range pods {
		e.pods[pods[i].Name] = &pods[i]
		pr := probeOf(e.t, e.c, &pods[i])
		if !pr.Ready(cx) {
			e.t.Fatalf("pod %s: the probe's control socket does not answer", pods[i].Name)
		}
	}
}

// service creates a Service selecting app=selector with a TCP port 80 and a
// DNS-shaped UDP port 53, both to the probe's port 80.
func (e *svcEnv) service(name, selector string, mod func(*corev1.Service)) *corev1.Service {
	e.t.Helper()
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: e.ns},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": selector}, Ports: []corev1.ServicePort{
			{Name: "tcp", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromInt32(80)},
			{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53, TargetPort: intstr.FromInt32(80)},
		}},
	}
	if mod != nil {
		mod(s)
	}
	created, err := e.c.Client.CoreV1().Services(e.ns).Create(e.ctx(time.Minute), s, metav1.CreateOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	return created
}

// connect tries targets from a pod.
func (e *svcEnv) connect(from string, targets ...probe.Target) []probe.Result {
	e.t.Helper()
	rs, err := probeOf(e.t, e.c, e.pods[from]).Connect(e.ctx(time.Minute), targets...)
	if err != nil {
		e.t.Fatal(err)
	}
	return rs
}

// until retries check until it reports nothing wrong: a Service is
// programmed a moment after the API has it. It fails the test with the last
// complaint.
func (e *svcEnv) until(what string, check func() string) {
	e.t.Helper()
	var last string
	if err := eventually(time.Minute, func() bool {
		last = check()
		return last == ""
	}); err != nil {
		e.t.Errorf("%s: %s", what, last)
	}
}

func tcpTo(ip string, port int) probe.Target {
	return probe.Target{Proto: probe.TCP, Addr: net.JoinHostPort(ip, fmt.Sprint(port)), TimeoutMS: 2000}
}

func udpTo(ip string, port int, unconnected bool) probe.Target {
	return probe.Target{Proto: probe.UDP, Addr: net.JoinHostPort(ip, fmt.Sprint(port)), TimeoutMS: 2000, Unconnected: unconnected}
}

func hostOf(addr string) string {
	h, _, _ := net.SplitHostPort(addr)
	return h
}

// serviceSuite runs every check on c.
func serviceSuite(t *testing.T, c *cluster.Cluster, h *vnet.Host, bpf bool) *svcEnv {
	e := &svcEnv{t: t, c: c, vm: h, bpf: bpf, pods: map[string]*corev1.Pod{}, ns: "svc"}
	cx := e.ctx(time.Minute)
	if _, err := c.Client.CoreV1().Namespaces().Create(cx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: e.ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Client.CoreV1().Namespaces().Delete(context.Background(), e.ns, metav1.DeleteOptions{})
	})
	n1, n2 := c.Nodes[0].Name, c.Nodes[1].Name
	type spec = struct {
		node   string
		labels map[string]string
	}
	e.startPods(map[string]spec{
		"be1": {n1, map[string]string{"app": "be1"}}, "be2": {n2, map[string]string{"app": "be2"}},
		"client1": {n1, map[string]string{"app": "client"}}, "client2": {n2, map[string]string{"app": "client"}},
		"sa1": {n1, map[string]string{"app": "sa"}}, "sa2": {n2, map[string]string{"app": "sa"}}, "sa3": {n1, map[string]string{"app": "sa"}},
	})

	t.Run("ClusterIP", func(t *testing.T) { e.t = t; e.clusterIP() })
	t.Run("Hairpin", func(t *testing.T) { e.t = t; e.hairpin() })
	t.Run("NoEndpointsRefused", func(t *testing.T) { e.t = t; e.noEndpoints() })
	t.Run("FromTheNode", func(t *testing.T) { e.t = t; e.fromNode() })
	t.Run("NodePort", func(t *testing.T) { e.t = t; e.nodePorts() })
	t.Run("SessionAffinity", func(t *testing.T) { e.t = t; e.affinity() })
	t.Run("AgentRestart", func(t *testing.T) { e.t = t; e.agentRestart() })
	t.Run("BackendScaledAway", func(t *testing.T) { e.t = t; e.scaledAway() })
	e.t = t
	return e
}

// clusterIP: TCP and UDP to a backend on the client's node and on the
// other, the backend seeing the client's own address, the socket showing
// the ClusterIP as its peer, and a DNS-shaped answer coming from the
// ClusterIP (resolvers drop any other).
func (e *svcEnv) clusterIP() {
	for _, be := range []string{"be1", "be2"} {
		svc := e.service("svc-"+be, be, nil)
		ip := svc.Spec.ClusterIP
		client := e.pods["client1"]
		e.until(fmt.Sprintf("client1 (%s) -> %s (%s on %s)", client.Spec.NodeName, ip, be, e.pods[be].Spec.NodeName), func() string {
			rs := e.connect("client1", tcpTo(ip, 80), udpTo(ip, 53, false), udpTo(ip, 53, true))
			var bad []string
			for _, r := range rs {
				switch {
				case !r.OK || r.Reply != be:
					bad = append(bad, r.String())
				case hostOf(r.Peer) != client.Status.PodIP:
					bad = append(bad, fmt.Sprintf("%s: the backend saw the client as %s, want %s", r.Addr, r.Peer, client.Status.PodIP))
				case !r.Unconnected && r.Remote != r.Addr:
					bad = append(bad, fmt.Sprintf("%s %s: the socket's peer is %s, want the ClusterIP", r.Proto, r.Addr, r.Remote))
				case r.Unconnected && r.From != r.Addr:
					bad = append(bad, fmt.Sprintf("udp %s: the answer came from %s, want the ClusterIP", r.Addr, r.From))
				}
			}
			return strings.Join(bad, "; ")
		})
	}
}

// hairpin: a pod reaches itself through its own Service.
func (e *svcEnv) hairpin() {
	svc := e.service("hairpin", "be2", nil)
	e.until("be2 -> its own Service", func() string {
		r := e.connect("be2", tcpTo(svc.Spec.ClusterIP, 80))[0]
		if !r.OK || r.Reply != "be2" {
			return r.String()
		}
		return ""
	})
}

// noEndpoints: a Service without endpoints refuses a connection at once
// (kube-proxy's reject: ECONNREFUSED, not a timeout).
func (e *svcEnv) noEndpoints() {
	svc := e.service("empty", "nothing-has-this-label", nil)
	e.until("client1 -> a Service without endpoints", func() string {
		var bad []string
		for _, r := range e.connect("client1", tcpTo(svc.Spec.ClusterIP, 80), udpTo(svc.Spec.ClusterIP, 53, false)) {
			if r.OK || !strings.Contains(r.Error, "connection refused") {
				bad = append(bad, fmt.Sprintf("%s: want connection refused", r))
			}
		}
		return strings.Join(bad, "; ")
	})
}

// fromNode: the node itself (here the test process in the node's network
// namespace, outside the pods' cgroup) reaches a ClusterIP.
func (e *svcEnv) fromNode() {
	svc := e.service("from-node", "be2", nil)
	n := e.c.Nodes[0]
	e.until(n.Name+" -> ClusterIP", func() string {
		var r probe.Result
		n.NS.Do(func() error {
			r = probe.Connect(context.Background(), tcpTo(svc.Spec.ClusterIP, 80))
			return nil
		})
		if !r.OK || r.Reply != "be2" {
			return r.String()
		}
		return ""
	})
}

// nodePorts: from a VM of the VNet, a NodePort with the Cluster policy
// reaches the backend through either node, which SNATs to itself; with the
// Local policy the node with the backend keeps the VM's address, the other
// drops, and the health check port says which node has endpoints.
func (e *svcEnv) nodePorts() {
	nodePort := func(s *corev1.Service) { s.Spec.Type = corev1.ServiceTypeNodePort }
	cl := e.service("np-cluster", "be2", nodePort)
	lo := e.service("np-local", "be2", func(s *corev1.Service) {
		s.Spec.Type = corev1.ServiceTypeLoadBalancer
		s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	})
	n1, n2 := e.c.Nodes[0].Pool.Primary.String(), e.c.Nodes[1].Pool.Primary.String()
	from := func(tg probe.Target) probe.Result { return cluster.ConnectFrom(e.vm, tg) }
	for _, node := range []string{n1, n2} {
		e.until("vm -> NodePort (Cluster) on "+node, func() string {
			for _, proto := range []string{probe.TCP, probe.UDP} {
				port := cl.Spec.Ports[0].NodePort
				if proto == probe.UDP {
					port = cl.Spec.Ports[1].NodePort
				}
				r := from(probe.Target{Proto: proto, Addr: net.JoinHostPort(node, fmt.Sprint(port)), TimeoutMS: 2000})
				if !r.OK || r.Reply != "be2" || hostOf(r.Peer) != node {
					return fmt.Sprintf("%s, the backend saw %s; want be2 seeing the node %s", r, r.Peer, node)
				}
			}
			return ""
		})
	}
	e.until("vm -> NodePort (Local) on the backend's node", func() string {
		r := from(tcpTo(n2, int(lo.Spec.Ports[0].NodePort)))
		if !r.OK || r.Reply != "be2" || hostOf(r.Peer) != e.vm.IP.String() {
			return fmt.Sprintf("%s, the backend saw %s; want be2 seeing the VM %s", r, r.Peer, e.vm.IP)
		}
		return ""
	})
	if r := from(tcpTo(n1, int(lo.Spec.Ports[0].NodePort))); r.OK {
		e.t.Errorf("vm -> NodePort (Local) on the node without its backend: %s; want nothing (dropped)", r)
	}
	hc := int(lo.Spec.HealthCheckNodePort)
	for node, want := range map[string]struct {
		code  int
		local float64
	}{n2: {200, 1}, n1: {503, 0}} {
		e.until(fmt.Sprintf("healthCheckNodePort %d on %s", hc, node), func() string {
			var code int
			var body map[string]any
			resp, err := vnet.HTTPClient(e.vm, 2*time.Second).Get(fmt.Sprintf("http://%s/", net.JoinHostPort(node, fmt.Sprint(hc))))
			if err == nil {
				defer resp.Body.Close()
				code = resp.StatusCode
				b, _ := io.ReadAll(resp.Body)
				json.Unmarshal(b, &body)
			}
			if code != want.code || body["localEndpoints"] != want.local {
				return fmt.Sprintf("HTTP %d %v; want %d with %v local endpoints", code, body, want.code, want.local)
			}
			return ""
		})
	}
}

// affinity: with sessionAffinity ClientIP each client keeps one backend.
func (e *svcEnv) affinity() {
	svc := e.service("affinity", "sa", func(s *corev1.Service) { s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP })
	targets := make([]probe.Target, 12)
	for i := range targets {
		targets[i] = tcpTo(svc.Spec.ClusterIP, 80)
	}
	for _, client := range []string{"client1", "client2"} {
		e.until(client+" -> a Service with session affinity", func() string {
			seen := map[string]int{}
			for _, tg := range targets { // one after the other: each a new connection
				r := e.connect(client, tg)[0]
				if !r.OK {
					return r.String()
				}
				seen[r.Reply]++
			}
			if len(seen) != 1 {
				return fmt.Sprintf("answered by %v; want one backend", seen)
			}
			return ""
		})
	}
}

// flows starts flows from client1 to the Service's ClusterIP, TCP and (with
// udp) UDP by turns.
func (e *svcEnv) flows(ip string, n int, udp bool) []func(context.Context) (probe.FlowReport, error) {
	e.t.Helper()
	var stops []func(context.Context) (probe.FlowReport, error)
	for i := range n {
		proto, port := probe.TCP, 80
		if udp && i%2 == 1 {
			proto, port = probe.UDP, 53
		}
		stop, err := probeOf(e.t, e.c, e.pods["client1"]).StartFlow(e.ctx(time.Minute), probe.Flow{Proto: proto, Addr: net.JoinHostPort(ip, fmt.Sprint(port)), PPS: 100})
		if err != nil {
			e.t.Fatal(err)
		}
		stops = append(stops, stop)
	}
	return stops
}

// agentRestart: established connections through a Service survive the
// agents' rollout restart (the translation state is pinned).
func (e *svcEnv) agentRestart() {
	svc := e.service("restart", "sa", nil)
	e.until("the Service answers", func() string {
		if r := e.connect("client1", tcpTo(svc.Spec.ClusterIP, 80))[0]; !r.OK {
			return r.String()
		}
		return ""
	})
	stops := e.flows(svc.Spec.ClusterIP, 6, true)
	cx := e.ctx(5 * time.Minute)
	if _, err := e.c.Kubectl(cx, "-n", "kube-system", "rollout", "restart", "daemonset/podvnet"); err != nil {
		e.t.Fatal(err)
	}
	if err := e.c.RolloutStatus(cx, "podvnet", 4*time.Minute); err != nil {
		e.t.Fatal(err)
	}
	for _, stop := range stops {
		rep, err := stop(cx)
		if err != nil {
			e.t.Fatal(err)
		}
		if rep.Sent == 0 || rep.LostInNetwork() > 0 || rep.Error != "" {
			e.t.Errorf("through the agents' restart: %s", rep)
		}
	}
}

// scaledAway: a backend leaves mid-test: new connections avoid it, flows
// to the backends that stay lose nothing.
func (e *svcEnv) scaledAway() {
	svc := e.service("scaled", "sa", nil)
	e.until("the Service has its three backends", func() string {
		seen := map[string]bool{}
		for range 30 {
			if r := e.connect("client1", tcpTo(svc.Spec.ClusterIP, 80))[0]; r.OK {
				seen[r.Reply] = true
			}
		}
		if len(seen) != 3 {
			return fmt.Sprintf("answered by %v", seen)
		}
		return ""
	})
	// TCP: a stream learns its server from the first line, before the
	// backend goes.
	stops := e.flows(svc.Spec.ClusterIP, 9, false)
	cx := e.ctx(2 * time.Minute)
	if err := e.c.Client.CoreV1().Pods(e.ns).Delete(cx, "sa3", metav1.DeleteOptions{}); err != nil {
		e.t.Fatal(err)
	}
	e.until("new connections avoid the backend that left", func() string {
		for range 30 {
			r := e.connect("client1", tcpTo(svc.Spec.ClusterIP, 80))[0]
			if !r.OK || r.Reply == "sa3" {
				return r.String()
			}
		}
		return ""
	})
	for _, stop := range stops {
		rep, err := stop(cx)
		if err != nil {
			e.t.Fatal(err)
		}
		if rep.Reply == "sa3" {
			continue // its backend is gone
		}
		if rep.Sent == 0 || rep.LostInNetwork() > 0 || rep.Error != "" {
			e.t.Errorf("a flow to %s, which stayed: %s", rep.Reply, rep)
		}
	}
}

// TestServices runs the suite where kube-proxy serves Services and the
// agents run --service-mode=kube-proxy: nothing the data path does (the
// conntrack lookup limited to the ports kernel NAT answers from included)
// may break a case.
func TestServices(t *testing.T) {
	c := installed(t)
	if c.Opts.KubeProxy == "none" {
		t.Skip("this cluster runs no kube-proxy: TestServicesWithoutKubeProxy covers it")
	}
	serviceSuite(t, c, vm(t, c), false)
}

// otherClusters are the clusters tests bring up besides the shared one;
// teardown closes them too.
var otherClusters struct {
	mu sync.Mutex
	c  []*cluster.Cluster
	w  []string
}

func closeOtherClusters() {
	otherClusters.mu.Lock()
	defer otherClusters.mu.Unlock()
	for _, c := range otherClusters.c {
		if err := c.Close(); err != nil {
			fmt.Fprintf(os.Stderr, "tear down a cluster: %v\n", err)
		}
	}
	for _, w := range otherClusters.w {
		if os.Getenv("PODVNET_KEEP") == "" {
			os.RemoveAll(w)
		}
	}
	otherClusters.c, otherClusters.w = nil, nil
}

// TestServicesWithoutKubeProxy runs the suite in a cluster of its own
// without kube-proxy, its agents with --service-mode=bpf, the API server's
// address in the ConfigMap (as docs/operations.md says); then checks what
// only this mode has: debug services and the monitor naming a Service.
func TestServicesWithoutKubeProxy(t *testing.T) {
	dir := clusterPrerequisites(t)
	work, err := os.MkdirTemp("", "podvnet-cluster-bpf-")
	if err != nil {
		t.Fatal(err)
	}
	opts := clusterOptions(dir, work)
	opts.KubeProxy = "none"
	opts.AgentSettings = map[string]string{"SERVICE_MODE": "bpf"}
	c, err := newCluster(opts)
	otherClusters.mu.Lock()
	otherClusters.w = append(otherClusters.w, work)
	if c != nil {
		otherClusters.c = append(otherClusters.c, c)
	}
	otherClusters.mu.Unlock()
	t.Cleanup(closeOtherClusters)
	if err != nil {
		t.Fatalf("bring the cluster up: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			logTails(t, c)
		}
	})
	if err := c.Install(ctx(t, 8*time.Minute)); err != nil {
		t.Fatalf("install podvnet: %v", err)
	}
	h, err := c.AddVM("vm", netip.MustParsePrefix("10.240.200.10/16"))
	if err != nil {
		t.Fatal(err)
	}
	e := serviceSuite(t, c, h, true)
	t.Run("DebugServices", func(t *testing.T) { e.t = t; e.debugServices() })
}

// debugServices: `debug services` in the agent's pod shows a Service's
// frontend with the backend its slot holds and the connections it was
// given; `debug monitor` names the Service of a refused connection.
func (e *svcEnv) debugServices() {
	type row struct {
		Service  string `json:"service"`
		Addr     string `json:"addr"`
		Port     uint16 `json:"port"`
		Scope    string `json:"scope"`
		Backends []struct {
			Addr  string `json:"addr"`
			Local bool   `json:"local"`
			Conns uint64 `json:"connections"`
		} `json:"backends"`
	}
	node := e.pods["client1"].Spec.NodeName
	rows := debugJSON[row](e.t, e.c, node, "services")
	found := false
	for _, r := range rows {
		if r.Service != "svc/svc-be2:tcp/tcp" || r.Scope != "internal" {
			continue
		}
		found = true
		if len(r.Backends) != 1 || r.Backends[0].Addr != e.pods["be2"].Status.PodIP || r.Backends[0].Local || r.Backends[0].Conns == 0 {
			e.t.Errorf("svc-be2 in debug services: %+v; want be2 (%s, on the other node) with the suite's connections", r, e.pods["be2"].Status.PodIP)
		}
	}
	if !found {
		e.t.Errorf("debug services on %s lists no internal frontend of svc/svc-be2 (%d rows)", node, len(rows))
	}

	// A refused connection while the monitor listens: its event names the
	// Service.
	empty, err := e.c.Client.CoreV1().Services(e.ns).Get(e.ctx(time.Minute), "empty", metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	type event struct {
		Reason  string `json:"reason"`
		Service string `json:"service"`
	}
	out := make(chan string, 1)
	go func() {
		o, err := e.c.AgentDebug(context.Background(), node, "monitor", "-o", "json", "--reason", "svc_sock_no_backend",
			"--count", "1", "--timeout", "60s")
		if err != nil {
			o += err.Error()
		}
		out <- o
	}()
	var got string
	if err := eventually(time.Minute, func() bool {
		e.connect("client1", tcpTo(empty.Spec.ClusterIP, 80))
		select {
		case got = <-out:
			return true
		default:
			return false
		}
	}); err != nil {
		e.t.Fatalf("no monitor event of a refused connection: %v", err)
	}
	var ev event
	if err := json.Unmarshal([]byte(got), &ev); err != nil || ev.Service != "svc/empty:tcp/tcp" {
		e.t.Errorf("monitor event %q (%v): want svc_sock_no_backend naming svc/empty:tcp/tcp", got, err)
	}
}
