package main

import (
	"fmt"
	"net/netip"
	"strings"
)

// loadedServices is how many Services the loaded profile's kube-proxy
// carries besides the measured one.
const loadedServices = 5000

// clusterIP is the Service the Service rows reach their backend through:
// inside the agent's default --service-cidr (10.0.0.0/16), apart from the
// loaded profile's other Services (10.0.0.1-10.0.19.250).
var clusterIP = netip.MustParseAddr("10.0.200.1")

// kubeProxyRules is kube-proxy on a node, in the shape the e2e tests emulate
// it (tests/e2e/reach_test.go): Service DNAT for what pods send (prerouting)
// and what the node sends (output), a mark for what must be masqueraded,
// conntrack-based forward rules and a masquerade rule. others Services stand
// for a cluster at scale: every new connection walks them, as iptables mode
// does, so conntrack tracks every packet the kernel forwards. When backend is
// valid, clusterIP forwards the benchmark's ports to it, as a Service added
// last: after all the others.
func kubeProxyRules(others int, backend netip.Addr) string {
	var b strings.Builder
	b.WriteString(`table ip kubeproxy {
  chain prerouting { type nat hook prerouting priority -100; policy accept; jump services; }
  chain output { type nat hook output priority -100; policy accept; jump services; }
  chain postrouting { type nat hook postrouting priority 100; policy accept;
    meta mark & 0x4000 == 0x4000 masquerade
    ip saddr 10.240.0.0/16 ip daddr != 10.240.0.0/16 masquerade
  }
  chain forward { type filter hook forward priority 0; policy accept;
    ct state invalid drop
    ct state related,established accept
  }
  chain services {
`)
	for i := range others {
		fmt.Fprintf(&b, "    ip daddr 10.0.%d.%d tcp dport 80 dnat to 10.240.200.%d:8080\n", i/250, i%250+1, i%250+1)
	}
	if backend.IsValid() {
		// iperf3 runs its UDP test over a TCP control connection to the
		// same port; the round trips are TCP.
		for _, p := range []struct {
			proto string
			port  int
		}{{"tcp", iperfPort}, {"udp", iperfPort}, {"tcp", rrPort}} {
			fmt.Fprintf(&b, "    ip daddr %s %s dport %d jump measured\n", clusterIP, p.proto, p.port)
		}
	}
	b.WriteString("  }\n")
	if backend.IsValid() {
		// Hairpin (the backend reaching itself) is masqueraded, as
		// kube-proxy's KUBE-MARK-MASQ does.
		fmt.Fprintf(&b, "  chain measured { ip saddr %s meta mark set 0x4000; dnat to %s; }\n", backend, backend)
	}
	b.WriteString("}\n")
	return b.String()
}
