package loader

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/podvnet/podvnet/internal/nettest"
	"github.com/podvnet/podvnet/pkg/maps"
)

// The socket hooks (lib/sock.h) can only be run by a process's socket calls:
// the tests attach them to a cgroup of their own, start this test binary as
// a client inside it (TestMain, sockClientEnv) in the testbed's netns, and
// check what the client and the servers saw.

const sockClientEnv = "PODVNET_SOCK_CLIENT" // netns path; the ops come on stdin

// sockOp is one socket call sequence the client makes; sockResult what it saw.
type sockOp struct {
	Kind string `json:"kind"` // tcp, udp (unconnected sendto/recvfrom; udp2: twice), udpconn; tcp6, udp6...: a dual-stack socket
	Addr string `json:"addr"`
}

type sockResult struct {
	Peer  string `json:"peer,omitempty"`  // getpeername (tcp, udpconn)
	From  string `json:"from,omitempty"`  // recvfrom's source (udp)
	Reply string `json:"reply,omitempty"` // what the server answered
	Err   string `json:"err,omitempty"`   // the errno's name
}

// sockClient runs the ops read from stdin in the netns named by the
// environment and prints one result per op.
func sockClient() int {
	runtime.LockOSThread()
	ns, err := netns.GetFromPath(os.Getenv(sockClientEnv))
	if err == nil {
		err = netns.Set(ns)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	in := bufio.NewScanner(os.Stdin)
	out := json.NewEncoder(os.Stdout)
	for in.Scan() {
		var op sockOp
		if err := json.Unmarshal(in.Bytes(), &op); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		out.Encode(runSockOp(op))
	}
	return 0
}

func runSockOp(op sockOp) (r sockResult) {
	ap := netip.MustParseAddrPort(op.Addr)
	// A kind ending in 6: a dual-stack IPv6 socket, the IPv4 address mapped.
	kind, six := strings.CutSuffix(op.Kind, "6")
	family := unix.AF_INET
	var sa unix.Sockaddr = &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}
	if six {
		family, sa = unix.AF_INET6, &unix.SockaddrInet6{Addr: netip.AddrFrom16(ap.Addr().As16()).As16(), Port: int(ap.Port())}
	}
	typ := unix.SOCK_DGRAM
	if kind == "tcp" {
		typ = unix.SOCK_STREAM
	}
	fd, err := unix.Socket(family, typ, 0)
	if err != nil {
		return sockResult{Err: errName(err)}
	}
	defer unix.Close(fd)
	addrOf := func(sa unix.Sockaddr) string {
		switch a := sa.(type) {
		case *unix.SockaddrInet4:
			return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port)).String()
		case *unix.SockaddrInet6:
			return netip.AddrPortFrom(netip.AddrFrom16(a.Addr).Unmap(), uint16(a.Port)).String()
		}
		return ""
	}
	// Long enough for a busy machine: every reply is expected.
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 20})
	peer := func() {
		if p, err := unix.Getpeername(fd); err == nil {
			r.Peer = addrOf(p)
		}
	}
	buf := make([]byte, 64)
	switch kind {
	case "udp", "udp2":
		// udp2: two exchanges on the one socket, both replies reported.
		for i := 0; i < 1+strings.Count(kind, "2"); i++ {
			if err := unix.Sendto(fd, []byte("ping"), 0, sa); err != nil {
				return sockResult{Err: errName(err)}
			}
			n, from, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				return sockResult{Err: errName(err)}
			}
			r.From = addrOf(from)
			r.Reply = strings.TrimPrefix(r.Reply+"|"+string(buf[:n]), "|")
		}
	default:
		if err := unix.Connect(fd, sa); err != nil {
			return sockResult{Err: errName(err)}
		}
		peer()
		if kind == "udpconn" {
			if _, err := unix.Write(fd, []byte("ping")); err != nil {
				r.Err = errName(err)
				return r
			}
		}
		n, err := unix.Read(fd, buf)
		if err != nil {
			r.Err = errName(err)
			return r
		}
		r.Reply = string(buf[:n])
	}
	return r
}

func errName(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return unix.ErrnoName(errno)
	}
	return err.Error()
}

// cgroup2Dir makes a cgroup of the test's own on the machine's cgroup v2
// hierarchy (mounting one where none is), removed when the test ends.
func cgroup2Dir(t *testing.T) string {
	t.Helper()
	root := ""
	mounts, err := os.ReadFile("/proc/self/mounts")
	must(t, err)
	for _, line := range strings.Split(string(mounts), "\n") {
		if f := strings.Fields(line); len(f) > 2 && f[2] == "cgroup2" {
			root = f[1]
			break
		}
	}
	if root == "" {
		root = t.TempDir()
		if err := unix.Mount("cgroup2", root, "cgroup2", 0, ""); err != nil {
			t.Fatalf("mount cgroup2: %v", err)
		}
		t.Cleanup(func() { unix.Unmount(root, unix.MNT_DETACH) })
	}
	dir := filepath.Join(root, nettest.Prefix()+"-sock")
	must(t, os.Mkdir(dir, 0o755))
	t.Cleanup(func() { os.Remove(dir) })
	return dir
}

// sockbed is the svcbed with backends on its loopback and the socket hooks
// attached to a cgroup of its own.
type sockbed struct {
	*svcbed
	cgroup string
}

func newSockbed(t *testing.T) *sockbed {
	t.Helper()
	b := &sockbed{svcbed: newSvcbed(t), cgroup: cgroup2Dir(t)}
	lo, err := b.ns.NL.LinkByName("lo")
	must(t, err)
	for _, a := range []netip.Addr{podA, podB, nodeIP} {
		must(t, b.ns.NL.AddrAdd(lo, &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(32, 32)}}))
	}
	must(t, b.dp.AttachSock(b.cgroup))
	return b
}

// client runs ops in a process inside the bed's cgroup and netns.
func (b *sockbed) client(t *testing.T, ops ...sockOp) []sockResult {
	t.Helper()
	cg, err := os.Open(b.cgroup)
	must(t, err)
	defer cg.Close()
	var in strings.Builder
	for _, op := range ops {
		j, _ := json.Marshal(op)
		in.Write(append(j, '\n'))
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), sockClientEnv+"="+b.ns.Path())
	cmd.Stdin = strings.NewReader(in.String())
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cg.Fd())}
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("client: %v\n%s", err, out)
	}
	var res []sockResult
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for dec.More() {
		var r sockResult
		must(t, dec.Decode(&r))
		res = append(res, r)
	}
	if len(res) != len(ops) {
		t.Fatalf("client answered %d of %d ops: %s", len(res), len(ops), out)
	}
	return res
}

// serveTCP answers every connection on addr with its name and the client
// address it saw, until the test ends.
func (b *sockbed) serveTCP(t *testing.T, addr netip.AddrPort) {
	t.Helper()
	var ln net.Listener
	must(t, b.ns.Do(func() (err error) {
		ln, err = net.Listen("tcp4", addr.String())
		return err
	}))
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "%s", addr)
			c.Close()
		}
	}()
}

// serveUDP answers every datagram on addr with its name.
func (b *sockbed) serveUDP(t *testing.T, addr netip.AddrPort) {
	t.Helper()
	var pc net.PacketConn
	must(t, b.ns.Do(func() (err error) {
		pc, err = net.ListenPacket("udp4", addr.String())
		return err
	}))
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 64)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo([]byte(addr.String()), from)
		}
	}()
}

// TestSocketHooks: a process in the cgroup connects to a ClusterIP and
// reaches the backend, yet getpeername shows the ClusterIP; a DNS-shaped
// exchange on an unconnected UDP socket gets its answer from the ClusterIP;
// a NodePort on the node's IP is translated too; a Service without
// endpoints refuses at once. Dual-stack IPv6 sockets reaching the IPv4
// Service (Go's and Java's unconnected UDP sockets are) get the same. A
// process outside the cgroup is not translated at all.
func TestSocketHooks(t *testing.T) {
	nettest.RequireRoot(t)
	b := newSockbed(t)
	web := netip.AddrPortFrom(podA, 8080)
	dns := netip.AddrPortFrom(podA, 5353)
	b.serveTCP(t, web)
	b.serveUDP(t, dns)
	b.service(t, maps.Frontend{Addr: clusterIP, Port: 80, Proto: 6, Scope: maps.ScopeInternal}, web)
	b.service(t, maps.Frontend{Addr: clusterIP, Port: 53, Proto: 17, Scope: maps.ScopeInternal}, dns)
	b.service(t, maps.Frontend{Addr: netip.IPv4Unspecified(), Port: 30080, Proto: 6, Scope: maps.ScopeInternal, Flags: maps.SvcNodePort}, web)
	b.service(t, maps.Frontend{Addr: noEPIP, Port: 80, Proto: 6, Scope: maps.ScopeInternal})

	svc := netip.AddrPortFrom(clusterIP, 80).String()
	svcDNS := netip.AddrPortFrom(clusterIP, 53).String()
	ops := []sockOp{
		{"tcp", svc},
		{"udp", svcDNS},
		{"udpconn", svcDNS},
		{"tcp", netip.AddrPortFrom(nodeIP, 30080).String()},
		{"tcp", netip.AddrPortFrom(noEPIP, 80).String()},
		{"tcp6", svc},
		{"udp6", svcDNS},
		{"tcp6", netip.AddrPortFrom(noEPIP, 80).String()},
	}
	want := []sockResult{
		{Peer: svc, Reply: web.String()},
		{From: svcDNS, Reply: dns.String()},
		{Peer: svcDNS, Reply: dns.String()},
		{Peer: netip.AddrPortFrom(nodeIP, 30080).String(), Reply: web.String()},
		{Err: "ECONNREFUSED"},
		{Peer: svc, Reply: web.String()},
		{From: svcDNS, Reply: dns.String()},
		{Err: "ECONNREFUSED"},
	}
	res := b.client(t, ops...)
	for i := range want {
		if res[i] != want[i] {
			t.Errorf("%s %s: got %+v, want %+v", ops[i].Kind, ops[i].Addr, res[i], want[i])
		}
	}
	c, err := b.dp.Maps.Counters.All()
	must(t, err)
	if c[maps.ReasonSvcSockXlate].Packets != 6 || c[maps.ReasonSvcSockNoBackend].Packets != 2 {
		t.Errorf("counted %d translations and %d refusals, want 6 and 2", c[maps.ReasonSvcSockXlate].Packets, c[maps.ReasonSvcSockNoBackend].Packets)
	}

	// Outside the cgroup nothing is translated: the ClusterIP has no route.
	err = b.ns.Do(func() error {
		c, err := net.Dial("tcp4", svc)
		if err == nil {
			c.Close()
		}
		return err
	})
	if !errors.Is(err, unix.ENETUNREACH) {
		t.Errorf("a process outside the cgroup connecting to %s: %v, want ENETUNREACH (untranslated)", svc, err)
	}
}

// TestSocketSpread: connections through the socket hook spread evenly over
// the backends (chi-square at p = 1e-6, as TestBackendSpread), and an
// unconnected UDP socket keeps one backend for all its datagrams (a
// resolver's query and its retry reach the same server).
func TestSocketSpread(t *testing.T) {
	nettest.RequireRoot(t)
	b := newSockbed(t)
	const n, k = 1200, 4
	var backends, udp []netip.AddrPort
	for i := range k {
		be := netip.AddrPortFrom(podA, uint16(8080+i))
		backends = append(backends, be)
		b.serveTCP(t, be)
		udp = append(udp, netip.AddrPortFrom(podA, uint16(5300+i)))
		b.serveUDP(t, udp[i])
	}
	b.service(t, maps.Frontend{Addr: clusterIP, Port: 80, Proto: 6, Scope: maps.ScopeInternal}, backends...)
	b.service(t, maps.Frontend{Addr: clusterIP, Port: 53, Proto: 17, Scope: maps.ScopeInternal}, udp...)
	twice := make([]sockOp, 20)
	for i := range twice {
		twice[i] = sockOp{"udp2", netip.AddrPortFrom(clusterIP, 53).String()}
	}
	for _, r := range b.client(t, twice...) {
		if a, b, _ := strings.Cut(r.Reply, "|"); a != b || a == "" {
			t.Errorf("one UDP socket's two datagrams reached %q and %q", a, b)
		}
	}

	ops := make([]sockOp, n)
	for i := range ops {
		ops[i] = sockOp{"tcp", netip.AddrPortFrom(clusterIP, 80).String()}
	}
	b.client(t, ops...)
	// The backend each connect() was given, as the hook counted it (what
	// the servers answered would also count how busy the machine is).
	entries, err := b.dp.Maps.Services.Backends()
	must(t, err)
	seen := map[string]int{}
	for _, e := range entries {
		if e.Proto == 6 {
			seen[netip.AddrPortFrom(e.Addr, e.Port).String()] = int(e.Conns)
		}
	}
	chi2 := 0.0
	for _, be := range backends {
		d := float64(seen[be.String()]) - float64(n)/k
		chi2 += d * d / (float64(n) / k)
	}
	const limit = 30.7 // the chi-square quantile for 3 degrees of freedom at 1 - 1e-6
	t.Logf("%d connections over %d backends: %v, chi-square %.1f", n, k, seen, chi2)
	if len(seen) != k || chi2 > limit {
		t.Errorf("spread %v: chi-square %.1f above %.1f", seen, chi2, limit)
	}
}
