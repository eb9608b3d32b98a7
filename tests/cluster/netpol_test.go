package cluster_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/podvnet/podvnet/tests/cluster"
	"github.com/podvnet/podvnet/tests/cluster/probe"
	"github.com/podvnet/podvnet/tests/e2e/vnet"
)

// The upstream NetworkPolicy e2e model (kubernetes test/e2e/network/netpol):
// namespaces x, y and z, each with pods a, b and c labelled pod=<name>,
// here spread over both nodes, each serving TCP and UDP on 80, 81 and 82
// on ports named serve-<port>-<proto>, and a ClusterIP Service of its own.
// Every pod also names one port "http", a different one per pod name, for
// the case of a named port that resolves per destination. The probes run
// from each pod's probe through its control socket, so a policy under test
// never cuts the test's own channel.
var (
	npNamespaces = []string{"x", "y", "z"}
	npPods       = []string{"a", "b", "c"}
	npHTTP       = map[string]int32{"a": 82, "b": 80, "c": 81}
)

// npNS is the cluster namespace of model namespace x.
func npNS(x string) string { return "netpol-" + x }

type npProbe struct {
	proto string
	port  int
}

func (p npProbe) String() string { return fmt.Sprintf("%s/%d", p.proto, p.port) }

var (
	tcp80, tcp81, tcp82 = npProbe{probe.TCP, 80}, npProbe{probe.TCP, 81}, npProbe{probe.TCP, 82}
	udp80, udp81        = npProbe{probe.UDP, 80}, npProbe{probe.UDP, 81}
)

type netpolModel struct {
	c       *cluster.Cluster
	pods    map[string]*corev1.Pod // "x/a"
	svcIP   map[string]string      // "x/a": its Service's ClusterIP
	clients map[string]*probe.Client
}

var npShared struct {
	once sync.Once
	m    *netpolModel
	err  error
}

// netpol returns the model's pods, created on first use (and kept for the
// other tests of the package; they have no policy between tests).
func netpol(t *testing.T) *netpolModel {
	t.Helper()
	c := installed(t)
	npShared.once.Do(func() { npShared.m, npShared.err = newNetpolModel(ctx(t, 5*time.Minute), c) })
	if npShared.err != nil {
		t.Fatalf("NetworkPolicy model: %v", npShared.err)
	}
	m := npShared.m
	t.Cleanup(func() {
		if err := m.reset(context.Background()); err != nil {
			t.Errorf("reset the model: %v", err)
		}
	})
	return m
}

func npPodSpec(ns, name, node string) *corev1.Pod {
	p := cluster.ProbePod(npNS(ns), name, node, map[string]string{"pod": name})
	ctr := &p.Spec.Containers[0]
	ctr.Args = []string{"serve", "--tcp", "80,81,82", "--udp", "80,81,82", "--sctp", ""}
	for _, port := range []int32{80, 81, 82} {
		for _, proto := range []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP} {
			ctr.Ports = append(ctr.Ports, corev1.ContainerPort{Name: fmt.Sprintf("serve-%d-%s", port, strings.ToLower(string(proto))),
				ContainerPort: port, Protocol: proto})
		}
	}
	ctr.Ports = append(ctr.Ports, corev1.ContainerPort{Name: "http", ContainerPort: npHTTP[name], Protocol: corev1.ProtocolTCP})
	return p
}

func newNetpolModel(cx context.Context, c *cluster.Cluster) (*netpolModel, error) {
	m := &netpolModel{c: c, pods: map[string]*corev1.Pod{}, svcIP: map[string]string{}, clients: map[string]*probe.Client{}}
	i := 0
	for _, ns := range npNamespaces {
		if _, err := c.Client.CoreV1().Namespaces().Create(cx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: npNS(ns)}}, metav1.CreateOptions{}); err != nil {
			return nil, err
		}
		for _, name := range npPods {
			// Spread: a pod's peers are on its node and on the other.
			node := c.Nodes[i%len(c.Nodes)].Name
			i++
			if _, err := c.Client.CoreV1().Pods(npNS(ns)).Create(cx, npPodSpec(ns, name, node), metav1.CreateOptions{}); err != nil {
				return nil, err
			}
			svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "s-" + name, Namespace: npNS(ns)},
				Spec: corev1.ServiceSpec{Selector: map[string]string{"pod": name}}}
			for _, port := range []int32{80, 81, 82} {
				for _, proto := range []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP} {
					svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: fmt.Sprintf("%s-%d", strings.ToLower(string(proto)), port),
						Protocol: proto, Port: port, TargetPort: intstr.FromInt32(port)})
				}
			}
			created, err := c.Client.CoreV1().Services(npNS(ns)).Create(cx, svc, metav1.CreateOptions{})
			if err != nil {
				return nil, err
			}
			m.svcIP[ns+"/"+name] = created.Spec.ClusterIP
		}
	}
	for _, ns := range npNamespaces {
		pods, err := c.WaitPodsReady(cx, npNS(ns), "", len(npPods), 4*time.Minute)
		if err != nil {
			return nil, err
		}
		for i := range pods {
			key := ns + "/" + pods[i].Name
			m.pods[key] = &pods[i]
			pr, err := c.Probe(&pods[i])
			if err != nil {
				return nil, err
			}
			m.clients[key] = pr
		}
	}
	// Without policies, everything reaches everything (kube-proxy included).
	if err := m.await(cx, map[npProbe][]string{tcp80: nil, udp80: nil}); err != nil {
		return nil, fmt.Errorf("before any policy: %w", err)
	}
	return m, nil
}

func (m *netpolModel) keys() []string {
	var out []string
	for _, ns := range npNamespaces {
		for _, p := range npPods {
			out = append(out, ns+"/"+p)
		}
	}
	return out
}

// cell is one probe of the matrix: from a pod to a pod, on its IP or
// through its Service's ClusterIP.
type cell struct {
	probe    npProbe
	from, to string
	service  bool
}

func (c cell) String() string {
	via := ""
	if c.service {
		via = " (ClusterIP)"
	}
	return fmt.Sprintf("%s %s -> %s%s", c.probe, c.from, c.to, via)
}

// run probes every pair (loopback aside: undefined, and upstream ignores
// it) on every probe, to the pod IP and to the ClusterIP, all at once.
func (m *netpolModel) run(cx context.Context, probes []npProbe) (map[cell]bool, error) {
	out := map[cell]bool{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	var errs []error
	for _, from := range m.keys() {
		var targets []probe.Target
		var cells []cell
		for _, to := range m.keys() {
			if from == to {
				continue
			}
			for _, p := range probes {
				for _, svc := range []bool{false, true} {
					addr := m.pods[to].Status.PodIP
					if svc {
						addr = m.svcIP[to]
					}
					targets = append(targets, probe.Target{Proto: p.proto, Addr: probe.HostPort(netip.MustParseAddr(addr), p.port), TimeoutMS: 1000})
					cells = append(cells, cell{p, from, to, svc})
				}
			}
		}
		wg.Go(func() {
			res, err := m.clients[from].Connect(cx, targets...)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("probes from %s: %w", from, err))
				return
			}
			for i, r := range res {
				// An answer must come from the pod asked for.
				out[cells[i]] = r.OK && r.Reply == strings.Split(cells[i].to, "/")[1]
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		return nil, errs[0]
	}
	return out, nil
}

// npPairs expands "S->T" patterns (* for every namespace or pod) into pairs.
func npPairs(patterns ...string) map[string]bool {
	expand := func(p string) []string {
		ns, pod, _ := strings.Cut(p, "/")
		var out []string
		for _, n := range npNamespaces {
			for _, q := range npPods {
				if (ns == "*" || ns == n) && (pod == "*" || pod == q) {
					out = append(out, n+"/"+q)
				}
			}
		}
		return out
	}
	out := map[string]bool{}
	for _, pat := range patterns {
		pat, except, _ := strings.Cut(pat, " except ")
		// An exception is a pair pattern, or a pod pattern that takes the
		// pod out on either side.
		skipPair, skipPod := map[string]bool{}, map[string]bool{}
		for _, e := range strings.Split(except, ",") {
			if e = strings.TrimSpace(e); e == "" {
				continue
			}
			if f, t, ok := strings.Cut(e, "->"); ok {
				for _, f := range expand(f) {
					for _, t := range expand(t) {
						skipPair[f+"->"+t] = true
					}
				}
				continue
			}
			for _, p := range expand(e) {
				skipPod[p] = true
			}
		}
		from, to, _ := strings.Cut(pat, "->")
		for _, f := range expand(from) {
			for _, t := range expand(to) {
				if f != t && !skipPair[f+"->"+t] && !skipPod[f] && !skipPod[t] {
					out[f+"->"+t] = true
				}
			}
		}
	}
	return out
}

// await probes until the matrix is exactly what expect says (denied pairs
// by probe; both the pod IP and the ClusterIP of a pair share a verdict),
// or fails with the last difference. Waiting is for the rules to reach
// both nodes' maps; a matrix is accepted only whole.
func (m *netpolModel) await(cx context.Context, expect map[npProbe][]string) error {
	var probes []npProbe
	for p := range expect {
		probes = append(probes, p)
	}
	slices.SortFunc(probes, func(a, b npProbe) int { return strings.Compare(a.String(), b.String()) })
	var diff []string
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := m.run(cx, probes)
		if err != nil {
			return err
		}
		diff = diff[:0]
		for _, p := range probes {
			denied := npPairs(expect[p]...)
			for _, from := range m.keys() {
				for _, to := range m.keys() {
					if from == to {
						continue
					}
					for _, svc := range []bool{false, true} {
						c := cell{p, from, to, svc}
						if want := !denied[from+"->"+to]; got[c] != want {
							diff = append(diff, fmt.Sprintf("%s: %s, want %s", c, verdictWord(got[c]), verdictWord(want)))
						}
					}
				}
			}
		}
		if len(diff) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			slices.Sort(diff)
			return fmt.Errorf("%d cells differ:\n  %s", len(diff), strings.Join(diff, "\n  "))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func verdictWord(ok bool) string {
	if ok {
		return "connects"
	}
	return "refused"
}

// reset removes every policy and restores the model's labels.
func (m *netpolModel) reset(cx context.Context) error {
	c := m.c
	for _, ns := range append(slices.Clone(npNamespaces), "dns") {
		if err := c.Client.NetworkingV1().NetworkPolicies(npNS(ns)).DeleteCollection(cx, metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return err
		}
	}
	for _, ns := range npNamespaces {
		if err := m.labelNamespace(cx, ns, nil); err != nil {
			return err
		}
		for _, p := range npPods {
			if err := m.labelPod(cx, ns+"/"+p, map[string]string{"pod": p}); err != nil {
				return err
			}
		}
	}
	return nil
}

// labelNamespace sets a namespace's labels (its name label stays).
func (m *netpolModel) labelNamespace(cx context.Context, ns string, labels map[string]string) error {
	n, err := m.c.Client.CoreV1().Namespaces().Get(cx, npNS(ns), metav1.GetOptions{})
	if err != nil {
		return err
	}
	want := map[string]string{"kubernetes.io/metadata.name": npNS(ns)}
	for k, v := range labels {
		want[k] = v
	}
	n.Labels = want
	_, err = m.c.Client.CoreV1().Namespaces().Update(cx, n, metav1.UpdateOptions{})
	return err
}

// labelPod sets a pod's labels.
func (m *netpolModel) labelPod(cx context.Context, key string, labels map[string]string) error {
	ns, name, _ := strings.Cut(key, "/")
	p, err := m.c.Client.CoreV1().Pods(npNS(ns)).Get(cx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	p.Labels = labels
	_, err = m.c.Client.CoreV1().Pods(npNS(ns)).Update(cx, p, metav1.UpdateOptions{})
	return err
}

// apply creates or replaces policies.
func (m *netpolModel) apply(cx context.Context, ps ...*networkingv1.NetworkPolicy) error {
	for _, p := range ps {
		api := m.c.Client.NetworkingV1().NetworkPolicies(p.Namespace)
		old, err := api.Get(cx, p.Name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			_, err = api.Create(cx, p, metav1.CreateOptions{})
		case err == nil:
			p.ResourceVersion = old.ResourceVersion
			_, err = api.Update(cx, p, metav1.UpdateOptions{})
		}
		if err != nil {
			return fmt.Errorf("apply policy %s/%s: %w", p.Namespace, p.Name, err)
		}
	}
	return nil
}

// Policy builders, in the model's terms.

type npRule struct {
	peers []networkingv1.NetworkPolicyPeer
	ports []networkingv1.NetworkPolicyPort
}

type npPolicy struct {
	ns, name string
	pods     metav1.LabelSelector
	types    []networkingv1.PolicyType
	ingress  []npRule
	egress   []npRule
	// noIngress, noEgress: the rules list is present and empty.
}

func (p npPolicy) object() *networkingv1.NetworkPolicy {
	np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: npNS(p.ns), Name: p.name},
		Spec: networkingv1.NetworkPolicySpec{PodSelector: p.pods, PolicyTypes: p.types}}
	for _, r := range p.ingress {
		np.Spec.Ingress = append(np.Spec.Ingress, networkingv1.NetworkPolicyIngressRule{From: r.peers, Ports: r.ports})
	}
	for _, r := range p.egress {
		np.Spec.Egress = append(np.Spec.Egress, networkingv1.NetworkPolicyEgressRule{To: r.peers, Ports: r.ports})
	}
	return np
}

var (
	ingressOnly = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	egressOnly  = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
	bothWays    = []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}
)

func labels(kv ...string) metav1.LabelSelector {
	s := metav1.LabelSelector{MatchLabels: map[string]string{}}
	for i := 0; i+1 < len(kv); i += 2 {
		s.MatchLabels[kv[i]] = kv[i+1]
	}
	return s
}

func podSel(kv ...string) networkingv1.NetworkPolicyPeer {
	s := labels(kv...)
	return networkingv1.NetworkPolicyPeer{PodSelector: &s}
}

func nsSel(kv ...string) networkingv1.NetworkPolicyPeer {
	s := labels(kv...)
	return networkingv1.NetworkPolicyPeer{NamespaceSelector: &s}
}

// nsNamed selects the model namespace x by its name label.
func nsNamed(x string) networkingv1.NetworkPolicyPeer {
	return nsSel("kubernetes.io/metadata.name", npNS(x))
}

func nsExpr(op metav1.LabelSelectorOperator, xs ...string) *metav1.LabelSelector {
	var vals []string
	for _, x := range xs {
		vals = append(vals, npNS(x))
	}
	return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "kubernetes.io/metadata.name", Operator: op, Values: vals}}}
}

func both(ns, pod networkingv1.NetworkPolicyPeer) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{NamespaceSelector: ns.NamespaceSelector, PodSelector: pod.PodSelector}
}

func ports(specs ...string) []networkingv1.NetworkPolicyPort {
	var out []networkingv1.NetworkPolicyPort
	for _, s := range specs {
		proto, port, _ := strings.Cut(s, "/")
		p := corev1.Protocol(strings.ToUpper(proto))
		np := networkingv1.NetworkPolicyPort{Protocol: &p}
		if port != "" {
			first, end, ranged := strings.Cut(port, "-")
			v := intstr.Parse(first)
			np.Port = &v
			if ranged {
				e := intstr.Parse(end).IntVal
				np.EndPort = &e
			}
		}
		out = append(out, np)
	}
	return out
}

func ipBlock(cidr string, except ...string) networkingv1.NetworkPolicyPeer {
	return networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: cidr, Except: except}}
}

// npStep is one state of a case: what is done, then the matrix expected
// (denied pairs by probe).
type npStep struct {
	name   string
	do     func(cx context.Context, m *netpolModel) error
	expect map[npProbe][]string
}

func applyPolicies(ps ...npPolicy) func(context.Context, *netpolModel) error {
	return func(cx context.Context, m *netpolModel) error {
		var objs []*networkingv1.NetworkPolicy
		for _, p := range ps {
			objs = append(objs, p.object())
		}
		return m.apply(cx, objs...)
	}
}

func (m *netpolModel) ip(key string) string { return m.pods[key].Status.PodIP }

// npCases are the upstream cases (notes: T1-T42, U1-U3; SCTP ones as
// "must not be treated as TCP", this kernel has no SCTP) and the extras.
func npCases(m *netpolModel) []struct {
	name  string
	steps []npStep
} {
	a := labels("pod", "a")
	step := func(do func(context.Context, *netpolModel) error, expect map[npProbe][]string) []npStep {
		return []npStep{{do: do, expect: expect}}
	}
	xb, yb := m.ip("x/b"), m.ip("y/b")
	slash4 := netip.PrefixFrom(netip.MustParseAddr(xb), 4).Masked().String()
	return []struct {
		name  string
		steps []npStep
	}{
		{"T1 default-deny-ingress", step(applyPolicies(npPolicy{ns: "x", name: "deny", types: ingressOnly}),
			map[npProbe][]string{tcp80: {"*/*->x/*"}, udp80: {"*/*->x/*"}})},
		{"T2 default-deny-all", step(applyPolicies(npPolicy{ns: "x", name: "deny", types: bothWays}),
			map[npProbe][]string{tcp80: {"*/*->x/*", "x/*->*/*"}, udp81: {"*/*->x/*", "x/*->*/*"}})},
		{"T3 podSelector in the server's namespace", step(applyPolicies(npPolicy{ns: "x", name: "p", pods: a, ingress: []npRule{{peers: []networkingv1.NetworkPolicyPeer{podSel("pod", "b")}}}}),
			map[npProbe][]string{tcp80: {"*/*->x/a except x/b"}, udp80: {"*/*->x/a except x/b"}})},
		{"T4 ingress for a target", step(applyPolicies(npPolicy{ns: "x", name: "deny", types: ingressOnly},
			npPolicy{ns: "x", name: "p", pods: a, ingress: []npRule{{peers: []networkingv1.NetworkPolicyPeer{both(nsSel(), podSel())}}}}),
			map[npProbe][]string{tcp80: {"*/*->x/b", "*/*->x/c"}})},
		{"T5 all namespaces", step(applyPolicies(npPolicy{ns: "x", name: "p", pods: a, ingress: []npRule{{peers: []networkingv1.NetworkPolicyPeer{nsSel()}}}}),
			map[npProbe][]string{tcp80: nil})},
		{"T6 another namespace", step(applyPolicies(npPolicy{ns: "x", name: "p", pods: a, ingress: []npRule{{peers: []networkingv1.NetworkPolicyPeer{nsNamed("y")}}}}),
			map[npProbe][]string{tcp80: {"x/*->x/a", "z/*->x/a"}})},
		{"T7 podSelector matchExpressions", step(applyPolicies(npPolicy{ns: "x", name: "p", pods: a, ingress: []npRule{{peers: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{
			MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "pod", Operator: metav1.LabelSelectorOpIn, Values: []string{"b"}}}}}}}}}),
			map[npProbe][]string{tcp80: {"*/*->x/a except x/b"}})},
		{"T8 namespaceSelector matchExpressions", step(applyPolicies(npPolicy{ns: "x", name: "p", pods: a, ingress: []npRule{{peers: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: nsExpr(metav1.LabelSelectorOpIn, "y")}}}}}),
			map[npProbe][]string{tcp80: {"x/*->x/a", "z/*->x/a"}})},
		{"T9 podSelector or namespaceSelector", step(applyPolicies(npPolicy{ns: "x", name: "p", pods: a, ingress: []npRule{{peers: []networkingv1.NetworkPolicyPeer{
			{NamespaceSelector: nsExpr(metav1.LabelSelectorOpNotIn, "x")}, podSel("pod", "b")}}}}),
			map[npProbe][]string{tcp80: {"x/c->x/a"}})},
		{"T10 podSelector and namespaceSelector", step(applyPolicies(npPolicy{ns: "x", name: "p", pods: a, ingress: []npRule{{peers: []networkingv1.NetworkPolicyPeer{
			{NamespaceSelector: nsExpr(metav1.LabelSelectorOpNotIn, "x"), PodSelector: podSel("pod", "b").PodSelector}}}}}),
			map[npProbe][]string{tcp80: {"*/*->x/a except y/b,z/b"}})},
		{"T11 several podSelectors and namespaceSelectors", step(applyPolicies(npPolicy{ns: "x", name: "p", pods: a, ingress: []npRule{{peers: []networkingv1.NetworkPolicyPeer{
			{NamespaceSelector: nsExpr(metav1.LabelSelectorOpNotIn, "x"), PodSelector: &metav1.LabelSelector{
				MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "pod", Operator: metav1.LabelSelectorOpIn, Values: []string{"b", "c"}}}}}}}}}),
			map[npProbe][]string{tcp80: {"x/*->x/a", "y/a->x/a", "z/a->x/a"}})},
		{"T12 any podSelector", step(applyPolicies(npPolicy{ns: "x", name: "p", pods: a, ingress: []npRule{{peers: []networkingv1.NetworkPolicyPeer{podSel("pod", "b"), podSel("pod", "c")}}}}),
			map[npProbe][]string{tcp80: {"*/*->x/a except x/b,x/c"}})},
		{"T13 a pod of another namespace", step(applyPolicies(npPolicy{ns: "x", name: "p", pods: a, ingress: []npRule{{peers: []networkingv1.NetworkPolicyPeer{both(nsNamed("y"), podSel("pod", "a"))}}}}),
			map[npProbe][]string{tcp80: {"*/*->x/a except y/a"}})},
		{"T14 ports", step(applyPolicies(npPolicy{ns: "x", name: "p", pods: a, ingress: []npRule{{peers: []networkingv1.NetworkPolicyPeer{nsNamed("y")}, ports: ports("tcp/81")}}}),
			map[npProbe][]string{tcp81: {"x/*->x/a", "z/*->x/a"}, tcp80: {"*/*->x/a"}, udp81: {"*/*->x/a"}})},
		{"T15 stacked policies", []npStep{
			{name: "port 81", do: applyPolicies(npPolicy{ns: "x", name: "p81", pods: a, ingress: []npRule{{peers: []networkingv1.NetworkPolicyPeer{nsNamed("y")}, ports: ports("tcp/81")}}}),
				expect: map[npProbe][]string{tcp81: {"x/*->x/a", "z/*->x/a"}, tcp80: {"*/*->x/a"}}},
			{name: "and port 80", do: applyPolicies(npPolicy{ns: "x", name: "p80", pods: a, ingress: []npRule{{peers: []networkingv1.NetworkPolicyPeer{nsNamed("y")}, ports: ports("tcp/80")}}}),
				expect: map[npProbe][]string{tcp81: {"x/*->x/a", "z/*->x/a"}, tcp80: {"x/*->x/a", "z/*->x/a"}}},
		}},
		{"T16 allow-all", step(applyPolicies(npPolicy{ns: "x", name: "p", ingress: []npRule{{}}}),
			map[npProbe][]string{tcp80: nil, tcp81: nil})},
		{"T17 named port", step(applyPolicies(npPolicy{ns: "x", name: "p", ingress: []npRule{{ports: namedPorts("serve-81-tcp")}}}),
			map[npProbe][]string{tcp81: nil, tcp80: {"*/*->x/*"}})},
		{"T18 named port from a namespace", step(applyPolicies(npPolicy{ns: "x", name: "p", pods: a, ingress: []npRule{{peers: []networkingv1.NetworkPolicyPeer{nsNamed("y")}, ports: namedPorts("serve-80-tcp")}}}),
			map[npProbe][]string{tcp80: {"x/*->x/a", "z/*->x/a"}, tcp81: {"*/*->x/a"}})},
		{"T19 egress named port", step(applyPolicies(npPolicy{ns: "x", name: "p", types: egressOnly, egress: []npRule{{ports: namedPorts("serve-80-tcp")}}}),
			map[npProbe][]string{tcp80: nil, tcp81: {"x/*->*/*"}})},
		{"T20 updated policy", []npStep{
			{name: "allow all", do: applyPolicies(npPolicy{ns: "x", name: "p", ingress: []npRule{{}}}), expect: map[npProbe][]string{tcp81: nil}},
			{name: "updated to none", do: applyPolicies(npPolicy{ns: "x", name: "p", types: ingressOnly}), expect: map[npProbe][]string{tcp81: {"*/*->x/*"}}},
		}},
		{"T21 namespace relabelled", []npStep{
			{name: "before", do: applyPolicies(npPolicy{ns: "x", name: "p", pods: a, ingress: []npRule{{peers: []networkingv1.NetworkPolicyPeer{nsSel("ns2", "updated")}}}}),
				expect: map[npProbe][]string{tcp80: {"*/*->x/a"}}},
			{name: "y labelled", do: func(cx context.Context, m *netpolModel) error {
				return m.labelNamespace(cx, "y", map[string]string{"ns2": "updated"})
			},
				expect: map[npProbe][]string{tcp80: {"x/*->x/a", "z/*->x/a"}}},
		}},
		{"T22 pod relabelled", []npStep{
			{name: "before", do: applyPolicies(npPolicy{ns: "x", name: "p", pods: a, ingress: []npRule{{peers: []networkingv1.NetworkPolicyPeer{podSel("pod", "b", "pod2", "updated")}}}}),
				expect: map[npProbe][]string{tcp80: {"*/*->x/a"}}},
			{name: "x/b labelled", do: func(cx context.Context, m *netpolModel) error {
				return m.labelPod(cx, "x/b", map[string]string{"pod": "b", "pod2": "updated"})
			}, expect: map[npProbe][]string{tcp80: {"*/*->x/a except x/b"}}},
		}},
		{"T23 pods of its own namespace only", step(applyPolicies(npPolicy{ns: "x", name: "p", ingress: []npRule{{peers: []networkingv1.NetworkPolicyPeer{podSel()}}}}),
			map[npProbe][]string{tcp80: {"y/*->x/*", "z/*->x/*"}})},
		{"T24 pod relabelled into a policy", []npStep{
			{name: "before", do: applyPolicies(npPolicy{ns: "x", name: "p", pods: labels("target", "isolated"), types: ingressOnly}), expect: map[npProbe][]string{tcp80: nil}},
			{name: "x/a labelled", do: func(cx context.Context, m *netpolModel) error {
				return m.labelPod(cx, "x/a", map[string]string{"pod": "a", "target": "isolated"})
			}, expect: map[npProbe][]string{tcp80: {"*/*->x/a"}}},
		}},
		{"T25 deny egress of a pod", step(applyPolicies(npPolicy{ns: "x", name: "p", pods: a, types: egressOnly}),
			map[npProbe][]string{tcp80: {"x/a->*/*"}, udp80: {"x/a->*/*"}})},
		{"T26 deny egress of a namespace", step(applyPolicies(npPolicy{ns: "x", name: "p", types: egressOnly}),
			map[npProbe][]string{tcp80: {"x/*->*/*"}})},
		{"T27 ingress and egress together", step(applyPolicies(npPolicy{ns: "x", name: "p", pods: a, types: []networkingv1.PolicyType{networkingv1.PolicyTypeEgress, networkingv1.PolicyTypeIngress},
			ingress: []npRule{{peers: []networkingv1.NetworkPolicyPeer{podSel("pod", "b")}}}, egress: []npRule{{ports: ports("tcp/80")}}}),
			map[npProbe][]string{tcp80: {"*/*->x/a except x/b"}, tcp81: {"*/*->x/a except x/b", "x/a->*/*"}})},
		{"T28 the client's egress denies what the server allows", step(applyPolicies(
			npPolicy{ns: "x", name: "p", pods: a, types: egressOnly, egress: []npRule{{peers: []networkingv1.NetworkPolicyPeer{both(nsNamed("y"), podSel("pod", "a"))}}}},
			npPolicy{ns: "y", name: "pa", pods: a, ingress: []npRule{{peers: []networkingv1.NetworkPolicyPeer{both(nsNamed("x"), podSel("pod", "a"))}}}},
			npPolicy{ns: "y", name: "pb", pods: labels("pod", "b"), ingress: []npRule{{peers: []networkingv1.NetworkPolicyPeer{both(nsNamed("x"), podSel("pod", "a"))}}}}),
			map[npProbe][]string{tcp80: {"x/a->*/* except x/a->y/a", "*/*->y/a except x/a", "*/*->y/b"}})},
		{"T29 egress to a pod of another namespace", step(applyPolicies(npPolicy{ns: "x", name: "p", pods: a, types: egressOnly,
			egress: []npRule{{peers: []networkingv1.NetworkPolicyPeer{both(nsNamed("y"), podSel("pod", "a"))}}}}),
			map[npProbe][]string{tcp80: {"x/a->*/* except x/a->y/a"}})},
		{"T30 any port of one protocol", step(applyPolicies(npPolicy{ns: "x", name: "p", pods: a, ingress: []npRule{{ports: ports("tcp")}}}),
			map[npProbe][]string{tcp80: nil, udp80: {"*/*->x/a"}})},
		{"T31 ingress allow-all takes precedence", []npStep{
			{name: "80 only", do: applyPolicies(npPolicy{ns: "x", name: "p", ingress: []npRule{{ports: ports("tcp/80")}}}), expect: map[npProbe][]string{tcp81: {"*/*->x/*"}}},
			{name: "and all", do: applyPolicies(npPolicy{ns: "x", name: "all", ingress: []npRule{{}}}), expect: map[npProbe][]string{tcp81: nil}},
		}},
		{"T32 egress allow-all takes precedence", []npStep{
			{name: "80 only", do: applyPolicies(npPolicy{ns: "x", name: "p", types: egressOnly, egress: []npRule{{ports: ports("tcp/80")}}}), expect: map[npProbe][]string{tcp81: {"x/*->*/*"}}},
			{name: "and all", do: applyPolicies(npPolicy{ns: "x", name: "all", types: egressOnly, egress: []npRule{{}}}), expect: map[npProbe][]string{tcp81: nil}},
		}},
		{"T33 policies deleted", []npStep{
			{name: "deny all", do: applyPolicies(npPolicy{ns: "x", name: "deny", types: bothWays}), expect: map[npProbe][]string{tcp80: {"*/*->x/*", "x/*->*/*"}}},
			{name: "deleted", do: func(cx context.Context, m *netpolModel) error { return m.reset(cx) }, expect: map[npProbe][]string{tcp80: nil}},
		}},
		{"T34 egress to a pod IP as an ipBlock", step(applyPolicies(npPolicy{ns: "x", name: "p", pods: a, types: egressOnly,
			egress: []npRule{{peers: []networkingv1.NetworkPolicyPeer{ipBlock(yb + "/32")}}}}),
			map[npProbe][]string{tcp80: {"x/a->*/* except x/a->y/b"}})},
		{"T35 ipBlock except", step(applyPolicies(npPolicy{ns: "x", name: "p", pods: a, types: egressOnly,
			egress: []npRule{{peers: []networkingv1.NetworkPolicyPeer{ipBlock(slash4, xb+"/32")}}}}),
			map[npProbe][]string{tcp80: {"x/a->x/b"}})},
		{"T36 an IP in both the block and its except, updated", []npStep{
			{name: "except", do: applyPolicies(npPolicy{ns: "x", name: "p", pods: a, types: egressOnly,
				egress: []npRule{{peers: []networkingv1.NetworkPolicyPeer{ipBlock(slash4, xb+"/32")}}}}), expect: map[npProbe][]string{tcp80: {"x/a->x/b"}}},
			{name: "only it", do: applyPolicies(npPolicy{ns: "x", name: "p", pods: a, types: egressOnly,
				egress: []npRule{{peers: []networkingv1.NetworkPolicyPeer{ipBlock(xb + "/32")}}}}), expect: map[npProbe][]string{tcp80: {"x/a->*/* except x/a->x/b"}}},
		}},
		{"T37 ingress and egress controlled independently", []npStep{
			{name: "egress allowed", do: applyPolicies(npPolicy{ns: "x", name: "out", pods: a, types: egressOnly, egress: []npRule{{}}}), expect: map[npProbe][]string{tcp80: nil}},
			{name: "ingress denied", do: applyPolicies(npPolicy{ns: "x", name: "in", pods: a, types: ingressOnly}), expect: map[npProbe][]string{tcp80: {"*/*->x/a"}}},
		}},
		{"T38 SCTP is not TCP", step(applyPolicies(npPolicy{ns: "x", name: "deny", types: ingressOnly},
			npPolicy{ns: "x", name: "sctp", pods: a, ingress: []npRule{{ports: ports("sctp/81")}}}),
			map[npProbe][]string{tcp81: {"*/*->x/*"}})},
		{"T39 a pod isolated by an SCTP policy", step(applyPolicies(npPolicy{ns: "x", name: "sctp", pods: a, ingress: []npRule{{ports: ports("sctp/80")}}}),
			map[npProbe][]string{tcp81: {"*/*->x/a"}})},
		{"T40 UDP is not TCP", step(applyPolicies(npPolicy{ns: "x", name: "udp", pods: a, ingress: []npRule{{ports: ports("udp/81")}}}),
			map[npProbe][]string{tcp81: {"*/*->x/a"}, udp81: nil})},
		{"T41 namespace by its name label", step(applyPolicies(npPolicy{ns: "x", name: "p", pods: a, ingress: []npRule{{peers: []networkingv1.NetworkPolicyPeer{nsNamed("y")}}}}),
			map[npProbe][]string{tcp80: {"x/*->x/a", "z/*->x/a"}})},
		{"T42 egress by namespace name NotIn", step(applyPolicies(npPolicy{ns: "x", name: "p", pods: a, types: egressOnly,
			egress: []npRule{{peers: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: nsExpr(metav1.LabelSelectorOpNotIn, "y")}}}}}),
			map[npProbe][]string{tcp80: {"x/a->y/*"}})},
		{"U2 UDP ports", step(applyPolicies(npPolicy{ns: "x", name: "p", pods: a, ingress: []npRule{{peers: []networkingv1.NetworkPolicyPeer{nsNamed("y")}, ports: ports("udp/81")}}}),
			map[npProbe][]string{udp81: {"x/*->x/a", "z/*->x/a"}, udp80: {"*/*->x/a"}})},
		{"U3 UDP from a pod of another namespace", step(applyPolicies(npPolicy{ns: "x", name: "p", pods: a, ingress: []npRule{{peers: []networkingv1.NetworkPolicyPeer{both(nsNamed("y"), podSel("pod", "a"))}}}}),
			map[npProbe][]string{udp80: {"*/*->x/a except y/a"}})},
		{"endPort", step(applyPolicies(npPolicy{ns: "x", name: "p", pods: a, ingress: []npRule{{peers: []networkingv1.NetworkPolicyPeer{nsNamed("y")}, ports: ports("tcp/80-81")}}}),
			map[npProbe][]string{tcp80: {"x/*->x/a", "z/*->x/a"}, tcp81: {"x/*->x/a", "z/*->x/a"}, tcp82: {"*/*->x/a"}})},
		{"except and a rule for every peer (a union)", step(applyPolicies(npPolicy{ns: "x", name: "p", pods: a, types: egressOnly,
			egress: []npRule{{peers: []networkingv1.NetworkPolicyPeer{ipBlock("0.0.0.0/0", xb+"/32")}}, {ports: ports("tcp/80")}}}),
			map[npProbe][]string{tcp80: nil, tcp81: {"x/a->x/b"}})},
		{"named port resolved on each destination", step(applyPolicies(npPolicy{ns: "x", name: "p", pods: a, types: egressOnly, egress: []npRule{{ports: namedPorts("http")}}}),
			map[npProbe][]string{tcp80: {"x/a->*/* except x/a->*/b"}, tcp81: {"x/a->*/* except x/a->*/c"}, tcp82: {"x/a->*/* except x/a->*/a"}})},
	}
}

func namedPorts(names ...string) []networkingv1.NetworkPolicyPort {
	var out []networkingv1.NetworkPolicyPort
	for _, n := range names {
		v := intstr.FromString(n)
		out = append(out, networkingv1.NetworkPolicyPort{Port: &v})
	}
	return out
}

// TestNetworkPolicyUpstreamCases: every upstream NetworkPolicy e2e case
// this kernel can run, and the extras the notes add (endPort, an except
// with another rule's port, a named port resolved per destination), on the
// whole 3x3 matrix over both nodes, TCP and UDP, to each pod's IP and
// through its ClusterIP. Policies are updated and removed, pods and
// namespaces relabelled on the way.
func TestNetworkPolicyUpstreamCases(t *testing.T) {
	m := netpol(t)
	if m.c.Opts.KubeProxy == "none" {
		t.Skip("the ClusterIP half needs kube-proxy or podvnet's Services")
	}
	for _, tc := range npCases(m) {
		t.Run(tc.name, func(t *testing.T) {
			cx := ctx(t, 5*time.Minute)
			defer func() {
				if err := m.reset(cx); err != nil {
					t.Fatal(err)
				}
			}()
			for _, s := range tc.steps {
				if err := s.do(cx, m); err != nil {
					t.Fatalf("%s: %v", s.name, err)
				}
				if err := m.await(cx, s.expect); err != nil {
					t.Fatalf("%s: %v", s.name, err)
				}
			}
		})
	}
}

// TestNetworkPolicyPodStartsUnderDenyAll: a pod whose first act is to send,
// started under a policy that denies its egress, gets no packet out: the
// receiver (a VM) counts none, and the agent counts the drops, per pod.
// Without the policy the same pod's datagrams arrive (the control).
func TestNetworkPolicyPodStartsUnderDenyAll(t *testing.T) {
	m := netpol(t)
	c := m.c
	cx := ctx(t, 5*time.Minute)
	h, err := c.VNet.AddHost("np-sink", vnet.HostOptions{Addr: netip.MustParsePrefix("10.240.200.21/16")})
	if err != nil {
		t.Fatal(err)
	}
	var sink *probe.Sink
	if err := h.Do(func() (err error) { sink, err = probe.ListenSink(9999); return err }); err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	node := c.Nodes[0]
	sender := func(name string) *corev1.Pod {
		p := cluster.ProbePod(npNS("x"), name, node.Name, map[string]string{"pod": "sender"})
		p.Spec.RestartPolicy = corev1.RestartPolicyNever
		ctr := &p.Spec.Containers[0]
		ctr.Args = []string{"send", "--addr", probe.HostPort(h.IP, 9999), "--count", "1500", "--interval", "10ms"}
		ctr.ReadinessProbe = nil
		return p
	}
	if err := m.apply(cx, npPolicy{ns: "x", name: "deny-sender", pods: labels("pod", "sender"), types: egressOnly}.object()); err != nil {
		t.Fatal(err)
	}
	dropsBefore, _ := node.Metric("podvnet_datapath_packets_total", `reason="drop_policy_egress"`)
	run := func(name string) string {
		t.Helper()
		if _, err := c.Client.CoreV1().Pods(npNS("x")).Create(cx, sender(name), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			c.Client.CoreV1().Pods(npNS("x")).Delete(context.Background(), name, metav1.DeleteOptions{})
		})
		var p *corev1.Pod
		if err := eventually(2*time.Minute, func() bool {
			p, err = c.Client.CoreV1().Pods(npNS("x")).Get(cx, name, metav1.GetOptions{})
			return err == nil && p.Status.PodIP != "" && p.Status.Phase == corev1.PodRunning
		}); err != nil {
			t.Fatalf("pod %s not running: %v", name, err)
		}
		return p.Status.PodIP
	}
	ip := run("sender")
	// While it runs, the agent counts its drops under its name.
	if err := eventually(time.Minute, func() bool {
		v, err := node.Metric("podvnet_policy_drops_total", `pod="sender"`, `namespace="`+npNS("x")+`"`, `direction="egress"`)
		return err == nil && v >= 100
	}); err != nil {
		t.Errorf("podvnet_policy_drops_total of the sender: %v", err)
	}
	if n := sink.Count(ip); n != 0 {
		t.Errorf("%d datagrams of a pod started under deny-all egress reached the VM", n)
	}
	if after, err := node.Metric("podvnet_datapath_packets_total", `reason="drop_policy_egress"`); err != nil || after-dropsBefore < 100 {
		t.Errorf("drop_policy_egress counted %v (%v), want the sender's datagrams", after-dropsBefore, err)
	}

	// The control: without the policy, a sender's datagrams arrive.
	if err := m.reset(cx); err != nil {
		t.Fatal(err)
	}
	ip = run("sender-control")
	if err := eventually(time.Minute, func() bool { return sink.Count(ip) > 0 }); err != nil {
		t.Errorf("the control sender's datagrams never arrived: the test cannot see a pass")
	}
}

// TestNetworkPolicyNodeReachesItsPods: under deny-all ingress, a pod's own
// node still reaches it (kubelet's probes); another node is an address
// like any, reached only through an ipBlock.
func TestNetworkPolicyNodeReachesItsPods(t *testing.T) {
	m := netpol(t)
	c := m.c
	cx := ctx(t, 3*time.Minute)
	target := m.pods["x/a"]
	var own, other *cluster.Node
	for _, n := range c.Nodes {
		if n.Name == target.Spec.NodeName {
			own = n
		} else {
			other = n
		}
	}
	connect := func(n *cluster.Node) probe.Result {
		var r probe.Result
		n.NS.Do(func() error {
			r = probe.Connect(cx, probe.Target{Proto: probe.TCP, Addr: probe.HostPort(netip.MustParseAddr(target.Status.PodIP), 80), TimeoutMS: 1000})
			return nil
		})
		return r
	}
	if err := m.apply(cx, npPolicy{ns: "x", name: "deny", types: ingressOnly}.object()); err != nil {
		t.Fatal(err)
	}
	if err := m.await(cx, map[npProbe][]string{tcp80: {"*/*->x/*"}}); err != nil {
		t.Fatal(err)
	}
	if r := connect(own); !r.OK {
		t.Errorf("%s -> its own pod x/a under deny-all ingress: %s", own.Name, r)
	}
	if r := connect(other); r.OK {
		t.Errorf("%s -> x/a on %s under deny-all ingress: %s; want refused", other.Name, own.Name, r)
	}
	nodeIP := other.Pool.Primary.String()
	if err := m.apply(cx, npPolicy{ns: "x", name: "from-node", ingress: []npRule{{peers: []networkingv1.NetworkPolicyPeer{ipBlock(nodeIP + "/32")}}}}.object()); err != nil {
		t.Fatal(err)
	}
	if err := eventually(30*time.Second, func() bool { return connect(other).OK }); err != nil {
		t.Errorf("%s -> x/a with an ipBlock of %s: %s", other.Name, nodeIP, connect(other))
	}
}

// TestNetworkPolicyEgressToDNSOnly: pods allowed egress to the DNS pods only
// reach the DNS Service's ClusterIP (translated by kube-proxy, judged after)
// over UDP and TCP, and nothing else; other namespaces are untouched.
func TestNetworkPolicyEgressToDNSOnly(t *testing.T) {
	m := netpol(t)
	c := m.c
	cx := ctx(t, 5*time.Minute)
	dnsNS := npNS("dns")
	if _, err := c.Client.CoreV1().Namespaces().Create(cx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: dnsNS}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	dns := cluster.ProbePod(dnsNS, "dns", c.Nodes[1].Name, map[string]string{"k8s-app": "kube-dns"})
	dns.Spec.Containers[0].Args = []string{"serve", "--tcp", "53,80", "--udp", "53", "--sctp", ""}
	if _, err := c.Client.CoreV1().Pods(dnsNS).Create(cx, dns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	svc, err := c.Client.CoreV1().Services(dnsNS).Create(cx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "dns", Namespace: dnsNS},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"k8s-app": "kube-dns"}, Ports: []corev1.ServicePort{
			{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53, TargetPort: intstr.FromInt32(53)},
			{Name: "dns-tcp", Protocol: corev1.ProtocolTCP, Port: 53, TargetPort: intstr.FromInt32(53)}}}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	if svc == nil || svc.Spec.ClusterIP == "" {
		if svc, err = c.Client.CoreV1().Services(dnsNS).Get(cx, "dns", metav1.GetOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.WaitPodsReady(cx, dnsNS, "k8s-app=kube-dns", 1, 3*time.Minute); err != nil {
		t.Fatal(err)
	}
	dnsIP := netip.MustParseAddr(svc.Spec.ClusterIP)
	clients := []string{"x/a", "x/b", "x/c", "y/a"}
	// failures asks the DNS Service over UDP and TCP from each client.
	failures := func() []string {
		var failed []string
		for _, from := range clients {
			results, err := m.clients[from].Connect(cx,
				probe.Target{Proto: probe.UDP, Addr: probe.HostPort(dnsIP, 53), TimeoutMS: 2000},
				probe.Target{Proto: probe.TCP, Addr: probe.HostPort(dnsIP, 53), TimeoutMS: 2000})
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range results {
				if !r.OK || r.Reply != "dns" {
					failed = append(failed, fmt.Sprintf("%s -> DNS Service %s: %s", from, r.Addr, r))
				}
			}
		}
		return failed
	}
	// The pod's readiness reaches each node's kube-proxy on its own time; a
	// node that has not synced yet rejects the ClusterIP (no endpoints).
	// Before the policy, every client must reach the Service.
	var failed, first []string
	ready, tries := time.Now(), 0
	if err := eventually(time.Minute, func() bool {
		if failed = failures(); tries == 0 {
			first = failed
		}
		tries++
		return len(failed) == 0
	}); err != nil {
		t.Fatalf("the DNS Service, before any policy: %v\n  %s", err, strings.Join(failed, "\n  "))
	}
	if len(first) > 0 {
		t.Logf("the DNS Service answered every client %s after its pod was ready (round %d of asking; the first had %d failures, e.g. %s)",
			time.Since(ready).Round(time.Millisecond), tries, len(first), first[0])
	}
	if err := m.apply(cx, npPolicy{ns: "x", name: "dns-only", types: egressOnly, egress: []npRule{{
		peers: []networkingv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": dnsNS}},
			PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"k8s-app": "kube-dns"}}}},
		ports: ports("udp/53", "tcp/53")}}}.object()); err != nil {
		t.Fatal(err)
	}
	if err := m.await(cx, map[npProbe][]string{tcp80: {"x/*->*/*"}, udp80: {"x/*->*/*"}}); err != nil {
		t.Fatal(err)
	}
	for _, f := range failures() {
		t.Errorf("under a DNS-only egress policy: %s", f)
	}
	// The DNS pod on another port is not DNS.
	results, err := m.clients["x/a"].Connect(cx, probe.Target{Proto: probe.TCP, Addr: probe.HostPort(netip.MustParseAddr(dnsPodIP(t, c, dnsNS)), 80), TimeoutMS: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if results[0].OK {
		t.Errorf("x/a -> the DNS pod on 80 under a DNS-only egress policy: %s", results[0])
	}
}

func dnsPodIP(t *testing.T, c *cluster.Cluster, ns string) string {
	t.Helper()
	p, err := c.Client.CoreV1().Pods(ns).Get(ctx(t, time.Minute), "dns", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return p.Status.PodIP
}

// policyRow and policyDirRow are what the test reads of `debug policy -o
// json`.
type policyRow struct {
	IP           string       `json:"ip"`
	PodNamespace string       `json:"pod_namespace"`
	PodName      string       `json:"pod_name"`
	Ingress      policyDirRow `json:"ingress"`
	Egress       policyDirRow `json:"egress"`
}

type policyDirRow struct {
	State  string `json:"state"`
	Flows  uint64 `json:"flows"`
	Denied uint64 `json:"denied_packets"`
	Rules  []struct {
		Peer   string   `json:"peer"`
		Labels string   `json:"labels"`
		IPs    []string `json:"ips"`
		Ports  []string `json:"ports"`
		Flows  uint64   `json:"flows"`
	} `json:"rules"`
}

// TestNetworkPolicyObservability: a policy drop is shown by `debug
// monitor` (pod, peer, port, direction, reason), counted per pod and
// direction in the metrics, and `debug policy` shows the rules in force as
// the maps hold them with the flows each allowed.
func TestNetworkPolicyObservability(t *testing.T) {
	m := netpol(t)
	c := m.c
	cx := ctx(t, 3*time.Minute)
	target, peer := m.pods["x/a"], m.pods["y/b"]
	node := c.Node(target.Spec.NodeName)
	if err := m.apply(cx, npPolicy{ns: "x", name: "p", pods: labels("pod", "a"), ingress: []npRule{{
		peers: []networkingv1.NetworkPolicyPeer{nsNamed("z")}, ports: ports("tcp/81")}}}.object()); err != nil {
		t.Fatal(err)
	}
	if err := m.await(cx, map[npProbe][]string{tcp80: {"*/*->x/a"}, tcp81: {"x/*->x/a", "y/*->x/a"}}); err != nil {
		t.Fatal(err)
	}
	monitor := make(chan string, 1)
	go func() {
		out, err := c.AgentDebug(cx, node.Name, "monitor", "--count", "1", "--timeout", "30s", "-o", "json",
			"--ip", target.Status.PodIP, "--reason", "drop_policy_ingress")
		if err != nil {
			out = err.Error()
		}
		monitor <- out
	}()
	deny := probe.Target{Proto: probe.TCP, Addr: probe.HostPort(netip.MustParseAddr(target.Status.PodIP), 80), TimeoutMS: 500}
	var event string
	for deadline := time.Now().Add(30 * time.Second); event == "" && time.Now().Before(deadline); {
		if _, err := m.clients["y/b"].Connect(cx, deny); err != nil {
			t.Fatal(err)
		}
		select {
		case event = <-monitor:
		default:
		}
	}
	for _, want := range []string{`"reason":"drop_policy_ingress"`, `"src":"` + peer.Status.PodIP + `"`, `"dst":"` + target.Status.PodIP + `"`,
		`"dport":80`, `"direction":"ingress"`, `"dst_pod":"` + npNS("x") + `/a"`} {
		if !strings.Contains(event, want) {
			t.Errorf("monitor event %s: want %s", event, want)
		}
	}
	if v, err := node.Metric("podvnet_policy_drops_total", `namespace="`+npNS("x")+`"`, `pod="a"`, `direction="ingress"`); err != nil || v < 1 {
		t.Errorf("podvnet_policy_drops_total of x/a: %v %v", v, err)
	}

	// One allowed flow from z: its rule shows it.
	allow := probe.Target{Proto: probe.TCP, Addr: probe.HostPort(netip.MustParseAddr(target.Status.PodIP), 81), TimeoutMS: 2000}
	if res, err := m.clients["z/c"].Connect(cx, allow); err != nil || !res[0].OK {
		t.Fatalf("z/c -> x/a:81: %v %v", res, err)
	}
	out, err := c.AgentDebug(cx, node.Name, "policy", npNS("x")+"/a", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var rows []policyRow
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("debug policy -o json: %v\n%s", err, out)
	}
	if len(rows) != 1 || rows[0].IP != target.Status.PodIP || rows[0].PodName != "a" {
		t.Fatalf("debug policy %s/a: %+v", npNS("x"), rows)
	}
	in := rows[0].Ingress
	if in.State != "isolated" || rows[0].Egress.State != "open" || in.Denied < 1 || in.Flows < 1 {
		t.Errorf("debug policy: ingress %+v, egress %+v", in, rows[0].Egress)
	}
	var zRules int
	for _, r := range in.Rules {
		if strings.Contains(r.Labels, npNS("z")) {
			zRules++
			if !slices.Equal(r.Ports, []string{"tcp/81"}) || len(r.IPs) != 1 {
				t.Errorf("rule for a pod of z: %+v; want tcp/81 and the pod's IP", r)
			}
			if strings.Contains(r.Labels, "pod=c") && r.Flows < 1 {
				t.Errorf("z/c's rule allowed %d flows, want at least the probe's", r.Flows)
			}
		}
	}
	if zRules != 3 {
		t.Errorf("debug policy shows %d rules for z's pods, want 3 (one identity each): %+v", zRules, in.Rules)
	}
}
