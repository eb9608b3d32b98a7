// Package cluster runs a real Kubernetes cluster inside the simulated VNet
// of tests/e2e/vnet, for tests that install podvnet the way users do:
// etcd, kube-apiserver, kube-controller-manager and kube-scheduler in a
// control plane namespace attached to the fabric like a VM of the subnet,
// and on each node namespace its own containerd, kubelet and (optionally)
// kube-proxy, each node with a filesystem view of its own (see Node). The
// binaries are the pinned Kubernetes release (scripts/kube.sh); images are
// imported offline (package image). Everything is removed by Close: the
// processes, mounts, namespaces and cgroups, and the host sysctls kubelet
// changes are restored.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/podvnet/podvnet/internal/nettest"
	"github.com/podvnet/podvnet/tests/cluster/image"
	"github.com/podvnet/podvnet/tests/e2e/vnet"
)

// Options shape a cluster.
type Options struct {
	// Repo is the podvnet repository: deploy/ is installed from it, and
	// images are built from it unless ImageDir holds them.
	Repo string
	// WorkDir holds everything the cluster writes; the caller removes it.
	WorkDir string
	// KubeDir holds the Kubernetes binaries and etcd (scripts/kube.sh).
	KubeDir string
	// ImageDir holds the image tarballs of image.BuildAll; empty: built
	// into WorkDir.
	ImageDir string
	// CNIBinDir holds the reference plugins a node's /opt/cni/bin starts
	// with (loopback, bandwidth, portmap); default Repo/bin/cni.
	CNIBinDir string
	Prefix    string // names every namespace and cgroup; default a fresh one
	Nodes     int    // default 2
	// KubeProxy is kube-proxy's mode on every node: "nftables" (the
	// default), "iptables", or "none" for a cluster without it.
	KubeProxy string
	// MaxPods is kubelet's maxPods (default 110, kubelet's own default).
	MaxPods int
	// AgentSettings are ConfigMap values (deploy/config/agent.env keys)
	// the install sets over Settings.
	AgentSettings map[string]string
	// KubeletFlags are added to every kubelet's command line, e.g.
	// --register-with-taints=podvnet.io/agent-not-ready:NoSchedule.
	KubeletFlags []string
	// AlignedPools gives each node a /24 block of its own (vnet), for the
	// reference plugins' host-local ranges beside podvnet.
	AlignedPools bool
	// BinDir holds podvnet-agent and podvnet, for agents a caller runs on
	// the VNet's nodes by hand (vnet.Node.StartAgent) rather than as the
	// DaemonSet's pods.
	BinDir string
	// Log receives progress lines; default none.
	Log io.Writer
}

// Cluster is a running cluster.
type Cluster struct {
	Opts         Options
	VNet         *vnet.VNet
	ControlPlane *vnet.Host
	Nodes        []*Node
	// Client is a clientset with cluster-admin rights.
	Client     kubernetes.Interface
	RESTConfig *rest.Config

	dir         string
	pki         *pki
	images      []string
	cpProcs     []*proc
	cpArgs      map[string][]string // how each control plane process was started
	adminConfig string
	closeOnce   sync.Once
	closeErr    error
}

// Binaries the cluster runs from KubeDir; NewControlPlane the first two.
var (
	kubeBinaries         = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy", "kubectl"}
	controlPlaneBinaries = kubeBinaries[:2]
)

// Tools the nodes run from the host.
var hostTools = []string{"containerd", "containerd-shim-runc-v2", "runc", "ctr", "nsenter", "unshare", "mount", "nft"}

// CheckPrerequisites says what is missing for a cluster: the Kubernetes
// binaries (scripts/kube.sh) and the host tools (scripts/deps.sh test).
func CheckPrerequisites(kubeDir string) error {
	var missing []string
	for _, b := range kubeBinaries {
		if _, err := os.Stat(filepath.Join(kubeDir, b)); err != nil {
			missing = append(missing, filepath.Join(kubeDir, b)+" (scripts/kube.sh)")
		}
	}
	for _, t := range hostTools {
		if _, err := exec.LookPath(t); err != nil {
			missing = append(missing, t+" (scripts/deps.sh test)")
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("missing: %s", strings.Join(missing, ", "))
	}
	return nil
}

// CheckControlPlane says what NewControlPlane misses: etcd and the API
// server (scripts/kube.sh).
func CheckControlPlane(kubeDir string) error {
	for _, b := range controlPlaneBinaries {
		if _, err := os.Stat(filepath.Join(kubeDir, b)); err != nil {
			return fmt.Errorf("missing: %s (scripts/kube.sh)", filepath.Join(kubeDir, b))
		}
	}
	return nil
}

// New brings a cluster up: the VNet, the control plane, and every node with
// containerd and kubelet (and kube-proxy unless KubeProxy is "none"). The
// nodes are registered but not Ready: no CNI is installed (Install). On
// error everything built so far is removed.
func New(ctx context.Context, opts Options) (*Cluster, error) { return build(ctx, opts, true) }

// NewControlPlane brings up the VNet, whose nodes are bare namespaces (no
// containerd, kubelet or Node object), and etcd and an API server alone:
// for agents run by hand against a real API server, with the Nodes and
// Pods the caller creates (the benchmark's 5,000 pods).
func NewControlPlane(ctx context.Context, opts Options) (*Cluster, error) {
	return build(ctx, opts, false)
}

func build(ctx context.Context, opts Options, full bool) (_ *Cluster, err error) {
	if opts.Nodes == 0 {
		opts.Nodes = 2
	}
	if opts.KubeProxy == "" {
		opts.KubeProxy = "nftables"
	}
	if opts.CNIBinDir == "" {
		opts.CNIBinDir = filepath.Join(opts.Repo, "bin", "cni")
	}
	if opts.Prefix == "" {
		opts.Prefix = nettest.Prefix()
	}
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	switch opts.KubeProxy {
	case "nftables", "iptables", "none":
	default:
		return nil, fmt.Errorf("KubeProxy %q: want nftables, iptables or none", opts.KubeProxy)
	}
	if full {
		if err := CheckPrerequisites(opts.KubeDir); err != nil {
			return nil, err
		}
	} else if err := CheckControlPlane(opts.KubeDir); err != nil {
		return nil, err
	}
	if err := CleanupStale(); err != nil {
		return nil, fmt.Errorf("remove what an earlier, killed run left: %w", err)
	}
	c := &Cluster{Opts: opts, dir: opts.WorkDir}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	step := func(format string, args ...any) { fmt.Fprintf(opts.Log, format+"\n", args...) }
	start := time.Now()

	if full {
		if c.images, err = c.imageTarballs(ctx); err != nil {
			return nil, err
		}
	}
	if c.pki, err = newPKI(filepath.Join(c.dir, "pki")); err != nil {
		return nil, err
	}
	step("VNet %s: fabric, %d nodes, wireserver (prefix %s)", vnet.Subnet, opts.Nodes, opts.Prefix)
	if c.VNet, err = vnet.New(vnet.Options{Prefix: opts.Prefix, Nodes: opts.Nodes, PerNode: 30,
		WorkDir: filepath.Join(c.dir, "vnet"), IPAMSource: "nmagent", BinDir: opts.BinDir, AlignedPools: opts.AlignedPools}); err != nil {
		return nil, err
	}
	if full {
		step("control plane at %s: etcd, kube-apiserver, kube-controller-manager, kube-scheduler", APIServerIP)
	} else {
		step("control plane at %s: etcd, kube-apiserver", APIServerIP)
	}
	if err := c.startControlPlane(full); err != nil {
		return nil, err
	}
	if c.RESTConfig, err = c.restConfig(); err != nil {
		return nil, err
	}
	if c.Client, err = kubernetes.NewForConfig(c.RESTConfig); err != nil {
		return nil, err
	}
	if !full {
		step("control plane up in %s", time.Since(start).Round(time.Second))
		return c, nil
	}
	// kubelet changes kernel settings of the whole machine.
	if err := recordSysctls(); err != nil {
		return nil, err
	}
	for _, vn := range c.VNet.Nodes {
		step("%s at %s: containerd (images imported), kubelet", vn.Name, vn.Pool.Primary)
		n, err := c.startNode(vn)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", vn.Name, err)
		}
		if opts.KubeProxy != "none" {
			if err := n.startKubeProxy(opts.KubeProxy); err != nil {
				return nil, err
			}
		}
	}
	if err := c.waitNodesRegistered(ctx); err != nil {
		return nil, err
	}
	step("cluster up in %s", time.Since(start).Round(time.Second))
	return c, nil
}

// imageTarballs returns the images to import, built into the work dir
// unless ImageDir has them.
func (c *Cluster) imageTarballs(ctx context.Context) ([]string, error) {
	dir := c.Opts.ImageDir
	if dir == "" {
		paths, err := image.BuildAll(ctx, c.Opts.Repo, filepath.Join(c.dir, "images"), "cluster-test", "unknown")
		if err != nil {
			return nil, fmt.Errorf("build the images: %w", err)
		}
		return paths, nil
	}
	var paths []string
	for _, im := range image.All("") {
		p := filepath.Join(dir, im.FileName())
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("image %s: %w (make images)", im.Ref, err)
		}
		paths = append(paths, p)
	}
	return paths, nil
}

// Close tears everything down, also after a failed New: nodes (their
// pods, containerd, kubelet, mounts, cgroups), the control plane, the VNet,
// and restores the host sysctls. Safe to call more than once.
func (c *Cluster) Close() error {
	c.closeOnce.Do(func() {
		var errs []error
		var wg sync.WaitGroup
		var mu sync.Mutex
		for _, n := range c.Nodes {
			wg.Go(func() {
				if err := n.stop(); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		for i := len(c.cpProcs) - 1; i >= 0; i-- {
			c.cpProcs[i].stop(5 * time.Second)
		}
		errs = append(errs, restoreSysctls())
		if c.VNet != nil {
			errs = append(errs, c.VNet.Close())
		}
		c.closeErr = errors.Join(errs...)
	})
	return c.closeErr
}

// Node returns the node named name, or nil.
func (c *Cluster) Node(name string) *Node {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// Logs lists the log files of the cluster's processes, for a failing test
// to show: the control plane's, each node's, and on each node podvnet's
// own (the agents' container logs as kubelet keeps them, every restart's,
// and the CNI plugin's).
func (c *Cluster) Logs() []string {
	var out []string
	for _, p := range c.cpProcs {
		out = append(out, p.log)
	}
	for _, n := range c.Nodes {
		for _, p := range n.procs {
			out = append(out, p.log)
		}
		varLog := filepath.Join(n.Root, "fs", "var", "log")
		agents, _ := filepath.Glob(filepath.Join(varLog, "pods", "kube-system_podvnet-*", "agent", "*.log"))
		out = append(append(out, agents...), filepath.Join(varLog, "podvnet-cni.log"))
	}
	return out
}
