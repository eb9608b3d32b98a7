package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func testPool(n int) Pool {
	p := Pool{
		Subnet:  netip.MustParsePrefix("10.240.0.0/16"),
		Gateway: netip.MustParseAddr("10.240.0.1"),
		Primary: netip.MustParseAddr("10.240.0.4"),
	}
	ip := p.Primary
	for range n {
		ip = ip.Next()
		p.Secondary = append(p.Secondary, ip)
	}
	return p
}

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newAlloc(t *testing.T, pool Pool, opts Options) (*Allocator, FileStore) {
	t.Helper()
	st := FileStore{Path: filepath.Join(t.TempDir(), "ipam.json")}
	a, err := NewAllocator(pool, st, opts)
	if err != nil {
		t.Fatal(err)
	}
	return a, st
}

func key(i int) Key {
	return Key{Network: "podvnet", ContainerID: fmt.Sprintf("c%03d", i), IfName: "eth0"}
}

func TestAllocateIsIdempotentAndDistinct(t *testing.T) {
	a, _ := newAlloc(t, testPool(30), Options{MaxPods: 30, Cooldown: 30 * time.Second})
	seen := map[netip.Addr]Key{}
	for i := range 30 {
		al, err := a.Allocate(key(i), Owner{})
		if err != nil {
			t.Fatalf("allocation %d: %v", i, err)
		}
		if al.IP == netip.MustParseAddr("10.240.0.4") {
			t.Fatal("the primary IP was handed out")
		}
		if k, dup := seen[al.IP]; dup {
			t.Fatalf("%s handed to %s and %s", al.IP, k, key(i))
		}
		seen[al.IP] = key(i)
		again, err := a.Allocate(key(i), Owner{})
		if err != nil || again.IP != al.IP {
			t.Fatalf("same key got %s then %s (%v)", al.IP, again.IP, err)
		}
	}
	_, err := a.Allocate(key(30), Owner{})
	if !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("31st allocation: %v, want ErrPoolExhausted", err)
	}
	if !strings.Contains(err.Error(), "this node's limit is 30 pods (the smaller of --max-pods 30 and 30 secondary IPs)") {
		t.Errorf("exhaustion error should name the node's limit: %v", err)
	}
}

func TestConcurrentAllocations(t *testing.T) {
	a, _ := newAlloc(t, testPool(30), Options{MaxPods: 30})
	var wg sync.WaitGroup
	ips := make([]netip.Addr, 31)
	errs := make([]error, 31)
	for i := range 31 {
		wg.Go(func() {
			al, err := a.Allocate(key(i), Owner{})
			ips[i], errs[i] = al.IP, err
		})
	}
	wg.Wait()
	seen := map[netip.Addr]bool{}
	failed := 0
	for i := range 31 {
		if errs[i] != nil {
			if !errors.Is(errs[i], ErrPoolExhausted) {
				t.Fatal(errs[i])
			}
			failed++
			continue
		}
		if seen[ips[i]] {
			t.Fatalf("%s handed out twice", ips[i])
		}
		seen[ips[i]] = true
	}
	if failed != 1 {
		t.Fatalf("%d allocations failed, want exactly 1", failed)
	}
	if n := a.Allocated(); n != 30 {
		t.Fatalf("Allocated() = %d after 30 allocations", n)
	}
}

func TestMaxPodsBelowPool(t *testing.T) {
	a, _ := newAlloc(t, testPool(30), Options{MaxPods: 2})
	for i := range 2 {
		if _, err := a.Allocate(key(i), Owner{}); err != nil {
			t.Fatal(err)
		}
	}
	_, err := a.Allocate(key(2), Owner{})
	if !errors.Is(err, ErrPoolExhausted) || !strings.Contains(err.Error(), "limit is 2 pods (the smaller of --max-pods 2 and 30 secondary IPs)") {
		t.Fatalf("got %v, want ErrPoolExhausted naming --max-pods 2", err)
	}
	if a.Limit() != 2 {
		t.Fatalf("limit %d, want 2", a.Limit())
	}
}

func TestReleasedAddressCoolsDown(t *testing.T) {
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	a, _ := newAlloc(t, testPool(2), Options{Cooldown: 30 * time.Second, Now: c.now})
	first, _ := a.Allocate(key(0), Owner{})
	if _, ok, err := a.Release(key(0)); !ok || err != nil {
		t.Fatalf("release: %v %v", ok, err)
	}
	second, _ := a.Allocate(key(1), Owner{})
	if second.IP == first.IP {
		t.Fatalf("%s reused right after release", first.IP)
	}
	// The only other address is taken and first is cooling: nothing to give.
	_, err := a.Allocate(key(2), Owner{})
	if !errors.Is(err, ErrPoolExhausted) || !strings.Contains(err.Error(), "1 more were released less than 30s ago") {
		t.Fatalf("got %v, want ErrPoolExhausted saying an address is cooling", err)
	}
	c.t = c.t.Add(31 * time.Second)
	third, err := a.Allocate(key(2), Owner{})
	if err != nil || third.IP != first.IP {
		t.Fatalf("after the cooldown got %s (%v), want %s", third.IP, err, first.IP)
	}
}

func TestReleaseUnknownKey(t *testing.T) {
	a, _ := newAlloc(t, testPool(2), Options{})
	if _, ok, err := a.Release(key(9)); ok || err != nil {
		t.Fatalf("release of unknown key: %v %v", ok, err)
	}
}

func TestStateSurvivesRestart(t *testing.T) {
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	a, st := newAlloc(t, testPool(4), Options{Cooldown: time.Minute, Now: c.now})
	kept, _ := a.Allocate(key(0), Owner{PodNamespace: "default", PodName: "web-0"})
	gone, _ := a.Allocate(key(1), Owner{})
	a.Release(key(1))

	b, err := NewAllocator(testPool(4), st, Options{Cooldown: time.Minute, Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	al, ok := b.Get(key(0))
	if !ok || al.IP != kept.IP || al.PodName != "web-0" {
		t.Fatalf("after restart: %+v %v, want %s held by web-0", al, ok, kept.IP)
	}
	next, _ := b.Allocate(key(2), Owner{})
	if next.IP == kept.IP || next.IP == gone.IP {
		t.Fatalf("after restart %s was handed out again (held: %s, cooling: %s)", next.IP, kept.IP, gone.IP)
	}
}

func TestCorruptStateStopsAndIsKept(t *testing.T) {
	for name, content := range map[string]string{
		"truncated":            `{"version":1,"allocations":[{"ip":"10.240.0.5","net`,
		"newer version":        `{"version":3,"allocations":[],"cooling":[]}`,
		"no version":           `{"allocations":[],"cooling":[]}`,
		"empty file":           ``,
		"unknown field":        `{"version":2,"allocations":[],"cooling":[],"leases":[]}`,
		"trailing data":        `{"version":2,"allocations":[],"cooling":[]}{}`,
		"pool without primary": `{"version":2,"pool":{"subnet":"10.240.0.0/16","secondary":[]},"allocations":[],"cooling":[]}`,
		"garbage":              "\x00\x01not json",
		"duplicate ip": `{"version":1,"allocations":[
			{"ip":"10.240.0.5","network":"n","container_id":"a","ifname":"eth0","since":"2026-01-01T00:00:00Z"},
			{"ip":"10.240.0.5","network":"n","container_id":"b","ifname":"eth0","since":"2026-01-01T00:00:00Z"}],"cooling":[]}`,
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "ipam.json")
			os.WriteFile(path, []byte(content), 0o600)
			_, err := NewAllocator(testPool(4), FileStore{Path: path}, Options{})
			if !errors.Is(err, ErrCorruptState) {
				t.Fatalf("got %v, want ErrCorruptState", err)
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("error must name the file: %v", err)
			}
			if b, _ := os.ReadFile(path); string(b) != content {
				t.Error("the corrupt file was changed")
			}
		})
	}
}

// failingStore fails every Save once broken is set.
type failingStore struct {
	FileStore
	broken bool
}

func (f *failingStore) Save(s *State) error {
	if f.broken {
		return errors.New("disk full")
	}
	return f.FileStore.Save(s)
}

func TestFailedSaveLosesNothing(t *testing.T) {
	st := &failingStore{FileStore: FileStore{Path: filepath.Join(t.TempDir(), "ipam.json")}}
	a, err := NewAllocator(testPool(2), st, Options{Cooldown: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	held, err := a.Allocate(key(0), Owner{})
	if err != nil {
		t.Fatal(err)
	}
	st.broken = true
	if _, err := a.Allocate(key(1), Owner{}); err == nil || !strings.Contains(err.Error(), "persist allocations: disk full") {
		t.Fatalf("allocation not persisted: got %v, want the save error", err)
	}
	if _, ok := a.Get(key(1)); ok {
		t.Fatal("an allocation that was not persisted is held in memory")
	}
	if _, _, err := a.Release(key(0)); err == nil {
		t.Fatal("release succeeded although it could not be persisted")
	}
	if al, ok := a.Get(key(0)); !ok || al.IP != held.IP {
		t.Fatal("a release that was not persisted took effect in memory")
	}
	if _, err := a.SetPool(testPool(3)); err == nil {
		t.Fatal("pool change succeeded although it could not be persisted")
	}
	if len(a.Pool().Secondary) != 2 {
		t.Fatal("a pool change that was not persisted took effect in memory")
	}
}

func TestUnwritableStateDirStopsStart(t *testing.T) {
	dir := t.TempDir()
	// A file where the state directory should be.
	os.WriteFile(filepath.Join(dir, "sub"), nil, 0o600)
	_, err := NewAllocator(testPool(2), FileStore{Path: filepath.Join(dir, "sub", "ipam.json")}, Options{})
	if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "sub")) {
		t.Fatalf("got %v, want an error naming the state directory", err)
	}
}

// TestReadsVersion1State reads what the first agent wrote (no pool).
func TestReadsVersion1State(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ipam.json")
	os.WriteFile(path, []byte(`{"version":1,"allocations":[
		{"ip":"10.240.0.6","network":"podvnet","container_id":"c000","ifname":"eth0","pod_name":"web-0","since":"2026-01-01T00:00:00Z"}],
		"cooling":[{"ip":"10.240.0.5","until":"2999-01-01T00:00:00Z"}]}`), 0o600)
	a, err := NewAllocator(testPool(3), FileStore{Path: path}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if al, ok := a.Get(key(0)); !ok || al.IP.String() != "10.240.0.6" || al.PodName != "web-0" {
		t.Fatalf("version 1 allocation not kept: %+v", al)
	}
	next, err := a.Allocate(key(1), Owner{})
	if err != nil || next.IP.String() != "10.240.0.7" {
		t.Fatalf("got %s (%v), want 10.240.0.7: .5 cools, .6 is held", next.IP, err)
	}
	st, err := FileStore{Path: path}.Load()
	if err != nil {
		t.Fatal(err)
	}
	if st.Version != StateVersion || st.Pool == nil || len(st.Pool.Secondary) != 3 {
		t.Fatalf("state not rewritten as version %d with the pool: %+v", StateVersion, st)
	}
}

func TestParseStaticPool(t *testing.T) {
	tests := []struct {
		name, doc, wantErr string
	}{
		{"ok", `{"subnet":"10.240.0.0/16","gateway":"10.240.0.1","primary":"10.240.0.4","secondary":["10.240.0.5","10.240.0.6"]}`, ""},
		{"no subnet", `{"primary":"10.240.0.4"}`, `"subnet" is missing`},
		{"bad subnet", `{"subnet":"10.240.0.0/33","primary":"10.240.0.4"}`, `"subnet"`},
		{"primary outside", `{"subnet":"10.240.0.0/16","primary":"10.1.0.4"}`, "primary 10.1.0.4: outside subnet 10.240.0.0/16"},
		{"secondary is primary", `{"subnet":"10.240.0.0/16","primary":"10.240.0.4","secondary":["10.240.0.4"]}`, "is the primary"},
		{"duplicate", `{"subnet":"10.240.0.0/16","primary":"10.240.0.4","secondary":["10.240.0.5","10.240.0.5"]}`, "listed twice"},
		{"bad secondary", `{"subnet":"10.240.0.0/16","primary":"10.240.0.4","secondary":["10.240.0.5","x"]}`, `"secondary"[1]`},
		{"not json", `{`, "parse JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseStaticPool([]byte(tt.doc))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}
