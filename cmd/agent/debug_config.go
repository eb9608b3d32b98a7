package main

import (
	"fmt"
	"io"
	"net/netip"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/podvnet/podvnet/pkg/maps"
	"github.com/podvnet/podvnet/pkg/paths"
	"github.com/podvnet/podvnet/pkg/settings"
)

// configRow is one setting as `debug config -o json` prints it. Source is
// "map" for what the programs read from the pinned config and no-SNAT maps
// (the truth in the kernel), "agent" for what the last agent recorded.
type configRow struct {
	Setting string `json:"setting"`
	Value   string `json:"value"`
	Source  string `json:"source"`
}

func newDebugConfigCommand(p *paths.Node) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "config",
		Short: "The settings in force: what the programs read from their maps, and the agent's settings",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			set, err := maps.OpenPinned(p.BPFFSRoot)
			if err != nil {
				return err
			}
			defer set.Close()
			rows, err := configRows(set)
			if err != nil {
				return err
			}
			if s, err := settings.Read(*p); err == nil {
				rows = append(rows, settingsRows(s)...)
			} else {
				fmt.Fprintf(cmd.ErrOrStderr(), "agent settings unavailable: %v\n", err)
			}
			return printConfig(cmd.OutOrStdout(), output, rows)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	return cmd
}

func configRows(set *maps.Set) ([]configRow, error) {
	cfg, err := set.Config.Get()
	if err != nil {
		return nil, err
	}
	ranges, err := set.NoSNAT.List()
	if err != nil {
		return nil, err
	}
	var rs []string
	for _, r := range ranges {
		rs = append(rs, r.String())
	}
	ct := "off"
	switch {
	case cfg.Flags&maps.ConfigCTLookup != 0 && cfg.Flags&maps.ConfigCTByPort != 0:
		ct = "on, by port (replies from ports kernel NAT answers from)"
	case cfg.Flags&maps.ConfigCTLookup != 0:
		ct = "on"
	}
	services := "kube-proxy (the kernel's rules)"
	if cfg.Flags&maps.ConfigServices != 0 {
		services = "bpf (the data path)"
	}
	blocked, err := blockedRows(set.Blocked)
	if err != nil {
		return nil, err
	}
	return []configRow{
		{"nic", fmt.Sprintf("%s (ifindex %d, %s)", ifName(cfg.NICIfindex), cfg.NICIfindex, maps.MAC(cfg.NICMAC)), "map"},
		{"node_ip", cfg.NodeAddr().String(), "map"},
		{"pod_gateway", netip.AddrFrom4(cfg.GatewayIP).String(), "map"},
		{"next_hop", cfg.DescribeNextHop(), "map"},
		{"conntrack_lookup", ct, "map"},
		{"services", services, "map"},
		{"no_snat_cidrs", strings.Join(rs, ", "), "map"},
		{"blocked_endpoints", blockedList(blocked), "map"},
	}, nil
}

func settingsRows(s *settings.Settings) []configRow {
	row := func(k, v string) configRow { return configRow{k, v, "agent"} }
	return []configRow{
		row("agent_version", s.Version),
		row("agent_started_at", s.StartedAt.Format("2006-01-02T15:04:05Z")),
		row("subnet", s.Subnet),
		row("primary_ip", s.Primary),
		row("secondary_ips", fmt.Sprint(s.SecondaryIPs)),
		row("max_pods", fmt.Sprint(s.MaxPods)),
		row("pod_limit", fmt.Sprint(s.PodLimit)),
		row("ip_cooldown", s.IPCooldown),
		row("pod_mtu", fmt.Sprintf("%d (NIC %d)", s.PodMTU, s.NICMTU)),
		row("attach_mode", s.AttachMode),
		row("next_hop_mode", s.NextHop),
		row("network_policy", dash(s.NetworkPolicy)),
		row("bpffs_root", s.BPFFSRoot),
		row("socket", s.Socket),
	}
}

func printConfig(w io.Writer, output string, rows []configRow) error {
	return render(w, output, rows, func(tw *tabwriter.Writer) string {
		fmt.Fprintln(tw, "SETTING\tVALUE\tSOURCE")
		for _, r := range rows {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", r.Setting, r.Value, r.Source)
		}
		return count(len(rows), "setting", "settings")
	})
}
