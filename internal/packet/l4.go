package packet

import (
	"encoding/binary"
	"net/netip"

	"github.com/podvnet/podvnet/internal/ipproto"
)

// IP protocol numbers and TCP flags the tests use.
const (
	ProtoICMP = ipproto.ICMP
	ProtoTCP  = ipproto.TCP
	ProtoUDP  = ipproto.UDP

	TCPSyn = 0x02
	TCPAck = 0x10
)

// L4 describes a TCP or UDP frame: the IPv4 frame (its Proto picks TCP or
// UDP, its Payload the bytes after the L4 header) with ports and flags.
type L4 struct {
	IPv4
	Sport, Dport uint16
	Flags        uint8 // TCP flags
	// NoChecksum leaves a UDP checksum 0 (none), as RFC 768 allows.
	NoChecksum bool
}

// Build returns the frame with correct IPv4 and L4 checksums.
func (p L4) Build() []byte {
	if p.Proto == 0 {
		p.Proto = ProtoUDP
	}
	hdr := 8
	if p.Proto == ProtoTCP {
		hdr = 20
	}
	payload := p.Payload
	p.IPv4.Payload = hdr + payload
	b := p.IPv4.Build()
	l4 := Frame(b).L4()
	binary.BigEndian.PutUint16(l4[0:2], p.Sport)
	binary.BigEndian.PutUint16(l4[2:4], p.Dport)
	switch p.Proto {
	case ProtoTCP:
		l4[12] = 5 << 4 // data offset
		l4[13] = p.Flags
		binary.BigEndian.PutUint16(l4[14:16], 65535) // window
		binary.BigEndian.PutUint16(l4[16:18], l4Checksum(p.Src, p.Dst, ProtoTCP, l4))
	case ProtoUDP:
		binary.BigEndian.PutUint16(l4[4:6], uint16(len(l4)))
		if !p.NoChecksum {
			binary.BigEndian.PutUint16(l4[6:8], l4Checksum(p.Src, p.Dst, ProtoUDP, l4))
		}
	}
	return b
}

// l4Checksum is the TCP/UDP checksum over the pseudo-header and segment
// (whose checksum field is zero).
func l4Checksum(src, dst netip.Addr, proto uint8, seg []byte) uint16 {
	s, d := src.As4(), dst.As4()
	pseudo := make([]byte, 0, 12+len(seg))
	pseudo = append(pseudo, s[:]...)
	pseudo = append(pseudo, d[:]...)
	pseudo = append(pseudo, 0, proto, byte(len(seg)>>8), byte(len(seg)))
	pseudo = append(pseudo, seg...)
	c := Checksum(pseudo)
	if c == 0 && proto == ProtoUDP {
		c = 0xffff
	}
	return c
}

// IPHeaderLen is the IPv4 header's length in bytes.
func (f Frame) IPHeaderLen() int { return int(f[14]&0x0f) * 4 }

// Proto is the IPv4 protocol.
func (f Frame) Proto() uint8 { return f[14+9] }

// Src is the IPv4 source.
func (f Frame) Src() netip.Addr { return netip.AddrFrom4([4]byte(f[14+12 : 14+16])) }

// Dst is the IPv4 destination.
func (f Frame) Dst() netip.Addr { return netip.AddrFrom4([4]byte(f[14+16 : 14+20])) }

// TotalLen is the IPv4 total length: what of the frame is the packet.
func (f Frame) TotalLen() int { return int(binary.BigEndian.Uint16(f[14+2 : 14+4])) }

// L4 is the transport header and payload, as far as the IPv4 total length.
func (f Frame) L4() []byte { return f[14+f.IPHeaderLen() : 14+f.TotalLen()] }

// Ports are a TCP or UDP frame's source and destination ports.
func (f Frame) Ports() (sport, dport uint16) {
	l4 := f.L4()
	return binary.BigEndian.Uint16(l4[0:2]), binary.BigEndian.Uint16(l4[2:4])
}

// L4ChecksumValid reports whether a TCP or UDP checksum verifies (a UDP
// checksum of 0, none, counts as valid).
func (f Frame) L4ChecksumValid() bool {
	seg := append([]byte(nil), f.L4()...)
	var at int
	switch f.Proto() {
	case ProtoTCP:
		at = 16
	case ProtoUDP:
		at = 6
		if binary.BigEndian.Uint16(seg[at:]) == 0 {
			return true
		}
	default:
		return false
	}
	want := binary.BigEndian.Uint16(seg[at:])
	seg[at], seg[at+1] = 0, 0
	return l4Checksum(f.Src(), f.Dst(), f.Proto(), seg) == want
}
