package nexthop

import (
	"bytes"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
)

func mac(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

var (
	gateway = netip.MustParseAddr("10.240.0.1")
	nicMAC  = mac("02:00:00:00:00:04")
	fabric  = mac("12:34:56:78:9a:bc") // what Azure answers every ARP with
	other   = mac("02:aa:bb:cc:dd:ee")
)

func neigh(ip string, m net.HardwareAddr, state int) Neighbor {
	return Neighbor{IP: netip.MustParseAddr(ip), MAC: m, State: state}
}

func TestDecide(t *testing.T) {
	gw := neigh("10.240.0.1", fabric, netlink.NUD_REACHABLE)
	tests := []struct {
		name   string
		mode   Mode
		nic    net.HardwareAddr
		neighs []Neighbor
		want   net.HardwareAddr // nil: the kernel resolves
		why    string           // a part of Why
	}{
		{"Azure: only the gateway", Auto, nicMAC, []Neighbor{gw}, fabric, "every neighbour"},
		{"Azure: every address answered with the gateway's MAC", Auto, nicMAC, []Neighbor{gw,
			neigh("10.240.0.5", fabric, netlink.NUD_STALE), neigh("10.240.0.99", fabric, netlink.NUD_DELAY)}, fabric, "every neighbour"},
		{"gateway stale still counts", Auto, nicMAC, []Neighbor{neigh("10.240.0.1", fabric, netlink.NUD_STALE)}, fabric, ""},
		{"gateway pinned by the operator", Auto, nicMAC, []Neighbor{neigh("10.240.0.1", fabric, netlink.NUD_PERMANENT)}, fabric, ""},
		{"plain L2: a host answers with its own MAC", Auto, nicMAC, []Neighbor{gw,
			neigh("10.240.0.99", other, netlink.NUD_REACHABLE)}, nil, "10.240.0.99 answers with 02:aa:bb:cc:dd:ee"},
		{"plain L2, the host's entry stale", Auto, nicMAC, []Neighbor{gw, neigh("10.240.0.99", other, netlink.NUD_STALE)}, nil, "10.240.0.99"},
		{"a host outside the subnet counts too", Auto, nicMAC, []Neighbor{gw, neigh("172.16.0.9", other, netlink.NUD_PROBE)}, nil, "172.16.0.9"},
		{"mode gateway ignores other answers", Gateway, nicMAC, []Neighbor{gw, neigh("10.240.0.99", other, netlink.NUD_REACHABLE)}, fabric, "mode gateway"},
		{"mode kernel", Kernel, nicMAC, []Neighbor{gw}, nil, "mode kernel"},
		{"failed entries are no evidence", Auto, nicMAC, []Neighbor{gw, neigh("10.240.0.99", nil, netlink.NUD_FAILED)}, fabric, ""},
		{"incomplete entries are no evidence", Auto, nicMAC, []Neighbor{gw, neigh("10.240.0.99", nil, netlink.NUD_INCOMPLETE)}, fabric, ""},
		{"broadcast entries are no evidence", Auto, nicMAC, []Neighbor{gw,
			neigh("10.240.255.255", mac("ff:ff:ff:ff:ff:ff"), netlink.NUD_NOARP),
			neigh("255.255.255.255", mac("ff:ff:ff:ff:ff:ff"), netlink.NUD_NOARP)}, fabric, ""},
		{"multicast entries are no evidence", Auto, nicMAC, []Neighbor{gw,
			neigh("224.0.0.251", mac("01:00:5e:00:00:fb"), netlink.NUD_NOARP)}, fabric, ""},
		{"gateway unresolved", Auto, nicMAC, []Neighbor{neigh("10.240.0.1", nil, netlink.NUD_INCOMPLETE)}, nil, "gateway 10.240.0.1 not resolved"},
		{"gateway failed", Gateway, nicMAC, []Neighbor{neigh("10.240.0.1", fabric, netlink.NUD_FAILED)}, nil, "not resolved"},
		{"no gateway entry", Gateway, nicMAC, nil, nil, "not resolved"},
		{"gateway resolved to a zero MAC", Gateway, nicMAC, []Neighbor{neigh("10.240.0.1", mac("00:00:00:00:00:00"), netlink.NUD_REACHABLE)}, nil, "not resolved"},
		{"gateway resolved to a multicast MAC", Gateway, nicMAC, []Neighbor{neigh("10.240.0.1", mac("01:00:5e:00:00:01"), netlink.NUD_REACHABLE)}, nil, "not resolved"},
		{"NIC without an Ethernet address", Auto, nil, []Neighbor{gw}, nil, "no Ethernet address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := Decide(tt.mode, gateway, tt.nic, tt.neighs, nil)
			if h.MAC.String() != tt.want.String() {
				t.Errorf("next hop %q, want %q (why: %s)", h.MAC, tt.want, h.Why)
			}
			if !strings.Contains(h.Why, tt.why) {
				t.Errorf("why %q, want it to say %q", h.Why, tt.why)
			}
			if h.NIC.String() != tt.nic.String() {
				t.Errorf("NIC %s, want %s", h.NIC, tt.nic)
			}
		})
	}
}

// TestDecideAfterAGatewayMACChange: the fabric's answers for other
// addresses keep the gateway's former MAC until each is probed again; they
// are no evidence of hosts with MACs of their own.
func TestDecideAfterAGatewayMACChange(t *testing.T) {
	table := []Neighbor{neigh("10.240.0.1", fabric, netlink.NUD_STALE), neigh("10.240.0.50", other, netlink.NUD_STALE)}
	if h := Decide(Auto, gateway, nicMAC, table, []net.HardwareAddr{mac("02:99:99:99:99:99"), other}); !bytes.Equal(h.MAC, fabric) {
		t.Errorf("with 10.240.0.50 on a former gateway MAC: %q (%s), want %s", h.MAC, h.Why, fabric)
	}
	if h := Decide(Auto, gateway, nicMAC, table, []net.HardwareAddr{mac("02:99:99:99:99:99")}); h.MAC != nil {
		t.Errorf("with 10.240.0.50 on a MAC the gateway never had: %s, want the kernel's resolution", h.MAC)
	}
}

// TestDecideIsStable: the same table in another order gives the same hop
// and the same reason, so a re-read does not log a change that is none.
func TestDecideIsStable(t *testing.T) {
	a := []Neighbor{neigh("10.240.0.1", fabric, netlink.NUD_REACHABLE), neigh("10.240.0.7", other, netlink.NUD_STALE),
		neigh("10.240.0.99", mac("02:99:99:99:99:99"), netlink.NUD_STALE)}
	b := []Neighbor{a[2], a[0], a[1]}
	if ha, hb := Decide(Auto, gateway, nicMAC, a, nil), Decide(Auto, gateway, nicMAC, b, nil); !ha.Equal(hb) {
		t.Errorf("%+v != %+v", ha, hb)
	}
}

func TestParseMode(t *testing.T) {
	for _, m := range Modes {
		if got, err := ParseMode(string(m)); err != nil || got != m {
			t.Errorf("ParseMode(%q) = %q, %v", m, got, err)
		}
	}
	if _, err := ParseMode("neigh"); err == nil || !strings.Contains(err.Error(), "auto, gateway or kernel") {
		t.Errorf("ParseMode(neigh): %v", err)
	}
}
