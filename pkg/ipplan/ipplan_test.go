package ipplan

import (
	"net/netip"
	"strings"
	"testing"
)

// names are the flag names cmd/agent passes, so the messages read as users
// see them.
var names = Names{Subnet: "--subnet", Nodes: "--nodes", MaxPods: "--max-pods", ExtraIPs: "--extra-ips",
	NoSNAT: "--no-snat-cidrs", ServiceCIDR: "--service-cidr", DNSServiceIP: "--dns-service-ip", DockerBridgeCIDR: "--docker-bridge-cidr"}

func TestValidateCluster(t *testing.T) {
	subnet := netip.MustParsePrefix("10.240.0.0/16")
	tests := []struct {
		name                 string
		noSNAT               []string
		service, dns, docker string
		wantErrs             []string // each must appear; none means valid
	}{
		{name: "AKS defaults", service: DefaultServiceCIDR, dns: DefaultDNSServiceIP, docker: DefaultDockerBridgeCIDR},
		{name: "nothing set"},
		{name: "with peered ranges", noSNAT: []string{"10.241.0.0/16", "192.168.0.0/16"}, service: "10.0.0.0/16", dns: "10.0.0.10", docker: "172.17.0.1/16"},
		{
			name: "service CIDR overlaps the subnet", service: "10.240.128.0/20", dns: "10.240.128.10",
			wantErrs: []string{"--service-cidr 10.240.128.0/20 overlaps the node subnet 10.240.0.0/16"},
		},
		{
			name: "service CIDR holds the subnet", service: "10.0.0.0/8", dns: "10.0.0.10",
			wantErrs: []string{"--service-cidr 10.0.0.0/8 overlaps the node subnet 10.240.0.0/16"},
		},
		{
			name: "service CIDR overlaps a no-SNAT range", noSNAT: []string{"10.241.0.0/16", "10.0.0.0/12"}, service: "10.0.0.0/16", dns: "10.0.0.10",
			wantErrs: []string{"--service-cidr 10.0.0.0/16 overlaps --no-snat-cidrs range 10.0.0.0/12"},
		},
		{
			name: "DNS IP outside the service CIDR", service: "10.0.0.0/16", dns: "10.1.0.10",
			wantErrs: []string{"--dns-service-ip 10.1.0.10 is outside --service-cidr 10.0.0.0/16"},
		},
		{
			name: "DNS IP is the network address", service: "10.0.0.0/16", dns: "10.0.0.0",
			wantErrs: []string{"--dns-service-ip 10.0.0.0 is the network address of --service-cidr 10.0.0.0/16"},
		},
		{
			name: "DNS IP is the kubernetes Service's", service: "10.0.0.0/16", dns: "10.0.0.1",
			wantErrs: []string{"--dns-service-ip 10.0.0.1 is the first address of --service-cidr 10.0.0.0/16, which the kubernetes Service uses"},
		},
		{
			name: "DNS IP without a service CIDR", dns: "10.0.0.10",
			wantErrs: []string{"--dns-service-ip 10.0.0.10 needs --service-cidr"},
		},
		{
			name: "docker bridge overlaps the subnet", service: "10.0.0.0/16", dns: "10.0.0.10", docker: "10.240.5.1/24",
			wantErrs: []string{"--docker-bridge-cidr 10.240.5.1/24 overlaps the node subnet 10.240.0.0/16"},
		},
		{
			name: "docker bridge overlaps a no-SNAT range", noSNAT: []string{"172.16.0.0/12"}, service: "10.0.0.0/16", dns: "10.0.0.10", docker: "172.17.0.1/16",
			wantErrs: []string{"--docker-bridge-cidr 172.17.0.1/16 overlaps --no-snat-cidrs range 172.16.0.0/12"},
		},
		{
			name: "docker bridge overlaps the service CIDR", service: "172.17.0.0/16", dns: "172.17.0.10", docker: "172.17.0.1/16",
			wantErrs: []string{"--docker-bridge-cidr 172.17.0.1/16 overlaps --service-cidr 172.17.0.0/16"},
		},
		{
			name: "every problem is reported at once", service: "10.240.0.0/16", dns: "10.1.0.1", docker: "10.240.0.1/24",
			wantErrs: []string{
				"--service-cidr 10.240.0.0/16 overlaps the node subnet",
				"--dns-service-ip 10.1.0.1 is outside --service-cidr",
				"--docker-bridge-cidr 10.240.0.1/24 overlaps the node subnet",
				"--docker-bridge-cidr 10.240.0.1/24 overlaps --service-cidr 10.240.0.0/16",
			},
		},
		{name: "service CIDR not a CIDR", service: "10.0.0.0", wantErrs: []string{`--service-cidr "10.0.0.0": not an IPv4 CIDR`}},
		{name: "service CIDR IPv6", service: "fd00::/108", wantErrs: []string{`--service-cidr "fd00::/108": not an IPv4 CIDR`}},
		{name: "DNS IP not an IP", service: "10.0.0.0/16", dns: "10.0.0.300", wantErrs: []string{`--dns-service-ip "10.0.0.300": not an IPv4 address`}},
		{name: "docker bridge not a CIDR", docker: "docker0", wantErrs: []string{`--docker-bridge-cidr "docker0": not an IPv4 CIDR`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var noSNAT []netip.Prefix
			for _, s := range tt.noSNAT {
				noSNAT = append(noSNAT, netip.MustParsePrefix(s))
			}
			c, err := ParseCluster(names, subnet, noSNAT, tt.service, tt.dns, tt.docker)
			if err == nil {
				err = c.Validate()
			}
			if len(tt.wantErrs) == 0 {
				if err != nil {
					t.Fatalf("valid settings refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("settings accepted, want errors %q", tt.wantErrs)
			}
			for _, want := range tt.wantErrs {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
			if got := strings.Count(err.Error(), "\n") + 1; got != len(tt.wantErrs) {
				t.Errorf("%d errors, want %d:\n%v", got, len(tt.wantErrs), err)
			}
		})
	}
}

func TestPlan(t *testing.T) {
	tests := []struct {
		name                     string
		in                       PlanInput
		needed, available, nodes int64
		fits                     bool
		warn                     string
	}{
		// 50 x (30 + 1) + 5 reserved = 1555 addresses; a /21 has 2048.
		{name: "50 nodes of 30 pods in a /21", in: PlanInput{Subnet: netip.MustParsePrefix("10.240.0.0/21"), Nodes: 50, MaxPods: 30},
			needed: 1555, available: 2048, nodes: 65, fits: true},
		{name: "does not fit a /22", in: PlanInput{Subnet: netip.MustParsePrefix("10.240.0.0/22"), Nodes: 50, MaxPods: 30},
			needed: 1555, available: 1024, nodes: 32, fits: false},
		{name: "exactly full", in: PlanInput{Subnet: netip.MustParsePrefix("10.240.0.0/24"), Nodes: 1, MaxPods: 250},
			needed: 256, available: 256, nodes: 1, fits: true},
		{name: "one address short", in: PlanInput{Subnet: netip.MustParsePrefix("10.240.0.0/24"), Nodes: 1, MaxPods: 250, ExtraIPs: 1},
			needed: 257, available: 256, nodes: 0, fits: false},
		{name: "extra IPs count", in: PlanInput{Subnet: netip.MustParsePrefix("10.240.0.0/24"), Nodes: 3, MaxPods: 30, ExtraIPs: 10},
			needed: 3*31 + 10 + 5, available: 256, nodes: 7, fits: true},
		{name: "host bits ignored", in: PlanInput{Subnet: netip.MustParsePrefix("10.240.3.7/24"), Nodes: 1, MaxPods: 30},
			needed: 36, available: 256, nodes: 8, fits: true},
		{name: "a /29 holds no node of 30 pods", in: PlanInput{Subnet: netip.MustParsePrefix("10.240.0.0/29"), Nodes: 1, MaxPods: 30},
			needed: 36, available: 8, nodes: 0, fits: false},
		{name: "a /16 is above Azure CNI's VNet limit", in: PlanInput{Subnet: netip.MustParsePrefix("10.240.0.0/16"), Nodes: 3, MaxPods: 30},
			needed: 98, available: 65536, nodes: 2113, fits: true, warn: "more than the 4096 Azure CNI supports"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.in.Names = names
			p, err := NewPlan(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if p.Needed != tt.needed || p.Available != tt.available || p.MaxNodes != tt.nodes || p.Fits != tt.fits {
				t.Fatalf("needed %d available %d max nodes %d fits %v; want %d %d %d %v",
					p.Needed, p.Available, p.MaxNodes, p.Fits, tt.needed, tt.available, tt.nodes, tt.fits)
			}
			// The largest node count fits, and one more does not.
			if tt.nodes > 0 {
				at, _ := NewPlan(PlanInput{Subnet: tt.in.Subnet, Nodes: int(tt.nodes), MaxPods: tt.in.MaxPods, ExtraIPs: tt.in.ExtraIPs})
				if !at.Fits {
					t.Errorf("max nodes %d does not fit", tt.nodes)
				}
			}
			above, _ := NewPlan(PlanInput{Subnet: tt.in.Subnet, Nodes: int(tt.nodes) + 1, MaxPods: tt.in.MaxPods, ExtraIPs: tt.in.ExtraIPs})
			if above.Fits {
				t.Errorf("max nodes %d + 1 fits too", tt.nodes)
			}
			warned := strings.Join(p.Warnings, "\n")
			if tt.warn == "" && warned != "" || !strings.Contains(warned, tt.warn) {
				t.Errorf("warnings %q, want %q", warned, tt.warn)
			}
		})
	}
}

func TestPlanRefusesNonsense(t *testing.T) {
	subnet := netip.MustParsePrefix("10.240.0.0/16")
	for _, tt := range []struct {
		in   PlanInput
		want string
	}{
		{PlanInput{Nodes: 1, MaxPods: 30}, "--subnet"},
		{PlanInput{Subnet: netip.MustParsePrefix("fd00::/64"), Nodes: 1, MaxPods: 30}, "--subnet"},
		{PlanInput{Subnet: subnet, Nodes: 0, MaxPods: 30}, "--nodes 0: must be at least 1"},
		{PlanInput{Subnet: subnet, Nodes: 1, MaxPods: 0}, "--max-pods 0: must be at least 1"},
		{PlanInput{Subnet: subnet, Nodes: 1, MaxPods: 30, ExtraIPs: -1}, "--extra-ips -1: must not be negative"},
	} {
		t.Run(tt.want, func(t *testing.T) {
			tt.in.Names = names
			if _, err := NewPlan(tt.in); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}
