package e2e

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/podvnet/podvnet/tests/e2e/vnet"
)

// The product's reachability promises, one test each, in the simulated VNet.

const whoamiPort = 8080

func whoami(t *testing.T, v *vnet.VNet, ns vnet.Netns) {
	t.Helper()
	if err := vnet.WhoAmIServer(ns, whoamiPort, v.OnClose); err != nil {
		t.Fatal(err)
	}
}

// askWhoAmI connects from ns to addr and returns the source the server saw.
func askWhoAmI(t *testing.T, ns vnet.Netns, addr string) string {
	t.Helper()
	seen, err := vnet.WhoAmI(ns, addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return seen
}

func hostPort(ip netip.Addr, port int) string {
	return net.JoinHostPort(ip.String(), strconv.Itoa(port))
}

func addHost(t *testing.T, v *vnet.VNet, name string, o vnet.HostOptions) *vnet.Host {
	t.Helper()
	h, err := v.AddHost(name, o)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// TestPodAndVMTalkDirectly: a VM in the VNet and a pod reach each other
// with their own addresses, both ways, no NAT.
func TestPodAndVMTalkDirectly(t *testing.T) {
	v := newVNet(t, vnet.Options{PerNode: 4})
	startAgents(t, v)
	pod := addPod(t, v.Nodes[0], "a")
	vm := addHost(t, v, "vm", vnet.HostOptions{Addr: netip.MustParsePrefix("10.240.200.10/16")})
	whoami(t, v, pod)
	whoami(t, v, vm)

	if seen := askWhoAmI(t, pod, hostPort(vm.IP, whoamiPort)); seen != pod.IP.String() {
		t.Errorf("the VM saw the pod as %s, want its own IP %s", seen, pod.IP)
	}
	if seen := askWhoAmI(t, vm, hostPort(pod.IP, whoamiPort)); seen != vm.IP.String() {
		t.Errorf("the pod saw the VM as %s, want %s", seen, vm.IP)
	}
}

// TestPeeredRangeIsNotMasqueraded: a range in --no-snat-cidrs (a peered VNet
// or on-premises network behind the fabric) sees pods' own IPs and can open
// connections to them; without the flag the same range sees the node.
func TestPeeredRangeIsNotMasqueraded(t *testing.T) {
	v := newVNet(t, vnet.Options{PerNode: 4})
	startAgents(t, v, "--no-snat-cidrs", "192.168.0.0/16")
	n1 := v.Nodes[0]
	pod := addPod(t, n1, "a")
	onprem := addHost(t, v, "onprem", vnet.HostOptions{Addr: netip.MustParsePrefix("192.168.5.10/24")})
	whoami(t, v, pod)
	whoami(t, v, onprem)

	if seen := askWhoAmI(t, pod, hostPort(onprem.IP, whoamiPort)); seen != pod.IP.String() {
		t.Errorf("the peered host saw the pod as %s, want its own IP %s", seen, pod.IP)
	}
	if seen := askWhoAmI(t, onprem, hostPort(pod.IP, whoamiPort)); seen != onprem.IP.String() {
		t.Errorf("the pod saw the peered host as %s, want %s", seen, onprem.IP)
	}

	// The control: the same range, not declared, is masqueraded.
	n1.StopAgent(syscall.SIGTERM)
	if err := n1.StartAgent(); err != nil {
		t.Fatal(err)
	}
	if seen := askWhoAmI(t, pod, hostPort(onprem.IP, whoamiPort)); seen != n1.Pool.Primary.String() {
		t.Errorf("without --no-snat-cidrs the peered host saw %s, want the node IP %s", seen, n1.Pool.Primary)
	}
}

// TestInternetEgressIsMasqueraded: a destination outside the VNet and the
// no-SNAT ranges sees the node's IP, and replies come back to the pod. The
// Internet host knows routes to the node IPs only, so an unmasqueraded
// packet could not be answered.
func TestInternetEgressIsMasqueraded(t *testing.T) {
	v := newVNet(t, vnet.Options{PerNode: 4})
	startAgents(t, v)
	var nodeRoutes []netip.Prefix
	for _, n := range v.Nodes {
		nodeRoutes = append(nodeRoutes, netip.PrefixFrom(n.Pool.Primary, 32))
	}
	inet := addHost(t, v, "inet", vnet.HostOptions{Addr: netip.MustParsePrefix("203.0.113.10/24"), Routes: nodeRoutes})
	whoami(t, v, inet)
	for _, n := range v.Nodes {
		pod := addPod(t, n, "a")
		if seen := askWhoAmI(t, pod, hostPort(inet.IP, whoamiPort)); seen != n.Pool.Primary.String() {
			t.Errorf("%s: the Internet host saw %s, want the node IP %s", n.Name, seen, n.Pool.Primary)
		}
	}
	out, err := v.Nodes[0].Exec("nft", "list", "table", "ip", "podvnet")
	if err != nil || !strings.Contains(out, "masquerade") {
		t.Errorf("podvnet's nftables table: %v\n%s", err, out)
	}
}

// kubeProxy emulates kube-proxy's nftables rules on a node: Service DNAT
// for traffic from pods (prerouting) and from the node (output), a mark for
// what must be masqueraded (hairpin, NodePort with Cluster policy).
type service struct {
	ip       netip.Addr // ClusterIP; invalid for a NodePort-only entry
	nodePort int
	proto    string
	port     int
	backend  netip.Addr
	bePort   int
	masq     bool // externalTrafficPolicy Cluster: SNAT NodePort traffic
}

func kubeProxy(t *testing.T, n *vnet.Node, svcs []service) {
	t.Helper()
	var b strings.Builder
	b.WriteString(`table ip kubeproxy {
  chain prerouting { type nat hook prerouting priority -100; policy accept; jump services; }
  chain output { type nat hook output priority -100; policy accept; jump services; }
  chain postrouting { type nat hook postrouting priority 100; policy accept; meta mark & 0x4000 == 0x4000 masquerade; }
  chain services {
`)
	for i, s := range svcs {
		if s.ip.IsValid() {
			fmt.Fprintf(&b, "    ip daddr %s %s dport %d jump svc%d\n", s.ip, s.proto, s.port, i)
		}
		if s.nodePort != 0 {
			fmt.Fprintf(&b, "    fib daddr type local %s dport %d jump np%d\n", s.proto, s.nodePort, i)
		}
	}
	b.WriteString("  }\n")
	for i, s := range svcs {
		// Hairpin: a backend reaching itself through the Service is
		// masqueraded, as kube-proxy's KUBE-MARK-MASQ does.
		fmt.Fprintf(&b, "  chain svc%d { ip saddr %s meta mark set 0x4000; meta l4proto %s dnat to %s:%d; }\n", i, s.backend, s.proto, s.backend, s.bePort)
		mark := ""
		if s.masq {
			mark = "meta mark set 0x4000; "
		}
		fmt.Fprintf(&b, "  chain np%d { %smeta l4proto %s dnat to %s:%d; }\n", i, mark, s.proto, s.backend, s.bePort)
	}
	b.WriteString("}\n")
	if err := n.NFT(b.String()); err != nil {
		t.Fatal(err)
	}
}

// TestServices: pod -> Service IP works through kube-proxy's DNAT for a
// backend on another node, one on the same node, the pod itself (hairpin),
// and the DNS Service over UDP. Each reply only reaches the client right
// because the programs hand NAT'd flows to conntrack; the control run with
// --no-conntrack-lookup shows the fast path alone breaks them.
func TestServices(t *testing.T) {
	v := newVNet(t, vnet.Options{PerNode: 4})
	startAgents(t, v)
	n1, n2 := v.Nodes[0], v.Nodes[1]
	a := addPod(t, n1, "a") // the client
	b := addPod(t, n1, "b") // backend on the client's node
	c := addPod(t, n2, "c") // backend on another node
	dns := addPod(t, n2, "dns")
	for _, p := range []*vnet.Pod{a, b, c} {
		whoami(t, v, p)
	}
	dnsAnswer := netip.MustParseAddr("10.9.8.7")
	if err := vnet.DNSServer(dns, 53, dnsAnswer, v.OnClose); err != nil {
		t.Fatal(err)
	}
	var (
		svcRemote = netip.MustParseAddr("10.0.0.50")
		svcLocal  = netip.MustParseAddr("10.0.0.51")
		svcSelf   = netip.MustParseAddr("10.0.0.52")
		svcDNS    = netip.MustParseAddr("10.0.0.10")
	)
	svcs := []service{
		{ip: svcRemote, proto: "tcp", port: 80, backend: c.IP, bePort: whoamiPort},
		{ip: svcLocal, proto: "tcp", port: 80, backend: b.IP, bePort: whoamiPort},
		{ip: svcSelf, proto: "tcp", port: 80, backend: a.IP, bePort: whoamiPort},
		{ip: svcDNS, proto: "udp", port: 53, backend: dns.IP, bePort: 53},
	}
	for _, n := range v.Nodes {
		kubeProxy(t, n, svcs)
	}

	check := func(t *testing.T) []error {
		var errs []error
		for _, tc := range []struct {
			name string
			svc  netip.Addr
			want string // the client as the backend sees it
		}{
			{"backend on another node", svcRemote, a.IP.String()},
			{"backend on the same node", svcLocal, a.IP.String()},
			{"hairpin to itself", svcSelf, n1.Pool.Primary.String()},
		} {
			seen, err := vnet.WhoAmI(a, hostPort(tc.svc, 80), 3*time.Second)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s (%s): %w", tc.name, tc.svc, err))
				continue
			}
			if seen != tc.want {
				errs = append(errs, fmt.Errorf("%s: backend saw the client as %s, want %s", tc.name, seen, tc.want))
			}
		}
		got, err := vnet.LookupA(a, hostPort(svcDNS, 53), "web.default.svc.cluster.local", 3*time.Second)
		if err != nil {
			errs = append(errs, fmt.Errorf("DNS Service: %w", err))
		} else if got != dnsAnswer {
			errs = append(errs, fmt.Errorf("DNS Service answered %s, want %s", got, dnsAnswer))
		}
		return errs
	}
	for _, err := range check(t) {
		t.Error(err)
	}

	// The control: without the conntrack lookup, the replies that cross a
	// fast path (another node's backend, a same-node backend, DNS) reach
	// the client untranslated and the client cannot use them.
	for _, n := range v.Nodes {
		n.StopAgent(syscall.SIGTERM)
		if err := n.StartAgent("--no-conntrack-lookup"); err != nil {
			t.Fatal(err)
		}
	}
	errs := check(t)
	if len(errs) < 3 {
		t.Errorf("with --no-conntrack-lookup only %d checks failed (%v): the test does not exercise the lookup", len(errs), errs)
	}
	for _, err := range errs {
		t.Logf("without the lookup, as expected: %v", err)
	}
}

// TestServiceThenDirectFromSamePort: a client that reached a backend on
// another node through a Service (kube-proxy's DNAT) and then connects to
// the backend directly from the same port (the kernel lets it: the peer
// differs) is answered. The backend closed the first connection, so the
// client's port is free at once while conntrack on the client's node keeps
// the connection, TIME_WAIT, for two minutes: the new connection's replies
// carry its reply tuple. Handed to conntrack, they would be translated back
// as the old connection's (from the Service IP), which the client refuses.
func TestServiceThenDirectFromSamePort(t *testing.T) {
	v := newVNet(t, vnet.Options{PerNode: 4})
	startAgents(t, v)
	a := addPod(t, v.Nodes[0], "a")
	c := addPod(t, v.Nodes[1], "c")
	whoami(t, v, c)
	svc := netip.MustParseAddr("10.0.0.50")
	for _, n := range v.Nodes {
		kubeProxy(t, n, []service{{ip: svc, proto: "tcp", port: 80, backend: c.IP, bePort: whoamiPort}})
	}
	// Reading to the server's close, the client's port is free at once.
	from := netip.AddrPortFrom(a.IP, 40123)
	for _, addr := range []string{hostPort(svc, 80), hostPort(c.IP, whoamiPort)} {
		seen, err := vnet.WhoAmIFrom(a, from, addr, 3*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if seen != a.IP.String() {
			t.Fatalf("%s saw the client as %s, want %s", addr, seen, a.IP)
		}
	}
}

// TestNodePorts: a VM reaches a pod through node 2's NodePort with the
// backend on node 2 (externalTrafficPolicy Local: no SNAT, the reply must be
// reverse-NAT'd on its way out of the pod) and through node 1's NodePort
// with the backend on node 2 (Cluster: SNAT to node 1).
func TestNodePorts(t *testing.T) {
	v := newVNet(t, vnet.Options{PerNode: 4})
	startAgents(t, v)
	n1, n2 := v.Nodes[0], v.Nodes[1]
	c := addPod(t, n2, "c")
	whoami(t, v, c)
	vm := addHost(t, v, "vm", vnet.HostOptions{Addr: netip.MustParsePrefix("10.240.200.10/16")})
	kubeProxy(t, n2, []service{{nodePort: 30080, proto: "tcp", backend: c.IP, bePort: whoamiPort}})
	kubeProxy(t, n1, []service{{nodePort: 30080, proto: "tcp", backend: c.IP, bePort: whoamiPort, masq: true}})

	if seen := askWhoAmI(t, vm, hostPort(n2.Pool.Primary, 30080)); seen != vm.IP.String() {
		t.Errorf("via node2's NodePort (Local) the pod saw %s, want the VM %s", seen, vm.IP)
	}
	if seen := askWhoAmI(t, vm, hostPort(n1.Pool.Primary, 30080)); seen != n1.Pool.Primary.String() {
		t.Errorf("via node1's NodePort (Cluster) the pod saw %s, want node1 %s", seen, n1.Pool.Primary)
	}

	// The control: the Local case's reply leaves the pod towards the VM,
	// inside the VNet; only the conntrack lookup sends it to the stack to
	// get the NodePort's address back as its source.
	n2.StopAgent(syscall.SIGTERM)
	if err := n2.StartAgent("--no-conntrack-lookup"); err != nil {
		t.Fatal(err)
	}
	if seen, err := vnet.WhoAmI(vm, hostPort(n2.Pool.Primary, 30080), 2*time.Second); err == nil {
		t.Errorf("without the conntrack lookup the Local NodePort still worked (pod saw %s): the test does not exercise it", seen)
	}
}

// TestNodeAndPodTalk: the node reaches its pods (kubelet probes) and pods
// reach their node and other nodes (hostNetwork pods).
func TestNodeAndPodTalk(t *testing.T) {
	v := newVNet(t, vnet.Options{PerNode: 4})
	startAgents(t, v)
	n1, n2 := v.Nodes[0], v.Nodes[1]
	pod := addPod(t, n1, "a")
	whoami(t, v, pod)
	whoami(t, v, n1.NS)
	whoami(t, v, n2.NS)

	if seen := askWhoAmI(t, n1.NS, hostPort(pod.IP, whoamiPort)); seen != n1.Pool.Primary.String() {
		t.Errorf("node1 -> its pod: the pod saw %s", seen)
	}
	if seen := askWhoAmI(t, n2.NS, hostPort(pod.IP, whoamiPort)); seen != n2.Pool.Primary.String() {
		t.Errorf("node2 -> pod on node1: the pod saw %s", seen)
	}
	for _, n := range v.Nodes {
		if seen := askWhoAmI(t, pod, hostPort(n.Pool.Primary, whoamiPort)); seen != pod.IP.String() {
			t.Errorf("pod -> %s: the node saw %s, want the pod's IP %s", n.Name, seen, pod.IP)
		}
	}
}

// TestMTUFollowsNIC: with a 1400-byte NIC MTU pods get 1400 on both ends of
// their veth and a large TCP transfer across nodes completes; --mtu
// overrides it for new pods and leaves running ones as they are.
func TestMTUFollowsNIC(t *testing.T) {
	v := newVNet(t, vnet.Options{PerNode: 4, NICMTU: 1400})
	startAgents(t, v)
	n1, n2 := v.Nodes[0], v.Nodes[1]
	a := addPod(t, n1, "a")
	c := addPod(t, n2, "c")
	// mtus are the MTUs of the pod's eth0 and of its host veth.
	mtus := func(p *vnet.Pod) (pod, host int) {
		t.Helper()
		l, err := p.NS.NL.LinkByName("eth0")
		if err != nil {
			t.Fatal(err)
		}
		h, err := p.Node.NS.NL.LinkByName(p.Result.Interfaces[0].Name)
		if err != nil {
			t.Fatal(err)
		}
		return l.Attrs().MTU, h.Attrs().MTU
	}
	for _, p := range []*vnet.Pod{a, c} {
		if pod, host := mtus(p); pod != 1400 || host != 1400 {
			t.Errorf("%s MTU %d, host veth %d, want the NIC's 1400 on both", p.Name, pod, host)
		}
	}
	if _, err := c.EchoServer(echoPort); err != nil {
		t.Fatal(err)
	}
	if _, err := vnet.TCPEcho(a, c.IP, echoPort, 32<<20, 60*time.Second); err != nil {
		t.Fatalf("32 MiB across nodes at MTU 1400: %v", err)
	}

	n1.StopAgent(syscall.SIGTERM)
	if err := n1.StartAgent("--mtu", "1300"); err != nil {
		t.Fatal(err)
	}
	b := addPod(t, n1, "b")
	if pod, host := mtus(b); pod != 1300 || host != 1300 {
		t.Errorf("with --mtu 1300 the new pod's MTU %d, host veth %d", pod, host)
	}
	if pod, host := mtus(a); pod != 1400 || host != 1400 {
		t.Errorf("a running pod after --mtu 1300: MTU %d, host veth %d, want 1400 on both as ADD set them", pod, host)
	}
	n1.StopAgent(syscall.SIGTERM)
	err := n1.StartAgent("--mtu", "9000")
	if err == nil || !strings.Contains(err.Error(), "exceeds the MTU 1400") {
		t.Errorf("--mtu above the NIC's must be refused naming both: %v", err)
	}
}
