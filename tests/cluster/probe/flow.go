package probe

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

type flowTable struct {
	mu   sync.Mutex
	next int
	m    map[int]*flowRun
}

type flowRun struct {
	flow Flow
	conn net.Conn
	stop chan struct{}
	sent chan struct{} // closed when the sender is done
	recv chan struct{} // closed when the receiver is done

	mu      sync.Mutex
	nsent   uint64
	got     map[uint64]bool
	broken  error
	stopped bool
	server  string // who answered
	// UDP: this socket's receive-queue drops, and the server's as its
	// first and latest echoes reported them (its socket serves others too:
	// only what it dropped while this flow ran counts).
	clientDrops             uint32
	serverFirst, serverLast uint32
	serverSeen              bool
}

func (r *flowRun) fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.broken == nil && !r.stopped {
		r.broken = err
	}
}

func (t *flowTable) start(f Flow) (int, error) {
	if f.PPS <= 0 {
		f.PPS = 500
	}
	if f.Proto != UDP && f.Proto != TCP {
		return 0, fmt.Errorf("flows run over udp or tcp, not %q", f.Proto)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := dialProto(ctx, f.Proto, f.Addr)
	if err != nil {
		return 0, err
	}
	r := &flowRun{flow: f, conn: c, stop: make(chan struct{}), sent: make(chan struct{}), recv: make(chan struct{}), got: map[uint64]bool{}}
	var rd io.Reader = c
	if uc, ok := c.(*net.UDPConn); ok {
		if err := countOverflow(uc); err != nil {
			c.Close()
			return 0, fmt.Errorf("udp flow to %s: %w", f.Addr, err)
		}
	}
	if f.Proto == TCP {
		// The stream starts with the server's name line.
		br := bufio.NewReader(c)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		line, err := br.ReadString('\n')
		if err != nil {
			c.Close()
			return 0, fmt.Errorf("tcp flow to %s: read the name line: %w", f.Addr, err)
		}
		c.SetReadDeadline(time.Time{})
		rd = br
		r.server, _ = parseNameLine(line[:len(line)-1])
	}
	go r.receive(rd)
	go r.send()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.next++
	t.m[t.next] = r
	return t.next, nil
}

func (r *flowRun) receive(rd io.Reader) {
	defer close(r.recv)
	buf := make([]byte, 2048)
	for {
		var payload []byte
		if r.flow.Proto == UDP {
			n, _, drops, err := readCounting(r.conn.(*net.UDPConn), buf)
			if err != nil {
				r.fail(err)
				return
			}
			var line string
			if line, payload, err = splitReply(buf[:n]); err != nil {
				continue
			}
			r.mu.Lock()
			r.server, _ = parseNameLine(line)
			r.clientDrops = max(r.clientDrops, drops)
			if d, ok := parseDrops(line); ok {
				if !r.serverSeen {
					r.serverFirst, r.serverSeen = d, true
				}
				r.serverLast = max(r.serverLast, d)
			}
			r.mu.Unlock()
		} else {
			if _, err := io.ReadFull(rd, buf[:8]); err != nil {
				r.fail(err)
				return
			}
			payload = buf[:8]
		}
		if len(payload) == 8 {
			r.mu.Lock()
			r.got[binary.BigEndian.Uint64(payload)] = true
			r.mu.Unlock()
		}
	}
}

func (r *flowRun) send() {
	defer close(r.sent)
	tick := time.NewTicker(time.Second / time.Duration(r.flow.PPS))
	defer tick.Stop()
	for seq := uint64(0); ; seq++ {
		select {
		case <-r.stop:
			return
		case <-tick.C:
		}
		if _, err := r.conn.Write(seqMsg(seq)); err != nil {
			r.fail(err)
			return
		}
		r.mu.Lock()
		r.nsent++
		r.mu.Unlock()
	}
}

// stop ends the sender, gives the echoes in flight a second, and reports.
func (t *flowTable) stop(id int) (FlowReport, bool) {
	t.mu.Lock()
	r, ok := t.m[id]
	delete(t.m, id)
	t.mu.Unlock()
	if !ok {
		return FlowReport{}, false
	}
	close(r.stop)
	<-r.sent
	time.Sleep(time.Second)
	r.mu.Lock()
	r.stopped = true
	r.mu.Unlock()
	r.conn.Close()
	<-r.recv
	r.mu.Lock()
	defer r.mu.Unlock()
	rep := FlowReport{Flow: r.flow, Sent: r.nsent, Received: uint64(len(r.got)), Reply: r.server,
		SocketDrops: uint64(r.clientDrops) + uint64(r.serverLast-r.serverFirst)}
	for seq := uint64(0); seq < r.nsent && len(rep.Missing) < 20; seq++ {
		if !r.got[seq] {
			rep.Missing = append(rep.Missing, seq)
		}
	}
	if r.broken != nil {
		rep.Error = r.broken.Error()
	}
	return rep, true
}

// Send sends count numbered UDP datagrams to addr, interval apart, and
// reports how many the kernel took. A datagram a firewall drops still
// counts as sent: only the receiver can tell.
func Send(addr string, count int, interval time.Duration) (int, error) {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	sent := 0
	for seq := range count {
		if _, err := c.Write(seqMsg(uint64(seq))); err == nil {
			sent++
		}
		time.Sleep(interval)
	}
	return sent, nil
}

// Sink counts the UDP datagrams it receives, by source address.
type Sink struct {
	pc     net.PacketConn
	mu     sync.Mutex
	counts map[string]int
}

// ListenSink starts counting on a UDP port of the current network
// namespace.
func ListenSink(port int) (*Sink, error) {
	pc, err := net.ListenPacket("udp", fmt.Sprintf(":%d", port))
	if err != nil {
		return nil, err
	}
	s := &Sink{pc: pc, counts: map[string]int{}}
	go func() {
		buf := make([]byte, 2048)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			host, _, _ := net.SplitHostPort(from.String())
			s.mu.Lock()
			s.counts[host]++
			s.mu.Unlock()
		}
	}()
	return s, nil
}

// Count is how many datagrams came from addr.
func (s *Sink) Count(addr string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[addr]
}

// Close stops counting.
func (s *Sink) Close() error { return s.pc.Close() }
