package main

import (
	"testing"

	"github.com/podvnet/podvnet/pkg/agent"
	"github.com/podvnet/podvnet/pkg/kube"
)

// TestNetworkStatus: the node's taint comes off only once the agent serves
// and the CNI config is installed; a starting or stopping agent leaves the
// node as it is; a fault (the NIC gone) fails it, with the cause.
func TestNetworkStatus(t *testing.T) {
	r := agent.NewReadiness("learning the pool")
	for _, tc := range []struct {
		name      string
		step      func()
		installed bool
		want      kube.NetworkState
		message   string
	}{
		{"starting", func() {}, false, kube.NetworkPending, "learning the pool"},
		{"serving, config not installed", func() { r.Set(true, "") }, false, kube.NetworkPending, "installing the CNI config"},
		{"serving, config installed", func() {}, true, kube.NetworkReady, networkReadyMessage},
		{"API server unreachable", func() { r.SetDetail("apiserver", "unreachable") }, true, kube.NetworkReady, networkReadyMessage},
		{"NIC gone", func() { r.SetFault("nic", "NIC eth0 is gone") }, true, kube.NetworkFailed, "NIC eth0 is gone"},
		{"NIC back", func() { r.SetFault("nic", "") }, true, kube.NetworkReady, networkReadyMessage},
		{"stopping", func() { r.Set(false, "stopping") }, true, kube.NetworkPending, "stopping"},
	} {
		tc.step()
		if got := networkStatus(r, tc.installed); got.State != tc.want || got.Message != tc.message {
			t.Errorf("%s: %+v, want state %d %q", tc.name, got, tc.want, tc.message)
		}
	}
}
