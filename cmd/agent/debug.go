package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"github.com/vishvananda/netlink"

	"github.com/podvnet/podvnet/pkg/ipam"
	"github.com/podvnet/podvnet/pkg/kube"
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
		newDebugMonitorCommand(&p), newDebugConfigCommand(&p), newDebugDoctorCommand(&p), newDebugIPAMCommand(&p),
		newDebugBlockedCommand(&p.BPFFSRoot), newDebugPolicyCommand(&p), newDebugServicesCommand(&p))
	return cmd
}

// endpointRow is one endpoint as `debug endpoints -o json` prints it.
type endpointRow struct {
	IP           string `json:"ip"`
	PodNamespace string `json:"pod_namespace"`
	PodName      string `json:"pod_name"`
	PodUID       string `json:"pod_uid"`
	// Labels are the pod's as the API server last showed them; empty in
	// static mode or before the agent first synced.
	Labels      map[string]string `json:"labels"`
	ContainerID string            `json:"container_id"`
	Ifindex     uint32            `json:"ifindex"`
	IfName      string            `json:"ifname"`
	PodMAC      string            `json:"pod_mac"`
	HostMAC     string            `json:"host_mac"`
	Flags       uint32            `json:"flags"`
}

func newDebugEndpointsCommand(p *paths.Node) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "endpoints",
		Short: "List the endpoints map: pod IP -> pod (UID, labels), container, host veth and MACs",
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
// which outlives the agent like the pins do and names each pod, and with
// the pods file, this node's pods as the API server last showed them (their
// labels). Without the state file the rows still help, and a warning says
// why names are missing; without a pods file (static mode) there are no
// labels.
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
	api := apiPods(warn, p)
	rows := make([]endpointRow, 0, len(entries))
	for _, e := range entries {
		al := pods[e.IP]
		row := endpointRow{
			IP: e.IP.String(), PodNamespace: al.PodNamespace, PodName: al.PodName, PodUID: al.PodUID, Labels: map[string]string{},
			ContainerID: al.ContainerID, Ifindex: e.Ifindex, IfName: ifName(e.Ifindex),
			PodMAC: maps.MAC(e.PodMAC), HostMAC: maps.MAC(e.HostMAC), Flags: e.Flags,
		}
		if kp, ok := api[e.IP]; ok && samePod(al, kp) {
			row.PodNamespace, row.PodName, row.PodUID = kp.Namespace, kp.Name, kp.UID
			for k, v := range kp.Labels {
				row.Labels[k] = v
			}
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// apiPods reads the pods file by address. A missing file is static mode
// (or an agent that never reached the API server) and says nothing.
func apiPods(warn io.Writer, p paths.Node) map[netip.Addr]kube.Pod {
	out := map[netip.Addr]kube.Pod{}
	f, err := kube.ReadPodsFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return out
	}
	if err != nil {
		fmt.Fprintf(warn, "warning: pod labels unknown: %v\n", err)
		return out
	}
	for _, kp := range f.Pods {
		if kp.HasOwnIP() {
			out[kp.IP] = kp
		}
	}
	return out
}

// samePod says whether the API server's pod at an endpoint's address is
// the endpoint's pod: the pods file may predate the allocation (the API
// server away while a new pod took a released address).
func samePod(al ipam.Allocation, kp kube.Pod) bool {
	if al.PodUID != "" {
		return al.PodUID == kp.UID
	}
	return al.PodName == "" || al.PodNamespace == kp.Namespace && al.PodName == kp.Name
}

func printEndpoints(w io.Writer, output string, rows []endpointRow) error {
	return render(w, output, rows, func(tw *tabwriter.Writer) string {
		fmt.Fprintln(tw, "IP\tPOD\tCONTAINER\tIFINDEX\tIFNAME\tPOD MAC\tHOST MAC\tFLAGS\tLABELS")
		for _, r := range rows {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\n", r.IP, podString(r.PodNamespace, r.PodName), dash(shortID(r.ContainerID)),
				r.Ifindex, r.IfName, r.PodMAC, r.HostMAC, flagString(r.Flags), dash(labelString(r.Labels)))
		}
		return count(len(rows), "endpoint", "endpoints")
	})
}

// labelString is k=v,k=v sorted by key, as kubectl --show-labels.
func labelString(labels map[string]string) string {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for i, k := range keys {
		keys[i] = k + "=" + labels[k]
	}
	return strings.Join(keys, ",")
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
