package vnet

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/netip"
	"path/filepath"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/podvnet/podvnet/internal/nettest"
	"github.com/podvnet/podvnet/pkg/loader"
	"github.com/podvnet/podvnet/pkg/maps"
)

// Pod is a network namespace wired by the podvnet plugin.
type Pod struct {
	Node        *Node
	Name        string
	NS          *nettest.NS
	ContainerID string
	IP          netip.Addr
	Result      *current.Result
	// RawResult is the result as the runtime got it, in the conflist's
	// cniVersion.
	RawResult types.Result
	conf      []byte
	capArgs   map[string]any
	noWait    bool
	deleted   bool
	nsDeleted bool
}

// NetName is the network name in the simulated nodes' conflist.
const NetName = "podvnet"

// ConfOptions shape the conflist a node's runtime reads; the zero value is
// the plain podvnet network.
type ConfOptions struct {
	CNIVersion string           // default: the VNet's
	Socket     string           // default: the node's agent socket
	DNS        map[string]any   // the podvnet plugin's "dns"
	Chain      []map[string]any // plugins run after podvnet (portmap, bandwidth)
}

// ConfList returns the conflist a runtime on the node would read.
func (n *Node) ConfList() []byte { return n.ConfListWith(ConfOptions{}) }

// ConfListWith returns the node's conflist shaped by o.
func (n *Node) ConfListWith(o ConfOptions) []byte {
	if o.CNIVersion == "" {
		o.CNIVersion = n.vnet.Opts.CNIVersion
	}
	if o.Socket == "" {
		o.Socket = n.Paths().Socket
	}
	podvnet := map[string]any{
		"type":        "podvnet",
		"socket":      o.Socket,
		"logFile":     filepath.Join(n.Dir, "cni.log"),
		"logLevel":    "debug",
		"delQueueDir": n.Paths().DelQueueDir(),
	}
	if o.DNS != nil {
		podvnet["dns"] = o.DNS
	}
	plugins := []any{podvnet}
	for _, p := range o.Chain {
		plugins = append(plugins, p)
		// podvnet reads the bandwidth arguments too: a shaped pod's
		// traffic must stay on the kernel path, through the qdiscs.
		if p["type"] == "bandwidth" {
			podvnet["capabilities"] = map[string]bool{"bandwidth": true}
		}
	}
	b, _ := json.Marshal(map[string]any{"cniVersion": o.CNIVersion, "name": NetName, "plugins": plugins})
	return b
}

// CNIConfig is libcni as the node's runtime uses it: the podvnet binaries
// and the reference plugins (BinDir/cni) on its path, results cached in
// cacheDir (the node's own when empty).
func (n *Node) CNIConfig(cacheDir string) *libcni.CNIConfig {
	if cacheDir == "" {
		cacheDir = filepath.Join(n.Dir, "cni-cache")
	}
	bin := n.vnet.Opts.BinDir
	return libcni.NewCNIConfigWithCacheDir([]string{bin, filepath.Join(bin, "cni")}, cacheDir, nil)
}

// runCNI runs f with the parsed conflist in the node's namespace, where the
// node's runtime runs libcni, with a runtime's patience.
func (n *Node) runCNI(conf []byte, f func(ctx context.Context, list *libcni.NetworkConfigList) error) error {
	list, err := libcni.ConfListFromBytes(conf)
	if err != nil {
		return err
	}
	return n.NS.Do(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		return f(ctx, list)
	})
}

// RuntimeConf is what a kubelet runtime passes for the pod.
func (p *Pod) RuntimeConf() *libcni.RuntimeConf {
	return &libcni.RuntimeConf{
		ContainerID: p.ContainerID,
		NetNS:       p.NS.Path(),
		IfName:      "eth0",
		Args: [][2]string{
			{"IgnoreUnknown", "1"},
			{"K8S_POD_NAMESPACE", "default"},
			{"K8S_POD_NAME", p.Name},
			{"K8S_POD_INFRA_CONTAINER_ID", p.ContainerID},
			{"K8S_POD_UID", "uid-" + p.ContainerID[:8]},
		},
		CapabilityArgs: p.capArgs,
	}
}

// PodOptions shape one pod's attachment.
type PodOptions struct {
	Conf ConfOptions
	// CapabilityArgs are the runtime's capability arguments, e.g.
	// "portMappings" or "bandwidth".
	CapabilityArgs map[string]any
	// NoWaitAttached returns as soon as ADD does, without waiting for the
	// agent to attach from_pod.
	NoWaitAttached bool
}

// AddPod creates a pod namespace and runs CNI ADD for it through libcni,
// from the node's namespace, as the node's container runtime would.
func (n *Node) AddPod(name string) (*Pod, error) { return n.AddPodWith(name, PodOptions{}) }

// AddPodWith is AddPod with its own conflist and capability arguments,
// which the pod's later DEL and CHECK use too.
func (n *Node) AddPodWith(name string, o PodOptions) (*Pod, error) {
	ns, err := nettest.CreateNS(fmt.Sprintf("%s-%s-%s", n.vnet.Opts.Prefix, n.Name, name))
	if err != nil {
		return nil, err
	}
	p := &Pod{Node: n, Name: name, NS: ns, conf: n.ConfListWith(o.Conf), capArgs: o.CapabilityArgs, noWait: o.NoWaitAttached}
	n.vnet.onClose(func() error {
		if !p.deleted {
			p.Del()
		}
		if p.nsDeleted {
			return nil
		}
		return ns.Delete()
	})
	return p, p.Add()
}

// Add runs CNI ADD for the pod's namespace through libcni under a new
// container ID, as a runtime does for each new sandbox. After a DEL it
// attaches the same namespace again.
func (p *Pod) Add() error {
	n := p.Node
	p.ContainerID = fmt.Sprintf("%08x%s", n.Index*1000+int(n.pods.Add(1)), randomHex(28))
	p.deleted = false
	p.Result, p.RawResult, p.IP = nil, nil, netip.Addr{}
	err := n.runCNI(p.conf, func(ctx context.Context, list *libcni.NetworkConfigList) (err error) {
		p.RawResult, err = n.CNIConfig("").AddNetworkList(ctx, list, p.RuntimeConf())
		return err
	})
	if err != nil {
		return fmt.Errorf("CNI ADD %s on %s: %w", p.Name, n.Name, err)
	}
	if p.Result, err = current.NewResultFromResult(p.RawResult); err != nil {
		return err
	}
	if len(p.Result.IPs) != 1 {
		return fmt.Errorf("CNI ADD %s: %d IPs in the result", p.Name, len(p.Result.IPs))
	}
	p.IP, _ = netip.AddrFromSlice(p.Result.IPs[0].Address.IP.To4())
	if p.noWait {
		return nil
	}
	return p.WaitAttached(10 * time.Second)
}

// WaitAttached waits until from_pod runs on the pod's host veth: the agent
// attaches it just after ADD returns, as a runtime goes on to start the
// pod's containers. Tests of the data path start from there.
func (p *Pod) WaitAttached(timeout time.Duration) error {
	if len(p.Result.Interfaces) == 0 {
		return nil
	}
	host := p.Result.Interfaces[0].Name
	var last error
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		last = p.Node.NS.Do(func() error {
			l, err := netlink.LinkByName(host)
			if err != nil {
				return err
			}
			_, err = loader.Attached(p.Node.BPFFS, maps.HookPod, host, l.Attrs().Index)
			return err
		})
		if last == nil {
			return nil
		}
	}
	return fmt.Errorf("%s: from_pod not attached %s after ADD: %w", p.Name, timeout, last)
}

// DeleteNetns removes the pod's namespace, as a runtime does at sandbox
// removal, possibly before its last DEL.
func (p *Pod) DeleteNetns() error {
	if p.nsDeleted {
		return nil
	}
	p.nsDeleted = true
	return p.NS.Delete()
}

// Del runs CNI DEL for the pod through libcni (the namespace stays).
func (p *Pod) Del() error { return p.DelWith(DelOptions{}) }

// DelOptions vary a DEL from the one the pod's runtime would run.
type DelOptions struct {
	Conf    *ConfOptions // another conflist, e.g. an agent socket nobody serves
	NoNetns bool         // CNI_NETNS empty, as runtimes send at sandbox removal
}

// DelWith runs CNI DEL for the pod through libcni, varied by o.
func (p *Pod) DelWith(o DelOptions) error {
	conf := p.conf
	if o.Conf != nil {
		conf = p.Node.ConfListWith(*o.Conf)
	}
	rt := p.RuntimeConf()
	if o.NoNetns {
		rt.NetNS = ""
	}
	err := p.Node.runCNI(conf, func(ctx context.Context, list *libcni.NetworkConfigList) error {
		return p.Node.CNIConfig("").DelNetworkList(ctx, list, rt)
	})
	if err != nil {
		return fmt.Errorf("CNI DEL %s on %s: %w", p.Name, p.Node.Name, err)
	}
	p.deleted = true
	return nil
}

// Check runs CNI CHECK for the pod through libcni.
func (p *Pod) Check() error {
	err := p.Node.runCNI(p.conf, func(ctx context.Context, list *libcni.NetworkConfigList) error {
		return p.Node.CNIConfig("").CheckNetworkList(ctx, list, p.RuntimeConf())
	})
	if err != nil {
		return fmt.Errorf("CNI CHECK %s on %s: %w", p.Name, p.Node.Name, err)
	}
	return nil
}

// Status runs CNI STATUS on the node through libcni.
func (n *Node) Status(o ConfOptions) error {
	return n.runCNI(n.ConfListWith(o), func(ctx context.Context, list *libcni.NetworkConfigList) error {
		return n.CNIConfig("").GetStatusNetworkList(ctx, list)
	})
}

// GC runs CNI GC on the node through libcni with the runtime's valid
// attachments. libcni first DELs the attachments cached in cacheDir that
// are not valid; an empty cache dir leaves all the work to the plugin.
func (n *Node) GC(o ConfOptions, cacheDir string, valid []types.GCAttachment) error {
	return n.runCNI(n.ConfListWith(o), func(ctx context.Context, list *libcni.NetworkConfigList) error {
		return n.CNIConfig(cacheDir).GCNetworkList(ctx, list, &libcni.GCArgs{ValidAttachments: valid})
	})
}

func randomHex(n int) string {
	b := make([]byte, (n+1)/2)
	rand.Read(b)
	return hex.EncodeToString(b)[:n]
}

// Do runs f inside the pod's network namespace.
func (p *Pod) Do(f func() error) error { return p.NS.Do(f) }
