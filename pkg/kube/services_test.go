package kube

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/podvnet/podvnet/pkg/services"
)

func service(name string, mods ...func(*corev1.Service)) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Annotations: map[string]string{"big": "x"}},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: "10.0.0.50", ClusterIPs: []string{"10.0.0.50"},
			Selector: map[string]string{"app": name},
			Ports: []corev1.ServicePort{
				{Name: "http", Protocol: corev1.ProtocolTCP, Port: 80, TargetPort: intstr.FromString("http")},
				{Name: "dns", Protocol: corev1.ProtocolUDP, Port: 53, TargetPort: intstr.FromInt32(5353)},
			}},
	}
	for _, m := range mods {
		m(s)
	}
	return s
}

func endpointSlice(name, svc string, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	port, dns := int32(8080), int32(5353)
	http, dnsName := "http", "dns"
	udp := corev1.ProtocolUDP
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Labels: map[string]string{discoveryv1.LabelServiceName: svc},
			Annotations: map[string]string{corev1.EndpointsLastChangeTriggerTime: "2026-01-02T03:04:05Z"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: &http, Port: &port}, {Name: &dnsName, Port: &dns, Protocol: &udp}},
		Endpoints:   eps,
	}
}

func endpoint(ip, node string, ready, terminating *bool) discoveryv1.Endpoint {
	return discoveryv1.Endpoint{Addresses: []string{ip}, NodeName: &node,
		Conditions: discoveryv1.EndpointConditions{Ready: ready, Serving: ready, Terminating: terminating}}
}

// TestServicesWatch: each Service reaches the handler with its slices, as
// the data path reads them (conditions absent read as the API defines,
// named target ports left to the slices, the trigger time); the first list
// ends with Synced; a changed slice brings its Service again; a deleted
// Service comes as nil; the nodes' addresses follow the Nodes.
func TestServicesWatch(t *testing.T) {
	yes, no := true, false
	cs := fake.NewClientset(node(),
		service("web", func(s *corev1.Service) {
			s.Spec.Type = corev1.ServiceTypeLoadBalancer
			s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
			s.Spec.HealthCheckNodePort = 32000
			s.Spec.Ports[0].NodePort = 30080
			s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
			s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "20.1.2.3"}}
		}),
		service("external", func(s *corev1.Service) { s.Spec.Type = corev1.ServiceTypeExternalName; s.Spec.ClusterIP = "" }),
		endpointSlice("web-a", "web", endpoint("10.240.0.5", nodeName, nil, nil), endpoint("10.240.0.6", "node2", &no, &yes)),
	)
	n := node()
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.240.0.4"}, {Type: corev1.NodeHostName, Address: "node1"}}
	if _, err := cs.CoreV1().Nodes().UpdateStatus(context.Background(), n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	c := start(t, cs, Config{})
	var (
		mu      sync.Mutex
		applied = map[services.Key][]*services.Service{}
		slices  = map[services.Key][]*services.EndpointSlice{}
		changed time.Time
		synced  bool
		nodeIPs []netip.Addr
	)
	c.WatchServices(ServicesHandler{
		Apply: func(k services.Key, s *services.Service, eps []*services.EndpointSlice, ch time.Time) error {
			mu.Lock()
			defer mu.Unlock()
			applied[k] = append(applied[k], s)
			slices[k] = eps
			if !ch.IsZero() {
				changed = ch
			}
			return nil
		},
		Synced:  func() { mu.Lock(); synced = true; mu.Unlock() },
		NodeIPs: func(ips []netip.Addr) error { mu.Lock(); nodeIPs = ips; mu.Unlock(); return nil },
	})
	run(t, c)
	web := services.Key{Namespace: "default", Name: "web"}
	waitFor(t, "the first sync", func() bool { mu.Lock(); defer mu.Unlock(); return synced && len(nodeIPs) == 1 })

	mu.Lock()
	s := applied[web][len(applied[web])-1]
	if s == nil || len(s.ClusterIPs) != 1 || s.ClusterIPs[0] != netip.MustParseAddr("10.0.0.50") || len(s.LoadBalancerIPs) != 1 ||
		!s.ExternalLocal || s.HealthCheckNodePort != 32000 || s.AffinityTimeout != 10800 {
		t.Errorf("web as the data path reads it: %+v", s)
	}
	if p := s.Ports[0]; p.Proto != services.TCP || p.NodePort != 30080 || p.TargetPortName != "http" || p.TargetPort != 0 {
		t.Errorf("port %+v: want tcp, NodePort 30080, the named target port", p)
	}
	if p := s.Ports[1]; p.Proto != services.UDP || p.TargetPort != 5353 {
		t.Errorf("port %+v: want udp to 5353", p)
	}
	if eps := slices[web]; len(eps) != 1 || len(eps[0].Endpoints) != 2 || !eps[0].Endpoints[0].Ready || !eps[0].Endpoints[0].Serving ||
		eps[0].Endpoints[0].Terminating || eps[0].Endpoints[0].Node != nodeName || eps[0].Endpoints[1].Ready || !eps[0].Endpoints[1].Terminating ||
		eps[0].Ports[1].Proto != services.UDP || eps[0].Ports[0].Port != 8080 {
		t.Errorf("web's slices as the data path reads them: %+v", eps)
	}
	if ext := applied[services.Key{Namespace: "default", Name: "external"}]; len(ext) == 0 || ext[len(ext)-1] != nil {
		t.Errorf("an ExternalName Service is none for the data path: %v", ext)
	}
	if !changed.Equal(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)) {
		t.Errorf("trigger time %s", changed)
	}
	if nodeIPs[0] != netip.MustParseAddr("10.240.0.4") {
		t.Errorf("node IPs %v", nodeIPs)
	}
	before := len(applied[web])
	mu.Unlock()

	ctx := context.Background()
	sl := endpointSlice("web-a", "web", endpoint("10.240.0.7", "node2", &yes, &no))
	if _, err := cs.DiscoveryV1().EndpointSlices("default").Update(ctx, sl, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the changed slice", func() bool {
		mu.Lock()
		defer mu.Unlock()
		eps := slices[web]
		return len(applied[web]) > before && len(eps) == 1 && len(eps[0].Endpoints) == 1 && eps[0].Endpoints[0].Addrs[0] == netip.MustParseAddr("10.240.0.7")
	})
	if err := cs.CoreV1().Services("default").Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the deleted Service", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return applied[web][len(applied[web])-1] == nil
	})
}

// TestPodHostPorts: a container port with a hostPort stays through the
// transform and shows in the view, unnamed as it may be: portmap NATs it.
func TestPodHostPorts(t *testing.T) {
	p := pod("a", "10.240.0.5")
	p.Spec.Containers[0].Ports = append(p.Spec.Containers[0].Ports, corev1.ContainerPort{ContainerPort: 5353, HostPort: 53, Protocol: corev1.ProtocolUDP})
	out, err := trimPod(p)
	if err != nil {
		t.Fatal(err)
	}
	v := podOf(out.(*corev1.Pod))
	if len(v.HostPorts) != 1 || v.HostPorts[0] != (Port{Port: 5353, Protocol: "UDP"}) || len(v.Ports) != 1 {
		t.Errorf("host ports %v, named ports %v; want 5353/UDP and http", v.HostPorts, v.Ports)
	}
}
