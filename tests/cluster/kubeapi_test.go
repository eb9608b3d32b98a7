package cluster_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/podvnet/podvnet/pkg/agent"
	"github.com/podvnet/podvnet/pkg/ipam"
	"github.com/podvnet/podvnet/pkg/kube"
	"github.com/podvnet/podvnet/pkg/paths"
	"github.com/podvnet/podvnet/tests/cluster"
	"github.com/podvnet/podvnet/tests/cluster/image"
	"github.com/podvnet/podvnet/tests/cluster/probe"
)

// The agent as a client of the API server (issue 15): the node's startup
// taint and NetworkUnavailable condition, Events, endpoint metadata, and
// what happens while the API server is away.

// networkFailed: the startup taint back, NetworkUnavailable True with a
// message holding cause.
func networkFailed(cause string) func(*corev1.Node) error {
	return func(n *corev1.Node) error {
		cond := cluster.NodeCondition(n, corev1.NodeNetworkUnavailable)
		if !cluster.HasNotReadyTaint(n) || cond == nil || cond.Status != corev1.ConditionTrue || cond.Reason != kube.ReasonNotReady ||
			!strings.Contains(cond.Message, cause) {
			return fmt.Errorf("taints %+v, NetworkUnavailable %+v; want the taint and True naming %q", n.Spec.Taints, cond, cause)
		}
		return nil
	}
}

// waitNode waits until check passes on the node.
func waitNode(t *testing.T, c *cluster.Cluster, name, what string, check func(*corev1.Node) error) {
	t.Helper()
	var last error
	if err := eventually(2*time.Minute, func() bool {
		n, err := c.Client.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			last = err
			return false
		}
		last = check(n)
		return last == nil
	}); err != nil {
		t.Fatalf("%s: %s: %v (last: %v)", name, what, err, last)
	}
}

// untaintedOnlyPod is a probe pod (labelled app=name) that tolerates every
// taint Kubernetes puts on a node that is not ready, is unreachable or has
// no network, but not podvnet's: only the agent's taint can keep it off a
// node. node, if set, is the only node it may run on.
func untaintedOnlyPod(name, node string) *corev1.Pod {
	p := cluster.ProbePod("default", name, "", map[string]string{"app": name})
	for _, key := range []string{corev1.TaintNodeNotReady, corev1.TaintNodeUnreachable, corev1.TaintNodeNetworkUnavailable} {
		p.Spec.Tolerations = append(p.Spec.Tolerations, corev1.Toleration{Key: key, Operator: corev1.TolerationOpExists})
	}
	if node != "" {
		p.Spec.NodeSelector = map[string]string{"kubernetes.io/hostname": node}
	}
	return p
}

// waitUnschedulable waits until the scheduler has tried the pod and found
// every node blocked by a taint it does not tolerate, and checks that on
// each of nodes podvnet's is the only such taint (the scheduler's message
// names none).
func waitUnschedulable(t *testing.T, c *cluster.Cluster, name string, nodes ...string) {
	t.Helper()
	cx := context.Background()
	var p *corev1.Pod
	var cond *corev1.PodCondition
	if err := eventually(2*time.Minute, func() bool {
		var err error
		if p, err = c.Client.CoreV1().Pods("default").Get(cx, name, metav1.GetOptions{}); err != nil {
			return false
		}
		cond = nil
		for i := range p.Status.Conditions {
			if p.Status.Conditions[i].Type == corev1.PodScheduled {
				cond = &p.Status.Conditions[i]
			}
		}
		return p.Spec.NodeName == "" && cond != nil && cond.Status == corev1.ConditionFalse &&
			cond.Reason == corev1.PodReasonUnschedulable && strings.Contains(cond.Message, "untolerated taint")
	}); err != nil {
		t.Fatalf("pod %s: PodScheduled %+v; want unschedulable for an untolerated taint", name, cond)
	}
	for _, node := range nodes {
		n, err := c.Client.CoreV1().Nodes().Get(cx, node, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var untolerated []string
		for _, taint := range n.Spec.Taints {
			if taint.Effect != corev1.TaintEffectPreferNoSchedule && !slices.ContainsFunc(p.Spec.Tolerations, func(tl corev1.Toleration) bool {
				// untaintedOnlyPod's tolerations: a key, any value and effect.
				return tl.Key == taint.Key && tl.Operator == corev1.TolerationOpExists
			}) {
				untolerated = append(untolerated, taint.ToString())
			}
		}
		if len(untolerated) != 1 || !cluster.HasNotReadyTaint(n) {
			t.Errorf("%s: taints the pod does not tolerate %v; want %s:NoSchedule alone", node, untolerated, kube.NotReadyTaint)
		}
	}
}

func deletePod(t *testing.T, c *cluster.Cluster, name string) {
	if err := c.Client.CoreV1().Pods("default").Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
		t.Logf("delete pod %s: %v", name, err)
	}
}

// TestNICGoneTaintsNode: with its NIC gone, a node's agent puts the
// startup taint back and sets NetworkUnavailable True naming the NIC; the
// scheduler keeps a new pod off the node; with the NIC back (another
// interface of the name for the agent), both clear, the pod runs there, and
// pods on the node are reached across nodes again.
func TestNICGoneTaintsNode(t *testing.T) {
	c := installed(t)
	pods := webPods(t, c)
	n := c.Nodes[1]
	restore, err := n.TakeNIC()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := restore(); err != nil {
			t.Errorf("bring eth0 back: %v", err)
		}
	})
	waitNode(t, c, n.Name, "NIC gone", networkFailed("NIC eth0 is gone"))

	late, err := c.Client.CoreV1().Pods("default").Create(ctx(t, time.Minute), untaintedOnlyPod("late", n.Name), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deletePod(t, c, late.Name) })
	waitUnschedulable(t, c, late.Name, n.Name)

	if err := restore(); err != nil {
		t.Fatal(err)
	}
	waitNode(t, c, n.Name, "NIC back", cluster.NodeNetworkReady)
	ready, err := c.WaitPodsReady(ctx(t, 3*time.Minute), "default", "app=late", 1, 3*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if ip := podIP(t, &ready[0]); ready[0].Spec.NodeName != n.Name || !slices.Contains(n.Pool.Secondary, ip) {
		t.Errorf("pod late on %s with %s; want %s and one of its secondary IPs", ready[0].Spec.NodeName, ip, n.Name)
	}
	// from_nic runs on the NIC again: pods on the other node reach this
	// node's pods.
	var from, to *corev1.Pod
	for i := range pods {
		if pods[i].Spec.NodeName == n.Name {
			to = &pods[i]
		} else {
			from = &pods[i]
		}
	}
	reach(t, c, from, map[probe.Target]string{
		{Proto: probe.TCP, Addr: probe.HostPort(podIP(t, to), 80), TimeoutMS: 3000}:        to.Name,
		{Proto: probe.TCP, Addr: probe.HostPort(podIP(t, &ready[0]), 80), TimeoutMS: 3000}: ready[0].Name,
	})
}

// endpointJSON is a row of `debug endpoints -o json`.
type endpointJSON struct {
	IP           string            `json:"ip"`
	PodNamespace string            `json:"pod_namespace"`
	PodName      string            `json:"pod_name"`
	PodUID       string            `json:"pod_uid"`
	Labels       map[string]string `json:"labels"`
}

// TestEndpointMetadata: `debug endpoints` in each agent's pod names every
// endpoint's pod with its UID and its labels as the API server has them
// now (a label added after the pod started included); the table shows the
// labels; /metrics names each endpoint's pod.
func TestEndpointMetadata(t *testing.T) {
	c := installed(t)
	pods := webPods(t, c)
	cx := ctx(t, 3*time.Minute)
	relabelled := pods[0].Name
	patch := []byte(`{"metadata":{"labels":{"podvnet-test":"relabelled"}}}`)
	if _, err := c.Client.CoreV1().Pods("default").Patch(cx, relabelled, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Client.CoreV1().Pods("default").Patch(context.Background(), relabelled, types.MergePatchType,
			[]byte(`{"metadata":{"labels":{"podvnet-test":null}}}`), metav1.PatchOptions{})
	})
	for _, n := range c.Nodes {
		var problems []string
		if err := eventually(time.Minute, func() bool {
			rows := map[string]endpointJSON{}
			for _, r := range debugJSON[endpointJSON](t, c, n.Name, "endpoints") {
				rows[r.IP] = r
			}
			problems = nil
			for i := range pods {
				p := &pods[i]
				if p.Spec.NodeName != n.Name {
					continue
				}
				r := rows[p.Status.PodIP]
				wantLabels := map[string]string{"app": webApp}
				for k, v := range p.Labels {
					wantLabels[k] = v
				}
				if p.Name == relabelled {
					wantLabels["podvnet-test"] = "relabelled"
				}
				if r.PodNamespace != "default" || r.PodName != p.Name || r.PodUID != string(p.UID) || !mapsEqual(r.Labels, wantLabels) {
					problems = append(problems, fmt.Sprintf("%s: %+v, want %s/%s uid %s labels %v", p.Status.PodIP, r, p.Namespace, p.Name, p.UID, wantLabels))
				}
			}
			return len(problems) == 0
		}); err != nil {
			t.Errorf("%s: debug endpoints: %v", n.Name, problems)
		}
		table, err := c.AgentDebug(cx, n.Name, "endpoints")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(table, "LABELS") || !strings.Contains(table, "app="+webApp) {
			t.Errorf("%s: debug endpoints table without labels:\n%s", n.Name, table)
		}
		for i := range pods {
			if pods[i].Spec.NodeName != n.Name {
				continue
			}
			if v, err := n.Metric("podvnet_endpoint_info", `ip="`+pods[i].Status.PodIP+`"`, `namespace="default"`, `pod="`+pods[i].Name+`"`); err != nil || v != 1 {
				t.Errorf("%s: podvnet_endpoint_info of %s: %v %v", n.Name, pods[i].Name, v, err)
			}
		}
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// nodeEvents are the Events on a node with a reason.
func nodeEvents(t *testing.T, c *cluster.Cluster, node, reason string) []corev1.Event {
	t.Helper()
	l, err := c.Client.CoreV1().Events("").List(context.Background(), metav1.ListOptions{
		FieldSelector: "involvedObject.kind=Node,involvedObject.name=" + node + ",reason=" + reason,
	})
	if err != nil {
		t.Fatal(err)
	}
	return l.Items
}

// waitEvent waits for a Warning Event of the agent on node whose message
// holds every one of parts, and returns it.
func waitEvent(t *testing.T, c *cluster.Cluster, node, reason string, parts ...string) corev1.Event {
	t.Helper()
	var found corev1.Event
	var seen []string
	if err := eventually(2*time.Minute, func() bool {
		seen = nil
		for _, e := range nodeEvents(t, c, node, reason) {
			seen = append(seen, e.Message)
			if e.Type == corev1.EventTypeWarning && e.Source.Component == kube.Component &&
				!slices.ContainsFunc(parts, func(p string) bool { return !strings.Contains(e.Message, p) }) {
				found = e
				return true
			}
		}
		return false
	}); err != nil {
		t.Fatalf("%s: no %s Event naming %q: %v (seen %q)", node, reason, parts, err, seen)
	}
	return found
}

// TestMaxPodsEvent: kubelet's default max-pods, 110, against a node of 30
// secondary IPs is a Warning Event on each node that names both numbers.
func TestMaxPodsEvent(t *testing.T) {
	c := installed(t)
	for _, n := range c.Nodes {
		e := waitEvent(t, c, n.Name, agent.ReasonMaxPodsAbovePool, "kubelet max-pods is 110", "this node has 30 pod addresses")
		t.Logf("%s: %s", n.Name, e.Message)
	}
}

// TestPoolExhaustedEvent: more pods on a node than it has addresses: the
// ADDs refused for lack of one are a Warning Event on the node naming a
// pod; the sandbox retries of the same pod count on that Event rather than
// adding Events.
func TestPoolExhaustedEvent(t *testing.T) {
	c := installed(t)
	webPods(t, c)
	n := c.Nodes[1]
	cx := ctx(t, 6*time.Minute)
	// Pause-only pods: the cheapest thing that needs an address. 31 is
	// past the node's 30 whatever else runs there.
	dep := cluster.ProbeDeployment("default", "fill", 31)
	spec := &dep.Spec.Template.Spec
	spec.Containers = []corev1.Container{{Name: "pause", Image: image.PauseRef, ImagePullPolicy: corev1.PullNever}}
	spec.Volumes, spec.TopologySpreadConstraints = nil, nil
	spec.NodeSelector = map[string]string{"kubernetes.io/hostname": n.Name}
	if _, err := c.Client.AppsV1().Deployments("default").Create(cx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cx := context.Background()
		c.Client.AppsV1().Deployments("default").Delete(cx, "fill", metav1.DeleteOptions{})
		if err := eventually(3*time.Minute, func() bool {
			l, err := c.Client.CoreV1().Pods("default").List(cx, metav1.ListOptions{LabelSelector: "app=fill"})
			return err == nil && len(l.Items) == 0
		}); err != nil {
			t.Errorf("fill pods not gone: %v", err)
		}
	})
	e := waitEvent(t, c, n.Name, agent.ReasonPoolExhausted, "no pod address for default/fill-", "this node's limit is 30 pods")
	t.Logf("%s: %s", n.Name, e.Message)
	var counted corev1.Event
	if err := eventually(3*time.Minute, func() bool {
		for _, e := range nodeEvents(t, c, n.Name, agent.ReasonPoolExhausted) {
			if e.Count >= 2 {
				counted = e
				return true
			}
		}
		return false
	}); err != nil {
		t.Errorf("no exhaustion Event counted a repeat: %v", err)
	} else {
		t.Logf("repeats aggregated: %d x %q", counted.Count, counted.Message)
	}
}

// TestPoolWithdrawnAndLost: the wireserver stops listing an address a pod
// holds: a Warning Event names it and its pod. It then lists none: the
// pool is lost, the node tainted and NetworkUnavailable True with the
// cause; listed again, both clear.
func TestPoolWithdrawnAndLost(t *testing.T) {
	c := installed(t)
	pods := webPods(t, c)
	n := c.Nodes[0]
	md := c.VNet.Metadata
	full := md.Secondary(n.Node)
	t.Cleanup(func() { md.SetSecondary(n.Node, full) })
	var held *corev1.Pod
	for i := range pods {
		if pods[i].Spec.NodeName == n.Name {
			held = &pods[i]
		}
	}
	ip := podIP(t, held)
	md.SetSecondary(n.Node, slices.DeleteFunc(slices.Clone(full), func(a netip.Addr) bool { return a == ip }))
	e := waitEvent(t, c, n.Name, agent.ReasonAddressesWithdrawn, ip.String()+" (default/"+held.Name+")")
	t.Logf("%s: %s", n.Name, e.Message)

	md.SetSecondary(n.Node, nil)
	waitNode(t, c, n.Name, "pool lost", networkFailed("pool lost: the pool source lists no secondary IP"))
	md.SetSecondary(n.Node, full)
	waitNode(t, c, n.Name, "pool back", cluster.NodeNetworkReady)
}

// agentHTTP fetches a path of the node's agent endpoint (its host network).
func agentHTTP(t *testing.T, n *cluster.Node, path string) (int, string) {
	t.Helper()
	code, body, err := n.HTTPGet(path)
	if err != nil {
		t.Fatalf("%s: GET %s: %v", n.Name, path, err)
	}
	return code, body
}

// nodeState reads the node's allocation state, as the agent wrote it.
func nodeState(t *testing.T, n *cluster.Node) *ipam.State {
	t.Helper()
	st, err := ipam.FileStore{Path: n.Path(paths.Default().StateFile())}.Load()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestAPIServerOutageCatchUp: the API server is away for 30 s while pods
// come and go (one deleted just before, one added just before, one's
// sandbox crashes and is made again meanwhile). The agents go on serving
// CNI and forwarding, stay ready (/readyz 200, saying the API server is
// unreachable) and report it in /metrics; once it is back they catch up:
// every node's endpoints are exactly its pods, each with the API server's
// name, UID and labels, and the pods file holds no pod that is gone.
func TestAPIServerOutageCatchUp(t *testing.T) {
	c := installed(t)
	cx := ctx(t, 12*time.Minute)
	deps := c.Client.AppsV1().Deployments("default")
	if _, err := deps.Create(cx, cluster.ProbeDeployment("default", "churn", 4), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deps.Delete(context.Background(), "churn", metav1.DeleteOptions{}) })
	pods, err := c.WaitPodsReady(cx, "default", "app=churn", 4, 4*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	on := func(node string) []*corev1.Pod {
		var out []*corev1.Pod
		for i := range pods {
			if pods[i].Spec.NodeName == node {
				out = append(out, &pods[i])
			}
		}
		return out
	}
	n0, n1 := c.Nodes[0], c.Nodes[1]
	if len(on(n0.Name)) != 2 || len(on(n1.Name)) != 2 {
		t.Fatalf("churn pods not spread 2 and 2: %d on %s, %d on %s", len(on(n0.Name)), n0.Name, len(on(n1.Name)), n1.Name)
	}
	crash, stay0 := on(n0.Name)[0], on(n0.Name)[1]
	victim, stay1 := on(n1.Name)[0], on(n1.Name)[1]
	sandboxOf := func() string {
		for _, al := range nodeState(t, n0).Allocations {
			if al.PodName == crash.Name {
				return al.ContainerID
			}
		}
		return ""
	}
	before := sandboxOf()
	if before == "" {
		t.Fatalf("%s holds no address of %s's state", crash.Name, n0.Name)
	}

	// Pods that come and go: one deleted, one more wanted, then the API
	// server goes away before either is through.
	zero := int64(0)
	if err := c.Client.CoreV1().Pods("default").Delete(cx, victim.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	if _, err := deps.Patch(cx, "churn", types.MergePatchType, []byte(`{"spec":{"replicas":5}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	c.StopAPIServer()
	stopped := time.Now()
	t.Cleanup(func() { c.StartAPIServer() }) // a no-op error once it runs
	t.Logf("API server stopped")

	for _, n := range c.Nodes {
		var code int
		var body string
		if err := eventually(time.Minute, func() bool {
			code, body = agentHTTP(t, n, "/readyz")
			up, err := n.Metric("podvnet_apiserver_up")
			return code == http.StatusOK && strings.Contains(body, "Kubernetes API server unreachable") && err == nil && up == 0
		}); err != nil {
			t.Errorf("%s while the API server is away: /readyz %d %q; want 200 saying it is unreachable, and podvnet_apiserver_up 0", n.Name, code, body)
		}
	}
	// CNI without the API server: kubelet makes crash a new sandbox, which
	// the agent wires with an address.
	if err := n0.KillSandbox(string(crash.UID)); err != nil {
		t.Fatal(err)
	}
	if err := eventually(2*time.Minute, func() bool { s := sandboxOf(); return s != "" && s != before }); err != nil {
		t.Errorf("%s's new sandbox got no address while the API server was away: %v", crash.Name, err)
	}
	// Forwarding without the API server.
	reach(t, c, stay0, map[probe.Target]string{{Proto: probe.TCP, Addr: probe.HostPort(podIP(t, stay1), 80), TimeoutMS: 3000}: stay1.Name})
	reach(t, c, stay1, map[probe.Target]string{{Proto: probe.UDP, Addr: probe.HostPort(podIP(t, stay0), 80), TimeoutMS: 3000}: stay0.Name})
	time.Sleep(time.Until(stopped.Add(30 * time.Second))) // the outage lasts 30 s
	if err := c.StartAPIServer(); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	t.Logf("API server back after %s", back.Sub(stopped).Round(time.Second))

	for _, n := range c.Nodes {
		if err := eventually(2*time.Minute, func() bool {
			code, body := agentHTTP(t, n, "/readyz")
			last, err := n.Metric("podvnet_apiserver_last_success_timestamp_seconds")
			return code == http.StatusOK && !strings.Contains(body, "unreachable") && err == nil && last > float64(stopped.Unix())
		}); err != nil {
			t.Errorf("%s does not see the API server back: %v", n.Name, err)
		}
	}
	if _, err := c.WaitPodsReady(cx, "default", "app=churn", 5, 4*time.Minute); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.Nodes {
		var problems []string
		if err := eventually(3*time.Minute, func() bool {
			problems = consistent(t, c, n)
			return len(problems) == 0
		}); err != nil {
			t.Errorf("%s after the outage: %v", n.Name, problems)
		}
	}
	// NetworkPolicy's cluster-wide watches are back too: a label given to
	// the churn pods now and a policy made now that selects it isolate them
	// on both nodes (the engine reads pods from the cluster-wide Pod
	// informer). Each watch resumes on its own client-go backoff, and a
	// watch the restarted API server refuses (an expired resource version)
	// backs off again before it lists: this can take two minutes, and is
	// what leaves the cluster steady for the tests that follow.
	running, err := c.Client.CoreV1().Pods("default").List(cx, metav1.ListOptions{LabelSelector: "app=churn"})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range running.Items {
		if _, err := c.Client.CoreV1().Pods("default").Patch(cx, p.Name, types.MergePatchType,
			[]byte(`{"metadata":{"labels":{"after-outage":"yes"}}}`), metav1.PatchOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Fatal(err)
		}
	}
	np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "after-outage"},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"after-outage": "yes"}},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}}}
	nps := c.Client.NetworkingV1().NetworkPolicies("default")
	if _, err := nps.Create(cx, np, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nps.Delete(context.Background(), np.Name, metav1.DeleteOptions{}) })
	for _, n := range c.Nodes {
		var rows []policyRow
		if err := eventually(3*time.Minute, func() bool {
			out, err := c.AgentDebug(cx, n.Name, "policy", "-o", "json")
			rows = nil
			if err != nil || json.Unmarshal([]byte(out), &rows) != nil {
				return false
			}
			churn := 0
			for _, r := range rows {
				if r.PodNamespace == "default" && strings.HasPrefix(r.PodName, "churn-") {
					if r.Ingress.State != "isolated" {
						return false
					}
					churn++
				}
			}
			return churn > 0
		}); err != nil {
			t.Errorf("%s: a NetworkPolicy made after the outage is not in force: %+v", n.Name, rows)
		} else {
			t.Logf("%s: a NetworkPolicy made after the outage in force %s after the API server came back", n.Name, time.Since(back).Round(time.Second))
		}
	}
}

// consistent compares a node's endpoints (`debug endpoints` in its agent's
// pod) and pods file with the API server's pods on the node, and lists
// what differs.
func consistent(t *testing.T, c *cluster.Cluster, n *cluster.Node) []string {
	t.Helper()
	l, err := c.Client.CoreV1().Pods("").List(context.Background(), metav1.ListOptions{FieldSelector: "spec.nodeName=" + n.Name})
	if err != nil {
		return []string{err.Error()}
	}
	var problems []string
	byIP := map[string]corev1.Pod{}
	uids := map[string]bool{}
	for _, p := range l.Items {
		uids[string(p.UID)] = true
		if !p.Spec.HostNetwork && p.Status.PodIP != "" && p.Status.Phase == corev1.PodRunning {
			byIP[p.Status.PodIP] = p
		}
	}
	rows := debugJSON[endpointJSON](t, c, n.Name, "endpoints")
	seen := map[string]bool{}
	for _, r := range rows {
		seen[r.IP] = true
		p, ok := byIP[r.IP]
		switch {
		case !ok:
			problems = append(problems, fmt.Sprintf("endpoint %s (%s/%s) is no running pod's", r.IP, r.PodNamespace, r.PodName))
		case r.PodName != p.Name || r.PodUID != string(p.UID) || !mapsEqual(r.Labels, p.Labels):
			problems = append(problems, fmt.Sprintf("endpoint %s: %+v; the API server has %s uid %s labels %v", r.IP, r, p.Name, p.UID, p.Labels))
		}
	}
	for ip, p := range byIP {
		if !seen[ip] {
			problems = append(problems, fmt.Sprintf("pod %s has %s, which is no endpoint", p.Name, ip))
		}
	}
	f, err := kube.ReadPodsFile(paths.Node{StateDir: n.Path(paths.DefaultStateDir)})
	if err != nil {
		return append(problems, err.Error())
	}
	inFile := map[string]bool{}
	for _, p := range f.Pods {
		inFile[p.UID] = true
		if !uids[p.UID] {
			problems = append(problems, fmt.Sprintf("pods file: %s (%s) is gone from the API server", p, p.UID))
		}
	}
	for _, p := range l.Items {
		if !inFile[string(p.UID)] {
			problems = append(problems, fmt.Sprintf("pods file: %s/%s missing", p.Namespace, p.Name))
		}
	}
	return problems
}
