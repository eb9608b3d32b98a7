// Package policy computes what Kubernetes NetworkPolicies mean for the
// endpoints of this node: an identity for every distinct (namespace,
// labels, named ports) among the cluster's pods, the peer IP -> identity
// map, and for each local endpoint and direction the ports each peer
// identity may use, the ports every peer may use, and its ipBlock prefixes
// (the union of the ports of every block holding a prefix, excepts
// subtracted). It is pure Go: pkg/kube hands it plain values from the API,
// and the agent writes what it computes into the maps (pkg/policymap).
//
// It is incremental where the cluster is large: a selector's matching
// identities are cached and updated only for identities that come or go,
// and an endpoint's rules are computed again only when a policy selecting
// it, a selector its rules use, or its own identity changed.
package policy

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/podvnet/podvnet/internal/ipproto"
)

// IP protocol numbers a rule may name.
const (
	TCP  uint8 = ipproto.TCP
	UDP  uint8 = ipproto.UDP
	SCTP uint8 = ipproto.SCTP
)

// Policy is a NetworkPolicy (networking.k8s.io/v1), its defaults applied.
type Policy struct {
	Namespace, Name string
	// PodSelector picks the pods of Namespace the policy applies to.
	PodSelector Selector
	// IngressIsolation, EgressIsolation: policyTypes holds Ingress,
	// Egress (defaulted: Ingress always, Egress when egress rules exist).
	IngressIsolation, EgressIsolation bool
	Ingress, Egress                   []Rule
}

// Key is namespace/name.
func (p Policy) Key() string { return p.Namespace + "/" + p.Name }

// Rule allows traffic from (to) any of Peers on any of Ports.
type Rule struct {
	Peers []Peer // none: every peer, pods and anything else
	Ports []Port // none: every port of every protocol
}

// Peer is one from/to item: pods by selectors, or an ipBlock.
type Peer struct {
	// Pods selects pods; nil with Namespaces set: every pod of those
	// namespaces.
	Pods *Selector
	// Namespaces selects namespaces; nil: the policy's own.
	Namespaces *Selector
	IPBlock    *IPBlock
}

// IPBlock is a CIDR minus its excepts.
type IPBlock struct {
	CIDR   netip.Prefix
	Except []netip.Prefix
}

// Port is one ports item.
type Port struct {
	Protocol uint8  // TCP (the default), UDP or SCTP
	Port     uint16 // 0 with no Name: every port of Protocol
	EndPort  uint16 // the range Port..EndPort; 0: Port alone
	Name     string // a named port, resolved on the pod receiving the traffic
}

// Pod is what identities and named ports need of a pod.
type Pod struct {
	Namespace, Name, UID string
	IP                   netip.Addr // none yet: no ipcache entry
	HostNetwork          bool       // its IP is its node's
	Labels               map[string]string
	Ports                map[string]NamedPort
}

// Key is namespace/name.
func (p Pod) Key() string { return p.Namespace + "/" + p.Name }

// NamedPort is a container port with a name.
type NamedPort struct {
	Port     uint16
	Protocol uint8
}

// Namespace is a namespace's labels.
type Namespace struct {
	Name   string
	Labels map[string]string
}

// NameLabel is the label every namespace carries with its own name.
const NameLabel = "kubernetes.io/metadata.name"

// Selector is a label selector: every requirement holds. The zero
// Selector matches everything.
type Selector struct {
	MatchLabels      map[string]string
	MatchExpressions []Requirement
}

// Requirement is one matchExpressions item.
type Requirement struct {
	Key      string
	Operator string // In, NotIn, Exists, DoesNotExist
	Values   []string
}

// Matches applies the selector to labels. An operator it does not know
// matches nothing (the API server refuses such selectors anyway).
func (s Selector) Matches(labels map[string]string) bool {
	for k, v := range s.MatchLabels {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	for _, r := range s.MatchExpressions {
		v, ok := labels[r.Key]
		switch r.Operator {
		case "In":
			if !ok || !slices.Contains(r.Values, v) {
				return false
			}
		case "NotIn":
			if ok && slices.Contains(r.Values, v) {
				return false
			}
		case "Exists":
			if !ok {
				return false
			}
		case "DoesNotExist":
			if ok {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// String is a canonical form: equal selectors print the same.
func (s Selector) String() string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(s.MatchLabels)) {
		parts = append(parts, k+"="+s.MatchLabels[k])
	}
	for _, r := range s.MatchExpressions {
		vals := slices.Clone(r.Values)
		slices.Sort(vals)
		parts = append(parts, fmt.Sprintf("%s %s (%s)", r.Key, r.Operator, strings.Join(vals, ",")))
	}
	slices.Sort(parts[len(s.MatchLabels):])
	return "{" + strings.Join(parts, ", ") + "}"
}

func labelsString(l map[string]string) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(l)) {
		parts = append(parts, k+"="+l[k])
	}
	return strings.Join(parts, ",")
}
