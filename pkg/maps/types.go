// Package maps gives typed Go views of podvnet's pinned BPF maps (endpoints,
// node config, counters, no-SNAT ranges, blocked destinations, the monitor)
// and holds the Go mirrors of the types the C side shares with Go. It takes
// opened maps (or opens the pins read-only for `debug`) and never loads
// programs.
package maps

import (
	"fmt"
	"slices"
)

// Go mirrors of the structs and enums in bpf/include/podvnet.h. Keep in sync:
// TestLayoutMatchesBTF (pkg/loader) compares them with the object's BTF.
// Addresses are [4]byte in network order, as the programs see them. The
// NetworkPolicy structs are mirrored in policytypes.go.

// Endpoint mirrors struct pv_endpoint: one pod interface on this node.
type Endpoint struct {
	Ifindex uint32  // host-side veth
	PodMAC  [6]byte // pod's eth0
	HostMAC [6]byte // host-side veth
	Flags   uint32
	// PolicyID is the endpoint's index in the NetworkPolicy maps.
	PolicyID uint32
}

// EndpointKey mirrors struct pv_endpoint_key.
type EndpointKey struct {
	IP [4]byte
}

// Config mirrors struct pv_config, the node-wide settings at index 0.
type Config struct {
	NICIfindex uint32
	NodeIP     [4]byte
	GatewayIP  [4]byte
	Subnet     [4]byte
	SubnetMask [4]byte
	// NextHopMAC and NICMAC are the Ethernet header of frames into the
	// VNet (destination, source); a NextHopMAC that is not unicast (zero:
	// not known) leaves the next hop to the kernel.
	NextHopMAC [6]byte
	NICMAC     [6]byte
	Flags      uint32
}

// NoSNATKey mirrors struct pv_nosnat_key (an LPM trie key).
type NoSNATKey struct {
	Prefixlen uint32
	Addr      [4]byte
}

// BlockedKey mirrors struct pv_blocked_key: a destination pods must not
// reach. Port 0 is the guard for fragments (see Blocked).
type BlockedKey struct {
	Addr  [4]byte
	Port  [2]byte // network order
	Proto uint8
	Pad   uint8
}

// BlockedValue mirrors struct pv_blocked: the reason a blocked destination
// is counted under.
type BlockedValue struct {
	Reason Reason
}

// Counter mirrors struct pv_counter.
type Counter struct {
	Packets uint64
	Bytes   uint64
}

// Endpoint flags (PV_EP_F_*).
const (
	// EndpointShaped: tc shapes the pod's traffic on its host veth, so the
	// programs leave it on the kernel path.
	EndpointShaped uint32 = 1 << 0
	// EndpointPolicyIngress, EndpointPolicyEgress: a NetworkPolicy isolates
	// the pod in that direction; the programs judge its packets.
	EndpointPolicyIngress uint32 = 1 << 1
	EndpointPolicyEgress  uint32 = 1 << 2
)

// Config flags (PV_CFG_F_*).
const (
	// ConfigCTLookup makes the programs ask conntrack before a fast-path
	// redirect, so replies of NAT'd connections reach the stack.
	ConfigCTLookup uint32 = 1 << 0
	// ConfigCTByPort limits those lookups to packets whose source port has
	// its ct bit in svc_ports (PortBits).
	ConfigCTByPort uint32 = 1 << 1
	// ConfigServices makes the programs translate Service traffic
	// (--service-mode=bpf).
	ConfigServices uint32 = 1 << 2
)

// Reason mirrors enum pv_reason: a verdict or a drop reason.
type Reason uint32

// The values of enum pv_reason.
const (
	ReasonPodToStack Reason = iota
	ReasonPodToStackNAT
	ReasonPodToStackFrag
	ReasonPodToLocal
	ReasonPodToNIC
	ReasonPodARP
	ReasonPodARPReply
	ReasonPodShaped
	ReasonNICToStack
	ReasonNICToStackNAT
	ReasonNICToStackFrag
	ReasonNICShaped
	ReasonNICToLocal
	ReasonDropMalformed
	ReasonDropUnsupportedL3
	ReasonDropSpoofedIP
	ReasonDropSpoofedMAC
	ReasonDropTTLExceeded
	ReasonDropWireserver
	ReasonDropHostGAPlugin
	ReasonDropIMDS
	ReasonDropBlockedEndpoint
	// Appended (C says why): a reason keeps its index across releases.
	ReasonPodToNICNeigh
	ReasonDropPolicyIngress
	ReasonDropPolicyEgress
	ReasonDropIPBlockExceptIngress
	ReasonDropIPBlockExceptEgress
	ReasonDropPolicyPendingIngress
	ReasonDropPolicyPendingEgress
	ReasonStackToPod
	ReasonStackToNIC
	ReasonSvcSockXlate
	ReasonSvcSockNoBackend
	ReasonSvcXlate
	ReasonSvcRevXlate
	ReasonSvcNoBackend
	ReasonSvcDrop
	ReasonSvcNATFull
	ReasonSvcHostNoService
	ReasonMax
)

// reasonNames are the C enumerator names without the PV_ prefix, lower-cased
// for people; TestLayoutMatchesBTF checks them against the enum.
var reasonNames = [ReasonMax]string{
	ReasonPodToStack:          "pod_to_stack",
	ReasonPodToStackNAT:       "pod_to_stack_nat",
	ReasonPodToStackFrag:      "pod_to_stack_frag",
	ReasonPodToLocal:          "pod_to_local",
	ReasonPodToNIC:            "pod_to_nic",
	ReasonPodARP:              "pod_arp",
	ReasonPodARPReply:         "pod_arp_reply",
	ReasonPodShaped:           "pod_shaped",
	ReasonNICToStack:          "nic_to_stack",
	ReasonNICToStackNAT:       "nic_to_stack_nat",
	ReasonNICToStackFrag:      "nic_to_stack_frag",
	ReasonNICShaped:           "nic_shaped",
	ReasonNICToLocal:          "nic_to_local",
	ReasonDropMalformed:       "drop_malformed",
	ReasonDropUnsupportedL3:   "drop_unsupported_l3",
	ReasonDropSpoofedIP:       "drop_spoofed_ip",
	ReasonDropSpoofedMAC:      "drop_spoofed_mac",
	ReasonDropTTLExceeded:     "drop_ttl_exceeded",
	ReasonDropWireserver:      "drop_wireserver",
	ReasonDropHostGAPlugin:    "drop_hostgaplugin",
	ReasonDropIMDS:            "drop_imds",
	ReasonDropBlockedEndpoint: "drop_blocked_endpoint",
	ReasonPodToNICNeigh:       "pod_to_nic_neigh",

	ReasonDropPolicyIngress:        "drop_policy_ingress",
	ReasonDropPolicyEgress:         "drop_policy_egress",
	ReasonDropIPBlockExceptIngress: "drop_ipblock_except_ingress",
	ReasonDropIPBlockExceptEgress:  "drop_ipblock_except_egress",
	ReasonDropPolicyPendingIngress: "drop_policy_pending_ingress",
	ReasonDropPolicyPendingEgress:  "drop_policy_pending_egress",
	ReasonStackToPod:               "stack_to_pod",
	ReasonStackToNIC:               "stack_to_nic",
	ReasonSvcSockXlate:             "svc_sock_xlate",
	ReasonSvcSockNoBackend:         "svc_sock_no_backend",
	ReasonSvcXlate:                 "svc_xlate",
	ReasonSvcRevXlate:              "svc_rev_xlate",
	ReasonSvcNoBackend:             "svc_no_backend",
	ReasonSvcDrop:                  "svc_drop",
	ReasonSvcNATFull:               "svc_nat_full",
	ReasonSvcHostNoService:         "svc_host_no_service",
}

func (r Reason) String() string {
	if r < ReasonMax {
		return reasonNames[r]
	}
	return fmt.Sprintf("reason_%d", uint32(r))
}

// IsDrop reports whether packets counted under r were dropped (or, for a
// Service without endpoints, refused).
func (r Reason) IsDrop() bool {
	switch r {
	case ReasonSvcSockNoBackend, ReasonSvcNoBackend, ReasonSvcDrop, ReasonSvcNATFull, ReasonSvcHostNoService:
		return true
	}
	return r >= ReasonDropMalformed && r <= ReasonDropBlockedEndpoint || r.IsPolicyDrop()
}

// IsPolicyDrop reports whether r is a NetworkPolicy drop.
func (r Reason) IsPolicyDrop() bool {
	return r >= ReasonDropPolicyIngress && r <= ReasonDropPolicyPendingEgress
}

// PolicyDirection is "ingress" or "egress" for a NetworkPolicy drop, else
// "". The C enum pairs each policy reason as (ingress, egress).
func (r Reason) PolicyDirection() string {
	if !r.IsPolicyDrop() {
		return ""
	}
	return [2]string{"ingress", "egress"}[(r-ReasonDropPolicyIngress)%2]
}

// IsService reports whether r counts a Service translation or its failure:
// `debug monitor` names the Service of such events.
func (r Reason) IsService() bool { return r >= ReasonSvcSockXlate && r < ReasonMax }

// Verdict is what happened to packets counted under r: "redirect" (the eBPF
// fast path), "pass" (handed to the kernel stack) or "drop".
func (r Reason) Verdict() string {
	switch {
	case r.IsDrop():
		return "drop"
	case r == ReasonPodToLocal || r == ReasonPodToNIC || r == ReasonPodToNICNeigh || r == ReasonNICToLocal || r == ReasonPodARPReply:
		return "redirect"
	case r == ReasonSvcSockXlate || r == ReasonSvcXlate || r == ReasonSvcRevXlate:
		return "translate"
	default:
		return "pass"
	}
}

// Event mirrors struct pv_event: one packet reported to the monitor.
type Event struct {
	TsNS     uint64
	Reason   Reason
	Ifindex  uint32
	Len      uint32
	Saddr    [4]byte
	Daddr    [4]byte
	Sport    [2]byte // network order
	Dport    [2]byte
	EthProto [2]byte
	Proto    uint8
	Hook     Hook
	Pad      uint32
}

// Monitor mirrors struct pv_monitor: the lease under which events flow.
type Monitor struct {
	DeadlineNS uint64
	Flags      uint32
	IP         [4]byte
}

// Monitor flags (PV_MON_F_*).
const (
	MonitorDrops uint32 = 1 << 0
	MonitorTrace uint32 = 1 << 1
)

// Hook mirrors enum pv_hook: which program, at which attach point. The
// same value names the program in monitor events and the attachment in
// pins and listings.
type Hook uint8

// The values of enum pv_hook.
const (
	HookPod   Hook = 1 // host-side veth ingress: from_pod
	HookNIC   Hook = 2 // VNet NIC ingress: from_nic
	HookToPod Hook = 3 // host-side veth egress: to_pod (NetworkPolicy)
	HookToNIC Hook = 4 // VNet NIC egress: to_nic (NetworkPolicy)
	HookSock  Hook = 5 // the pods' cgroup: the sock_* programs (SockPrograms)
	HookHost  Hook = 6 // the Service device's egress: from_host
)

// Hooks lists every hook that runs a tc program on an interface.
var Hooks = []Hook{HookPod, HookNIC, HookToPod, HookToNIC, HookHost}

var hookNames = map[Hook][2]string{
	HookPod:   {"pod", "from_pod"},
	HookNIC:   {"nic", "from_nic"},
	HookToPod: {"to-pod", "to_pod"},
	HookToNIC: {"to-nic", "to_nic"},
	HookHost:  {"host", "from_host"},
	HookSock:  {"sock", "sock_connect4"},
}

// String is the hook's short name, "pod", "nic", "to-pod", "to-nic", "host"
// or "sock": the directory its links are pinned in, the name of its legacy
// tc filter, what `debug links` shows.
func (h Hook) String() string {
	if n, ok := hookNames[h]; ok {
		return n[0]
	}
	return fmt.Sprintf("hook_%d", uint8(h))
}

// Program is the name of the hook's program in the object ("from_pod",
// "to_nic", ...), as `debug monitor` shows it; the socket hooks' programs
// are SockPrograms, and HookSock names the first.
func (h Hook) Program() string {
	if n, ok := hookNames[h]; ok {
		return n[1]
	}
	return h.String()
}

// Egress says whether the hook is on tc egress (to_pod, to_nic, the Service
// device's from_host), not ingress.
func (h Hook) Egress() bool { return h == HookToPod || h == HookToNIC || h == HookHost }

// SockPrograms are the cgroup programs of HookSock, each pinned under
// links/sock/ by its name.
var SockPrograms = []string{"sock_connect4", "sock_sendmsg4", "sock_recvmsg4", "sock_getpeername4",
	"sock_connect6", "sock_sendmsg6", "sock_recvmsg6", "sock_getpeername6"}

// ParseHook reads a hook's short name (String).
func ParseHook(s string) (Hook, error) {
	for _, h := range Hooks {
		if h.String() == s {
			return h, nil
		}
	}
	return 0, fmt.Errorf("hook %q: want pod, nic, to-pod, to-nic or host", s)
}

// MarshalText writes the short name, so JSON shows "pod", not a number.
func (h Hook) MarshalText() ([]byte, error) { return []byte(h.String()), nil }

// Map names as in the ELF object; each is pinned at paths.Node.MapPin(name).
const (
	EndpointsMap = "endpoints"
	ConfigMap    = "config"
	CountersMap  = "counters"
	NoSNATMap    = "nosnat"
	EventsMap    = "events"
	MonitorMap   = "monitor"
	BlockedMap   = "blocked"
	// BlockedFilterMap spares most packets the lookup in BlockedMap.
	BlockedFilterMap = "blocked_filter"
)

// Names lists every map podvnet pins.
var Names = slices.Concat([]string{EndpointsMap, ConfigMap, CountersMap, NoSNATMap, EventsMap, MonitorMap, BlockedMap, BlockedFilterMap},
	PolicyNames, serviceMapNames)
