package policymap_test

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"

	"github.com/podvnet/podvnet/internal/nettest"
	"github.com/podvnet/podvnet/internal/packet"
	"github.com/podvnet/podvnet/pkg/loader"
	"github.com/podvnet/podvnet/pkg/maps"
	"github.com/podvnet/podvnet/pkg/policy"
	"github.com/podvnet/podvnet/pkg/policymap"
)

// bed is a loaded data path in a private netns with one device per pod of
// the upstream 3x3 model, every pod a local endpoint.
type bed struct {
	t      *testing.T
	ns     *nettest.NS
	dp     *loader.Datapath
	pods   []policy.Pod
	ifidx  map[netip.Addr]int
	macs   map[netip.Addr]net.HardwareAddr
	engine *policy.Engine
	w      *policymap.Writer
	sport  uint16
}

var nodeIP = netip.MustParseAddr("10.240.0.4")

// entries is the agent's side of the endpoints map, for the writer.
type entries struct{ b *bed }

func (e entries) SetEndpointPolicy(ip netip.Addr, id, flags uint32) error {
	ep, ok, err := e.b.dp.Maps.Endpoints.Get(ip)
	if err != nil || !ok {
		return fmt.Errorf("endpoint %s: %v", ip, err)
	}
	ep.PolicyID, ep.Flags = id, flags
	return e.b.dp.Maps.Endpoints.Put(ip, ep)
}

func newBed(t *testing.T) *bed {
	nettest.RequireRoot(t)
	b := &bed{t: t, ns: nettest.NewNS(t, nettest.Prefix()+"-pm"), ifidx: map[netip.Addr]int{}, macs: map[netip.Addr]net.HardwareAddr{}, sport: 20000}
	dp, err := loader.Load(nettest.BPFFS(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dp.Close() })
	b.dp = dp
	nic := b.device("eth0", net.HardwareAddr{2, 0, 0, 0, 0, 1})
	must(t, dp.Maps.Config.Set(maps.Config{NICIfindex: uint32(nic), NodeIP: nodeIP.As4(), Subnet: [4]byte{10, 240, 0, 0},
		SubnetMask: [4]byte{255, 255, 0, 0}}))
	ports := map[string]policy.NamedPort{"serve-80-tcp": {Port: 80, Protocol: policy.TCP}, "serve-81-tcp": {Port: 81, Protocol: policy.TCP}}
	for i, ns := range []string{"x", "y", "z"} {
		for j, name := range []string{"a", "b", "c"} {
			ip := netip.AddrFrom4([4]byte{10, 240, byte(1 + i), byte(10 + j)})
			mac := net.HardwareAddr{2, 0xaa, 0, 0, byte(i), byte(j)}
			idx := b.device(fmt.Sprintf("pv%s%s", ns, name), mac)
			b.ifidx[ip], b.macs[ip] = idx, mac
			ep := maps.Endpoint{Ifindex: uint32(idx)}
			copy(ep.PodMAC[:], mac)
			copy(ep.HostMAC[:], mac)
			must(t, dp.Maps.Endpoints.Put(ip, ep))
			b.pods = append(b.pods, policy.Pod{Namespace: ns, Name: name, UID: ns + name, IP: ip, Labels: map[string]string{"pod": name}, Ports: ports})
		}
	}
	b.w = policymap.New(dp.Maps.Policy, entries{b})
	b.engine = policy.NewEngine(policy.Config{NodeIP: nodeIP})
	for _, p := range b.pods {
		b.apply(b.engine.AddEndpoint(p.IP, p))
	}
	return b
}

func (b *bed) device(name string, mac net.HardwareAddr) int {
	d := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name, HardwareAddr: mac}, PeerName: name + "p"}
	if err := b.ns.NL.LinkAdd(d); err != nil {
		b.t.Fatalf("add %s: %v", name, err)
	}
	l, err := b.ns.NL.LinkByName(name)
	if err != nil {
		b.t.Fatal(err)
	}
	return l.Attrs().Index
}

func (b *bed) apply(ch policy.Changes) {
	b.t.Helper()
	if _, err := b.w.Apply(ch); err != nil {
		b.t.Fatal(err)
	}
}

func (b *bed) snapshot(policies ...policy.Policy) policy.Snapshot {
	s := policy.Snapshot{Pods: b.pods, Policies: policies}
	for _, ns := range []string{"x", "y", "z"} {
		s.Namespaces = append(s.Namespaces, policy.Namespace{Name: ns, Labels: map[string]string{policy.NameLabel: ns}})
	}
	return s
}

// skbCtx is the head of struct __sk_buff up to ifindex.
type skbCtx struct {
	_       [10]uint32
	Ifindex uint32
	_       uint32
}

// verdict sends a TCP SYN from src to dst:port through from_pod on src's
// device: redirected into dst, or dropped.
func (b *bed) passes(src, dst netip.Addr, port uint16) bool {
	b.t.Helper()
	b.sport++
	f := packet.IPv4{SrcMAC: b.macs[src], DstMAC: b.macs[src], Src: src, Dst: dst, Proto: 6, Payload: 20}.Build()
	binary.BigEndian.PutUint16(f[34:], b.sport)
	binary.BigEndian.PutUint16(f[36:], port)
	f[46], f[47] = 5<<4, 0x02
	var ret uint32
	must(b.t, b.ns.Do(func() (err error) {
		ret, err = b.dp.Program(maps.HookPod).Run(&ebpf.RunOptions{Data: f, Context: skbCtx{Ifindex: uint32(b.ifidx[src])}})
		return err
	}))
	switch ret {
	case 7: // TC_ACT_REDIRECT
		return true
	case 2: // TC_ACT_SHOT
		return false
	}
	b.t.Fatalf("%s -> %s:%d: verdict %d", src, dst, port, ret)
	return false
}

// matchesModel checks every pair on both ports against the engine's model
// of the decision.
func (b *bed) matchesModel(name string) {
	b.t.Helper()
	for _, from := range b.pods {
		for _, to := range b.pods {
			if from.IP == to.IP {
				continue
			}
			for _, port := range []uint16{80, 81} {
				want := b.engine.Allowed(from.IP, to.IP, policy.TCP, port)
				if got := b.passes(from.IP, to.IP, port); got != want {
					b.t.Errorf("%s: %s -> %s:%d: data path %v, model %v", name, from.Key(), to.Key(), port, got, want)
				}
			}
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func sel(k, v string) *policy.Selector { return &policy.Selector{MatchLabels: map[string]string{k: v}} }

// TestDataPathMatchesModel: rules written by the writer make the programs
// decide what the compiler's model decides, case after case, each written
// over the last (so stale entries would show).
func TestDataPathMatchesModel(t *testing.T) {
	b := newBed(t)
	podA := *sel("pod", "a")
	slash16 := netip.MustParsePrefix("10.240.0.0/16")
	cases := []struct {
		name     string
		policies []policy.Policy
	}{
		{"no policy", nil},
		{"deny ingress in x", []policy.Policy{{Namespace: "x", Name: "deny", IngressIsolation: true}}},
		{"x/a from pod=b", []policy.Policy{{Namespace: "x", Name: "p", PodSelector: podA, IngressIsolation: true,
			Ingress: []policy.Rule{{Peers: []policy.Peer{{Pods: sel("pod", "b")}}}}}}},
		{"x/a from namespace y on 81", []policy.Policy{{Namespace: "x", Name: "p", PodSelector: podA, IngressIsolation: true,
			Ingress: []policy.Rule{{Peers: []policy.Peer{{Namespaces: sel(policy.NameLabel, "y")}}, Ports: []policy.Port{{Protocol: policy.TCP, Port: 81}}}}}}},
		{"egress of x on a named port", []policy.Policy{{Namespace: "x", Name: "p", EgressIsolation: true,
			Egress: []policy.Rule{{Ports: []policy.Port{{Protocol: policy.TCP, Name: "serve-80-tcp"}}}}}}},
		{"x/a egress ipBlock except x/b, plus 80 anywhere", []policy.Policy{{Namespace: "x", Name: "p", PodSelector: podA, EgressIsolation: true,
			Egress: []policy.Rule{{Peers: []policy.Peer{{IPBlock: &policy.IPBlock{CIDR: slash16, Except: []netip.Prefix{netip.MustParsePrefix("10.240.1.11/32")}}}},
				Ports: []policy.Port{{Protocol: policy.TCP, Port: 81}}}, {Ports: []policy.Port{{Protocol: policy.TCP, Port: 80}}}}}}},
		{"deny all in y, allow from x in z", []policy.Policy{{Namespace: "y", Name: "deny", IngressIsolation: true, EgressIsolation: true},
			{Namespace: "z", Name: "from-x", IngressIsolation: true, Ingress: []policy.Rule{{Peers: []policy.Peer{{Namespaces: sel(policy.NameLabel, "x")}}}}}}},
		{"no policy again", nil},
	}
	for _, c := range cases {
		b.apply(b.engine.Update(b.snapshot(c.policies...)))
		b.matchesModel(c.name)
	}
	// Nothing is left of the cases: no rules, no sets, no isolation.
	peers, err := b.dp.Maps.Policy.Peers()
	must(t, err)
	cidrs, err := b.dp.Maps.Policy.CIDRs()
	must(t, err)
	sets, err := b.dp.Maps.Policy.PortSets()
	must(t, err)
	if len(peers) != 0 || len(cidrs) != 0 || len(sets) != 0 {
		t.Errorf("left after the last case: %d peer entries, %d ipBlock entries, %d port sets", len(peers), len(cidrs), len(sets))
	}
	eps, err := b.dp.Maps.Endpoints.List()
	must(t, err)
	for _, e := range eps {
		if e.Flags&maps.EndpointPolicy != 0 || e.PolicyID == 0 {
			t.Errorf("endpoint %s: flags %#x, policy id %d", e.IP, e.Flags, e.PolicyID)
		}
	}
}

// TestAdopt: a new agent's writer adopts what the last one wrote; with
// identities numbered above the pinned ones and the same rules computed, it
// rewrites the maps to its numbering and leaves no entry of the old one,
// and the verdicts never change.
func TestAdopt(t *testing.T) {
	b := newBed(t)
	pols := []policy.Policy{{Namespace: "x", Name: "p", PodSelector: *sel("pod", "a"), IngressIsolation: true,
		Ingress: []policy.Rule{{Peers: []policy.Peer{{Namespaces: sel(policy.NameLabel, "y")}}}}}}
	b.apply(b.engine.Update(b.snapshot(pols...)))
	b.matchesModel("first agent")
	oldPeers, err := b.dp.Maps.Policy.Peers()
	must(t, err)

	var pinned []policymap.Pinned
	eps, err := b.dp.Maps.Endpoints.List()
	must(t, err)
	for _, e := range eps {
		pinned = append(pinned, policymap.Pinned{IP: e.IP, ID: e.PolicyID, Flags: e.Flags})
	}
	b.w = policymap.New(b.dp.Maps.Policy, entries{b})
	maxID, err := b.w.Adopt(pinned)
	must(t, err)
	if maxID < policy.FirstPodIdentity {
		t.Fatalf("adopted max identity %d", maxID)
	}
	b.matchesModel("adopted, before the first update") // the old rules still in force
	b.engine = policy.NewEngine(policy.Config{NodeIP: nodeIP, FirstIdentity: maxID + 1})
	// The new agent knows its endpoints before the API has answered: it
	// writes nothing until then, and then the whole state at once.
	for _, p := range b.pods {
		b.engine.AddEndpoint(p.IP, p)
	}
	b.engine.Update(b.snapshot(pols...))
	if _, err := b.w.Sync(b.engine.All()); err != nil {
		t.Fatal(err)
	}
	b.matchesModel("second agent")
	newPeers, err := b.dp.Maps.Policy.Peers()
	must(t, err)
	if len(newPeers) != len(oldPeers) {
		t.Errorf("%d peer entries, the first agent had %d", len(newPeers), len(oldPeers))
	}
	for _, p := range newPeers {
		if p.Peer <= maxID {
			t.Errorf("entry %+v names an identity of the first agent", p.PolicyKey)
		}
	}
}

// TestSyncRemovesStale: Sync leaves in the maps exactly what it is given:
// an ipcache entry and an endpoint the last agent wrote and nothing names
// any more are removed.
func TestSyncRemovesStale(t *testing.T) {
	b := newBed(t)
	pols := []policy.Policy{{Namespace: "x", Name: "deny", IngressIsolation: true}}
	b.apply(b.engine.Update(b.snapshot(pols...)))
	stale := netip.MustParseAddr("10.240.9.9")
	must(t, b.dp.Maps.Policy.PutIdentity(stale, 999))
	var pinned []policymap.Pinned
	eps, err := b.dp.Maps.Endpoints.List()
	must(t, err)
	for _, e := range eps {
		pinned = append(pinned, policymap.Pinned{IP: e.IP, ID: e.PolicyID, Flags: e.Flags})
	}
	b.w = policymap.New(b.dp.Maps.Policy, entries{b})
	maxID, err := b.w.Adopt(pinned)
	must(t, err)
	b.engine = policy.NewEngine(policy.Config{NodeIP: nodeIP, FirstIdentity: maxID + 1})
	gone := b.pods[0] // x/a was deleted while no agent ran
	b.pods = b.pods[1:]
	for _, p := range b.pods {
		b.engine.AddEndpoint(p.IP, p)
	}
	b.engine.Update(b.snapshot(pols...))
	if _, err := b.w.Sync(b.engine.All()); err != nil {
		t.Fatal(err)
	}
	ipc, err := b.dp.Maps.Policy.Identities()
	must(t, err)
	if _, ok := ipc[stale]; ok {
		t.Errorf("stale ipcache entry %s kept", stale)
	}
	if _, ok := ipc[gone.IP]; ok {
		t.Errorf("ipcache entry of the gone pod %s kept", gone.IP)
	}
	if _, ok := b.w.Endpoints()[gone.IP]; ok {
		t.Errorf("the gone endpoint %s still has a policy id", gone.IP)
	}
	if len(ipc) != len(b.pods)+1 {
		t.Errorf("ipcache holds %d entries, want %d pods and the node", len(ipc), len(b.pods))
	}
	b.matchesModel("after the sync")
}
