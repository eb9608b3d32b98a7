package main

import (
	"bytes"
	"testing"
)

// TestDebugPolicyOutput pins `debug policy`'s table and JSON.
func TestDebugPolicyOutput(t *testing.T) {
	rows := []policyEndpointRow{
		{IP: "10.240.0.5", PodNamespace: "shop", PodName: "web-0", PolicyID: 1, Identity: 300,
			Ingress: policyDirectionRow{State: "isolated", Flows: 14, Denied: 3, DeniedBytes: 180, Rules: []policyRuleRow{
				{Peer: "any", Ports: []string{"tcp/443"}, Flows: 2},
				{Peer: "identity", Identity: 301, Labels: "shop:app=front", IPs: []string{"10.240.0.7", "10.240.0.9", "10.240.0.12"},
					Ports: []string{"tcp/443", "tcp/8080-8090"}, Flows: 12},
				{Peer: "cidr", CIDR: "10.240.0.0/16", Ports: []string{"tcp/443"}},
				{Peer: "cidr", CIDR: "10.240.0.66/32", Ports: []string{}, ExceptPorts: []string{"tcp/443"}},
			}},
			Egress: policyDirectionRow{State: "open", Flows: 0, Rules: []policyRuleRow{}}},
		{IP: "10.240.0.6", PodNamespace: "shop", PodName: "db-0", PolicyID: 2, Identity: 302,
			Ingress: policyDirectionRow{State: "pending", Rules: []policyRuleRow{}},
			Egress:  policyDirectionRow{State: "pending", Rules: []policyRuleRow{}}},
	}
	for _, output := range []string{"table", "json"} {
		var b bytes.Buffer
		if err := printPolicy(&b, output, rows); err != nil {
			t.Fatal(err)
		}
		golden(t, "policy."+output, b.Bytes())
	}
	if got := filterPolicyRows(rows, "shop/db-0"); len(got) != 1 || got[0].IP != "10.240.0.6" {
		t.Errorf("filter by name: %+v", got)
	}
	if got := filterPolicyRows(rows, "10.240.0.5"); len(got) != 1 || got[0].PodName != "web-0" {
		t.Errorf("filter by IP: %+v", got)
	}
}
