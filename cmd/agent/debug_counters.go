package main

import (
	"context"
	"fmt"
	"io"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/podvnet/podvnet/pkg/maps"
)

// counterRow is one reason as `debug counters -o json` prints it.
type counterRow struct {
	Reason  string `json:"reason"`
	Verdict string `json:"verdict"`
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

func newDebugCountersCommand(root *string) *cobra.Command {
	var (
		output string
		watch  bool
		every  time.Duration
	)
	cmd := &cobra.Command{
		Use:   "counters",
		Short: "Packets and bytes per verdict and drop reason, summed over CPUs",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			set, err := maps.OpenPinned(*root)
			if err != nil {
				return err
			}
			defer set.Close()
			if !watch {
				return printCounters(cmd.OutOrStdout(), output, set.Counters)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return watchCounters(ctx, cmd.OutOrStdout(), output, set.Counters, every)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	cmd.Flags().BoolVar(&watch, "watch", false, "refresh until interrupted")
	cmd.Flags().DurationVar(&every, "interval", time.Second, "refresh interval with --watch")
	return cmd
}

func counterRows(c *maps.Counters) ([]counterRow, error) {
	all, err := c.All()
	if err != nil {
		return nil, err
	}
	rows := make([]counterRow, 0, len(all))
	for _, e := range all {
		rows = append(rows, counterRow{Reason: e.Reason.String(), Verdict: e.Reason.Verdict(), Packets: e.Packets, Bytes: e.Bytes})
	}
	return rows, nil
}

func printCounters(w io.Writer, output string, c *maps.Counters) error {
	rows, err := counterRows(c)
	if err != nil {
		return err
	}
	return printCountersRows(w, output, rows)
}

func printCountersRows(w io.Writer, output string, rows []counterRow) error {
	return renderAligned(w, output, rows, tabwriter.AlignRight, func(tw *tabwriter.Writer) string {
		fmt.Fprintln(tw, "REASON\tVERDICT\tPACKETS\tBYTES\t")
		for _, r := range rows {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t\n", r.Reason, r.Verdict, r.Packets, r.Bytes)
		}
		return count(len(rows), "reason", "reasons")
	})
}

func watchCounters(ctx context.Context, w io.Writer, output string, c *maps.Counters, every time.Duration) error {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if output == "table" {
			fmt.Fprintf(w, "\033[H\033[2J%s  (every %s, Ctrl-C to stop)\n", time.Now().Format(time.TimeOnly), every)
		}
		if err := printCounters(w, output, c); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
