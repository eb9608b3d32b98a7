package loader

import (
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/podvnet/podvnet/internal/nettest"
	"github.com/podvnet/podvnet/pkg/maps"
)

// TestConntrackLookupByPort: a reply of a flow the kernel DNAT'd (as
// kube-proxy does a Service) leaves the fast path for conntrack; with
// ConfigCTByPort only a reply from a source port whose ct bit is set is
// looked up, so the same reply stays on the fast path (and breaks) until
// the bit is set. The control without the flag is today's unconditional
// lookup.
func TestConntrackLookupByPort(t *testing.T) {
	nettest.RequireTool(t, "nft", "for the kernel NAT the programs must find")
	b := newSvcbed(t)
	// Pod B is the client, pod A the backend; 10.0.0.10:53 the Service,
	// DNAT'd to pod A's 5353 in the testbed's own netns.
	lo, err := b.ns.NL.LinkByName("lo")
	must(t, err)
	for _, a := range []netip.Addr{podA, podB} {
		must(t, b.ns.NL.AddrAdd(lo, &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(32, 32)}}))
	}
	_, svcNet, _ := net.ParseCIDR("10.0.0.0/16")
	must(t, b.ns.NL.RouteAdd(&netlink.Route{LinkIndex: lo.Attrs().Index, Dst: svcNet}))
	nft := exec.Command("nsenter", "--net="+b.ns.Path(), "nft", "-f", "-")
	nft.Stdin = strings.NewReader(`table ip kubeproxy {
  chain output { type nat hook output priority -100; policy accept; ip daddr 10.0.0.10 udp dport 53 dnat to 10.240.0.5:5353; }
}`)
	if out, err := nft.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v\n%s", err, out)
	}
	must(t, b.ns.Do(func() error {
		c, err := net.DialUDP("udp4", &net.UDPAddr{IP: podB.AsSlice(), Port: 40000}, &net.UDPAddr{IP: net.ParseIP("10.0.0.10"), Port: 53})
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("query"))
		return err
	}))

	reply := udpFrame(podAMAC, hostAMAC, podA, 5353, podB, 40000)
	cfg, err := b.dp.Maps.Config.Get()
	must(t, err)
	cfg.Flags &^= maps.ConfigServices
	must(t, b.dp.Maps.Config.Set(cfg))
	b.runCounted(t, maps.HookPod, b.podAIdx, reply, actOK, maps.ReasonPodToStackNAT)

	cfg.Flags |= maps.ConfigCTByPort
	must(t, b.dp.Maps.Config.Set(cfg))
	b.runCounted(t, maps.HookPod, b.podAIdx, reply, actRedirect, maps.ReasonPodToLocal)

	// The svc bit (our own translation's replies) does not ask conntrack;
	// the ct bit does.
	b.replyPort(t, 17, 5353, true, false)
	b.runCounted(t, maps.HookPod, b.podAIdx, reply, actRedirect, maps.ReasonPodToLocal)
	b.replyPort(t, 17, 5353, false, true)
	b.runCounted(t, maps.HookPod, b.podAIdx, reply, actOK, maps.ReasonPodToStackNAT)
}
