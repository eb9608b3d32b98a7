package policy

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/podvnet/podvnet/internal/ipproto"
)

// The upstream e2e model (kubernetes test/e2e/network/netpol): namespaces
// x, y, z, each with pods a, b, c labelled pod=<name>, every pod a local
// endpoint here, serving 80 and 81 over TCP and UDP on ports named
// serve-<port>-<proto>.
var (
	modelNS   = []string{"x", "y", "z"}
	modelPods = []string{"a", "b", "c"}
	nodeIP    = netip.MustParseAddr("10.240.0.4")
)

type model struct {
	t        *testing.T
	e        *Engine
	pods     map[string]Pod
	ns       map[string]Namespace
	policies []Policy
}

func servePorts() map[string]NamedPort {
	out := map[string]NamedPort{}
	for _, port := range []uint16{80, 81} {
		out[fmt.Sprintf("serve-%d-tcp", port)] = NamedPort{Port: port, Protocol: TCP}
		out[fmt.Sprintf("serve-%d-udp", port)] = NamedPort{Port: port, Protocol: UDP}
	}
	return out
}

func newModel(t *testing.T) *model {
	m := &model{t: t, e: NewEngine(Config{NodeIP: nodeIP}), pods: map[string]Pod{}, ns: map[string]Namespace{}}
	for i, ns := range modelNS {
		m.ns[ns] = Namespace{Name: ns, Labels: map[string]string{NameLabel: ns, "ns": ns}}
		for j, name := range modelPods {
			p := Pod{Namespace: ns, Name: name, UID: ns + name, IP: netip.AddrFrom4([4]byte{10, 240, byte(1 + i), byte(10 + j)}),
				Labels: map[string]string{"pod": name}, Ports: servePorts()}
			m.pods[p.Key()] = p
			m.e.AddEndpoint(p.IP, p)
		}
	}
	m.sync()
	return m
}

func (m *model) snapshot() Snapshot {
	var s Snapshot
	for _, p := range m.pods {
		s.Pods = append(s.Pods, p)
	}
	for _, n := range m.ns {
		s.Namespaces = append(s.Namespaces, n)
	}
	s.Policies = m.policies
	return s
}

func (m *model) sync() Changes {
	ch := m.e.Update(m.snapshot())
	m.consistent()
	return ch
}

// consistent checks that every endpoint's rules, however they were
// updated (in full, or by updatePeers for identities alone), are what a
// compilation from scratch gives.
func (m *model) consistent() {
	m.t.Helper()
	for ip, ep := range m.e.endpoints {
		fresh := *ep
		if want := m.e.compile(&fresh); !want.Equal(ep.rules) {
			m.t.Errorf("endpoint %s: rules %+v, a compilation from scratch gives %+v", ip, ep.rules, want)
		}
	}
}

func (m *model) apply(ps ...Policy) Changes {
	m.policies = ps
	return m.sync()
}

func (m *model) ip(key string) netip.Addr { return m.pods[key].IP }

// denied lists every pair that may not talk on proto/port, loopback aside
// (undefined, as upstream ignores it).
func (m *model) denied(proto uint8, port uint16) []string {
	var out []string
	for _, from := range m.keys() {
		for _, to := range m.keys() {
			if from != to && !m.e.Allowed(m.ip(from), m.ip(to), proto, port) {
				out = append(out, from+"->"+to)
			}
		}
	}
	return out
}

func (m *model) keys() []string {
	var out []string
	for _, ns := range modelNS {
		for _, p := range modelPods {
			out = append(out, ns+"/"+p)
		}
	}
	return out
}

// pairs expands "S->T" patterns with * for every namespace or pod, minus
// loopback, into sorted pairs.
func pairs(patterns ...string) []string {
	expand := func(p string) []string {
		ns, pod, _ := strings.Cut(p, "/")
		var out []string
		for _, n := range modelNS {
			for _, q := range modelPods {
				if (ns == "*" || ns == n) && (pod == "*" || pod == q) {
					out = append(out, n+"/"+q)
				}
			}
		}
		return out
	}
	seen := map[string]bool{}
	for _, pat := range patterns {
		from, to, _ := strings.Cut(pat, "->")
		for _, f := range expand(from) {
			for _, t := range expand(to) {
				if f != t {
					seen[f+"->"+t] = true
				}
			}
		}
	}
	var out []string
	for p := range seen {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

func minus(all []string, keep ...string) []string {
	return slices.DeleteFunc(slices.Clone(all), func(p string) bool { return slices.Contains(keep, p) })
}

func (m *model) expect(name string, proto uint8, port uint16, want []string) {
	m.t.Helper()
	got := m.denied(proto, port)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		m.t.Errorf("%s, %s/%d: denied\n  %v\nwant\n  %v", name, ipproto.Name(proto), port, got, want)
	}
}

func sel(kv ...string) *Selector {
	s := &Selector{MatchLabels: map[string]string{}}
	for i := 0; i+1 < len(kv); i += 2 {
		s.MatchLabels[kv[i]] = kv[i+1]
	}
	return s
}

func nsName(n string) *Selector { return sel(NameLabel, n) }

func ingressPolicy(name string, pods Selector, rules ...Rule) Policy {
	return Policy{Namespace: "x", Name: name, PodSelector: pods, IngressIsolation: true, Ingress: rules}
}

func egressPolicy(name string, pods Selector, rules ...Rule) Policy {
	return Policy{Namespace: "x", Name: name, PodSelector: pods, EgressIsolation: true, Egress: rules}
}

func tcp(port uint16) Port { return Port{Protocol: TCP, Port: port} }

// TestUpstreamCases: the upstream NetworkPolicy e2e cases on the full 3x3
// model, decided by the compiled rules as the data path decides them.
func TestUpstreamCases(t *testing.T) {
	podA := *sel("pod", "a")
	tests := []struct {
		name     string
		policies []Policy
		proto    uint8
		port     uint16
		denied   []string
	}{
		{"T1 default-deny-ingress", []Policy{ingressPolicy("deny", Selector{})}, TCP, 80, pairs("*/*->x/*")},
		{"T2 default-deny-all", []Policy{{Namespace: "x", Name: "deny", IngressIsolation: true, EgressIsolation: true}}, TCP, 80,
			pairs("*/*->x/*", "x/*->*/*")},
		{"T3 podSelector in the server's namespace", []Policy{ingressPolicy("p", podA, Rule{Peers: []Peer{{Pods: sel("pod", "b")}}})}, TCP, 80,
			minus(pairs("*/*->x/a"), "x/b->x/a")},
		{"T5 all namespaces", []Policy{ingressPolicy("p", podA, Rule{Peers: []Peer{{Namespaces: &Selector{}}}})}, TCP, 80, nil},
		{"T6 another namespace", []Policy{ingressPolicy("p", podA, Rule{Peers: []Peer{{Namespaces: nsName("y")}}})}, TCP, 80,
			pairs("x/*->x/a", "z/*->x/a")},
		{"T7 podSelector matchExpressions", []Policy{ingressPolicy("p", podA, Rule{Peers: []Peer{{Pods: &Selector{
			MatchExpressions: []Requirement{{Key: "pod", Operator: "In", Values: []string{"b"}}}}}}})}, TCP, 80,
			minus(pairs("*/*->x/a"), "x/b->x/a")},
		{"T9 podSelector or namespaceSelector", []Policy{ingressPolicy("p", podA, Rule{Peers: []Peer{
			{Namespaces: &Selector{MatchExpressions: []Requirement{{Key: NameLabel, Operator: "NotIn", Values: []string{"x"}}}}},
			{Pods: sel("pod", "b")}}})}, TCP, 80, pairs("x/c->x/a")},
		{"T10 podSelector and namespaceSelector", []Policy{ingressPolicy("p", podA, Rule{Peers: []Peer{
			{Namespaces: &Selector{MatchExpressions: []Requirement{{Key: NameLabel, Operator: "NotIn", Values: []string{"x"}}}},
				Pods: sel("pod", "b")}}})}, TCP, 80, minus(pairs("*/*->x/a"), "y/b->x/a", "z/b->x/a")},
		{"T14 ports", []Policy{ingressPolicy("p", podA, Rule{Peers: []Peer{{Namespaces: nsName("y")}}, Ports: []Port{tcp(81)}})}, TCP, 81,
			pairs("x/*->x/a", "z/*->x/a")},
		{"T14 ports, the other port", []Policy{ingressPolicy("p", podA, Rule{Peers: []Peer{{Namespaces: nsName("y")}}, Ports: []Port{tcp(81)}})}, TCP, 80,
			pairs("*/*->x/a")},
		{"T17 named port", []Policy{ingressPolicy("p", Selector{}, Rule{Ports: []Port{{Protocol: TCP, Name: "serve-81-tcp"}}})}, TCP, 81, nil},
		{"T17 named port, the other port", []Policy{ingressPolicy("p", Selector{}, Rule{Ports: []Port{{Protocol: TCP, Name: "serve-81-tcp"}}})}, TCP, 80,
			pairs("*/*->x/*")},
		{"T19 egress named port", []Policy{egressPolicy("p", Selector{}, Rule{Ports: []Port{{Protocol: TCP, Name: "serve-80-tcp"}}})}, TCP, 81,
			pairs("x/*->*/*")},
		{"T19 egress named port, its port", []Policy{egressPolicy("p", Selector{}, Rule{Ports: []Port{{Protocol: TCP, Name: "serve-80-tcp"}}})}, TCP, 80, nil},
		{"T23 pods of its own namespace", []Policy{ingressPolicy("p", Selector{}, Rule{Peers: []Peer{{Pods: &Selector{}}}})}, TCP, 80,
			pairs("y/*->x/*", "z/*->x/*")},
		{"T25 deny egress of one pod", []Policy{egressPolicy("p", podA)}, TCP, 80, pairs("x/a->*/*")},
		{"T29 egress to a pod of another namespace", []Policy{egressPolicy("p", podA, Rule{Peers: []Peer{{Namespaces: nsName("y"), Pods: sel("pod", "a")}}})},
			TCP, 80, minus(pairs("x/a->*/*"), "x/a->y/a")},
		{"T30 any port of a protocol", []Policy{ingressPolicy("p", podA, Rule{Ports: []Port{{Protocol: TCP}}})}, UDP, 80, pairs("*/*->x/a")},
		{"T30 any port of a protocol, that protocol", []Policy{ingressPolicy("p", podA, Rule{Ports: []Port{{Protocol: TCP}}})}, TCP, 80, nil},
		{"T38 SCTP is not TCP", []Policy{ingressPolicy("deny", Selector{}), ingressPolicy("p", podA, Rule{Ports: []Port{{Protocol: SCTP, Port: 81}}})},
			TCP, 81, pairs("*/*->x/*")},
		{"T40 UDP is not TCP", []Policy{ingressPolicy("p", podA, Rule{Ports: []Port{{Protocol: UDP, Port: 81}}})}, TCP, 81, pairs("*/*->x/a")},
		{"T42 egress by namespace name NotIn", []Policy{egressPolicy("p", podA, Rule{Peers: []Peer{{Namespaces: &Selector{
			MatchExpressions: []Requirement{{Key: NameLabel, Operator: "NotIn", Values: []string{"y"}}}}}}})}, TCP, 80, pairs("x/a->y/*")},
		{"a peer's own rule and the rule for every peer", []Policy{ingressPolicy("p", podA,
			Rule{Peers: []Peer{{Pods: sel("pod", "b")}}, Ports: []Port{tcp(81)}}, Rule{Ports: []Port{tcp(80)}})}, TCP, 80, nil},
		{"endPort", []Policy{ingressPolicy("p", podA, Rule{Peers: []Peer{{Namespaces: nsName("y")}}, Ports: []Port{{Protocol: TCP, Port: 80, EndPort: 81}}})},
			TCP, 81, pairs("x/*->x/a", "z/*->x/a")},
		{"endPort, past it", []Policy{ingressPolicy("p", podA, Rule{Peers: []Peer{{Namespaces: nsName("y")}}, Ports: []Port{{Protocol: TCP, Port: 80, EndPort: 81}}})},
			TCP, 82, pairs("*/*->x/a")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newModel(t)
			m.apply(tt.policies...)
			m.expect(tt.name, tt.proto, tt.port, tt.denied)
		})
	}
}

// TestIPBlocks: ipBlocks match pod IPs (the upstream e2e needs it, T34-T36),
// an except refuses only what its own block would allow, and another rule
// still allows the excepted peer its ports (AWS's #326).
func TestIPBlocks(t *testing.T) {
	m := newModel(t)
	yb, xb := m.ip("y/b"), m.ip("x/b")
	m.apply(egressPolicy("p", *sel("pod", "a"), Rule{Peers: []Peer{{IPBlock: &IPBlock{CIDR: netip.PrefixFrom(yb, 32)}}}}))
	m.expect("T34 ipBlock of a pod IP", TCP, 80, minus(pairs("x/a->*/*"), "x/a->y/b"))

	slash4 := netip.PrefixFrom(xb, 4).Masked()
	m.apply(egressPolicy("p", *sel("pod", "a"), Rule{Peers: []Peer{{IPBlock: &IPBlock{CIDR: slash4, Except: []netip.Prefix{netip.PrefixFrom(xb, 32)}}}}}))
	m.expect("T35 except", TCP, 80, pairs("x/a->x/b"))

	m.apply(egressPolicy("p", *sel("pod", "a"),
		Rule{Peers: []Peer{{IPBlock: &IPBlock{CIDR: netip.MustParsePrefix("0.0.0.0/0"), Except: []netip.Prefix{netip.PrefixFrom(xb, 32)}}}}},
		Rule{Ports: []Port{tcp(80)}}))
	m.expect("except and a rule for every peer on 80", TCP, 80, nil)
	m.expect("except and a rule for every peer, on 81", TCP, 81, pairs("x/a->x/b"))

	// Two blocks: the except of one does not hide the other's port.
	m.apply(egressPolicy("p", *sel("pod", "a"),
		Rule{Peers: []Peer{{IPBlock: &IPBlock{CIDR: slash4, Except: []netip.Prefix{netip.PrefixFrom(xb, 32)}}}}, Ports: []Port{tcp(81)}},
		Rule{Peers: []Peer{{IPBlock: &IPBlock{CIDR: netip.PrefixFrom(xb, 24).Masked()}}}, Ports: []Port{tcp(80)}}))
	m.expect("union, the nested block's port", TCP, 80, minus(pairs("x/a->*/*"), "x/a->x/b", "x/a->x/c"))
	m.expect("union, the excepting block's port", TCP, 81, pairs("x/a->x/b"))
	r, _ := m.e.Endpoint(m.ip("x/a"))
	var except *CIDRRule
	for i, c := range r.Egress.CIDRs {
		if c.Prefix == netip.PrefixFrom(xb, 32) {
			except = &r.Egress.CIDRs[i]
		}
	}
	if except == nil || !except.Ports.Equal(PortSet{{Proto: TCP, First: 80, Last: 80}}) || !except.Except.Equal(PortSet{{Proto: TCP, First: 81, Last: 81}}) {
		t.Errorf("the except's entry %+v: want tcp/80 allowed (the /24's), tcp/81 excepted", except)
	}
}

// TestNamedPortPerDestination: an egress named port resolves on each
// destination pod, so one name may mean different numbers.
func TestNamedPortPerDestination(t *testing.T) {
	m := newModel(t)
	b, c := m.pods["x/b"], m.pods["x/c"]
	b.Ports = map[string]NamedPort{"http": {Port: 80, Protocol: TCP}}
	c.Ports = map[string]NamedPort{"http": {Port: 81, Protocol: TCP}}
	m.pods["x/b"], m.pods["x/c"] = b, c
	m.apply(egressPolicy("p", *sel("pod", "a"), Rule{Ports: []Port{{Protocol: TCP, Name: "http"}}}))
	m.expect("on 80", TCP, 80, minus(pairs("x/a->*/*"), "x/a->x/b"))
	m.expect("on 81", TCP, 81, minus(pairs("x/a->*/*"), "x/a->x/c"))

	// Inside an ipBlock too: the pods in it, by their own ports.
	m.apply(egressPolicy("p", *sel("pod", "a"), Rule{Peers: []Peer{{IPBlock: &IPBlock{CIDR: netip.MustParsePrefix("10.240.0.0/16")}}},
		Ports: []Port{{Protocol: TCP, Name: "http"}}}))
	m.expect("in a block, on 80", TCP, 80, minus(pairs("x/a->*/*"), "x/a->x/b"))
	m.expect("in a block, on 81", TCP, 81, minus(pairs("x/a->*/*"), "x/a->x/c"))
	// A pod's ports change: the rules follow.
	c.Ports = map[string]NamedPort{"http": {Port: 80, Protocol: TCP}}
	m.pods["x/c"] = c
	m.sync()
	m.expect("in a block, after x/c moved http to 80", TCP, 80, minus(pairs("x/a->*/*"), "x/a->x/b", "x/a->x/c"))
}

// TestUpdates: policies updated and removed, pods and namespaces
// relabelled; each update recomputes only the endpoints it touches.
func TestUpdates(t *testing.T) {
	m := newModel(t)
	allowAll := ingressPolicy("p", Selector{}, Rule{})
	m.apply(allowAll)
	m.expect("T20 allow all", TCP, 81, nil)
	denyAll := ingressPolicy("p", Selector{})
	ch := m.apply(denyAll)
	m.expect("T20 updated to deny", TCP, 81, pairs("*/*->x/*"))
	if got := changedKeys(m, ch); !slices.Equal(got, []string{"x/a", "x/b", "x/c"}) {
		t.Errorf("the update recomputed %v, want x's pods only", got)
	}
	m.apply()
	m.expect("T33 deleted", TCP, 80, nil)

	// T21: from namespaces labelled ns2=updated; then label y.
	m.apply(ingressPolicy("p", *sel("pod", "a"), Rule{Peers: []Peer{{Namespaces: sel("ns2", "updated")}}}))
	m.expect("T21 before", TCP, 80, pairs("*/*->x/a"))
	y := m.ns["y"]
	y.Labels = map[string]string{NameLabel: "y", "ns": "y", "ns2": "updated"}
	m.ns["y"] = y
	ch = m.sync()
	m.expect("T21 after", TCP, 80, pairs("x/*->x/a", "z/*->x/a"))
	if got := changedKeys(m, ch); !slices.Equal(got, []string{"x/a", "y/a", "y/b", "y/c"}) {
		t.Errorf("labelling y recomputed %v, want x/a (its rules) and y's pods (their identity)", got)
	}
	if len(ch.IPCache) != 3 {
		t.Errorf("labelling y changed %d ipcache entries, want y's 3 pods", len(ch.IPCache))
	}

	// T22: from pods {pod: b, pod2: updated}; then label x/b.
	m.apply(ingressPolicy("p", *sel("pod", "a"), Rule{Peers: []Peer{{Pods: sel("pod", "b", "pod2", "updated")}}}))
	m.expect("T22 before", TCP, 80, pairs("*/*->x/a"))
	b := m.pods["x/b"]
	b.Labels = map[string]string{"pod": "b", "pod2": "updated"}
	m.pods["x/b"] = b
	m.sync()
	m.expect("T22 after", TCP, 80, minus(pairs("*/*->x/a"), "x/b->x/a"))

	// T24: a policy for target=isolated; then label x/a.
	m.apply(ingressPolicy("p", *sel("target", "isolated")))
	m.expect("T24 before", TCP, 80, nil)
	a := m.pods["x/a"]
	a.Labels = map[string]string{"pod": "a", "target": "isolated"}
	m.pods["x/a"] = a
	m.sync()
	m.expect("T24 after", TCP, 80, pairs("*/*->x/a"))

	// T31: ingress on 80 only, then a second policy allowing everything.
	m.apply(ingressPolicy("p", Selector{}, Rule{Ports: []Port{tcp(80)}}))
	m.expect("T31 before", TCP, 81, pairs("*/*->x/*"))
	m.apply(ingressPolicy("p", Selector{}, Rule{Ports: []Port{tcp(80)}}), ingressPolicy("all", Selector{}, Rule{}))
	m.expect("T31 after", TCP, 81, nil)
}

func changedKeys(m *model, ch Changes) []string {
	var out []string
	for ip := range ch.Endpoints {
		for k, p := range m.pods {
			if p.IP == ip {
				out = append(out, k)
			}
		}
	}
	slices.Sort(out)
	return out
}

// TestIdentities: pods with the same namespace, labels and named ports
// share an identity; a number is never handed out twice; hostNetwork pods
// and this node are nodes in the ipcache.
func TestIdentities(t *testing.T) {
	e := NewEngine(Config{NodeIP: nodeIP, FirstIdentity: 1000})
	pod := func(name, ip string, labels ...string) Pod {
		return Pod{Namespace: "x", Name: name, IP: netip.MustParseAddr(ip), Labels: sel(labels...).MatchLabels}
	}
	s := Snapshot{Pods: []Pod{pod("a", "10.240.0.10", "app", "web"), pod("b", "10.240.0.11", "app", "web"), pod("c", "10.240.0.12", "app", "db"),
		{Namespace: "kube-system", Name: "agent", IP: netip.MustParseAddr("10.240.0.5"), HostNetwork: true},
		{Namespace: "kube-system", Name: "local-agent", IP: nodeIP, HostNetwork: true}},
		Namespaces: []Namespace{{Name: "x", Labels: map[string]string{NameLabel: "x"}}}}
	e.Update(s)
	ipc := e.IPCache()
	web, db := ipc[netip.MustParseAddr("10.240.0.10")], ipc[netip.MustParseAddr("10.240.0.12")]
	if web < 1000 || db < 1000 || web == db || ipc[netip.MustParseAddr("10.240.0.11")] != web {
		t.Errorf("identities %v: want web shared by a and b, db its own, both from 1000", ipc)
	}
	if ipc[netip.MustParseAddr("10.240.0.5")] != IdentityRemoteNode || ipc[nodeIP] != IdentityHost {
		t.Errorf("nodes in the ipcache: %v", ipc)
	}
	// c takes web's labels, then db's again: db's old number is not reused.
	s.Pods[2] = pod("c", "10.240.0.12", "app", "web")
	e.Update(s)
	s.Pods[2] = pod("c", "10.240.0.12", "app", "db")
	ch := e.Update(s)
	if got := ch.IPCache[netip.MustParseAddr("10.240.0.12")]; got == db || got == web || got == 0 {
		t.Errorf("c's new identity %d: want a new number (web %d, db was %d)", got, web, db)
	}
	// A pod gone leaves the ipcache.
	s.Pods = s.Pods[1:]
	ch = e.Update(s)
	if id, ok := ch.IPCache[netip.MustParseAddr("10.240.0.10")]; !ok || id != 0 {
		t.Errorf("a gone: ipcache changes %v", ch.IPCache)
	}
}

// TestEndpointBeforeInformer: an endpoint registered at ADD from a GET, its
// pod not yet in the informer and without an address there, gets its rules
// and its ipcache entry at once.
func TestEndpointBeforeInformer(t *testing.T) {
	e := NewEngine(Config{NodeIP: nodeIP})
	e.Update(Snapshot{Policies: []Policy{ingressPolicy("deny", Selector{})},
		Namespaces: []Namespace{{Name: "x", Labels: map[string]string{NameLabel: "x"}}}})
	ip := netip.MustParseAddr("10.240.0.20")
	ch := e.AddEndpoint(ip, Pod{Namespace: "x", Name: "new", UID: "u1", Labels: map[string]string{"app": "new"}})
	r := ch.Endpoints[ip]
	if r == nil || !r.Ingress.Isolated || r.Egress.Isolated || ch.IPCache[ip] < FirstPodIdentity {
		t.Fatalf("changes %+v: want the endpoint isolated for ingress and its ipcache entry", ch)
	}
	if e.Allowed(netip.MustParseAddr("10.240.0.30"), ip, TCP, 80) || !e.Allowed(nodeIP, ip, TCP, 80) {
		t.Errorf("deny-all: a peer was allowed, or the node was not")
	}
	// The informer shows the pod without an address yet: nothing changes.
	ch = e.Update(Snapshot{Policies: []Policy{ingressPolicy("deny", Selector{})},
		Namespaces: []Namespace{{Name: "x", Labels: map[string]string{NameLabel: "x"}}},
		Pods:       []Pod{{Namespace: "x", Name: "new", UID: "u1", Labels: map[string]string{"app": "new"}}}})
	if !ch.Empty() {
		t.Errorf("changes %+v, want none", ch)
	}
	ch = e.RemoveEndpoint(ip)
	if r, ok := ch.Endpoints[ip]; !ok || r != nil || ch.IPCache[ip] != 0 {
		t.Errorf("DEL: changes %+v", ch)
	}
}

func TestSelector(t *testing.T) {
	labels := map[string]string{"app": "web", "tier": "front"}
	tests := []struct {
		s    Selector
		want bool
	}{
		{Selector{}, true},
		{*sel("app", "web"), true},
		{*sel("app", "db"), false},
		{Selector{MatchExpressions: []Requirement{{Key: "tier", Operator: "In", Values: []string{"front", "back"}}}}, true},
		{Selector{MatchExpressions: []Requirement{{Key: "tier", Operator: "NotIn", Values: []string{"front"}}}}, false},
		{Selector{MatchExpressions: []Requirement{{Key: "zone", Operator: "NotIn", Values: []string{"a"}}}}, true},
		{Selector{MatchExpressions: []Requirement{{Key: "app", Operator: "Exists"}}}, true},
		{Selector{MatchExpressions: []Requirement{{Key: "app", Operator: "DoesNotExist"}}}, false},
		{Selector{MatchExpressions: []Requirement{{Key: "app", Operator: "Gt", Values: []string{"1"}}}}, false},
	}
	for _, tt := range tests {
		if got := tt.s.Matches(labels); got != tt.want {
			t.Errorf("%s matches %v: %v, want %v", tt.s, labels, got, tt.want)
		}
	}
	a := Selector{MatchLabels: map[string]string{"b": "2", "a": "1"}, MatchExpressions: []Requirement{{Key: "z", Operator: "In", Values: []string{"y", "x"}}}}
	b := Selector{MatchLabels: map[string]string{"a": "1", "b": "2"}, MatchExpressions: []Requirement{{Key: "z", Operator: "In", Values: []string{"x", "y"}}}}
	if a.String() != b.String() {
		t.Errorf("equal selectors print %s and %s", a, b)
	}
}

func TestPortSet(t *testing.T) {
	s := PortSet{{TCP, 80, 80}}.Union(PortSet{{TCP, 81, 90}, {UDP, 53, 53}, {TCP, 85, 100}})
	if want := (PortSet{{TCP, 80, 100}, {UDP, 53, 53}}); !s.Equal(want) {
		t.Errorf("union %v, want %v", s, want)
	}
	if !s.Union(AllPorts).Equal(AllPorts) {
		t.Errorf("every protocol absorbs the rest")
	}
	if s.Contains(TCP, 101) || !s.Contains(TCP, 100) || s.Contains(SCTP, 80) {
		t.Errorf("Contains wrong for %v", s)
	}
}

// TestIdentityChurn: pods come, go and change labels under selectors of
// every kind (pods, namespaces, both, every pod for egress named ports);
// each update touches only the peers it must, and the rules stay what a
// compilation from scratch gives.
func TestIdentityChurn(t *testing.T) {
	m := newModel(t)
	m.apply(
		ingressPolicy("a", *sel("pod", "a"), Rule{Peers: []Peer{{Pods: sel("role", "client")}, {Namespaces: sel("team", "t1")}},
			Ports: []Port{tcp(80)}}),
		ingressPolicy("b", *sel("pod", "b"), Rule{Peers: []Peer{{Namespaces: &Selector{}, Pods: sel("role", "client")}}, Ports: []Port{tcp(80)}},
			Rule{Ports: []Port{tcp(443)}}),
		egressPolicy("c", *sel("pod", "c"), Rule{Ports: []Port{{Protocol: TCP, Name: "http"}}}, Rule{Peers: []Peer{{Pods: sel("role", "db")}}}),
	)
	for i := range 40 {
		key := fmt.Sprintf("%s/extra%d", modelNS[i%3], i%7)
		p := Pod{Namespace: modelNS[i%3], Name: fmt.Sprintf("extra%d", i%7), UID: fmt.Sprint(i), IP: netip.AddrFrom4([4]byte{10, 241, byte(i % 7), byte(i%3 + 1)}),
			Labels: map[string]string{"role": []string{"client", "db", "web"}[i%3]}}
		if i%4 == 1 {
			p.Ports = map[string]NamedPort{"http": {Port: uint16(8000 + i), Protocol: TCP}}
		}
		switch i % 5 {
		case 3:
			delete(m.pods, key)
		default:
			m.pods[key] = p
		}
		if i%6 == 2 {
			n := m.ns[modelNS[i%3]]
			n.Labels = map[string]string{NameLabel: n.Name, "team": fmt.Sprintf("t%d", i%2)}
			m.ns[n.Name] = n
		}
		m.sync()
	}
}
