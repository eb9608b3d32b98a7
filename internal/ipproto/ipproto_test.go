package ipproto

import "testing"

func TestName(t *testing.T) {
	for p, want := range map[uint8]string{ICMP: "icmp", TCP: "tcp", UDP: "udp", SCTP: "sctp", 47: "proto-47"} {
		if got := Name(p); got != want {
			t.Errorf("Name(%d) = %q, want %q", p, got, want)
		}
	}
}
