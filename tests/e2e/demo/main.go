// Command demo brings up a simulated VNet with two nodes running the real
// podvnet agent, creates two pods per node with the real plugin (through
// libcni), sends TCP traffic pod to pod on one node and across nodes, shows
// what the eBPF programs counted and the debug view of the endpoint maps,
// and removes everything again, also on error or Ctrl-C. `make demo` runs it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/podvnet/podvnet/internal/nettest"
	"github.com/podvnet/podvnet/pkg/maps"
	"github.com/podvnet/podvnet/tests/e2e/vnet"
	"github.com/podvnet/podvnet/tests/internal/demo"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "demo failed: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	binDir := flag.String("bin-dir", "bin", "directory with podvnet-agent and podvnet")
	keep := flag.Bool("keep-logs", false, "keep the work directory (agent and plugin logs)")
	hold := flag.Bool("hold", false, "keep the VNet up until Ctrl-C, to explore it with `ip netns exec`")
	flag.Parse()
	if os.Geteuid() != 0 {
		return errors.New("run as root: the demo creates network namespaces, veths and a bpffs")
	}
	bin, err := filepath.Abs(*binDir)
	if err != nil {
		return err
	}
	for _, b := range []string{"podvnet-agent", "podvnet"} {
		if _, err := os.Stat(filepath.Join(bin, b)); err != nil {
			return fmt.Errorf("%s not found in %s: run `make build` first", b, bin)
		}
	}
	work, done, err := demo.WorkDir("podvnet-demo", *keep)
	if err != nil {
		return err
	}
	defer done()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	prefix := nettest.Prefix()
	demo.Step("Building the simulated VNet %s: fabric router + 2 nodes (namespaces %s-*)", vnet.Subnet, prefix)
	v, err := vnet.New(vnet.Options{Prefix: prefix, PerNode: 30, BinDir: bin, WorkDir: work})
	if err != nil {
		return err
	}
	// Teardown runs on success, error and Ctrl-C alike.
	defer demo.TearDown("CNI DEL for every pod, agents stopped, namespaces and bpffs removed", v.Close, *keep, work)
	for _, n := range v.Nodes {
		fmt.Printf("  %s: eth0 %s/%d, secondary IPs %s-%s\n", n.Name, n.Pool.Primary, vnet.Subnet.Bits(),
			n.Pool.Secondary[0], n.Pool.Secondary[len(n.Pool.Secondary)-1])
	}
	if err := ctx.Err(); err != nil {
		return err
	}

	demo.Step("Starting podvnet-agent on each node")
	for _, n := range v.Nodes {
		if err := n.StartAgent(); err != nil {
			return err
		}
		fmt.Printf("  %s: agent pid %d serving %s\n", n.Name, n.AgentPID(), n.Paths().Socket)
	}

	demo.Step("Creating two pods per node with the podvnet CNI plugin (via libcni, as containerd does)")
	var pods []*vnet.Pod
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  NODE\tPOD\tIP\tHOST VETH")
	for _, n := range v.Nodes {
		for _, name := range []string{"web", "db"} {
			if err := ctx.Err(); err != nil {
				return err
			}
			p, err := n.AddPod(name)
			if err != nil {
				return err
			}
			if _, err := p.EchoServer(7000); err != nil {
				return err
			}
			pods = append(pods, p)
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", n.Name, p.Name, p.IP, p.Result.Interfaces[0].Name)
		}
	}
	tw.Flush()

	demo.Step("TCP traffic through the eBPF path")
	before := counters(v)
	for _, pair := range [][2]*vnet.Pod{{pods[0], pods[1]}, {pods[0], pods[2]}, {pods[3], pods[1]}} {
		if err := ctx.Err(); err != nil {
			return err
		}
		src, dst := pair[0], pair[1]
		where := "same node"
		if src.Node != dst.Node {
			where = "across nodes"
		}
		const size = 8 << 20
		d, err := vnet.TCPEcho(src, dst.IP, 7000, size, 20*time.Second)
		if err != nil {
			return err
		}
		fmt.Printf("  %s/%s %s -> %s/%s %s (%s): %d MiB echoed in %s\n", src.Node.Name, src.Name, src.IP,
			dst.Node.Name, dst.Name, dst.IP, where, size>>20, d.Round(time.Millisecond))
	}
	after := counters(v)
	fmt.Println("  what the programs counted (packets):")
	for i, n := range v.Nodes {
		var parts []string
		for _, r := range []maps.Reason{maps.ReasonPodToLocal, maps.ReasonPodToNIC, maps.ReasonNICToLocal, maps.ReasonPodToStack} {
			parts = append(parts, fmt.Sprintf("%s +%d", r, after[i][r].Packets-before[i][r].Packets))
		}
		fmt.Printf("    %s: %s\n", n.Name, strings.Join(parts, ", "))
	}

	for _, n := range v.Nodes {
		demo.Step("podvnet-agent debug endpoints on %s", n.Name)
		out, err := n.Debug("endpoints")
		if err != nil {
			return err
		}
		fmt.Print(demo.Indent(out))
	}
	demo.Step("podvnet-agent debug links on node1: which program runs where")
	out, err := v.Nodes[0].Debug("links")
	if err != nil {
		return err
	}
	fmt.Print(demo.Indent(out))
	if *hold {
		demo.Step("Holding the VNet up; press Ctrl-C to tear it down. Namespaces:")
		fmt.Printf("  fabric %s, nodes %s-node1 %s-node2, pods %s-node1-web ...\n", v.Fabric.Name, prefix, prefix, prefix)
		fmt.Printf("  e.g. ip netns exec %s-node1-web ping %s\n", prefix, pods[2].IP)
		<-ctx.Done()
	}
	return nil
}

// counters reads each node's pinned counters map directly; a node whose
// maps cannot be read shows zeros.
func counters(v *vnet.VNet) []map[maps.Reason]maps.Counter {
	var out []map[maps.Reason]maps.Counter
	for _, n := range v.Nodes {
		m, _ := n.Counters()
		out = append(out, m)
	}
	return out
}
