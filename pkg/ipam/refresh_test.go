package ipam

import (
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"
)

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

// fill allocates until the pool is exhausted and returns what was handed out.
func fill(t *testing.T, a *Allocator, from int) []netip.Addr {
	t.Helper()
	var got []netip.Addr
	for i := from; ; i++ {
		al, err := a.Allocate(key(i), Owner{})
		if errors.Is(err, ErrPoolExhausted) {
			return got
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, al.IP)
	}
}

func TestRefreshAddsAndRemoves(t *testing.T) {
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	a, st := newAlloc(t, testPool(3), Options{MaxPods: 30, Cooldown: time.Minute, Now: c.now}) // .5 .6 .7
	held, _ := a.Allocate(key(0), Owner{PodName: "web-0"})                                     // .5

	next := testPool(0)
	next.Secondary = addrs("10.240.0.6", "10.240.0.8", "10.240.0.9") // .5 (held) and .7 go, .8 .9 come
	ch, err := a.SetPool(next)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ch.Added, addrs("10.240.0.8", "10.240.0.9")) || !slices.Equal(ch.Removed, addrs("10.240.0.7")) {
		t.Fatalf("change = %+v, want .8 .9 added and .7 removed", ch)
	}
	if len(ch.Withdrawn) != 1 || ch.Withdrawn[0].IP != held.IP || ch.Withdrawn[0].PodName != "web-0" {
		t.Fatalf("withdrawn = %+v, want %s of web-0", ch.Withdrawn, held.IP)
	}
	// The pod keeps its address: the agent does not break a running pod.
	if al, ok := a.Get(key(0)); !ok || al.IP != held.IP {
		t.Fatalf("the pod holding a withdrawn address lost it: %+v %v", al, ok)
	}
	if w := a.Withdrawn(); len(w) != 1 || w[0].IP != held.IP {
		t.Fatalf("Withdrawn() = %+v, want %s", w, held.IP)
	}
	if _, _, err := a.Release(key(0)); err != nil {
		t.Fatal(err)
	}
	c.t = c.t.Add(time.Hour) // no cooldown left to hide a reuse
	got := fill(t, a, 1)
	if !slices.Equal(got, addrs("10.240.0.6", "10.240.0.8", "10.240.0.9")) {
		t.Fatalf("handed out %v, want exactly the new pool .6 .8 .9 (never the withdrawn .5 or removed .7)", got)
	}
	if len(a.Withdrawn()) != 0 {
		t.Fatalf("released address still reported withdrawn: %+v", a.Withdrawn())
	}

	// The change is durable: a restarted agent's debug view shows the new pool.
	s, err := st.Load()
	if err != nil {
		t.Fatal(err)
	}
	if s.Pool == nil || !slices.Equal(s.Pool.Secondary, next.Secondary) {
		t.Fatalf("persisted pool = %+v, want %v", s.Pool, next.Secondary)
	}
}

func TestRefreshUnchanged(t *testing.T) {
	a, _ := newAlloc(t, testPool(3), Options{})
	ch, err := a.SetPool(testPool(3))
	if err != nil || !ch.Empty() {
		t.Fatalf("same pool: %+v %v, want no change", ch, err)
	}
}

func TestRefreshGrowsTheLimit(t *testing.T) {
	a, _ := newAlloc(t, testPool(0), Options{MaxPods: 30})
	if _, err := a.Allocate(key(0), Owner{}); !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("a NIC with no secondary IPs handed one out: %v", err)
	}
	if _, err := a.SetPool(testPool(2)); err != nil {
		t.Fatal(err)
	}
	if a.Limit() != 2 || a.Free() != 2 {
		t.Fatalf("limit %d free %d after 2 IPs appeared, want 2 and 2", a.Limit(), a.Free())
	}
	if got := fill(t, a, 0); len(got) != 2 {
		t.Fatalf("handed out %v, want the 2 new addresses", got)
	}
}

func TestRefreshRefusesAnotherNode(t *testing.T) {
	other := testPool(3)
	other.Primary = netip.MustParseAddr("10.240.0.100")
	otherSubnet := testPool(3)
	otherSubnet.Subnet = netip.MustParsePrefix("10.0.0.0/8")
	broken := testPool(3)
	broken.Secondary = append(broken.Secondary, broken.Primary)
	for name, p := range map[string]Pool{"primary": other, "subnet": otherSubnet, "invalid": broken} {
		t.Run(name, func(t *testing.T) {
			a, _ := newAlloc(t, testPool(3), Options{})
			if _, err := a.SetPool(p); err == nil {
				t.Fatal("refresh accepted a pool of another primary IP, subnet or an invalid one")
			}
			if !samePool(a.Pool(), testPool(3)) {
				t.Fatalf("pool changed to %+v", a.Pool())
			}
		})
	}
}

// TestWithdrawnAtStart: an address the fabric dropped while the agent was
// down is reported and kept by its pod.
func TestWithdrawnAtStart(t *testing.T) {
	a, st := newAlloc(t, testPool(3), Options{})
	held, _ := a.Allocate(key(0), Owner{})
	b, err := NewAllocator(testPool(0), st, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if w := b.Withdrawn(); len(w) != 1 || w[0].IP != held.IP {
		t.Fatalf("Withdrawn() = %+v, want %s", w, held.IP)
	}
	if _, err := b.Allocate(key(1), Owner{}); !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("got %v, want ErrPoolExhausted: the pool is empty", err)
	}
}
