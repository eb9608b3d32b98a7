package e2e

import (
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/podvnet/podvnet/pkg/agentapi"
	"github.com/podvnet/podvnet/pkg/loader"
	"github.com/podvnet/podvnet/pkg/maps"
	"github.com/podvnet/podvnet/tests/e2e/vnet"
)

const echoPort = 7000

// TestPodLifecycle walks ADD -> traffic (same node, across nodes) -> debug
// view -> DEL -> nothing left on either node.
func TestPodLifecycle(t *testing.T) {
	v := newVNet(t, vnet.Options{PerNode: 4})
	startAgents(t, v)
	n1, n2 := v.Nodes[0], v.Nodes[1]
	a := addPod(t, n1, "a")
	b := addPod(t, n1, "b")
	c := addPod(t, n2, "c")

	for _, p := range []*vnet.Pod{a, b, c} {
		if !slices.Contains(p.Node.Pool.Secondary, p.IP) {
			t.Fatalf("%s got %s, not one of %s's secondary IPs", p.Name, p.IP, p.Node.Name)
		}
		if _, err := p.EchoServer(echoPort); err != nil {
			t.Fatal(err)
		}
	}
	echoPairs(t, "pods on one node and across nodes", 256<<10, [][2]*vnet.Pod{{a, b}, {b, a}, {a, c}, {c, a}, {c, b}}...)

	// A pod that loses its permanent neighbour entry for the gateway finds
	// it again: from_pod answers its ARP request.
	eth0, err := a.NS.NL.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	gw := &netlink.Neigh{LinkIndex: eth0.Attrs().Index, Family: netlink.FAMILY_V4, IP: net.ParseIP(agentapi.GatewayIP)}
	if err := a.NS.NL.NeighDel(gw); err != nil {
		t.Fatalf("delete the gateway's neighbour entry: %v", err)
	}
	if _, err := vnet.TCPEcho(a, c.IP, echoPort, 4096, 10*time.Second); err != nil {
		t.Fatalf("after deleting the pod's neighbour entry for its gateway: %v", err)
	}
	neighs, _ := a.NS.NL.NeighList(eth0.Attrs().Index, netlink.FAMILY_V4)
	learned := false
	for _, n := range neighs {
		if n.IP.Equal(gw.IP) && n.HardwareAddr.String() == a.Result.Interfaces[0].Mac && n.State&netlink.NUD_PERMANENT == 0 {
			learned = true
		}
	}
	if !learned {
		t.Fatalf("the gateway was not re-learned by ARP: %+v", neighs)
	}

	if rows := debugEndpoints(t, n1); len(rows) != 2 || rows[0].IP != a.IP.String() || rows[1].IP != b.IP.String() {
		t.Fatalf("debug endpoints on node1 = %+v, want %s and %s", rows, a.IP, b.IP)
	}
	table, err := n1.Debug("endpoints")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(table, "IP ") || !strings.Contains(table, a.Result.Interfaces[0].Name) || !strings.Contains(table, "2 endpoints") {
		t.Fatalf("debug endpoints table:\n%s", table)
	}

	for _, p := range []*vnet.Pod{a, b, c} {
		if err := p.Del(); err != nil {
			t.Fatal(err)
		}
		// DEL twice, as runtimes do.
		if err := p.Del(); err != nil {
			t.Fatalf("second DEL: %v", err)
		}
	}
	for _, n := range v.Nodes {
		assertNothingLeft(t, n)
	}
}

// TestEBPFCarriesTraffic proves the programs, not the kernel's forwarding,
// move pod traffic: with ip_forward=0 on the nodes pods still talk, on one
// node and across nodes, into the VNet over the cached next hop (the
// fabric answers every ARP with its MAC); once the programs are detached
// they cannot.
func TestEBPFCarriesTraffic(t *testing.T) {
	v := newVNet(t, vnet.Options{PerNode: 4})
	startAgents(t, v)
	a, b, c := echoPods(t, v)
	setForwarding(t, v, false)
	awaitCachedNextHop(t, v)
	before := map[string]map[maps.Reason]maps.Counter{}
	for _, n := range v.Nodes {
		before[n.Name] = counters(t, n)
	}
	pairs := [][2]*vnet.Pod{{a, b}, {a, c}, {c, b}}
	echoPairs(t, "with ip_forward=0 the eBPF path must carry it", 64<<10, pairs...)
	for _, n := range v.Nodes {
		after := counters(t, n)
		if moved(before[n.Name], after, maps.ReasonPodToNIC) == 0 || moved(before[n.Name], after, maps.ReasonPodToNICNeigh) != 0 {
			t.Errorf("%s: pod_to_nic moved %d, pod_to_nic_neigh %d: want every packet into the VNet on the cached next hop", n.Name,
				moved(before[n.Name], after, maps.ReasonPodToNIC), moved(before[n.Name], after, maps.ReasonPodToNICNeigh))
		}
	}

	for _, n := range v.Nodes {
		err := n.NS.Do(func() error {
			atts, err := loader.ListAttachments(n.BPFFS)
			if err != nil {
				return err
			}
			for _, a := range atts {
				if err := loader.Detach(n.BPFFS, a.Hook, a.IfName); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, pair := range pairs {
		if _, err := vnet.TCPEcho(pair[0], pair[1].IP, echoPort, 1024, 2*time.Second); err == nil {
			t.Fatalf("%s -> %s still works with the programs detached and ip_forward=0: the test proves nothing", pair[0].Name, pair[1].Name)
		}
	}

	// The control: the kernel path (the /32 routes) carries the same
	// traffic once forwarding is back on, so the failure above was the
	// missing programs and not a broken setup.
	setForwarding(t, v, true)
	echoPairs(t, "kernel fallback path", 64<<10, pairs...)
}

// assertNothingLeft checks a node holds no veth, /32 route, map entry,
// allocation or pod link pin of podvnet.
func assertNothingLeft(t *testing.T, n *vnet.Node) {
	t.Helper()
	assertNoVethsOrRoutes(t, n)
	out, err := n.Debug("endpoints", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(out) != "[]" {
		t.Errorf("%s: endpoints map not empty: %s", n.Name, out)
	}
	if st := loadState(t, n); len(st.Allocations) != 0 {
		t.Errorf("%s: allocations left: %+v", n.Name, st.Allocations)
	}
	pins, _ := os.ReadDir(n.Paths().LinkDir(maps.HookPod.String()))
	for _, p := range pins {
		t.Errorf("%s: pod link pin %s left behind", n.Name, p.Name())
	}
}

// assertNoVethsOrRoutes checks a node holds no pod veth and no /32 route.
func assertNoVethsOrRoutes(t *testing.T, n *vnet.Node) {
	t.Helper()
	// The agent deletes veths of deleted pods in the background.
	eventually(10*time.Second, func() bool {
		links, _ := n.NS.NL.LinkList()
		for _, l := range links {
			if strings.HasPrefix(l.Attrs().Name, "pv") {
				return false
			}
		}
		pins, _ := os.ReadDir(n.Paths().LinkDir(maps.HookPod.String()))
		return len(pins) == 0
	})
	links, err := n.NS.NL.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, "pv") {
			t.Errorf("%s: veth %s left behind", n.Name, l.Attrs().Name)
		}
	}
	routes, err := n.NS.NL.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range routes {
		if r.Dst != nil {
			if ones, _ := r.Dst.Mask.Size(); ones == 32 {
				t.Errorf("%s: route %s left behind", n.Name, r.Dst)
			}
		}
	}
}
