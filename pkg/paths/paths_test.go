package paths

import "testing"

// TestLayoutIsStable: every path here is also on nodes running an older
// agent and plugin. A new agent that looked elsewhere would miss the pinned
// data path and the allocations (and start a second data path, handing out
// addresses live pods hold); a plugin that queued elsewhere would leave
// releases no agent replays.
func TestLayoutIsStable(t *testing.T) {
	n := Default()
	for got, want := range map[string]string{
		n.StateFile():              "/var/lib/podvnet/ipam.json",
		n.SettingsFile():           "/var/lib/podvnet/settings.json",
		n.PodsFile():               "/var/lib/podvnet/pods.json",
		n.PolicyIdentitiesFile():   "/var/lib/podvnet/policy-identities.json",
		n.ServicesFile():           "/var/lib/podvnet/services.json",
		n.DelQueueDir():            "/var/lib/podvnet/del-queue",
		n.Socket:                   "/run/podvnet/agent.sock",
		n.MapsDir():                "/sys/fs/bpf/podvnet/maps",
		n.MapPin("endpoints"):      "/sys/fs/bpf/podvnet/maps/endpoints",
		n.LinksDir():               "/sys/fs/bpf/podvnet/links",
		n.LinkDir("nic"):           "/sys/fs/bpf/podvnet/links/nic",
		n.LinkPin("pod", "pv0123"): "/sys/fs/bpf/podvnet/links/pod/pv0123",
	} {
		if got != want {
			t.Errorf("%s, want %s", got, want)
		}
	}
	if got := n.StateFiles(); len(got) != 5 || got[0] != n.StateFile() || got[1] != n.SettingsFile() || got[2] != n.PodsFile() ||
		got[3] != n.PolicyIdentitiesFile() || got[4] != n.ServicesFile() {
		t.Errorf("StateFiles() = %v", got)
	}
}
