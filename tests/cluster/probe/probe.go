// Package probe is the test image's program and the test's client of it.
// In a pod, `probe serve` answers on a few TCP, UDP (and SCTP, where the
// kernel has it) ports with the pod's name, and serves a control API on a
// unix socket in an emptyDir volume: the test process, which shares the
// node's filesystem, asks a pod to connect somewhere and gets the outcome
// without kubectl exec and without its own traffic crossing the pod
// network (so a NetworkPolicy under test never filters the control
// channel). `probe connect` is the same check from a shell or kubectl exec.
package probe

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Protocols a probe serves and connects with.
const (
	TCP  = "tcp"
	UDP  = "udp"
	SCTP = "sctp"
)

// DefaultPorts are served for each protocol (the upstream network policy
// e2e suite uses 80 and 81).
var DefaultPorts = []int{80, 81}

// ControlDir is where the pod mounts the emptyDir holding the control
// socket; ControlSocket is the socket's name in it.
const (
	ControlDir    = "/probe"
	ControlSocket = "control.sock"
)

// Target is one connection to try.
type Target struct {
	Proto string `json:"proto"`
	// Addr is host:port.
	Addr string `json:"addr"`
	// TimeoutMS bounds the connect and the answer; 0 means 1000.
	TimeoutMS int `json:"timeout_ms,omitempty"`
	// Unconnected (UDP): sendto and recvfrom on a socket that is not
	// connected, as resolvers do; Result.From is where the answer came from.
	Unconnected bool `json:"unconnected,omitempty"`
}

// Result says whether a Target answered and who answered.
type Result struct {
	Target
	OK bool `json:"ok"`
	// Reply is the name the server sent (its pod name), Local the source
	// address the connection used.
	Reply string `json:"reply,omitempty"`
	Local string `json:"local,omitempty"`
	// Remote is the peer the socket reports (getpeername), From the source
	// of an unconnected UDP answer, Peer the client address the server saw.
	Remote string `json:"remote,omitempty"`
	From   string `json:"from,omitempty"`
	Peer   string `json:"peer,omitempty"`
	Error  string `json:"error,omitempty"`
	MS     int64  `json:"ms"`
}

func (r Result) String() string {
	if r.OK {
		return fmt.Sprintf("%s %s: ok (%s answered)", r.Proto, r.Addr, r.Reply)
	}
	return fmt.Sprintf("%s %s: failed: %s", r.Proto, r.Addr, r.Error)
}

// Flow describes a stream of numbered datagrams (UDP) or messages on one
// connection (TCP) echoed by a probe server: a flow loses nothing when every
// message comes back.
type Flow struct {
	Proto string `json:"proto"`
	Addr  string `json:"addr"`
	// PPS is the rate, messages per second; 0 means 500.
	PPS int `json:"pps,omitempty"`
}

// FlowReport is what a stopped flow saw.
type FlowReport struct {
	Flow
	// Reply is the name of the server that answered (a Service's backend).
	Reply    string   `json:"reply,omitempty"`
	Sent     uint64   `json:"sent"`
	Received uint64   `json:"received"`
	Missing  []uint64 `json:"missing,omitempty"` // the first few
	// SocketDrops (UDP) are datagrams of the flow that reached a socket
	// whose receive queue was full, the server's (requests) or the
	// client's (echoes), while the flow ran: lost by a process starved of
	// CPU, not by the network (SO_RXQ_OVFL).
	SocketDrops uint64 `json:"socket_drops,omitempty"`
	// Error is set when the flow broke (a TCP connection reset, a write
	// refused); a flow that lost messages but did not break has none.
	Error string `json:"error,omitempty"`
}

// LostInNetwork is how many messages the network lost: those not echoed
// that no socket's full receive queue accounts for.
func (r FlowReport) LostInNetwork() uint64 {
	missing := r.Sent - min(r.Received, r.Sent)
	return missing - min(missing, r.SocketDrops)
}

func (r FlowReport) String() string {
	s := fmt.Sprintf("%s flow to %s: %d sent, %d echoed", r.Proto, r.Addr, r.Sent, r.Received)
	if len(r.Missing) > 0 {
		s += fmt.Sprintf(", missing %v", r.Missing)
	}
	if r.SocketDrops > 0 {
		s += fmt.Sprintf(", %d dropped by full socket queues", r.SocketDrops)
	}
	if r.Error != "" {
		s += ", broken: " + r.Error
	}
	return s
}

// Message framing: a server first sends its name line on a stream; every
// datagram or message it receives comes back prefixed with the same line,
// so a client learns who answered from any reply. The line is the name,
// then " peer=" and the client address the server saw.
func reply(name string, payload []byte) []byte {
	return append([]byte(name+"\n"), payload...)
}

// nameLine is a server's name line for a client at peer (without "\n").
func nameLine(name string, peer net.Addr) string { return name + " peer=" + peer.String() }

// udpNameLine is a UDP server's name line: also the datagrams its socket
// has dropped for a full receive queue.
func udpNameLine(name string, peer net.Addr, drops uint32) string {
	return nameLine(name, peer) + " drops=" + strconv.FormatUint(uint64(drops), 10)
}

// parseNameLine splits a name line into the name and the peer it reports.
func parseNameLine(line string) (name, peer string) {
	name, rest, _ := strings.Cut(line, " peer=")
	peer, _, _ = strings.Cut(rest, " drops=")
	return name, peer
}

// parseDrops is a UDP server's drop count in its name line.
func parseDrops(line string) (uint32, bool) {
	_, d, ok := strings.Cut(line, " drops=")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseUint(d, 10, 32)
	return uint32(n), err == nil
}

func splitReply(b []byte) (name string, payload []byte, err error) {
	for i, c := range b {
		if c == '\n' {
			return string(b[:i]), b[i+1:], nil
		}
	}
	return "", nil, fmt.Errorf("reply %q has no name line", b)
}

// seqMsg is a flow's message: 8 bytes of sequence number.
func seqMsg(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

func defaultTimeout(ms int) time.Duration {
	if ms <= 0 {
		return time.Second
	}
	return time.Duration(ms) * time.Millisecond
}

// HostPort joins an address and a port.
func HostPort(ip netip.Addr, port int) string {
	return net.JoinHostPort(ip.String(), strconv.Itoa(port))
}
