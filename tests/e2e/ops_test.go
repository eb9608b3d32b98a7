package e2e

import (
	"bytes"
	"encoding/json"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"

	"github.com/podvnet/podvnet/pkg/loader"
	"github.com/podvnet/podvnet/pkg/maps"
	"github.com/podvnet/podvnet/tests/e2e/vnet"
)

// metric returns the value of the first sample of /metrics matching name
// and all label pairs.
func metric(t *testing.T, n *vnet.Node, name string, labels ...string) float64 {
	t.Helper()
	v, err := n.Metric(name, labels...)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestHealthAndMetrics: /healthz answers while the agent waits for its NIC,
// /readyz says why it is not ready until the programs are attached and the
// socket serves, and /metrics shows the pool, CNI requests and data path
// counters that move with traffic.
func TestHealthAndMetrics(t *testing.T) {
	v := newVNet(t, vnet.Options{PerNode: 4})
	n1, n2 := v.Nodes[0], v.Nodes[1]
	if err := n2.StartAgent(); err != nil {
		t.Fatal(err)
	}
	// node1's agent is told to use a NIC that does not exist yet.
	if err := n1.StartAgentNoWait("--nic", "vnic0"); err != nil {
		t.Fatal(err)
	}
	// Readiness first says the agent learns the pool, then that it waits
	// for the NIC: the first answer may be either.
	var code int
	var body string
	var err error
	if !eventually(10*time.Second, func() bool {
		code, body, err = n1.HTTPGet("/readyz")
		return err == nil && code == 503 && strings.Contains(body, "waiting for NIC vnic0")
	}) {
		t.Fatalf("/readyz before the NIC exists: %d %q %v, want 503 naming vnic0", code, body, err)
	}
	if code, _, err := n1.HTTPGet("/healthz"); err != nil || code != 200 {
		t.Fatalf("/healthz while starting: %d %v, want 200", code, err)
	}
	if err := n1.NS.NL.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "vnic0"}, PeerName: "vnic0p"}); err != nil {
		t.Fatal(err)
	}
	if err := n1.WaitAgentReady(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	if code, body, err := n1.HTTPGet("/readyz"); err != nil || code != 200 {
		t.Fatalf("/readyz once serving: %d %q %v", code, body, err)
	}

	// Pods and traffic on node2, whose agent runs on the real NIC.
	a := addPod(t, n2, "a")
	b := addPod(t, n2, "b")
	if _, err := b.EchoServer(echoPort); err != nil {
		t.Fatal(err)
	}
	if got := metric(t, n2, "podvnet_pool_addresses", `state="allocated"`); got != 2 {
		t.Errorf("podvnet_pool_addresses{state=allocated} = %v, want 2", got)
	}
	if got := metric(t, n2, "podvnet_pool_addresses", `state="limit"`); got != 4 {
		t.Errorf("podvnet_pool_addresses{state=limit} = %v, want 4", got)
	}
	if got := metric(t, n2, "podvnet_cni_requests_total", `op="add"`, `result="success"`); got != 2 {
		t.Errorf("podvnet_cni_requests_total{op=add,result=success} = %v, want 2", got)
	}
	before := metric(t, n2, "podvnet_datapath_packets_total", `reason="pod_to_local"`)
	if _, err := vnet.TCPEcho(a, b.IP, echoPort, 64<<10, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if after := metric(t, n2, "podvnet_datapath_packets_total", `reason="pod_to_local"`, `verdict="redirect"`); after <= before {
		t.Errorf("podvnet_datapath_packets_total{reason=pod_to_local} did not move with traffic: %v -> %v", before, after)
	}
	if got := metric(t, n2, "podvnet_build_info"); got != 1 {
		t.Errorf("podvnet_build_info = %v", got)
	}
}

// TestDebugMonitorReportsSpoofing: `debug monitor` shows a forged packet as
// it is dropped, with its reason, addresses and the pod of a local address.
func TestDebugMonitorReportsSpoofing(t *testing.T) {
	v := newVNet(t, vnet.Options{PerNode: 4})
	startAgents(t, v)
	n1, n2 := v.Nodes[0], v.Nodes[1]
	a := addPod(t, n1, "a")
	b := addPod(t, n1, "b")
	c := addPod(t, n2, "c")

	cmd := exec.Command("nsenter", "--net="+n1.NS.Path(), filepath.Join(binDir, "podvnet-agent"), "debug", "monitor",
		"-o", "json", "--ip", b.IP.String(), "--reason", "drop_spoofed_ip", "--count", "1", "--timeout", "20s",
		"--bpffs-root", n1.BPFFS, "--state-dir", n1.Paths().StateDir)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()

	// One monitor at a time: a second would change the first one's filter
	// and take its events.
	lease, err := ebpf.LoadPinnedMap(n1.Paths().MapPin(maps.MonitorMap), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer lease.Close()
	if !eventually(20*time.Second, func() bool {
		var m maps.Monitor
		return lease.Lookup(uint32(0), &m) == nil && time.Duration(m.DeadlineNS) > maps.Monotonic()
	}) {
		t.Fatalf("debug monitor took no lease:\n%s", errOut.String())
	}
	if out, err := n1.Debug("monitor", "--timeout", "1s"); err == nil || !strings.Contains(out, "another debug monitor is running on this node") {
		t.Errorf("a second debug monitor: %v\n%s", err, out)
	}

	// a sends as b until the monitor has seen it.
	eth0, err := a.NS.NL.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if err := a.NS.NL.AddrAdd(eth0, &netlink.Addr{IPNet: &net.IPNet{IP: b.IP.AsSlice(), Mask: net.CIDRMask(32, 32)}}); err != nil {
		t.Fatal(err)
	}
	var waitErr error
	for sent := false; !sent; {
		a.NS.Do(func() error {
			conn, err := net.DialUDP("udp4", &net.UDPAddr{IP: b.IP.AsSlice(), Port: 40000}, &net.UDPAddr{IP: c.IP.AsSlice(), Port: 9100})
			if err == nil {
				conn.Write([]byte("forged"))
				conn.Close()
			}
			return nil
		})
		select {
		case waitErr = <-done:
			sent = true
		case <-time.After(200 * time.Millisecond):
		}
	}
	if waitErr != nil {
		t.Fatalf("debug monitor: %v\n%s", waitErr, errOut.String())
	}
	var ev struct {
		Reason, Verdict, Hook, Src, Dst, Proto, IfName string
		SrcPod                                         string `json:"src_pod"`
		DstPod                                         string `json:"dst_pod"`
		Sport, Dport                                   uint16
	}
	if err := json.Unmarshal(out.Bytes(), &ev); err != nil {
		t.Fatalf("debug monitor -o json: %v\n%s", err, out.String())
	}
	if ev.Reason != "drop_spoofed_ip" || ev.Verdict != "drop" || ev.Hook != "from_pod" || ev.Src != b.IP.String() ||
		ev.Dst != c.IP.String() || ev.Proto != "udp" || ev.Sport != 40000 || ev.Dport != 9100 || ev.IfName != a.Result.Interfaces[0].Name {
		t.Errorf("monitor event %+v, want a's forged datagram %s:40000 -> %s:9100 on %s", ev, b.IP, c.IP, a.Result.Interfaces[0].Name)
	}
	// The source address is node1's endpoint b: the event names its pod;
	// c is on node2, no endpoint of this node.
	if ev.SrcPod != "default/"+b.Name || ev.DstPod != "" {
		t.Errorf("monitor event names src pod %q, dst pod %q; want default/%s and none", ev.SrcPod, ev.DstPod, b.Name)
	}
}

// TestDebugDoctorFindsABrokenEndpoint: doctor passes on a healthy node, and
// names the endpoint, the problem and the fix once its route and program
// are gone.
func TestDebugDoctorFindsABrokenEndpoint(t *testing.T) {
	v := newVNet(t, vnet.Options{Nodes: 1, PerNode: 4})
	startAgents(t, v)
	n := v.Nodes[0]
	a := addPod(t, n, "a")
	b := addPod(t, n, "b")
	doctor := func() (string, error) { return n.Debug("doctor", "--socket", n.Paths().Socket) }
	if out, err := doctor(); err != nil {
		t.Fatalf("doctor on a healthy node: %v\n%s", err, out)
	}
	out, err := n.Debug("config")
	if err != nil || !strings.Contains(out, "conntrack_lookup") || !strings.Contains(out, "10.240.0.0/16") || !strings.Contains(out, "attach_mode") {
		t.Errorf("debug config: %v\n%s", err, out)
	}

	hostVeth := a.Result.Interfaces[0].Name
	veth, err := n.NS.NL.LinkByName(hostVeth)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.NS.NL.RouteDel(&netlink.Route{LinkIndex: veth.Attrs().Index, Scope: netlink.SCOPE_LINK,
		Dst: &net.IPNet{IP: a.IP.AsSlice(), Mask: net.CIDRMask(32, 32)}}); err != nil {
		t.Fatal(err)
	}
	if err := n.NS.Do(func() error { return loader.Detach(n.BPFFS, maps.HookPod, hostVeth) }); err != nil {
		t.Fatal(err)
	}
	out, err = doctor()
	if err == nil {
		t.Fatalf("doctor exited 0 on a broken endpoint:\n%s", out)
	}
	for _, want := range []string{"endpoint " + a.IP.String(), "no route " + a.IP.String() + "/32 dev " + hostVeth,
		"fix: ip route replace " + a.IP.String() + "/32 dev " + hostVeth, "from_pod is not attached to " + hostVeth, "2 problems"} {
		if !strings.Contains(out, want) {
			t.Errorf("doctor output lacks %q:\n%s", want, out)
		}
	}

	// An address whose endpoint left the map is one a pod holds but cannot
	// use: debug ipam says so next to the allocation.
	if err := deleteEndpoint(n, b.IP); err != nil {
		t.Fatal(err)
	}
	out, err = n.Debug("ipam")
	if want := "warning: " + b.IP.String() + " (default/b): allocated but not in the endpoints map"; err != nil || !strings.Contains(out, want) {
		t.Errorf("debug ipam lacks %q: %v\n%s", want, err, out)
	}
	if !strings.Contains(out, "NIC eth0, subnet 10.240.0.0/16") {
		t.Errorf("debug ipam lacks the node's settings:\n%s", out)
	}
}

// TestNICGoneAndBack: when the NIC disappears the agent turns unready with
// the cause (STATUS fails, /readyz names it, the node would be tainted in
// a cluster); when an interface of that name comes back, the agent points
// the programs' config at its new index and attaches from_nic to it, and is
// ready again without a restart.
func TestNICGoneAndBack(t *testing.T) {
	v := newVNet(t, vnet.Options{Nodes: 1, PerNode: 4})
	n := v.Nodes[0]
	addNIC := func() netlink.Link {
		t.Helper()
		if err := n.NS.NL.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "vnic0"}, PeerName: "vnic0p"}); err != nil {
			t.Fatal(err)
		}
		l, err := n.NS.NL.LinkByName("vnic0")
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	first := addNIC()
	if err := n.StartAgent("--nic", "vnic0"); err != nil {
		t.Fatal(err)
	}
	if err := n.NS.NL.LinkDel(first); err != nil {
		t.Fatal(err)
	}
	var code int
	var body string
	if !eventually(10*time.Second, func() bool {
		code, body, _ = n.HTTPGet("/readyz")
		return code == 503 && strings.Contains(body, "NIC vnic0 is gone")
	}) {
		t.Fatalf("/readyz with the NIC deleted: %d %q, want 503 naming vnic0", code, body)
	}
	if err := n.Status(vnet.ConfOptions{CNIVersion: "1.1.0"}); err == nil || !strings.Contains(err.Error(), "NIC vnic0 is gone") {
		t.Errorf("CNI STATUS with the NIC gone: %v", err)
	}

	// A new interface of the name, with another index, as a hot-plugged
	// NIC would have.
	second := addNIC()
	if second.Attrs().Index == first.Attrs().Index {
		t.Fatalf("the new vnic0 has the old index %d: the test cannot tell them apart", first.Attrs().Index)
	}
	if err := n.WaitAgentReady(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	var links []struct {
		Hook    string `json:"hook"`
		IfName  string `json:"ifname"`
		Ifindex int    `json:"ifindex"`
	}
	if !eventually(10*time.Second, func() bool {
		out, err := n.Debug("links", "-o", "json")
		if err != nil || json.Unmarshal([]byte(out), &links) != nil {
			return false
		}
		for _, l := range links {
			if l.Hook == maps.HookNIC.String() && l.IfName == "vnic0" && l.Ifindex == second.Attrs().Index {
				return true
			}
		}
		return false
	}) {
		t.Errorf("from_nic not on the new vnic0 (ifindex %d): %+v", second.Attrs().Index, links)
	}
	out, err := n.Debug("config")
	if err != nil {
		t.Fatal(err)
	}
	if want := "vnic0 (ifindex " + strconv.Itoa(second.Attrs().Index); !strings.Contains(out, want) {
		t.Errorf("debug config does not name %s):\n%s", want, out)
	}
}
