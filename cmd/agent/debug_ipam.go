package main

import (
	"fmt"
	"io"
	"net/netip"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/podvnet/podvnet/pkg/ipam"
	"github.com/podvnet/podvnet/pkg/maps"
	"github.com/podvnet/podvnet/pkg/node"
	"github.com/podvnet/podvnet/pkg/paths"
	"github.com/podvnet/podvnet/pkg/settings"
)

// Address states `debug ipam` shows.
const (
	stateAllocated = "allocated"
	stateWithdrawn = "withdrawn" // held by a pod, no longer in the pool
	stateCooling   = "cooling"
	stateFree      = "free"
)

// ipamRow is one address as `debug ipam -o json` prints it.
type ipamRow struct {
	IP           string     `json:"ip"`
	State        string     `json:"state"`
	Network      string     `json:"network,omitempty"`
	ContainerID  string     `json:"container_id,omitempty"`
	IfName       string     `json:"ifname,omitempty"`
	PodNamespace string     `json:"pod_namespace,omitempty"`
	PodName      string     `json:"pod_name,omitempty"`
	HostIfName   string     `json:"host_ifname,omitempty"`
	Since        *time.Time `json:"since,omitempty"`
	CoolingUntil *time.Time `json:"cooling_until,omitempty"`
	// Warning names what is wrong with an allocated address.
	Warning string `json:"warning,omitempty"`
}

const (
	warnWithdrawn  = "held by a pod but no longer listed by the pool source: the fabric may not route it here"
	warnNoEndpoint = "allocated but not in the endpoints map: its pod gets no traffic (see debug doctor)"
)

func newDebugIPAMCommand(p *paths.Node) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "ipam",
		Short: "List the pool's addresses from the state file: allocated, withdrawn, cooling, free",
		Long: `Reads the agent's state file, so it works while the agent is down. An address is
"withdrawn" when a pod holds it but the pool source no longer lists it: the fabric may
not route it to this node any more, and it is not handed out again once released.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "table" && output != "json" {
				return fmt.Errorf("-o %q: want table or json", output)
			}
			st, err := node.ReadState(*p)
			if err != nil {
				return err
			}
			rows := ipamRows(st, time.Now())
			// An allocation whose endpoint is missing from the pinned map
			// is an address a pod holds but cannot use.
			if set, err := maps.OpenPinned(p.BPFFSRoot); err == nil {
				for i, r := range rows {
					ip, _ := netip.ParseAddr(r.IP)
					if _, ok, err := set.Endpoints.Get(ip); err == nil && !ok && r.State == stateAllocated {
						rows[i].Warning = warnNoEndpoint
					}
				}
				set.Close()
			} else {
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: endpoints not checked: %v\n", err)
			}
			var header string
			if s, err := settings.Read(*p); err == nil {
				header = fmt.Sprintf("NIC %s, subnet %s, primary %s, max pods %d (limit %d)", s.NIC, s.Subnet, s.Primary, s.MaxPods, s.PodLimit)
			}
			return printIPAM(cmd.OutOrStdout(), output, header, st, rows)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	return cmd
}

// ipamRows lists every address of the pool and every allocation, by IP.
func ipamRows(st *ipam.State, now time.Time) []ipamRow {
	inPool := map[netip.Addr]bool{}
	if st.Pool != nil {
		for _, ip := range st.Pool.Secondary {
			inPool[ip] = true
		}
	}
	rows := map[netip.Addr]ipamRow{}
	for _, al := range st.Allocations {
		state := stateAllocated
		warning := ""
		if st.Pool != nil && !inPool[al.IP] {
			state, warning = stateWithdrawn, warnWithdrawn
		}
		since := al.Since
		rows[al.IP] = ipamRow{
			IP: al.IP.String(), State: state, Network: al.Network, ContainerID: al.ContainerID, IfName: al.IfName,
			PodNamespace: al.PodNamespace, PodName: al.PodName, HostIfName: al.HostIfName, Since: &since, Warning: warning,
		}
	}
	for _, c := range st.Cooling {
		_, held := rows[c.IP]
		// A cooling address the pool dropped is gone, not coming back.
		if held || !now.Before(c.Until) || (st.Pool != nil && !inPool[c.IP]) {
			continue
		}
		until := c.Until
		rows[c.IP] = ipamRow{IP: c.IP.String(), State: stateCooling, CoolingUntil: &until}
	}
	for ip := range inPool {
		if _, ok := rows[ip]; !ok {
			rows[ip] = ipamRow{IP: ip.String(), State: stateFree}
		}
	}
	ips := make([]netip.Addr, 0, len(rows))
	for ip := range rows {
		ips = append(ips, ip)
	}
	slices.SortFunc(ips, netip.Addr.Compare)
	out := make([]ipamRow, 0, len(ips))
	for _, ip := range ips {
		out = append(out, rows[ip])
	}
	return out
}

func printIPAM(w io.Writer, output, header string, st *ipam.State, rows []ipamRow) error {
	return render(w, output, rows, func(tw *tabwriter.Writer) string {
		n := map[string]int{}
		if header != "" {
			fmt.Fprintln(w, header)
		}
		fmt.Fprintln(tw, "IP\tSTATE\tPOD\tCONTAINER ID\tIFNAME\tHOST IFNAME\tSINCE/UNTIL")
		for _, r := range rows {
			n[r.State]++
			when := ""
			if r.Since != nil {
				when = r.Since.UTC().Format(time.RFC3339)
			}
			if r.CoolingUntil != nil {
				when = r.CoolingUntil.UTC().Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.IP, r.State, podString(r.PodNamespace, r.PodName), dash(shortID(r.ContainerID)),
				dash(r.IfName), dash(r.HostIfName), dash(when))
		}
		pool := "pool not recorded yet"
		if st.Pool != nil {
			pool = fmt.Sprintf("%d in the pool of %s (node IP %s)", len(st.Pool.Secondary), st.Pool.Subnet, st.Pool.Primary)
		}
		footer := fmt.Sprintf("%s, %s: %d allocated, %d withdrawn, %d cooling, %d free", count(len(rows), "address", "addresses"),
			pool, n[stateAllocated], n[stateWithdrawn], n[stateCooling], n[stateFree])
		for _, r := range rows {
			if r.Warning != "" {
				footer += fmt.Sprintf("\nwarning: %s (%s): %s", r.IP, podString(r.PodNamespace, r.PodName), r.Warning)
			}
		}
		return footer
	})
}
