package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRunRefusesBadBlockedEndpoints: a bad entry stops `run` before it
// touches the node, with an error naming the entry.
func TestRunRefusesBadBlockedEndpoints(t *testing.T) {
	pool := filepath.Join(t.TempDir(), "pool.json")
	os.WriteFile(pool, []byte(`{"subnet":"10.240.0.0/16","gateway":"10.240.0.1","primary":"10.240.0.4","secondary":["10.240.0.5"]}`), 0o600)
	// No metrics endpoint: a test must not take a port of the root namespace.
	base := []string{"run", "--ipam-source", "static", "--pool-file", pool, "--state-dir", t.TempDir(), "--log-level", "error", "--metrics-addr", ""}
	for list, want := range map[string]string{
		"168.63.129.16:80/tcp,168.63.129.16:32526": `--blocked-endpoints: entry "168.63.129.16:32526": want ADDR:PORT/PROTO`,
		"168.63.129.16:80/icmp":                    `--blocked-endpoints: entry "168.63.129.16:80/icmp": protocol "icmp"`,
		"wireserver:80/tcp":                        `entry "wireserver:80/tcp": "wireserver" is not an IPv4 address`,
		"168.63.129.16:80/tcp,168.63.129.16:0/tcp": `entry "168.63.129.16:0/tcp": port "0": want 1 to 65535`,
	} {
		t.Run(list, func(t *testing.T) {
			_, err := runCLI(t, append(base, "--blocked-endpoints", list)...)
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("got %v, want an error containing %q", err, want)
			}
		})
	}
}
