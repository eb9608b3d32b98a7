// Package platform holds the destinations pods must not reach: the cloud
// platform's own endpoints (Azure's WireServer and HostGAPlugin, IMDS when
// an operator denies it) and whatever an operator adds. One list feeds both
// enforcements: the data path's blocked map (Entries), checked by from_pod
// before any forwarding decision, and the nftables rule that covers the
// kernel path (pkg/snat).
package platform

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/podvnet/podvnet/internal/ipproto"
	"github.com/podvnet/podvnet/pkg/maps"
)

// Azure's addresses for platform services, the same in every VNet.
var (
	// WireserverIP serves the VM's agent: DNS on 53, the WireServer on 80
	// (the VM's extension settings with their protected secrets, and
	// NMAgent's documents), the HostGAPlugin on 32526. Azure load balancer
	// health probes come from it too.
	WireserverIP = netip.MustParseAddr("168.63.129.16")
	// IMDSIP is the Instance Metadata Service: the VM's identity and its
	// managed identity tokens.
	IMDSIP = netip.MustParseAddr("169.254.169.254")
)

// Proto is an IP protocol number with ports.
type Proto uint8

// The protocols an endpoint can name.
const (
	TCP  Proto = ipproto.TCP
	UDP  Proto = ipproto.UDP
	SCTP Proto = ipproto.SCTP
)

func (p Proto) String() string { return ipproto.Name(uint8(p)) }

// Endpoint is one blocked destination: an IPv4 address, a port and a
// protocol.
type Endpoint struct {
	Addr  netip.Addr
	Port  uint16
	Proto Proto
}

// The platform's endpoints.
var (
	// Wireserver is what AKS node images drop in FORWARD: a pod reading it
	// gets the node's protected settings.
	Wireserver = Endpoint{WireserverIP, 80, TCP}
	// HostGAPlugin answers on both 80 and 32526; AKS drops both.
	HostGAPlugin = Endpoint{WireserverIP, 32526, TCP}
	// IMDS is blocked only with --block-imds: Azure lets pods reach it.
	IMDS = Endpoint{IMDSIP, 80, TCP}
)

// DefaultBlocked is the flag's default: what AKS blocks for pods.
var DefaultBlocked = Format([]Endpoint{Wireserver, HostGAPlugin})

// String is the flag's form, ADDR:PORT/PROTO.
func (e Endpoint) String() string {
	return netip.AddrPortFrom(e.Addr, e.Port).String() + "/" + e.Proto.String()
}

// Reason is what drops to e are counted under.
func (e Endpoint) Reason() maps.Reason {
	switch e {
	case Wireserver:
		return maps.ReasonDropWireserver
	case HostGAPlugin:
		return maps.ReasonDropHostGAPlugin
	case IMDS:
		return maps.ReasonDropIMDS
	}
	return maps.ReasonDropBlockedEndpoint
}

// Format joins endpoints in the flag's comma-separated form.
func Format(eps []Endpoint) string {
	s := make([]string, len(eps))
	for i, e := range eps {
		s[i] = e.String()
	}
	return strings.Join(s, ",")
}

// ParseList reads a comma-separated list of ADDR:PORT/PROTO; an empty
// string is no endpoint. An invalid entry fails the whole list, named in
// the error. Repeats are dropped.
func ParseList(s string) ([]Endpoint, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var out []Endpoint
	for _, item := range strings.Split(s, ",") {
		e, err := Parse(strings.TrimSpace(item))
		if err != nil {
			return nil, fmt.Errorf("entry %q: %w", item, err)
		}
		out = Add(out, e)
	}
	return out, nil
}

// Parse reads one ADDR:PORT/PROTO, e.g. 168.63.129.16:80/tcp.
func Parse(s string) (Endpoint, error) {
	hostPort, proto, ok := strings.Cut(s, "/")
	if !ok {
		return Endpoint{}, fmt.Errorf("want ADDR:PORT/PROTO (e.g. %s)", Wireserver)
	}
	host, port, err := splitHostPort(hostPort)
	if err != nil {
		return Endpoint{}, err
	}
	addr, err := netip.ParseAddr(host)
	if err != nil || !addr.Is4() {
		return Endpoint{}, fmt.Errorf("%q is not an IPv4 address", host)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 {
		return Endpoint{}, fmt.Errorf("port %q: want 1 to 65535", port)
	}
	e := Endpoint{Addr: addr, Port: uint16(n)}
	for _, p := range []Proto{TCP, UDP, SCTP} {
		if strings.EqualFold(proto, p.String()) {
			e.Proto = p
			return e, nil
		}
	}
	return Endpoint{}, fmt.Errorf("protocol %q: want tcp, udp or sctp", proto)
}

// splitHostPort splits at the last colon: IPv6 is refused by the address
// check after it, with a clearer error than net.SplitHostPort gives.
func splitHostPort(s string) (host, port string, err error) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return "", "", fmt.Errorf("no port: want ADDR:PORT/PROTO (e.g. %s)", Wireserver)
	}
	return s[:i], s[i+1:], nil
}

// Add appends e unless eps already holds it.
func Add(eps []Endpoint, e Endpoint) []Endpoint {
	for _, have := range eps {
		if have == e {
			return eps
		}
	}
	return append(eps, e)
}

// Entries are the blocked map's entries for eps: one per endpoint, and one
// guard (port 0) per blocked (address, protocol), which drops the
// fragments after the first of a datagram (they carry no ports) and counts
// them under the reason of the first endpoint of that address and protocol.
func Entries(eps []Endpoint) []maps.BlockedDest {
	var out []maps.BlockedDest
	guarded := map[Endpoint]bool{}
	for _, e := range eps {
		out = append(out, maps.BlockedDest{Addr: e.Addr, Port: e.Port, Proto: uint8(e.Proto), Reason: e.Reason()})
		guard := Endpoint{Addr: e.Addr, Proto: e.Proto}
		if !guarded[guard] {
			guarded[guard] = true
			out = append(out, maps.BlockedDest{Addr: e.Addr, Proto: uint8(e.Proto), Reason: e.Reason()})
		}
	}
	return out
}
