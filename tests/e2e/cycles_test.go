package e2e

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/podvnet/podvnet/pkg/agentapi"
	"github.com/podvnet/podvnet/tests/e2e/vnet"
)

// TestAddDelCycles runs 1,000 ADD/DEL cycles, four pods at a time, and
// checks that nothing is left and that the agent's memory and open files
// did not grow: a leak of one file descriptor or a few KiB per cycle would
// show.
func TestAddDelCycles(t *testing.T) {
	const (
		workers = 4
		cycles  = 1000
		warmup  = 40
		// Generous: Go's heap and the kernel's accounting wander by a few
		// MiB; 12 KiB leaked per cycle would add 12 MiB.
		rssSlackKiB = 12 << 10
		fdSlack     = 2
	)
	v := newVNet(t, vnet.Options{Nodes: 1, PerNode: workers})
	n := v.Nodes[0]
	if err := n.StartAgent("--ip-cooldown", "0s", "--log-level", "info"); err != nil {
		t.Fatal(err)
	}
	pods := make([]*vnet.Pod, workers)
	for i := range pods {
		pods[i] = addPod(t, n, fmt.Sprintf("cyc%d", i))
	}
	run := func(total int) {
		t.Helper()
		errs := make([]error, workers)
		var wg sync.WaitGroup
		for w, p := range pods {
			wg.Go(func() {
				for range total / workers {
					if err := p.Del(); err != nil {
						errs[w] = err
						return
					}
					if err := p.Add(); err != nil {
						errs[w] = err
						return
					}
				}
			})
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
	}

	run(warmup)
	settle(t, n, pods)
	rss0, fds0 := procUsage(t, n)
	run(cycles)
	settle(t, n, pods)
	rss1, fds1 := procUsage(t, n)
	t.Logf("agent after %d warm-up cycles: RSS %d KiB, %d fds %v; after %d more: RSS %d KiB, %d fds %v",
		warmup, rss0, len(fds0), fds0.kinds(), cycles, rss1, len(fds1), fds1.kinds())
	if len(fds1) > len(fds0)+fdSlack {
		t.Errorf("agent open files grew from %d to %d over %d cycles; by kind, before %v, after %v",
			len(fds0), len(fds1), cycles, fds0.kinds(), fds1.kinds())
	}
	if rss1 > rss0+rssSlackKiB {
		t.Errorf("agent RSS grew from %d KiB to %d KiB over %d cycles", rss0, rss1, cycles)
	}

	for _, p := range pods {
		if err := p.Del(); err != nil {
			t.Fatal(err)
		}
	}
	assertNodeClean(t, n)
}

// settle waits until the agent's background work after the last ADD and
// DEL is done (from_pod attached to each pod's veth, the veths of deleted
// attachments gone, and the jobs that did it returned: a veth leaves the
// link list before its delete returns), so that the netlink sockets of
// work in flight are not counted.
func settle(t *testing.T, n *vnet.Node, pods []*vnet.Pod) {
	t.Helper()
	for _, p := range pods {
		if err := p.WaitAttached(10 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if !eventually(10*time.Second, func() bool {
		links, err := n.NS.NL.LinkList()
		veths := 0
		for _, l := range links {
			if strings.HasPrefix(l.Attrs().Name, agentapi.HostVethPrefix) {
				veths++
			}
		}
		return err == nil && veths == len(pods)
	}) {
		t.Fatal("the veths of deleted pods are still there")
	}
	var jobs float64
	if !eventually(10*time.Second, func() bool {
		var err error
		jobs, err = n.Metric("podvnet_host_veth_jobs")
		return err == nil && jobs == 0
	}) {
		t.Fatalf("the agent's host veth jobs are not done: %v", jobs)
	}
}

// procUsage reads the agent's resident memory (KiB) and open files.
func procUsage(t *testing.T, n *vnet.Node) (rssKiB int, fds openFiles) {
	t.Helper()
	rssKiB, _, err := n.AgentMemoryKiB()
	if err != nil {
		t.Fatal(err)
	}
	dir := fmt.Sprintf("/proc/%d/fd", n.AgentPID())
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	fam := socketFamilies(n.AgentPID())
	for _, e := range entries {
		// A file closed since ReadDir has no target: not open any more.
		target, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		if inode, ok := strings.CutPrefix(target, "socket:["); ok {
			f, ok := fam[strings.TrimSuffix(inode, "]")]
			if !ok {
				f = "?"
			}
			target = "socket:" + f
		}
		fds = append(fds, target)
	}
	return rssKiB, fds
}

// openFiles are the targets of a process's file descriptors, sockets
// named by family ("socket:netlink/0" is NETLINK_ROUTE, "socket:unix", or
// "socket:?" for one in another network namespace).
type openFiles []string

// kinds counts the files by kind, so that a failure names what was left
// open.
func (f openFiles) kinds() map[string]int {
	m := map[string]int{}
	for _, target := range f {
		kind, _, _ := strings.Cut(target, ":[")
		m[kind]++
	}
	return m
}

// socketFamilies maps the socket inodes of pid's network namespace to
// their family, from /proc/PID/net.
func socketFamilies(pid int) map[string]string {
	fam := map[string]string{}
	read := func(file string, inodeCol int, name func(f []string) string) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, file))
		if err != nil {
			return
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			if f := strings.Fields(line); len(f) > inodeCol {
				fam[f[inodeCol]] = name(f)
			}
		}
	}
	read("netlink", 9, func(f []string) string { return "netlink/" + f[1] })
	read("unix", 6, func([]string) string { return "unix" })
	read("tcp", 9, func([]string) string { return "tcp" })
	read("udp", 9, func([]string) string { return "udp" })
	return fam
}
