package main

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net/netip"
	"os"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	pvmaps "github.com/podvnet/podvnet/pkg/maps"
	"github.com/podvnet/podvnet/pkg/node"
	"github.com/podvnet/podvnet/pkg/paths"
	"github.com/podvnet/podvnet/pkg/policy"
)

// policyEndpointRow is one endpoint as `debug policy -o json` prints it:
// its NetworkPolicy as the maps hold it.
type policyEndpointRow struct {
	IP           string             `json:"ip"`
	PodNamespace string             `json:"pod_namespace"`
	PodName      string             `json:"pod_name"`
	PolicyID     uint32             `json:"policy_id"`
	Identity     uint32             `json:"identity"`
	Ingress      policyDirectionRow `json:"ingress"`
	Egress       policyDirectionRow `json:"egress"`
}

// policyDirectionRow is one direction of an endpoint: open (no policy
// isolates it), isolated, or pending (isolated, its rules not written yet).
type policyDirectionRow struct {
	State       string          `json:"state"`
	Flows       uint64          `json:"flows"`
	Denied      uint64          `json:"denied_packets"`
	DeniedBytes uint64          `json:"denied_bytes"`
	Rules       []policyRuleRow `json:"rules"`
}

// policyRuleRow is one entry of the rules: the set for every peer ("any"),
// a peer identity's ("identity"), or an ipBlock prefix's ("cidr"), with
// the new flows it allowed.
type policyRuleRow struct {
	Peer        string   `json:"peer"`
	Identity    uint32   `json:"identity,omitempty"`
	Labels      string   `json:"labels,omitempty"`
	IPs         []string `json:"ips,omitempty"`
	CIDR        string   `json:"cidr,omitempty"`
	Ports       []string `json:"ports"`
	ExceptPorts []string `json:"except_ports,omitempty"`
	Flows       uint64   `json:"flows"`
}

func newDebugPolicyCommand(p *paths.Node) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "policy [POD]",
		Short: "NetworkPolicy in force per endpoint, as the maps hold it, with the flows each rule allowed and the drops",
		Long: `policy shows, for every endpoint of this node (or POD: namespace/name or
IP), each direction: open (no NetworkPolicy isolates it), isolated or pending;
the rules the maps hold (the ports every peer may use, each peer identity's
ports, each ipBlock prefix's ports and excepted ports) with the new flows
each allowed; and the packets dropped.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			set, err := pvmaps.OpenPinned(p.BPFFSRoot)
			if err != nil {
				return err
			}
			defer set.Close()
			names, ids := policyNames(cmd.ErrOrStderr(), *p)
			rows, err := policyRows(set, names, ids)
			if err != nil {
				return err
			}
			if len(args) == 1 {
				if rows = filterPolicyRows(rows, args[0]); len(rows) == 0 {
					return fmt.Errorf("no endpoint %s on this node", args[0])
				}
			}
			return printPolicy(cmd.OutOrStdout(), output, rows)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	return cmd
}

// podName is namespace and name.
type podName struct{ namespace, name string }

// policyNames reads who each endpoint is (the allocations) and what each
// identity stands for (the agent's identities file); without them the
// rows still show numbers and addresses, and a warning says why.
func policyNames(warn io.Writer, p paths.Node) (map[netip.Addr]podName, map[uint32]policy.Identity) {
	names := map[netip.Addr]podName{}
	if st, err := node.ReadState(p); err != nil {
		fmt.Fprintf(warn, "warning: pod names unknown: %v\n", err)
	} else {
		for _, al := range st.Allocations {
			names[al.IP] = podName{al.PodNamespace, al.PodName}
		}
	}
	ids := map[uint32]policy.Identity{}
	b, err := os.ReadFile(p.PolicyIdentitiesFile())
	var list []policy.Identity
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err == nil && json.Unmarshal(b, &list) == nil:
		for _, id := range list {
			ids[id.ID] = id
		}
	default:
		fmt.Fprintf(warn, "warning: identity labels unknown: %s: %v\n", p.PolicyIdentitiesFile(), err)
	}
	return names, ids
}

func policyRows(set *pvmaps.Set, names map[netip.Addr]podName, ids map[uint32]policy.Identity) ([]policyEndpointRow, error) {
	eps, err := set.Endpoints.List()
	if err != nil {
		return nil, err
	}
	peers, err := set.Policy.Peers()
	if err != nil {
		return nil, err
	}
	cidrs, err := set.Policy.CIDRs()
	if err != nil {
		return nil, err
	}
	sets, err := set.Policy.PortSets()
	if err != nil {
		return nil, err
	}
	ipc, err := set.Policy.Identities()
	if err != nil {
		return nil, err
	}
	holders := map[uint32][]string{}
	for _, ip := range slices.SortedFunc(maps.Keys(ipc), netip.Addr.Compare) {
		holders[ipc[ip]] = append(holders[ipc[ip]], ip.String())
	}
	ports := func(set uint32) []string {
		out := []string{}
		for _, r := range sets[set] {
			out = append(out, r.String())
		}
		return out
	}
	var rows []policyEndpointRow
	for _, e := range eps {
		n := names[e.IP]
		row := policyEndpointRow{IP: e.IP.String(), PodNamespace: n.namespace, PodName: n.name, PolicyID: e.PolicyID,
			Identity: ipc[e.IP]}
		var rec pvmaps.PolicyEndpoint
		var st pvmaps.PolicyStats
		if e.PolicyID != 0 {
			if rec, err = set.Policy.Endpoint(e.PolicyID); err != nil {
				return nil, err
			}
			if st, err = set.Policy.Stats(e.PolicyID); err != nil {
				return nil, err
			}
		}
		for _, d := range []struct {
			dir      uint8
			out      *policyDirectionRow
			isolated uint32
			pending  uint32
			any      uint32
		}{
			{pvmaps.DirIngress, &row.Ingress, pvmaps.EndpointPolicyIngress, pvmaps.PolicyIngressPending, rec.IngressPorts},
			{pvmaps.DirEgress, &row.Egress, pvmaps.EndpointPolicyEgress, pvmaps.PolicyEgressPending, rec.EgressPorts},
		} {
			*d.out = policyDirectionRow{State: "open", Flows: st.Flows[d.dir], Denied: st.Denied[d.dir], DeniedBytes: st.DeniedBytes[d.dir],
				Rules: []policyRuleRow{}}
			switch {
			case e.Flags&d.isolated == 0:
				continue
			case rec.Flags&d.pending != 0:
				d.out.State = "pending"
			default:
				d.out.State = "isolated"
			}
			if d.any != 0 {
				d.out.Rules = append(d.out.Rules, policyRuleRow{Peer: "any", Ports: ports(d.any), Flows: st.AnyFlows[d.dir]})
			}
			for _, pe := range peers {
				if pe.Endpoint != e.PolicyID || pe.Dir != d.dir {
					continue
				}
				r := policyRuleRow{Peer: "identity", Identity: pe.Peer, IPs: holders[pe.Peer], Ports: ports(pe.Ports), Flows: pe.Flows}
				if id, ok := ids[pe.Peer]; ok {
					r.Labels = id.String()
				}
				d.out.Rules = append(d.out.Rules, r)
			}
			for _, c := range cidrs {
				if c.Endpoint != e.PolicyID || c.Dir != d.dir {
					continue
				}
				r := policyRuleRow{Peer: "cidr", CIDR: c.Prefix.String(), Ports: ports(c.Ports), Flows: c.Flows}
				if c.ExceptPorts != 0 {
					r.ExceptPorts = ports(c.ExceptPorts)
				}
				d.out.Rules = append(d.out.Rules, r)
			}
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// filterPolicyRows keeps the endpoint a POD argument names: namespace/name
// or an IP.
func filterPolicyRows(rows []policyEndpointRow, pod string) []policyEndpointRow {
	return slices.DeleteFunc(slices.Clone(rows), func(r policyEndpointRow) bool {
		return r.IP != pod && r.PodNamespace+"/"+r.PodName != pod
	})
}

func printPolicy(w io.Writer, output string, rows []policyEndpointRow) error {
	if rows == nil {
		rows = []policyEndpointRow{}
	}
	return render(w, output, rows, func(tw *tabwriter.Writer) string {
		fmt.Fprintln(tw, "POD\tIP\tDIRECTION\tSTATE\tPEER\tPORTS\tFLOWS")
		isolated := 0
		for _, r := range rows {
			pod := podString(r.PodNamespace, r.PodName)
			if r.Ingress.State != "open" || r.Egress.State != "open" {
				isolated++
			}
			for _, d := range []struct {
				name string
				row  policyDirectionRow
			}{{"ingress", r.Ingress}, {"egress", r.Egress}} {
				if d.row.State == "open" {
					fmt.Fprintf(tw, "%s\t%s\t%s\topen\t-\t-\t%d\n", pod, r.IP, d.name, d.row.Flows)
					continue
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t(denied)\t-\t%d packets\n", pod, r.IP, d.name, d.row.State, d.row.Denied)
				for _, rule := range d.row.Rules {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\n", pod, r.IP, d.name, d.row.State, rule.describe(),
						dash(strings.Join(rule.Ports, ",")), rule.Flows)
				}
			}
		}
		return fmt.Sprintf("%s, %d isolated", count(len(rows), "endpoint", "endpoints"), isolated)
	})
}

// describe names a rule's peer for the table.
func (r policyRuleRow) describe() string {
	switch r.Peer {
	case "identity":
		s := fmt.Sprintf("identity %d", r.Identity)
		if r.Labels != "" {
			s += " (" + r.Labels + ")"
		}
		if len(r.IPs) > 0 {
			s += " " + strings.Join(r.IPs[:min(2, len(r.IPs))], ",")
			if len(r.IPs) > 2 {
				s += fmt.Sprintf(" +%d", len(r.IPs)-2)
			}
		}
		return s
	case "cidr":
		if len(r.ExceptPorts) > 0 {
			return r.CIDR + " (except " + strings.Join(r.ExceptPorts, ",") + ")"
		}
		return r.CIDR
	}
	return cmp.Or(r.Peer, "-")
}
