package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"go.uber.org/zap/zaptest"

	"github.com/podvnet/podvnet/pkg/ipam"
)

// recordedEvents keeps every warning, as the API server would.
type recordedEvents struct {
	mu   sync.Mutex
	seen []string // "reason: message"
}

func (r *recordedEvents) Warn(reason, message string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seen = append(r.seen, reason+": "+message)
}

func (r *recordedEvents) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.seen
	r.seen = nil
	return out
}

func testPool(n int) ipam.Pool {
	p := ipam.Pool{Subnet: netip.MustParsePrefix("10.240.0.0/16"), Gateway: netip.MustParseAddr("10.240.0.1"),
		Primary: netip.MustParseAddr("10.240.0.4")}
	ip := p.Primary
	for range n {
		ip = ip.Next()
		p.Secondary = append(p.Secondary, ip)
	}
	return p
}

// poolAgent is an agent with a pool and no data path: enough for what the
// pool and the node's limits decide.
func poolAgent(t *testing.T, pool ipam.Pool, maxPods int) (*Agent, *recordedEvents) {
	t.Helper()
	alloc, err := ipam.NewAllocator(pool, ipam.FileStore{Path: filepath.Join(t.TempDir(), "ipam.json")}, ipam.Options{MaxPods: maxPods})
	if err != nil {
		t.Fatal(err)
	}
	ev := &recordedEvents{}
	return &Agent{cfg: Config{NIC: "eth0", MaxPods: maxPods, Events: ev}, log: zaptest.NewLogger(t), alloc: alloc,
		ready: NewReadiness("test")}, ev
}

// TestMaxPodsAbovePool: kubelet's max-pods (110, its default) above the
// node's 30 pod addresses is an Event naming both numbers and the fix,
// once, and again only when the numbers change or the excess comes back.
func TestMaxPodsAbovePool(t *testing.T) {
	a, ev := poolAgent(t, testPool(30), 30)
	a.SetKubeletMaxPods(110)
	got := ev.take()
	if len(got) != 1 || !strings.HasPrefix(got[0], ReasonMaxPodsAbovePool+": kubelet max-pods is 110, but this node has 30 pod addresses") ||
		!strings.Contains(got[0], "set kubelet's max-pods to 30") {
		t.Fatalf("events %q", got)
	}
	a.SetKubeletMaxPods(110) // a node update that changed something else
	if got := ev.take(); len(got) != 0 {
		t.Errorf("the same excess warned again: %q", got)
	}
	a.SetKubeletMaxPods(30)
	a.SetKubeletMaxPods(20)
	if got := ev.take(); len(got) != 0 {
		t.Errorf("warned of a max-pods within the limit: %q", got)
	}
	a.SetKubeletMaxPods(110)
	if got := ev.take(); len(got) != 1 {
		t.Errorf("the excess came back: events %q, want one", got)
	}
}

// staticSource serves a pool set by the test, or an error.
type staticSource struct {
	mu   sync.Mutex
	pool ipam.Pool
}

func (s *staticSource) set(p ipam.Pool) { s.mu.Lock(); s.pool = p; s.mu.Unlock() }
func (s *staticSource) String() string  { return "test" }
func (s *staticSource) Fetch(context.Context) (ipam.Interface, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return ipam.Interface{Pool: s.pool}, nil
}

// TestPoolLostAndBack: a refresh that lists no secondary IP, or another
// primary IP, makes the agent unready with the cause; the pool coming back
// clears it. Addresses withdrawn under pods are one Event naming them.
func TestPoolLostAndBack(t *testing.T) {
	pool := testPool(4)
	a, ev := poolAgent(t, pool, 30)
	a.ready.Set(true, "")
	held, err := a.alloc.Allocate(ipam.Key{Network: "podvnet", ContainerID: "c1", IfName: "eth0"},
		ipam.Owner{PodNamespace: "default", PodName: "web-0"})
	if err != nil {
		t.Fatal(err)
	}
	src := &staticSource{pool: pool}
	ctx := context.Background()

	empty := pool
	empty.Secondary = nil
	src.set(empty)
	a.refreshPool(ctx, src)
	if ok, reason := a.ready.Get(); ok || !strings.Contains(reason, "lists no secondary IP for NIC eth0") {
		t.Errorf("pool emptied: ready %v %q", ok, reason)
	}
	got := ev.take()
	if len(got) != 1 || !strings.HasPrefix(got[0], ReasonAddressesWithdrawn+": the pool source no longer lists "+held.IP.String()+" (default/web-0)") {
		t.Errorf("events %q", got)
	}

	src.set(pool)
	a.refreshPool(ctx, src)
	if ok, reason := a.ready.Get(); !ok {
		t.Errorf("pool back: still not ready: %q", reason)
	}

	moved := pool
	moved.Primary = netip.MustParseAddr("10.240.0.200")
	src.set(moved)
	a.refreshPool(ctx, src)
	if ok, reason := a.ready.Get(); ok || !strings.Contains(reason, "primary IP or subnet changed") {
		t.Errorf("primary IP changed: ready %v %q", ok, reason)
	}
	src.set(pool)
	a.refreshPool(ctx, src)
	if ok, reason := a.ready.Get(); !ok {
		t.Errorf("pool back: still not ready: %q", reason)
	}
}

// TestPoolExhaustedEvent: an ADD refused for lack of addresses is a
// warning that names the pod and the node's limit.
func TestPoolExhaustedEvent(t *testing.T) {
	a, ev := poolAgent(t, testPool(1), 30)
	for i := range 2 {
		_, err := a.allocate(ipam.Key{Network: "podvnet", ContainerID: fmt.Sprint("c", i), IfName: "eth0"},
			ipam.Owner{PodNamespace: "default", PodName: fmt.Sprint("web-", i)})
		if i == 1 && !errors.Is(err, ipam.ErrPoolExhausted) {
			t.Fatalf("a second pod of a one-address pool: %v", err)
		}
	}
	got := ev.take()
	if len(got) != 1 || !strings.HasPrefix(got[0], ReasonPoolExhausted+": no pod address for default/web-1: address pool exhausted: this node's limit is 1 pods") {
		t.Errorf("events %q", got)
	}
}
