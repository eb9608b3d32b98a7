package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/podvnet/podvnet/pkg/ipplan"
)

// planOutput is a plan as `plan -o json` prints it.
type planOutput struct {
	Subnet    string   `json:"subnet"`
	Addresses int64    `json:"addresses"`
	Nodes     int      `json:"nodes"`
	MaxPods   int      `json:"max_pods"`
	PerNode   int      `json:"per_node"`
	ExtraIPs  int      `json:"extra_ips"`
	Reserved  int      `json:"reserved"`
	Needed    int64    `json:"needed"`
	Fits      bool     `json:"fits"`
	MaxNodes  int64    `json:"max_nodes"`
	Warnings  []string `json:"warnings"`
	Problems  []string `json:"problems"`
}

func newPlanCommand() *cobra.Command {
	var (
		subnet, output string
		in             ipplan.PlanInput
		noSNAT         []string
		cluster        clusterFlags
	)
	cmd := &cobra.Command{
		Use:   "plan --subnet CIDR --nodes N",
		Short: "Check that a subnet holds N nodes of --max-pods pods, and the cluster settings, before any node exists",
		Long: `Azure CNI gives every node its own IP and one secondary IP per pod up front, so a
subnet needs nodes x (max-pods + 1) + extra-ips + 5 addresses (Azure reserves 5 in every
subnet). plan prints that arithmetic, whether it fits, the largest node count that fits,
and checks the Service CIDR, DNS service IP and Docker bridge as 'run' does.
It exits 1 when the plan does not fit or a setting collides.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "table" && output != "json" {
				return fmt.Errorf("-o %q: want table or json", output)
			}
			var err error
			if in.Subnet, err = ipplan.ParseCIDR(ipplanNames.Subnet, subnet); err != nil {
				return err
			}
			in.Names = ipplanNames
			p, err := ipplan.NewPlan(in)
			if err != nil {
				return err
			}
			nets, err := parseNoSNAT(noSNAT)
			if err != nil {
				return err
			}
			c, err := cluster.parse(p.Subnet, nets)
			if err != nil {
				return err
			}
			out := planOutput{
				Subnet: p.Subnet.String(), Addresses: p.Available, Nodes: p.Nodes, MaxPods: p.MaxPods, PerNode: p.PerNode,
				ExtraIPs: p.ExtraIPs, Reserved: p.Reserved, Needed: p.Needed, Fits: p.Fits, MaxNodes: p.MaxNodes,
				Warnings: append([]string{}, p.Warnings...), Problems: []string{},
			}
			problems := c.Problems()
			for _, e := range problems {
				out.Problems = append(out.Problems, e.Error())
			}
			if err := printPlan(cmd.OutOrStdout(), output, out); err != nil {
				return err
			}
			var errs []error
			if !p.Fits {
				errs = append(errs, fmt.Errorf("the plan does not fit: %d addresses needed, %s has %d (at most %d nodes of %d pods)",
					p.Needed, p.Subnet, p.Available, p.MaxNodes, p.MaxPods))
			}
			if len(problems) > 0 {
				errs = append(errs, fmt.Errorf("cluster settings: %w", errors.Join(problems...)))
			}
			return errors.Join(errs...)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&subnet, flagSubnet, "", "the node subnet (required), e.g. 10.240.0.0/16")
	fl.IntVar(&in.Nodes, flagNodes, 0, "how many nodes (required)")
	fl.IntVar(&in.MaxPods, flagMaxPods, 30, "pods per node")
	fl.IntVar(&in.ExtraIPs, flagExtraIPs, 0, "other addresses in the subnet: VMs, internal load balancers, surge nodes during upgrades")
	fl.StringSliceVar(&noSNAT, flagNoSNAT, nil, "ranges pods reach without SNAT (VNet, peered VNets, on-premises)")
	cluster.register(fl)
	fl.StringVarP(&output, "output", "o", "table", "table or json")
	cmd.MarkFlagRequired(flagSubnet)
	cmd.MarkFlagRequired(flagNodes)
	return cmd
}

func printPlan(w io.Writer, output string, p planOutput) error {
	if output == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(p)
	}
	fits := "no"
	if p.Fits {
		fits = "yes"
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "SUBNET\t%s\n", p.Subnet)
	fmt.Fprintf(tw, "ADDRESSES\t%d\n", p.Addresses)
	fmt.Fprintf(tw, "NODES\t%d\n", p.Nodes)
	fmt.Fprintf(tw, "MAX PODS\t%d\n", p.MaxPods)
	fmt.Fprintf(tw, "PER NODE\t%d (max pods + the node's own IP)\n", p.PerNode)
	fmt.Fprintf(tw, "EXTRA IPS\t%d\n", p.ExtraIPs)
	fmt.Fprintf(tw, "RESERVED\t%d (by Azure in every subnet)\n", p.Reserved)
	fmt.Fprintf(tw, "NEEDED\t%d (%d x %d + %d + %d)\n", p.Needed, p.Nodes, p.PerNode, p.ExtraIPs, p.Reserved)
	fmt.Fprintf(tw, "FITS\t%s\n", fits)
	fmt.Fprintf(tw, "MAX NODES\t%d\n", p.MaxNodes)
	tw.Flush()
	for _, s := range p.Warnings {
		fmt.Fprintf(w, "warning: %s\n", s)
	}
	for _, s := range p.Problems {
		fmt.Fprintf(w, "problem: %s\n", s)
	}
	return nil
}
