package vnet

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/podvnet/podvnet/pkg/ipam"
)

// The fabric's service addresses, as every Azure VM sees them.
var (
	WireserverIP = netip.MustParseAddr("168.63.129.16")
	IMDSIP       = netip.MustParseAddr("169.254.169.254")
)

// decoyMAC is a second NIC the documents list for every node, so that an
// agent that does not select its NIC by MAC (or by the primary flag) takes
// the wrong pool.
var decoyMAC = net.HardwareAddr{0x00, 0x0d, 0x3a, 0xde, 0xc0, 0x01}

// Metadata is the fake wireserver (NMAgent's interface document) and IMDS,
// served from the fabric namespace on the addresses Azure uses. Like the
// real services, it tells a VM apart by the source address of the request,
// and IMDS refuses requests without the "Metadata: true" header.
type Metadata struct {
	v *VNet

	mu        sync.Mutex
	secondary map[*Node][]netip.Addr // served instead of Node.Pool.Secondary
	fail      []int                  // statuses to answer first
	answered  map[int]int            // status -> count
}

// serveMetadata puts the service addresses on the fabric's loopback (the
// nodes reach them over their default route, as on Azure) and serves both
// documents there.
func (v *VNet) serveMetadata() (*Metadata, error) {
	m := &Metadata{v: v, secondary: map[*Node][]netip.Addr{}, answered: map[int]int{}}
	lo, err := v.Fabric.NL.LinkByName("lo")
	if err != nil {
		return nil, err
	}
	for _, ip := range []netip.Addr{WireserverIP, IMDSIP} {
		if err := v.Fabric.NL.AddrAdd(lo, &netlink.Addr{IPNet: prefixNet(netip.PrefixFrom(ip, 32))}); err != nil {
			return nil, fmt.Errorf("fabric address %s: %w", ip, err)
		}
		var ln net.Listener
		// A socket stays in the namespace it was created in.
		if err := v.Fabric.Do(func() (err error) {
			ln, err = net.Listen("tcp4", net.JoinHostPort(ip.String(), "80"))
			return err
		}); err != nil {
			return nil, fmt.Errorf("listen on %s in the fabric: %w", ip, err)
		}
		srv := &http.Server{Handler: m, ReadHeaderTimeout: 10 * time.Second}
		go srv.Serve(ln)
		v.onClose(func() error {
			if err := srv.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
				return err
			}
			return nil
		})
	}
	return m, v.servePlatformPorts()
}

// SetSecondary changes the secondary IPs served for n, as when IPs are added
// to or removed from the VM's NIC. Fabric routes are not changed.
func (m *Metadata) SetSecondary(n *Node, ips []netip.Addr) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.secondary[n] = append([]netip.Addr(nil), ips...)
}

// Secondary is what is served for n now.
func (m *Metadata) Secondary(n *Node) []netip.Addr {
	m.mu.Lock()
	defer m.mu.Unlock()
	if ips, ok := m.secondary[n]; ok {
		return append([]netip.Addr(nil), ips...)
	}
	return append([]netip.Addr(nil), n.Pool.Secondary...)
}

// FailNext makes the next requests, one per status, fail with these
// statuses (429 as IMDS throttles, 5xx as a busy wireserver).
func (m *Metadata) FailNext(statuses ...int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.fail = append(m.fail, statuses...)
}

// Answered is how many requests were answered with status.
func (m *Metadata) Answered(status int) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.answered[status]
}

func (m *Metadata) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	status, body := m.answer(r)
	m.mu.Lock()
	m.answered[status]++
	m.mu.Unlock()
	w.WriteHeader(status)
	w.Write(body)
}

func (m *Metadata) answer(r *http.Request) (int, []byte) {
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	src, _ := netip.ParseAddr(host)
	var node *Node
	for _, n := range m.v.Nodes {
		if n.Pool.Primary == src {
			node = n
		}
	}
	local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	imds := local != nil && strings.HasPrefix(local.String(), IMDSIP.String()+":")
	switch {
	case node == nil:
		return http.StatusForbidden, []byte("unknown VM " + host)
	case imds && r.Header.Get("Metadata") != "true":
		return http.StatusBadRequest, []byte(`{"error":"Bad request. Required metadata header not specified"}`)
	case imds && r.URL.RequestURI() != ipam.IMDSPath:
		return http.StatusNotFound, nil
	case !imds && r.URL.RequestURI() != ipam.NMAgentPath:
		return http.StatusNotFound, nil
	}
	m.mu.Lock()
	if len(m.fail) > 0 {
		status := m.fail[0]
		m.fail = m.fail[1:]
		m.mu.Unlock()
		return status, []byte(http.StatusText(status))
	}
	m.mu.Unlock()
	sec := m.Secondary(node)
	decoy := ipam.Pool{Subnet: netip.MustParsePrefix("10.241.0.0/24"), Primary: netip.AddrFrom4([4]byte{10, 241, 0, byte(3 + node.Index)})}
	decoy.Secondary = []netip.Addr{decoy.Primary.Next()}
	if imds {
		return http.StatusOK, imdsDoc(node.NICMAC, node.Pool, sec, decoy)
	}
	return http.StatusOK, nmagentDoc(node.NICMAC, node.Pool, sec, decoy)
}

// nmagentDoc lists the decoy NIC first: the node's NIC is the one marked
// primary, or the one whose MAC matches.
func nmagentDoc(mac net.HardwareAddr, p ipam.Pool, sec []netip.Addr, decoy ipam.Pool) []byte {
	var b strings.Builder
	iface := func(mac net.HardwareAddr, primary bool, p ipam.Pool, sec []netip.Addr) {
		fmt.Fprintf(&b, "  <Interface MacAddress=%q IsPrimary=\"%t\">\n    <IPSubnet Prefix=%q>\n", ipam.AzureMAC(mac), primary, p.Subnet)
		fmt.Fprintf(&b, "      <IPAddress Address=%q IsPrimary=\"true\"/>\n", p.Primary)
		for _, ip := range sec {
			fmt.Fprintf(&b, "      <IPAddress Address=%q IsPrimary=\"false\"/>\n", ip)
		}
		b.WriteString("    </IPSubnet>\n  </Interface>\n")
	}
	b.WriteString("<Interfaces>\n")
	iface(decoyMAC, false, decoy, decoy.Secondary)
	iface(mac, true, p, sec)
	b.WriteString("</Interfaces>\n")
	return []byte(b.String())
}

// imdsDoc lists the node's NIC first, as IMDS lists the primary NIC; every
// value is a string.
func imdsDoc(mac net.HardwareAddr, p ipam.Pool, sec []netip.Addr, decoy ipam.Pool) []byte {
	type addr struct {
		Private string `json:"privateIpAddress"`
		Public  string `json:"publicIpAddress"`
	}
	type subnet struct {
		Address string `json:"address"`
		Prefix  string `json:"prefix"`
	}
	iface := func(mac net.HardwareAddr, p ipam.Pool, sec []netip.Addr) map[string]any {
		addrs := []addr{{Private: p.Primary.String()}}
		for _, ip := range sec {
			addrs = append(addrs, addr{Private: ip.String()})
		}
		return map[string]any{
			"ipv4": map[string]any{
				"ipAddress": addrs,
				"subnet":    []subnet{{Address: p.Subnet.Addr().String(), Prefix: fmt.Sprint(p.Subnet.Bits())}},
			},
			"ipv6":       map[string]any{"ipAddress": []addr{}},
			"macAddress": ipam.AzureMAC(mac),
		}
	}
	b, _ := json.MarshalIndent(map[string]any{"interface": []any{iface(mac, p, sec), iface(decoyMAC, decoy, decoy.Secondary)}}, "", "  ")
	return b
}
