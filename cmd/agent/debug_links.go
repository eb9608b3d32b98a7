package main

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/podvnet/podvnet/pkg/loader"
)

func newDebugLinksCommand(root *string) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:     "links",
		Aliases: []string{"programs"},
		Short:   "Which program runs on which interface, how it is attached, and where it is pinned",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			atts, err := loader.ListAttachments(*root)
			if err != nil {
				return err
			}
			return printLinks(cmd.OutOrStdout(), output, atts)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	return cmd
}

func printLinks(w io.Writer, output string, atts []loader.Attachment) error {
	if atts == nil {
		atts = []loader.Attachment{}
	}
	return render(w, output, atts, func(tw *tabwriter.Writer) string {
		fmt.Fprintln(tw, "IFNAME\tIFINDEX\tHOOK\tMODE\tPROGRAM\tPROG ID\tLINK ID\tPIN")
		for _, a := range atts {
			link, ifindex := "-", fmt.Sprint(a.Ifindex)
			if a.LinkID != 0 {
				link = fmt.Sprint(a.LinkID)
			}
			if a.Defunct {
				ifindex = "(gone)"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s ingress\t%s\t%s\t%d\t%s\t%s\n", a.IfName, ifindex, a.Hook, a.Mode, a.ProgName, a.ProgID, link, dash(a.Pin))
		}
		return count(len(atts), "attachment", "attachments")
	})
}
