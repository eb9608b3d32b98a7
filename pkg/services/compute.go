package services

import (
	"cmp"
	"net/netip"
	"slices"

	"github.com/podvnet/podvnet/pkg/maps"
)

// ListKey names one backend list of a Service: a port's endpoints for the
// whole cluster, or this node's alone (a Local traffic policy).
type ListKey struct {
	Port  string // the Service port's name
	Proto uint8
	Local bool
}

// BackendRef is one backend of a list.
type BackendRef struct {
	maps.BackendAddr
	Local bool // a pod of this node
}

// FrontendSpec is one frontend a Service must have: its key, which list
// serves it, and how.
type FrontendSpec struct {
	Key             maps.FrontendKey
	List            ListKey
	Flags           uint16
	AffinityTimeout uint32
}

// Desired is what the maps must hold for one Service.
type Desired struct {
	Frontends []FrontendSpec
	Lists     map[ListKey][]BackendRef
}

// candidate is one (address, port) of a Service port's endpoints, with the
// conditions of its endpoint.
type candidate struct {
	ref                         BackendRef
	ready, serving, terminating bool
}

// Compute returns the frontends and backend lists of svc, given its slices,
// for the node called node. It follows kube-proxy (pkg/proxy/topology.go
// CategorizeEndpoints): ready endpoints serve; serving-and-terminating ones
// only when no endpoint is ready; a Local policy uses this node's
// endpoints (ready, or else serving-and-terminating). Frontends: each
// ClusterIP (internal scope: the internal policy); NodePort, LoadBalancer
// ingress IPs and externalIPs in the external scope (the external policy)
// and in the internal scope with the cluster's endpoints, as kube-proxy
// short-circuits pods' traffic to them. A Service without any usable
// endpoint keeps its frontends with no backends: the programs reject. One
// with a Local policy and none here drops (kube-proxy's verdicts).
func Compute(svc *Service, eps []*EndpointSlice, node string) Desired {
	d := Desired{Lists: map[ListKey][]BackendRef{}}
	for _, p := range svc.Ports {
		if p.Proto != TCP && p.Proto != UDP {
			continue // SCTP: the programs translate TCP and UDP only
		}
		cands := candidates(p, eps, node)
		cluster, local, any := categorize(cands)
		ck, lk := ListKey{p.Name, p.Proto, false}, ListKey{p.Name, p.Proto, true}
		var flags uint16
		if svc.AffinityTimeout > 0 {
			flags |= maps.SvcAffinity
		}
		add := func(addr netip.Addr, port uint16, scope uint8, f uint16, localPolicy bool) {
			list, backends := ck, cluster
			if localPolicy {
				list, backends = lk, local
				f |= maps.SvcLocal
				if any && len(local) == 0 {
					f |= maps.SvcDrop
				}
			}
			d.Lists[list] = backends
			d.Frontends = append(d.Frontends, FrontendSpec{
				Key:  maps.FrontendKey{Addr: addr, Port: port, Proto: p.Proto, Scope: scope},
				List: list, Flags: flags | f, AffinityTimeout: svc.AffinityTimeout,
			})
		}
		for _, ip := range svc.ClusterIPs {
			if ip.Is4() {
				add(ip, p.Port, maps.ScopeInternal, 0, svc.InternalLocal)
			}
		}
		if p.NodePort != 0 {
			add(netip.IPv4Unspecified(), p.NodePort, maps.ScopeExternal, maps.SvcNodePort, svc.ExternalLocal)
			add(netip.IPv4Unspecified(), p.NodePort, maps.ScopeInternal, maps.SvcNodePort, false)
		}
		for _, ip := range slices.Concat(svc.LoadBalancerIPs, svc.ExternalIPs) {
			if ip.Is4() {
				add(ip, p.Port, maps.ScopeExternal, maps.SvcExternal, svc.ExternalLocal)
				add(ip, p.Port, maps.ScopeInternal, maps.SvcExternal, false)
			}
		}
	}
	slicesSortFrontends(d.Frontends)
	return d
}

// candidates lists the distinct IPv4 (address, port)s of p's endpoints.
func candidates(p Port, eps []*EndpointSlice, node string) []candidate {
	seen := map[maps.BackendAddr]int{}
	var out []candidate
	for _, s := range eps {
		port, ok := slicePort(s, p)
		if !ok {
			continue
		}
		for _, ep := range s.Endpoints {
			for _, a := range ep.Addrs {
				if !a.Is4() {
					continue
				}
				b := maps.BackendAddr{Addr: a, Port: port, Proto: p.Proto}
				c := candidate{ref: BackendRef{BackendAddr: b, Local: node != "" && ep.Node == node},
					ready: ep.Ready, serving: ep.Serving, terminating: ep.Terminating}
				if i, dup := seen[b]; dup {
					// The same address in two slices (a move between
					// them): the better conditions win.
					if c.ready && !out[i].ready {
						out[i] = c
					}
					continue
				}
				seen[b] = len(out)
				out = append(out, c)
			}
		}
	}
	slices.SortFunc(out, func(a, b candidate) int {
		return cmp.Or(a.ref.Addr.Compare(b.ref.Addr), cmp.Compare(a.ref.Port, b.ref.Port))
	})
	return out
}

// slicePort is the number a slice serves Service port p on: the slice port
// of the same name and protocol.
func slicePort(s *EndpointSlice, p Port) (uint16, bool) {
	for _, sp := range s.Ports {
		if sp.Name == p.Name && sp.Proto == p.Proto && sp.Port != 0 {
			return sp.Port, true
		}
	}
	return 0, false
}

// categorize splits candidates as kube-proxy does: the cluster's and this
// node's usable endpoints, and whether the Service has any at all.
func categorize(cands []candidate) (cluster, local []BackendRef, any bool) {
	pick := func(onlyLocal bool) []BackendRef {
		var ready, fallback []BackendRef
		for _, c := range cands {
			if onlyLocal && !c.ref.Local {
				continue
			}
			if c.ready {
				ready = append(ready, c.ref)
			} else if c.serving && c.terminating {
				fallback = append(fallback, c.ref)
			}
		}
		if len(ready) > 0 {
			return ready
		}
		return fallback
	}
	cluster, local = pick(false), pick(true)
	return cluster, local, len(cluster) > 0
}

func slicesSortFrontends(fs []FrontendSpec) {
	slices.SortFunc(fs, func(a, b FrontendSpec) int {
		return cmp.Or(a.Key.Addr.Compare(b.Key.Addr), cmp.Compare(a.Key.Port, b.Key.Port), cmp.Compare(a.Key.Proto, b.Key.Proto),
			cmp.Compare(a.Key.Scope, b.Key.Scope))
	})
}

// LocalReadyIPs counts the distinct addresses of this node's ready
// endpoints of the Service, what kube-proxy's healthCheckNodePort reports
// (terminating endpoints are not counted: the load balancer drains the
// node).
func LocalReadyIPs(eps []*EndpointSlice, node string) int {
	ips := map[netip.Addr]bool{}
	for _, s := range eps {
		for _, ep := range s.Endpoints {
			if ep.Node == node && ep.Ready {
				for _, a := range ep.Addrs {
					ips[a] = true
				}
			}
		}
	}
	return len(ips)
}
