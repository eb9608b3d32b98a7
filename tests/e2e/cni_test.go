package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/vishvananda/netlink"

	"github.com/podvnet/podvnet/internal/nettest"
	"github.com/podvnet/podvnet/pkg/agentapi"
	"github.com/podvnet/podvnet/pkg/ipam"
	"github.com/podvnet/podvnet/pkg/loader"
	"github.com/podvnet/podvnet/pkg/maps"
	"github.com/podvnet/podvnet/tests/e2e/vnet"
)

var cniVersions = []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"}

// TestCNIVersions walks ADD -> result -> traffic -> CHECK -> DEL -> nothing
// left, through libcni and the real plugin, for every cniVersion a conflist
// may name.
func TestCNIVersions(t *testing.T) {
	// An address per version, the peer's, and a free one for STATUS:
	// released addresses cool down.
	v := newVNet(t, vnet.Options{Nodes: 1, PerNode: len(cniVersions) + 2})
	startAgents(t, v)
	n := v.Nodes[0]

	var info interface{ SupportedVersions() []string }
	err := n.NS.Do(func() (err error) {
		info, err = n.CNIConfig("").GetVersionInfo(context.Background(), "podvnet")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := info.SupportedVersions(); !slices.Equal(got, cniVersions) {
		t.Fatalf("VERSION lists %v, want %v", got, cniVersions)
	}

	peer := addPod(t, n, "peer")
	if _, err := peer.EchoServer(echoPort); err != nil {
		t.Fatal(err)
	}
	dns := types.DNS{Nameservers: []string{"10.0.0.10"}, Search: []string{"default.svc.cluster.local"}, Options: []string{"ndots:5"}}
	for _, ver := range cniVersions {
		t.Run(ver, func(t *testing.T) {
			conf := vnet.ConfOptions{CNIVersion: ver, DNS: map[string]any{
				"nameservers": dns.Nameservers, "search": dns.Search, "options": dns.Options}}
			p, err := n.AddPodWith("v"+strings.ReplaceAll(ver, ".", ""), vnet.PodOptions{Conf: conf})
			if err != nil {
				t.Fatal(err)
			}
			checkResult(t, p, ver, dns)

			if _, err := p.EchoServer(echoPort); err != nil {
				t.Fatal(err)
			}
			echoPairs(t, "cniVersion "+ver, 64<<10, [][2]*vnet.Pod{{p, peer}, {peer, p}}...)

			err = p.Check()
			if older, _ := versionLess(ver, "0.4.0"); older {
				if err == nil {
					t.Fatalf("CHECK with cniVersion %s succeeded; the spec has no CHECK before 0.4.0", ver)
				}
			} else if err != nil {
				t.Fatalf("CHECK of a healthy pod: %v", err)
			}
			if ver == "1.1.0" {
				if err := n.Status(conf); err != nil {
					t.Fatalf("STATUS with a free address: %v", err)
				}
			}

			if err := p.Del(); err != nil {
				t.Fatal(err)
			}
			assertPodGone(t, p)
		})
	}
	if err := peer.Del(); err != nil {
		t.Fatal(err)
	}
	assertNodeClean(t, n)
}

// checkResult checks the ADD result as a runtime and chained plugins read
// it: version, host and pod interfaces, the /32 with its gateway, the
// default route, DNS.
func checkResult(t *testing.T, p *vnet.Pod, ver string, dns types.DNS) {
	t.Helper()
	if got := p.RawResult.Version(); got != ver {
		t.Errorf("result has cniVersion %s, the conflist asked for %s", got, ver)
	}
	r := p.Result
	if len(r.Interfaces) != 2 {
		t.Fatalf("result interfaces %+v, want host veth and pod eth0", r.Interfaces)
	}
	host, pod := r.Interfaces[0], r.Interfaces[1]
	if host.Name != agentapi.HostVethName(p.ContainerID, "eth0") || host.Sandbox != "" || host.Mac == "" {
		t.Errorf("host interface in result: %+v", host)
	}
	if pod.Name != "eth0" || pod.Sandbox != p.NS.Path() || pod.Mac == "" {
		t.Errorf("pod interface in result: %+v, want eth0 in %s", pod, p.NS.Path())
	}
	wantMTU := 0
	if ver == "1.1.0" {
		wantMTU = 1500
	}
	if host.Mtu != wantMTU || pod.Mtu != wantMTU {
		t.Errorf("interface MTUs %d/%d in a %s result, want %d", host.Mtu, pod.Mtu, ver, wantMTU)
	}
	ipc := r.IPs[0]
	if ones, bits := ipc.Address.Mask.Size(); ones != 32 || bits != 32 || !slices.Contains(p.Node.Pool.Secondary, p.IP) {
		t.Errorf("result address %s, want a /32 of the node's secondary IPs", ipc.Address.String())
	}
	if ipc.Gateway.String() != agentapi.GatewayIP || ipc.Interface == nil || *ipc.Interface != 1 {
		t.Errorf("result IP config %+v, want gateway %s on interface 1", ipc, agentapi.GatewayIP)
	}
	if len(r.Routes) != 1 || r.Routes[0].Dst.String() != "0.0.0.0/0" || r.Routes[0].GW.String() != agentapi.GatewayIP {
		t.Errorf("result routes %v, want the default route via %s", r.Routes, agentapi.GatewayIP)
	}
	if !slices.Equal(r.DNS.Nameservers, dns.Nameservers) || !slices.Equal(r.DNS.Search, dns.Search) || !slices.Equal(r.DNS.Options, dns.Options) {
		t.Errorf("result DNS %+v, want the config's %+v", r.DNS, dns)
	}
}

// TestChainPortmapBandwidth chains the reference bandwidth and portmap
// plugins after podvnet, as a kubelet conflist with hostPort and bandwidth
// support does: a hostPort reaches the pod from outside the VNet and from
// the node, CHECK passes for the whole chain, and DEL removes the mapping.
func TestChainPortmapBandwidth(t *testing.T) {
	v := newVNet(t, vnet.Options{Nodes: 1, PerNode: 4})
	startAgents(t, v)
	n := v.Nodes[0]
	const hostPort, plainHostPort = 8080, 8081
	conf := vnet.ConfOptions{CNIVersion: "1.0.0", Chain: []map[string]any{
		{"type": "bandwidth", "capabilities": map[string]bool{"bandwidth": true}},
		{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}, "snat": true},
	}}
	mapping := func(host int) map[string]any {
		return map[string]any{"portMappings": []map[string]any{{"hostPort": host, "containerPort": echoPort, "protocol": "tcp"}}}
	}
	// web is shaped and published; plain is published only; client talks
	// to web from the same node.
	args := mapping(hostPort)
	args["bandwidth"] = map[string]any{"ingressRate": 1_000_000_000, "ingressBurst": 100_000_000,
		"egressRate": 1_000_000_000, "egressBurst": 100_000_000}
	p, err := n.AddPodWith("web", vnet.PodOptions{Conf: conf, CapabilityArgs: args})
	if err != nil {
		t.Fatal(err)
	}
	plain, err := n.AddPodWith("plain", vnet.PodOptions{Conf: conf, CapabilityArgs: mapping(plainHostPort)})
	if err != nil {
		t.Fatal(err)
	}
	client := addPod(t, n, "client")
	for _, pod := range []*vnet.Pod{p, plain} {
		if _, err := pod.EchoServer(echoPort); err != nil {
			t.Fatal(err)
		}
	}
	hostVeth, err := n.NS.NL.LinkByName(agentapi.HostVethName(p.ContainerID, "eth0"))
	if err != nil {
		t.Fatal(err)
	}
	tbf := func() (netlink.Qdisc, uint64) {
		qdiscs, err := n.NS.NL.QdiscList(hostVeth)
		if err != nil {
			t.Fatal(err)
		}
		for _, q := range qdiscs {
			if q.Type() == "tbf" {
				return q, q.Attrs().Statistics.Basic.Bytes
			}
		}
		return nil, 0
	}
	if q, _ := tbf(); q == nil {
		t.Fatalf("bandwidth plugin left no tbf qdisc on %s", hostVeth.Attrs().Name)
	}
	ifbBytes := func() uint64 {
		links, _ := n.NS.NL.LinkList()
		for _, l := range links {
			if l.Type() == "ifb" && l.Attrs().Statistics != nil {
				return l.Attrs().Statistics.TxBytes
			}
		}
		t.Fatal("bandwidth plugin made no ifb for the pod's egress")
		return 0
	}

	// Shaping holds: what a pod on the same node sends the shaped pod
	// (which the fast path would carry straight into it) crosses the tbf on
	// its host veth, and what the shaped pod sends crosses the ifb.
	_, tbf0 := tbf()
	ifb0 := ifbBytes()
	const size = 1 << 20
	if _, err := vnet.TCPEcho(client, p.IP, echoPort, size, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, tbf1 := tbf(); tbf1-tbf0 < size {
		t.Errorf("the tbf shaping %s saw %d bytes of a %d-byte transfer into the pod: shaping bypassed", p.Name, tbf1-tbf0, size)
	}
	if ifb1 := ifbBytes(); ifb1-ifb0 < size {
		t.Errorf("the ifb shaping %s's egress saw %d bytes of a %d-byte echo: shaping bypassed", p.Name, ifb1-ifb0, size)
	}

	// hostPorts: from outside the VNet (a TEST-NET address behind the
	// fabric, as an Internet client would be), from the node itself, and
	// from a VM inside the VNet, whose replies the programs must hand to
	// conntrack to undo portmap's DNAT.
	outside := netip.MustParseAddr("192.0.2.10")
	lo, err := v.Fabric.NL.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	if err := v.Fabric.NL.AddrAdd(lo, &netlink.Addr{IPNet: &net.IPNet{IP: outside.AsSlice(), Mask: net.CIDRMask(32, 32)}}); err != nil {
		t.Fatal(err)
	}
	vm := addHost(t, v, "vm", vnet.HostOptions{Addr: netip.MustParsePrefix("10.240.200.10/16")})
	dialHostPort := func(from string, port int) error {
		addr := net.JoinHostPort(n.Pool.Primary.String(), fmt.Sprint(port))
		switch from {
		case "outside":
			return v.Fabric.Do(func() error { return echoOnce(addr, &net.TCPAddr{IP: outside.AsSlice()}) })
		case "node":
			return n.NS.Do(func() error { return echoOnce(addr, nil) })
		default:
			return vm.Do(func() error { return echoOnce(addr, nil) })
		}
	}
	for _, port := range []int{hostPort, plainHostPort} {
		for _, from := range []string{"outside", "node", "VM in the VNet"} {
			if err := dialHostPort(from, port); err != nil {
				t.Errorf("hostPort %d from %s: %v", port, from, err)
			}
		}
	}
	if err := p.Check(); err != nil {
		t.Fatalf("CHECK of the chain: %v", err)
	}

	for _, pod := range []*vnet.Pod{p, plain, client} {
		if err := pod.Del(); err != nil {
			t.Fatal(err)
		}
	}
	if err := dialHostPort("outside", hostPort); err == nil {
		t.Fatal("the hostPort still reaches something after DEL")
	}
	assertNodeClean(t, n)
}

// echoOnce connects to addr (from local when set) and checks a message
// comes back from the echo server.
func echoOnce(addr string, local net.Addr) error {
	d := net.Dialer{Timeout: 3 * time.Second, LocalAddr: local}
	c, err := d.Dial("tcp4", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	msg := []byte("hostport says hello")
	if _, err := c.Write(msg); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return fmt.Errorf("read echo: %w", err)
	}
	if string(got) != string(msg) {
		return fmt.Errorf("echo %q, sent %q", got, msg)
	}
	return nil
}

// TestDelIdempotent: DEL succeeds repeated, with the netns gone, with an
// empty CNI_NETNS (runtimes send one at sandbox removal) and for an
// attachment never added; each time nothing is left.
func TestDelIdempotent(t *testing.T) {
	v := newVNet(t, vnet.Options{Nodes: 1, PerNode: 4})
	startAgents(t, v)
	n := v.Nodes[0]

	a := addPod(t, n, "a")
	for i := range 3 {
		if err := a.Del(); err != nil {
			t.Fatalf("DEL #%d: %v", i+1, err)
		}
	}
	assertPodGone(t, a)

	b := addPod(t, n, "b")
	if err := b.DeleteNetns(); err != nil {
		t.Fatal(err)
	}
	if err := b.Del(); err != nil {
		t.Fatalf("DEL with the netns gone: %v", err)
	}
	assertPodGone(t, b)

	c := addPod(t, n, "c")
	if err := c.DelWith(vnet.DelOptions{NoNetns: true}); err != nil {
		t.Fatalf("DEL with an empty CNI_NETNS: %v", err)
	}
	assertPodGone(t, c)
	if err := c.Del(); err != nil {
		t.Fatalf("DEL with the netns after one without: %v", err)
	}

	list := mustConfList(t, n.ConfList())
	err := n.NS.Do(func() error {
		return n.CNIConfig(t.TempDir()).DelNetworkList(context.Background(), list,
			&libcni.RuntimeConf{ContainerID: "never-added-0123456789", IfName: "eth0"})
	})
	if err != nil {
		t.Fatalf("DEL of an attachment never added: %v", err)
	}
	assertNodeClean(t, n)
}

// TestDelWhileAgentDown: with the agent down, `debug endpoints` still names
// the pods, DEL succeeds (the plugin removes the veth and queues the
// release), and the restarted agent releases every queued address: all of
// the pool can be handed out again. A release queued while the agent runs
// (it was unreachable to that plugin) is picked up without a restart.
func TestDelWhileAgentDown(t *testing.T) {
	v := newVNet(t, vnet.Options{Nodes: 1, PerNode: 3})
	n := v.Nodes[0]
	noCooldown := []string{"--ip-cooldown", "0s"}
	if err := n.StartAgent(noCooldown...); err != nil {
		t.Fatal(err)
	}
	a := addPod(t, n, "a")
	b := addPod(t, n, "b")
	n.StopAgent(syscall.SIGKILL)

	rows := debugEndpoints(t, n)
	if len(rows) != 2 || rows[0].PodNamespace != "default" || rows[0].PodName != "a" || rows[1].PodName != "b" {
		t.Fatalf("debug endpoints with the agent down: %+v, want default/a and default/b", rows)
	}
	table, err := n.Debug("endpoints")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(table, " POD ") || !strings.Contains(table, "default/a") || !strings.Contains(table, "default/b") {
		t.Fatalf("debug endpoints table lacks the POD column:\n%s", table)
	}

	if err := a.Del(); err != nil {
		t.Fatalf("DEL with the agent down: %v", err)
	}
	if err := a.Del(); err != nil {
		t.Fatalf("second DEL with the agent down: %v", err)
	}
	if err := b.DeleteNetns(); err != nil {
		t.Fatal(err)
	}
	if err := b.Del(); err != nil {
		t.Fatalf("DEL with the agent down and the netns gone: %v", err)
	}
	for _, p := range []*vnet.Pod{a, b} {
		if _, err := n.NS.NL.LinkByName(agentapi.HostVethName(p.ContainerID, "eth0")); err == nil {
			t.Errorf("%s: veth left after DEL with the agent down", p.Name)
		}
	}
	if q := queued(t, n); len(q) != 2 {
		t.Fatalf("%d releases queued in %s, want 2 (one per pod, however many DELs)", len(q), n.Paths().DelQueueDir())
	}
	if st := loadState(t, n); len(st.Allocations) != 2 {
		t.Fatalf("allocations while the agent is down: %+v; they must stay until the agent releases them", st.Allocations)
	}

	if err := n.StartAgent(noCooldown...); err != nil {
		t.Fatal(err)
	}
	assertNodeClean(t, n)
	// No IP leaked: the whole pool is there for new pods.
	var got []netip.Addr
	var fresh []*vnet.Pod
	for i := range len(n.Pool.Secondary) {
		p := addPod(t, n, fmt.Sprintf("new%d", i))
		got = append(got, p.IP)
		fresh = append(fresh, p)
	}
	slices.SortFunc(got, netip.Addr.Compare)
	if !slices.Equal(got, n.Pool.Secondary) {
		t.Fatalf("after the restart pods got %v, want the whole pool %v", got, n.Pool.Secondary)
	}
	for _, p := range fresh {
		if err := p.Del(); err != nil {
			t.Fatal(err)
		}
	}

	// A plugin that cannot reach the running agent queues; the agent
	// notices without being restarted.
	last := addPod(t, n, "last")
	if err := last.DelWith(vnet.DelOptions{Conf: &vnet.ConfOptions{Socket: filepath.Join(n.Dir, "nobody.sock")}}); err != nil {
		t.Fatalf("DEL with an unreachable agent: %v", err)
	}
	if q := queued(t, n); len(q) != 1 {
		t.Fatalf("queued releases: %v, want 1", q)
	}
	eventually(60*time.Second, func() bool { return len(queued(t, n)) == 0 })
	if st := loadState(t, n); slices.ContainsFunc(st.Allocations, func(al ipam.Allocation) bool { return al.IP == last.IP }) {
		t.Fatalf("%s still allocated: the running agent did not replay the queued release", last.IP)
	}
}

// TestParallelAdds: thirty ADDs at once, as kubelet starts pods, give
// thirty distinct IPs; STATUS then says the node is full (51) and a 31st
// ADD fails with "try again later" (11) naming the node's limit and leaves
// nothing behind.
func TestParallelAdds(t *testing.T) {
	v := newVNet(t, vnet.Options{Nodes: 1, PerNode: 30, CNIVersion: "1.1.0"})
	startAgents(t, v)
	n := v.Nodes[0]
	if err := n.Status(vnet.ConfOptions{}); err != nil {
		t.Fatalf("STATUS of an empty node: %v", err)
	}

	pods := make([]*vnet.Pod, 30)
	errs := make([]error, 30)
	var wg sync.WaitGroup
	for i := range pods {
		wg.Go(func() { pods[i], errs[i] = n.AddPod(fmt.Sprintf("p%02d", i)) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	seen := map[netip.Addr]string{}
	for _, p := range pods {
		if other, dup := seen[p.IP]; dup {
			t.Fatalf("%s given to %s and %s", p.IP, other, p.Name)
		}
		seen[p.IP] = p.Name
	}

	err := n.Status(vnet.ConfOptions{})
	if e := cniError(t, err); e.Code != types.ErrLimitedConnectivity || !strings.Contains(e.Msg, "limit of 30") {
		t.Fatalf("STATUS of a full node: %v, want code 51 naming the limit", err)
	}
	extra, err := n.AddPod("p30")
	e := cniError(t, err)
	if e.Code != types.ErrTryAgainLater || !strings.Contains(e.Msg, "30") || !strings.Contains(e.Msg, "limit") {
		t.Fatalf("31st ADD: %v, want code 11 naming the node's limit of 30", err)
	}
	if _, err := n.NS.NL.LinkByName(agentapi.HostVethName(extra.ContainerID, "eth0")); err == nil {
		t.Fatal("the failed 31st ADD left its veth")
	}

	for i, p := range pods {
		wg.Go(func() { errs[i] = p.Del() })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if err := extra.Del(); err != nil {
		t.Fatal(err)
	}
	assertNodeClean(t, n)
}

// TestStatus: 50 while the agent is unreachable, naming the socket; ready
// once it serves.
func TestStatus(t *testing.T) {
	v := newVNet(t, vnet.Options{Nodes: 1, PerNode: 2, CNIVersion: "1.1.0"})
	n := v.Nodes[0]
	err := n.Status(vnet.ConfOptions{})
	if e := cniError(t, err); e.Code != types.ErrPluginNotAvailable || !strings.Contains(e.Msg, n.Paths().Socket) {
		t.Fatalf("STATUS without an agent: %v, want code 50 naming %s", err, n.Paths().Socket)
	}
	startAgents(t, v)
	if err := n.Status(vnet.ConfOptions{}); err != nil {
		t.Fatalf("STATUS with the agent serving: %v", err)
	}
}

// TestGC: GC with the runtime's valid attachments releases every other
// endpoint (allocation, veth, route, map entry, pin) and strays, and leaves
// the valid pod working.
func TestGC(t *testing.T) {
	v := newVNet(t, vnet.Options{Nodes: 2, PerNode: 4})
	startAgents(t, v)
	n := v.Nodes[0]
	keep := addPod(t, n, "keep")
	gone := []*vnet.Pod{addPod(t, n, "gone1"), addPod(t, n, "gone2")}
	peer := addPod(t, v.Nodes[1], "peer")
	if _, err := peer.EchoServer(echoPort); err != nil {
		t.Fatal(err)
	}
	// A veth named like podvnet's that no endpoint owns (an ADD that
	// crashed half-way).
	stray := "pv0123456789ab"
	if err := n.NS.NL.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: stray}, PeerName: "stray-peer"}); err != nil {
		t.Fatal(err)
	}

	// An empty cache: libcni would DEL what it cached itself; the plugin's
	// GC must find the rest on its own.
	valid := []types.GCAttachment{{ContainerID: keep.ContainerID, IfName: "eth0"}}
	if err := n.GC(vnet.ConfOptions{CNIVersion: "1.1.0"}, t.TempDir(), valid); err != nil {
		t.Fatal(err)
	}
	for _, p := range gone {
		assertPodGone(t, p)
	}
	if _, err := n.NS.NL.LinkByName(stray); err == nil {
		t.Error("GC left the stray veth")
	}
	if err := keep.Check(); err != nil {
		t.Fatalf("CHECK of the valid pod after GC: %v", err)
	}
	if _, err := vnet.TCPEcho(keep, peer.IP, echoPort, 64<<10, 10*time.Second); err != nil {
		t.Fatalf("the valid pod after GC: %v", err)
	}
	if st := loadState(t, n); len(st.Allocations) != 1 || st.Allocations[0].IP != keep.IP {
		t.Fatalf("allocations after GC: %+v, want only %s", st.Allocations, keep.IP)
	}

	// The runtime's usual GC (its cache knows the pods) and then every
	// pod's DEL still succeed.
	if err := n.GC(vnet.ConfOptions{CNIVersion: "1.1.0"}, "", valid); err != nil {
		t.Fatal(err)
	}
	for _, p := range append(gone, keep) {
		if err := p.Del(); err != nil {
			t.Fatal(err)
		}
	}
	assertNodeClean(t, n)
}

// TestCheckNamesWhatIsWrong breaks one thing at a time and expects CHECK
// to fail naming it (and to pass before).
func TestCheckNamesWhatIsWrong(t *testing.T) {
	v := newVNet(t, vnet.Options{Nodes: 1, PerNode: 2})
	n := v.Nodes[0]
	if err := n.StartAgent("--ip-cooldown", "0s"); err != nil {
		t.Fatal(err)
	}
	hostLink := func(t *testing.T, p *vnet.Pod) netlink.Link {
		l, err := n.NS.NL.LinkByName(agentapi.HostVethName(p.ContainerID, "eth0"))
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	podLink := func(t *testing.T, p *vnet.Pod) netlink.Link {
		l, err := p.NS.NL.LinkByName("eth0")
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	tests := []struct {
		name    string
		breakIt func(t *testing.T, p *vnet.Pod) error
		want    string
	}{
		{"pod address removed", func(t *testing.T, p *vnet.Pod) error {
			return p.NS.NL.AddrDel(podLink(t, p), &netlink.Addr{IPNet: &net.IPNet{IP: p.IP.AsSlice(), Mask: net.CIDRMask(32, 32)}})
		}, "lacks its address " + "%IP%/32"},
		{"pod default route removed", func(t *testing.T, p *vnet.Pod) error {
			return p.NS.NL.RouteDel(&netlink.Route{LinkIndex: podLink(t, p).Attrs().Index, Dst: &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}})
		}, "no default route via 169.254.1.1 dev eth0"},
		{"pod gateway neighbour removed", func(t *testing.T, p *vnet.Pod) error {
			return p.NS.NL.NeighDel(&netlink.Neigh{LinkIndex: podLink(t, p).Attrs().Index, IP: net.ParseIP(agentapi.GatewayIP)})
		}, "no permanent neighbour entry 169.254.1.1"},
		{"pod interface deleted", func(t *testing.T, p *vnet.Pod) error {
			return p.NS.NL.LinkDel(podLink(t, p))
		}, "pod interface eth0 is missing"},
		{"host veth down", func(t *testing.T, p *vnet.Pod) error {
			return n.NS.NL.LinkSetDown(hostLink(t, p))
		}, "host veth %HOST% is down"},
		{"host route removed", func(t *testing.T, p *vnet.Pod) error {
			return n.NS.NL.RouteDel(&netlink.Route{LinkIndex: hostLink(t, p).Attrs().Index, Dst: &net.IPNet{IP: p.IP.AsSlice(), Mask: net.CIDRMask(32, 32)}, Scope: netlink.SCOPE_LINK})
		}, "no route %IP%/32 dev %HOST%"},
		{"map entry removed", func(t *testing.T, p *vnet.Pod) error {
			return deleteEndpoint(n, p.IP)
		}, "endpoints map has no entry for %IP%"},
		{"from_pod detached", func(t *testing.T, p *vnet.Pod) error {
			name := hostLink(t, p).Attrs().Name
			return n.NS.Do(func() error { return loader.Detach(n.BPFFS, maps.HookPod, name) })
		}, "from_pod is not attached to %HOST%"},
		{"endpoint released at the agent", func(t *testing.T, p *vnet.Pod) error {
			return agentapi.NewClient(n.Paths().Socket).Del(context.Background(), agentapi.DelRequest{
				Network: vnet.NetName, ContainerID: p.ContainerID, IfName: "eth0"})
		}, "the agent holds no address"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := addPod(t, n, fmt.Sprintf("c%d", i))
			if err := p.Check(); err != nil {
				t.Fatalf("CHECK before breaking anything: %v", err)
			}
			if err := tt.breakIt(t, p); err != nil {
				t.Fatal(err)
			}
			want := strings.NewReplacer("%IP%", p.IP.String(), "%HOST%", agentapi.HostVethName(p.ContainerID, "eth0")).Replace(tt.want)
			err := p.Check()
			if e := cniError(t, err); !strings.Contains(e.Msg, want) {
				t.Fatalf("CHECK: %v\nwant it to say %q", err, want)
			}
			if err := p.Del(); err != nil {
				t.Fatal(err)
			}
			assertPodGone(t, p)
		})
	}
	assertNodeClean(t, n)
}

// TestAddFailures: an ADD that cannot complete answers the code a runtime
// acts on, with a message a person can act on, and leaves nothing.
func TestAddFailures(t *testing.T) {
	v := newVNet(t, vnet.Options{Nodes: 1, PerNode: 2})
	n := v.Nodes[0]

	// No agent yet: try again later, naming the socket.
	p, err := n.AddPod("noagent")
	if e := cniError(t, err); e.Code != types.ErrTryAgainLater || !strings.Contains(e.Msg, n.Paths().Socket) {
		t.Fatalf("ADD without an agent: %v, want code 11 naming %s", err, n.Paths().Socket)
	}
	if _, err := n.NS.NL.LinkByName(agentapi.HostVethName(p.ContainerID, "eth0")); err == nil {
		t.Fatal("ADD without an agent left its veth")
	}
	links, _ := p.NS.NL.LinkList()
	for _, l := range links {
		if l.Attrs().Name != "lo" {
			t.Errorf("ADD without an agent left %s in the pod", l.Attrs().Name)
		}
	}

	startAgents(t, v)
	// The netns is gone before ADD.
	q, err := n.AddPod("nonetns")
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Del(); err != nil {
		t.Fatal(err)
	}
	if err := q.DeleteNetns(); err != nil {
		t.Fatal(err)
	}
	err = q.Add()
	if e := cniError(t, err); e.Code != types.ErrInvalidNetNS || !strings.Contains(e.Msg, q.NS.Path()) {
		t.Fatalf("ADD into a missing netns: %v, want code 8 naming %s", err, q.NS.Path())
	}
	if err := q.Del(); err != nil {
		t.Fatal(err)
	}
	assertNodeClean(t, n)
}

// TestPluginOutput runs the binary the way a runtime does and checks that
// stdout carries exactly one JSON document, with logs on stderr: a bad
// config is error 7 naming the field.
func TestPluginOutput(t *testing.T) {
	v := newVNet(t, vnet.Options{Nodes: 1, PerNode: 2})
	n := v.Nodes[0]
	pod := nettest.NewNS(t, v.Opts.Prefix+"-out")
	tests := []struct {
		name, conf string
		code       uint
		msg        string
	}{
		{"bad socket type", `{"cniVersion":"1.0.0","name":"podvnet","type":"podvnet","socket":5}`, 7, `field "socket"`},
		{"relative queue dir", `{"cniVersion":"1.0.0","name":"podvnet","type":"podvnet","delQueueDir":"q"}`, 7, `field "delQueueDir"`},
		{"bad log level", `{"cniVersion":"1.0.0","name":"podvnet","type":"podvnet","logLevel":"loud"}`, 7, `field "logLevel"`},
		{"bad nameserver", `{"cniVersion":"1.0.0","name":"podvnet","type":"podvnet","dns":{"nameservers":["x"]}}`, 7, `field "dns.nameservers[0]"`},
		{"agent unreachable", `{"cniVersion":"1.0.0","name":"podvnet","type":"podvnet","socket":"` + n.Paths().Socket + `"}`, 11, n.Paths().Socket},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stdout, stderr, err := runPlugin(n, "ADD", pod.Path(), tt.conf)
			if err == nil {
				t.Fatal("ADD succeeded")
			}
			var e types.Error
			dec := json.NewDecoder(strings.NewReader(stdout))
			dec.DisallowUnknownFields()
			if derr := dec.Decode(&e); derr != nil || dec.More() {
				t.Fatalf("stdout is not one CNI error document (%v):\n%s", derr, stdout)
			}
			if e.Code != tt.code || !strings.Contains(e.Msg, tt.msg) {
				t.Fatalf("error %d %q, want %d mentioning %q", e.Code, e.Msg, tt.code, tt.msg)
			}
			if tt.code == 11 && !strings.Contains(stderr, `"level":"error"`) {
				t.Errorf("no log on stderr:\n%s", stderr)
			}
		})
	}
}

func versionLess(a, b string) (bool, error) {
	ge, err := version.GreaterThanOrEqualTo(a, b)
	return !ge, err
}

func mustConfList(t *testing.T, b []byte) *libcni.NetworkConfigList {
	t.Helper()
	list, err := libcni.ConfListFromBytes(b)
	if err != nil {
		t.Fatal(err)
	}
	return list
}

// cniError is the CNI error a plugin answered, failing t if err is not one.
func cniError(t *testing.T, err error) *types.Error {
	t.Helper()
	var e *types.Error
	if !errors.As(err, &e) {
		t.Fatalf("got %v, want a CNI error", err)
	}
	return e
}

// runPlugin execs the plugin in the node's namespace as a runtime does,
// with the config on stdin, and returns stdout and stderr apart.
func runPlugin(n *vnet.Node, command, netns, conf string) (stdout, stderr string, err error) {
	cmd := exec.Command("nsenter", "--net="+n.NS.Path(), filepath.Join(binDir, "podvnet"))
	cmd.Env = []string{"CNI_COMMAND=" + command, "CNI_CONTAINERID=out-0123456789", "CNI_NETNS=" + netns,
		"CNI_IFNAME=eth0", "CNI_PATH=" + binDir, "CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=out"}
	cmd.Stdin = strings.NewReader(conf)
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

type endpointRow struct {
	IP           string `json:"ip"`
	PodNamespace string `json:"pod_namespace"`
	PodName      string `json:"pod_name"`
	IfName       string `json:"ifname"`
}

func debugEndpoints(t *testing.T, n *vnet.Node) []endpointRow {
	t.Helper()
	out, err := n.Debug("endpoints", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var rows []endpointRow
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("debug endpoints -o json: %v\n%s", err, out)
	}
	return rows
}

// queued lists the releases queued for the node's agent.
func queued(t *testing.T, n *vnet.Node) []string {
	t.Helper()
	entries, err := agentapi.DelQueue{Dir: n.Paths().DelQueueDir()}.List()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, filepath.Base(e.Path))
	}
	return names
}

// deleteEndpoint removes ip's entry from the node's endpoints map behind
// the agent's back (maps.OpenPinned opens read-only).
func deleteEndpoint(n *vnet.Node, ip netip.Addr) error {
	m, err := ebpf.LoadPinnedMap(n.Paths().MapPin(maps.EndpointsMap), nil)
	if err != nil {
		return err
	}
	defer m.Close()
	return maps.NewEndpoints(m).Delete(ip)
}

func loadState(t *testing.T, n *vnet.Node) *ipam.State {
	t.Helper()
	st, err := ipam.FileStore{Path: n.Paths().StateFile()}.Load()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// assertPodGone checks nothing of one pod's attachment is left on its node:
// host veth, /32 route, map entry, allocation, link pin.
func assertPodGone(t *testing.T, p *vnet.Pod) {
	t.Helper()
	n := p.Node
	host := agentapi.HostVethName(p.ContainerID, "eth0")
	// The agent deletes the veth (and with it the program's pin) right
	// after DEL returns, in the background.
	eventually(10*time.Second, func() bool {
		_, lerr := n.NS.NL.LinkByName(host)
		_, perr := os.Stat(n.Paths().LinkPin(maps.HookPod.String(), host))
		return lerr != nil && perr != nil
	})
	if _, err := n.NS.NL.LinkByName(host); err == nil {
		t.Errorf("%s: host veth %s left", p.Name, host)
	}
	if _, err := os.Stat(n.Paths().LinkPin(maps.HookPod.String(), host)); err == nil {
		t.Errorf("%s: link pin of %s left", p.Name, host)
	}
	if !p.IP.IsValid() {
		return
	}
	routes, err := n.NS.NL.RouteListFiltered(netlink.FAMILY_V4,
		&netlink.Route{Dst: &net.IPNet{IP: p.IP.AsSlice(), Mask: net.CIDRMask(32, 32)}}, netlink.RT_FILTER_DST)
	if err != nil {
		t.Fatal(err)
	}
	if len(routes) > 0 {
		t.Errorf("%s: route to %s left: %v", p.Name, p.IP, routes)
	}
	for _, r := range debugEndpoints(t, n) {
		if r.IP == p.IP.String() {
			t.Errorf("%s: map entry for %s left", p.Name, p.IP)
		}
	}
	for _, al := range loadState(t, n).Allocations {
		if al.ContainerID == p.ContainerID {
			t.Errorf("%s: allocation of %s left", p.Name, al.IP)
		}
	}
}

// assertNodeClean is assertNothingLeft plus an empty DEL queue and no
// results left in the runtime's cache.
func assertNodeClean(t *testing.T, n *vnet.Node) {
	t.Helper()
	assertNothingLeft(t, n)
	if q := queued(t, n); len(q) > 0 {
		t.Errorf("%s: releases still queued: %v", n.Name, q)
	}
	cached, _ := os.ReadDir(filepath.Join(n.Dir, "cni-cache", "results"))
	for _, c := range cached {
		t.Errorf("%s: libcni still caches %s", n.Name, c.Name())
	}
}
