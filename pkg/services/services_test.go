package services

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/podvnet/podvnet/pkg/maps"
)

const thisNode = "node1"

var (
	cip  = netip.MustParseAddr("10.0.0.50")
	lbIP = netip.MustParseAddr("20.1.2.3")
	any4 = netip.IPv4Unspecified()
)

func web(mods ...func(*Service)) *Service {
	s := &Service{Key: Key{"default", "web"}, ClusterIPs: []netip.Addr{cip},
		Ports: []Port{{Name: "http", Proto: TCP, Port: 80, TargetPortName: "http"}}}
	for _, m := range mods {
		m(s)
	}
	return s
}

// ep is an endpoint: "10.240.0.5 node1 ready", "... serving terminating".
func ep(spec string) Endpoint {
	f := strings.Fields(spec)
	e := Endpoint{Addrs: []netip.Addr{netip.MustParseAddr(f[0])}, Node: f[1]}
	for _, c := range f[2:] {
		switch c {
		case "ready":
			e.Ready, e.Serving = true, true
		case "serving":
			e.Serving = true
		case "terminating":
			e.Terminating = true
		}
	}
	return e
}

func slice(name string, port uint16, eps ...string) *EndpointSlice {
	s := &EndpointSlice{Namespace: "default", Name: name, Service: "web", Ports: []EndpointPort{{Name: "http", Proto: TCP, Port: port}}}
	for _, e := range eps {
		s.Endpoints = append(s.Endpoints, ep(e))
	}
	return s
}

func key(addr netip.Addr, port uint16, scope uint8) maps.FrontendKey {
	return maps.FrontendKey{Addr: addr, Port: port, Proto: TCP, Scope: scope}
}

func addrs(list []BackendRef) string {
	var out []string
	for _, b := range list {
		out = append(out, fmt.Sprintf("%s:%d", b.Addr, b.Port))
	}
	return strings.Join(out, ",")
}

// TestCompute: which endpoints serve which frontend, as kube-proxy decides.
func TestCompute(t *testing.T) {
	local := func(s *Service) { s.ExternalLocal = true; s.Ports[0].NodePort = 30080 }
	tests := []struct {
		name   string
		svc    *Service
		slices []*EndpointSlice
		// frontend -> its backends (comma-separated) and flags
		want map[maps.FrontendKey]string
	}{
		{"ready endpoints serve", web(), []*EndpointSlice{slice("a", 8080, "10.240.0.6 node2 ready", "10.240.0.5 node1 ready", "10.240.0.7 node2")},
			map[maps.FrontendKey]string{key(cip, 80, maps.ScopeInternal): "10.240.0.5:8080,10.240.0.6:8080"}},
		{"terminating serve only when none is ready", web(), []*EndpointSlice{slice("a", 8080, "10.240.0.6 node2 serving terminating", "10.240.0.7 node2 terminating")},
			map[maps.FrontendKey]string{key(cip, 80, maps.ScopeInternal): "10.240.0.6:8080"}},
		{"not while one is ready", web(), []*EndpointSlice{slice("a", 8080, "10.240.0.6 node2 serving terminating", "10.240.0.8 node2 ready")},
			map[maps.FrontendKey]string{key(cip, 80, maps.ScopeInternal): "10.240.0.8:8080"}},
		{"no endpoints: the frontend rejects", web(), nil,
			map[maps.FrontendKey]string{key(cip, 80, maps.ScopeInternal): ""}},
		{"slices are merged, a port's number is the slice's", web(), []*EndpointSlice{slice("a", 8080, "10.240.0.5 node1 ready"), slice("b", 9090, "10.240.0.6 node2 ready")},
			map[maps.FrontendKey]string{key(cip, 80, maps.ScopeInternal): "10.240.0.5:8080,10.240.0.6:9090"}},
		{"NodePort Cluster", web(func(s *Service) { s.Ports[0].NodePort = 30080 }), []*EndpointSlice{slice("a", 8080, "10.240.0.5 node1 ready", "10.240.0.6 node2 ready")},
			map[maps.FrontendKey]string{
				key(cip, 80, maps.ScopeInternal):     "10.240.0.5:8080,10.240.0.6:8080",
				key(any4, 30080, maps.ScopeExternal): "10.240.0.5:8080,10.240.0.6:8080 nodeport",
				key(any4, 30080, maps.ScopeInternal): "10.240.0.5:8080,10.240.0.6:8080 nodeport"}},
		{"NodePort Local: external traffic to this node's endpoints, pods' to all", web(local),
			[]*EndpointSlice{slice("a", 8080, "10.240.0.5 node1 ready", "10.240.0.6 node2 ready")},
			map[maps.FrontendKey]string{
				key(cip, 80, maps.ScopeInternal):     "10.240.0.5:8080,10.240.0.6:8080",
				key(any4, 30080, maps.ScopeExternal): "10.240.0.5:8080 nodeport local",
				key(any4, 30080, maps.ScopeInternal): "10.240.0.5:8080,10.240.0.6:8080 nodeport"}},
		{"Local with none here drops", web(local), []*EndpointSlice{slice("a", 8080, "10.240.0.6 node2 ready")},
			map[maps.FrontendKey]string{
				key(cip, 80, maps.ScopeInternal):     "10.240.0.6:8080",
				key(any4, 30080, maps.ScopeExternal): " nodeport local drop",
				key(any4, 30080, maps.ScopeInternal): "10.240.0.6:8080 nodeport"}},
		{"Local with none anywhere rejects", web(local), nil,
			map[maps.FrontendKey]string{
				key(cip, 80, maps.ScopeInternal):     "",
				key(any4, 30080, maps.ScopeExternal): " nodeport local",
				key(any4, 30080, maps.ScopeInternal): " nodeport"}},
		{"local terminating serve Local when no local is ready", web(local),
			[]*EndpointSlice{slice("a", 8080, "10.240.0.5 node1 serving terminating", "10.240.0.6 node2 ready")},
			map[maps.FrontendKey]string{
				key(cip, 80, maps.ScopeInternal):     "10.240.0.6:8080",
				key(any4, 30080, maps.ScopeExternal): "10.240.0.5:8080 nodeport local",
				key(any4, 30080, maps.ScopeInternal): "10.240.0.6:8080 nodeport"}},
		{"internalTrafficPolicy Local", web(func(s *Service) { s.InternalLocal = true }),
			[]*EndpointSlice{slice("a", 8080, "10.240.0.5 node1 ready", "10.240.0.6 node2 ready")},
			map[maps.FrontendKey]string{key(cip, 80, maps.ScopeInternal): "10.240.0.5:8080 local"}},
		{"LoadBalancer IP and affinity", web(func(s *Service) { s.LoadBalancerIPs = []netip.Addr{lbIP}; s.AffinityTimeout = 30 }),
			[]*EndpointSlice{slice("a", 8080, "10.240.0.6 node2 ready")},
			map[maps.FrontendKey]string{
				key(cip, 80, maps.ScopeInternal):  "10.240.0.6:8080 affinity",
				key(lbIP, 80, maps.ScopeExternal): "10.240.0.6:8080 external affinity",
				key(lbIP, 80, maps.ScopeInternal): "10.240.0.6:8080 external affinity"}},
		{"headless: nothing", web(func(s *Service) { s.ClusterIPs = nil }), []*EndpointSlice{slice("a", 8080, "10.240.0.6 node2 ready")},
			map[maps.FrontendKey]string{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Compute(tt.svc, tt.slices, thisNode)
			got := map[maps.FrontendKey]string{}
			for _, f := range d.Frontends {
				s := addrs(d.Lists[f.List])
				for _, fl := range []struct {
					bit  uint16
					name string
				}{{maps.SvcNodePort, "nodeport"}, {maps.SvcExternal, "external"}, {maps.SvcLocal, "local"}, {maps.SvcDrop, "drop"}, {maps.SvcAffinity, "affinity"}} {
					if f.Flags&fl.bit != 0 {
						s += " " + fl.name
					}
				}
				got[f.Key] = s
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Errorf("%s: %q, want %q", k, got[k], v)
				}
			}
			for k, v := range got {
				if _, ok := tt.want[k]; !ok {
					t.Errorf("unexpected frontend %s: %q", k, v)
				}
			}
		})
	}
}

// TestSyncerChanges: the maps follow a Service through its changes, and at
// no moment (the fake checks after every operation) does a frontend's count
// reach a slot that is missing or names a missing backend.
func TestSyncerChanges(t *testing.T) {
	m := newFakeMaps(t)
	s := NewSyncer(m, NewPortFilter(m, nil), thisNode, true)
	svc := web(func(s *Service) { s.AffinityTimeout = 10 })
	front := key(cip, 80, maps.ScopeInternal)
	steps := []struct {
		name   string
		slices []*EndpointSlice
		want   []string
	}{
		{"three", []*EndpointSlice{slice("a", 8080, "10.240.0.5 node1 ready", "10.240.0.6 node2 ready", "10.240.0.7 node2 ready")},
			[]string{"10.240.0.5:8080", "10.240.0.6:8080", "10.240.0.7:8080"}},
		{"one leaves", []*EndpointSlice{slice("a", 8080, "10.240.0.5 node1 ready", "10.240.0.7 node2 ready")},
			[]string{"10.240.0.5:8080", "10.240.0.7:8080"}},
		{"replaced at once", []*EndpointSlice{slice("a", 8080, "10.240.0.8 node2 ready", "10.240.0.9 node2 ready", "10.240.0.10 node2 ready", "10.240.0.11 node2 ready")},
			[]string{"10.240.0.8:8080", "10.240.0.9:8080", "10.240.0.10:8080", "10.240.0.11:8080"}},
		{"none", nil, []string{}},
		{"back", []*EndpointSlice{slice("a", 8080, "10.240.0.5 node1 ready")}, []string{"10.240.0.5:8080"}},
	}
	for _, st := range steps {
		if _, err := s.Apply(svc.Key, svc, st.slices); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		var got []string
		for _, b := range m.backendsOf(front) {
			got = append(got, b.String())
		}
		slices.Sort(got)
		want := slices.Clone(st.want)
		slices.Sort(want)
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("%s: backends %v, want %v", st.name, got, want)
		}
		// Affinity pairs follow the list exactly.
		fe := m.frontends[front]
		if len(m.matches) != len(st.want) {
			t.Errorf("%s: %d affinity pairs for %d backends", st.name, len(m.matches), len(st.want))
		}
		for mk := range m.matches {
			if mk.ID != fe.ID {
				t.Errorf("%s: affinity pair of id %d, the frontend's is %d", st.name, mk.ID, fe.ID)
			}
		}
		if len(m.backends) != len(st.want) {
			t.Errorf("%s: %d backends in the map, %d in use", st.name, len(m.backends), len(st.want))
		}
	}
	removed, err := s.Apply(svc.Key, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.frontends)+len(m.slots)+len(m.backends)+len(m.matches) != 0 {
		t.Errorf("after the Service went: %d frontends, %d slots, %d backends, %d pairs left", len(m.frontends), len(m.slots), len(m.backends), len(m.matches))
	}
	if len(removed) != 1 {
		t.Errorf("removed backends %v, want the one left", removed)
	}
}

// TestSyncerTouchesOnlyItsService: a changed endpoint of one Service writes
// that Service's entries and no other's; a backend two Services share stays
// while one of them still uses it.
func TestSyncerTouchesOnlyItsService(t *testing.T) {
	m := newFakeMaps(t)
	s := NewSyncer(m, NewPortFilter(m, nil), thisNode, true)
	a := web()
	b := web(func(s *Service) { s.Name = "other"; s.ClusterIPs = []netip.Addr{netip.MustParseAddr("10.0.0.60")} })
	shared := slice("a", 8080, "10.240.0.5 node1 ready")
	if _, err := s.Apply(a.Key, a, []*EndpointSlice{shared}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Apply(b.Key, b, []*EndpointSlice{shared}); err != nil {
		t.Fatal(err)
	}
	bFront := m.frontends[key(netip.MustParseAddr("10.0.0.60"), 80, maps.ScopeInternal)]
	m.ops = nil
	if _, err := s.Apply(a.Key, a, []*EndpointSlice{slice("a", 8080, "10.240.0.5 node1 ready", "10.240.0.6 node2 ready")}); err != nil {
		t.Fatal(err)
	}
	for _, op := range m.ops {
		if strings.Contains(op, fmt.Sprintf(" %d/", bFront.ID)) || strings.Contains(op, "10.0.0.60") {
			t.Errorf("a change of %s wrote %s's entry: %s", a.Key, b.Key, op)
		}
	}
	if len(m.ops) != 3 { // the new backend, its slot, the count
		t.Errorf("one endpoint added: %d writes %v, want 3", len(m.ops), m.ops)
	}
	if _, err := s.Apply(a.Key, nil, nil); err != nil {
		t.Fatal(err)
	}
	if got := m.backendsOf(key(netip.MustParseAddr("10.0.0.60"), 80, maps.ScopeInternal)); len(got) != 1 || got[0].String() != "10.240.0.5:8080" {
		t.Errorf("the other Service's backends after the first went: %v", got)
	}
}

// TestSyncerAdopts: an agent restarting over pinned maps reuses their ids
// and rewrites nothing that did not change; what no Service claims is
// swept, frontends first.
func TestSyncerAdopts(t *testing.T) {
	m := newFakeMaps(t)
	first := NewSyncer(m, NewPortFilter(m, nil), thisNode, true)
	a := web(func(s *Service) { s.AffinityTimeout = 10 })
	gone := web(func(s *Service) { s.Name = "gone"; s.ClusterIPs = []netip.Addr{netip.MustParseAddr("10.0.0.70")} })
	eps := []*EndpointSlice{slice("a", 8080, "10.240.0.5 node1 ready", "10.240.0.6 node2 ready")}
	for _, svc := range []*Service{a, gone} {
		if _, err := first.Apply(svc.Key, svc, eps); err != nil {
			t.Fatal(err)
		}
	}
	goneEP := slice("g", 9090, "10.240.0.9 node2 ready")
	if _, err := first.Apply(gone.Key, gone, []*EndpointSlice{goneEP}); err != nil {
		t.Fatal(err)
	}
	before := m.frontends[key(cip, 80, maps.ScopeInternal)]

	words := make([]maps.PortBits, maps.PortFilterSlots)
	for slot, w := range m.words {
		words[slot] = w
	}
	filter := NewPortFilter(m, words)
	second := NewSyncer(m, filter, thisNode, true)
	second.Adopt(m.pinned())
	m.ops = nil
	if _, err := second.Apply(a.Key, a, eps); err != nil {
		t.Fatal(err)
	}
	if len(m.ops) != 0 {
		t.Errorf("an unchanged Service rewritten after a restart: %v", m.ops)
	}
	if after := m.frontends[key(cip, 80, maps.ScopeInternal)]; after != before {
		t.Errorf("frontend %+v became %+v", before, after)
	}
	if err := second.SweepAdopted(); err != nil {
		t.Fatal(err)
	}
	if err := filter.Sweep(); err != nil {
		t.Fatal(err)
	}
	if filter.Has(ProtoPort{TCP, 9090}, true) || !filter.Has(ProtoPort{TCP, 8080}, true) {
		t.Errorf("after the sweep the filter passes 9090 %v (the gone Service's), 8080 %v", filter.Has(ProtoPort{TCP, 9090}, true), filter.Has(ProtoPort{TCP, 8080}, true))
	}
	if _, ok := m.frontends[key(netip.MustParseAddr("10.0.0.70"), 80, maps.ScopeInternal)]; ok {
		t.Errorf("the frontend of a Service that went while no agent ran was not swept")
	}
	if len(m.backends) != 2 || len(m.slots) != 2 || len(m.matches) != 2 {
		t.Errorf("after the sweep: %d backends, %d slots, %d pairs, want 2 each", len(m.backends), len(m.slots), len(m.matches))
	}
	// New ids do not collide with adopted ones.
	b := web(func(s *Service) { s.Name = "new"; s.ClusterIPs = []netip.Addr{netip.MustParseAddr("10.0.0.80")} })
	if _, err := second.Apply(b.Key, b, []*EndpointSlice{slice("n", 7070, "10.240.0.20 node2 ready")}); err != nil {
		t.Fatal(err)
	}
	if got := m.backendsOf(key(cip, 80, maps.ScopeInternal)); len(got) != 2 {
		t.Errorf("the adopted Service's backends after a new one: %v", got)
	}
}

// TestPortFilterUnderKubeProxy: under kube-proxy the Services only feed the
// conntrack bits: their endpoints' ports whatever their conditions (an
// endpoint not ready yet is already there) and their numeric target ports
// (known before any EndpointSlice); a port two owners want stays until
// both let go.
func TestPortFilterUnderKubeProxy(t *testing.T) {
	m := newFakeMaps(t)
	f := NewPortFilter(m, nil)
	s := NewSyncer(m, f, thisNode, false)
	svc := web(func(s *Service) {
		s.Ports = append(s.Ports, Port{Name: "dns", Proto: UDP, Port: 53, TargetPort: 5353})
	})
	if _, err := s.Apply(svc.Key, svc, []*EndpointSlice{slice("a", 8080, "10.240.0.5 node2")}); err != nil {
		t.Fatal(err)
	}
	if len(m.frontends)+len(m.backends) != 0 {
		t.Errorf("under kube-proxy the syncer wrote %d frontends and %d backends", len(m.frontends), len(m.backends))
	}
	for _, p := range []ProtoPort{{TCP, 8080}, {UDP, 5353}} {
		if !f.Has(p, false) || f.Has(p, true) {
			t.Errorf("%s: ct bit %v, svc bit %v; want the ct bit alone", p, f.Has(p, false), f.Has(p, true))
		}
	}
	commit, err := f.Set("pods", PortSet{CT: []ProtoPort{{TCP, 8080}}})
	if err != nil || commit() != nil {
		t.Fatal(err)
	}
	if _, err := s.Apply(svc.Key, nil, nil); err != nil {
		t.Fatal(err)
	}
	if !f.Has(ProtoPort{TCP, 8080}, false) || f.Has(ProtoPort{UDP, 5353}, false) {
		t.Errorf("after the Service went: 8080 %v (the pods' still), 5353 %v", f.Has(ProtoPort{TCP, 8080}, false), f.Has(ProtoPort{UDP, 5353}, false))
	}
}
