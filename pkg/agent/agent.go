// Package agent is the node daemon: it owns the address pool, the pinned
// data path and the unix-socket API the CNI plugin calls.
package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"go.uber.org/zap"

	"github.com/podvnet/podvnet/pkg/ipam"
	"github.com/podvnet/podvnet/pkg/loader"
	"github.com/podvnet/podvnet/pkg/maps"
)

// Config is what `podvnet-agent run` is told.
type Config struct {
	NIC       string        // the VNet NIC, e.g. eth0
	BPFFSRoot string        // where maps and links are pinned
	StateDir  string        // where allocations persist
	Socket    string        // the plugin API's unix socket
	Pool      ipam.Pool     // the node's addresses
	MaxPods   int           // upper bound on pods, <= pool size
	Cooldown  time.Duration // rest of a released address
	NoSNAT    []netip.Prefix
}

// StateFile is the allocation state under the state dir.
func StateFile(stateDir string) string { return filepath.Join(stateDir, "ipam.json") }

// Agent is a running node daemon.
type Agent struct {
	cfg   Config
	log   *zap.Logger
	dp    *loader.Datapath
	alloc *ipam.Allocator
	nic   netlink.Link

	// mu serialises changes to endpoints (ADD, DEL, reconcile); lookups of
	// the allocator are safe without it.
	mu    sync.Mutex
	ready atomic.Bool
}

// New loads the data path (adopting what is pinned), reads the persisted
// allocations, reconciles both with the node, and attaches from_nic. It
// does not serve yet.
func New(cfg Config, log *zap.Logger) (_ *Agent, err error) {
	if err := cfg.Pool.Validate(); err != nil {
		return nil, fmt.Errorf("pool: %w", err)
	}
	nic, err := netlink.LinkByName(cfg.NIC)
	if err != nil {
		return nil, fmt.Errorf("find NIC %q: %w", cfg.NIC, err)
	}
	alloc, err := ipam.NewAllocator(cfg.Pool, ipam.FileStore{Path: StateFile(cfg.StateDir)},
		ipam.Options{MaxPods: cfg.MaxPods, Cooldown: cfg.Cooldown})
	if err != nil {
		return nil, err
	}
	dp, err := loader.Load(cfg.BPFFSRoot)
	if err != nil {
		return nil, fmt.Errorf("load data path: %w", err)
	}
	a := &Agent{cfg: cfg, log: log, dp: dp, alloc: alloc, nic: nic}
	defer func() {
		if err != nil {
			dp.Close()
		}
	}()

	if err := a.writeConfig(); err != nil {
		return nil, err
	}
	// Releases queued by plugins while no agent ran, before anything else
	// looks at the allocations.
	if err := a.replayDelQueue(); err != nil {
		log.Error("replay DEL queue", zap.Error(err))
	}
	if err := a.reconcile(); err != nil {
		return nil, fmt.Errorf("reconcile: %w", err)
	}
	if err := dp.Attach(loader.HookNIC, nic.Attrs().Index, nic.Attrs().Name); err != nil {
		return nil, err
	}
	log.Info("data path attached", zap.String("ifname", nic.Attrs().Name), zap.Int("ifindex", nic.Attrs().Index),
		zap.String("prog", "from_nic"))
	return a, nil
}

func (a *Agent) writeConfig() error {
	attrs := a.nic.Attrs()
	cfg := maps.Config{NICIfindex: uint32(attrs.Index), NodeIP: a.cfg.Pool.Primary.As4()}
	copy(cfg.NICMAC[:], attrs.HardwareAddr)
	if err := a.dp.Maps.Config.Set(cfg); err != nil {
		return err
	}
	ranges := append([]netip.Prefix{a.cfg.Pool.Subnet.Masked()}, a.cfg.NoSNAT...)
	return a.dp.Maps.NoSNAT.Sync(ranges)
}

// Serve answers the plugin on the unix socket until ctx ends.
func (a *Agent) Serve(ctx context.Context) error {
	ln, err := listenUnix(a.cfg.Socket)
	if err != nil {
		return err
	}
	srv := newServer(a)
	a.ready.Store(true)
	a.log.Info("serving", zap.String("socket", a.cfg.Socket), zap.Int("limit", a.alloc.Limit()),
		zap.Int("allocated", len(a.alloc.List())))
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	go a.replayDelQueueEvery(ctx, delQueueInterval)
	select {
	case <-ctx.Done():
	case err := <-errc:
		return fmt.Errorf("serve %s: %w", a.cfg.Socket, err)
	}
	a.ready.Store(false)
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("shut down API: %w", err)
	}
	return nil
}

// Close releases file descriptors. The pinned data path keeps forwarding.
func (a *Agent) Close() error { return a.dp.Close() }
