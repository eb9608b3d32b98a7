package e2e

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/podvnet/podvnet/tests/e2e/vnet"
)

// metric returns the value of the first sample of /metrics matching name
// and all label pairs.
func metric(t *testing.T, n *vnet.Node, name string, labels ...string) float64 {
	t.Helper()
	code, body, err := n.HTTPGet("/metrics")
	if err != nil || code != 200 {
		t.Fatalf("GET /metrics: %d %v", code, err)
	}
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `\{([^}]*)\} (\S+)$`)
	for _, m := range re.FindAllStringSubmatch(body, -1) {
		ok := true
		for _, l := range labels {
			if !strings.Contains(m[1], l) {
				ok = false
			}
		}
		if ok {
			v, _ := strconv.ParseFloat(m[2], 64)
			return v
		}
	}
	t.Fatalf("no sample %s%v in /metrics", name, labels)
	return 0
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
	var code int
	var body string
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		var err error
		if code, body, err = n1.HTTPGet("/readyz"); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code != 503 || !strings.Contains(body, "waiting for NIC vnic0") {
		t.Fatalf("/readyz before the NIC exists: %d %q, want 503 naming vnic0", code, body)
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
