package probe

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// serve starts a probe on loopback ports the kernel picks and returns it
// with its TCP and UDP addresses.
func serve(t *testing.T, o ServeOptions) (s *Server, tcp, udp string) {
	t.Helper()
	o.TCP, o.UDP = []int{0}, []int{0}
	s, err := Serve(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	for _, what := range s.Served {
		proto, p, _ := strings.Cut(what, "/")
		switch proto {
		case TCP:
			tcp = "127.0.0.1:" + p
		case UDP:
			udp = "127.0.0.1:" + p
		}
	}
	return s, tcp, udp
}

// deepSocket returns a socket path the server can bind and, for the same
// socket, a path longer than a unix socket address allows (through a
// symlinked directory), as the test process sees a pod's socket under
// kubelet's pod directory.
func deepSocket(t *testing.T) (short, deep string) {
	dir := t.TempDir()
	parent := filepath.Join(t.TempDir(), strings.Repeat("d", 60))
	if err := os.MkdirAll(parent, 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(parent, strings.Repeat("e", 60))
	if err := os.Symlink(dir, link); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, ControlSocket), filepath.Join(link, ControlSocket)
}

// TestConnectThroughControlSocket: through the control API, a probe
// reaches servers over TCP and UDP and learns their names, and reports a
// refused port as a failure, not an answer.
func TestConnectThroughControlSocket(t *testing.T) {
	sock, deep := deepSocket(t)
	_, tcp, udp := serve(t, ServeOptions{Name: "server-pod", ControlSocket: sock})
	c := NewClient(deep)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if !c.Ready(ctx) {
		t.Fatalf("control socket %s (%d bytes) not answering", deep, len(deep))
	}
	closed, _ := net.Listen("tcp", "127.0.0.1:0")
	refused := closed.Addr().String()
	closed.Close()
	res, err := c.Connect(ctx, Target{Proto: TCP, Addr: tcp}, Target{Proto: UDP, Addr: udp}, Target{Proto: TCP, Addr: refused, TimeoutMS: 500})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res[:2] {
		if !r.OK || r.Reply != "server-pod" {
			t.Errorf("target %d: %s; want an answer from server-pod", i, r)
		}
	}
	if res[2].OK || res[2].Error == "" {
		t.Errorf("a closed port: %s; want a failure", res[2])
	}
	// What each side saw: the server the client's address, the client the
	// server's (getpeername), an unconnected UDP client the answer's source.
	for i, r := range res[:2] {
		if r.Peer != r.Local || r.Remote != r.Addr {
			t.Errorf("target %d: the server saw %q, the client is %q; the client's peer %q, the target %q", i, r.Peer, r.Local, r.Remote, r.Addr)
		}
	}
	res, err = c.Connect(ctx, Target{Proto: UDP, Addr: udp, Unconnected: true})
	if err != nil {
		t.Fatal(err)
	}
	if r := res[0]; !r.OK || r.Reply != "server-pod" || r.From != udp || r.Remote != "" {
		t.Errorf("unconnected UDP: %s, answer from %q (remote %q); want server-pod from %s", r, r.From, r.Remote, udp)
	}
}

// TestFlowsCountEchoes: UDP and TCP flows to a probe report every message
// echoed; a flow to a UDP port nobody serves reports them all missing.
func TestFlowsCountEchoes(t *testing.T) {
	_, tcp, udp := serve(t, ServeOptions{Name: "peer"})
	var tbl = flowTable{m: map[int]*flowRun{}}
	dead, _ := net.ListenPacket("udp", "127.0.0.1:0")
	deadAddr := dead.LocalAddr().String()
	dead.Close()
	for _, tc := range []struct {
		f        Flow
		lossless bool
	}{{Flow{Proto: UDP, Addr: udp, PPS: 200}, true}, {Flow{Proto: TCP, Addr: tcp, PPS: 200}, true}, {Flow{Proto: UDP, Addr: deadAddr, PPS: 200}, false}} {
		id, err := tbl.start(tc.f)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
		rep, _ := tbl.stop(id)
		if rep.Sent == 0 {
			t.Fatalf("%s: nothing sent", rep)
		}
		if lossless := rep.Received == rep.Sent && len(rep.Missing) == 0; lossless != tc.lossless {
			t.Errorf("%s: lossless %v, want %v", rep, lossless, tc.lossless)
		}
		if want := map[bool]string{true: "peer", false: ""}[tc.lossless]; rep.Reply != want {
			t.Errorf("%s: answered by %q, want %q", rep, rep.Reply, want)
		}
	}
}

// TestExitThroughControlSocket: the control API ends the process with the
// code asked for (a crashing container).
func TestExitThroughControlSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), ControlSocket)
	code := make(chan int, 1)
	serve(t, ServeOptions{Name: "x", ControlSocket: sock, Exit: func(c int) { code <- c }})
	if err := NewClient(sock).Exit(context.Background(), 3); err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-code:
		if c != 3 {
			t.Errorf("exit code %d, want 3", c)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the probe did not exit")
	}
}

// TestSocketDropsAreCounted: datagrams a full receive queue drops are
// counted, each one: those read and those counted add up to those sent, so
// a flow's report can tell them from the network's losses.
func TestSocketDropsAreCounted(t *testing.T) {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SetReadBuffer(4096); err != nil {
		t.Fatal(err)
	}
	if err := countOverflow(c); err != nil {
		t.Fatal(err)
	}
	s, err := net.DialUDP("udp", nil, c.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const sent = 200
	for i := range sent {
		if _, err := s.Write(seqMsg(uint64(i))); err != nil {
			t.Fatal(err)
		}
	}
	// Loopback queues or drops each datagram within the Write. A datagram
	// carries the drops before it was queued: the last one, sent once the
	// queue is read empty, carries them all.
	read, dropped := 0, uint32(0)
	buf := make([]byte, 64)
	drain := func() {
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		for {
			_, _, d, err := readCounting(c, buf)
			if err != nil {
				return
			}
			read++
			dropped = max(dropped, d)
		}
	}
	drain()
	if _, err := s.Write(seqMsg(sent)); err != nil {
		t.Fatal(err)
	}
	drain()
	read-- // the last one
	if dropped == 0 || read+int(dropped) != sent {
		t.Errorf("%d read, %d counted as dropped, want both adding up to %d with some dropped", read, dropped, sent)
	}
	rep := FlowReport{Sent: sent, Received: uint64(read), SocketDrops: uint64(dropped)}
	if rep.LostInNetwork() != 0 {
		t.Errorf("%s: %d lost in the network, want 0", rep, rep.LostInNetwork())
	}
	if rep.SocketDrops = 0; rep.LostInNetwork() != uint64(dropped) {
		t.Errorf("without the socket's count: %d lost in the network, want %d", rep.LostInNetwork(), dropped)
	}
}
