package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/podvnet/podvnet/tests/e2e/vnet"
)

// TestAgentCapabilities holds the capability list docs/operations.md
// gives: the agent serves pods with CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN
// alone on a node whose bpffs is mounted (systemd mounts /sys/fs/bpf), and
// needs CAP_SYS_ADMIN only to mount one. Each capability left out fails
// the way the docs say. The agent runs as root with its bounding set cut
// down, as a container runtime runs a container's process.
func TestAgentCapabilities(t *testing.T) {
	tests := []struct {
		name     string
		caps     []string
		premount bool   // a bpffs is already mounted at the pin root
		wantErr  string // "" means pods are served
	}{
		{name: "documented set", caps: []string{"bpf", "perfmon", "net_admin"}, premount: true},
		{name: "no bpffs yet", caps: []string{"bpf", "perfmon", "net_admin", "sys_admin"}},
		{name: "no bpffs, no sys_admin", caps: []string{"bpf", "perfmon", "net_admin"}, wantErr: "mount bpffs at"},
		{name: "no perfmon", caps: []string{"bpf", "net_admin"}, premount: true, wantErr: "prohibited for !root"},
		{name: "no net_admin", caps: []string{"bpf", "perfmon"}, premount: true, wantErr: "load program: operation not permitted"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The agent the nodes start is a wrapper that drops every
			// capability but tt.caps; the plugin runs with the runtime's.
			dir := t.TempDir()
			wrapper := fmt.Sprintf("#!/bin/sh\nexec setpriv --bounding-set -all,+%s --inh-caps -all -- %s \"$@\"\n",
				strings.Join(tt.caps, ",+"), filepath.Join(binDir, "podvnet-agent"))
			if err := os.WriteFile(filepath.Join(dir, "podvnet-agent"), []byte(wrapper), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(filepath.Join(binDir, "podvnet"), filepath.Join(dir, "podvnet")); err != nil {
				t.Fatal(err)
			}
			v := newVNet(t, vnet.Options{Nodes: 1, PerNode: 4, BinDir: dir})
			n := v.Nodes[0]
			if tt.premount {
				if err := unix.Mount("bpffs", n.BPFFS, "bpf", 0, "mode=0700"); err != nil {
					t.Fatal(err)
				}
			}
			err := n.StartAgent()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("agent with %v: %v, want it to fail with %q", tt.caps, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			a, b := addPod(t, n, "a"), addPod(t, n, "b")
			if _, err := b.EchoServer(echoPort); err != nil {
				t.Fatal(err)
			}
			if _, err := vnet.TCPEcho(a, b.IP, echoPort, 64<<10, 10*time.Second); err != nil {
				t.Fatal(err)
			}
			if err := a.Del(); err != nil {
				t.Fatal(err)
			}
		})
	}
}
