package vnet

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"
)

// EchoServer serves TCP echo inside the pod on port until the listener is
// closed (Close of the VNet removes the namespace, which closes it too).
func (p *Pod) EchoServer(port int) (io.Closer, error) {
	ln, err := p.Listen(port)
	if err != nil {
		return nil, fmt.Errorf("listen in %s: %w", p.Name, err)
	}
	// An open socket keeps its namespace alive after the name is gone.
	p.Node.vnet.onClose(func() error { ln.Close(); return nil })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return ln, nil
}

// TCPEcho sends size random bytes from src to dst's echo server and checks
// that the same bytes come back; it returns how long the round trip took.
func TCPEcho(src *Pod, dst netAddr, port, size int, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	c, err := src.Dial("tcp4", net.JoinHostPort(dst.String(), strconv.Itoa(port)), timeout)
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

type netAddr interface{ String() string }
