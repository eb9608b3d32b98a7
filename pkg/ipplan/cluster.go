// Package ipplan checks a cluster's address ranges against each other the
// way Azure checks them for Azure CNI clusters, and plans a subnet's
// addresses for N nodes of M pods. It is pure Go: `podvnet-agent run` and
// `plan` apply the same rules.
package ipplan

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// Defaults are AKS's: what kube-proxy and the kubelet use unless told
// otherwise.
const (
	DefaultServiceCIDR      = "10.0.0.0/16"
	DefaultDNSServiceIP     = "10.0.0.10"
	DefaultDockerBridgeCIDR = "172.17.0.1/16"
)

// Names are what errors call each setting, as the caller's user knows it:
// cmd/agent passes its flag names, so that an error names the flag to
// change.
type Names struct {
	Subnet, Nodes, MaxPods, ExtraIPs                    string // of a plan
	NoSNAT, ServiceCIDR, DNSServiceIP, DockerBridgeCIDR string // of a cluster
}

// Cluster is the set of ranges that must not collide. A zero prefix or
// address is a setting that is not given, and is not checked.
type Cluster struct {
	Subnet           netip.Prefix   // the node subnet pods' IPs come from
	NoSNAT           []netip.Prefix // VNet, peered and on-premises ranges
	ServiceCIDR      netip.Prefix
	DNSServiceIP     netip.Addr
	DockerBridgeCIDR netip.Prefix
	Names            Names // what the errors call the settings
}

// ParseCIDR parses an IPv4 CIDR given as the setting name; "" is unset.
// Host bits are allowed (AKS's docker bridge default is 172.17.0.1/16).
func ParseCIDR(name, s string) (netip.Prefix, error) {
	if s == "" {
		return netip.Prefix{}, nil
	}
	p, err := netip.ParsePrefix(strings.TrimSpace(s))
	if err != nil || !p.Addr().Is4() {
		return netip.Prefix{}, fmt.Errorf("%s %q: not an IPv4 CIDR", name, s)
	}
	return p, nil
}

// ParseIP parses an IPv4 address given as the setting name; "" is unset.
func ParseIP(name, s string) (netip.Addr, error) {
	if s == "" {
		return netip.Addr{}, nil
	}
	a, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil || !a.Is4() {
		return netip.Addr{}, fmt.Errorf("%s %q: not an IPv4 address", name, s)
	}
	return a, nil
}

// ParseCluster reads the settings' values, reporting every one that does
// not parse; subnet and noSNAT are already parsed.
func ParseCluster(names Names, subnet netip.Prefix, noSNAT []netip.Prefix, serviceCIDR, dnsServiceIP, dockerBridgeCIDR string) (Cluster, error) {
	c := Cluster{Subnet: subnet, NoSNAT: noSNAT, Names: names}
	var errs []error
	var err error
	if c.ServiceCIDR, err = ParseCIDR(names.ServiceCIDR, serviceCIDR); err != nil {
		errs = append(errs, err)
	}
	if c.DNSServiceIP, err = ParseIP(names.DNSServiceIP, dnsServiceIP); err != nil {
		errs = append(errs, err)
	}
	if c.DockerBridgeCIDR, err = ParseCIDR(names.DockerBridgeCIDR, dockerBridgeCIDR); err != nil {
		errs = append(errs, err)
	}
	return c, errors.Join(errs...)
}

// Problems applies Azure's rules and returns every violation, each naming
// the setting, its value and what it collides with:
//   - the Service CIDR overlaps neither the node subnet nor a no-SNAT range
//     (Service traffic must reach kube-proxy, not the VNet);
//   - the DNS service IP lies in the Service CIDR and is neither its network
//     address nor its first address (the kubernetes Service's);
//   - the Docker bridge CIDR overlaps neither the subnet, nor a no-SNAT
//     range, nor the Service CIDR.
func (c Cluster) Problems() []error {
	var errs []error
	collide := func(name string, p netip.Prefix) {
		if c.Subnet.IsValid() && p.Overlaps(c.Subnet) {
			errs = append(errs, fmt.Errorf("%s %s overlaps the node subnet %s", name, p, c.Subnet))
		}
		for _, n := range c.NoSNAT {
			if p.Overlaps(n) {
				errs = append(errs, fmt.Errorf("%s %s overlaps %s range %s", name, p, c.Names.NoSNAT, n))
			}
		}
	}
	svc := c.ServiceCIDR.Masked()
	if c.ServiceCIDR.IsValid() {
		collide(c.Names.ServiceCIDR, c.ServiceCIDR)
	}
	if c.DNSServiceIP.IsValid() {
		switch {
		case !c.ServiceCIDR.IsValid():
			errs = append(errs, fmt.Errorf("%s %s needs %s to lie in", c.Names.DNSServiceIP, c.DNSServiceIP, c.Names.ServiceCIDR))
		case !svc.Contains(c.DNSServiceIP):
			errs = append(errs, fmt.Errorf("%s %s is outside %s %s", c.Names.DNSServiceIP, c.DNSServiceIP, c.Names.ServiceCIDR, c.ServiceCIDR))
		case c.DNSServiceIP == svc.Addr():
			errs = append(errs, fmt.Errorf("%s %s is the network address of %s %s", c.Names.DNSServiceIP, c.DNSServiceIP, c.Names.ServiceCIDR, c.ServiceCIDR))
		case c.DNSServiceIP == svc.Addr().Next():
			errs = append(errs, fmt.Errorf("%s %s is the first address of %s %s, which the kubernetes Service uses",
				c.Names.DNSServiceIP, c.DNSServiceIP, c.Names.ServiceCIDR, c.ServiceCIDR))
		}
	}
	if c.DockerBridgeCIDR.IsValid() {
		collide(c.Names.DockerBridgeCIDR, c.DockerBridgeCIDR)
		if c.ServiceCIDR.IsValid() && c.DockerBridgeCIDR.Overlaps(c.ServiceCIDR) {
			errs = append(errs, fmt.Errorf("%s %s overlaps %s %s", c.Names.DockerBridgeCIDR, c.DockerBridgeCIDR, c.Names.ServiceCIDR, c.ServiceCIDR))
		}
	}
	return errs
}

// Validate is Problems as one error, nil when there is none.
func (c Cluster) Validate() error { return errors.Join(c.Problems()...) }
