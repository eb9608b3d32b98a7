// Command podvnet-agent is the podvnet node daemon (`run`) and the tools
// engineers use on a node (`debug`, `plan`, `cleanup`, `version`). It is
// the one place that wires podvnet's packages together.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/cilium/ebpf"
)

func main() {
	if err := newRootCommand().Execute(); err != nil {
		if errors.Is(err, errProblemsFound) {
			os.Exit(1) // debug doctor printed them
		}
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			fmt.Fprintf(os.Stderr, "Error: %+v\n", ve)
		} else {
			fmt.Fprintf(os.Stderr, "Error: %v\n", err)
		}
		os.Exit(1)
	}
}
