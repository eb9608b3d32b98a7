// Package ipam hands the node's secondary IPs to pods. It is pure Go: the
// pool comes from a source (a static file here; Azure's NMAgent or IMDS),
// allocations are keyed by (network, container ID, ifname) and every change
// is durable in a Store before the caller sees it.
package ipam

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
)

// Pool is what the node's NIC holds: the primary IP belongs to the node, the
// secondary IPs are for pods.
type Pool struct {
	Subnet    netip.Prefix
	Gateway   netip.Addr
	Primary   netip.Addr
	Secondary []netip.Addr
}

// Validate checks that the pool is usable and names what is wrong.
func (p Pool) Validate() error {
	if !p.Subnet.IsValid() || !p.Subnet.Addr().Is4() {
		return fmt.Errorf("subnet %q: not an IPv4 CIDR", p.Subnet)
	}
	in := func(field string, a netip.Addr) error {
		if !a.IsValid() || !a.Is4() {
			return fmt.Errorf("%s %q: not an IPv4 address", field, a)
		}
		if !p.Subnet.Contains(a) {
			return fmt.Errorf("%s %s: outside subnet %s", field, a, p.Subnet)
		}
		return nil
	}
	if err := in("primary", p.Primary); err != nil {
		return err
	}
	if p.Gateway.IsValid() {
		if err := in("gateway", p.Gateway); err != nil {
			return err
		}
	}
	seen := map[netip.Addr]bool{p.Primary: true}
	for _, a := range p.Secondary {
		if err := in("secondary", a); err != nil {
			return err
		}
		if a == p.Primary {
			return fmt.Errorf("secondary %s: is the primary IP", a)
		}
		if a == p.Gateway {
			return fmt.Errorf("secondary %s: is the gateway", a)
		}
		if seen[a] {
			return fmt.Errorf("secondary %s: listed twice", a)
		}
		seen[a] = true
	}
	return nil
}

// staticPool is the static pool file's JSON form.
type staticPool struct {
	Subnet    string   `json:"subnet"`
	Gateway   string   `json:"gateway"`
	Primary   string   `json:"primary"`
	Secondary []string `json:"secondary"`
}

// LoadStaticPool reads a pool file:
// {"subnet":"10.240.0.0/16","gateway":"10.240.0.1","primary":"10.240.0.4","secondary":["10.240.0.5",...]}
func LoadStaticPool(path string) (Pool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Pool{}, fmt.Errorf("read pool file: %w", err)
	}
	p, err := ParseStaticPool(b)
	if err != nil {
		return Pool{}, fmt.Errorf("pool file %s: %w", path, err)
	}
	return p, nil
}

// ParseStaticPool parses the static pool file format.
func ParseStaticPool(b []byte) (Pool, error) {
	var sp staticPool
	if err := json.Unmarshal(b, &sp); err != nil {
		return Pool{}, fmt.Errorf("parse JSON: %w", err)
	}
	var p Pool
	var err error
	if sp.Subnet == "" {
		return Pool{}, errors.New(`"subnet" is missing`)
	}
	if p.Subnet, err = netip.ParsePrefix(sp.Subnet); err != nil {
		return Pool{}, fmt.Errorf(`"subnet": %w`, err)
	}
	if sp.Primary == "" {
		return Pool{}, errors.New(`"primary" is missing`)
	}
	if p.Primary, err = netip.ParseAddr(sp.Primary); err != nil {
		return Pool{}, fmt.Errorf(`"primary": %w`, err)
	}
	if sp.Gateway != "" {
		if p.Gateway, err = netip.ParseAddr(sp.Gateway); err != nil {
			return Pool{}, fmt.Errorf(`"gateway": %w`, err)
		}
	}
	for i, s := range sp.Secondary {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return Pool{}, fmt.Errorf(`"secondary"[%d]: %w`, i, err)
		}
		p.Secondary = append(p.Secondary, a)
	}
	if err := p.Validate(); err != nil {
		return Pool{}, err
	}
	return p, nil
}
