package snat

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/podvnet/podvnet/pkg/platform"
)

// TestBlockedChain: the table gets a forward chain dropping pod traffic to
// each blocked endpoint, read back with nft; a list emptied on the next
// Apply leaves no chain behind.
func TestBlockedChain(t *testing.T) {
	_, apply, list := tableNS(t, "snatblk")
	dns := platform.Endpoint{Addr: platform.WireserverIP, Port: 53, Proto: platform.UDP}
	subnet := []netip.Prefix{netip.MustParsePrefix("10.240.0.0/16")}
	apply(Rules{PodIfPrefix: "pv", NoSNAT: subnet, Blocked: []platform.Endpoint{platform.Wireserver, platform.HostGAPlugin, dns}})
	out := list()
	for _, want := range []string{
		"hook forward priority filter",
		`iifname "pv*" ip daddr 168.63.129.16 tcp dport 80 counter packets 0 bytes 0 drop`,
		`iifname "pv*" ip daddr 168.63.129.16 tcp dport 32526 counter packets 0 bytes 0 drop`,
		`iifname "pv*" ip daddr 168.63.129.16 udp dport 53 counter packets 0 bytes 0 drop`,
		"masquerade",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}

	apply(Rules{PodIfPrefix: "pv", NoSNAT: subnet})
	if out := list(); strings.Contains(out, "forward") || !strings.Contains(out, "masquerade") {
		t.Errorf("an empty list must leave the masquerade alone and no forward chain:\n%s", out)
	}
}
