package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/vishvananda/netlink"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/podvnet/podvnet/pkg/maps"
)

// faultNIC is the readiness fault of a NIC that is gone.
const faultNIC = "nic"

// WatchNIC follows netlink's link updates until ctx ends: when the NIC
// disappears (deleted, moved to another namespace, renamed) the agent is
// not ready, with the cause, until an interface of its name is back; then
// the agent points the programs' config at it and attaches from_nic again.
// onChange, when set, is called after each change (the API client drops
// its connections: the old ones went with the NIC). Updates are only
// triggers: the NIC's state is read again each time, so a lost update or
// a resubscription cannot leave a wrong verdict.
func (a *Agent) WatchNIC(ctx context.Context, onChange func()) {
	for ctx.Err() == nil {
		updates := make(chan netlink.LinkUpdate, 256)
		done := make(chan struct{})
		err := netlink.LinkSubscribeWithOptions(updates, done, netlink.LinkSubscribeOptions{
			ErrorCallback: func(err error) {
				a.log.Debug("link updates: resubscribing", zap.Error(err))
			},
		})
		if err != nil {
			a.log.Error("subscribe to link updates; checking the NIC every 5 s instead", zap.Error(err))
		}
		a.checkNIC(ctx, onChange)
		a.followLinks(ctx, updates, onChange)
		close(done)
		if err == nil {
			for range updates { // the subscription's reader closes it
			}
		}
	}
}

// followLinks checks the NIC on every update that may concern it, and
// every 5 s (a safety net, and all there is without a subscription), until
// the subscription ends (a read error closes updates) or ctx does.
func (a *Agent) followLinks(ctx context.Context, updates chan netlink.LinkUpdate, onChange func()) {
	poll := time.NewTicker(5 * time.Second)
	defer poll.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-poll.C:
			a.checkNIC(ctx, onChange)
		case u, ok := <-updates:
			if !ok {
				return
			}
			if u.Attrs().Name == a.cfg.NIC || int64(u.Index) == a.nicIndex.Load() {
				a.checkNIC(ctx, onChange)
			}
		}
	}
}

// checkNIC looks the NIC up by name and records a fault when it is gone,
// or adopts the interface and clears the fault when it is back (or has
// another index: deleted and created again between two looks), watching
// the next hop on it from then on.
func (a *Agent) checkNIC(ctx context.Context, onChange func()) {
	l, err := netlink.LinkByName(a.cfg.NIC)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		if a.ready.SetFault(faultNIC, fmt.Sprintf("NIC %s is gone", a.cfg.NIC)) {
			a.log.Error("NIC gone: pods on this node cannot reach the VNet until it is back", zap.String("ifname", a.cfg.NIC))
			if onChange != nil {
				onChange()
			}
		}
		return
	}
	if err != nil {
		a.log.Warn("look up the NIC", zap.String("ifname", a.cfg.NIC), zap.Error(err))
		return
	}
	if int64(l.Attrs().Index) == a.nicIndex.Load() && !a.ready.HasFault(faultNIC) {
		return
	}
	if err := a.adoptNIC(l); err != nil {
		a.ready.SetFault(faultNIC, fmt.Sprintf("NIC %s is back but its program could not be attached: %v", a.cfg.NIC, err))
		a.log.Error("NIC back, program not attached", zap.String("ifname", a.cfg.NIC), zap.Error(err))
		return
	}
	a.startNextHop(ctx, l)
	a.ready.SetFault(faultNIC, "")
	a.log.Info("NIC back: from_nic attached again", zap.String("ifname", a.cfg.NIC), zap.Int("ifindex", l.Attrs().Index))
	if onChange != nil {
		onChange()
	}
}

// adoptNIC makes l the NIC: the config map names its index and MAC, and
// from_nic runs on it (a pin of the former interface is replaced).
func (a *Agent) adoptNIC(l netlink.Link) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.nic = l
	a.nicIndex.Store(int64(l.Attrs().Index))
	if err := a.writeConfigMaps(); err != nil {
		return err
	}
	_, err := a.dp.Attach(maps.HookNIC, l.Attrs().Index, l.Attrs().Name, a.cfg.AttachMode)
	if errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("gone again: %w", err)
	}
	return err
}
