package agent

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
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

// A fault (the NIC gone) makes the agent unready until cleared; a detail
// (the API server unreachable) is reported but never does: the node's CNI
// must not go down with the control plane. /readyz says both.
func TestReadinessFaultsAndDetails(t *testing.T) {
	r := NewReadiness("starting")
	changed := r.Changed()
	r.Set(true, "")
	if !closed(changed) {
		t.Fatal("no change notified when the agent turned ready")
	}
	srv := httptest.NewServer(readyzHandler(r))
	defer srv.Close()
	get := func() (int, string) {
		resp, err := http.Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	r.SetDetail("apiserver", "unreachable since 12:00:00: connection refused")
	if ok, _ := r.Get(); !ok {
		t.Error("a detail made the agent unready")
	}
	if code, body := get(); code != http.StatusOK || body != "ready\napiserver: unreachable since 12:00:00: connection refused\n" {
		t.Errorf("/readyz with the API server away: %d %q", code, body)
	}
	if !r.SetFault("nic", "NIC eth0 is gone") || r.SetFault("nic", "NIC eth0 is gone") {
		t.Error("SetFault does not report exactly the change")
	}
	if ok, reason := r.Get(); ok || reason != "NIC eth0 is gone" {
		t.Errorf("with a fault: %v %q", ok, reason)
	}
	if code, body := get(); code != http.StatusServiceUnavailable || !strings.HasPrefix(body, "not ready: NIC eth0 is gone\napiserver:") {
		t.Errorf("/readyz with the NIC gone: %d %q", code, body)
	}
	r.SetFault("pool", "the pool source lists no secondary IP")
	if f := r.Faults(); f != "NIC eth0 is gone; the pool source lists no secondary IP" {
		t.Errorf("faults %q", f)
	}
	r.SetFault("nic", "")
	r.SetFault("pool", "")
	r.SetDetail("apiserver", "")
	if code, body := get(); code != http.StatusOK || body != "ready\n" {
		t.Errorf("/readyz recovered: %d %q", code, body)
	}
}
