package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/podvnet/podvnet/pkg/ipam"
)

// faultPool is the readiness fault of a pool the node lost.
const faultPool = "pool"

// WatchPool reports allocations the pool no longer lists, then refetches
// the pool from src every interval until ctx ends (interval <= 0: never).
// New addresses are handed out from then on; an address withdrawn while a
// pod holds it is logged, warned of, shown by `debug ipam`, and never
// handed out again once released. A failed fetch keeps the pool as it is.
// A pool that lists no secondary IP, or another primary IP or subnet (the
// NIC is not the one the agent started with), is lost: the agent is not
// ready until a refresh brings it back.
func (a *Agent) WatchPool(ctx context.Context, src ipam.Source, interval time.Duration) {
	withdrawn := a.alloc.Withdrawn()
	for _, al := range withdrawn {
		a.logWithdrawn(al, "at start")
	}
	a.warnWithdrawn(withdrawn)
	a.checkPoolLost(a.alloc.Pool(), nil)
	every(ctx, interval, func() { a.refreshPool(ctx, src) })
}

// every runs f every interval until ctx ends; never when interval <= 0.
func every(ctx context.Context, interval time.Duration, f func()) {
	if interval <= 0 {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f()
		}
	}
}

func (a *Agent) refreshPool(ctx context.Context, src ipam.Source) {
	in, err := src.Fetch(ctx)
	if err != nil {
		if ctx.Err() == nil {
			a.log.Warn("pool refresh failed; keeping the pool", zap.String("source", src.String()), zap.Error(err))
		}
		return
	}
	ch, err := a.alloc.SetPool(in.Pool)
	a.checkPoolLost(in.Pool, err)
	if err != nil {
		level := a.log.Warn
		if errors.Is(err, ipam.ErrPoolIdentity) {
			level = a.log.Error
		}
		level("pool refresh not applied; keeping the pool", zap.String("source", src.String()), zap.Error(err))
		return
	}
	if ch.Empty() {
		a.log.Debug("pool unchanged", zap.String("source", src.String()), zap.Int("secondary_ips", len(in.Pool.Secondary)))
		return
	}
	a.log.Info("pool refreshed", zap.String("source", src.String()), zap.String("added", joinAddrs(ch.Added)),
		zap.String("removed", joinAddrs(ch.Removed)), zap.Int("withdrawn", len(ch.Withdrawn)),
		zap.Int("secondary_ips", len(in.Pool.Secondary)), zap.Int("limit", a.alloc.Limit()))
	for _, al := range ch.Withdrawn {
		a.logWithdrawn(al, "on refresh")
	}
	a.warnWithdrawn(ch.Withdrawn)
	a.checkMaxPods() // the limit may have changed
}

// checkPoolLost records or clears the pool fault from a fetched pool and
// what applying it said.
func (a *Agent) checkPoolLost(p ipam.Pool, applyErr error) {
	cause := ""
	switch {
	case errors.Is(applyErr, ipam.ErrPoolIdentity):
		cause = "pool lost: " + applyErr.Error()
	case applyErr == nil && len(p.Secondary) == 0:
		cause = fmt.Sprintf("pool lost: the pool source lists no secondary IP for NIC %s", a.cfg.NIC)
	case applyErr != nil:
		return // not applied for another reason: the pool in use stands
	}
	if !a.ready.SetFault(faultPool, cause) {
		return
	}
	if cause != "" {
		a.log.Error("new pods on this node cannot get an address", zap.String("cause", cause))
	} else {
		a.log.Info("pool back", zap.Int("secondary_ips", len(p.Secondary)))
	}
}

func (a *Agent) logWithdrawn(al ipam.Allocation, when string) {
	a.log.Warn("pod holds an IP the pool no longer lists: the fabric may not route it to this node; "+
		"it stays with the pod and is not handed out again once released",
		zap.String("ip", al.IP.String()), zap.String("container_id", al.ContainerID), zap.String("ifname", al.IfName),
		zap.String("pod", al.PodNamespace+"/"+al.PodName), zap.String("detected", when))
}

func joinAddrs(as []netip.Addr) string {
	s := make([]string, len(as))
	for i, a := range as {
		s[i] = a.String()
	}
	return strings.Join(s, ",")
}
