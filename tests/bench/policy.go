package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/podvnet/podvnet/pkg/maps"
	"github.com/podvnet/podvnet/tests/cluster"
	"github.com/podvnet/podvnet/tests/e2e/vnet"
)

// NetworkPolicy rows (issue 16). The agents of the podvnet-policy path run
// against an API server (the cluster tests' control plane, without
// kubelets) holding a cluster of fake pods, namespaces and policies around
// the benchmark's real pods:
//   - the bench pods (namespace bench, app=bench) are each selected by
//     policyRulesPerPod policies, one per peer identity (a fake pod each),
//     besides the one that lets them talk: the data path rows with rules;
//   - the rest of the cluster fills it up to policyPods pods and
//     policyCount policies: the update latency row's scale.
const (
	policyRulesPerPod = 50
	policyPods        = 1000
	policyCount       = 200
)

// PolicyUpdateRow is how long one kind of change takes from the API
// server's answer to the write to the maps of every node (the last one).
type PolicyUpdateRow struct {
	Change string  `json:"change"`
	N      int     `json:"n"`
	P50MS  float64 `json:"p50_ms"`
	P99MS  float64 `json:"p99_ms"`
	MaxMS  float64 `json:"max_ms"`
}

// policyAPI is the API server of a bed whose agents run against one, as
// the bench uses it.
type policyAPI struct {
	c        *cluster.Cluster
	client   kubernetes.Interface
	ctx      context.Context
	policies bool // the podvnet-policy path's cluster of pods and policies
	scale    struct{ pods, policies int }
}

// apiCluster brings up the API server and the VNet of a path whose agents
// run against one and makes its nodes and the bench's namespace; with
// policies, fills it with the podvnet-policy path's cluster.
func (b *bench) apiCluster(ctx context.Context, dir, prefix string, policies bool) (*cluster.Cluster, *policyAPI, error) {
	c, err := cluster.NewControlPlane(ctx, cluster.Options{WorkDir: dir, KubeDir: b.kubeDir, BinDir: b.binDir, Prefix: prefix,
		Log: logWriter{b}})
	if err != nil {
		return nil, nil, err
	}
	rc := rest.CopyConfig(c.RESTConfig)
	rc.QPS, rc.Burst = 500, 1000 // filling the cluster is not what is timed
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		c.Close()
		return nil, nil, err
	}
	api := &policyAPI{c: c, client: cs, ctx: ctx, policies: policies}
	if policies {
		api.scale.pods, api.scale.policies = policyPods, policyCount
		if b.smoke {
			api.scale.pods, api.scale.policies = 200, 60
		}
	}
	start := time.Now()
	if err := api.fill(ctx); err != nil {
		c.Close()
		return nil, nil, err
	}
	if policies {
		b.logf("policy cluster: %d pods, %d policies created through the API in %s", api.scale.pods, api.scale.policies,
			time.Since(start).Round(time.Second))
	}
	return c, api, nil
}

// agentArgs are the API flags of a node's agent.
func (api *policyAPI) agentArgs(n *vnet.Node) []string {
	return []string{"--kubeconfig", api.c.Kubeconfig(), "--node-name", n.Name}
}

func fakePod(ns, name, node string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Spec: corev1.PodSpec{NodeName: node, AutomountServiceAccountToken: new(bool),
			Containers: []corev1.Container{{Name: "c", Image: "none"}}}}
}

// setRunning writes what kubelet would: the pod runs, with its address.
func (api *policyAPI) setRunning(ctx context.Context, p *corev1.Pod, ip netip.Addr) error {
	p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip.String(), PodIPs: []corev1.PodIP{{IP: ip.String()}}}
	_, err := api.client.CoreV1().Pods(p.Namespace).UpdateStatus(ctx, p, metav1.UpdateOptions{})
	return err
}

// fill makes the cluster: the nodes (the two real ones, the fake ones of
// the fake pods), the namespaces, the pods with their addresses, the
// policies; without policies only the real nodes and the bench's namespace.
func (api *policyAPI) fill(ctx context.Context) error {
	cs := api.client
	const fakeNodes = 10
	var nodes []string
	for _, n := range api.c.VNet.Nodes {
		nodes = append(nodes, n.Name)
	}
	if api.policies {
		for i := range fakeNodes {
			nodes = append(nodes, fmt.Sprintf("fake-%d", i))
		}
	}
	for _, n := range nodes {
		if _, err := cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}}, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("create node %s: %w", n, err)
		}
	}
	type podSpec struct {
		p  *corev1.Pod
		ip netip.Addr
	}
	var pods []podSpec
	var policies []*networkingv1.NetworkPolicy
	if err := createNamespace(ctx, cs, benchNamespace, map[string]string{"team": "bench"}); err != nil {
		return err
	}
	if !api.policies {
		return nil
	}
	// Fake addresses, outside the VNet: only the maps ever hold them.
	addr := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 244, byte(i / 250), byte(1 + i%250)}) }
	tcp := corev1.ProtocolTCP
	port := func(n int) []networkingv1.NetworkPolicyPort {
		v := intstr.FromInt32(int32(n))
		return []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &v}}
	}
	benchPods := metav1.LabelSelector{MatchLabels: map[string]string{"app": "bench"}}
	both := []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
	for i := range policyRulesPerPod {
		name := fmt.Sprintf("peer-%d", i)
		pods = append(pods, podSpec{fakePod(benchNamespace, name, nodes[2+i%fakeNodes], map[string]string{"name": name}), addr(len(pods))})
		peer := []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"name": name}}}}
		policies = append(policies, &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: benchNamespace, Name: name},
			Spec: networkingv1.NetworkPolicySpec{PodSelector: benchPods, PolicyTypes: both,
				Ingress: []networkingv1.NetworkPolicyIngressRule{{From: peer, Ports: port(10000 + i)}},
				Egress:  []networkingv1.NetworkPolicyEgressRule{{To: peer, Ports: port(10000 + i)}}}})
	}
	benchPeer := []networkingv1.NetworkPolicyPeer{{PodSelector: &benchPods}}
	policies = append(policies, &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: benchNamespace, Name: "bench"},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: benchPods, PolicyTypes: both,
			Ingress: []networkingv1.NetworkPolicyIngressRule{{From: benchPeer}}, Egress: []networkingv1.NetworkPolicyEgressRule{{To: benchPeer}}}})

	// The rest of the cluster: namespaces of 50 pods in 10 apps, each app
	// isolated, reachable from the next app of namespaces of one team.
	for k := 0; len(pods) < api.scale.pods; k++ {
		ns := fmt.Sprintf("np-%d", k)
		if err := createNamespace(ctx, cs, ns, map[string]string{"team": fmt.Sprintf("t%d", k%5)}); err != nil {
			return err
		}
		for j := 0; j < 50 && len(pods) < api.scale.pods; j++ {
			pods = append(pods, podSpec{fakePod(ns, fmt.Sprintf("pod-%d", j), nodes[2+(len(pods)%fakeNodes)],
				map[string]string{"app": fmt.Sprintf("app-%d", j%10), "tier": fmt.Sprintf("t%d", j%3)}), addr(len(pods))})
		}
		for m := 0; m < 10 && len(policies) < api.scale.policies; m++ {
			policies = append(policies, &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("app-%d", m)},
				Spec: networkingv1.NetworkPolicySpec{
					PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("app-%d", m)}},
					PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
					Ingress: []networkingv1.NetworkPolicyIngressRule{{From: []networkingv1.NetworkPolicyPeer{{
						NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": fmt.Sprintf("t%d", k%5)}},
						PodSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"app": fmt.Sprintf("app-%d", (m+1)%10)}},
					}}, Ports: port(8000 + m)}}}})
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(pods)+len(policies))
	sem := make(chan struct{}, 32)
	for _, ps := range pods {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			p, err := cs.CoreV1().Pods(ps.p.Namespace).Create(ctx, ps.p, metav1.CreateOptions{})
			if err == nil {
				err = api.setRunning(ctx, p, ps.ip)
			}
			errs <- err
		})
	}
	for _, np := range policies {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			_, err := cs.NetworkingV1().NetworkPolicies(np.Namespace).Create(ctx, np, metav1.CreateOptions{})
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return fmt.Errorf("fill the policy cluster: %w", err)
		}
	}
	return nil
}

// createPod makes the Pod of a bench pod before its ADD, as the scheduler
// and kubelet would have. The bench pods share their labels, as the pods
// of a Deployment do: one identity (a pod with labels of its own would
// also add its identity to the rules of every endpoint selecting it).
func (api *policyAPI) createPod(name, node string) error {
	_, err := api.client.CoreV1().Pods(benchNamespace).Create(api.ctx, fakePod(benchNamespace, name, node, map[string]string{"app": "bench"}),
		metav1.CreateOptions{})
	return err
}

func (api *policyAPI) podRunning(name string, ip netip.Addr) error {
	p, err := api.client.CoreV1().Pods(benchNamespace).Get(api.ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	return api.setRunning(api.ctx, p, ip)
}

func (api *policyAPI) deletePod(name string) error {
	err := api.client.CoreV1().Pods(benchNamespace).Delete(api.ctx, name, metav1.DeleteOptions{GracePeriodSeconds: new(int64)})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// timeUpdate makes one change and returns how long it took every node to
// write it: from the request to the API server to the last node's
// generation bump, polled every half millisecond.
func timeUpdate(nodes []*vnet.Node, change func() error) (time.Duration, error) {
	sets := make([]*maps.Set, len(nodes))
	for i, n := range nodes {
		s, err := maps.OpenPinned(n.BPFFS)
		if err != nil {
			return 0, err
		}
		defer s.Close()
		sets[i] = s
	}
	before := make([]uint32, len(sets))
	for i, s := range sets {
		c, err := s.Policy.Config()
		if err != nil {
			return 0, err
		}
		before[i] = c.Gen
	}
	start := time.Now()
	if err := change(); err != nil {
		return 0, err
	}
	done := make([]bool, len(sets))
	for left := len(sets); left > 0; {
		if time.Since(start) > 30*time.Second {
			return 0, errors.New("no node wrote the change within 30 s")
		}
		for i, s := range sets {
			if done[i] {
				continue
			}
			if c, err := s.Policy.Config(); err == nil && c.Gen != before[i] {
				done[i] = true
				left--
			}
		}
		time.Sleep(500 * time.Microsecond)
	}
	return time.Since(start), nil
}

// updateLatency times changes of each kind, one at a time: a policy's
// rule (a port of one of the bench pods' policies), a pod's labels (a new
// identity), a namespace's labels (new identities for its pods).
func (b *bench) updateLatency(ctx context.Context, api *policyAPI) error {
	nodes := api.c.VNet.Nodes
	n := 30
	if b.smoke {
		n = 3
	}
	cs := api.client
	kinds := []struct {
		name   string
		change func(i int) error
	}{
		{"NetworkPolicy rule", func(i int) error {
			np, err := cs.NetworkingV1().NetworkPolicies(benchNamespace).Get(ctx, fmt.Sprintf("peer-%d", i%policyRulesPerPod), metav1.GetOptions{})
			if err != nil {
				return err
			}
			p := intstr.FromInt32(int32(20000 + i))
			np.Spec.Ingress[0].Ports[0].Port = &p
			_, err = cs.NetworkingV1().NetworkPolicies(benchNamespace).Update(ctx, np, metav1.UpdateOptions{})
			return err
		}},
		{"pod labels", func(i int) error {
			p, err := cs.CoreV1().Pods("np-0").Get(ctx, fmt.Sprintf("pod-%d", i%50), metav1.GetOptions{})
			if err != nil {
				return err
			}
			p.Labels["rev"] = fmt.Sprint(i)
			_, err = cs.CoreV1().Pods("np-0").Update(ctx, p, metav1.UpdateOptions{})
			return err
		}},
		{"namespace labels", func(i int) error {
			ns, err := cs.CoreV1().Namespaces().Get(ctx, fmt.Sprintf("np-%d", 1+i%2), metav1.GetOptions{})
			if err != nil {
				return err
			}
			ns.Labels["rev"] = fmt.Sprint(i)
			_, err = cs.CoreV1().Namespaces().Update(ctx, ns, metav1.UpdateOptions{})
			return err
		}},
	}
	var all []time.Duration
	for _, k := range kinds {
		var ds []time.Duration
		for i := range n {
			b.logf("policy update latency: %s, %d of %d", k.name, i+1, n)
			d, err := timeUpdate(nodes, func() error { return k.change(i) })
			if err != nil {
				return fmt.Errorf("%s: %w", k.name, err)
			}
			ds = append(ds, d)
		}
		all = append(all, ds...)
		b.res.PolicyUpdates = append(b.res.PolicyUpdates, latencyRow(k.name, ds))
	}
	b.res.PolicyUpdates = append(b.res.PolicyUpdates, latencyRow("any", all))
	b.res.PolicyScale = fmt.Sprintf("%d pods, %d policies, %d nodes' maps", api.scale.pods, api.scale.policies, len(nodes))
	return nil
}

func latencyRow(name string, ds []time.Duration) PolicyUpdateRow {
	return PolicyUpdateRow{Change: name, N: len(ds), P50MS: ms(percentile(ds, 0.5)), P99MS: ms(percentile(ds, 0.99)), MaxMS: ms(percentile(ds, 1))}
}
