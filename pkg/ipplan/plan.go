package ipplan

import (
	"fmt"
	"net/netip"
)

// AzureReservedPerSubnet is what Azure keeps of every subnet: the network
// address, the default gateway (.1), two DNS addresses (.2, .3) and the
// broadcast address.
const AzureReservedPerSubnet = 5

// MaxVNetAddresses is the most addresses Azure CNI supports in a VNet used
// for pods; a plan above it gets a warning.
const MaxVNetAddresses = 4096

// PlanInput is what an operator plans with.
type PlanInput struct {
	Subnet   netip.Prefix
	Nodes    int
	MaxPods  int
	ExtraIPs int   // addresses for anything else in the subnet (VMs, load balancers, surge nodes)
	Names    Names // what the errors call the inputs
}

// Plan is the arithmetic of a subnet for N nodes of M pods each, as Azure
// CNI needs it: every node takes its primary IP and one secondary IP per
// pod, up front.
type Plan struct {
	PlanInput
	PerNode   int   // max pods + the node's own IP
	Reserved  int   // Azure's per-subnet reservation
	Needed    int64 // nodes x per node + extra IPs + reserved
	Available int64 // addresses in the subnet
	Fits      bool
	MaxNodes  int64 // the largest node count that fits
	Warnings  []string
}

// NewPlan does the arithmetic.
func NewPlan(in PlanInput) (Plan, error) {
	switch {
	case !in.Subnet.IsValid() || !in.Subnet.Addr().Is4():
		return Plan{}, fmt.Errorf("%s %q: not an IPv4 CIDR", in.Names.Subnet, in.Subnet)
	case in.Nodes < 1:
		return Plan{}, fmt.Errorf("%s %d: must be at least 1", in.Names.Nodes, in.Nodes)
	case in.MaxPods < 1:
		return Plan{}, fmt.Errorf("%s %d: must be at least 1", in.Names.MaxPods, in.MaxPods)
	case in.ExtraIPs < 0:
		return Plan{}, fmt.Errorf("%s %d: must not be negative", in.Names.ExtraIPs, in.ExtraIPs)
	}
	in.Subnet = in.Subnet.Masked()
	p := Plan{PlanInput: in, PerNode: in.MaxPods + 1, Reserved: AzureReservedPerSubnet}
	p.Available = int64(1) << (32 - in.Subnet.Bits())
	p.Needed = int64(in.Nodes)*int64(p.PerNode) + int64(in.ExtraIPs) + int64(p.Reserved)
	p.Fits = p.Needed <= p.Available
	p.MaxNodes = max(0, (p.Available-int64(in.ExtraIPs)-int64(p.Reserved))/int64(p.PerNode))
	if p.Available > MaxVNetAddresses {
		p.Warnings = append(p.Warnings, fmt.Sprintf("subnet %s has %d addresses, more than the %d Azure CNI supports in a VNet used for pods",
			in.Subnet, p.Available, MaxVNetAddresses))
	}
	return p, nil
}
