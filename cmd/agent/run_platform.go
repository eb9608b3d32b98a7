package main

import (
	"fmt"

	"github.com/spf13/pflag"

	"github.com/podvnet/podvnet/pkg/platform"
)

// platformFlags say which destinations pods must not reach.
type platformFlags struct {
	blocked   string
	blockIMDS bool
}

func (p *platformFlags) register(fl *pflag.FlagSet) {
	fl.StringVar(&p.blocked, "blocked-endpoints", platform.DefaultBlocked,
		"destinations pods must not reach, comma-separated ADDR:PORT/PROTO (tcp, udp or sctp); the default is the WireServer and HostGAPlugin, as AKS blocks them; empty: none")
	fl.BoolVar(&p.blockIMDS, "block-imds", false, "also block pods from IMDS ("+platform.IMDS.String()+"); hostNetwork pods, which are the node, keep it")
}

// parse refuses the whole list over one bad entry, naming it: a typo must
// not silently unblock the WireServer.
func (p *platformFlags) parse() ([]platform.Endpoint, error) {
	eps, err := platform.ParseList(p.blocked)
	if err != nil {
		return nil, fmt.Errorf("--blocked-endpoints: %w", err)
	}
	if p.blockIMDS {
		eps = platform.Add(eps, platform.IMDS)
	}
	return eps, nil
}
