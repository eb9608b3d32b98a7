package main

import (
	"bytes"
	"net/netip"
	"os"
	"testing"

	"github.com/podvnet/podvnet/pkg/ipam"
	"github.com/podvnet/podvnet/pkg/kube"
	"github.com/podvnet/podvnet/pkg/paths"
)

// TestEndpointLabels: `debug endpoints` takes a pod's labels from the pods
// file only for the pod that holds the endpoint now: a file written before
// a new pod took a released address must not lend it the old pod's labels.
// No file (static mode) is no labels and no warning; a broken one warns.
func TestEndpointLabels(t *testing.T) {
	p := paths.Node{StateDir: t.TempDir()}
	var warn bytes.Buffer
	if got := apiPods(&warn, p); len(got) != 0 || warn.Len() != 0 {
		t.Fatalf("without a pods file: %v, warning %q", got, warn.String())
	}
	ip := netip.MustParseAddr("10.240.0.5")
	web := kube.Pod{Namespace: "default", Name: "web-0", UID: "uid-1", IP: ip, Labels: map[string]string{"app": "web"}}
	host := kube.Pod{Namespace: "kube-system", Name: "podvnet-x", UID: "uid-2", IP: netip.MustParseAddr("10.240.0.4"), HostNetwork: true}
	if err := kube.WritePodsFile(p, "node1", []kube.Pod{web, host}); err != nil {
		t.Fatal(err)
	}
	api := apiPods(&warn, p)
	if len(api) != 1 || api[ip].Labels["app"] != "web" {
		t.Fatalf("pods by IP %v: want web-0 alone (hostNetwork pods hold no endpoint)", api)
	}
	for _, tc := range []struct {
		name string
		al   ipam.Allocation
		want bool
	}{
		{"same UID", ipam.Allocation{Owner: ipam.Owner{PodNamespace: "default", PodName: "web-0", PodUID: "uid-1"}}, true},
		{"new pod on the address", ipam.Allocation{Owner: ipam.Owner{PodNamespace: "default", PodName: "web-1", PodUID: "uid-9"}}, false},
		{"no UID, same name", ipam.Allocation{Owner: ipam.Owner{PodNamespace: "default", PodName: "web-0"}}, true},
		{"no UID, other name", ipam.Allocation{Owner: ipam.Owner{PodNamespace: "default", PodName: "web-1"}}, false},
		{"runtime passed no pod", ipam.Allocation{}, true},
	} {
		if got := samePod(tc.al, api[ip]); got != tc.want {
			t.Errorf("%s: samePod = %v", tc.name, got)
		}
	}
	if err := os.WriteFile(p.PodsFile(), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := apiPods(&warn, p); len(got) != 0 || !bytes.Contains(warn.Bytes(), []byte("warning: pod labels unknown")) {
		t.Errorf("broken pods file: %v, warning %q", got, warn.String())
	}
}
