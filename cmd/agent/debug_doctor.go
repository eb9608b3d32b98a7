package main

import (
	"errors"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/podvnet/podvnet/pkg/node"
	"github.com/podvnet/podvnet/pkg/paths"
)

// errProblemsFound makes `debug doctor` exit 1 when it found problems,
// after printing them.
var errProblemsFound = errors.New("problems found")

func newDebugDoctorCommand(p *paths.Node) *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Check this node's podvnet and name each problem with its fix (exit 1 if any)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			findings := node.Doctor(cmd.Context(), *p)
			if err := printFindings(cmd.OutOrStdout(), output, findings); err != nil {
				return err
			}
			for _, f := range findings {
				if !f.OK {
					return errProblemsFound
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "table or json")
	cmd.Flags().StringVar(&p.Socket, "socket", paths.DefaultSocket, "the agent's API socket")
	return cmd
}

func printFindings(w io.Writer, output string, findings []node.Finding) error {
	problems := 0
	for _, f := range findings {
		if !f.OK {
			problems++
		}
	}
	return render(w, output, findings, func(tw *tabwriter.Writer) string {
		fmt.Fprintln(tw, "CHECK\tSTATUS\tDETAIL")
		for _, f := range findings {
			status := "ok"
			if !f.OK {
				status = "PROBLEM"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\n", f.Check, status, f.Detail)
			if f.Fix != "" {
				fmt.Fprintf(tw, "\t\tfix: %s\n", f.Fix)
			}
		}
		return count(len(findings), "check", "checks") + ", " + count(problems, "problem", "problems")
	})
}
