package agent

import (
	"sync"
)

// hostJobs runs the slow work on a pod's host veth off the request path:
// attaching from_pod with tcx and deleting the veth each wait for an RCU
// grace period in the kernel (5-30 ms here), which ADD and DEL need not
// wait for. Jobs for one veth name run one at a time, in order; anything
// that must see a veth settled (the next ADD or DEL of the same name,
// CHECK, shutdown) waits for its job first.
type hostJobs struct {
	mu      sync.Mutex
	running map[string]chan struct{}
	wg      sync.WaitGroup
}

func newHostJobs() *hostJobs { return &hostJobs{running: map[string]chan struct{}{}} }

// wait blocks until no job runs for name.
func (j *hostJobs) wait(name string) {
	j.mu.Lock()
	ch := j.running[name]
	j.mu.Unlock()
	if ch != nil {
		<-ch
	}
}

// start runs f in the background once the previous job for name is done.
func (j *hostJobs) start(name string, f func()) {
	j.wait(name)
	ch := make(chan struct{})
	j.mu.Lock()
	j.running[name] = ch
	j.mu.Unlock()
	j.wg.Add(1)
	go func() {
		defer j.wg.Done()
		defer close(ch)
		f()
		j.mu.Lock()
		if j.running[name] == ch {
			delete(j.running, name)
		}
		j.mu.Unlock()
	}()
}

// inFlight is the number of veths with a job started and not yet done.
func (j *hostJobs) inFlight() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return len(j.running)
}

// waitAll blocks until every job started so far is done.
func (j *hostJobs) waitAll() { j.wg.Wait() }
