package main

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"github.com/vishvananda/netlink"

	"github.com/podvnet/podvnet/pkg/ipam"
	"github.com/podvnet/podvnet/pkg/maps"
	"github.com/podvnet/podvnet/pkg/node"
	"github.com/podvnet/podvnet/pkg/paths"
)

func newDebugCommand() *cobra.Command {
	var p paths.Node
	cmd := &cobra.Command{
		Use:   "debug",
		Short: "Inspect the pinned data path of this node (works while the agent is down)",
		PersistentPreRunE: func(*cobra.Command, []string) error {
			if os.Geteuid() != 0 {
				return errors.New("podvnet-agent debug reads pinned BPF objects and needs root (CAP_BPF and CAP_SYS_ADMIN): run it with sudo, or in the podvnet pod")
			}
			return nil
		},
	}
	cmd.PersistentFlags().StringVar(&p.BPFFSRoot, "bpffs-root", paths.DefaultBPFFSRoot, "bpffs directory the agent pins under")
	cmd.PersistentFlags().StringVar(&p.StateDir, "state-dir", paths.DefaultStateDir, "the agent's state directory")
	cmd.AddCommand(newDebugEndpointsCommand(&p), newDebugCountersCommand(&p.BPFFSRoot), newDebugLinksCommand(&p.BPFFSRoot),
		newDebugMonitorCommand(&p.BPFFSRoot), newDebugConfigCommand(&p), newDebugDoctorCommand(&p), newDebugIPAMCommand(&p),
		newDebugBlockedCommand(&p.BPFFSRoot), newDebugServicesCommand(&p))
	return cmd
}

// endpointRow is one endpoint as `debug endpoints -o json` prints it.
type endpointRow struct {
	IP           string `json:"ip"`
	PodNamespace string `json:"pod_namespace"`
	PodName      string `json:"pod_name"`
	ContainerID  string `json:"container_id"`
	Ifindex      uint32 `json:"ifindex"`
	IfName       string `json:"ifname"`
	PodMAC       string `json:"pod_mac"`
	HostMAC      string `json:"host_mac"`
	Flags        uint32 `json:"flags"`
}

func newDebugEndpointsCommand(p *paths.Node) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "endpoints",
		Short: "List the endpoints map: pod IP -> pod, container, host veth and MACs",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			rows, err := endpointRows(cmd.ErrOrStderr(), *p)
			if err != nil {
				return err
			}
			return printEndpoints(cmd.OutOrStdout(), output, rows)
		},
	}
	cmd.PersistentFlags().StringVarP(&output, "output", "o", "table", "table or json")
	cmd.AddCommand(&cobra.Command{
		Use:   "get IP",
		Short: "One endpoint, by pod IP",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ip, err := netip.ParseAddr(args[0])
			if err != nil || !ip.Is4() {
				return fmt.Errorf("%q: not an IPv4 address", args[0])
			}
			rows, err := endpointRows(cmd.ErrOrStderr(), *p)
			if err != nil {
				return err
			}
			for _, r := range rows {
				if r.IP == ip.String() {
					if output == "json" {
						return render(cmd.OutOrStdout(), output, r, nil)
					}
					return printEndpoints(cmd.OutOrStdout(), output, []endpointRow{r})
				}
			}
			return fmt.Errorf("no endpoint for %s in the endpoints map of this node", ip)
		},
	})
	return cmd
}

// endpointRows joins the pinned endpoints map with the agent's state file,
// which outlives the agent like the pins do and names each pod. Without it
// the rows still help; a warning says why names are missing.
func endpointRows(warn io.Writer, p paths.Node) ([]endpointRow, error) {
	set, err := maps.OpenPinned(p.BPFFSRoot)
	if err != nil {
		return nil, err
	}
	defer set.Close()
	entries, err := set.Endpoints.List()
	if err != nil {
		return nil, err
	}
	pods := map[netip.Addr]ipam.Allocation{}
	st, err := node.ReadState(p)
	if err != nil {
		fmt.Fprintf(warn, "warning: pod names unknown: %v\n", err)
	} else {
		for _, al := range st.Allocations {
			pods[al.IP] = al
		}
	}
	rows := make([]endpointRow, 0, len(entries))
	for _, e := range entries {
		al := pods[e.IP]
		rows = append(rows, endpointRow{
			IP: e.IP.String(), PodNamespace: al.PodNamespace, PodName: al.PodName, ContainerID: al.ContainerID,
			Ifindex: e.Ifindex, IfName: ifName(e.Ifindex),
			PodMAC: maps.MAC(e.PodMAC), HostMAC: maps.MAC(e.HostMAC), Flags: e.Flags,
		})
	}
	return rows, nil
}

func printEndpoints(w io.Writer, output string, rows []endpointRow) error {
	return render(w, output, rows, func(tw *tabwriter.Writer) string {
		fmt.Fprintln(tw, "IP\tPOD\tCONTAINER\tIFINDEX\tIFNAME\tPOD MAC\tHOST MAC\tFLAGS")
		for _, r := range rows {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", r.IP, podString(r.PodNamespace, r.PodName), dash(shortID(r.ContainerID)),
				r.Ifindex, r.IfName, r.PodMAC, r.HostMAC, flagString(r.Flags))
		}
		return count(len(rows), "endpoint", "endpoints")
	})
}

func ifName(ifindex uint32) string {
	l, err := netlink.LinkByIndex(int(ifindex))
	if err != nil {
		return "(gone)"
	}
	return l.Attrs().Name
}

// podString is namespace/name, or "-" for an endpoint no pod name is
// recorded for (no state file, or a runtime that passes no K8S_POD_*).
func podString(namespace, name string) string {
	if name == "" {
		return "-"
	}
	return namespace + "/" + name
}

func flagString(f uint32) string {
	if f == 0 {
		return "-"
	}
	var names []string
	if f&maps.EndpointShaped != 0 {
		names = append(names, "shaped")
		f &^= maps.EndpointShaped
	}
	if f != 0 {
		names = append(names, fmt.Sprintf("%#x", f))
	}
	return strings.Join(names, ",")
}
