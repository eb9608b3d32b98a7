package maps

import (
	"fmt"
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
