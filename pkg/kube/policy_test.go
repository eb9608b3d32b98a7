package kube

import (
	"context"
	"net/netip"
	"reflect"
	"runtime"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"

	"github.com/podvnet/podvnet/pkg/policy"
)

// TestPolicyOf: a NetworkPolicy becomes the engine's Policy with the API's
// defaults (policyTypes, TCP), named and numbered ports, endPort, both
// selectors in one peer, ipBlocks (an IPv6 one matches no address).
func TestPolicyOf(t *testing.T) {
	udp, sctp := corev1.ProtocolUDP, corev1.ProtocolSCTP
	named, num := intstr.FromString("http"), intstr.FromInt32(8000)
	end := int32(8010)
	np := &networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"},
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Ingress: []networkingv1.NetworkPolicyIngressRule{{
				From: []networkingv1.NetworkPolicyPeer{{
					NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
						{Key: "team", Operator: metav1.LabelSelectorOpIn, Values: []string{"a", "b"}}}},
					PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"role": "client"}},
				}, {IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/8", Except: []string{"10.1.0.0/16"}}},
					{IPBlock: &networkingv1.IPBlock{CIDR: "fd00::/8"}}},
				Ports: []networkingv1.NetworkPolicyPort{{Port: &named}, {Protocol: &udp, Port: &num, EndPort: &end}, {Protocol: &sctp}},
			}},
			Egress: []networkingv1.NetworkPolicyEgressRule{{}},
		}}
	none := netip.MustParsePrefix("0.0.0.0/32")
	want := policy.Policy{Namespace: "shop", Name: "web", PodSelector: policy.Selector{MatchLabels: map[string]string{"app": "web"}},
		IngressIsolation: true, EgressIsolation: true, // no policyTypes, egress rules: both
		Ingress: []policy.Rule{{
			Peers: []policy.Peer{{
				Namespaces: &policy.Selector{MatchExpressions: []policy.Requirement{{Key: "team", Operator: "In", Values: []string{"a", "b"}}}},
				Pods:       &policy.Selector{MatchLabels: map[string]string{"role": "client"}},
			}, {IPBlock: &policy.IPBlock{CIDR: netip.MustParsePrefix("10.0.0.0/8"), Except: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}}},
				{IPBlock: &policy.IPBlock{CIDR: none, Except: []netip.Prefix{none}}}},
			Ports: []policy.Port{{Protocol: policy.TCP, Name: "http"}, {Protocol: policy.UDP, Port: 8000, EndPort: 8010}, {Protocol: policy.SCTP}},
		}},
		Egress: []policy.Rule{{}},
	}
	if got := policyOf(np); !reflect.DeepEqual(got, want) {
		t.Errorf("policyOf:\n got %+v\nwant %+v", got, want)
	}
	np.Spec.Egress = nil
	if got := policyOf(np); !got.IngressIsolation || got.EgressIsolation {
		t.Errorf("no policyTypes, no egress rules: ingress %v egress %v, want ingress only", got.IngressIsolation, got.EgressIsolation)
	}
	np.Spec.PolicyTypes = []networkingv1.PolicyType{networkingv1.PolicyTypeEgress}
	if got := policyOf(np); got.IngressIsolation || !got.EgressIsolation {
		t.Errorf("policyTypes [Egress]: ingress %v egress %v", got.IngressIsolation, got.EgressIsolation)
	}
}

// TestPolicySnapshot: listeners get the whole cluster once the informers
// have listed (pods of every node, finished ones left out, with their named
// ports; namespaces; policies), and again after a change; GetPod answers
// for a pod the informer has not shown.
func TestPolicySnapshot(t *testing.T) {
	withPorts := func(p *corev1.Pod) {
		p.Spec.Containers[0].Ports = append(p.Spec.Containers[0].Ports, corev1.ContainerPort{Name: "dns", ContainerPort: 53, Protocol: corev1.ProtocolUDP})
	}
	cs := fake.NewClientset(node(),
		pod("a", "10.240.0.5", withPorts), pod("b", "10.240.1.7", onNode("node2")),
		pod("host", "10.240.0.4", hostNetwork()), pod("done", "10.240.0.9", phase(corev1.PodSucceeded)),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "default", Labels: map[string]string{"kubernetes.io/metadata.name": "default"}}},
		&networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "deny"},
			Spec: networkingv1.NetworkPolicySpec{PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}}})
	c := start(t, cs, Config{})
	snapshots := make(chan policy.Snapshot, 10)
	c.OnPolicySnapshot(func(s policy.Snapshot) { snapshots <- s })
	run(t, c)
	s := <-snapshots
	pods := map[string]policy.Pod{}
	for _, p := range s.Pods {
		pods[p.Name] = p
	}
	if len(pods) != 3 || pods["done"].Name != "" {
		t.Errorf("pods %v: want a, b and host (a finished pod holds no address)", s.Pods)
	}
	if a := pods["a"]; a.IP != netip.MustParseAddr("10.240.0.5") || a.Labels["app"] != "web" ||
		a.Ports["http"] != (policy.NamedPort{Port: 8080, Protocol: policy.TCP}) || a.Ports["dns"] != (policy.NamedPort{Port: 53, Protocol: policy.UDP}) {
		t.Errorf("pod a: %+v", a)
	}
	if !pods["host"].HostNetwork || pods["b"].IP != netip.MustParseAddr("10.240.1.7") {
		t.Errorf("pods host %+v, b %+v", pods["host"], pods["b"])
	}
	if len(s.Namespaces) != 1 || len(s.Policies) != 1 || !s.Policies[0].IngressIsolation {
		t.Errorf("namespaces %+v, policies %+v", s.Namespaces, s.Policies)
	}

	ns, err := cs.CoreV1().Namespaces().Get(context.Background(), "default", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ns.Labels["team"] = "shop"
	if _, err := cs.CoreV1().Namespaces().Update(context.Background(), ns, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a snapshot with the namespace relabelled", func() bool {
		select {
		case s = <-snapshots:
			return len(s.Namespaces) == 1 && s.Namespaces[0].Labels["team"] == "shop"
		default:
			return false
		}
	})

	a, err := cs.CoreV1().Pods("default").Get(context.Background(), "a", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	a.Labels = map[string]string{"app": "api"}
	if _, err := cs.CoreV1().Pods("default").Update(context.Background(), a, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a snapshot with pod a relabelled", func() bool {
		select {
		case s = <-snapshots:
			return slices.ContainsFunc(s.Pods, func(p policy.Pod) bool { return p.Name == "a" && p.Labels["app"] == "api" })
		default:
			return false
		}
	})

	if _, err := cs.CoreV1().Pods("default").Create(context.Background(), pod("new", ""), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	got, err := c.GetPod(context.Background(), "default", "new")
	if err != nil || got.Name != "new" || got.UID != "uid-new" || got.Labels["app"] != "web" || got.IP.IsValid() {
		t.Errorf("GetPod: %+v %v", got, err)
	}
	if _, err := c.GetPod(context.Background(), "default", "absent"); err == nil {
		t.Error("GetPod of an absent pod succeeded")
	}
}

// TestPolicyPodTransform: the cluster-wide store holds a pod as the
// engine reads it, under the pod's key and resource version; pods with the
// same labels and named ports share one copy of them, others do not.
func TestPolicyPodTransform(t *testing.T) {
	transform := policyPodTransform()
	store := func(p *corev1.Pod) *policyPodObject {
		t.Helper()
		out, err := transform(p)
		if err != nil {
			t.Fatal(err)
		}
		return out.(*policyPodObject)
	}
	a := pod("a", "10.240.0.5", func(p *corev1.Pod) { p.ResourceVersion = "7" })
	oa := store(a)
	want := policy.Pod{Namespace: "default", Name: "a", UID: "uid-a", IP: netip.MustParseAddr("10.240.0.5"),
		Labels: map[string]string{"app": "web"}, Ports: map[string]policy.NamedPort{"http": {Port: 8080, Protocol: policy.TCP}}}
	if !reflect.DeepEqual(oa.pod, want) || oa.finished {
		t.Errorf("stored %+v (finished %v), want %+v", oa.pod, oa.finished, want)
	}
	if key, err := cache.MetaNamespaceKeyFunc(oa); key != "default/a" || err != nil {
		t.Errorf("key %q %v, want default/a", key, err)
	}
	if m, err := meta.Accessor(oa); err != nil || m.GetResourceVersion() != "7" {
		t.Errorf("resource version: %v %v, want 7", m, err)
	}

	ob := store(pod("b", "10.240.0.6", onNode("node2")))
	if ob.traits != oa.traits || reflect.ValueOf(ob.pod.Labels).UnsafePointer() != reflect.ValueOf(oa.pod.Labels).UnsafePointer() {
		t.Error("pods with the same labels and ports hold copies of their own")
	}
	oc := store(pod("c", "10.240.0.7", func(p *corev1.Pod) { p.Labels = map[string]string{"app": "web", "tier": "x"} }))
	od := store(pod("d", "10.240.0.8", func(p *corev1.Pod) { p.Spec.Containers[0].Ports[0].ContainerPort = 8081 }))
	if oc.traits == oa.traits || od.traits == oa.traits || oc.pod.Labels["tier"] != "x" || od.pod.Ports["http"].Port != 8081 {
		t.Errorf("pods with other labels or ports share a's: c %+v, d %+v", oc.pod, od.pod)
	}
	if done := store(pod("e", "10.240.0.9", phase(corev1.PodFailed))); !done.finished {
		t.Error("a failed pod is not finished")
	}
	if tomb, _ := transform("not a pod"); tomb != "not a pod" {
		t.Error("a tombstone must pass unchanged")
	}
}

// TestInternerForgets: an interned value no one holds any more is
// collected and its entry removed, so the table does not grow with every
// label set the cluster ever had.
func TestInternerForgets(t *testing.T) {
	var in interner[string]
	v := in.get("k", func() string { return "value" })
	if w := in.get("k", func() string { return "other" }); w != v {
		t.Fatal("the same key gave two copies")
	}
	runtime.KeepAlive(v)
	v = nil
	waitFor(t, "the entry of a collected value removed", func() bool {
		runtime.GC()
		return in.size() == 0
	})
	if w := in.get("k", func() string { return "new" }); *w != "new" {
		t.Errorf("after the collection: %q, want a new value", *w)
	}
}
