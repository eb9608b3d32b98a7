package snat

import (
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"github.com/podvnet/podvnet/internal/nettest"
)

func TestMergePrefixes(t *testing.T) {
	in := []netip.Prefix{
		netip.MustParsePrefix("10.240.0.0/16"),
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("172.16.5.0/24"),
		netip.MustParsePrefix("10.240.1.7/32"),
	}
	got := mergePrefixes(in)
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("172.16.5.0/24")}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("mergePrefixes = %v, want %v", got, want)
	}
}

// TestApplyReplacesAtomically applies twice in a private netns and reads the
// table back with nft: one table, the second set of ranges, no leftovers;
// Remove deletes it and tolerates a second call.
func TestApplyReplacesAtomically(t *testing.T) {
	ns, apply, list := tableNS(t, "snat")
	apply(Rules{PodIfPrefix: "pv", NoSNAT: []netip.Prefix{netip.MustParsePrefix("10.240.0.0/16")}})
	apply(Rules{PodIfPrefix: "pv", NoSNAT: []netip.Prefix{netip.MustParsePrefix("10.240.0.0/16"), netip.MustParsePrefix("172.16.0.0/12")}})
	out := list()
	for _, want := range []string{`iifname != "pv*" return`, "ip daddr 10.240.0.0/16 return", "ip daddr 172.16.0.0/12 return", "masquerade", "hook postrouting priority srcnat"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "ip daddr 10.240.0.0/16 return"); n != 1 {
		t.Errorf("the subnet rule appears %d times: the table was appended to, not replaced:\n%s", n, out)
	}
	for range 2 {
		if err := ns.Do(Remove); err != nil {
			t.Fatal(err)
		}
	}
	if out := list(); strings.Contains(out, "masquerade") {
		t.Errorf("table still there after Remove:\n%s", out)
	}
}

// tableNS gives a test a private netns, Apply in it, and the table as nft
// lists it there.
func tableNS(t *testing.T, name string) (ns *nettest.NS, apply func(Rules), list func() string) {
	t.Helper()
	nettest.RequireRoot(t)
	nettest.RequireTool(t, "nft", "(package nftables) to read the table back")
	ns = nettest.NewNS(t, nettest.Prefix()+"-"+name)
	apply = func(r Rules) {
		t.Helper()
		if err := ns.Do(func() error { return Apply(r) }); err != nil {
			t.Fatal(err)
		}
	}
	list = func() string {
		out, _ := exec.Command("ip", "netns", "exec", ns.Name, "nft", "list", "table", "ip", TableName).CombinedOutput()
		return string(out)
	}
	return ns, apply, list
}
