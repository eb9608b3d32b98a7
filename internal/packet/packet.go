// Package packet crafts and inspects Ethernet/IPv4 frames for the data path
// tests and benchmarks that run the programs with BPF_PROG_TEST_RUN.
package packet

import (
	"encoding/binary"
	"net"
	"net/netip"
)

// EtherTypes used by the tests.
const (
	EtherTypeIPv4 = 0x0800
	EtherTypeARP  = 0x0806
	EtherTypeVLAN = 0x8100
	EtherTypeIPv6 = 0x86dd
)

// IPv4 describes a frame to build; zero fields take sane defaults.
type IPv4 struct {
	SrcMAC, DstMAC net.HardwareAddr
	Src, Dst       netip.Addr
	TTL            uint8  // default 64
	Proto          uint8  // default UDP (17)
	IHL            uint8  // header length in 32-bit words, default 5
	FragOff        uint16 // flags+fragment offset field, host order
	Payload        int    // payload bytes after the IPv4 header, default 8
}

// Build returns the Ethernet + IPv4 frame with a correct header checksum.
func (p IPv4) Build() []byte {
	if p.TTL == 0 {
		p.TTL = 64
	}
	if p.Proto == 0 {
		p.Proto = 17
	}
	if p.IHL == 0 {
		p.IHL = 5
	}
	if p.Payload == 0 {
		p.Payload = 8
	}
	hlen := int(p.IHL) * 4
	if hlen < 20 {
		hlen = 20 // keep room for the fields even when IHL lies
	}
	b := make([]byte, 14+hlen+p.Payload)
	copy(b[0:6], p.DstMAC)
	copy(b[6:12], p.SrcMAC)
	binary.BigEndian.PutUint16(b[12:14], EtherTypeIPv4)
	ip := b[14:]
	ip[0] = 4<<4 | p.IHL&0x0f
	binary.BigEndian.PutUint16(ip[2:4], uint16(hlen+p.Payload))
	binary.BigEndian.PutUint16(ip[6:8], p.FragOff)
	ip[8] = p.TTL
	ip[9] = p.Proto
	src, dst := p.Src.As4(), p.Dst.As4()
	copy(ip[12:16], src[:])
	copy(ip[16:20], dst[:])
	binary.BigEndian.PutUint16(ip[10:12], Checksum(ip[:hlen]))
	return b
}

// Ethernet returns a frame of the given EtherType with n payload bytes.
func Ethernet(src, dst net.HardwareAddr, etherType uint16, n int) []byte {
	b := make([]byte, 14+n)
	copy(b[0:6], dst)
	copy(b[6:12], src)
	binary.BigEndian.PutUint16(b[12:14], etherType)
	return b
}

// Checksum is the Internet checksum (RFC 1071); over a header that carries
// its own checksum it returns 0 when the header is intact.
func Checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// Frame gives read access to the fields the tests assert on.
type Frame []byte

// DstMAC is the Ethernet destination.
func (f Frame) DstMAC() net.HardwareAddr { return net.HardwareAddr(f[0:6]) }

// SrcMAC is the Ethernet source.
func (f Frame) SrcMAC() net.HardwareAddr { return net.HardwareAddr(f[6:12]) }

// TTL is the IPv4 TTL.
func (f Frame) TTL() uint8 { return f[14+8] }

// IPv4HeaderValid reports whether the IPv4 header checksum verifies.
func (f Frame) IPv4HeaderValid() bool {
	hlen := int(f[14]&0x0f) * 4
	return Checksum(f[14:14+hlen]) == 0
}

// ARP returns an Ethernet frame carrying an IPv4-over-Ethernet ARP packet.
func ARP(op uint16, ethSrc, ethDst, sha net.HardwareAddr, spa netip.Addr, tha net.HardwareAddr, tpa netip.Addr) []byte {
	b := Ethernet(ethSrc, ethDst, EtherTypeARP, 28)
	a := b[14:]
	binary.BigEndian.PutUint16(a[0:2], 1) // Ethernet
	binary.BigEndian.PutUint16(a[2:4], EtherTypeIPv4)
	a[4], a[5] = 6, 4
	binary.BigEndian.PutUint16(a[6:8], op)
	s4, t4 := spa.As4(), tpa.As4()
	copy(a[8:14], sha)
	copy(a[14:18], s4[:])
	copy(a[18:24], tha)
	copy(a[24:28], t4[:])
	return b
}

// ARPFields are the fields of an ARP frame.
type ARPFields struct {
	Op       uint16
	SHA, THA net.HardwareAddr
	SPA, TPA netip.Addr
}

// ARP parses the ARP packet of a frame.
func (f Frame) ARP() ARPFields {
	a := f[14:]
	return ARPFields{
		Op:  binary.BigEndian.Uint16(a[6:8]),
		SHA: net.HardwareAddr(a[8:14]), SPA: netip.AddrFrom4([4]byte(a[14:18])),
		THA: net.HardwareAddr(a[18:24]), TPA: netip.AddrFrom4([4]byte(a[24:28])),
	}
}
