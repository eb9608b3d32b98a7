package e2e

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/podvnet/podvnet/pkg/install"
	"github.com/podvnet/podvnet/tests/e2e/vnet"
)

// cniNode is a node whose runtime reads plugins from BinDir (where, at
// first, only the agent is) and configs from ConfDir, as a kubelet node's
// /opt/cni/bin and /etc/cni/net.d.
type cniNode struct {
	BinDir, ConfDir, Source string
}

func newCNINode(t *testing.T) cniNode {
	t.Helper()
	d := t.TempDir()
	c := cniNode{BinDir: filepath.Join(d, "opt-cni-bin"), ConfDir: filepath.Join(d, "net.d"), Source: filepath.Join(d, "configmap.conflist")}
	for _, dir := range []string{c.BinDir, c.ConfDir} {
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(filepath.Join(binDir, "podvnet-agent"), filepath.Join(c.BinDir, "podvnet-agent")); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c cniNode) conf() string { return filepath.Join(c.ConfDir, install.DefaultConfName) }

func (c cniNode) args() []string {
	return []string{"--cni-conf-dir", c.ConfDir, "--cni-bin-dir", c.BinDir, "--cni-conflist", c.Source,
		"--plugin-binary", filepath.Join(binDir, "podvnet")}
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// TestAgentInstallsCNIOnceReady: while the agent cannot serve, the runtime
// finds neither plugin nor config; once it serves, both appear, and a pod
// is wired through the installed plugin. A restart rewrites nothing, and
// cleanup removes the config but keeps the plugin for DELs.
func TestAgentInstallsCNIOnceReady(t *testing.T) {
	c := newCNINode(t)
	v := newVNet(t, vnet.Options{Nodes: 1, PerNode: 4, BinDir: c.BinDir})
	n := v.Nodes[0]
	if err := os.WriteFile(c.Source, n.ConfList(), 0o644); err != nil {
		t.Fatal(err)
	}
	// The agent waits for a NIC that does not exist yet: not ready.
	if err := n.StartAgentNoWait(append(c.args(), "--nic", "vnic0")...); err != nil {
		t.Fatal(err)
	}
	var code int
	var body string
	var err error
	if !eventually(10*time.Second, func() bool {
		code, body, err = n.HTTPGet("/readyz")
		return err == nil && code == 503 && strings.Contains(body, "waiting for NIC vnic0")
	}) {
		t.Fatalf("/readyz: %d %q %v, want 503 waiting for vnic0", code, body, err)
	}
	time.Sleep(500 * time.Millisecond)
	if exists(c.conf()) || exists(filepath.Join(c.BinDir, "podvnet")) {
		t.Fatal("plugin or conflist installed while the agent is not ready")
	}

	if err := n.NS.NL.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "vnic0"}, PeerName: "vnic0p"}); err != nil {
		t.Fatal(err)
	}
	if !eventually(20*time.Second, func() bool { return exists(c.conf()) }) {
		t.Fatalf("no conflist in %s after the NIC appeared", c.ConfDir)
	}
	if code, _, err := n.HTTPGet("/readyz"); err != nil || code != 200 {
		t.Fatalf("conflist installed but /readyz says %d %v", code, err)
	}
	if got, want := mustReadFile(t, c.conf()), mustReadFile(t, c.Source); !bytes.Equal(got, want) {
		t.Errorf("installed conflist:\n%s\nwant the ConfigMap's:\n%s", got, want)
	}
	if got := mustReadFile(t, filepath.Join(c.BinDir, "podvnet")); !bytes.Equal(got, mustReadFile(t, filepath.Join(binDir, "podvnet"))) {
		t.Error("installed plugin differs from the image's")
	}
	// The runtime execs the plugin it finds in its bin dir: the installed one.
	p := addPod(t, n, "a")
	if err := p.Del(); err != nil {
		t.Fatal(err)
	}
	if log := mustReadFile(t, n.AgentLog()); !bytes.Contains(log, []byte("no loopback plugin in the CNI bin dir")) {
		t.Error("the agent did not warn that loopback is missing from the bin dir")
	}

	// A restarted agent (an upgrade to the same version) rewrites nothing.
	before := mustStatFile(t, c.conf())
	n.StopAgent(syscall.SIGTERM)
	if err := n.StartAgent(c.args()...); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if !os.SameFile(before, mustStatFile(t, c.conf())) {
		t.Error("a restarted agent replaced an unchanged conflist (runtimes reload on every write)")
	}

	n.StopAgent(syscall.SIGTERM)
	if out, err := n.Exec(filepath.Join(binDir, "podvnet-agent"), "cleanup", "--bpffs-root", n.BPFFS,
		"--state-dir", n.Paths().StateDir, "--socket", n.Paths().Socket, "--cni-conf-dir", c.ConfDir); err != nil {
		t.Fatalf("cleanup: %v\n%s", err, out)
	}
	if exists(c.conf()) {
		t.Error("cleanup left the conflist: the runtime would keep sending pods to a removed network")
	}
	if !exists(filepath.Join(c.BinDir, "podvnet")) {
		t.Error("cleanup removed the plugin binary: DEL of remaining pods would fail")
	}
}

// TestRollingUpgrade does what a DaemonSet rollout does, node by node:
// SIGTERM to the old agent, a new version started with the install flags.
// Pod traffic between the nodes loses nothing; the new plugin replaces
// the old under its name; the unchanged conflist is not rewritten; pods
// made before and after the upgrade are served.
func TestRollingUpgrade(t *testing.T) {
	c := newCNINode(t)
	v := newVNet(t, vnet.Options{PerNode: 4, BinDir: c.BinDir})
	n1, n2 := v.Nodes[0], v.Nodes[1]
	if err := os.WriteFile(c.Source, n1.ConfList(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := n1.StartAgent(c.args()...); err != nil {
		t.Fatal(err)
	}
	if !eventually(10*time.Second, func() bool { return exists(c.conf()) }) {
		t.Fatal("no conflist installed")
	}
	if err := n2.StartAgent(); err != nil {
		t.Fatal(err)
	}
	a, b := addPod(t, n1, "a"), addPod(t, n2, "b")
	conf := mustStatFile(t, c.conf())

	// The next version's plugin: the same program with other bytes.
	newPlugin := filepath.Join(t.TempDir(), "podvnet")
	if err := os.WriteFile(newPlugin, append(mustReadFile(t, filepath.Join(binDir, "podvnet")), "\x00v2"...), 0o755); err != nil {
		t.Fatal(err)
	}
	floodDuring(t, a, b, "across the upgrade", func() {
		n1.StopAgent(syscall.SIGTERM)
		if err := n1.StartAgent(append(c.args(), "--plugin-binary", newPlugin)...); err != nil {
			t.Fatal(err)
		}
		n2.StopAgent(syscall.SIGTERM)
		if err := n2.StartAgent(); err != nil {
			t.Fatal(err)
		}
	})

	if !eventually(10*time.Second, func() bool {
		return bytes.Equal(mustReadFile(t, filepath.Join(c.BinDir, "podvnet")), mustReadFile(t, newPlugin))
	}) {
		t.Fatal("the new agent did not install its plugin")
	}
	if !os.SameFile(conf, mustStatFile(t, c.conf())) {
		t.Error("the upgrade rewrote an unchanged conflist")
	}
	if err := a.Del(); err != nil {
		t.Fatalf("DEL of a pod made before the upgrade: %v", err)
	}
	a2 := addPod(t, n1, "a2")
	if _, err := b.EchoServer(echoPort); err != nil {
		t.Fatal(err)
	}
	if _, err := vnet.TCPEcho(a2, b.IP, echoPort, 64<<10, 10*time.Second); err != nil {
		t.Fatalf("a pod made after the upgrade: %v", err)
	}
}

// TestAgentRefusesConfigItCannotServe: a conflist whose plugin talks to
// another socket stops the agent at start; one whose chained plugin is not
// installed stops it at install time, and no config is written.
func TestAgentRefusesConfigItCannotServe(t *testing.T) {
	c := newCNINode(t)
	v := newVNet(t, vnet.Options{Nodes: 1, PerNode: 4, BinDir: c.BinDir})
	n := v.Nodes[0]
	tests := []struct {
		name, conflist, wantLog string
	}{
		{
			name:     "other socket",
			conflist: `{"cniVersion":"1.0.0","name":"podvnet","plugins":[{"type":"podvnet","socket":"/run/elsewhere.sock"}]}`,
			wantLog:  "talks to /run/elsewhere.sock but the agent listens on " + n.Paths().Socket,
		},
		{
			name: "chained plugin missing",
			conflist: `{"cniVersion":"1.0.0","name":"podvnet","plugins":[{"type":"podvnet","socket":"` + n.Paths().Socket +
				`"},{"type":"portmap","capabilities":{"portMappings":true}}]}`,
			wantLog: `install CNI plugin: conflist with cniVersion 1.0.0, plugins in ` + c.BinDir + `: [failed to find plugin "portmap"`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := os.WriteFile(c.Source, []byte(tt.conflist), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(n.AgentLog(), 0); err != nil && !os.IsNotExist(err) {
				t.Fatal(err)
			}
			if err := n.StartAgentNoWait(c.args()...); err != nil {
				t.Fatal(err)
			}
			if err := n.WaitAgentExit(30 * time.Second); err == nil {
				t.Fatal("agent exited 0")
			}
			if log := mustReadFile(t, n.AgentLog()); !bytes.Contains(log, []byte(tt.wantLog)) {
				t.Errorf("agent log lacks %q:\n%s", tt.wantLog, log)
			}
			if exists(c.conf()) {
				t.Error("a conflist the plugins cannot serve was written")
			}
		})
	}
}

func mustReadFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustStatFile(t *testing.T, path string) os.FileInfo {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st
}
