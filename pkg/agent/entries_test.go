package agent

import (
	"net/netip"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/podvnet/podvnet/internal/nettest"
	"github.com/podvnet/podvnet/pkg/maps"
)

// TestEndpointEntriesMerge: the endpoint code and the policy writer each
// set their part of an entry, in any order, and neither undoes the other.
func TestEndpointEntriesMerge(t *testing.T) {
	nettest.RequireRoot(t)
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 4, ValueSize: 24, MaxEntries: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	view := maps.NewEndpoints(m)
	e := newEndpointEntries(view)
	ip := netip.MustParseAddr("10.240.0.5")
	get := func() maps.Endpoint {
		t.Helper()
		ep, ok, err := view.Get(ip)
		if err != nil || !ok {
			t.Fatalf("entry: %v %v", ok, err)
		}
		return ep
	}

	// Policy first (ADD computes the rules before the pod is wired): held
	// until the entry exists.
	if err := e.SetEndpointPolicy(ip, 7, maps.EndpointPolicyIngress); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := view.Get(ip); ok {
		t.Fatal("a policy part alone wrote an entry")
	}
	if err := e.Put(ip, maps.Endpoint{Ifindex: 42, Flags: maps.EndpointShaped}); err != nil {
		t.Fatal(err)
	}
	if ep := get(); ep.Ifindex != 42 || ep.PolicyID != 7 || ep.Flags != maps.EndpointShaped|maps.EndpointPolicyIngress {
		t.Errorf("after Put: %+v", ep)
	}
	if err := e.SetEndpointPolicy(ip, 7, maps.EndpointPolicy); err != nil {
		t.Fatal(err)
	}
	if ep := get(); ep.Ifindex != 42 || ep.Flags != maps.EndpointShaped|maps.EndpointPolicy {
		t.Errorf("after the policy changed: %+v", ep)
	}
	// The endpoint rewired (reconcile): its policy stays.
	if err := e.Put(ip, maps.Endpoint{Ifindex: 43}); err != nil {
		t.Fatal(err)
	}
	if ep := get(); ep.Ifindex != 43 || ep.PolicyID != 7 || ep.Flags != maps.EndpointPolicy {
		t.Errorf("after a rewire: %+v", ep)
	}
	if err := e.Delete(ip); err != nil {
		t.Fatal(err)
	}
	// A new endpoint on the same IP starts without the old one's policy.
	if err := e.Put(ip, maps.Endpoint{Ifindex: 44}); err != nil {
		t.Fatal(err)
	}
	if ep := get(); ep.PolicyID != 0 || ep.Flags != 0 {
		t.Errorf("a new endpoint inherited a policy: %+v", ep)
	}
}
