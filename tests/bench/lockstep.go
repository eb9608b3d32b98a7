package main

// Lockstep measurement: one process measures every row of a round, taking
// turns every few milliseconds. This machine (a shared 2-vCPU VM) has
// phases, from a fraction of a second to several seconds, in which the
// same round trip over one veth pair takes ~1.45x as long; a row measured
// on its own for seconds lands in them at random and its neighbour in the
// round does not, which is drift larger than the differences measured.
// Taking turns, every row sees the same mix of phases.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The tool's commands: the benchmark binary run as `lockstep CONFIG` (the
// client side, see lockstepConfig), or as a server in the destination's
// namespace: `rr-echo PORT` (the round trip's) or `crr-server PORT`
// (answers each connection's byte with one and closes).
const (
	lockstepCmd  = "lockstep"
	rrEchoCmd    = "rr-echo"
	crrServerCmd = "crr-server"
)

const (
	// slice is how long a row has its turn: short against the machine's
	// phases, long against the cost of switching (none on the path).
	lockstepSlice = 20 * time.Millisecond
	// msgSize is the payload of every datagram and ping-pong message.
	msgSize = 64
	// rrBucket and rrBuckets: the round-trip histogram, 10 ns resolution
	// up to 2 ms; the last bucket counts the longer round trips, and a
	// quantile that falls in it is an error rather than a figure.
	rrBucket  = 10 * time.Nanosecond
	rrBuckets = 200_000
)

// lockstepConfig is what the client side is told, as JSON in its argument.
type lockstepConfig struct {
	Mode    string         `json:"mode"` // rr, udp or crr
	Seconds float64        `json:"seconds"`
	Flows   []lockstepFlow `json:"flows"`
}

type lockstepFlow struct {
	SrcNS  string `json:"src_ns"`
	DstNS  string `json:"dst_ns"`           // udp: where the receiving socket is made
	Addr   string `json:"addr"`             // ip:port the source sends to
	Cgroup string `json:"cgroup,omitempty"` // cgroup.procs the source's socket is made in
}

// lockstepResult is one flow's measurement.
type lockstepResult struct {
	P50us   float64 `json:"p50_us,omitempty"` // rr: round trip
	P99us   float64 `json:"p99_us,omitempty"`
	Kpps    float64 `json:"kpps,omitempty"`  // udp: received per second of the flow's turns
	PerS    float64 `json:"per_s,omitempty"` // crr: connections per second of the flow's turns
	Samples int64   `json:"samples"`         // round trips, or datagrams received
}

// lockstep measures flows in turns for total (each flow gets total/len),
// in one process: mode "rr" (TCP ping-pong of msgSize bytes, client and
// echo server on vCPU 0), "udp" (a flood of msgSize-byte datagrams, sender
// on vCPU 0, receiver on vCPU 1) or "crr" (a connection per one-byte
// request, client on vCPU 0; the caller runs the flows' crr-servers).
func (b *bench) lockstep(ctx context.Context, mode string, flows []flow, total time.Duration) ([]lockstepResult, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cfg := lockstepConfig{Mode: mode, Seconds: total.Seconds()}
	port := iperfPort
	switch mode {
	case "rr":
		port = rrPort
	case "crr":
		port = crrPort
	}
	echo := map[string]bool{}
	for _, f := range flows {
		cfg.Flows = append(cfg.Flows, lockstepFlow{SrcNS: f.src.nsPath, DstNS: f.dst.nsPath, Addr: netip.AddrPortFrom(f.addr, uint16(port)).String(),
			Cgroup: f.src.cgroup})
		if mode != "rr" || echo[f.dst.nsPath] {
			continue
		}
		echo[f.dst.nsPath] = true
		stop, err := server(ctx, f.dst, rrPort, f.dst.cmd(ctx, 0, self, rrEchoCmd, strconv.Itoa(rrPort)))
		if err != nil {
			return nil, err
		}
		defer stop()
	}
	arg, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, self, lockstepCmd, string(arg))
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			out = ee.Stderr
		}
		return nil, fmt.Errorf("lockstep %s of %d flows: %w: %s", mode, len(flows), err, snippet(out))
	}
	var res []lockstepResult
	if err := json.Unmarshal(out, &res); err != nil {
		return nil, fmt.Errorf("lockstep %s: parse %q: %w", mode, snippet(out), err)
	}
	if len(res) != len(flows) {
		return nil, fmt.Errorf("lockstep %s: %d results for %d flows", mode, len(res), len(flows))
	}
	for i, r := range res {
		if r.Samples == 0 {
			return nil, fmt.Errorf("lockstep %s: nothing measured along %s", mode, flows[i])
		}
	}
	return res, nil
}

// lockstepMain runs the tool's side named by args, or reports false.
func lockstepMain(args []string) (bool, error) {
	if len(args) < 3 {
		return false, nil
	}
	switch args[1] {
	case rrEchoCmd:
		port, err := strconv.Atoi(args[2])
		if err != nil {
			return true, err
		}
		return true, rrEcho(port)
	case crrServerCmd:
		return true, crrServe(args[2])
	case lockstepCmd:
		var cfg lockstepConfig
		if err := json.Unmarshal([]byte(args[2]), &cfg); err != nil {
			return true, fmt.Errorf("config: %w", err)
		}
		res, err := runLockstep(cfg)
		if err != nil {
			return true, err
		}
		return true, json.NewEncoder(os.Stdout).Encode(res)
	}
	return false, nil
}

// rrEcho answers every msgSize-byte message on every connection to port
// with itself. Plain blocking sockets, one thread per connection: no
// poller between the packet and the answer.
func rrEcho(port int) error {
	ln, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	if err := unix.SetsockoptInt(ln, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return fmt.Errorf("SO_REUSEADDR: %w", err)
	}
	if err := unix.Bind(ln, &unix.SockaddrInet4{Port: port}); err != nil {
		return fmt.Errorf("bind :%d: %w", port, err)
	}
	if err := unix.Listen(ln, 64); err != nil {
		return fmt.Errorf("listen :%d: %w", port, err)
	}
	for {
		c, _, err := unix.Accept4(ln, unix.SOCK_CLOEXEC)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("accept: %w", err)
		}
		go func() {
			runtime.LockOSThread()
			defer unix.Close(c)
			unix.SetsockoptInt(c, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
			buf := make([]byte, msgSize)
			for readFull(c, buf) == nil && writeFull(c, buf) == nil {
			}
		}()
	}
}

// crrServe answers one byte on every connection to port with one byte and
// closes it.
func crrServe(port string) error {
	ln, err := net.Listen("tcp4", ":"+port)
	if err != nil {
		return err
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			var b [1]byte
			if _, err := io.ReadFull(c, b[:]); err == nil {
				c.Write(b[:])
			}
		}()
	}
}

func readFull(fd int, b []byte) error  { return full(unix.Read, fd, b) }
func writeFull(fd int, b []byte) error { return full(unix.Write, fd, b) }

// full moves all of b with op (read or write), through signals.
func full(op func(int, []byte) (int, error), fd int, b []byte) error {
	for off := 0; off < len(b); {
		n, err := op(fd, b[off:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return errors.New("connection closed")
		}
		off += n
	}
	return nil
}

// pinThread keeps the calling goroutine on its thread and the thread on cpu.
func pinThread(cpu int) error {
	runtime.LockOSThread()
	var set unix.CPUSet
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		return fmt.Errorf("pin a thread to vCPU %d: %w", cpu, err)
	}
	return nil
}

// inNetns makes a socket in the network namespace at nsPath: a socket
// stays in the namespace it was made in, whichever thread uses it later.
func inNetns(nsPath string, make func() (int, error)) (int, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	self, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return -1, err
	}
	defer self.Close()
	ns, err := os.Open(nsPath)
	if err != nil {
		return -1, err
	}
	defer ns.Close()
	if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
		return -1, fmt.Errorf("enter %s: %w", nsPath, err)
	}
	fd, err := make()
	if rerr := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); rerr != nil {
		// The thread stays locked (and dies with the goroutine) rather than
		// serve others in the wrong namespace.
		runtime.LockOSThread()
		if err == nil {
			unix.Close(fd)
		}
		return -1, errors.Join(err, fmt.Errorf("back to the own namespace: %w", rerr))
	}
	return fd, err
}

// connected makes a socket of typ in nsPath connected to addr.
func connected(nsPath string, typ int, addr netip.AddrPort) (int, error) {
	return inNetns(nsPath, func() (int, error) {
		fd, err := unix.Socket(unix.AF_INET, typ|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return -1, err
		}
		if typ == unix.SOCK_STREAM {
			unix.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
			// A path that breaks mid-run fails the round trip in seconds,
			// not when TCP gives up.
			tv := unix.Timeval{Sec: 5}
			unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
			unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv)
		}
		if err := connectFD(fd, addr); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("connect %s in %s: %w", addr, nsPath, err)
		}
		return fd, nil
	})
}

// cgroupMover moves the process between its flows' cgroups: a socket
// belongs to its maker's cgroup, where podvnet's socket hooks run. A flow
// without one ("") has its sockets made in the cgroup the process started
// in.
type cgroupMover struct {
	home string // cgroup.procs of the cgroup v2 the process started in
	now  string // "" until the first move
}

// newCgroupMover records where the process started, if any flow needs
// moving at all.
func newCgroupMover(flows []lockstepFlow) (*cgroupMover, error) {
	m := &cgroupMover{}
	if !slices.ContainsFunc(flows, func(f lockstepFlow) bool { return f.Cgroup != "" }) {
		return m, nil
	}
	root, err := cgroup2Mount()
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if path, ok := strings.CutPrefix(line, "0::"); ok {
			m.home = filepath.Join(root, path, "cgroup.procs")
			return m, nil
		}
	}
	return nil, errors.New("/proc/self/cgroup: no cgroup v2 entry (0::)")
}

// join moves the process into procs' cgroup ("": the one it started in),
// unless it is there.
func (m *cgroupMover) join(procs string) error {
	if procs == m.now {
		return nil
	}
	target := procs
	if target == "" {
		target = m.home
	}
	if err := os.WriteFile(target, []byte(strconv.Itoa(os.Getpid())), 0); err != nil {
		return fmt.Errorf("join the cgroup %s: %w", target, err)
	}
	m.now = procs
	return nil
}

// cgroup2Mount is where the cgroup v2 hierarchy is mounted (on a hybrid
// machine, beside the v1 controllers).
func cgroup2Mount() (string, error) {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 2 && f[2] == "cgroup2" {
			return f[1], nil
		}
	}
	return "", errors.New("no cgroup2 mounted: the socket hooks need one")
}

func runLockstep(cfg lockstepConfig) ([]lockstepResult, error) {
	addrs := make([]netip.AddrPort, len(cfg.Flows))
	for i, f := range cfg.Flows {
		a, err := netip.ParseAddrPort(f.Addr)
		if err != nil || !a.Addr().Is4() {
			return nil, fmt.Errorf("flow %d: address %q: want IPv4 ip:port", i, f.Addr)
		}
		addrs[i] = a
	}
	if len(addrs) == 0 || cfg.Seconds <= 0 {
		return nil, errors.New("want flows and a duration")
	}
	turn := time.Duration(cfg.Seconds * float64(time.Second) / float64(len(addrs)))
	switch cfg.Mode {
	case "rr":
		return lockstepRR(cfg, addrs, turn)
	case "udp":
		return lockstepUDP(cfg, addrs, turn)
	case "crr":
		return lockstepCRR(cfg, addrs, turn)
	}
	return nil, fmt.Errorf("mode %q: want rr, udp or crr", cfg.Mode)
}

// turns calls run(i, slice) for flow after flow, slice by slice in an
// order shuffled anew each cycle, until every flow has had its time, after
// one unmeasured warm-up turn each (measure false). A turn's clock starts
// in run, after whatever it must do first.
func turns(n int, each time.Duration, run func(i int, slice time.Duration, measure bool)) {
	for i := range n {
		run(i, 5*time.Millisecond, false)
	}
	order := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0))
	for done := time.Duration(0); done < each; done += lockstepSlice {
		for _, i := range order.Perm(n) {
			run(i, min(lockstepSlice, each-done), true)
		}
	}
}

// connectAll makes every flow's socket of typ in its source's namespace
// and cgroup, connected to its address; close closes them (also those made
// before an error). The process stays in the last cgroup it joined: the
// flows without one come first (no move at all), and the receiving sockets
// are made before.
func connectAll(cfg lockstepConfig, addrs []netip.AddrPort, typ int) (fds []int, close func(), err error) {
	fds = make([]int, len(addrs))
	for i := range fds {
		fds[i] = -1
	}
	close = func() {
		for _, fd := range fds {
			if fd >= 0 {
				unix.Close(fd)
			}
		}
	}
	order := make([]int, len(addrs))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return strings.Compare(cfg.Flows[a].Cgroup, cfg.Flows[b].Cgroup) })
	mover, err := newCgroupMover(cfg.Flows)
	if err != nil {
		return fds, close, err
	}
	for _, i := range order {
		if err := mover.join(cfg.Flows[i].Cgroup); err != nil {
			return fds, close, err
		}
		if fds[i], err = connected(cfg.Flows[i].SrcNS, typ, addrs[i]); err != nil {
			return fds, close, err
		}
	}
	return fds, close, nil
}

func lockstepRR(cfg lockstepConfig, addrs []netip.AddrPort, each time.Duration) ([]lockstepResult, error) {
	fds, closeAll, err := connectAll(cfg, addrs, unix.SOCK_STREAM)
	defer closeAll()
	if err != nil {
		return nil, err
	}
	if err := pinThread(0); err != nil {
		return nil, err
	}
	hist := make([][]uint32, len(fds))
	for i := range hist {
		hist[i] = make([]uint32, rrBuckets)
	}
	msg := make([]byte, msgSize)
	var failed error
	turns(len(fds), each, func(i int, slice time.Duration, measure bool) {
		until := time.Now().Add(slice)
		for failed == nil {
			t0 := time.Now()
			if err := writeFull(fds[i], msg); err != nil {
				failed = fmt.Errorf("send to %s: %w", addrs[i], err)
			} else if err := readFull(fds[i], msg); err != nil {
				failed = fmt.Errorf("answer from %s: %w", addrs[i], err)
			}
			t1 := time.Now()
			if measure {
				hist[i][min(int(t1.Sub(t0)/rrBucket), rrBuckets-1)]++
			}
			if !t1.Before(until) {
				return
			}
		}
	})
	if failed != nil {
		return nil, failed
	}
	res := make([]lockstepResult, len(fds))
	for i, h := range hist {
		res[i] = lockstepResult{P50us: histQuantile(h, 0.50), P99us: histQuantile(h, 0.99)}
		for _, c := range h {
			res[i].Samples += int64(c)
		}
		if limit := float64(rrBuckets-1) * float64(rrBucket) / float64(time.Microsecond); res[i].P99us > limit {
			return nil, fmt.Errorf("round trips to %s: p99 beyond %.0f us, the histogram's range", addrs[i], limit)
		}
	}
	return res, nil
}

// histQuantile is the q-quantile of a histogram of rrBucket-wide buckets,
// in microseconds (the bucket's middle).
func histQuantile(h []uint32, q float64) float64 {
	var total uint64
	for _, c := range h {
		total += uint64(c)
	}
	if total == 0 {
		return 0
	}
	// The smallest bucket holding at least q of the samples.
	want, seen := uint64(math.Ceil(q*float64(total))), uint64(0)
	for i, c := range h {
		if seen += uint64(c); seen >= want && seen > 0 {
			return (float64(i) + 0.5) * float64(rrBucket) / float64(time.Microsecond)
		}
	}
	return float64(len(h)) * float64(rrBucket) / float64(time.Microsecond)
}

// lockstepUDP floods each flow in turn from vCPU 0 with datagrams whose
// first byte names the flow, received on vCPU 1 by sockets in the
// destinations' namespaces (one per namespace, bound to the flows' port,
// as iperf3's server), so that a datagram counts for its flow whatever
// address translation it met on the way.
func lockstepUDP(cfg lockstepConfig, addrs []netip.AddrPort, each time.Duration) ([]lockstepResult, error) {
	if len(addrs) > 255 {
		return nil, errors.New("at most 255 flows")
	}
	port := addrs[0].Port()
	rx := map[string]int{}
	for i, f := range cfg.Flows {
		if addrs[i].Port() != port {
			return nil, errors.New("udp: every flow sends to the same port")
		}
		if _, ok := rx[f.DstNS]; ok {
			continue
		}
		fd, err := inNetns(f.DstNS, func() (int, error) {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
			if err != nil {
				return -1, err
			}
			if err := unix.Bind(fd, &unix.SockaddrInet4{Port: int(port)}); err != nil {
				unix.Close(fd)
				return -1, fmt.Errorf("bind :%d in %s: %w", port, f.DstNS, err)
			}
			return fd, nil
		})
		if err != nil {
			return nil, err
		}
		defer unix.Close(fd)
		rx[f.DstNS] = fd
	}
	// After the receiving sockets, which stay out of the sources' cgroups.
	tx, closeAll, err := connectAll(cfg, addrs, unix.SOCK_DGRAM)
	defer closeAll()
	if err != nil {
		return nil, err
	}

	// The receiver: blocked in epoll_wait until a datagram arrives, as
	// iperf3's server is in select, so that the sender's CPU pays for the
	// wake-ups as it does with iperf3.
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}
	defer unix.Close(ep)
	for _, fd := range rx {
		if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}); err != nil {
			return nil, fmt.Errorf("epoll_ctl: %w", err)
		}
	}
	received := make([]atomic.Int64, len(addrs))
	counting := make([]atomic.Bool, len(addrs))
	var stop atomic.Bool
	var wg sync.WaitGroup
	var rxErr error
	wg.Go(func() {
		if rxErr = pinThread(1); rxErr != nil {
			return
		}
		evs := make([]unix.EpollEvent, len(rx))
		buf := make([]byte, 2048)
		for !stop.Load() {
			n, err := unix.EpollWait(ep, evs, 10)
			if err != nil && err != unix.EINTR {
				rxErr = fmt.Errorf("epoll_wait: %w", err)
				return
			}
			for _, ev := range evs[:max(n, 0)] {
				for {
					m, _, err := unix.Recvfrom(int(ev.Fd), buf, unix.MSG_DONTWAIT)
					if err != nil {
						break
					}
					if i := int(buf[0]); m > 0 && i < len(received) && counting[i].Load() {
						received[i].Add(1)
					}
				}
			}
		}
	})

	if err := pinThread(0); err != nil {
		stop.Store(true)
		wg.Wait()
		return nil, err
	}
	active := make([]time.Duration, len(tx))
	msg := make([]byte, msgSize)
	turns(len(tx), each, func(i int, slice time.Duration, measure bool) {
		msg[0] = byte(i)
		counting[i].Store(measure)
		start := time.Now()
		until := start.Add(slice)
		for {
			// Errors (a full queue, an ICMP error reported) are lost
			// datagrams, as for iperf3; the count is the receiver's.
			for range 32 {
				unix.Write(tx[i], msg)
			}
			if now := time.Now(); !now.Before(until) {
				if measure {
					active[i] += now.Sub(start)
				}
				return
			}
		}
	})
	// Datagrams still on their way count for their flow.
	time.Sleep(50 * time.Millisecond)
	stop.Store(true)
	wg.Wait()
	if rxErr != nil {
		return nil, rxErr
	}
	res := make([]lockstepResult, len(tx))
	for i := range res {
		n := received[i].Load()
		if active[i] <= 0 {
			return nil, fmt.Errorf("flow to %s had no measured turn", addrs[i])
		}
		res[i] = lockstepResult{Samples: n, Kpps: float64(n) / active[i].Seconds() / 1000}
	}
	return res, nil
}

// lockstepCRR opens one connection per request (connect, a byte each way,
// closed with a reset so that no TIME_WAIT is left), turn by turn, on vCPU
// 0: each turn first moves the process into the flow's cgroup (the
// connect() hook runs there) and the thread into its namespace, then
// starts its clock. The servers are the flows' crr-servers.
func lockstepCRR(cfg lockstepConfig, addrs []netip.AddrPort, each time.Duration) ([]lockstepResult, error) {
	if err := pinThread(0); err != nil { // also locks the thread: setns is per thread
		return nil, err
	}
	mover, err := newCgroupMover(cfg.Flows)
	if err != nil {
		return nil, err
	}
	self, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(self)
	ns := make([]int, len(addrs))
	for i, f := range cfg.Flows {
		if ns[i], err = unix.Open(f.SrcNS, unix.O_RDONLY|unix.O_CLOEXEC, 0); err != nil {
			return nil, fmt.Errorf("open %s: %w", f.SrcNS, err)
		}
		defer unix.Close(ns[i])
	}
	done := make([]int64, len(addrs))
	active := make([]time.Duration, len(addrs))
	var failed error
	turns(len(addrs), each, func(i int, slice time.Duration, measure bool) {
		if failed != nil {
			return
		}
		if failed = mover.join(cfg.Flows[i].Cgroup); failed != nil {
			return
		}
		if err := unix.Setns(ns[i], unix.CLONE_NEWNET); err != nil {
			failed = fmt.Errorf("enter %s: %w", cfg.Flows[i].SrcNS, err)
			return
		}
		start := time.Now()
		n := int64(0)
		for until := start.Add(slice); time.Now().Before(until); n++ {
			if err := connectRequestClose(addrs[i]); err != nil {
				failed = fmt.Errorf("from %s, after %d connections: %w", cfg.Flows[i].SrcNS, n, err)
				break
			}
		}
		if measure {
			done[i] += n
			active[i] += time.Since(start)
		}
		if err := unix.Setns(self, unix.CLONE_NEWNET); err != nil && failed == nil {
			failed = fmt.Errorf("back to the own namespace: %w", err)
		}
	})
	if failed != nil {
		return nil, failed
	}
	res := make([]lockstepResult, len(addrs))
	for i := range res {
		res[i] = lockstepResult{Samples: done[i]}
		if active[i] > 0 {
			res[i].PerS = float64(done[i]) / active[i].Seconds()
		}
	}
	return res, nil
}

// connectRequestClose is one CRR transaction to addr from the thread's
// namespace; a path that breaks fails it in seconds, not when TCP gives up.
func connectRequestClose(addr netip.AddrPort) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	tv := unix.Timeval{Sec: 2}
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_SNDTIMEO, &tv) // also bounds connect()
	if err := connectFD(fd, addr); err != nil {
		return fmt.Errorf("connect %s: %w", addr, err)
	}
	var b [1]byte
	if err := writeFull(fd, b[:]); err != nil {
		return fmt.Errorf("request to %s: %w", addr, err)
	}
	if err := readFull(fd, b[:]); err != nil {
		return fmt.Errorf("answer from %s: %w", addr, err)
	}
	return unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
}

// connectFD connects a blocking socket to addr. A signal (the Go runtime
// preempts with SIGURG) interrupts connect() but not the handshake: then
// it waits for the handshake's end, up to 2 s.
func connectFD(fd int, addr netip.AddrPort) error {
	err := unix.Connect(fd, &unix.SockaddrInet4{Addr: addr.Addr().As4(), Port: int(addr.Port())})
	if err != unix.EINTR {
		return err
	}
	for deadline := time.Now().Add(2 * time.Second); ; {
		left := time.Until(deadline)
		if left <= 0 {
			return unix.ETIMEDOUT
		}
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}, int(left.Milliseconds())+1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("poll: %w", err)
		}
		if n == 0 {
			return unix.ETIMEDOUT
		}
		soErr, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ERROR)
		if err != nil {
			return err
		}
		if soErr != 0 {
			return unix.Errno(soErr)
		}
		return nil
	}
}
