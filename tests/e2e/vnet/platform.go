package vnet

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"time"
)

// The WireServer's other services, besides the documents on port 80.
const (
	HostGAPluginPort = 32526
	WireserverDNS    = 53
)

// WireserverDNSAnswer is the address the fake Azure DNS gives every name.
var WireserverDNSAnswer = netip.MustParseAddr("203.0.113.53")

// servePlatformPorts adds what else 168.63.129.16 serves on Azure: the
// HostGAPlugin on 32526 (a banner stands in) and DNS on 53 over UDP and
// TCP, which pods with dnsPolicy Default and CoreDNS use.
func (v *VNet) servePlatformPorts() error {
	hostGA, err := v.listenFabricTCP(HostGAPluginPort)
	if err != nil {
		return err
	}
	go acceptEach(hostGA, func(c net.Conn) { io.WriteString(c, "HostGAPlugin\n") })

	if err := DNSServerOn(v.Fabric, netip.AddrPortFrom(WireserverIP, WireserverDNS), WireserverDNSAnswer, v.onClose); err != nil {
		return fmt.Errorf("DNS in the fabric: %w", err)
	}
	tcp, err := v.listenFabricTCP(WireserverDNS)
	if err != nil {
		return err
	}
	go acceptEach(tcp, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		q, err := readDNSTCP(c)
		if err != nil {
			return
		}
		if resp, err := dnsAnswer(q, WireserverDNSAnswer); err == nil {
			c.Write(binary.BigEndian.AppendUint16(nil, uint16(len(resp))))
			c.Write(resp)
		}
	})
	return nil
}

func (v *VNet) listenFabricTCP(port int) (net.Listener, error) {
	var ln net.Listener
	if err := v.Fabric.Do(func() (err error) {
		ln, err = net.Listen("tcp4", net.JoinHostPort(WireserverIP.String(), strconv.Itoa(port)))
		return err
	}); err != nil {
		return nil, fmt.Errorf("listen on %s:%d/tcp in the fabric: %w", WireserverIP, port, err)
	}
	v.onClose(ln.Close)
	return ln, nil
}

// readDNSTCP reads one message of DNS over TCP: a two-byte length first.
func readDNSTCP(r io.Reader) ([]byte, error) {
	var n uint16
	if err := binary.Read(r, binary.BigEndian, &n); err != nil {
		return nil, err
	}
	msg := make([]byte, n)
	_, err := io.ReadFull(r, msg)
	return msg, err
}

// LookupATCP is LookupA over TCP, as resolvers retry a truncated answer.
func LookupATCP(ns Netns, server, name string, timeout time.Duration) (netip.Addr, error) {
	c, err := dial(ns, "tcp4", server, timeout)
	if err != nil {
		return netip.Addr{}, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	q := dnsQuery(name)
	if _, err := c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(q))), q...)); err != nil {
		return netip.Addr{}, err
	}
	resp, err := readDNSTCP(c)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("DNS query over TCP to %s: %w", server, err)
	}
	return dnsAnswerA(q, resp, server)
}

// Connect opens a TCP connection from ns to addr and closes it.
func Connect(ns Netns, addr string, timeout time.Duration) error {
	c, err := dial(ns, "tcp4", addr, timeout)
	if err != nil {
		return err
	}
	return c.Close()
}

// IsTimeout reports whether err is a connection attempt that got no answer
// at all (a dropped SYN), rather than a refusal.
func IsTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// Fetch GETs url from inside ns (no proxy) with the given headers, if
// any, and returns the status and body.
func Fetch(ns Netns, url string, header http.Header, timeout time.Duration) (int, []byte, error) {
	client := &http.Client{Timeout: timeout, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (c net.Conn, err error) {
			err = ns.Do(func() error {
				// The transport goes on dialing after the request gives up:
				// without its own timeout a dropped SYN would be sent
				// again for minutes, into later tests.
				d := net.Dialer{Timeout: timeout}
				c, err = d.DialContext(ctx, network, addr)
				return err
			})
			return c, err
		},
	}}
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, err
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}
