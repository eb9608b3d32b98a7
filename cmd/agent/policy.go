package main

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/spf13/pflag"

	"github.com/podvnet/podvnet/pkg/agent"
	"github.com/podvnet/podvnet/pkg/kube"
)

// policyFlags turn NetworkPolicy on and say what a pod whose policy
// cannot be known gets.
type policyFlags struct {
	enabled bool
	unknown string
	wait    time.Duration
}

func (p *policyFlags) register(fl *pflag.FlagSet) {
	fl.BoolVar(&p.enabled, "network-policy", true, "enforce Kubernetes NetworkPolicy (needs the API server: --node-name)")
	fl.StringVar(&p.unknown, "policy-unknown", agent.PolicyUnknownDeny, "a pod whose NetworkPolicy cannot be known (no API server since the agent started): deny (its ADD fails, the runtime retries) or allow (it starts open, isolated once known)")
	fl.DurationVar(&p.wait, "policy-wait", 5*time.Second, "how long an ADD waits for the pod's NetworkPolicy to be known")
}

// options are the agent's NetworkPolicy options: nil (off) without an API
// client or with --network-policy=false.
func (p *policyFlags) options(kc *kube.Client, serviceCIDR netip.Prefix) (*agent.PolicyOptions, error) {
	if p.unknown != agent.PolicyUnknownDeny && p.unknown != agent.PolicyUnknownAllow {
		return nil, fmt.Errorf("--policy-unknown %q: want deny or allow", p.unknown)
	}
	if p.wait <= 0 {
		return nil, fmt.Errorf("--policy-wait %s: must be positive", p.wait)
	}
	if kc == nil || !p.enabled {
		return nil, nil
	}
	return &agent.PolicyOptions{Source: kc, Unknown: p.unknown, Wait: p.wait, ServiceCIDR: serviceCIDR}, nil
}
