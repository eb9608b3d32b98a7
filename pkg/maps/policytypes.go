package maps

// Go mirrors of the NetworkPolicy structs of bpf/include/podvnet.h (the
// rest are in types.go). TestLayoutMatchesBTF checks them too.

// Reserved identities (PV_ID_*); pod identities start at IdentityFirstPod.
const (
	IdentityWorld      uint32 = 1   // an address the ipcache does not hold
	IdentityHost       uint32 = 2   // this node
	IdentityRemoteNode uint32 = 3   // another node
	IdentityFirstPod   uint32 = 256 // the first identity the agent hands a pod
)

// Directions of a rule (PV_DIR_*).
const (
	DirIngress uint8 = 0
	DirEgress  uint8 = 1
)

// IPCacheKey mirrors struct pv_ipcache_key.
type IPCacheKey struct {
	IP [4]byte
}

// Identity mirrors struct pv_identity.
type Identity struct {
	ID uint32
}

// PolicyKey mirrors struct pv_policy_key: a peer identity's rule for an
// endpoint (its PolicyID) and direction.
type PolicyKey struct {
	Endpoint uint32
	Peer     uint32
	Dir      uint8
	Pad      [3]uint8
}

// PolicyValue mirrors struct pv_policy: the port sets a peer (or an ipBlock
// prefix) may use, and the new flows the entry allowed.
type PolicyValue struct {
	Ports       uint32
	ExceptPorts uint32
	Flows       uint64
}

// CIDRKey mirrors struct pv_cidr_key (an LPM trie key; Prefixlen counts
// the 64 bits of endpoint and direction).
type CIDRKey struct {
	Prefixlen uint32
	Endpoint  uint32
	Dir       uint8
	Pad       [3]uint8
	Addr      [4]byte
}

// PortsKey mirrors struct pv_ports_key (an LPM trie key: 32 bits of set,
// then protocol, a pad byte and the port in network order).
type PortsKey struct {
	Prefixlen uint32
	Set       uint32
	Proto     uint8
	Pad       uint8
	Port      [2]byte
}

// PolicyEndpoint mirrors struct pv_policy_endpoint, index PolicyID of the
// policy_endpoints array.
type PolicyEndpoint struct {
	IngressPorts uint32
	EgressPorts  uint32
	Flags        uint32
	Pad          uint32
}

// PolicyEndpoint flags (PV_POLICY_F_*).
const (
	PolicyIngressCIDR    uint32 = 1 << 0
	PolicyEgressCIDR     uint32 = 1 << 1
	PolicyIngressPending uint32 = 1 << 2
	PolicyEgressPending  uint32 = 1 << 3
)

// PolicyStats mirrors struct pv_policy_stats (per CPU), indexed by
// direction.
type PolicyStats struct {
	Flows       [2]uint64
	AnyFlows    [2]uint64
	Denied      [2]uint64
	DeniedBytes [2]uint64
}

// PolicyConfig mirrors struct pv_policy_config, index 0 of policy_config.
type PolicyConfig struct {
	Gen         uint32
	Flags       uint32
	ServiceNet  [4]byte
	ServiceMask [4]byte
}

// PolicyConfig flags (PV_POLICY_CFG_F_*).
const (
	// PolicyConfigEgress: an endpoint of this node is isolated for egress,
	// so to_nic judges the pods' packets the stack routes out.
	PolicyConfigEgress uint32 = 1 << 0
	// PolicyConfigIsolated: an endpoint of this node is isolated either
	// way, so to_pod looks at the local sources of what it delivers.
	PolicyConfigIsolated uint32 = 1 << 1
)

// EndpointPolicy is both isolation flags of an endpoint.
const EndpointPolicy = EndpointPolicyIngress | EndpointPolicyEgress

// FlowKey mirrors struct pv_flow_key.
type FlowKey struct {
	Addr  [2][4]byte
	Port  [2][2]byte
	Proto uint8
	Pad   [3]uint8
}

// Flow mirrors struct pv_flow.
type Flow struct {
	ExpiresNS uint64
	Gen       uint32
	Flags     uint8
	Pad       [3]uint8
}

// Flow flags (PV_FLOW_F_*).
const (
	FlowInit1   uint8 = 1 << 0
	FlowReplied uint8 = 1 << 1
	FlowFin0    uint8 = 1 << 2
	FlowFin1    uint8 = 1 << 3
	FlowRST     uint8 = 1 << 4
)

// FragKey mirrors struct pv_frag_key.
type FragKey struct {
	Saddr [4]byte
	Daddr [4]byte
	ID    [2]byte
	Proto uint8
	Pad   uint8
}

// Frag mirrors struct pv_frag.
type Frag struct {
	Sport [2]byte
	Dport [2]byte
}

// NetworkPolicy map names, as in the ELF object.
const (
	IPCacheMap         = "ipcache"
	PolicyMap          = "policy"
	PolicyCIDRMap      = "policy_cidr"
	PolicyPortsMap     = "policy_ports"
	PolicyEndpointsMap = "policy_endpoints"
	PolicyStatsMap     = "policy_stats"
	PolicyConfigMap    = "policy_config"
	FlowsMap           = "flows"
	FragsMap           = "frags"
)

// PolicyNames lists the NetworkPolicy maps (all pinned, in Names).
var PolicyNames = []string{IPCacheMap, PolicyMap, PolicyCIDRMap, PolicyPortsMap, PolicyEndpointsMap, PolicyStatsMap,
	PolicyConfigMap, FlowsMap, FragsMap}
