// Package demo holds what both demos (make demo, make demo-cluster) print
// and how they keep or remove their work directory and tear down.
package demo

import (
	"fmt"
	"os"
	"strings"
)

// Step prints the heading of a demo step.
func Step(format string, args ...any) {
	fmt.Printf("\n==> "+format+"\n", args...)
}

// Indent indents every line of s by two spaces, for command output under
// a step.
func Indent(s string) string {
	if s == "" {
		return ""
	}
	return "  " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n  ") + "\n"
}

// IndentWriter prints what is written to it indented, for logs streamed
// under a step.
type IndentWriter struct{}

func (IndentWriter) Write(b []byte) (int, error) { fmt.Print(Indent(string(b))); return len(b), nil }

// WorkDir makes the demo's work directory; done removes it unless keep.
func WorkDir(name string, keep bool) (dir string, done func(), err error) {
	dir, err = os.MkdirTemp("", name+"-")
	if err != nil {
		return "", nil, err
	}
	return dir, func() {
		if !keep {
			os.RemoveAll(dir)
		}
	}, nil
}

// TearDown runs close under a step saying what goes, and reports that
// nothing was left behind (or where the logs stay).
func TearDown(what string, close func() error, keep bool, work string) {
	Step("Tearing down: %s", what)
	if err := close(); err != nil {
		fmt.Fprintf(os.Stderr, "teardown: %v\n", err)
		return
	}
	fmt.Println("  nothing left behind")
	if keep {
		fmt.Printf("  logs kept in %s\n", work)
	}
}
