// Command podvnet is the podvnet CNI plugin the container runtime execs.
package main

import (
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/podvnet/podvnet/pkg/cni"
)

// Set at build time with -ldflags "-X main.buildVersion=...".
var buildVersion = "dev"

func main() {
	skel.PluginMainFuncs(cni.Funcs(), version.PluginSupports("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"), "podvnet CNI plugin "+buildVersion)
}
