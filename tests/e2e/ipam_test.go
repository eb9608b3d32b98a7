package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/podvnet/podvnet/pkg/ipam"
	"github.com/podvnet/podvnet/tests/e2e/vnet"
)

// ipamRow is one row of `debug ipam -o json`.
type ipamRow struct {
	IP    string `json:"ip"`
	State string `json:"state"`
}

func debugIPAM(t *testing.T, n *vnet.Node) map[string]string {
	t.Helper()
	out, err := n.Debug("ipam", "--state-dir", n.Paths().StateDir, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var rows []ipamRow
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("debug ipam -o json: %v\n%s", err, out)
	}
	m := map[string]string{}
	for _, r := range rows {
		m[r.IP] = r.State
	}
	return m
}

// TestPoolFromFabric: the agents learn their pools from a fake NMAgent or
// IMDS in the simulated VNet (through throttling and a server error, with
// a decoy NIC in the document), hand out only those IPs, pick up an IP
// added to the NIC, and never hand out again an IP withdrawn while a pod
// held it.
func TestPoolFromFabric(t *testing.T) {
	for _, source := range []string{"nmagent", "imds"} {
		t.Run(source, func(t *testing.T) {
			v := newVNet(t, vnet.Options{PerNode: 3, IPAMSource: source, AgentArgs: []string{"--pool-refresh", "100ms"}})
			v.Metadata.FailNext(http.StatusTooManyRequests, http.StatusServiceUnavailable)
			startAgents(t, v)
			if v.Metadata.Answered(http.StatusTooManyRequests) != 1 || v.Metadata.Answered(http.StatusServiceUnavailable) != 1 {
				t.Fatal("the agents did not meet the injected 429 and 503")
			}
			if got := v.Metadata.Answered(http.StatusBadRequest); got != 0 {
				t.Fatalf("%d requests refused for a missing Metadata header", got)
			}
			var logs []byte
			for _, n := range v.Nodes {
				b, _ := os.ReadFile(n.AgentLog())
				logs = append(logs, b...)
			}
			if c := bytes.Count(logs, []byte("pool source not answering; retrying")); c != 2 {
				t.Fatalf("the agents logged %d retries, want 2 (after the 429 and the 503)", c)
			}

			n1, n2 := v.Nodes[0], v.Nodes[1]
			a := addPod(t, n1, "a")
			c := addPod(t, n2, "c")
			for _, p := range []*vnet.Pod{a, c} {
				if !slices.Contains(v.Metadata.Secondary(p.Node), p.IP) {
					t.Fatalf("%s got %s, not one of the IPs the fabric lists for %s: %v", p.Name, p.IP, p.Node.Name, v.Metadata.Secondary(p.Node))
				}
			}
			if _, err := c.EchoServer(echoPort); err != nil {
				t.Fatal(err)
			}
			if _, err := vnet.TCPEcho(a, c.IP, echoPort, 64<<10, 10*time.Second); err != nil {
				t.Fatal(err)
			}

			// The NIC loses a's IP and gains a new one.
			added := netip.MustParseAddr("10.240.200.1")
			var next []netip.Addr
			for _, ip := range n1.Pool.Secondary {
				if ip != a.IP {
					next = append(next, ip)
				}
			}
			next = append(next, added)
			v.Metadata.SetSecondary(n1, next)
			if !eventually(30*time.Second, func() bool {
				st := debugIPAM(t, n1)
				return st[added.String()] == "free" && st[a.IP.String()] == "withdrawn"
			}) {
				t.Fatal("timed out waiting for the refresh to show the change in debug ipam")
			}
			logb, _ := os.ReadFile(n1.AgentLog())
			if !bytes.Contains(logb, []byte("pod holds an IP the pool no longer lists")) || !bytes.Contains(logb, []byte(a.IP.String())) {
				t.Fatalf("the agent log does not report %s as withdrawn", a.IP)
			}

			if err := a.Del(); err != nil {
				t.Fatal(err)
			}
			if st := debugIPAM(t, n1); st[a.IP.String()] != "" {
				t.Fatalf("released withdrawn %s still listed as %q", a.IP, st[a.IP.String()])
			}
			var got []netip.Addr
			for i := 0; ; i++ {
				p, err := n1.AddPod(fmt.Sprintf("f%d", i))
				if err != nil {
					if !strings.Contains(err.Error(), "this node's limit is 3 pods") {
						t.Fatalf("exhaustion error does not name the node's limit: %v", err)
					}
					break
				}
				got = append(got, p.IP)
			}
			slices.SortFunc(got, netip.Addr.Compare)
			if !slices.Equal(got, next) {
				t.Fatalf("node1 handed out %v, want exactly the fabric's %v (never the withdrawn %s)", got, next, a.IP)
			}
		})
	}
}

// TestAgentKilledDuringAddBurst: SIGKILL of the agent while 30 ADDs run in
// parallel loses no allocation that was answered, never gives one IP to
// two pods, and the restarted agent reconciles the half-done ADDs.
func TestAgentKilledDuringAddBurst(t *testing.T) {
	const pods = 30
	v := newVNet(t, vnet.Options{Nodes: 1, PerNode: 60})
	startAgents(t, v)
	n := v.Nodes[0]
	statePath := n.Paths().StateFile()

	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := map[string]netip.Addr{} // container ID -> IP of each ADD that succeeded
	failed := 0
	for i := range pods {
		wg.Go(func() {
			// What counts is ADD's answer to the runtime; the attach that
			// follows it may be cut by the kill (reconcile redoes it).
			p, err := n.AddPodWith(fmt.Sprintf("p%02d", i), vnet.PodOptions{NoWaitAttached: true})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed++
				return
			}
			ok[p.ContainerID] = p.IP
		})
	}
	// Kill once a third of the pods are durable: the burst is on, some ADDs
	// are answered and others are in flight.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(2 * time.Millisecond) {
		st, err := ipam.FileStore{Path: statePath}.Load()
		if err == nil && len(st.Allocations) >= pods/3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("timed out waiting for the burst's allocations")
		}
	}
	n.StopAgent(syscall.SIGKILL)
	wg.Wait()
	t.Logf("%d ADDs answered before or despite the kill, %d failed", len(ok), failed)
	assertDistinct(t, ok)

	if err := n.StartAgent(); err != nil {
		t.Fatal(err)
	}
	st := loadState(t, n)
	held := map[string]netip.Addr{}
	for _, al := range st.Allocations {
		held[al.ContainerID] = al.IP
	}
	for id, ip := range ok {
		if held[id] != ip {
			t.Errorf("pod %s was answered %s; after the restart the state holds %v", id[:12], ip, held[id])
		}
	}
	if len(held) != len(ok) {
		t.Errorf("after reconcile %d allocations, want the %d answered ones (failed ADDs released)", len(held), len(ok))
	}
	logb, _ := os.ReadFile(n.AgentLog())
	if !bytes.Contains(logb, fmt.Appendf(nil, `"kept": %d`, len(ok))) {
		t.Errorf("the restarted agent did not log its reconcile result (kept %d)", len(ok))
	}

	// The runtime retries the failed pods with new sandboxes.
	for i := range failed {
		p, err := n.AddPod(fmt.Sprintf("r%02d", i))
		if err != nil {
			t.Fatal(err)
		}
		ok[p.ContainerID] = p.IP
	}
	assertDistinct(t, ok)
	if len(ok) != pods {
		t.Fatalf("%d pods have an IP, want %d", len(ok), pods)
	}
}

func assertDistinct(t *testing.T, byPod map[string]netip.Addr) {
	t.Helper()
	seen := map[netip.Addr]string{}
	for id, ip := range byPod {
		if other, dup := seen[ip]; dup {
			t.Fatalf("%s handed to pods %s and %s", ip, other[:12], id[:12])
		}
		seen[ip] = id
	}
}

// TestTruncatedStateStopsAgent: a state file cut short (as by a disk that
// lied about fsync) stops the agent with a message naming the file; the
// file is kept and the running pods keep their data path.
func TestTruncatedStateStopsAgent(t *testing.T) {
	v := newVNet(t, vnet.Options{Nodes: 1, PerNode: 4})
	startAgents(t, v)
	n := v.Nodes[0]
	a := addPod(t, n, "a")
	b := addPod(t, n, "b")
	if _, err := b.EchoServer(echoPort); err != nil {
		t.Fatal(err)
	}
	n.StopAgent(syscall.SIGKILL)

	path := n.Paths().StateFile()
	full, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cut := full[:len(full)/2]
	if err := os.WriteFile(path, cut, 0o600); err != nil {
		t.Fatal(err)
	}
	err = n.StartAgent()
	if err == nil {
		t.Fatal("the agent started on a truncated state file")
	}
	for _, want := range []string{"state file " + path, "corrupt", "kept as is"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the agent's error does not say %q:\n%v", want, err)
		}
	}
	if now, _ := os.ReadFile(path); !bytes.Equal(now, cut) {
		t.Fatal("the truncated state file was changed")
	}
	out, err := n.Debug("endpoints", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []*vnet.Pod{a, b} {
		if !strings.Contains(out, `"`+p.IP.String()+`"`) {
			t.Errorf("endpoint %s was removed:\n%s", p.IP, out)
		}
	}
	if _, err := vnet.TCPEcho(a, b.IP, echoPort, 64<<10, 10*time.Second); err != nil {
		t.Fatalf("pods lost their data path: %v", err)
	}
}
