package vnet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/podvnet/podvnet/internal/nettest"
	"github.com/podvnet/podvnet/pkg/agentapi"
	"github.com/podvnet/podvnet/pkg/ipam"
	"github.com/podvnet/podvnet/pkg/maps"
	"github.com/podvnet/podvnet/pkg/paths"
)

// Node is one simulated VM: a namespace with eth0 on the fabric.
type Node struct {
	vnet   *VNet
	Index  int
	Name   string
	NS     *nettest.NS
	Pool   ipam.Pool
	NICMAC net.HardwareAddr
	// PodBlock holds the node's secondary IPs with AlignedPools.
	PodBlock netip.Prefix
	Dir      string // the node's work dir
	BPFFS    string

	agent *exec.Cmd
	done  chan error
	pods  atomic.Int32 // pods made, for container IDs; AddPod runs in parallel
}

// Paths are where the node's agent keeps its state, socket and pins.
func (n *Node) Paths() paths.Node {
	return paths.Node{StateDir: filepath.Join(n.Dir, "state"), Socket: filepath.Join(n.Dir, "agent.sock"), BPFFSRoot: n.BPFFS}
}

// AgentLog is where the agent's output goes.
func (n *Node) AgentLog() string { return filepath.Join(n.Dir, "agent.log") }

// PoolFile is the static pool file of the node.
func (n *Node) PoolFile() string { return filepath.Join(n.Dir, "pool.json") }

func (n *Node) bin(name string) string { return filepath.Join(n.vnet.Opts.BinDir, name) }

// AgentArgs are the flags StartAgent passes to `podvnet-agent run`.
func (n *Node) AgentArgs() []string {
	var args []string
	switch n.vnet.Opts.IPAMSource {
	case "nmagent":
		// No --nic: the agent finds eth0 by the MAC the document lists.
		args = []string{"run", "--ipam-source", "nmagent", "--nmagent-url", "http://" + WireserverIP.String()}
	case "imds":
		args = []string{"run", "--ipam-source", "imds", "--imds-url", "http://" + IMDSIP.String()}
	default:
		args = []string{"run", "--nic", "eth0", "--ipam-source", "static", "--pool-file", n.PoolFile()}
	}
	args = append(args,
		"--bpffs-root", n.Paths().BPFFSRoot, "--state-dir", n.Paths().StateDir, "--socket", n.Paths().Socket,
		"--log-level", "debug",
	)
	return append(args, n.vnet.Opts.AgentArgs...)
}

// StartAgent runs podvnet-agent in the node's namespace and waits until it
// serves. extra flags are appended.
func (n *Node) StartAgent(extra ...string) error {
	if err := n.StartAgentNoWait(extra...); err != nil {
		return err
	}
	return n.WaitAgentReady(30 * time.Second)
}

// StartAgentNoWait runs podvnet-agent in the node's namespace and returns
// at once.
func (n *Node) StartAgentNoWait(extra ...string) error {
	if n.agent != nil {
		return fmt.Errorf("%s: agent already running", n.Name)
	}
	if err := n.writePool(); err != nil {
		return err
	}
	logf, err := os.OpenFile(n.AgentLog(), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	args := append([]string{"--net=" + n.NS.Path(), n.bin("podvnet-agent")}, append(n.AgentArgs(), extra...)...)
	cmd := exec.Command("nsenter", args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// If the test process dies, so does the agent.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%s: start agent: %w", n.Name, err)
	}
	n.agent = cmd
	n.done = make(chan error, 1)
	go func() { n.done <- cmd.Wait() }()
	n.vnet.onClose(func() error { n.StopAgent(syscall.SIGTERM); return nil })
	return nil
}

// WaitAgentReady waits until the agent's API answers ready.
func (n *Node) WaitAgentReady(timeout time.Duration) error {
	client := agentapi.NewClient(n.Paths().Socket)
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case err := <-n.done:
			n.agent = nil
			return fmt.Errorf("%s: agent exited (%v):\n%s", n.Name, err, n.tailLog())
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		st, err := client.Status(ctx)
		cancel()
		if err == nil && st.Ready {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s: agent not ready after %s:\n%s", n.Name, timeout, n.tailLog())
}

// HTTPGet fetches a path of the agent's metrics endpoint (127.0.0.1:9965 in
// the node's namespace) and returns the status code and body.
func (n *Node) HTTPGet(path string) (int, string, error) {
	code, body, err := Fetch(n.NS, "http://127.0.0.1:9965"+path, nil, 5*time.Second)
	return code, string(body), err
}

// Metric returns the value of the first sample of the agent's /metrics
// named name whose labels hold every one of labels (e.g. `op="add"`); a
// sample without labels matches when labels is empty.
func (n *Node) Metric(name string, labels ...string) (float64, error) {
	code, body, err := n.HTTPGet("/metrics")
	if err != nil || code != http.StatusOK {
		return 0, fmt.Errorf("%s: GET /metrics: %d %v", n.Name, code, err)
	}
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `(?:\{([^}]*)\})? (\S+)$`)
	for _, m := range re.FindAllStringSubmatch(body, -1) {
		if !slices.ContainsFunc(labels, func(l string) bool { return !strings.Contains(m[1], l) }) {
			return strconv.ParseFloat(m[2], 64)
		}
	}
	return 0, fmt.Errorf("%s: no sample %s%v in /metrics", n.Name, name, labels)
}

// WaitAgentExit waits for an agent that is expected to stop on its own and
// returns how it ended.
func (n *Node) WaitAgentExit(timeout time.Duration) error {
	if n.agent == nil {
		return errors.New("agent not running")
	}
	select {
	case err := <-n.done:
		n.agent = nil
		return err
	case <-time.After(timeout):
		return fmt.Errorf("%s: agent still running after %s", n.Name, timeout)
	}
}

// StopAgent signals the agent and waits for it (SIGKILL after 10s).
func (n *Node) StopAgent(sig syscall.Signal) {
	if n.agent == nil {
		return
	}
	n.agent.Process.Signal(sig)
	select {
	case <-n.done:
	case <-time.After(10 * time.Second):
		n.agent.Process.Kill()
		<-n.done
	}
	n.agent = nil
}

// AgentPID is the running agent's process ID, 0 when none runs.
func (n *Node) AgentPID() int {
	if n.agent == nil {
		return 0
	}
	return n.agent.Process.Pid
}

// AgentMemoryKiB reads the running agent's resident memory (VmRSS) and its
// peak since start (VmHWM) from /proc.
func (n *Node) AgentMemoryKiB() (rss, peak int, err error) {
	path := fmt.Sprintf("/proc/%d/status", n.AgentPID())
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, fmt.Errorf("%s: agent memory: %w", n.Name, err)
	}
	kib := map[string]int{}
	for _, line := range strings.Split(string(b), "\n") {
		field, value, _ := strings.Cut(line, ":")
		if field == "VmRSS" || field == "VmHWM" {
			if kib[field], err = strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(value), " kB")); err != nil {
				return 0, 0, fmt.Errorf("%s: parse %q: %w", path, line, err)
			}
		}
	}
	if kib["VmRSS"] == 0 || kib["VmHWM"] == 0 {
		return 0, 0, fmt.Errorf("no VmRSS or VmHWM in %s", path)
	}
	return kib["VmRSS"], kib["VmHWM"], nil
}

func (n *Node) tailLog() string {
	b, _ := os.ReadFile(n.AgentLog())
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

func (n *Node) writePool() error {
	// netip types marshal as the strings the pool file holds.
	b, _ := json.Marshal(map[string]any{
		"subnet": n.Pool.Subnet, "gateway": n.Pool.Gateway, "primary": n.Pool.Primary, "secondary": n.Pool.Secondary,
	})
	return os.WriteFile(n.PoolFile(), b, 0o600)
}

// Exec runs a command in the node's network namespace and returns its
// combined output.
func (n *Node) Exec(name string, args ...string) (string, error) {
	cmd := exec.Command("nsenter", append([]string{"--net=" + n.NS.Path(), name}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("%s: %s %v: %w\n%s", n.Name, name, args, err, out.String())
	}
	return out.String(), nil
}

// Debug runs `podvnet-agent debug ARGS` in the node with the node's
// --bpffs-root and --state-dir.
func (n *Node) Debug(args ...string) (string, error) {
	return n.Exec(n.bin("podvnet-agent"), append(append([]string{"debug"}, args...), "--bpffs-root", n.Paths().BPFFSRoot, "--state-dir", n.Paths().StateDir)...)
}

// NFT loads an nftables script in the node's namespace (nft -f -).
func (n *Node) NFT(script string) error {
	cmd := exec.Command("nsenter", "--net="+n.NS.Path(), "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: nft -f: %w\n%s\nscript:\n%s", n.Name, err, out, script)
	}
	return nil
}

// pinned runs f with the node's pinned maps, opened read-only.
func (n *Node) pinned(f func(*maps.Set) error) error {
	set, err := maps.OpenPinned(n.BPFFS)
	if err != nil {
		return err
	}
	defer set.Close()
	return f(set)
}

// Counters reads the node's pinned data path counters, summed over CPUs.
func (n *Node) Counters() (map[maps.Reason]maps.Counter, error) {
	m := map[maps.Reason]maps.Counter{}
	err := n.pinned(func(set *maps.Set) error {
		all, err := set.Counters.All()
		for _, c := range all {
			m[c.Reason] = c.Counter
		}
		return err
	})
	return m, err
}

// NextHop reads the next hop the node's from_pod writes on frames into the
// VNet (nil: the kernel resolves it), from the pinned config map.
func (n *Node) NextHop() (mac net.HardwareAddr, err error) {
	err = n.pinned(func(set *maps.Set) error {
		cfg, err := set.Config.Get()
		mac = cfg.NextHop()
		return err
	})
	return mac, err
}
