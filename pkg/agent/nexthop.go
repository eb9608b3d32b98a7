package agent

import (
	"context"
	"time"

	"github.com/vishvananda/netlink"
	"go.uber.org/zap"

	"github.com/podvnet/podvnet/pkg/maps"
	"github.com/podvnet/podvnet/pkg/nexthop"
)

// nexthopRevalidate is how often the gateway's neighbour entry is marked
// in use (nexthop.Config.Revalidate): the kernel's base_reachable_time, so
// an entry gone stale is probed about as soon as the kernel would.
const nexthopRevalidate = 30 * time.Second

func (a *Agent) nexthopConfig(nic netlink.Link) nexthop.Config {
	return nexthop.Config{Mode: a.cfg.NextHop, Link: nic.Attrs().Index, Gateway: a.cfg.Pool.Gateway,
		Revalidate: nexthopRevalidate,
		OnError:    func(err error) { a.log.Warn("next hop", zap.Error(err)) }}
}

// readNextHop is the next hop as the NIC's neighbour table shows it at
// start; where it cannot be read, the kernel resolves until it can.
func (a *Agent) readNextHop(nic netlink.Link) nexthop.Hop {
	h, err := nexthop.Read(a.nexthopConfig(nic))
	if err != nil {
		a.log.Warn("read the next hop; the kernel resolves it meanwhile", zap.Error(err))
		return nexthop.Hop{NIC: nic.Attrs().HardwareAddr, Why: "not read yet"}
	}
	return h
}

// startNextHop (re)starts the next hop's watch on nic: at Serve, and when
// the NIC comes back, maybe under another index, whose neighbour table the
// old watch does not see. After stopNextHop it does nothing.
func (a *Agent) startNextHop(ctx context.Context, nic netlink.Link) {
	a.nexthopMu.Lock()
	defer a.nexthopMu.Unlock()
	if a.nexthopDone {
		return
	}
	if a.nexthopStop != nil {
		a.nexthopStop()
	}
	a.nexthopStop = a.watchNextHop(ctx, nic)
}

// stopNextHop ends the next hop's watch for good.
func (a *Agent) stopNextHop() {
	a.nexthopMu.Lock()
	defer a.nexthopMu.Unlock()
	if a.nexthopStop != nil {
		a.nexthopStop()
	}
	a.nexthopStop, a.nexthopDone = nil, true
}

// watchNextHop keeps the config map's next hop the one the NIC's neighbour
// table shows, in the background until ctx ends or stop is called; stop
// returns once it has ended (Close closes the maps it writes).
func (a *Agent) watchNextHop(ctx context.Context, nic netlink.Link) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		err := nexthop.Watch(ctx, a.nexthopConfig(nic), func(h nexthop.Hop) {
			if err := a.setNextHop(h); err != nil {
				a.log.Error("write the next hop", zap.Error(err))
			}
		})
		if err != nil {
			a.log.Error("watch the next hop; it stays as it is", zap.Error(err))
		}
	}()
	return func() { cancel(); <-done }
}

// setNextHop writes h into the config map, in place; the programs take it
// on their next packet.
func (a *Agent) setNextHop(h nexthop.Hop) error {
	a.configMu.Lock()
	defer a.configMu.Unlock()
	cfg := withHop(a.config, h)
	if cfg == a.config {
		return nil
	}
	if err := a.dp.Maps.Config.Set(cfg); err != nil {
		return err
	}
	a.config = cfg
	a.logNextHop(h)
	return nil
}

// withHop is cfg with h's Ethernet header.
func withHop(cfg maps.Config, h nexthop.Hop) maps.Config {
	cfg.NextHopMAC = [6]byte{}
	copy(cfg.NextHopMAC[:], h.MAC)
	if len(h.NIC) == 6 {
		copy(cfg.NICMAC[:], h.NIC)
	}
	return cfg
}

// logNextHop says what the config map now makes from_pod do, and why.
// Callers hold configMu.
func (a *Agent) logNextHop(h nexthop.Hop) {
	a.log.Info("next hop into the VNet", zap.String("mode", string(a.cfg.NextHop)),
		zap.String("next_hop", a.config.DescribeNextHop()), zap.String("why", h.Why))
}
