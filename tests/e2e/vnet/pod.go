package vnet

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/podvnet/podvnet/internal/nettest"
)

// Pod is a network namespace wired by the podvnet plugin.
type Pod struct {
	Node        *Node
	Name        string
	NS          *nettest.NS
	ContainerID string
	IP          netip.Addr
	Result      *current.Result
	deleted     bool
}

// NetName is the network name in the simulated nodes' conflist.
const NetName = "podvnet"

// ConfList returns the conflist a runtime on the node would read.
func (n *Node) ConfList() []byte {
	conf := map[string]any{
		"cniVersion": n.vnet.Opts.CNIVersion,
		"name":       NetName,
		"plugins": []any{map[string]any{
			"type":    "podvnet",
			"socket":  n.Socket(),
			"logFile": filepath.Join(n.Dir, "cni.log"),
		}},
	}
	b, _ := json.Marshal(conf)
	return b
}

func (n *Node) cni() *libcni.CNIConfig {
	return libcni.NewCNIConfigWithCacheDir([]string{n.vnet.Opts.BinDir}, filepath.Join(n.Dir, "cni-cache"), nil)
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
	}
}

// AddPod creates a pod namespace and runs CNI ADD for it through libcni,
// from the node's namespace, as the node's container runtime would.
func (n *Node) AddPod(name string) (*Pod, error) {
	seq := int(n.pods.Add(1))
	ns, err := nettest.CreateNS(fmt.Sprintf("%s-%s-%s", n.vnet.Opts.Prefix, n.Name, name))
	if err != nil {
		return nil, err
	}
	p := &Pod{Node: n, Name: name, NS: ns, ContainerID: fmt.Sprintf("%08x%s", n.Index*1000+seq, randomHex(28))}
	n.vnet.onClose(func() error {
		if !p.deleted {
			p.Del()
		}
		return ns.Delete()
	})
	list, err := libcni.ConfListFromBytes(n.ConfList())
	if err != nil {
		return nil, err
	}
	var res types.Result
	err = n.NS.Do(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		var err error
		res, err = n.cni().AddNetworkList(ctx, list, p.RuntimeConf())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("CNI ADD %s on %s: %w", name, n.Name, err)
	}
	if p.Result, err = current.NewResultFromResult(res); err != nil {
		return nil, err
	}
	if len(p.Result.IPs) != 1 {
		return nil, fmt.Errorf("CNI ADD %s: %d IPs in the result", name, len(p.Result.IPs))
	}
	p.IP, _ = netip.AddrFromSlice(p.Result.IPs[0].Address.IP.To4())
	return p, nil
}

// Del runs CNI DEL for the pod through libcni (the namespace stays).
func (p *Pod) Del() error {
	list, err := libcni.ConfListFromBytes(p.Node.ConfList())
	if err != nil {
		return err
	}
	err = p.Node.NS.Do(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		return p.Node.cni().DelNetworkList(ctx, list, p.RuntimeConf())
	})
	if err != nil {
		return fmt.Errorf("CNI DEL %s on %s: %w", p.Name, p.Node.Name, err)
	}
	p.deleted = true
	return nil
}

// Listen opens a TCP listener inside the pod on port.
func (p *Pod) Listen(port int) (net.Listener, error) {
	var ln net.Listener
	err := p.NS.Do(func() (err error) {
		ln, err = net.Listen("tcp4", net.JoinHostPort("0.0.0.0", strconv.Itoa(port)))
		return err
	})
	return ln, err
}

// Dial connects from inside the pod.
func (p *Pod) Dial(network, addr string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := p.NS.Do(func() (err error) {
		c, err = net.DialTimeout(network, addr, timeout)
		return err
	})
	return c, err
}

func randomHex(n int) string {
	b := make([]byte, (n+1)/2)
	f, _ := os.Open("/dev/urandom")
	f.Read(b)
	f.Close()
	return fmt.Sprintf("%x", b)[:n]
}

// Do runs f inside the pod's network namespace.
func (p *Pod) Do(f func() error) error { return p.NS.Do(f) }
