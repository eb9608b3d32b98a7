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
	"github.com/spf13/pflag"
	"go.uber.org/zap"

	"github.com/podvnet/podvnet/pkg/agent"
	"github.com/podvnet/podvnet/pkg/ipam"
	"github.com/podvnet/podvnet/pkg/ipplan"
	"github.com/podvnet/podvnet/pkg/kube"
	"github.com/podvnet/podvnet/pkg/loader"
	"github.com/podvnet/podvnet/pkg/nexthop"
	"github.com/podvnet/podvnet/pkg/paths"
)

type runFlags struct {
	nic         string
	ipamSource  string
	poolFile    string
	nmagentURL  string
	imdsURL     string
	refresh     time.Duration
	cluster     clusterFlags
	platform    platformFlags
	services    servicesFlags
	paths       paths.Node
	maxPods     int
	cooldown    time.Duration
	noSNAT      []string
	attachMode  string
	mtu         int
	noCTLookup  bool
	nextHop     string
	metricsAddr string
	logLevel    string
	logFormat   string
	cni         cniFlags
	kube        kubeFlags
	policy      policyFlags
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
	fl.StringVar(&f.nic, "nic", "", "the VNet NIC whose secondary IPs pods get; empty: the interface whose MAC the pool document lists as primary ("+defaultStaticNIC+" with --ipam-source static)")
	fl.StringVar(&f.ipamSource, "ipam-source", "nmagent", "where the pool comes from: nmagent (the wireserver, as Azure CNI), imds, or static (--pool-file)")
	fl.StringVar(&f.nmagentURL, "nmagent-url", ipam.DefaultNMAgentURL, "the wireserver serving NMAgent's interface document (with --ipam-source nmagent)")
	fl.StringVar(&f.imdsURL, "imds-url", ipam.DefaultIMDSURL, "the Instance Metadata Service (with --ipam-source imds)")
	fl.StringVar(&f.poolFile, "pool-file", "/etc/podvnet/pool.json", "static pool file (with --ipam-source static)")
	fl.DurationVar(&f.refresh, "pool-refresh", time.Minute, "how often the pool is fetched again to learn added and removed IPs; 0 never")
	fl.StringVar(&f.paths.BPFFSRoot, "bpffs-root", paths.DefaultBPFFSRoot, "bpffs directory for pinned maps and links (a bpffs is mounted if none is)")
	fl.StringVar(&f.paths.StateDir, "state-dir", paths.DefaultStateDir, "directory for the durable allocation state")
	fl.StringVar(&f.paths.Socket, "socket", paths.DefaultSocket, "unix socket the CNI plugin talks to (root only)")
	fl.IntVar(&f.mtu, "mtu", 0, "MTU of pod interfaces; 0 follows the NIC's MTU")
	fl.BoolVar(&f.noCTLookup, "no-conntrack-lookup", false, "skip the programs' conntrack check before fast-path redirects (breaks Service replies; for measuring its cost)")
	fl.StringVar(&f.nextHop, "next-hop", string(nexthop.Auto), "how pods' packets into the VNet find their next hop: gateway (the subnet gateway's MAC, cached: Azure answers every address with it), kernel (resolved per packet), or auto (gateway while every neighbour the NIC learned has the gateway's MAC, else kernel)")
	fl.StringVar(&f.attachMode, "attach-mode", "auto", "how programs attach to tc: auto (tcx, else legacy), tcx, or legacy (clsact + cls_bpf)")
	fl.IntVar(&f.maxPods, flagMaxPods, 30, "most pods on this node; the limit is min(max-pods, secondary IPs)")
	fl.DurationVar(&f.cooldown, "ip-cooldown", 30*time.Second, "how long a released IP rests before it is handed out again")
	fl.StringSliceVar(&f.noSNAT, flagNoSNAT, nil, "extra destination CIDRs pods reach without SNAT (peered VNets, on-premises); the pool subnet is always included")
	fl.StringVar(&f.metricsAddr, "metrics-addr", agent.DefaultMetricsAddr, "address for /metrics, /healthz and /readyz; empty turns it off")
	f.cluster.register(fl)
	f.platform.register(fl)
	f.services.register(fl)
	fl.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fl.StringVar(&f.logFormat, "log-format", "console", "console or json")
	f.cni.register(fl)
	f.kube.register(fl)
	f.policy.register(fl)
	return cmd
}

func runAgent(ctx context.Context, f *runFlags) error {
	log, err := newLogger(f.logLevel, f.logFormat)
	if err != nil {
		return err
	}
	defer log.Sync()

	cfg := agent.Config{
		Paths: f.paths, MaxPods: f.maxPods, Cooldown: f.cooldown, MTU: f.mtu, NoConntrackLookup: f.noCTLookup,
		Version: version,
	}
	if f.mtu != 0 && f.mtu < 576 {
		return fmt.Errorf("--mtu %d: below the IPv4 minimum of 576", f.mtu)
	}
	if cfg.AttachMode, err = loader.ParseMode(f.attachMode); err != nil {
		return fmt.Errorf("--attach-mode: %w", err)
	}
	if cfg.NextHop, err = nexthop.ParseMode(f.nextHop); err != nil {
		return fmt.Errorf("--next-hop %w", err)
	}
	if f.maxPods <= 0 {
		return fmt.Errorf("%s %d: must be at least 1", ipplanNames.MaxPods, f.maxPods)
	}
	if cfg.NoSNAT, err = parseNoSNAT(f.noSNAT); err != nil {
		return err
	}
	if cfg.Blocked, err = f.platform.parse(); err != nil {
		return err
	}
	if cfg.Services, err = f.services.parse(); err != nil {
		return err
	}
	// Flags that do not parse fail before the fabric is asked anything;
	// the subnet to check them against comes with the pool.
	cluster, err := f.cluster.parse(netip.Prefix{}, cfg.NoSNAT)
	if err != nil {
		return err
	}
	src, err := newPoolSource(f, log)
	if err != nil {
		return err
	}
	inst, err := f.cni.installer(f.paths.Socket)
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	// Probes answer from here on: a starting agent is alive, not ready.
	cfg.Ready = agent.NewReadiness("learning the pool from " + src.String())
	ctx, failed := context.WithCancelCause(ctx)
	defer failed(nil)
	// installed is closed once the CNI config is in place: the node's
	// network is ready only then.
	installed := make(chan struct{})
	if inst != nil {
		go func() {
			if err := installWhenReady(ctx, inst, cfg.Ready, log); err != nil {
				failed(err)
				return
			}
			close(installed)
		}()
	} else {
		close(installed)
	}
	cfg.Metrics = agent.NewMetrics(version, commit)
	var services servicesRelay
	kc, err := f.kube.client(f.paths, cfg.Metrics, cfg.Ready, services.apiStatus, log)
	if err != nil {
		return err
	}
	if kc != nil {
		defer kc.Close()
		cfg.Events = kc
		cfg.Services.FromAPI, cfg.Services.NodeName = true, f.kube.nodeName
	}
	if cfg.Policy, err = f.policy.options(kc, cluster.ServiceCIDR); err != nil {
		return err
	}
	if f.metricsAddr != "" {
		srv, err := agent.ServeHTTP(f.metricsAddr, cfg.Metrics, cfg.Ready)
		if err != nil {
			return fmt.Errorf("--metrics-addr: %w", err)
		}
		defer srv.Close()
	}
	in, nic, err := learnPool(ctx, f, src)
	if err != nil {
		return err
	}
	cfg.Pool, cfg.NIC = in.Pool, nic
	cfg.Services.CIDR = cluster.ServiceCIDR
	cluster.Subnet = cfg.Pool.Subnet
	if err := cluster.Validate(); err != nil {
		return fmt.Errorf("cluster settings: %w", err)
	}
	if len(in.Ignored) > 0 {
		log.Warn("the NIC has addresses outside the subnet of its primary IP; pods do not get them",
			zap.String("subnet", cfg.Pool.Subnet.String()), zap.Stringers("ignored", in.Ignored))
	}

	log.Info("starting", zap.String("version", version), zap.String("nic", nic), zap.String("source", src.String()),
		zap.String("subnet", cfg.Pool.Subnet.String()), zap.String("primary", cfg.Pool.Primary.String()),
		zap.Int("secondary_ips", len(cfg.Pool.Secondary)), zap.Int("max_pods", f.maxPods))
	a, err := agent.New(ctx, cfg, log)
	if errors.Is(err, agent.ErrMTUAboveNIC) {
		return fmt.Errorf("--mtu %w", err)
	}
	if err != nil {
		return err
	}
	defer a.Close()

	go a.WatchPool(ctx, src, f.refresh)
	var nicChanged func()
	if kc != nil {
		kc.OnNode(func(n kube.Node) { a.SetKubeletMaxPods(n.AllocatablePods) })
		services.serve(kc, a, log)
		kc.Start(ctx)
		go reportNetwork(ctx, cfg.Ready, installed, kc)
		// Connections to the API server went with the NIC (or go
		// through another interface now): new ones, at once.
		nicChanged = kc.CloseConnections
	}
	go a.WatchNIC(ctx, nicChanged)
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

func parseNoSNAT(ss []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range ss {
		p, err := ipplan.ParseCIDR(ipplanNames.NoSNAT, s)
		if err != nil {
			return nil, err
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// The flags ipplan's errors are about, named once: each is registered under
// its name here, and ipplanNames makes the errors name it.
const (
	flagSubnet           = "subnet"
	flagNodes            = "nodes"
	flagMaxPods          = "max-pods"
	flagExtraIPs         = "extra-ips"
	flagNoSNAT           = "no-snat-cidrs"
	flagServiceCIDR      = "service-cidr"
	flagDNSServiceIP     = "dns-service-ip"
	flagDockerBridgeCIDR = "docker-bridge-cidr"
)

// ipplanNames makes ipplan's errors name the flag to change.
var ipplanNames = ipplan.Names{
	Subnet: "--" + flagSubnet, Nodes: "--" + flagNodes, MaxPods: "--" + flagMaxPods, ExtraIPs: "--" + flagExtraIPs,
	NoSNAT: "--" + flagNoSNAT, ServiceCIDR: "--" + flagServiceCIDR, DNSServiceIP: "--" + flagDNSServiceIP,
	DockerBridgeCIDR: "--" + flagDockerBridgeCIDR,
}

// clusterFlags are the cluster settings `run` and `plan` both check.
type clusterFlags struct {
	serviceCIDR, dnsServiceIP, dockerBridgeCIDR string
}

func (c *clusterFlags) register(fl *pflag.FlagSet) {
	fl.StringVar(&c.serviceCIDR, flagServiceCIDR, ipplan.DefaultServiceCIDR, "the cluster's Service CIDR; must not overlap the subnet or --no-snat-cidrs (empty: not checked)")
	fl.StringVar(&c.dnsServiceIP, flagDNSServiceIP, ipplan.DefaultDNSServiceIP, "the cluster DNS Service IP; inside --service-cidr, not its network or first address (empty: not checked)")
	fl.StringVar(&c.dockerBridgeCIDR, flagDockerBridgeCIDR, ipplan.DefaultDockerBridgeCIDR, "the Docker bridge on nodes; must overlap neither the subnet, --no-snat-cidrs nor --service-cidr (empty: not checked)")
}

func (c *clusterFlags) parse(subnet netip.Prefix, noSNAT []netip.Prefix) (ipplan.Cluster, error) {
	return ipplan.ParseCluster(ipplanNames, subnet, noSNAT, c.serviceCIDR, c.dnsServiceIP, c.dockerBridgeCIDR)
}
