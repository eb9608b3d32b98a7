// Package e2e runs the real podvnet binaries in a simulated VNet (see
// package vnet). Every test builds its own VNet with a unique prefix and
// removes it, also when it fails.
package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/podvnet/podvnet/internal/nettest"
	"github.com/podvnet/podvnet/tests/e2e/vnet"
)

// binDir holds podvnet-agent and podvnet, and the reference plugins in
// binDir/cni, built once per test binary unless PODVNET_BIN_DIR points at
// binaries already built (make test does).
var binDir string

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	binDir = os.Getenv("PODVNET_BIN_DIR")
	if binDir == "" && os.Geteuid() == 0 {
		dir, err := os.MkdirTemp("", "podvnet-e2e-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		for pkg, name := range map[string]string{"./cmd/agent": "podvnet-agent", "./cmd/plugin": "podvnet"} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(dir, name), pkg)
			cmd.Dir = "../.."
			cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
			if err := cmd.Run(); err != nil {
				fmt.Fprintf(os.Stderr, "build %s: %v\n", pkg, err)
				return 1
			}
		}
		// The reference plugins chained with podvnet, as `make test` has them.
		cmd := exec.Command("make", "-s", "cni-plugins", "BIN="+dir)
		cmd.Dir = "../.."
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "build the reference CNI plugins: %v\n", err)
			return 1
		}
		binDir = dir
	}
	return m.Run()
}

// newVNet builds a simulated VNet for t, removed when t ends.
func newVNet(t *testing.T, opts vnet.Options) *vnet.VNet {
	t.Helper()
	nettest.RequireRoot(t)
	if opts.Prefix == "" {
		opts.Prefix = nettest.Prefix()
	}
	if opts.BinDir == "" {
		opts.BinDir = binDir
	}
	opts.WorkDir = t.TempDir()
	v, err := vnet.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, n := range v.Nodes {
				if b, err := os.ReadFile(n.AgentLog()); err == nil {
					t.Logf("%s agent log:\n%s", n.Name, tail(b, 6000))
				}
				if b, err := os.ReadFile(filepath.Join(n.Dir, "cni.log")); err == nil {
					t.Logf("%s plugin log:\n%s", n.Name, tail(b, 3000))
				}
			}
		}
		if err := v.Close(); err != nil {
			t.Errorf("tear down VNet: %v", err)
		}
	})
	return v
}

// eventually polls cond until it holds or timeout has passed and says
// whether it held: for what the agent does in the background, where the
// timeout only bounds a failure.
func eventually(timeout time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(timeout); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// startAgents starts the agent on every node, with extra flags.
func startAgents(t *testing.T, v *vnet.VNet, extra ...string) {
	t.Helper()
	for _, n := range v.Nodes {
		if err := n.StartAgent(extra...); err != nil {
			t.Fatal(err)
		}
	}
}

func addPod(t *testing.T, n *vnet.Node, name string) *vnet.Pod {
	t.Helper()
	p, err := n.AddPod(name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// echoPods adds pods a and b on node 1 and c on node 2, each serving TCP
// echo on echoPort: one pair on a node, one across nodes.
func echoPods(t *testing.T, v *vnet.VNet) (a, b, c *vnet.Pod) {
	t.Helper()
	n1, n2 := v.Nodes[0], v.Nodes[1]
	a, b, c = addPod(t, n1, "a"), addPod(t, n1, "b"), addPod(t, n2, "c")
	for _, p := range []*vnet.Pod{a, b, c} {
		if _, err := p.EchoServer(echoPort); err != nil {
			t.Fatal(err)
		}
	}
	return a, b, c
}

// echoPairs checks that each pair's first pod gets size bytes back from
// the second's echo server; when says under which conditions.
func echoPairs(t *testing.T, when string, size int, pairs ...[2]*vnet.Pod) {
	t.Helper()
	for _, pair := range pairs {
		if _, err := vnet.TCPEcho(pair[0], pair[1].IP, echoPort, size, 10*time.Second); err != nil {
			t.Fatalf("%s: %v", when, err)
		}
	}
}

// floodDuring floods UDP both ways between a and b while during runs and
// fails t if a datagram is lost or the flood did not run; across says what
// during does.
func floodDuring(t *testing.T, a, b *vnet.Pod, across string, during func()) {
	t.Helper()
	ab, ba := startFloods(t, a, b)
	time.Sleep(300 * time.Millisecond)
	during()
	time.Sleep(300 * time.Millisecond)
	for name, f := range map[string]*vnet.UDPFlow{a.Name + "->" + b.Name: ab, b.Name + "->" + a.Name: ba} {
		sent, missing, err := f.Stop()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(missing) > 0 {
			t.Errorf("%s: %d of %d datagrams lost %s (first: %v)", name, len(missing), sent, across, missing[:min(10, len(missing))])
		}
		if sent < floodPPS/2 {
			t.Errorf("%s: only %d datagrams sent: the flood did not run", name, sent)
		}
		t.Logf("%s: %d datagrams, none lost", name, sent)
	}
}

// floodPPS is the rate of each flood's datagrams.
const floodPPS = 2000

// startFloods starts UDP floods from a to b and from b to a.
func startFloods(t *testing.T, a, b *vnet.Pod) (ab, ba *vnet.UDPFlow) {
	t.Helper()
	ab, err := vnet.StartUDPFlow(a, b, 9000, floodPPS)
	if err != nil {
		t.Fatal(err)
	}
	ba, err = vnet.StartUDPFlow(b, a, 9001, floodPPS)
	if err != nil {
		t.Fatal(err)
	}
	return ab, ba
}

// setForwarding sets net.ipv4.ip_forward on every node.
func setForwarding(t *testing.T, v *vnet.VNet, on bool) {
	t.Helper()
	value := map[bool]string{true: "1", false: "0"}[on]
	for _, n := range v.Nodes {
		if err := n.NS.Sysctl("net.ipv4.ip_forward", value); err != nil {
			t.Fatal(err)
		}
	}
}
