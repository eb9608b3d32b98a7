package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"
)

// ErrPoolExhausted means no address can be handed out now.
var ErrPoolExhausted = errors.New("address pool exhausted")

// Key identifies one pod attachment, as the CNI spec does.
type Key struct {
	Network     string `json:"network"`
	ContainerID string `json:"container_id"`
	IfName      string `json:"ifname"`
}

func (k Key) String() string { return k.Network + "/" + k.ContainerID + "/" + k.IfName }

// Owner describes who holds an address and where it is plugged in, so the
// agent can rebuild the data path after a restart and `debug` can name pods.
type Owner struct {
	PodNamespace string `json:"pod_namespace,omitempty"`
	PodName      string `json:"pod_name,omitempty"`
	PodUID       string `json:"pod_uid,omitempty"`
	Netns        string `json:"netns,omitempty"`
	HostIfName   string `json:"host_ifname,omitempty"`
	PodMAC       string `json:"pod_mac,omitempty"`
	// Shaped: tc shapes the pod's traffic, which stays on the kernel path.
	Shaped bool `json:"shaped,omitempty"`
}

// Allocation is an address held by a key.
type Allocation struct {
	IP netip.Addr `json:"ip"`
	Key
	Owner
	Since time.Time `json:"since"`
}

// Cooling is a released address that is not handed out again until Until,
// so that peers forget the old pod first (conntrack, caches, ARP).
type Cooling struct {
	IP    netip.Addr `json:"ip"`
	Until time.Time  `json:"until"`
}

// Options tune an Allocator.
type Options struct {
	MaxPods  int           // upper bound of allocations; <= 0 means the pool size
	Cooldown time.Duration // how long a released address rests
	Now      func() time.Time
}

// Allocator hands out the pool's secondary IPs. It is safe for concurrent use.
type Allocator struct {
	mu      sync.Mutex
	pool    Pool
	opts    Options
	store   Store
	byKey   map[Key]Allocation
	byIP    map[netip.Addr]Key
	cooling map[netip.Addr]time.Time
}

// NewAllocator loads the stored state and records the pool in it.
// Allocations of addresses the pool no longer lists are kept (a pod still
// uses them) but never handed out again: see Withdrawn.
func NewAllocator(pool Pool, store Store, opts Options) (*Allocator, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if err := pool.Validate(); err != nil {
		return nil, fmt.Errorf("pool: %w", err)
	}
	st, err := store.Load()
	if err != nil {
		return nil, err
	}
	a := &Allocator{
		pool:    pool,
		opts:    opts,
		store:   store,
		byKey:   map[Key]Allocation{},
		byIP:    map[netip.Addr]Key{},
		cooling: map[netip.Addr]time.Time{},
	}
	for _, al := range st.Allocations {
		a.byKey[al.Key] = al
		a.byIP[al.IP] = al.Key
	}
	for _, c := range st.Cooling {
		a.cooling[c.IP] = c.Until
	}
	// Writing at once records the pool for `debug ipam` and proves the
	// state directory is writable before the first ADD depends on it.
	if err := a.save(); err != nil {
		return nil, err
	}
	return a, nil
}

// Limit is the most pods this node takes: min(max pods, secondary IPs).
func (a *Allocator) Limit() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.limit()
}

func (a *Allocator) limit() int {
	n := len(a.pool.Secondary)
	if a.opts.MaxPods > 0 && a.opts.MaxPods < n {
		n = a.opts.MaxPods
	}
	return n
}

// Pool returns the pool in use.
func (a *Allocator) Pool() Pool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.pool
}

// Allocate returns the key's address, allocating one if it has none.
// Asking again with the same key returns the same address. The allocation
// is durable before Allocate returns.
func (a *Allocator) Allocate(k Key, o Owner) (Allocation, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if al, ok := a.byKey[k]; ok {
		return al, nil
	}
	now := a.opts.Now()
	ip, ok := netip.Addr{}, false
	if a.opts.MaxPods <= 0 || len(a.byKey) < a.opts.MaxPods {
		ip, ok = a.pick(now)
	}
	if !ok {
		return Allocation{}, a.exhausted(now)
	}
	al := Allocation{IP: ip, Key: k, Owner: o, Since: now.UTC()}
	a.byKey[k] = al
	a.byIP[ip] = k
	delete(a.cooling, ip)
	if err := a.save(); err != nil {
		delete(a.byKey, k)
		delete(a.byIP, ip)
		return Allocation{}, err
	}
	return al, nil
}

// pick returns the first pool address that is free and not cooling down.
func (a *Allocator) pick(now time.Time) (netip.Addr, bool) {
	for _, ip := range a.pool.Secondary {
		if used, cooling := a.state(ip, now); !used && !cooling {
			return ip, true
		}
	}
	return netip.Addr{}, false
}

// state says whether a key holds ip and whether ip still cools down at now
// after its last release.
func (a *Allocator) state(ip netip.Addr, now time.Time) (used, cooling bool) {
	_, used = a.byIP[ip]
	until, ok := a.cooling[ip]
	return used, ok && now.Before(until)
}

// exhausted explains why nothing can be handed out, naming the node's limit
// so that whoever reads the pod's events knows what to change.
func (a *Allocator) exhausted(now time.Time) error {
	maxPods := "unset"
	if a.opts.MaxPods > 0 {
		maxPods = strconv.Itoa(a.opts.MaxPods)
	}
	msg := fmt.Sprintf("this node's limit is %d pods (the smaller of --max-pods %s and %d secondary IPs) and %d are in use",
		a.limit(), maxPods, len(a.pool.Secondary), len(a.byKey))
	if n := a.coolingInPool(now); n > 0 {
		msg += fmt.Sprintf("; %d more were released less than %s ago and are reused after that: retry shortly", n, a.opts.Cooldown)
	}
	return fmt.Errorf("%w: %s", ErrPoolExhausted, msg)
}

func (a *Allocator) coolingInPool(now time.Time) int {
	n := 0
	for _, ip := range a.pool.Secondary {
		if used, cooling := a.state(ip, now); !used && cooling {
			n++
		}
	}
	return n
}

// Release frees the key's address (it cools down before reuse) and returns
// what was released. Releasing an unknown key is not an error.
func (a *Allocator) Release(k Key) (Allocation, bool, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	al, ok := a.byKey[k]
	if !ok {
		return Allocation{}, false, nil
	}
	delete(a.byKey, k)
	delete(a.byIP, al.IP)
	prev, hadPrev := a.cooling[al.IP]
	a.cooling[al.IP] = a.opts.Now().Add(a.opts.Cooldown).UTC()
	if err := a.save(); err != nil {
		a.byKey[k] = al
		a.byIP[al.IP] = k
		if hadPrev {
			a.cooling[al.IP] = prev
		} else {
			delete(a.cooling, al.IP)
		}
		return Allocation{}, false, err
	}
	return al, true, nil
}

// Get returns the allocation of a key.
func (a *Allocator) Get(k Key) (Allocation, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	al, ok := a.byKey[k]
	return al, ok
}

// List returns every allocation, sorted by IP.
func (a *Allocator) List() []Allocation {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]Allocation, 0, len(a.byKey))
	for _, al := range a.byKey {
		out = append(out, al)
	}
	slices.SortFunc(out, func(x, y Allocation) int { return x.IP.Compare(y.IP) })
	return out
}

// Allocated is how many addresses pods hold: what STATUS and every metrics
// scrape read, without List's copy and sort.
func (a *Allocator) Allocated() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.byKey)
}

// Free is how many more pods fit now (not counting cooling addresses).
func (a *Allocator) Free() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.opts.Now()
	free := 0
	for _, ip := range a.pool.Secondary {
		if used, cooling := a.state(ip, now); !used && !cooling {
			free++
		}
	}
	if a.opts.MaxPods > 0 {
		free = min(free, a.opts.MaxPods-len(a.byKey))
	}
	return max(free, 0)
}

// ErrPoolIdentity means a new pool is of another subnet or primary IP: the
// node's own address changed, which a refresh cannot apply under live pods.
var ErrPoolIdentity = errors.New("the node's primary IP or subnet changed")

// PoolChange is what a refresh changed.
type PoolChange struct {
	Added     []netip.Addr // new secondary IPs, handed out from now on
	Removed   []netip.Addr // free or cooling IPs no longer listed
	Withdrawn []Allocation // held IPs no longer listed: kept, never reused
}

// Empty reports whether nothing changed.
func (c PoolChange) Empty() bool {
	return len(c.Added) == 0 && len(c.Removed) == 0 && len(c.Withdrawn) == 0
}

// SetPool replaces the pool with a refreshed one. Addresses that appear are
// handed out from now on. An address that disappears while a pod holds it
// stays that pod's (the pod is not broken by the agent) but is never handed
// out again once released, unless the pool lists it again.
func (a *Allocator) SetPool(p Pool) (PoolChange, error) {
	if err := p.Validate(); err != nil {
		return PoolChange{}, fmt.Errorf("refreshed pool: %w", err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if p.Primary != a.pool.Primary || p.Subnet.Masked() != a.pool.Subnet.Masked() {
		return PoolChange{}, fmt.Errorf("%w: %s in %s became %s in %s; restart the agent",
			ErrPoolIdentity, a.pool.Primary, a.pool.Subnet, p.Primary, p.Subnet)
	}
	var ch PoolChange
	was := make(map[netip.Addr]bool, len(a.pool.Secondary))
	for _, ip := range a.pool.Secondary {
		was[ip] = true
	}
	is := make(map[netip.Addr]bool, len(p.Secondary))
	for _, ip := range p.Secondary {
		is[ip] = true
		if !was[ip] {
			ch.Added = append(ch.Added, ip)
		}
	}
	for _, ip := range a.pool.Secondary {
		if is[ip] {
			continue
		}
		if k, held := a.byIP[ip]; held {
			ch.Withdrawn = append(ch.Withdrawn, a.byKey[k])
		} else {
			ch.Removed = append(ch.Removed, ip)
		}
	}
	if ch.Empty() {
		return ch, nil
	}
	prev := a.pool
	a.pool = p
	if err := a.save(); err != nil {
		a.pool = prev
		return PoolChange{}, err
	}
	return ch, nil
}

// Withdrawn lists allocations whose address the pool no longer lists,
// sorted by IP: their pods keep them, but the fabric may no longer route
// them to this node.
func (a *Allocator) Withdrawn() []Allocation {
	a.mu.Lock()
	defer a.mu.Unlock()
	in := make(map[netip.Addr]bool, len(a.pool.Secondary))
	for _, ip := range a.pool.Secondary {
		in[ip] = true
	}
	var out []Allocation
	for ip, k := range a.byIP {
		if !in[ip] {
			out = append(out, a.byKey[k])
		}
	}
	slices.SortFunc(out, func(x, y Allocation) int { return x.IP.Compare(y.IP) })
	return out
}

// save persists the current state. Expired cooldowns are dropped here.
func (a *Allocator) save() error {
	now := a.opts.Now()
	st := &State{
		Version:     StateVersion,
		Pool:        &PoolState{Subnet: a.pool.Subnet, Primary: a.pool.Primary, Secondary: append([]netip.Addr{}, a.pool.Secondary...)},
		Allocations: make([]Allocation, 0, len(a.byKey)),
		Cooling:     []Cooling{},
	}
	for _, al := range a.byKey {
		st.Allocations = append(st.Allocations, al)
	}
	slices.SortFunc(st.Allocations, func(x, y Allocation) int { return x.IP.Compare(y.IP) })
	for ip, until := range a.cooling {
		if !now.Before(until) {
			delete(a.cooling, ip)
			continue
		}
		st.Cooling = append(st.Cooling, Cooling{IP: ip, Until: until})
	}
	slices.SortFunc(st.Cooling, func(x, y Cooling) int { return x.IP.Compare(y.IP) })
	if err := a.store.Save(st); err != nil {
		return fmt.Errorf("persist allocations: %w", err)
	}
	return nil
}
