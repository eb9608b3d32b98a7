package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"sync"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/podvnet/podvnet/internal/nettest"
	"github.com/podvnet/podvnet/tests/e2e/vnet"
)

// plugin is a CNI configuration under test on every node.
type plugin struct {
	name     string
	conflist func(n *vnet.Node) []byte
	// agent holds the podvnet-agent flags of a podvnet variant; nil for
	// the reference plugins.
	agent []string
	// apiServer: the agents run against an API server (policyAPI), as a
	// DaemonSet's do, which holds the nodes and a Pod for every pod before
	// its ADD, as kubelet's does.
	apiServer bool
	// policy: the API server also holds policy.go's cluster of pods and
	// NetworkPolicies, which the agents enforce.
	policy bool
	api    *policyAPI
}

// hostLocal is the IPAM the reference plugins use: the node's own
// secondary IPs, with the block's .1 as gateway, its state in the node's
// work dir.
func hostLocal(n *vnet.Node) map[string]any {
	sec := n.Pool.Secondary
	return map[string]any{
		"type": "host-local",
		"ranges": [][]map[string]string{{{
			"subnet":     n.PodBlock.String(),
			"rangeStart": sec[0].String(),
			"rangeEnd":   sec[len(sec)-1].String(),
			"gateway":    n.PodBlock.Addr().Next().String(),
		}}},
		"routes":  []map[string]string{{"dst": "0.0.0.0/0"}},
		"dataDir": filepath.Join(n.Dir, "host-local"),
	}
}

func confList(name string, p map[string]any) []byte {
	b, _ := json.Marshal(map[string]any{"cniVersion": "1.0.0", "name": name, "plugins": []any{p}})
	return b
}

func ptpPlugin() plugin {
	return plugin{name: "ptp", conflist: func(n *vnet.Node) []byte {
		return confList("ptp", map[string]any{"type": "ptp", "ipMasq": false, "ipam": hostLocal(n)})
	}}
}

func bridgePlugin() plugin {
	return plugin{name: "bridge", conflist: func(n *vnet.Node) []byte {
		return confList("bridge", map[string]any{"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false,
			"ipam": hostLocal(n)})
	}}
}

// podvnetPlugin is podvnet with its agents run with args.
func podvnetPlugin(name string, args ...string) plugin {
	return plugin{name: name, conflist: func(n *vnet.Node) []byte { return n.ConfList() }, agent: append([]string{}, args...)}
}

// podvnetAPIPlugin is podvnet as its DaemonSet runs it, NetworkPolicy off:
// its agents get an API server when its bed is made. Knowing every Service
// and pod, an agent asks conntrack only for packets from the ports kernel
// NAT may answer from; alone, it must ask for every packet.
func podvnetAPIPlugin(name string, args ...string) plugin {
	pl := podvnetPlugin(name, append([]string{"--network-policy=false"}, args...)...)
	pl.apiServer = true
	return pl
}

// podvnetPolicyPlugin is podvnet with NetworkPolicy: its agents get an API
// server, with policy.go's cluster, when its bed is made.
func podvnetPolicyPlugin(name string, args ...string) plugin {
	pl := podvnetPlugin(name, args...)
	pl.apiServer, pl.policy = true, true
	return pl
}

// pod is a namespace attached by a plugin through libcni, as containerd
// does.
type pod struct {
	peer
	podName string
	ns      *nettest.NS
	node    *vnet.Node
	cni     *libcni.CNIConfig
	list    *libcni.NetworkConfigList
	rt      *libcni.RuntimeConf
	api     *policyAPI
}

var podSeq int

// newPod creates the pod's namespace; attaching is timed separately.
func newPod(b *bench, n *vnet.Node, pl plugin, name string) (*pod, error) {
	podSeq++
	ns, err := nettest.CreateNS(fmt.Sprintf("%s-%s-%s%d", b.prefix, n.Name, name, podSeq))
	if err != nil {
		return nil, err
	}
	list, err := libcni.ConfListFromBytes(pl.conflist(n))
	if err != nil {
		ns.Delete()
		return nil, err
	}
	if pl.api != nil {
		if err := pl.api.createPod(name, n.Name); err != nil {
			ns.Delete()
			return nil, err
		}
	}
	p := &pod{ns: ns, node: n, list: list, podName: name, api: pl.api,
		cni: libcni.NewCNIConfigWithCacheDir([]string{b.binDir, b.cniBinDir}, filepath.Join(n.Dir, "cni-cache"), nil),
		rt: &libcni.RuntimeConf{ContainerID: fmt.Sprintf("bench%06d%s", podSeq, b.prefix), NetNS: ns.Path(), IfName: "eth0",
			Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "bench"}, {"K8S_POD_NAME", name}}},
	}
	p.peer = peer{name: n.Name + "/" + name, nsPath: ns.Path()}
	return p, nil
}

// add runs CNI ADD from the node's namespace and returns how long it took.
func (p *pod) add(ctx context.Context) (time.Duration, error) {
	var res types.Result
	start := time.Now()
	err := p.node.NS.Do(func() (err error) {
		res, err = p.cni.AddNetworkList(ctx, p.list, p.rt)
		return err
	})
	d := time.Since(start)
	if err != nil {
		return d, fmt.Errorf("ADD %s: %w", p.name, err)
	}
	r, err := current.NewResultFromResult(res)
	if err != nil {
		return d, err
	}
	p.ip, _ = netip.AddrFromSlice(r.IPs[0].Address.IP.To4())
	if p.api != nil {
		// What kubelet reports once the sandbox runs: the other nodes
		// learn the pod's address from it.
		return d, p.api.podRunning(p.podName, p.ip)
	}
	return d, nil
}

// del runs CNI DEL and removes the namespace.
func (p *pod) del(ctx context.Context) (time.Duration, error) {
	start := time.Now()
	err := p.node.NS.Do(func() error { return p.cni.DelNetworkList(ctx, p.list, p.rt) })
	d := time.Since(start)
	p.ns.Delete()
	if p.api != nil {
		err = errors.Join(err, p.api.deletePod(p.podName))
	}
	return d, err
}

// addAll attaches pods sequentially or all at once and returns each ADD's
// latency and the wall time of the whole round.
func addAll(ctx context.Context, pods []*pod, parallel bool) ([]time.Duration, time.Duration, error) {
	return runAll(pods, parallel, func(p *pod) (time.Duration, error) { return p.add(ctx) })
}

func delAll(ctx context.Context, pods []*pod, parallel bool) ([]time.Duration, time.Duration, error) {
	return runAll(pods, parallel, func(p *pod) (time.Duration, error) { return p.del(ctx) })
}

func runAll(pods []*pod, parallel bool, f func(*pod) (time.Duration, error)) ([]time.Duration, time.Duration, error) {
	lat := make([]time.Duration, len(pods))
	errs := make([]error, len(pods))
	start := time.Now()
	if parallel {
		var wg sync.WaitGroup
		for i, p := range pods {
			wg.Go(func() { lat[i], errs[i] = f(p) })
		}
		wg.Wait()
	} else {
		for i, p := range pods {
			lat[i], errs[i] = f(p)
		}
	}
	wall := time.Since(start)
	for _, err := range errs {
		if err != nil {
			return lat, wall, err
		}
	}
	return lat, wall, nil
}
