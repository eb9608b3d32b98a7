package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/podvnet/podvnet/pkg/ipam"
	"github.com/podvnet/podvnet/pkg/loader"
	"github.com/podvnet/podvnet/pkg/maps"
	"github.com/podvnet/podvnet/tests/e2e/vnet"
)

// Issue 12: pods must not read the platform's secrets. The simulated VNet
// serves, on 168.63.129.16, the WireServer's documents (80), a HostGAPlugin
// stand-in (32526) and DNS (53, UDP and TCP), and IMDS on 169.254.169.254.

var (
	wireserverHTTP = hostPort(vnet.WireserverIP, 80)
	hostGAPlugin   = hostPort(vnet.WireserverIP, vnet.HostGAPluginPort)
	azureDNS       = hostPort(vnet.WireserverIP, vnet.WireserverDNS)
	nmagentURL     = "http://" + wireserverHTTP + ipam.NMAgentPath
	imdsURL        = "http://" + vnet.IMDSIP.String() + ipam.IMDSPath
	imdsHeader     = http.Header{"Metadata": {"true"}}
)

// blockedTimeout bounds a connection attempt expected to be dropped.
const blockedTimeout = time.Second

// requireDropped fails t unless a TCP connection from ns to addr gets no
// answer at all: the SYN was dropped, not refused.
func requireDropped(t *testing.T, ns vnet.Netns, who, addr string) {
	t.Helper()
	err := vnet.Connect(ns, addr, blockedTimeout)
	if err == nil {
		t.Errorf("%s connected to %s", who, addr)
	} else if !vnet.IsTimeout(err) {
		t.Errorf("%s -> %s: %v, want no answer (a dropped SYN)", who, addr, err)
	}
}

// TestPlatformEndpoints: a pod on each node can neither fetch the NMAgent
// document nor connect to the HostGAPlugin, and the counters, the metrics
// and the monitor show why; the rest of 168.63.129.16 keeps working (DNS
// over UDP and TCP, health probes from it and their replies, the node's
// own access), as do IMDS, the Internet and other pods. The kernel path
// (from_pod detached, or a Service whose backend is the WireServer) is
// covered by the nftables rule. --block-imds and an empty
// --blocked-endpoints change what is blocked.
func TestPlatformEndpoints(t *testing.T) {
	v := newVNet(t, vnet.Options{PerNode: 5, IPAMSource: "nmagent"})
	startAgents(t, v)
	n1 := v.Nodes[0]
	a, b, c := echoPods(t, v)
	pods := []*vnet.Pod{a, c} // one on each node
	for _, p := range []*vnet.Pod{a, b, c} {
		whoami(t, v, p)
	}

	t.Run("pods reach neither the WireServer nor the HostGAPlugin", func(t *testing.T) {
		for _, p := range pods {
			requireDropped(t, p, p.Name, wireserverHTTP)
			requireDropped(t, p, p.Name, hostGAPlugin)
			if code, _, err := vnet.Fetch(p, nmagentURL, nil, blockedTimeout); err == nil {
				t.Errorf("%s fetched the NMAgent document: HTTP %d", p.Name, code)
			}
		}
		for _, n := range v.Nodes {
			cs, err := n.Counters()
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range []maps.Reason{maps.ReasonDropWireserver, maps.ReasonDropHostGAPlugin} {
				if cs[r].Packets == 0 {
					t.Errorf("%s: counter %s is 0", n.Name, r)
				}
				got, err := n.Metric("podvnet_datapath_packets_total", `reason="`+r.String()+`"`, `verdict="drop"`)
				if err != nil || got == 0 {
					t.Errorf("%s: metric for %s: %v, %v", n.Name, r, got, err)
				}
			}
			out, err := n.Debug("counters")
			if err != nil || !regexp.MustCompile(`drop_wireserver\s+drop\s+[1-9]`).MatchString(out) {
				t.Errorf("%s: debug counters does not show WireServer drops: %v\n%s", n.Name, err, out)
			}
		}
	})

	t.Run("the monitor names the pod and the destination", func(t *testing.T) {
		type event struct {
			Reason, Hook, Proto, Src, Dst string
			Dport                         uint16
		}
		done := make(chan error, 1)
		var out string
		go func() {
			var err error
			out, err = n1.Debug("monitor", "--ip", a.IP.String(), "--reason", "drop_wireserver", "--count", "1", "--timeout", "30s", "-o", "json")
			done <- err
		}()
		// Each attempt's SYN is dropped; the first after the monitor holds
		// its lease is reported.
		for waiting := true; waiting; {
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
				waiting = false
			default:
				vnet.Connect(a, wireserverHTTP, 200*time.Millisecond)
			}
		}
		var ev event
		if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &ev); err != nil {
			t.Fatalf("debug monitor -o json: %v\n%s", err, out)
		}
		want := event{Reason: "drop_wireserver", Hook: "from_pod", Proto: "tcp", Src: a.IP.String(), Dst: vnet.WireserverIP.String(), Dport: 80}
		if ev != want {
			t.Errorf("event %+v, want %+v", ev, want)
		}
	})

	t.Run("DNS at 168.63.129.16 over UDP and TCP", func(t *testing.T) {
		for _, p := range pods {
			for proto, lookup := range map[string]func(vnet.Netns, string, string, time.Duration) (netip.Addr, error){
				"udp": vnet.LookupA, "tcp": vnet.LookupATCP,
			} {
				got, err := lookup(p, azureDNS, "login.microsoftonline.com", 5*time.Second)
				if err != nil || got != vnet.WireserverDNSAnswer {
					t.Errorf("%s: DNS over %s: %v, %v; want %s", p.Name, proto, got, err, vnet.WireserverDNSAnswer)
				}
			}
		}
	})

	t.Run("health probes from 168.63.129.16 reach pods and get their replies", func(t *testing.T) {
		for _, p := range pods {
			seen, err := vnet.WhoAmIFrom(v.Fabric, netip.AddrPortFrom(vnet.WireserverIP, 0), hostPort(p.IP, whoamiPort), 5*time.Second)
			if err != nil {
				t.Errorf("probe of %s: %v", p.Name, err)
			} else if seen != vnet.WireserverIP.String() {
				t.Errorf("probe of %s: the pod saw %s", p.Name, seen)
			}
		}
	})

	t.Run("the nodes keep the WireServer and IMDS; pods keep IMDS", func(t *testing.T) {
		for _, n := range v.Nodes {
			code, body, err := vnet.Fetch(n.NS, nmagentURL, nil, 5*time.Second)
			if err != nil || code != http.StatusOK || !strings.Contains(string(body), n.Pool.Primary.String()) {
				t.Errorf("%s fetching its NMAgent document: %d %v\n%s", n.Name, code, err, body)
			}
		}
		for _, p := range pods {
			if code, _, err := vnet.Fetch(p, imdsURL, imdsHeader, 5*time.Second); err != nil || code != http.StatusOK {
				t.Errorf("%s: IMDS %d %v, want 200 (not blocked by default)", p.Name, code, err)
			}
		}
	})

	t.Run("the Internet and other pods as before", func(t *testing.T) {
		var nodeRoutes []netip.Prefix
		for _, n := range v.Nodes {
			nodeRoutes = append(nodeRoutes, netip.PrefixFrom(n.Pool.Primary, 32))
		}
		inet := addHost(t, v, "inet", vnet.HostOptions{Addr: netip.MustParsePrefix("203.0.113.10/24"), Routes: nodeRoutes})
		whoami(t, v, inet)
		for _, p := range pods {
			if seen := askWhoAmI(t, p, hostPort(inet.IP, whoamiPort)); seen != p.Node.Pool.Primary.String() {
				t.Errorf("%s -> Internet: seen as %s, want the node IP", p.Name, seen)
			}
		}
		echoPairs(t, "with the platform blocked", 64<<10, [2]*vnet.Pod{a, b}, [2]*vnet.Pod{a, c}, [2]*vnet.Pod{c, a})
	})

	t.Run("kernel path: the nftables rule drops what from_pod would", func(t *testing.T) {
		k := addPod(t, n1, "k")
		host := k.Result.Interfaces[0].Name
		if err := n1.NS.Do(func() error { return loader.Detach(n1.BPFFS, maps.HookPod, host) }); err != nil {
			t.Fatal(err)
		}
		before, err := n1.Counters()
		if err != nil {
			t.Fatal(err)
		}
		requireDropped(t, k, "k (from_pod detached)", wireserverHTTP)
		if n := nftDrops(t, n1, 80); n == 0 {
			t.Error("the nftables rule for 168.63.129.16:80 counted nothing")
		}
		after, err := n1.Counters()
		if err != nil {
			t.Fatal(err)
		}
		if d := after[maps.ReasonDropWireserver].Packets - before[maps.ReasonDropWireserver].Packets; d != 0 {
			t.Errorf("drop_wireserver moved by %d: from_pod still runs on %s, the test proves nothing", d, host)
		}
		// The kernel path itself works: DNS over TCP from the same pod.
		if got, err := vnet.LookupATCP(k, azureDNS, "example.com", 5*time.Second); err != nil || got != vnet.WireserverDNSAnswer {
			t.Errorf("k: DNS over TCP on the kernel path: %v, %v", got, err)
		}

		// A Service whose backend is the WireServer: from_pod sees the
		// Service IP, kube-proxy's DNAT happens in the stack, and the rule
		// meets the translated packet.
		svcWire, svcDNS := netip.MustParseAddr("10.0.0.80"), netip.MustParseAddr("10.0.0.53")
		kubeProxy(t, n1, []service{
			{ip: svcWire, proto: "tcp", port: 80, backend: vnet.WireserverIP, bePort: 80},
			{ip: svcDNS, proto: "tcp", port: 53, backend: vnet.WireserverIP, bePort: vnet.WireserverDNS},
		})
		requireDropped(t, a, "a through a Service", hostPort(svcWire, 80))
		if got, err := vnet.LookupATCP(a, hostPort(svcDNS, 53), "example.com", 5*time.Second); err != nil || got != vnet.WireserverDNSAnswer {
			t.Errorf("a: DNS over TCP through a Service: %v, %v", got, err)
		}
	})

	t.Run("--block-imds", func(t *testing.T) {
		restartAgent(t, n1, "--block-imds")
		if code, _, err := vnet.Fetch(a, imdsURL, imdsHeader, blockedTimeout); err == nil {
			t.Errorf("a reached IMDS with --block-imds: HTTP %d", code)
		}
		requireDropped(t, a, "a", wireserverHTTP)
		if code, _, err := vnet.Fetch(n1.NS, imdsURL, imdsHeader, 5*time.Second); err != nil || code != http.StatusOK {
			t.Errorf("the node lost IMDS: %d %v", code, err)
		}
		if code, _, err := vnet.Fetch(c, imdsURL, imdsHeader, 5*time.Second); err != nil || code != http.StatusOK {
			t.Errorf("c, on a node without --block-imds: IMDS %d %v", code, err)
		}
		cs, err := n1.Counters()
		if err != nil || cs[maps.ReasonDropIMDS].Packets == 0 {
			t.Errorf("drop_imds not counted: %v %v", cs[maps.ReasonDropIMDS], err)
		}
		rows := debugBlocked(t, n1)
		if !rows["169.254.169.254:80/tcp drop_imds"] || !rows["168.63.129.16:80/tcp drop_wireserver"] || !rows["168.63.129.16:32526/tcp drop_hostgaplugin"] {
			t.Errorf("debug blocked: %v", rows)
		}
	})

	// The control: with an empty list the same attempts connect, so the
	// drops above are the block's, and a changed list replaces the old one.
	t.Run("an empty --blocked-endpoints blocks nothing", func(t *testing.T) {
		restartAgent(t, n1, "--blocked-endpoints", "")
		for _, addr := range []string{wireserverHTTP, hostGAPlugin} {
			if err := vnet.Connect(a, addr, 5*time.Second); err != nil {
				t.Errorf("a -> %s with nothing blocked: %v", addr, err)
			}
		}
		if code, _, err := vnet.Fetch(a, imdsURL, imdsHeader, 5*time.Second); err != nil || code != http.StatusOK {
			t.Errorf("IMDS with nothing blocked: %d %v", code, err)
		}
		if rows := debugBlocked(t, n1); len(rows) != 0 {
			t.Errorf("debug blocked still lists %v", rows)
		}
		if out, err := n1.Exec("nft", "list", "table", "ip", "podvnet"); err != nil || strings.Contains(out, "forward") {
			t.Errorf("the forward chain outlived the list: %v\n%s", err, out)
		}
		requireDropped(t, c, "c, on a node that keeps the default", wireserverHTTP)
	})
}

// restartAgent restarts n's agent with extra flags.
func restartAgent(t *testing.T, n *vnet.Node, extra ...string) {
	t.Helper()
	n.StopAgent(syscall.SIGTERM)
	if err := n.StartAgent(extra...); err != nil {
		t.Fatal(err)
	}
}

// debugBlocked returns `debug blocked -o json`'s endpoints (not the
// fragment guards) as "ADDR:PORT/PROTO REASON".
func debugBlocked(t *testing.T, n *vnet.Node) map[string]bool {
	t.Helper()
	out, err := n.Debug("blocked", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var rows []struct {
		Addr, Proto, Reason string
		Port                uint16
		FragmentGuard       bool `json:"fragment_guard"`
	}
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("debug blocked -o json: %v\n%s", err, out)
	}
	m := map[string]bool{}
	for _, r := range rows {
		if !r.FragmentGuard {
			m[fmt.Sprintf("%s:%d/%s %s", r.Addr, r.Port, r.Proto, r.Reason)] = true
		}
	}
	return m
}

// nftDrops reads the packet counter of podvnet's forward rule for
// 168.63.129.16:port/tcp.
func nftDrops(t *testing.T, n *vnet.Node, port int) int {
	t.Helper()
	out, err := n.Exec("nft", "list", "chain", "ip", "podvnet", "forward")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`ip daddr ` + regexp.QuoteMeta(vnet.WireserverIP.String()) + ` tcp dport ` + strconv.Itoa(port) + ` counter packets (\d+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no rule for %s:%d in the forward chain:\n%s", vnet.WireserverIP, port, out)
	}
	drops, _ := strconv.Atoi(m[1])
	return drops
}
