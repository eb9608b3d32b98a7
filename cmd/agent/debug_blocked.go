package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/podvnet/podvnet/pkg/maps"
	"github.com/podvnet/podvnet/pkg/platform"
)

// blockedRow is one entry of the blocked map as `debug blocked -o json`
// prints it. A fragment guard (port 0) drops the fragments after the first
// of a datagram to its address and protocol.
type blockedRow struct {
	Addr          string `json:"addr"`
	Port          uint16 `json:"port"`
	Proto         string `json:"proto"`
	Reason        string `json:"reason"`
	FragmentGuard bool   `json:"fragment_guard"`
}

func newDebugBlockedCommand(root *string) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "blocked",
		Short: "The destinations from_pod drops (--blocked-endpoints, --block-imds), as the map holds them",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			rows, err := pinnedBlockedRows(*root)
			if err != nil {
				return err
			}
			return printBlocked(cmd.OutOrStdout(), output, rows)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	return cmd
}

// pinnedBlockedRows reads the blocked map pinned under root.
func pinnedBlockedRows(root string) ([]blockedRow, error) {
	set, err := maps.OpenPinned(root)
	if err != nil {
		return nil, err
	}
	defer set.Close()
	return blockedRows(set.Blocked)
}

func blockedRows(b *maps.Blocked) ([]blockedRow, error) {
	dests, err := b.List()
	if err != nil {
		return nil, err
	}
	rows := make([]blockedRow, 0, len(dests))
	for _, d := range dests {
		rows = append(rows, blockedRow{Addr: d.Addr.String(), Port: d.Port, Proto: platform.Proto(d.Proto).String(),
			Reason: d.Reason.String(), FragmentGuard: d.Port == 0})
	}
	return rows, nil
}

// blockedList is the endpoints of rows in the flag's form, for `debug
// config`.
func blockedList(rows []blockedRow) string {
	var eps []string
	for _, r := range rows {
		if !r.FragmentGuard {
			eps = append(eps, fmt.Sprintf("%s:%d/%s", r.Addr, r.Port, r.Proto))
		}
	}
	if len(eps) == 0 {
		return "none"
	}
	return strings.Join(eps, ", ")
}

func printBlocked(w io.Writer, output string, rows []blockedRow) error {
	return render(w, output, rows, func(tw *tabwriter.Writer) string {
		fmt.Fprintln(tw, "ADDRESS\tPORT\tPROTO\tREASON")
		guards := 0
		for _, r := range rows {
			port := fmt.Sprint(r.Port)
			if r.FragmentGuard {
				port, guards = "fragments", guards+1
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Addr, port, r.Proto, r.Reason)
		}
		return fmt.Sprintf("%s (%s, %s)", count(len(rows), "entry", "entries"),
			count(len(rows)-guards, "endpoint", "endpoints"), count(guards, "fragment guard", "fragment guards"))
	})
}
