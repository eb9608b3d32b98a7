package main

import (
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
)

// render prints v as indented JSON (-o json), or (-o table) the rows table
// writes into an aligned writer followed by the footer it returns (a count
// line): the two outputs of every debug view.
func render(w io.Writer, output string, v any, table func(tw *tabwriter.Writer) (footer string)) error {
	return renderAligned(w, output, v, 0, table)
}

// renderAligned is render with tabwriter flags (tabwriter.AlignRight for
// columns of numbers).
func renderAligned(w io.Writer, output string, v any, flags uint, table func(tw *tabwriter.Writer) string) error {
	switch output {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case "table":
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', flags)
		footer := table(tw)
		if err := tw.Flush(); err != nil {
			return err
		}
		_, err := fmt.Fprintln(w, footer)
		return err
	default:
		return fmt.Errorf("-o %q: want table or json", output)
	}
}

// count is a table's footer: "3 endpoints".
func count(n int, one, many string) string {
	return fmt.Sprintf("%d %s", n, plural(n, one, many))
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// dash stands in for an empty cell.
func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// shortID is a container ID as runtimes print it: 12 characters.
func shortID(id string) string {
	return id[:min(12, len(id))]
}
