package vnet

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"
)

// EchoServer serves TCP echo inside the pod on port until the listener is
// closed (Close of the VNet removes the namespace, which closes it too).
func (p *Pod) EchoServer(port int) (io.Closer, error) {
	ln, err := listenTCP(p, port)
	if err != nil {
		return nil, fmt.Errorf("listen in %s: %w", p.Name, err)
	}
	// An open socket keeps its namespace alive after the name is gone.
	p.Node.vnet.onClose(func() error { ln.Close(); return nil })
	go acceptEach(ln, func(c net.Conn) { io.Copy(c, c) })
	return ln, nil
}

// TCPEcho sends size random bytes from src to dst's echo server and checks
// that the same bytes come back; it returns how long the round trip took.
func TCPEcho(src *Pod, dst netip.Addr, port, size int, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	c, err := dial(src, "tcp4", net.JoinHostPort(dst.String(), strconv.Itoa(port)), timeout)
	if err != nil {
		return 0, fmt.Errorf("%s -> %s: connect: %w", src.Name, dst, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	msg := make([]byte, size)
	rand.Read(msg)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(msg)
		errc <- err
	}()
	got := make([]byte, size)
	if _, err := io.ReadFull(c, got); err != nil {
		return 0, fmt.Errorf("%s -> %s: read echo: %w", src.Name, dst, err)
	}
	if err := <-errc; err != nil {
		return 0, fmt.Errorf("%s -> %s: write: %w", src.Name, dst, err)
	}
	if !bytes.Equal(got, msg) {
		return 0, fmt.Errorf("%s -> %s: echo differs from what was sent", src.Name, dst)
	}
	return time.Since(start), nil
}

// UDPFlow sends numbered UDP datagrams at a fixed rate from one pod to
// another and records which arrive.
type UDPFlow struct {
	stop     chan struct{}
	done     chan struct{}
	recvDone chan struct{}
	conn     net.PacketConn
	mu       sync.Mutex
	sent     uint64
	got      map[uint64]bool
	sendErr  error
}

// StartUDPFlow starts sending pps datagrams per second from src to dst:port.
func StartUDPFlow(src, dst *Pod, port, pps int) (*UDPFlow, error) {
	pc, err := listenUDP(dst, port)
	if err != nil {
		return nil, fmt.Errorf("listen udp in %s: %w", dst.Name, err)
	}
	// Room for every datagram of a few seconds: a busy test machine must
	// not turn a slow reader into "loss".
	pc.(*net.UDPConn).SetReadBuffer(8 << 20)
	out, err := dial(src, "udp4", net.JoinHostPort(dst.IP.String(), strconv.Itoa(port)), time.Second)
	if err != nil {
		pc.Close()
		return nil, err
	}
	f := &UDPFlow{stop: make(chan struct{}), done: make(chan struct{}), recvDone: make(chan struct{}), conn: pc, got: map[uint64]bool{}}
	go func() {
		defer close(f.recvDone)
		buf := make([]byte, 64)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if n >= 8 {
				f.mu.Lock()
				f.got[binary.BigEndian.Uint64(buf)] = true
				f.mu.Unlock()
			}
		}
	}()
	go func() {
		defer close(f.done)
		defer out.Close()
		const tick = time.Millisecond
		perTick := max(1, pps/1000)
		t := time.NewTicker(tick)
		defer t.Stop()
		msg := make([]byte, 64)
		for {
			select {
			case <-f.stop:
				return
			case <-t.C:
			}
			for range perTick {
				f.mu.Lock()
				seq := f.sent
				f.mu.Unlock()
				binary.BigEndian.PutUint64(msg, seq)
				if _, err := out.Write(msg); err != nil {
					f.mu.Lock()
					f.sendErr = err
					f.mu.Unlock()
					return
				}
				f.mu.Lock()
				f.sent++
				f.mu.Unlock()
			}
		}
	}()
	return f, nil
}

// Sent is how many datagrams were sent so far: the next one sent carries
// this sequence number.
func (f *UDPFlow) Sent() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sent
}

// Stop ends the flow, waits for datagrams in flight, and returns how many
// were sent and the sequence numbers that never arrived.
func (f *UDPFlow) Stop() (sent uint64, missing []uint64, err error) {
	close(f.stop)
	<-f.done
	time.Sleep(500 * time.Millisecond)
	f.conn.Close()
	<-f.recvDone
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := uint64(0); i < f.sent; i++ {
		if !f.got[i] {
			missing = append(missing, i)
		}
	}
	return f.sent, missing, f.sendErr
}

// Netns is anything with a network namespace to run in: a pod, a node's
// namespace, a host.
type Netns interface {
	Do(func() error) error
}

// HTTPClient is an HTTP client whose connections start inside ns (an
// http.Client dials from goroutines of its own, which a Do around the
// request would not reach).
func HTTPClient(ns Netns, timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (c net.Conn, err error) {
			err = ns.Do(func() error {
				c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
				return err
			})
			return c, err
		}}}
}

// WhoAmIServer answers every TCP connection on port with the address the
// connection came from, as this namespace sees it: NAT shows.
func WhoAmIServer(ns Netns, port int, closeWith func(func() error)) error {
	ln, err := listenTCP(ns, port)
	if err != nil {
		return err
	}
	closeWith(ln.Close)
	go acceptEach(ln, func(c net.Conn) {
		host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
		c.Write([]byte(host + "\n"))
	})
	return nil
}

// WhoAmI connects from ns to addr's WhoAmIServer and returns the source
// address the server saw.
func WhoAmI(ns Netns, addr string, timeout time.Duration) (string, error) {
	return WhoAmIFrom(ns, netip.AddrPort{}, addr, timeout)
}

// WhoAmIFrom is WhoAmI from the local address src (an invalid address: the
// one the route gives; port 0: any). It reads to the server's close, so
// the client closes second and its port is free again at once.
func WhoAmIFrom(ns Netns, src netip.AddrPort, addr string, timeout time.Duration) (string, error) {
	c, err := dialFrom(ns, "tcp4", src, addr, timeout)
	if err != nil {
		return "", fmt.Errorf("connect %s: %w", addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	b, err := io.ReadAll(c)
	if err != nil {
		return "", fmt.Errorf("read from %s: %w", addr, err)
	}
	return strings.TrimSpace(string(b)), nil
}

// acceptEach serves every connection of ln with serve, then closes it.
func acceptEach(ln net.Listener, serve func(net.Conn)) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			serve(c)
		}()
	}
}

// listenTCP and listenUDP open a socket on port inside ns, where it stays
// whichever namespace its user runs in; dial connects from inside ns.
func listenTCP(ns Netns, port int) (ln net.Listener, err error) {
	err = ns.Do(func() (err error) {
		ln, err = net.Listen("tcp4", net.JoinHostPort("0.0.0.0", strconv.Itoa(port)))
		return err
	})
	return ln, err
}

func listenUDP(ns Netns, port int) (pc net.PacketConn, err error) {
	err = ns.Do(func() (err error) {
		pc, err = net.ListenPacket("udp4", net.JoinHostPort("0.0.0.0", strconv.Itoa(port)))
		return err
	})
	return pc, err
}

func dial(ns Netns, network, addr string, timeout time.Duration) (c net.Conn, err error) {
	return dialFrom(ns, network, netip.AddrPort{}, addr, timeout)
}

// dialFrom is dial from the local address src, when its address is valid.
func dialFrom(ns Netns, network string, src netip.AddrPort, addr string, timeout time.Duration) (c net.Conn, err error) {
	d := net.Dialer{Timeout: timeout}
	if src.Addr().IsValid() {
		if network == "udp4" {
			d.LocalAddr = net.UDPAddrFromAddrPort(src)
		} else {
			d.LocalAddr = net.TCPAddrFromAddrPort(src)
		}
	}
	err = ns.Do(func() (err error) {
		c, err = d.Dial(network, addr)
		return err
	})
	return c, err
}

// OnClose registers f to run when the VNet is closed.
func (v *VNet) OnClose(f func() error) { v.onClose(f) }
