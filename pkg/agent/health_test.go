package agent

import (
	"testing"
	"time"
)

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	case <-time.After(10 * time.Millisecond):
		return false
	}
}

// The CNI config is installed on FirstReady: it must not fire while the
// agent starts, and must stay fired when the agent later stops being ready.
func TestFirstReady(t *testing.T) {
	r := NewReadiness("starting")
	early := r.FirstReady()
	r.Set(false, "loading the data path")
	if closed(early) {
		t.Fatal("FirstReady fired before the agent was ready")
	}
	r.Set(true, "")
	if !closed(early) || !closed(r.FirstReady()) {
		t.Fatal("FirstReady did not fire once the agent was ready")
	}
	r.Set(false, "stopping")
	r.Set(true, "") // a second ready must not close the channel again
	if !closed(r.FirstReady()) {
		t.Fatal("FirstReady reopened")
	}
	if ok, reason := r.Get(); !ok || reason != "" {
		t.Errorf("Get() = %v, %q", ok, reason)
	}
}
