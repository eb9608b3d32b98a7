package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"

	"github.com/podvnet/podvnet/pkg/agent"
	"github.com/podvnet/podvnet/pkg/ipam"
	"github.com/podvnet/podvnet/pkg/loader"
)

// Defaults shared by run, debug and cleanup.
const (
	defaultBPFFSRoot = "/sys/fs/bpf/podvnet"
	defaultStateDir  = "/var/lib/podvnet"
	defaultSocket    = "/run/podvnet/agent.sock"
)

type runFlags struct {
	nic         string
	ipamSource  string
	poolFile    string
	bpffsRoot   string
	stateDir    string
	socket      string
	maxPods     int
	cooldown    time.Duration
	noSNAT      []string
	attachMode  string
	mtu         int
	noCTLookup  bool
	metricsAddr string
	logLevel    string
	logFormat   string
	cni         cniFlags
}

func newRunCommand() *cobra.Command {
	f := &runFlags{}
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the node agent: pool, data path and the CNI plugin's API",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runAgent(cmd.Context(), f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.nic, "nic", "eth0", "the VNet NIC whose secondary IPs pods get")
	fl.StringVar(&f.ipamSource, "ipam-source", "static", "where the pool comes from: static")
	fl.StringVar(&f.poolFile, "pool-file", "/etc/podvnet/pool.json", "static pool file (with --ipam-source static)")
	fl.StringVar(&f.bpffsRoot, "bpffs-root", defaultBPFFSRoot, "bpffs directory for pinned maps and links (a bpffs is mounted if none is)")
	fl.StringVar(&f.stateDir, "state-dir", defaultStateDir, "directory for the durable allocation state")
	fl.StringVar(&f.socket, "socket", defaultSocket, "unix socket the CNI plugin talks to (root only)")
	fl.IntVar(&f.mtu, "mtu", 0, "MTU of pod interfaces; 0 follows the NIC's MTU")
	fl.BoolVar(&f.noCTLookup, "no-conntrack-lookup", false, "skip the programs' conntrack check before fast-path redirects (breaks Service replies; for measuring its cost)")
	fl.StringVar(&f.attachMode, "attach-mode", "auto", "how programs attach to tc: auto (tcx, else legacy), tcx, or legacy (clsact + cls_bpf)")
	fl.IntVar(&f.maxPods, "max-pods", 30, "most pods on this node; the limit is min(max-pods, secondary IPs)")
	fl.DurationVar(&f.cooldown, "ip-cooldown", 30*time.Second, "how long a released IP rests before it is handed out again")
	fl.StringSliceVar(&f.noSNAT, "no-snat-cidrs", nil, "extra destination CIDRs pods reach without SNAT (peered VNets, on-premises); the pool subnet is always included")
	fl.StringVar(&f.metricsAddr, "metrics-addr", agent.DefaultMetricsAddr, "address for /metrics, /healthz and /readyz; empty turns it off")
	fl.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fl.StringVar(&f.logFormat, "log-format", "console", "console or json")
	f.cni.register(fl)
	return cmd
}

func runAgent(ctx context.Context, f *runFlags) error {
	log, err := newLogger(f.logLevel, f.logFormat)
	if err != nil {
		return err
	}
	defer log.Sync()

	cfg := agent.Config{
		NIC: f.nic, BPFFSRoot: f.bpffsRoot, StateDir: f.stateDir, Socket: f.socket,
		MaxPods: f.maxPods, Cooldown: f.cooldown, MTU: f.mtu, NoConntrackLookup: f.noCTLookup,
	}
	if f.mtu != 0 && f.mtu < 576 {
		return fmt.Errorf("--mtu %d: below the IPv4 minimum of 576", f.mtu)
	}
	if cfg.AttachMode, err = loader.ParseMode(f.attachMode); err != nil {
		return fmt.Errorf("--attach-mode: %w", err)
	}
	if f.maxPods <= 0 {
		return fmt.Errorf("--max-pods %d: must be at least 1", f.maxPods)
	}
	for _, s := range f.noSNAT {
		p, err := netip.ParsePrefix(s)
		if err != nil || !p.Addr().Is4() {
			return fmt.Errorf("--no-snat-cidrs %q: not an IPv4 CIDR", s)
		}
		cfg.NoSNAT = append(cfg.NoSNAT, p.Masked())
	}
	switch f.ipamSource {
	case "static":
		if cfg.Pool, err = ipam.LoadStaticPool(f.poolFile); err != nil {
			return fmt.Errorf("--pool-file: %w", err)
		}
	default:
		return fmt.Errorf("--ipam-source %q: want static", f.ipamSource)
	}
	inst, err := f.cni.installer(f.socket)
	if err != nil {
		return err
	}

	log.Info("starting", zap.String("version", version), zap.String("nic", f.nic),
		zap.String("subnet", cfg.Pool.Subnet.String()), zap.String("primary", cfg.Pool.Primary.String()),
		zap.Int("secondary_ips", len(cfg.Pool.Secondary)), zap.Int("max_pods", f.maxPods))
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	cfg.Ready = agent.NewReadiness("starting")
	ctx, failed := context.WithCancelCause(ctx)
	defer failed(nil)
	if inst != nil {
		go func() {
			if err := installWhenReady(ctx, inst, cfg.Ready, log); err != nil {
				failed(err)
			}
		}()
	}
	cfg.Metrics = agent.NewMetrics(version, commit)
	if f.metricsAddr != "" {
		srv, err := agent.ServeHTTP(f.metricsAddr, cfg.Metrics, cfg.Ready)
		if err != nil {
			return err
		}
		defer srv.Close()
	}
	a, err := agent.New(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer a.Close()
	if err := a.Serve(ctx); err != nil {
		return err
	}
	if err := context.Cause(ctx); !errors.Is(err, context.Canceled) {
		return err // the install failed
	}
	// Pins stay: the data path keeps forwarding while no agent runs.
	log.Info("stopped; data path left running")
	return nil
}
