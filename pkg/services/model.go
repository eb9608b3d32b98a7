// Package services turns Kubernetes Services and EndpointSlices into what
// the data path's Service maps must hold, with kube-proxy's semantics
// (which endpoints serve, traffic policies, session affinity, rejecting a
// Service without endpoints), and writes it into the maps one Service at a
// time, in an order no reader can catch half done: backends before the
// slots that name them, slots before the frontend's count, and the reverse
// on the way out. It also keeps the source-port filter the programs use to
// find replies (ours, and kernel NAT's for the conntrack lookup), and
// answers kube-proxy's healthCheckNodePort.
//
// The input is plain values (pkg/kube converts the API objects); the
// output goes through Writer, which pkg/maps implements.
package services

import (
	"fmt"
	"net/netip"

	"github.com/podvnet/podvnet/internal/ipproto"
)

// Key names a Service.
type Key struct{ Namespace, Name string }

func (k Key) String() string { return k.Namespace + "/" + k.Name }

// IP protocol numbers of Service ports.
const (
	TCP  uint8 = ipproto.TCP
	UDP  uint8 = ipproto.UDP
	SCTP uint8 = ipproto.SCTP
)

// Service is what the data path needs of a Service.
type Service struct {
	Key
	// ClusterIPs are the Service's cluster IPs (none when headless).
	ClusterIPs []netip.Addr
	// ExternalIPs and LoadBalancerIPs (status.loadBalancer.ingress[].ip)
	// are served like NodePorts: from outside, with the external policy.
	ExternalIPs     []netip.Addr
	LoadBalancerIPs []netip.Addr
	Ports           []Port
	// ExternalLocal: externalTrafficPolicy Local. InternalLocal:
	// internalTrafficPolicy Local.
	ExternalLocal bool
	InternalLocal bool
	// AffinityTimeout is sessionAffinity ClientIP's timeout in seconds; 0
	// means no affinity.
	AffinityTimeout uint32
	// HealthCheckNodePort is where kube-proxy answers for an
	// externalTrafficPolicy Local Service; 0 for none.
	HealthCheckNodePort uint16
}

// Port is one port of a Service.
type Port struct {
	Name     string
	Proto    uint8
	Port     uint16
	NodePort uint16 // 0: none
	// TargetPort is a numeric targetPort, TargetPortName a named one (the
	// EndpointSlices carry its number per pod).
	TargetPort     uint16
	TargetPortName string
}

// EndpointSlice is what the data path needs of an EndpointSlice.
type EndpointSlice struct {
	Namespace, Name string
	// Service is the Service it belongs to (label kubernetes.io/service-name).
	Service   string
	Ports     []EndpointPort
	Endpoints []Endpoint
}

// EndpointPort is a slice's port: a Service port's name, protocol and the
// number its endpoints serve it on.
type EndpointPort struct {
	Name  string
	Proto uint8
	Port  uint16
}

// Endpoint is one endpoint of a slice, with its conditions as the API
// defines them (an absent ready or serving means true, an absent
// terminating false: pkg/kube resolves that).
type Endpoint struct {
	Addrs       []netip.Addr
	Ready       bool
	Serving     bool
	Terminating bool
	Node        string
}

// ProtoPort is a protocol and port.
type ProtoPort struct {
	Proto uint8
	Port  uint16
}

func (p ProtoPort) String() string { return fmt.Sprintf("%d/%s", p.Port, ipproto.Name(p.Proto)) }
