package e2e

import (
	"errors"
	"fmt"
	"os"
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
	t.Logf("agent after %d warm-up cycles: RSS %d KiB, %d fds; after %d more: RSS %d KiB, %d fds",
		warmup, rss0, fds0, cycles, rss1, fds1)
	if fds1 > fds0+fdSlack {
		t.Errorf("agent open files grew from %d to %d over %d cycles", fds0, fds1, cycles)
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

// procUsage reads the agent's resident memory (KiB) and open file count.
// settle waits until the agent's background work after the last ADD and
// DEL is done (from_pod attached to each pod's veth, the veths of deleted
// attachments gone), so that the files it holds for them are not counted.
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
}

func procUsage(t *testing.T, n *vnet.Node) (rssKiB, fds int) {
	t.Helper()
	rssKiB, _, err := n.AgentMemoryKiB()
	if err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", n.AgentPID()))
	if err != nil {
		t.Fatal(err)
	}
	return rssKiB, len(entries)
}
