package cluster_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestUninstallLeavesNodesClean runs last (its file sorts last): the steps of docs/operations.md
// (workloads drained, kubectl delete -k deploy/, apply -k deploy/uninstall/,
// its rollout, delete -k deploy/uninstall/) leave each node as the page
// says: no conflist, no programs, pins, nftables table, pod veths, socket
// or state; the plugin binary stays for DELs of pods that remain.
func TestUninstallLeavesNodesClean(t *testing.T) {
	c := installed(t)
	cx := ctx(t, 10*time.Minute)
	webPods(t, c)
	if _, err := c.Kubectl(cx, "delete", "deployment", webApp, "--wait=true"); err != nil {
		t.Fatal(err)
	}
	if err := eventually(2*time.Minute, func() bool {
		pods, err := c.Client.CoreV1().Pods("default").List(cx, metav1.ListOptions{LabelSelector: "app=" + webApp})
		return err == nil && len(pods.Items) == 0
	}); err != nil {
		t.Fatalf("web pods still there: %v", err)
	}
	install, err := c.InstallOverlay()
	if err != nil {
		t.Fatal(err)
	}
	uninstall, err := c.Overlay("uninstall", "deploy/uninstall", nil)
	if err != nil {
		t.Fatal(err)
	}
	shared.installed = false
	for _, args := range [][]string{{"delete", "-k", install}, {"apply", "-k", uninstall}} {
		if _, err := c.Kubectl(cx, args...); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.RolloutStatus(cx, "podvnet-uninstall", 5*time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Kubectl(cx, "delete", "-k", uninstall, "--wait=true"); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.Nodes {
		for _, f := range []string{"/etc/cni/net.d/05-podvnet.conflist", "/var/lib/podvnet/ipam.json", "/run/podvnet/agent.sock"} {
			if _, err := os.Stat(n.Path(f)); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("%s: %s left (%v)", n.Name, f, err)
			}
		}
		if _, err := os.Stat(n.Path("/opt/cni/bin/podvnet")); err != nil {
			t.Errorf("%s: the plugin must stay for DELs of remaining pods: %v", n.Name, err)
		}
		var pins []string
		root := n.Path("/sys/fs/bpf/podvnet")
		filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				pins = append(pins, strings.TrimPrefix(p, root))
			}
			return nil
		})
		if len(pins) > 0 {
			t.Errorf("%s: pins left: %v", n.Name, pins)
		}
		if out, _ := n.Exec("nft", "list", "tables"); strings.Contains(out, "podvnet") {
			t.Errorf("%s: nftables table left:\n%s", n.Name, out)
		}
		if out, _ := n.Exec("tc", "filter", "show", "dev", "eth0", "ingress"); strings.Contains(out, "podvnet") {
			t.Errorf("%s: legacy tc filter left on eth0:\n%s", n.Name, out)
		}
		links, err := n.NS.NL.LinkList()
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range links {
			if strings.HasPrefix(l.Attrs().Name, "pv") {
				t.Errorf("%s: pod veth %s left", n.Name, l.Attrs().Name)
			}
			if l.Attrs().Name != "eth0" {
				continue
			}
			var progs []link.AttachedProgram
			if err := n.NS.Do(func() error {
				res, err := link.QueryPrograms(link.QueryOptions{Target: l.Attrs().Index, Attach: ebpf.AttachTCXIngress})
				if err == nil {
					progs = res.Programs
				}
				return err
			}); err != nil {
				t.Fatalf("%s: query eth0's tcx programs: %v", n.Name, err)
			}
			if len(progs) > 0 {
				t.Errorf("%s: %d tcx programs left on eth0", n.Name, len(progs))
			}
		}
	}
}
