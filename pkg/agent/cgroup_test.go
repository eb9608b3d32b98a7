package agent

import "testing"

// TestKubepodsAncestor: --pod-cgroup auto finds the pods' cgroup from the
// agent's own, under either cgroup driver, and nothing outside kubepods.
func TestKubepodsAncestor(t *testing.T) {
	for in, want := range map[string]string{
		"/pvt12ab34-node1/kubepods/besteffort/pod1234/abcd": "/pvt12ab34-node1/kubepods",
		"/kubepods/pod1234/abcd":                            "/kubepods",
		"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-ab.scope": "/kubepods.slice",
		"/":                       "",
		"/system.slice/a.service": "",
	} {
		if got := kubepodsAncestor(in); got != want {
			t.Errorf("%s: %q, want %q", in, got, want)
		}
	}
}
