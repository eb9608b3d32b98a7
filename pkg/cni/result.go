package cni

import (
	"fmt"
	"io"
	"net"
	"net/netip"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
)

// attachment is what ADD made, for the result.
type attachment struct {
	HostName, HostMAC string
	PodName, PodMAC   string
	Netns             string
	IP                netip.Prefix
	Gateway           netip.Addr
	MTU               int
}

// buildResult describes the attachment as a CNI result, appended to the
// prevResult when podvnet is not first in a chain, with DNS from the config.
func buildResult(conf *NetConf, a attachment) (*current.Result, error) {
	res := &current.Result{CNIVersion: current.ImplementedSpecVersion}
	if conf.PrevResult != nil {
		prev, err := current.NewResultFromResult(conf.PrevResult)
		if err != nil {
			return nil, fmt.Errorf("convert prevResult: %w", err)
		}
		res = prev
	}
	// Interface MTUs are a 1.1.0 field; older readers would not expect it.
	mtu := 0
	if ok, _ := version.GreaterThanOrEqualTo(conf.CNIVersion, "1.1.0"); ok {
		mtu = a.MTU
	}
	res.Interfaces = append(res.Interfaces,
		&current.Interface{Name: a.HostName, Mac: a.HostMAC, Mtu: mtu},
		&current.Interface{Name: a.PodName, Mac: a.PodMAC, Mtu: mtu, Sandbox: a.Netns})
	podIdx := len(res.Interfaces) - 1
	res.IPs = append(res.IPs, &current.IPConfig{
		Address:   *prefixNet(a.IP),
		Gateway:   a.Gateway.AsSlice(),
		Interface: current.Int(podIdx),
	})
	res.Routes = append(res.Routes, &types.Route{Dst: *defaultDst(), GW: net.IP(a.Gateway.AsSlice())})
	if !conf.DNS.IsEmpty() {
		res.DNS = conf.DNS
	}
	return res, nil
}

// printResult writes the result in the config's cniVersion: runtimes such
// as containerd 1.6 reject a newer one than they asked for.
func printResult(w io.Writer, res *current.Result, cniVersion string) error {
	r, err := res.GetAsVersion(cniVersion)
	if err != nil {
		return fmt.Errorf("convert result to cniVersion %s: %w", cniVersion, err)
	}
	if err := r.PrintTo(w); err != nil {
		return fmt.Errorf("print result: %w", err)
	}
	return nil
}
