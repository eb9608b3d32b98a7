package ipam

import (
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
)

// fixtureMAC and fixturePool are what testdata's documents describe.
var fixtureMAC = net.HardwareAddr{0x00, 0x0d, 0x3a, 0xf8, 0x06, 0xec}

func fixturePool() Pool {
	p := Pool{
		Subnet:  netip.MustParsePrefix("10.240.0.0/16"),
		Gateway: netip.MustParseAddr("10.240.0.1"),
		Primary: netip.MustParseAddr("10.240.0.4"),
	}
	for ip := netip.MustParseAddr("10.240.0.5"); ip.Compare(netip.MustParseAddr("10.240.0.34")) <= 0; ip = ip.Next() {
		p.Secondary = append(p.Secondary, ip)
	}
	return p
}

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func samePool(a, b Pool) bool {
	return a.Subnet == b.Subnet && a.Gateway == b.Gateway && a.Primary == b.Primary && slices.Equal(a.Secondary, b.Secondary)
}

type parser struct {
	name  string
	parse func([]byte) ([]Interface, error)
}

var parsers = []parser{{"nmagent", ParseNMAgent}, {"imds", ParseIMDS}}

// TestParseFixtures reads the real-shaped documents: both formats describe
// the same node, and both must yield the same pool.
func TestParseFixtures(t *testing.T) {
	docs := map[string]string{"nmagent": "nmagent-getinterfaceinfov1.xml", "imds": "imds-instance-network.json"}
	for _, p := range parsers {
		t.Run(p.name, func(t *testing.T) {
			ifaces, err := p.parse(readTestdata(t, docs[p.name]))
			if err != nil {
				t.Fatal(err)
			}
			for _, mac := range []net.HardwareAddr{nil, fixtureMAC} {
				in, err := SelectInterface(ifaces, mac)
				if err != nil {
					t.Fatalf("select %v: %v", mac, err)
				}
				if !samePool(in.Pool, fixturePool()) {
					t.Fatalf("pool = %+v, want %+v", in.Pool, fixturePool())
				}
				if in.MAC.String() != fixtureMAC.String() || !in.Primary {
					t.Fatalf("interface MAC %s primary %v, want %s primary", in.MAC, in.Primary, fixtureMAC)
				}
			}
		})
	}
}

const (
	macA = "000D3AF806EC" // the node's NIC
	macB = "000D3A1B2C3D" // a second NIC
)

// TestParseNMAgent covers the shapes real wireserver documents take.
func TestParseNMAgent(t *testing.T) {
	tests := []struct {
		name    string
		doc     string
		mac     string // select this MAC; "" selects the primary interface
		want    Pool   // when wantErr is ""
		ignored []string
		wantErr string // in the parse or selection error
	}{
		{
			name: "several interfaces, select the primary",
			doc: `<Interfaces>
				<Interface MacAddress="` + macB + `" IsPrimary="false"><IPSubnet Prefix="10.241.0.0/24">
					<IPAddress Address="10.241.0.4" IsPrimary="true"/><IPAddress Address="10.241.0.5" IsPrimary="false"/></IPSubnet></Interface>
				<Interface MacAddress="` + macA + `" IsPrimary="true"><IPSubnet Prefix="10.240.0.0/16">
					<IPAddress Address="10.240.0.4" IsPrimary="true"/><IPAddress Address="10.240.0.5" IsPrimary="false"/></IPSubnet></Interface>
				</Interfaces>`,
			want: pool("10.240.0.0/16", "10.240.0.4", "10.240.0.5"),
		},
		{
			name: "several interfaces, select by MAC",
			doc: `<Interfaces>
				<Interface MacAddress="` + macA + `" IsPrimary="true"><IPSubnet Prefix="10.240.0.0/16">
					<IPAddress Address="10.240.0.4" IsPrimary="true"/></IPSubnet></Interface>
				<Interface MacAddress="` + macB + `" IsPrimary="false"><IPSubnet Prefix="10.241.0.0/24">
					<IPAddress Address="10.241.0.4" IsPrimary="true"/><IPAddress Address="10.241.0.9" IsPrimary="false"/></IPSubnet></Interface>
				</Interfaces>`,
			mac:  macB,
			want: pool("10.241.0.0/24", "10.241.0.4", "10.241.0.9"),
		},
		{
			name: "interface with no secondary IPs",
			doc: `<Interfaces><Interface MacAddress="` + macA + `" IsPrimary="true"><IPSubnet Prefix="10.240.0.0/16">
				<IPAddress Address="10.240.0.4" IsPrimary="true"/></IPSubnet></Interface></Interfaces>`,
			want: pool("10.240.0.0/16", "10.240.0.4"),
		},
		{
			name: "addresses of another subnet are ignored",
			doc: `<Interfaces><Interface MacAddress="` + macA + `" IsPrimary="true">
				<IPSubnet Prefix="10.240.0.0/16"><IPAddress Address="10.240.0.4" IsPrimary="true"/><IPAddress Address="10.240.0.5" IsPrimary="false"/></IPSubnet>
				<IPSubnet Prefix="10.250.0.0/16"><IPAddress Address="10.250.0.7" IsPrimary="false"/></IPSubnet>
				</Interface></Interfaces>`,
			want:    pool("10.240.0.0/16", "10.240.0.4", "10.240.0.5"),
			ignored: []string{"10.250.0.7"},
		},
		{
			name: "empty address attributes are skipped",
			doc: `<Interfaces><Interface MacAddress="` + macA + `" IsPrimary="true"><IPSubnet Prefix="10.240.0.0/16">
				<IPAddress Address="10.240.0.4" IsPrimary="true"/><IPAddress Address="" IsPrimary="false"/><IPAddress Address="10.240.0.6"/></IPSubnet></Interface></Interfaces>`,
			want: pool("10.240.0.0/16", "10.240.0.4", "10.240.0.6"),
		},
		{
			name: "MAC with colons, lower case",
			doc: `<Interfaces><Interface MacAddress="00:0d:3a:f8:06:ec" IsPrimary="true"><IPSubnet Prefix="10.240.0.0/16">
				<IPAddress Address="10.240.0.4" IsPrimary="true"/></IPSubnet></Interface></Interfaces>`,
			mac:  macA,
			want: pool("10.240.0.0/16", "10.240.0.4"),
		},
		{
			name: "no primary address",
			doc: `<Interfaces><Interface MacAddress="` + macA + `" IsPrimary="true"><IPSubnet Prefix="10.240.0.0/16">
				<IPAddress Address="10.240.0.5" IsPrimary="false"/></IPSubnet></Interface></Interfaces>`,
			wantErr: "no primary IPv4 address",
		},
		{
			name: "empty subnet prefix",
			doc: `<Interfaces><Interface MacAddress="` + macA + `" IsPrimary="true"><IPSubnet Prefix="">
				<IPAddress Address="10.240.0.4" IsPrimary="true"/></IPSubnet></Interface></Interfaces>`,
			wantErr: "no subnet holds the primary IP 10.240.0.4",
		},
		{
			name: "no MAC on the primary interface",
			doc: `<Interfaces><Interface IsPrimary="true"><IPSubnet Prefix="10.240.0.0/16">
				<IPAddress Address="10.240.0.4" IsPrimary="true"/></IPSubnet></Interface></Interfaces>`,
			wantErr: "has no MAC address; set --nic",
		},
		{
			name: "no interface has the MAC",
			doc: `<Interfaces><Interface MacAddress="` + macA + `" IsPrimary="true"><IPSubnet Prefix="10.240.0.0/16">
				<IPAddress Address="10.240.0.4" IsPrimary="true"/></IPSubnet></Interface></Interfaces>`,
			mac:     macB,
			wantErr: "no interface has MAC 00:0d:3a:1b:2c:3d; the document lists 1: 00:0d:3a:f8:06:ec (primary)",
		},
		{
			name: "no interface is primary",
			doc: `<Interfaces><Interface MacAddress="` + macA + `" IsPrimary="false"><IPSubnet Prefix="10.240.0.0/16">
				<IPAddress Address="10.240.0.4" IsPrimary="true"/></IPSubnet></Interface></Interfaces>`,
			wantErr: "no interface is marked primary",
		},
		{name: "no interfaces", doc: `<Interfaces></Interfaces>`, wantErr: "lists no <Interface>"},
		{name: "truncated XML", doc: `<Interfaces><Interface MacAddress="` + macA, wantErr: "parse NMAgent XML"},
		{name: "other root element", doc: `<Html><Body>error</Body></Html>`, wantErr: "parse NMAgent XML"},
		{name: "empty body", doc: ``, wantErr: "parse NMAgent XML"},
		{
			name:    "malformed MAC",
			doc:     `<Interfaces><Interface MacAddress="000D3AF806" IsPrimary="true"></Interface></Interfaces>`,
			wantErr: `Interface[0] MacAddress: MAC "000D3AF806": want 12 hex digits`,
		},
		{
			name: "malformed address",
			doc: `<Interfaces><Interface MacAddress="` + macA + `" IsPrimary="true"><IPSubnet Prefix="10.240.0.0/16">
				<IPAddress Address="10.240.0.4" IsPrimary="true"/><IPAddress Address="10.240.0.256" IsPrimary="false"/></IPSubnet></Interface></Interfaces>`,
			wantErr: `Interface[0] IPSubnet[0] IPAddress[1] Address "10.240.0.256": not an IPv4 address`,
		},
		{
			name:    "malformed prefix",
			doc:     `<Interfaces><Interface MacAddress="` + macA + `" IsPrimary="true"><IPSubnet Prefix="10.240.0.0/33"/></Interface></Interfaces>`,
			wantErr: `Interface[0] IPSubnet[0] Prefix "10.240.0.0/33": not an IPv4 CIDR`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkParse(t, ParseNMAgent, tt.doc, tt.mac, tt.want, tt.ignored, tt.wantErr)
		})
	}
}

// TestParseIMDS covers the shapes real IMDS documents take. Every value is a
// string, and the first interface and first address are the primary ones.
func TestParseIMDS(t *testing.T) {
	iface := func(mac string, addrs []string, subnets ...[2]string) string {
		var a, s []string
		for _, x := range addrs {
			a = append(a, `{"privateIpAddress":"`+x+`","publicIpAddress":""}`)
		}
		for _, x := range subnets {
			s = append(s, `{"address":"`+x[0]+`","prefix":"`+x[1]+`"}`)
		}
		return `{"ipv4":{"ipAddress":[` + strings.Join(a, ",") + `],"subnet":[` + strings.Join(s, ",") + `]},"ipv6":{"ipAddress":[]},"macAddress":"` + mac + `"}`
	}
	doc := func(ifaces ...string) string { return `{"interface":[` + strings.Join(ifaces, ",") + `]}` }
	sub := [2]string{"10.240.0.0", "16"}
	tests := []struct {
		name    string
		doc     string
		mac     string
		want    Pool
		ignored []string
		wantErr string
	}{
		{
			name: "several interfaces, the first is primary",
			doc: doc(iface(macA, []string{"10.240.0.4", "10.240.0.5"}, sub),
				iface(macB, []string{"10.241.0.4", "10.241.0.5"}, [2]string{"10.241.0.0", "24"})),
			want: pool("10.240.0.0/16", "10.240.0.4", "10.240.0.5"),
		},
		{
			name: "several interfaces, select by MAC",
			doc: doc(iface(macA, []string{"10.240.0.4", "10.240.0.5"}, sub),
				iface(macB, []string{"10.241.0.4", "10.241.0.5"}, [2]string{"10.241.0.0", "24"})),
			mac:  macB,
			want: pool("10.241.0.0/24", "10.241.0.4", "10.241.0.5"),
		},
		{
			name: "interface with no secondary IPs",
			doc:  doc(iface(macA, []string{"10.240.0.4"}, sub)),
			want: pool("10.240.0.0/16", "10.240.0.4"),
		},
		{
			name:    "addresses of another subnet are ignored",
			doc:     doc(iface(macA, []string{"10.240.0.4", "10.250.0.7", "10.240.0.5"}, sub, [2]string{"10.250.0.0", "16"})),
			want:    pool("10.240.0.0/16", "10.240.0.4", "10.240.0.5"),
			ignored: []string{"10.250.0.7"},
		},
		{
			name: "empty secondary address is skipped",
			doc:  doc(iface(macA, []string{"10.240.0.4", "", "10.240.0.6"}, sub)),
			want: pool("10.240.0.0/16", "10.240.0.4", "10.240.0.6"),
		},
		{
			name:    "empty primary address",
			doc:     doc(iface(macA, []string{"", "10.240.0.5"}, sub)),
			wantErr: "the first ipAddress (the primary) is empty",
		},
		{
			name:    "empty subnet prefix",
			doc:     doc(iface(macA, []string{"10.240.0.4"}, [2]string{"10.240.0.0", ""})),
			wantErr: "no subnet holds the primary IP 10.240.0.4",
		},
		{
			name:    "no ipv4 object",
			doc:     `{"interface":[{"macAddress":"` + macA + `"}]}`,
			wantErr: "no primary IPv4 address",
		},
		{
			name:    "empty MAC",
			doc:     doc(iface("", []string{"10.240.0.4"}, sub)),
			wantErr: "has no MAC address; set --nic",
		},
		{
			name:    "no interface has the MAC",
			doc:     doc(iface(macA, []string{"10.240.0.4"}, sub), iface("", nil)),
			mac:     macB,
			wantErr: "the document lists 2: 00:0d:3a:f8:06:ec (primary), (no MAC)",
		},
		{name: "no interface key", doc: `{}`, wantErr: `lists no "interface"`},
		{name: "null interface", doc: `{"interface":null}`, wantErr: `lists no "interface"`},
		{name: "truncated JSON", doc: `{"interface":[{"ipv4":{"ipAddress":[{"privateIpAddress":"10.2`, wantErr: "parse IMDS JSON"},
		{name: "empty body", doc: ``, wantErr: "parse IMDS JSON"},
		{name: "HTML error page", doc: `<html>Bad Request</html>`, wantErr: "parse IMDS JSON"},
		{
			name:    "prefix as a number, not a string",
			doc:     `{"interface":[{"ipv4":{"subnet":[{"address":"10.240.0.0","prefix":16}]},"macAddress":"` + macA + `"}]}`,
			wantErr: "parse IMDS JSON",
		},
		{
			name:    "malformed prefix",
			doc:     doc(iface(macA, []string{"10.240.0.4"}, [2]string{"10.240.0.0", "40"})),
			wantErr: `interface[0].ipv4.subnet[0].prefix "40": not a prefix length 0-32`,
		},
		{
			name:    "malformed subnet address",
			doc:     doc(iface(macA, []string{"10.240.0.4"}, [2]string{"10.240.0", "16"})),
			wantErr: `interface[0].ipv4.subnet[0].address "10.240.0": not an IPv4 address`,
		},
		{
			name:    "IPv6 in the ipv4 list",
			doc:     doc(iface(macA, []string{"10.240.0.4", "fd00::5"}, sub)),
			wantErr: `interface[0].ipv4.ipAddress[1].privateIpAddress "fd00::5": not an IPv4 address`,
		},
		{
			name:    "malformed MAC",
			doc:     doc(iface("000D3AF806EZ", []string{"10.240.0.4"}, sub)),
			wantErr: `interface[0].macAddress: MAC "000D3AF806EZ": want 12 hex digits`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkParse(t, ParseIMDS, tt.doc, tt.mac, tt.want, tt.ignored, tt.wantErr)
		})
	}
}

func checkParse(t *testing.T, parse func([]byte) ([]Interface, error), doc, mac string, want Pool, ignored []string, wantErr string) {
	t.Helper()
	var sel net.HardwareAddr
	if mac != "" {
		var err error
		if sel, err = ParseMAC(mac); err != nil {
			t.Fatal(err)
		}
	}
	ifaces, err := parse([]byte(doc))
	var in Interface
	if err == nil {
		in, err = SelectInterface(ifaces, sel)
	}
	if wantErr != "" {
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Fatalf("got %v, want an error containing %q", err, wantErr)
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	if !samePool(in.Pool, want) {
		t.Fatalf("pool = %+v, want %+v", in.Pool, want)
	}
	var gotIgnored []string
	for _, a := range in.Ignored {
		gotIgnored = append(gotIgnored, a.String())
	}
	if !slices.Equal(gotIgnored, ignored) {
		t.Fatalf("ignored = %v, want %v", gotIgnored, ignored)
	}
}

// pool builds the pool of subnet with the primary IP and secondaries; the
// gateway is the subnet's first host address, as in Azure.
func pool(subnet, primary string, secondary ...string) Pool {
	p := Pool{Subnet: netip.MustParsePrefix(subnet), Primary: netip.MustParseAddr(primary)}
	p.Gateway = p.Subnet.Addr().Next()
	for _, s := range secondary {
		p.Secondary = append(p.Secondary, netip.MustParseAddr(s))
	}
	return p
}

func TestParseMAC(t *testing.T) {
	for _, tt := range []struct{ in, want, wantErr string }{
		{"000D3AF806EC", "00:0d:3a:f8:06:ec", ""},
		{"00-0D-3A-F8-06-EC", "00:0d:3a:f8:06:ec", ""},
		{"00:0d:3a:f8:06:ec", "00:0d:3a:f8:06:ec", ""},
		{"000D3AF806", "", "want 12 hex digits"},
		{"000D3AF806GG", "", "want 12 hex digits"},
		{"", "", "want 12 hex digits"},
	} {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseMAC(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, %v; want an error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got.String() != tt.want {
				t.Fatalf("got %v, %v; want %s", got, err, tt.want)
			}
			if AzureMAC(got) != strings.ToUpper(strings.NewReplacer(":", "").Replace(tt.want)) {
				t.Fatalf("AzureMAC(%s) = %s", got, AzureMAC(got))
			}
		})
	}
}
