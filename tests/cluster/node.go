package cluster

import (
	"debug/elf"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/podvnet/podvnet/internal/nettest"
	"github.com/podvnet/podvnet/tests/cluster/image"
	"github.com/podvnet/podvnet/tests/e2e/vnet"
)

// Node is one Kubernetes node: a VNet node namespace (eth0 on the fabric)
// running its own containerd, kubelet and, as an option, kube-proxy.
//
// Each node has a filesystem view of its own, as a real node (or a kind
// container) has: its processes run in a private mount namespace where
// /run, /var/lib and /var/log are bind mounts of the node's directories,
// /etc and /opt are overlays on the host's (what the node writes stays in
// its upper layer), and /sys/fs/bpf is a fresh bpffs. So the DaemonSet's
// hostPath volumes (/etc/cni/net.d, /opt/cni/bin, /var/lib/podvnet,
// /run/podvnet, /sys/fs/bpf, /var/run/netns, /etc/podvnet) work unchanged
// and nothing reaches the host's own directories. The namespace's mounts
// are shared among themselves (kubelet's volume mounts and the agent's
// Bidirectional bpffs propagate) but private towards the host.
//
// The embedded vnet.Node gives the namespace, pool and addresses; its agent
// methods do not apply here, where the agent runs as the DaemonSet's pod.
type Node struct {
	*vnet.Node
	// Root holds the node's directories on the host; what the node sees at
	// a path is at Path(path).
	Root string

	c      *Cluster
	cgroup string // the node's cgroup tree, the same path in every hierarchy
	holder *proc  // holds the mount namespace; the other processes join it
	procs  map[string]*proc
	mgmtUp bool // the management link of TakeNIC is in place
}

// Path is where the test process finds what the node sees at path: through
// the holder's root, so mounts inside the node's namespace (a pod's
// emptyDir, the bpffs) resolve as the node sees them.
func (n *Node) Path(path string) string {
	return fmt.Sprintf("/proc/%d/root%s", n.holder.cmd.Process.Pid, path)
}

// Log is a node process's log file (containerd, kubelet, kube-proxy).
func (n *Node) Log(name string) string { return filepath.Join(n.Root, "log", name+".log") }

// nodeDirs are bind-mounted over the host's, empty at first.
var nodeDirs = []string{"/run", "/var/lib", "/var/log"}

// overlayDirs are the host's, with the node's writes kept apart.
var overlayDirs = []string{"/etc", "/opt"}

// mountScript runs as the holder: it builds the node's mount namespace and
// then holds it. $1 is the node's root, $2 the cgroup.procs it joins.
const mountScript = `set -eu
echo $$ > "$2"
R=$1
for d in ` + "{{binds}}" + `; do mount --bind "$R/fs$d" "$d"; done
for d in ` + "{{overlays}}" + `; do
	mount -t overlay overlay -o "lowerdir=$d,upperdir=$R/fs$d/upper,workdir=$R/fs$d/work" "$d"
done
mount -t bpf bpffs /sys/fs/bpf
mount --make-rshared /
touch "$R/ready"
exec sleep infinity
`

// startNode gives a VNet node its filesystem view, cgroup tree, containerd
// (with the images imported) and kubelet.
func (c *Cluster) startNode(vn *vnet.Node) (n *Node, err error) {
	n = &Node{Node: vn, c: c, Root: filepath.Join(c.dir, vn.Name), cgroup: c.VNet.Opts.Prefix + "-" + vn.Name, procs: map[string]*proc{}}
	c.Nodes = append(c.Nodes, n)
	for _, d := range append(slices.Clone(nodeDirs), "../log", "../config") {
		if err := os.MkdirAll(filepath.Join(n.Root, "fs", d), 0o755); err != nil {
			return n, err
		}
	}
	for _, d := range overlayDirs {
		for _, sub := range []string{"upper", "work"} {
			if err := os.MkdirAll(filepath.Join(n.Root, "fs", d, sub), 0o755); err != nil {
				return n, err
			}
		}
	}
	// What every containerd install puts in /opt/cni/bin: the conflist
	// chains bandwidth and portmap, and the runtime needs loopback.
	cniBin := filepath.Join(n.Root, "fs/opt/upper/cni/bin")
	if err := os.MkdirAll(cniBin, 0o755); err != nil {
		return n, err
	}
	for _, p := range []string{"loopback", "bandwidth", "portmap"} {
		src := filepath.Join(c.Opts.CNIBinDir, p)
		if err := requireStatic(src); err != nil {
			return n, fmt.Errorf("%s: reference CNI plugins (make cni-plugins): %w", vn.Name, err)
		}
		if err := copyFile(src, filepath.Join(cniBin, p), 0o755); err != nil {
			return n, fmt.Errorf("%s: reference CNI plugins (make cni-plugins): %w", vn.Name, err)
		}
	}
	if err := n.makeCgroups(); err != nil {
		return n, err
	}

	script := strings.NewReplacer("{{binds}}", strings.Join(nodeDirs, " "), "{{overlays}}", strings.Join(overlayDirs, " ")).Replace(mountScript)
	if n.holder, err = startProc(vn.Name+" holder", n.Log("holder"),
		"nsenter", "--net="+vn.NS.Path(), "--", "unshare", "--mount", "--propagation", "private", "--",
		"sh", "-c", script, "sh", n.Root, n.cgroupProcs("system")); err != nil {
		return n, err
	}
	if err := poll(30*time.Second, 20*time.Millisecond, vn.Name+" mount namespace", func() (bool, error) {
		if !n.holder.running() {
			return false, fatal(n.holder.exitError())
		}
		_, err := os.Stat(filepath.Join(n.Root, "ready"))
		return err == nil, nil
	}); err != nil {
		return n, err
	}
	if err := n.startContainerd(); err != nil {
		return n, err
	}
	return n, n.startKubelet()
}

// inNode returns the command line that runs argv in the node's network and
// mount namespaces and in its cgroup tree.
func (n *Node) inNode(argv ...string) []string {
	return append([]string{"nsenter", "-t", strconv.Itoa(n.holder.cmd.Process.Pid), "-m", "-n", "--",
		"sh", "-c", `echo $$ > "$1" && shift && exec "$@"`, "sh", n.cgroupProcs("system")}, argv...)
}

// start runs a node process (its log in the node's log dir).
func (n *Node) start(name string, argv ...string) error {
	p, err := startProc(n.Name+" "+name, n.Log(name), n.inNode(argv...)...)
	if err != nil {
		return err
	}
	n.procs[name] = p
	return nil
}

// Exec runs a short command inside the node (its namespaces, its files) and
// returns its combined output.
func (n *Node) Exec(argv ...string) (string, error) {
	return run(append([]string{"nsenter", "-t", strconv.Itoa(n.holder.cmd.Process.Pid), "-m", "-n", "--"}, argv...)...)
}

const containerdConfig = `version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "/run/containerd/containerd.sock"

[plugins."io.containerd.internal.v1.opt"]
  path = "/var/lib/containerd/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{{pause}}"
  # kubelet asks for oom_score_adj down to -998, which needs
  # CAP_SYS_RESOURCE; where the test runs without it (a sandboxed CI
  # machine), containers keep containerd's own instead of failing to start.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/opt/cni/bin"
    conf_dir = "/etc/cni/net.d"
`

func (n *Node) startContainerd() error {
	cfg := filepath.Join(n.Root, "config", "containerd.toml")
	if err := os.WriteFile(cfg, []byte(strings.ReplaceAll(containerdConfig, "{{pause}}", image.PauseRef)), 0o644); err != nil {
		return err
	}
	if err := n.start("containerd", "containerd", "--config", cfg); err != nil {
		return err
	}
	if err := poll(time.Minute, 100*time.Millisecond, n.Name+" containerd", func() (bool, error) {
		if p := n.procs["containerd"]; !p.running() {
			return false, fatal(p.exitError())
		}
		_, err := n.Exec("ctr", "version")
		return err == nil, err
	}); err != nil {
		return err
	}
	for _, tarball := range n.c.images {
		if _, err := n.Exec("ctr", "-n", "k8s.io", "images", "import", tarball); err != nil {
			return fmt.Errorf("%s: import %s: %w", n.Name, filepath.Base(tarball), err)
		}
	}
	return nil
}

const kubeletConfig = `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine's cgroups are v1 (hybrid), which kubelet refuses by default.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /{{cgroup}}
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
address: {{ip}}
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: {{ca}}}
authorization:
  mode: Webhook
clusterDNS: [{{dns}}]
clusterDomain: cluster.local
rotateCertificates: false
serializeImagePulls: false
failSwapOn: false
maxPods: {{maxPods}}
# The machine is shared: neither evict pods nor collect images for the
# disk or memory other tests use.
evictionHard: {memory.available: 50Mi, nodefs.available: 1%, nodefs.inodesFree: 1%, imagefs.available: 1%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
`

func (n *Node) startKubelet() error {
	kubeconfig, err := n.c.pki.kubeconfig("kubelet-"+n.Name, APIServerURL(), "system:node:"+n.Name, "system:nodes")
	if err != nil {
		return err
	}
	maxPods := n.c.Opts.MaxPods
	if maxPods == 0 {
		maxPods = 110
	}
	cfg := filepath.Join(n.Root, "config", "kubelet.yaml")
	if err := os.WriteFile(cfg, []byte(strings.NewReplacer(
		"{{cgroup}}", n.cgroup, "{{ip}}", n.Pool.Primary.String(), "{{ca}}", n.c.pki.path("ca.crt"),
		"{{dns}}", DNSServiceIP.String(), "{{maxPods}}", strconv.Itoa(maxPods),
	).Replace(kubeletConfig)), 0o644); err != nil {
		return err
	}
	args := []string{filepath.Join(n.c.Opts.KubeDir, "kubelet"), "--config=" + cfg, "--kubeconfig=" + kubeconfig,
		"--hostname-override=" + n.Name, "--node-ip=" + n.Pool.Primary.String(), "--v=1"}
	return n.start("kubelet", append(args, n.c.Opts.KubeletFlags...)...)
}

const kubeProxyConfig = `apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: {{kubeconfig}}
mode: {{mode}}
hostnameOverride: {{node}}
healthzBindAddress: 0.0.0.0:10256
metricsBindAddress: 127.0.0.1:10249
# Zero leaves the kernel's conntrack settings alone: nf_conntrack_max is
# one for the whole machine.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
`

func (n *Node) startKubeProxy(mode string) error {
	kubeconfig, err := n.c.pki.kubeconfig("kube-proxy-"+n.Name, APIServerURL(), "system:kube-proxy")
	if err != nil {
		return err
	}
	cfg := filepath.Join(n.Root, "config", "kube-proxy.yaml")
	if err := os.WriteFile(cfg, []byte(strings.NewReplacer("{{kubeconfig}}", kubeconfig, "{{mode}}", mode, "{{node}}", n.Name).Replace(kubeProxyConfig)), 0o644); err != nil {
		return err
	}
	return n.start("kube-proxy", filepath.Join(n.c.Opts.KubeDir, "kube-proxy"), "--config="+cfg, "--v=1")
}

// stop ends the node: kubelet and kube-proxy first (no new pods), then every
// process of the node's cgroup tree (containers, shims, containerd, the
// holder, which takes the mount namespace and with it every mount of the
// node), then the cgroups.
func (n *Node) stop() error {
	for _, name := range []string{"kube-proxy", "kubelet"} {
		n.procs[name].stop(10 * time.Second)
	}
	errs := []error{n.killCgroup()}
	for _, p := range n.procs {
		p.stop(time.Second)
	}
	n.holder.stop(time.Second)
	errs = append(errs, n.removeCgroups())
	return errors.Join(errs...)
}

// staleTree matches a node's cgroup tree: nettest.Prefix() + "-node" + N.
var staleTree = regexp.MustCompile(`^pvt[0-9a-f]{6}-node[0-9]+$`)

// CleanupStale removes node cgroup trees that a test process killed with
// SIGKILL left behind: their holder, containerd and kubelet died with it
// (parent-death signal), but containers and their shims live on in the
// tree. A tree is stale when no holder (`sleep infinity`) is left in it
// and it is older than a minute (a cluster being built has none yet).
func CleanupStale() error {
	entries, err := os.ReadDir("/sys/fs/cgroup/pids")
	if err != nil {
		return nil
	}
	var errs []error
	for _, e := range entries {
		info, err := e.Info()
		if err != nil || !staleTree.MatchString(e.Name()) || time.Since(info.ModTime()) < time.Minute {
			continue
		}
		n := &Node{cgroup: e.Name()}
		if n.hasHolder() {
			continue
		}
		errs = append(errs, n.killCgroup(), n.removeCgroups())
		// The run's VNet namespaces: fabric, nodes, control plane, VMs.
		nettest.DeleteNamespaces(strings.SplitN(e.Name(), "-", 2)[0] + "-")
	}
	// The host's sysctls, if the killed run's kubelets changed them and no
	// other cluster runs.
	return errors.Join(append(errs, restoreSysctls())...)
}

// hasHolder says whether the tree's mount namespace holder still runs.
func (n *Node) hasHolder() bool {
	return slices.ContainsFunc(n.cgroupPIDs(), func(pid int) bool {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		return string(b) == "sleep\x00infinity\x00"
	})
}

// killCgroup kills every process of the node's tree until none is left.
func (n *Node) killCgroup() error {
	return poll(30*time.Second, 50*time.Millisecond, "kill the processes of cgroup "+n.cgroup, func() (bool, error) {
		pids := n.cgroupPIDs()
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		return len(pids) == 0, nil
	})
}

// cgroupHierarchies are the mounted cgroup hierarchies (v1 controllers and
// the hybrid unified one).
func cgroupHierarchies() []string {
	entries, _ := os.ReadDir("/sys/fs/cgroup")
	var out []string
	for _, e := range entries {
		if e.IsDir() {
			out = append(out, filepath.Join("/sys/fs/cgroup", e.Name()))
		}
	}
	return out
}

// makeCgroups creates the node's tree in every hierarchy (kubelet checks
// that its cgroupRoot exists) and the "system" child for the node's own
// processes; kubelet puts pods under kubepods beside it.
func (n *Node) makeCgroups() error {
	for _, h := range cgroupHierarchies() {
		for _, d := range []string{n.cgroup, n.cgroup + "/system"} {
			p := filepath.Join(h, d)
			if err := os.Mkdir(p, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
				return fmt.Errorf("cgroup %s: %w", p, err)
			}
			// A new cpuset has no CPUs and no memory nodes: inherit them.
			if filepath.Base(h) == "cpuset" {
				for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
					b, err := os.ReadFile(filepath.Join(h, f))
					if err == nil {
						err = os.WriteFile(filepath.Join(p, f), b, 0o644)
					}
					if err != nil {
						return fmt.Errorf("cgroup %s: %w", p, err)
					}
				}
			}
		}
	}
	return nil
}

// cgroupProcs is the pids hierarchy's cgroup.procs of a child of the tree;
// every process of the node is in the tree there, so that stop finds them.
func (n *Node) cgroupProcs(child string) string {
	return filepath.Join("/sys/fs/cgroup/pids", n.cgroup, child, "cgroup.procs")
}

// cgroupPIDs lists every process in the node's tree.
func (n *Node) cgroupPIDs() []int {
	var pids []int
	filepath.WalkDir(filepath.Join("/sys/fs/cgroup/pids", n.cgroup), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.Name() != "cgroup.procs" {
			return nil
		}
		b, _ := os.ReadFile(p)
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
		return nil
	})
	return pids
}

// removeCgroups removes the node's tree, deepest first, in every hierarchy.
func (n *Node) removeCgroups() error {
	var errs []error
	for _, h := range cgroupHierarchies() {
		root := filepath.Join(h, n.cgroup)
		var dirs []string
		filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := poll(10*time.Second, 50*time.Millisecond, "remove cgroup "+dirs[i], func() (bool, error) {
				err := os.Remove(dirs[i])
				return err == nil || errors.Is(err, fs.ErrNotExist), err
			}); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// requireStatic refuses a dynamically linked binary: the agent execs the
// node's plugins from its own image, which has no C library, as every CNI
// release's static binaries allow.
func requireStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked; build it with CGO_ENABLED=0, as CNI releases are", path)
		}
	}
	return nil
}

func copyFile(src, dst string, mode os.FileMode) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, mode)
}
