package vnet

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"
)

// DNSServer answers every A query on UDP port with answer, like a tiny
// cluster DNS.
func DNSServer(ns Netns, port int, answer netip.Addr, closeWith func(func() error)) error {
	return DNSServerOn(ns, netip.AddrPortFrom(netip.IPv4Unspecified(), uint16(port)), answer, closeWith)
}

// DNSServerOn is DNSServer bound to addr: a server whose address is not
// the source its replies would get from the route (a service address on a
// loopback) must be bound to it to answer from it.
func DNSServerOn(ns Netns, addr netip.AddrPort, answer netip.Addr, closeWith func(func() error)) error {
	var pc net.PacketConn
	if err := ns.Do(func() (err error) {
		pc, err = net.ListenPacket("udp4", addr.String())
		return err
	}); err != nil {
		return err
	}
	closeWith(pc.Close)
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if resp, err := dnsAnswer(buf[:n], answer); err == nil {
				pc.WriteTo(resp, from)
			}
		}
	}()
	return nil
}

// dnsAnswer turns a one-question query into a response with one A record.
func dnsAnswer(q []byte, a netip.Addr) ([]byte, error) {
	if len(q) < 12 || binary.BigEndian.Uint16(q[4:6]) != 1 {
		return nil, errors.New("not a one-question query")
	}
	end := 12
	for end < len(q) && q[end] != 0 {
		end += int(q[end]) + 1
	}
	end += 5 // root label, QTYPE, QCLASS
	if end > len(q) {
		return nil, errors.New("truncated question")
	}
	resp := append([]byte(nil), q[:end]...)
	binary.BigEndian.PutUint16(resp[2:4], 0x8180) // response, RD, RA, no error
	binary.BigEndian.PutUint16(resp[6:8], 1)      // one answer
	binary.BigEndian.PutUint16(resp[8:10], 0)
	binary.BigEndian.PutUint16(resp[10:12], 0)
	ip := a.As4()
	resp = append(resp, 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4) // name -> question, A, IN, TTL 30, 4 bytes
	return append(resp, ip[:]...), nil
}

// LookupA asks the DNS server at server (ip:port) from ns for name's A
// record over a connected UDP socket: an answer from any other source
// address (a reply that missed its reverse NAT) is never read.
func LookupA(ns Netns, server, name string, timeout time.Duration) (netip.Addr, error) {
	c, err := dial(ns, "udp4", server, timeout)
	if err != nil {
		return netip.Addr{}, err
	}
	defer c.Close()
	q := dnsQuery(name)
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write(q); err != nil {
		return netip.Addr{}, err
	}
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("DNS query to %s: %w", server, err)
	}
	return dnsAnswerA(q, buf[:n], server)
}

// dnsQuery is a one-question query for name's A record.
func dnsQuery(name string) []byte {
	q := []byte{0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0}
	for _, label := range strings.FieldsFunc(name, func(r rune) bool { return r == '.' }) {
		q = append(q, byte(len(label)))
		q = append(q, label...)
	}
	return append(q, 0, 0, 1, 0, 1)
}

// dnsAnswerA reads the A record of the response to q.
func dnsAnswerA(q, resp []byte, server string) (netip.Addr, error) {
	n := len(resp)
	if n < len(q)+16 || resp[0] != q[0] || resp[1] != q[1] {
		return netip.Addr{}, fmt.Errorf("DNS answer from %s malformed", server)
	}
	return netip.AddrFrom4([4]byte(resp[n-4 : n])), nil
}
