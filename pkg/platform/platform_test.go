package platform

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/podvnet/podvnet/pkg/maps"
)

func TestParseList(t *testing.T) {
	dns := Endpoint{WireserverIP, 53, UDP}
	tests := []struct {
		in      string
		want    []Endpoint
		wantErr string // in the error, with the entry it names
	}{
		{in: "", want: nil},
		{in: "  ", want: nil},
		{in: DefaultBlocked, want: []Endpoint{Wireserver, HostGAPlugin}},
		{in: "168.63.129.16:80/tcp, 169.254.169.254:80/TCP", want: []Endpoint{Wireserver, IMDS}},
		{in: "168.63.129.16:53/udp,168.63.129.16:53/udp", want: []Endpoint{dns}},
		{in: "10.1.2.3:3868/sctp", want: []Endpoint{{netip.MustParseAddr("10.1.2.3"), 3868, SCTP}}},
		{in: "168.63.129.16:80/tcp,168.63.129.16:80", wantErr: `entry "168.63.129.16:80": want ADDR:PORT/PROTO`},
		{in: "168.63.129.16/tcp", wantErr: `entry "168.63.129.16/tcp": no port`},
		{in: "168.63.129.16:0/tcp", wantErr: `entry "168.63.129.16:0/tcp": port "0"`},
		{in: "168.63.129.16:65536/tcp", wantErr: `entry "168.63.129.16:65536/tcp": port "65536"`},
		{in: "168.63.129.16:http/tcp", wantErr: `port "http"`},
		{in: "168.63.129.16:80/icmp", wantErr: `entry "168.63.129.16:80/icmp": protocol "icmp": want tcp, udp or sctp`},
		{in: "wireserver:80/tcp", wantErr: `"wireserver" is not an IPv4 address`},
		{in: "[fd00::1]:80/tcp", wantErr: `"[fd00::1]" is not an IPv4 address`},
		{in: "168.63.129.16:80/tcp,,", wantErr: `entry "": want ADDR:PORT/PROTO`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseList(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			// What debug and the logs print parses back to the same list.
			if again, err := ParseList(Format(got)); err != nil || !slices.Equal(again, got) {
				t.Errorf("ParseList(Format(%v)) = %v, %v", got, again, err)
			}
		})
	}
}

func TestDefaultIsWhatAKSBlocks(t *testing.T) {
	if DefaultBlocked != "168.63.129.16:80/tcp,168.63.129.16:32526/tcp" {
		t.Errorf("DefaultBlocked = %q", DefaultBlocked)
	}
}

func TestEntries(t *testing.T) {
	extra := Endpoint{WireserverIP, 8080, TCP}
	dns := Endpoint{netip.MustParseAddr("10.9.9.9"), 53, UDP}
	got := Entries([]Endpoint{Wireserver, HostGAPlugin, IMDS, extra, dns})
	wire := WireserverIP
	want := []maps.BlockedDest{
		{Addr: wire, Port: 80, Proto: 6, Reason: maps.ReasonDropWireserver},
		// The guard of 168.63.129.16/tcp takes its first endpoint's reason.
		{Addr: wire, Port: 0, Proto: 6, Reason: maps.ReasonDropWireserver},
		{Addr: wire, Port: 32526, Proto: 6, Reason: maps.ReasonDropHostGAPlugin},
		{Addr: IMDSIP, Port: 80, Proto: 6, Reason: maps.ReasonDropIMDS},
		{Addr: IMDSIP, Port: 0, Proto: 6, Reason: maps.ReasonDropIMDS},
		{Addr: wire, Port: 8080, Proto: 6, Reason: maps.ReasonDropBlockedEndpoint},
		{Addr: dns.Addr, Port: 53, Proto: 17, Reason: maps.ReasonDropBlockedEndpoint},
		{Addr: dns.Addr, Port: 0, Proto: 17, Reason: maps.ReasonDropBlockedEndpoint},
	}
	if !slices.Equal(got, want) {
		t.Errorf("Entries:\n got %v\nwant %v", got, want)
	}
	if Entries(nil) != nil {
		t.Error("no endpoints must give no entries (not even guards)")
	}
}
