package e2e

import (
	"bytes"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/podvnet/podvnet/pkg/maps"
	"github.com/podvnet/podvnet/tests/e2e/vnet"
)

// The next hop into the VNet: cached where the fabric answers every address
// with one MAC (the simulated VNet, as Azure), resolved by the kernel where
// hosts answer for themselves (a plain L2 segment).

// awaitNextHop waits until n's from_pod writes want as the next hop (nil:
// the kernel resolves it) and fails t if it never does; the timeout only
// bounds a failure.
func awaitNextHop(t *testing.T, n *vnet.Node, want net.HardwareAddr) {
	t.Helper()
	var got net.HardwareAddr
	var err error
	if !eventually(10*time.Second, func() bool {
		got, err = n.NextHop()
		return err == nil && bytes.Equal(got, want)
	}) {
		t.Fatalf("%s: next hop %q (%v), want %q", n.Name, got, err, want)
	}
}

// fabricMAC is what the fabric answers n's ARP requests with.
func fabricMAC(t *testing.T, v *vnet.VNet, n *vnet.Node) net.HardwareAddr {
	t.Helper()
	m, err := v.FabricMAC(n)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// awaitCachedNextHop waits until every node sends into the VNet with its
// fabric's MAC, and checks `debug config` says so.
func awaitCachedNextHop(t *testing.T, v *vnet.VNet) {
	t.Helper()
	for _, n := range v.Nodes {
		m := fabricMAC(t, v, n)
		awaitNextHop(t, n, m)
		out, err := n.Debug("config")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out, m.String()+" (cached: bpf_redirect)") || !strings.Contains(out, "next_hop_mode") {
			t.Errorf("%s: debug config does not show the cached next hop %s:\n%s", n.Name, m, out)
		}
	}
}

// moved is how many packets each reason counted between two readings.
func moved(before, after map[maps.Reason]maps.Counter, r maps.Reason) uint64 {
	return after[r].Packets - before[r].Packets
}

// TestGatewayMACChange: the fabric's MAC changes under a UDP flow (the
// fabric announces it, as a router does): the agent follows the neighbour
// entry, and what is lost is one run of datagrams while the entry changes,
// nothing after it.
func TestGatewayMACChange(t *testing.T) {
	v := newVNet(t, vnet.Options{PerNode: 4})
	startAgents(t, v)
	n1, n2 := v.Nodes[0], v.Nodes[1]
	a, c := addPod(t, n1, "a"), addPod(t, n2, "c")
	awaitCachedNextHop(t, v)
	newMAC, _ := net.ParseMAC("02:fa:b0:00:00:01")

	ac, ca := startFloods(t, a, c)
	time.Sleep(300 * time.Millisecond)
	if err := v.SetFabricMAC(n1, newMAC); err != nil {
		t.Fatal(err)
	}
	awaitNextHop(t, n1, newMAC)
	// From here on a->c datagrams leave with the new MAC.
	taken := ac.Sent()
	before := counters(t, n1)
	time.Sleep(500 * time.Millisecond)
	for _, f := range []struct {
		name string
		flow *vnet.UDPFlow
		// after this sequence number nothing may be lost
		taken uint64
	}{{"a->c", ac, taken}, {"c->a", ca, 0}} {
		sent, missing, err := f.flow.Stop()
		if err != nil {
			t.Fatalf("%s: %v", f.name, err)
		}
		if sent < floodPPS/2 || sent <= f.taken {
			t.Fatalf("%s: only %d datagrams sent: the flow did not run", f.name, sent)
		}
		// Datagrams sent to the old MAC before the agent's update (and the
		// fabric's re-resolution of node1, the other way) may be lost:
		// one run, nothing once the agent took the new MAC.
		if len(missing) > 0 && missing[len(missing)-1]-missing[0] != uint64(len(missing)-1) {
			t.Errorf("%s: %d of %d datagrams lost in more than one run (first %v, last %d): loss beyond the neighbour update",
				f.name, len(missing), sent, missing[:min(10, len(missing))], missing[len(missing)-1])
		}
		if f.taken > 0 && len(missing) > 0 && missing[len(missing)-1] >= f.taken {
			t.Errorf("%s: datagram %d lost, sent after the agent took the new MAC (from %d on)", f.name, missing[len(missing)-1], f.taken)
		}
		t.Logf("%s: %d datagrams, %d lost", f.name, sent, len(missing))
	}
	if got := moved(before, counters(t, n1), maps.ReasonPodToNIC); got == 0 {
		t.Error("node1 sent nothing over the cached next hop after the change")
	}
}

// TestNextHopOnAPlainL2Segment: a host on node1's segment that answers ARP
// with its own MAC, unknown to the fabric, as on a plain L2 network. While
// node1 has not learned it, the cached next hop sends pods' packets for it
// to the fabric, which cannot deliver them. Once node1 learns it (the host
// talks to the node), the agent leaves the next hop to the kernel and pods
// reach the host directly, over the eBPF path (ip_forward=0); when the
// entry goes, the cached next hop comes back.
func TestNextHopOnAPlainL2Segment(t *testing.T) {
	v := newVNet(t, vnet.Options{PerNode: 4})
	startAgents(t, v)
	n1 := v.Nodes[0]
	a := addPod(t, n1, "a")
	hostIP := netip.MustParseAddr("10.240.0.99")
	host, err := v.AddSegmentHost("l2host", n1, hostIP)
	if err != nil {
		t.Fatal(err)
	}
	whoami(t, v, host)
	awaitCachedNextHop(t, v)
	setForwarding(t, v, false)

	if seen, err := vnet.WhoAmI(a, hostPort(hostIP, whoamiPort), 2*time.Second); err == nil {
		t.Fatalf("the fabric delivered to a host it does not know (seen as %s): the segment host is miswired", seen)
	}

	// The host talks to node1 (a connection node1 refuses): node1 learns
	// the host's MAC from its ARP request.
	if _, err := vnet.WhoAmI(host, hostPort(n1.Pool.Primary, whoamiPort), 2*time.Second); err == nil {
		t.Fatal("node1 answered on the whoami port: nothing listens there")
	}
	awaitNextHop(t, n1, nil)
	out, err := n1.Debug("config")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "not cached: the kernel resolves it (bpf_redirect_neigh)") {
		t.Errorf("debug config does not show the kernel's resolution:\n%s", out)
	}
	if !bytes.Contains(mustReadFile(t, n1.AgentLog()), []byte("10.240.0.99 answers with")) {
		t.Errorf("the agent's log does not say why it left the next hop to the kernel")
	}

	before := counters(t, n1)
	if seen := askWhoAmI(t, a, hostPort(hostIP, whoamiPort)); seen != a.IP.String() {
		t.Errorf("the host saw %s, want the pod's own %s", seen, a.IP)
	}
	after := counters(t, n1)
	if moved(before, after, maps.ReasonPodToNICNeigh) == 0 || moved(before, after, maps.ReasonPodToNIC) != 0 {
		t.Errorf("pod -> host: pod_to_nic_neigh moved %d, pod_to_nic %d; want the kernel's resolution only",
			moved(before, after, maps.ReasonPodToNICNeigh), moved(before, after, maps.ReasonPodToNIC))
	}

	// Node1 forgets the host: the fabric answers everything again.
	eth0, err := n1.NS.NL.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if err := n1.NS.NL.NeighDel(&netlink.Neigh{LinkIndex: eth0.Attrs().Index, Family: netlink.FAMILY_V4, IP: hostIP.AsSlice()}); err != nil {
		t.Fatal(err)
	}
	awaitNextHop(t, n1, fabricMAC(t, v, n1))
}
