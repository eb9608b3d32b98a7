package maps

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/cilium/ebpf"
)

// ConfigArray is the single-entry node config array.
type ConfigArray struct{ m *ebpf.Map }

// NewConfigArray wraps an opened config map.
func NewConfigArray(m *ebpf.Map) *ConfigArray { return &ConfigArray{m: m} }

// Set replaces the node config in place; programs see it on their next packet.
func (c *ConfigArray) Set(cfg Config) error {
	if err := c.m.Put(uint32(0), &cfg); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	return nil
}

// Get reads the node config.
func (c *ConfigArray) Get() (Config, error) {
	var cfg Config
	if err := c.m.Lookup(uint32(0), &cfg); err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	return cfg, nil
}

// NodeAddr returns the node IP of a config as an address.
func (c Config) NodeAddr() netip.Addr { return netip.AddrFrom4(c.NodeIP) }

// NextHop is the destination MAC from_pod writes on frames into the VNet,
// or nil where it leaves the next hop to the kernel: the programs' own test
// (unicast next hop and NIC MACs).
func (c Config) NextHop() net.HardwareAddr {
	unicast := func(m [6]byte) bool { return m[0]&1 == 0 && m != [6]byte{} }
	if !unicast(c.NextHopMAC) || !unicast(c.NICMAC) {
		return nil
	}
	return net.HardwareAddr(c.NextHopMAC[:])
}

// DescribeNextHop says how from_pod sends into the VNet under c.
func (c Config) DescribeNextHop() string {
	if m := c.NextHop(); m != nil {
		return m.String() + " (cached: bpf_redirect)"
	}
	return "not cached: the kernel resolves it (bpf_redirect_neigh)"
}
