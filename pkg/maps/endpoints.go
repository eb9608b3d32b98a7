package maps

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/cilium/ebpf"
)

// Endpoints is the pod IP -> Endpoint hash map.
type Endpoints struct{ m *ebpf.Map }

// NewEndpoints wraps an opened endpoints map.
func NewEndpoints(m *ebpf.Map) *Endpoints { return &Endpoints{m: m} }

// EndpointEntry is one row of the endpoints map.
type EndpointEntry struct {
	IP netip.Addr
	Endpoint
}

func keyOf(ip netip.Addr) (EndpointKey, error) {
	if !ip.Is4() {
		return EndpointKey{}, fmt.Errorf("endpoint key %s: not an IPv4 address", ip)
	}
	return EndpointKey{IP: ip.As4()}, nil
}

// Put inserts or replaces the endpoint for ip.
func (e *Endpoints) Put(ip netip.Addr, ep Endpoint) error {
	k, err := keyOf(ip)
	if err != nil {
		return err
	}
	if err := e.m.Put(&k, &ep); err != nil {
		return fmt.Errorf("put endpoint %s: %w", ip, err)
	}
	return nil
}

// Delete removes the endpoint for ip; a missing entry is not an error.
func (e *Endpoints) Delete(ip netip.Addr) error {
	k, err := keyOf(ip)
	if err != nil {
		return err
	}
	if err := e.m.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete endpoint %s: %w", ip, err)
	}
	return nil
}

// Get returns the endpoint for ip and whether it exists.
func (e *Endpoints) Get(ip netip.Addr) (Endpoint, bool, error) {
	k, err := keyOf(ip)
	if err != nil {
		return Endpoint{}, false, err
	}
	var ep Endpoint
	if err := e.m.Lookup(&k, &ep); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return Endpoint{}, false, nil
		}
		return Endpoint{}, false, fmt.Errorf("look up endpoint %s: %w", ip, err)
	}
	return ep, true, nil
}

// List returns every endpoint, sorted by IP.
func (e *Endpoints) List() ([]EndpointEntry, error) {
	return listMap(e.m, "endpoints", func(k EndpointKey, ep Endpoint) EndpointEntry {
		return EndpointEntry{IP: netip.AddrFrom4(k.IP), Endpoint: ep}
	}, func(a, b EndpointEntry) int { return a.IP.Compare(b.IP) })
}

// MAC formats a MAC from a map value.
func MAC(b [6]byte) string { return net.HardwareAddr(b[:]).String() }
