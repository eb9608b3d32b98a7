// Package config checks the cluster settings podvnet depends on the way
// Azure checks them for Azure CNI clusters, and plans a subnet's addresses.
// It is pure Go: `podvnet-agent run` and `plan` apply the same rules.
package config

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

// Flag names, as the errors print them.
const (
	FlagServiceCIDR      = "--service-cidr"
	FlagDNSServiceIP     = "--dns-service-ip"
	FlagDockerBridgeCIDR = "--docker-bridge-cidr"
	FlagNoSNATCIDRs      = "--no-snat-cidrs"
)

// Cluster is the set of ranges that must not collide. A zero prefix or
// address is a setting that is not given, and is not checked.
type Cluster struct {
	Subnet           netip.Prefix   // the node subnet pods' IPs come from
	NoSNAT           []netip.Prefix // VNet, peered and on-premises ranges
	ServiceCIDR      netip.Prefix
	DNSServiceIP     netip.Addr
	DockerBridgeCIDR netip.Prefix
}

// ParseCIDR parses an IPv4 CIDR given to flag; "" is unset. Host bits are
// allowed (AKS's docker bridge default is 172.17.0.1/16).
func ParseCIDR(flag, s string) (netip.Prefix, error) {
	if s == "" {
		return netip.Prefix{}, nil
	}
	p, err := netip.ParsePrefix(strings.TrimSpace(s))
	if err != nil || !p.Addr().Is4() {
		return netip.Prefix{}, fmt.Errorf("%s %q: not an IPv4 CIDR", flag, s)
	}
	return p, nil
}

// ParseIP parses an IPv4 address given to flag; "" is unset.
func ParseIP(flag, s string) (netip.Addr, error) {
	if s == "" {
		return netip.Addr{}, nil
	}
	a, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil || !a.Is4() {
		return netip.Addr{}, fmt.Errorf("%s %q: not an IPv4 address", flag, s)
	}
	return a, nil
}

// ParseCluster reads the flags' values; subnet and noSNAT are already parsed.
func ParseCluster(subnet netip.Prefix, noSNAT []netip.Prefix, serviceCIDR, dnsServiceIP, dockerBridgeCIDR string) (Cluster, error) {
	c := Cluster{Subnet: subnet, NoSNAT: noSNAT}
	var errs []error
	var err error
	if c.ServiceCIDR, err = ParseCIDR(FlagServiceCIDR, serviceCIDR); err != nil {
		errs = append(errs, err)
	}
	if c.DNSServiceIP, err = ParseIP(FlagDNSServiceIP, dnsServiceIP); err != nil {
		errs = append(errs, err)
	}
	if c.DockerBridgeCIDR, err = ParseCIDR(FlagDockerBridgeCIDR, dockerBridgeCIDR); err != nil {
		errs = append(errs, err)
	}
	return c, errors.Join(errs...)
}

// Problems applies Azure's rules and returns every violation, each naming
// the flag, its value and what it collides with:
//   - the Service CIDR overlaps neither the node subnet nor a no-SNAT range
//     (Service traffic must reach kube-proxy, not the VNet);
//   - the DNS service IP lies in the Service CIDR and is neither its network
//     address nor its first address (the kubernetes Service's);
//   - the Docker bridge CIDR overlaps neither the subnet, nor a no-SNAT
//     range, nor the Service CIDR.
func (c Cluster) Problems() []error {
	var errs []error
	collide := func(flag string, p netip.Prefix) {
		if c.Subnet.IsValid() && p.Overlaps(c.Subnet) {
			errs = append(errs, fmt.Errorf("%s %s overlaps the node subnet %s", flag, p, c.Subnet))
		}
		for _, n := range c.NoSNAT {
			if p.Overlaps(n) {
				errs = append(errs, fmt.Errorf("%s %s overlaps %s range %s", flag, p, FlagNoSNATCIDRs, n))
			}
		}
	}
	svc := c.ServiceCIDR.Masked()
	if c.ServiceCIDR.IsValid() {
		collide(FlagServiceCIDR, c.ServiceCIDR)
	}
	if c.DNSServiceIP.IsValid() {
		switch {
		case !c.ServiceCIDR.IsValid():
			errs = append(errs, fmt.Errorf("%s %s needs %s to lie in", FlagDNSServiceIP, c.DNSServiceIP, FlagServiceCIDR))
		case !svc.Contains(c.DNSServiceIP):
			errs = append(errs, fmt.Errorf("%s %s is outside %s %s", FlagDNSServiceIP, c.DNSServiceIP, FlagServiceCIDR, c.ServiceCIDR))
		case c.DNSServiceIP == svc.Addr():
			errs = append(errs, fmt.Errorf("%s %s is the network address of %s %s", FlagDNSServiceIP, c.DNSServiceIP, FlagServiceCIDR, c.ServiceCIDR))
		case c.DNSServiceIP == svc.Addr().Next():
			errs = append(errs, fmt.Errorf("%s %s is the first address of %s %s, which the kubernetes Service uses",
				FlagDNSServiceIP, c.DNSServiceIP, FlagServiceCIDR, c.ServiceCIDR))
		}
	}
	if c.DockerBridgeCIDR.IsValid() {
		collide(FlagDockerBridgeCIDR, c.DockerBridgeCIDR)
		if c.ServiceCIDR.IsValid() && c.DockerBridgeCIDR.Overlaps(c.ServiceCIDR) {
			errs = append(errs, fmt.Errorf("%s %s overlaps %s %s", FlagDockerBridgeCIDR, c.DockerBridgeCIDR, FlagServiceCIDR, c.ServiceCIDR))
		}
	}
	return errs
}

// Validate is Problems as one error, nil when there is none.
func (c Cluster) Validate() error { return errors.Join(c.Problems()...) }
