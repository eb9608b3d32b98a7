// Package ipproto names the IP protocols podvnet's settings, maps and debug
// output speak of.
package ipproto

import "fmt"

// Protocol numbers (IANA).
const (
	ICMP = 1
	TCP  = 6
	UDP  = 17
	SCTP = 132
)

// Name is a protocol's lower-case name ("tcp", "udp", "sctp", "icmp"), or
// "proto-N" for any other.
func Name(p uint8) string {
	switch p {
	case ICMP:
		return "icmp"
	case TCP:
		return "tcp"
	case UDP:
		return "udp"
	case SCTP:
		return "sctp"
	}
	return fmt.Sprintf("proto-%d", p)
}
