// Command podvnet is the podvnet CNI plugin the container runtime execs.
package main

import (
	"fmt"
	"os"
	"runtime"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/podvnet/podvnet/pkg/cni"
)

// Set at build time with -ldflags "-X main.buildVersion=... -X main.commit=...".
var (
	buildVersion = "dev"
	commit       = "unknown"
)

func main() {
	// Runtimes exec the plugin without arguments; a person asks this.
	if len(os.Args) == 2 && (os.Args[1] == "--version" || os.Args[1] == "version") {
		fmt.Printf("podvnet CNI plugin %s (commit %s, %s)\n", buildVersion, commit, runtime.Version())
		return
	}
	skel.PluginMainFuncs(cni.Funcs(), version.PluginSupports("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"), "podvnet CNI plugin "+buildVersion)
}
