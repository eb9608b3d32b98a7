package ipam

import (
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// Interface is one NIC as the Azure fabric describes it: its MAC, whether
// it is the VM's primary NIC, and the pool it carries.
type Interface struct {
	MAC     net.HardwareAddr // nil when the document gives none
	Primary bool
	Pool    Pool
	// Ignored are secondary addresses outside the subnet of the primary IP:
	// pods get addresses of one subnet only (the no-SNAT range and the
	// fabric routes are per subnet).
	Ignored []netip.Addr
	// Err says why the interface has no usable pool (no primary IP, ...);
	// it only matters if this is the interface the node selects.
	Err error
}

// ParseMAC reads a MAC as Azure writes it (12 hex digits, upper-case, no
// separators) or in the usual colon or dash form.
func ParseMAC(s string) (net.HardwareAddr, error) {
	hexDigits := strings.NewReplacer(":", "", "-", "").Replace(strings.TrimSpace(s))
	if len(hexDigits) != 12 {
		return nil, fmt.Errorf("MAC %q: want 12 hex digits", s)
	}
	b, err := hex.DecodeString(hexDigits)
	if err != nil {
		return nil, fmt.Errorf("MAC %q: want 12 hex digits", s)
	}
	return net.HardwareAddr(b), nil
}

// AzureMAC formats a MAC the way NMAgent and IMDS do: 000D3AF806EC.
func AzureMAC(mac net.HardwareAddr) string { return strings.ToUpper(hex.EncodeToString(mac)) }

// SelectInterface picks the interface whose MAC is mac or, when mac is nil,
// the VM's primary interface, and returns its pool.
func SelectInterface(ifaces []Interface, mac net.HardwareAddr) (Interface, error) {
	var found *Interface
	for i := range ifaces {
		in := &ifaces[i]
		if (mac == nil && in.Primary) || (mac != nil && in.MAC != nil && string(in.MAC) == string(mac)) {
			found = in
			break
		}
	}
	if found == nil {
		listed := make([]string, 0, len(ifaces))
		for _, in := range ifaces {
			s := "(no MAC)"
			if in.MAC != nil {
				s = in.MAC.String()
			}
			if in.Primary {
				s += " (primary)"
			}
			listed = append(listed, s)
		}
		want := "no interface is marked primary"
		if mac != nil {
			want = "no interface has MAC " + mac.String()
		}
		return Interface{}, fmt.Errorf("%s; the document lists %d: %s", want, len(ifaces), strings.Join(listed, ", "))
	}
	if found.Err != nil {
		return Interface{}, fmt.Errorf("interface %s: %w", found.MAC, found.Err)
	}
	if found.MAC == nil {
		return Interface{}, errors.New("the primary interface has no MAC address; set --nic")
	}
	return *found, nil
}

// finish builds the pool of an interface from its primary IP, its subnets
// and its other addresses, keeping those in the primary's subnet.
func (in *Interface) finish(primary netip.Addr, subnets []netip.Prefix, others []netip.Addr) {
	if !primary.IsValid() {
		in.Err = errors.New("no primary IPv4 address")
		return
	}
	var subnet netip.Prefix
	for _, s := range subnets {
		if s.Contains(primary) {
			subnet = s.Masked()
			break
		}
	}
	if !subnet.IsValid() {
		in.Err = fmt.Errorf("no subnet holds the primary IP %s", primary)
		return
	}
	// Azure's default gateway is the subnet's first host address.
	in.Pool = Pool{Subnet: subnet, Gateway: subnet.Addr().Next(), Primary: primary}
	seen := map[netip.Addr]bool{primary: true, in.Pool.Gateway: true}
	for _, a := range others {
		switch {
		case seen[a]:
		case !subnet.Contains(a):
			in.Ignored = append(in.Ignored, a)
		default:
			in.Pool.Secondary = append(in.Pool.Secondary, a)
		}
		seen[a] = true
	}
	if err := in.Pool.Validate(); err != nil {
		in.Err = err
		in.Pool = Pool{}
	}
}

// nmagentInterfaces is the wireserver's getinterfaceinfov1 document.
type nmagentInterfaces struct {
	XMLName    xml.Name `xml:"Interfaces"`
	Interfaces []struct {
		MacAddress string `xml:"MacAddress,attr"`
		IsPrimary  string `xml:"IsPrimary,attr"`
		Subnets    []struct {
			Prefix    string `xml:"Prefix,attr"`
			Addresses []struct {
				Address   string `xml:"Address,attr"`
				IsPrimary string `xml:"IsPrimary,attr"`
			} `xml:"IPAddress"`
		} `xml:"IPSubnet"`
	} `xml:"Interface"`
}

// ParseNMAgent parses NMAgent's getinterfaceinfov1 XML:
//
//	<Interfaces><Interface MacAddress="000D3AF806EC" IsPrimary="true">
//	  <IPSubnet Prefix="10.240.0.0/16">
//	    <IPAddress Address="10.240.0.4" IsPrimary="true"/>
//	    <IPAddress Address="10.240.0.5" IsPrimary="false"/>...
//
// Empty attributes count as absent; a value that is present but malformed
// fails the whole document, which cannot be trusted then.
func ParseNMAgent(b []byte) ([]Interface, error) {
	var doc nmagentInterfaces
	if err := xml.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("parse NMAgent XML: %w", err)
	}
	if len(doc.Interfaces) == 0 {
		return nil, errors.New("NMAgent document lists no <Interface>")
	}
	out := make([]Interface, 0, len(doc.Interfaces))
	for i, x := range doc.Interfaces {
		var in Interface
		var err error
		if x.MacAddress != "" {
			if in.MAC, err = ParseMAC(x.MacAddress); err != nil {
				return nil, fmt.Errorf("NMAgent Interface[%d] MacAddress: %w", i, err)
			}
		}
		in.Primary = isTrue(x.IsPrimary)
		var primary netip.Addr
		var subnets []netip.Prefix
		var others []netip.Addr
		for j, s := range x.Subnets {
			if s.Prefix != "" {
				p, err := netip.ParsePrefix(s.Prefix)
				if err != nil || !p.Addr().Is4() {
					return nil, fmt.Errorf("NMAgent Interface[%d] IPSubnet[%d] Prefix %q: not an IPv4 CIDR", i, j, s.Prefix)
				}
				subnets = append(subnets, p)
			}
			for k, a := range s.Addresses {
				if a.Address == "" {
					continue
				}
				ip, err := netip.ParseAddr(a.Address)
				if err != nil || !ip.Is4() {
					return nil, fmt.Errorf("NMAgent Interface[%d] IPSubnet[%d] IPAddress[%d] Address %q: not an IPv4 address", i, j, k, a.Address)
				}
				if isTrue(a.IsPrimary) && !primary.IsValid() {
					primary = ip
					continue
				}
				others = append(others, ip)
			}
		}
		in.finish(primary, subnets, others)
		out = append(out, in)
	}
	return out, nil
}

func isTrue(s string) bool { return strings.EqualFold(strings.TrimSpace(s), "true") }

// imdsNetwork is IMDS's /metadata/instance/network document. Every value
// is a string.
type imdsNetwork struct {
	Interface []struct {
		MacAddress string `json:"macAddress"`
		IPv4       struct {
			IPAddress []struct {
				PrivateIPAddress string `json:"privateIpAddress"`
			} `json:"ipAddress"`
			Subnet []struct {
				Address string `json:"address"`
				Prefix  string `json:"prefix"`
			} `json:"subnet"`
		} `json:"ipv4"`
	} `json:"interface"`
}

// ParseIMDS parses IMDS's instance network JSON. The first interface is the
// VM's primary NIC and the first address of each interface its primary IP,
// as IMDS lists them. Empty strings count as absent; a value that is present
// but malformed fails the whole document.
func ParseIMDS(b []byte) ([]Interface, error) {
	var doc imdsNetwork
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("parse IMDS JSON: %w", err)
	}
	if len(doc.Interface) == 0 {
		return nil, errors.New(`IMDS document lists no "interface"`)
	}
	out := make([]Interface, 0, len(doc.Interface))
	for i, x := range doc.Interface {
		in := Interface{Primary: i == 0}
		var err error
		if x.MacAddress != "" {
			if in.MAC, err = ParseMAC(x.MacAddress); err != nil {
				return nil, fmt.Errorf("interface[%d].macAddress: %w", i, err)
			}
		}
		var subnets []netip.Prefix
		for j, s := range x.IPv4.Subnet {
			if s.Address == "" || s.Prefix == "" {
				continue
			}
			a, err := netip.ParseAddr(s.Address)
			if err != nil || !a.Is4() {
				return nil, fmt.Errorf("interface[%d].ipv4.subnet[%d].address %q: not an IPv4 address", i, j, s.Address)
			}
			bits, err := strconv.Atoi(s.Prefix)
			if err != nil || bits < 0 || bits > 32 {
				return nil, fmt.Errorf("interface[%d].ipv4.subnet[%d].prefix %q: not a prefix length 0-32", i, j, s.Prefix)
			}
			subnets = append(subnets, netip.PrefixFrom(a, bits))
		}
		var primary netip.Addr
		var others []netip.Addr
		for j, a := range x.IPv4.IPAddress {
			ip, err := netip.ParseAddr(a.PrivateIPAddress)
			switch {
			case a.PrivateIPAddress == "" && j == 0:
				// Without the first entry nothing says which IP is the node's.
				in.Err = errors.New("the first ipAddress (the primary) is empty")
			case a.PrivateIPAddress == "":
			case err != nil || !ip.Is4():
				return nil, fmt.Errorf("interface[%d].ipv4.ipAddress[%d].privateIpAddress %q: not an IPv4 address", i, j, a.PrivateIPAddress)
			case j == 0:
				primary = ip
			default:
				others = append(others, ip)
			}
		}
		if in.Err == nil {
			in.finish(primary, subnets, others)
		}
		out = append(out, in)
	}
	return out, nil
}
