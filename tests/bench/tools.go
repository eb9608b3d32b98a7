package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// peer is one side of a measurement: a network namespace and its address.
type peer struct {
	name   string
	nsPath string
	ip     netip.Addr
	// cgroup is the cgroup.procs its processes join (the pods' cgroup,
	// where podvnet's socket hooks run); empty: the benchmark's own.
	cgroup string
}

// flow is what one row measures: traffic from src to dst, sent to addr
// (dst's own IP, or a Service's ClusterIP that kube-proxy forwards to dst).
type flow struct {
	src, dst peer
	addr     netip.Addr
}

func (f flow) String() string {
	if f.addr == f.dst.ip {
		return f.src.name + " -> " + f.dst.name
	}
	return fmt.Sprintf("%s -> %s -> %s", f.src.name, f.addr, f.dst.name)
}

// cmd returns a command that runs name in the peer's namespace, pinned to
// cpu (-1: not pinned), and dies with the benchmark.
func (p peer) cmd(ctx context.Context, cpu int, name string, args ...string) *exec.Cmd {
	full := []string{"--net=" + p.nsPath}
	if p.cgroup != "" {
		full = append(full, "sh", "-c", `echo $$ > "$1" && shift && exec "$@"`, "sh", p.cgroup)
	}
	if cpu >= 0 {
		full = append(full, "taskset", "-c", strconv.Itoa(cpu))
	}
	full = append(full, name)
	cmd := exec.CommandContext(ctx, "nsenter", append(full, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// server starts a server in dst and waits until it accepts on port.
func server(ctx context.Context, dst peer, port int, cmd *exec.Cmd) (func(), error) {
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s in %s: %w", cmd.Args, dst.name, err)
	}
	stop := func() {
		cmd.Process.Kill()
		cmd.Wait()
	}
	// iperf3 and the round trip's echo server both listen on TCP (iperf3
	// also for UDP tests).
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if out, err := dst.cmd(ctx, -1, "ss", "-ltnH", "sport", "= :"+strconv.Itoa(port)).Output(); err == nil && len(strings.TrimSpace(string(out))) > 0 {
			return stop, nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	return nil, fmt.Errorf("%s did not listen on %d in %s", cmd.Args, port, dst.name)
}

const (
	iperfPort = 5201
	rrPort    = 11111 // lockstep round trips (lockstep.go)
)

// udpKpps floods 64-byte UDP datagrams along f for d and returns the
// thousands of datagrams per second the receiver got. Sender and receiver
// run on different vCPUs: UDP is bound by the sender's CPU.
func udpKpps(ctx context.Context, f flow, d time.Duration) (float64, error) {
	stop, err := server(ctx, f.dst, iperfPort, f.dst.cmd(ctx, 1, "iperf3", "-s", "-1", "-p", strconv.Itoa(iperfPort)))
	if err != nil {
		return 0, err
	}
	defer stop()
	out, err := f.src.cmd(ctx, 0, "iperf3", "-c", f.addr.String(), "-p", strconv.Itoa(iperfPort), "-u", "-l", "64", "-b", "0",
		"-t", secs(d), "-J").Output()
	if err != nil {
		return 0, fmt.Errorf("iperf3 UDP %s: %w: %s", f, err, snippet(out))
	}
	// end.sum carries the receiver's count for UDP: sent minus lost.
	var r struct {
		End struct {
			Sum struct {
				Packets     float64 `json:"packets"`
				LostPackets float64 `json:"lost_packets"`
				Seconds     float64 `json:"seconds"`
			} `json:"sum"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return 0, fmt.Errorf("parse iperf3 UDP output: %w", err)
	}
	sum := r.End.Sum
	if sum.Seconds == 0 || sum.Packets == 0 {
		return 0, fmt.Errorf("iperf3 UDP %s: no datagrams counted: %s", f, snippet(out))
	}
	return (sum.Packets - sum.LostPackets) / sum.Seconds / 1000, nil
}

// tcpGbps is single-stream TCP throughput, client and server on different
// vCPUs.
func tcpGbps(ctx context.Context, f flow, d time.Duration) (float64, error) {
	stop, err := server(ctx, f.dst, iperfPort, f.dst.cmd(ctx, 1, "iperf3", "-s", "-1", "-p", strconv.Itoa(iperfPort)))
	if err != nil {
		return 0, err
	}
	defer stop()
	out, err := f.src.cmd(ctx, 0, "iperf3", "-c", f.addr.String(), "-p", strconv.Itoa(iperfPort), "-t", secs(d), "-J").Output()
	if err != nil {
		return 0, fmt.Errorf("iperf3 TCP %s: %w: %s", f, err, snippet(out))
	}
	var r struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		return 0, fmt.Errorf("parse iperf3 TCP output: %w", err)
	}
	return r.End.SumReceived.BitsPerSecond / 1e9, nil
}

func secs(d time.Duration) string {
	return strconv.Itoa(max(1, int(d.Round(time.Second)/time.Second)))
}

func snippet(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 600 {
		s = s[len(s)-600:]
	}
	return s
}

// reachable checks f's source reaches its destination pod before a
// measurement is trusted; through a Service, the measurement itself shows
// the DNAT works (nothing else answers the ClusterIP).
func reachable(ctx context.Context, f flow) error {
	out, err := f.src.cmd(ctx, -1, "ping", "-c", "2", "-W", "1", "-i", "0.2", f.dst.ip.String()).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s cannot reach %s (%s): %w: %s", f.src.name, f.dst.name, f.dst.ip, err, snippet(out))
	}
	return nil
}
