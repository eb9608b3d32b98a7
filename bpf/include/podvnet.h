/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * What the data path shares with Go: the structs and enums in maps and
 * events, and their flags. Nothing else belongs here.
 *
 * Keep in sync with pkg/maps/types.go: TestLayoutMatchesBTF in pkg/loader
 * compares every struct below (sizes, member names, offsets) and the
 * pv_reason and pv_hook enums (names, values) with their Go mirrors.
 *
 * Addresses are stored in network byte order. No struct has an implicit hole:
 * padding is spelled out so Go and C agree byte for byte.
 */
#ifndef PODVNET_H
#define PODVNET_H

#include <linux/types.h>
#include <bpf/bpf_helpers.h>

/* The pod IP (network order) keys the endpoints map. */
struct pv_endpoint_key {
	__be32 ip;
};

/* One pod interface on this node. */
struct pv_endpoint {
	__u32 ifindex;     /* host-side veth */
	__u8 pod_mac[6];   /* MAC of the pod's eth0 */
	__u8 host_mac[6];  /* MAC of the host-side veth */
	__u32 flags;       /* PV_EP_F_* */
	/* The endpoint's index in the NetworkPolicy maps (lib/policy.h):
	 * policy_endpoints, policy_stats, and the scope of its rules. */
	__u32 policy_id;
};

/* PV_EP_F_*: endpoint flags. */
#define PV_EP_F_NONE 0
/* tc shapes the pod's traffic on its host veth (the bandwidth plugin): it
 * stays on the kernel path, through those qdiscs. */
#define PV_EP_F_SHAPED (1U << 0)
/* A NetworkPolicy isolates the pod for ingress (egress): packets into (out
 * of) it are judged by lib/policy.h. Without the flag that direction is
 * open and costs nothing but this test. */
#define PV_EP_F_POLICY_INGRESS (1U << 1)
#define PV_EP_F_POLICY_EGRESS (1U << 2)
/* Isolated either way: its flows, both ways, enter the flow table, so that
 * replies meet the entry of what was allowed. */
#define PV_EP_F_POLICY (PV_EP_F_POLICY_INGRESS | PV_EP_F_POLICY_EGRESS)

/* Node-wide settings, index 0 of the config array. Updated in place by the
 * agent, so a settings change never needs a detach. */
struct pv_config {
	__u32 nic_ifindex;  /* the VNet NIC; 0 = not configured, pass to stack */
	__be32 node_ip;     /* primary IP of the NIC, always handled by the stack */
	__be32 gateway_ip;  /* the pods' default gateway (169.254.1.1) */
	__be32 subnet;      /* the VNet subnet, checked before the nosnat LPM */
	__be32 subnet_mask; /* 0: no subnet shortcut, the LPM decides */
	/* The Ethernet header of frames sent into the VNet, in header order:
	 * the next hop's MAC (the VNet gateway's, which the fabric answers
	 * every address with) and the NIC's. An all-zero or multicast
	 * nexthop_mac: not known, the kernel resolves the next hop instead. */
	__u8 nexthop_mac[6];
	__u8 nic_mac[6];
	__u32 flags;        /* PV_CFG_F_* */
};

/* PV_CFG_F_*: node config flags. */
#define PV_CFG_F_CT_LOOKUP (1U << 0) /* ask conntrack before a fast-path redirect */
/* Ask conntrack only for packets whose source port has its ct bit in
 * svc_ports: the ports kernel NAT can answer from (Service backends under
 * kube-proxy, hostPorts). Without it every lookup happens. */
#define PV_CFG_F_CT_BY_PORT (1U << 1)
/* --service-mode=bpf: the programs translate Service traffic themselves. */
#define PV_CFG_F_SVC (1U << 2)

struct pv_nosnat_key {
	__u32 prefixlen;
	__be32 addr;
};

/* A destination pods must not reach (lib/platform.h): the key of the
 * blocked map. Port 0 is a guard the agent adds once for every (addr,
 * proto) of its list: a fragment after the first carries no ports, so it
 * is looked up with port 0, and dropped if any port of addr is blocked. */
struct pv_blocked_key {
	__be32 addr;
	__be16 port; /* destination port; 0: the guard */
	__u8 proto;  /* IPPROTO_TCP, IPPROTO_UDP or IPPROTO_SCTP */
	__u8 pad;
};

/* What a blocked destination is counted as. */
struct pv_blocked {
	__u32 reason; /* enum pv_reason: PV_DROP_WIRESERVER ... PV_DROP_BLOCKED_ENDPOINT */
};

/*
 * Services (lib/lb.h, lib/sock.h, lib/nat.h). A frontend is an address, port
 * and protocol a Service answers on, in one of two scopes: what pods and the
 * node reach (internal) and what arrives from outside (external). The scopes
 * differ only in the backends they hold (a Local traffic policy: this node's
 * alone). A frontend's backends fill slots 1..count of its id.
 */
struct pv_svc_key {
	__be32 addr; /* 0: a NodePort, on every node IP */
	__be16 port;
	__u8 proto;  /* IPPROTO_TCP, IPPROTO_UDP */
	__u8 scope;  /* PV_SVC_SCOPE_* */
};

#define PV_SVC_SCOPE_EXT 0 /* from outside the cluster: from_nic */
#define PV_SVC_SCOPE_INT 1 /* from pods (sockets and packets) and the node */

struct pv_svc {
	__u32 id;               /* keys svc_slots, affinity; names the Service for debug */
	__u16 count;            /* backends in slots 1..count; 0: none */
	__u16 flags;            /* PV_SVC_F_* */
	__u32 affinity_timeout; /* seconds, with PV_SVC_F_AFFINITY */
};

#define PV_SVC_F_NODEPORT (1U << 0) /* key addr 0: any node IP */
#define PV_SVC_F_EXTERNAL (1U << 1) /* a LoadBalancer ingress IP or an externalIP */
#define PV_SVC_F_LOCAL (1U << 2)    /* traffic policy Local: this node's backends, client IP kept */
#define PV_SVC_F_AFFINITY (1U << 3) /* sessionAffinity ClientIP */
#define PV_SVC_F_DROP (1U << 4)     /* count 0 means drop (Local, none here), not reject */

struct pv_svc_slot_key {
	__u32 id;
	__u32 slot; /* 1..count */
};

/* A backend: one endpoint address and port of a Service port. */
struct pv_backend {
	__be32 addr;
	__be16 port;
	__u8 proto;
	__u8 flags; /* PV_BE_F_* */
};

#define PV_BE_F_LOCAL (1U << 0) /* a pod of this node */

/* Session affinity: the last backend a client got from a Service. The
 * client is a netns cookie at the socket, an IPv4 address per packet. */
struct pv_affinity_key {
	__u64 client;
	__u32 id;
	__u32 pad;
};

struct pv_affinity {
	__u64 last_used_ns;
	__u32 backend_id;
	__u32 pad;
};

/* An (id, backend) pair that is in the Service now: an affinity entry for
 * a backend that left is not followed. */
struct pv_affinity_match_key {
	__u32 id;
	__u32 backend_id;
};

/* The reverse translation a socket needs (recvmsg, getpeername): the
 * backend it was sent to, keyed with its cookie, gives the frontend. */
struct pv_sock_key {
	__u64 cookie;
	__be32 addr; /* backend */
	__be16 port;
	__u16 pad;
};

struct pv_sock_revnat {
	__be32 addr; /* frontend */
	__be16 port;
	__u16 pad;
	__u32 id;
};

/* One direction of a flow translated per packet, as the packet arrives. */
struct pv_nat_key {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};

/* What that direction's packets become. */
struct pv_nat {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u32 id;         /* the Service's frontend id */
	__u32 backend_id;
	__u32 flags;      /* PV_NAT_F_* */
};

#define PV_NAT_F_REPLY (1U << 0)   /* the reply direction: translated back */
#define PV_NAT_F_TO_HOST (1U << 1) /* delivered to the node (its Service device) */

/* Services' settings for the programs, index 0 of svc_config. */
struct pv_svc_config {
	__u32 host_ifindex;      /* the Service device the node's Service CIDR route uses */
	__u8 host_mac[6];        /* its MAC: frames put into it are for the host */
	__u16 nat_port_min;      /* SNAT source ports of NodePort traffic (host order) */
	__u16 nat_port_max;
	__u16 pad;
};

/* Source ports that may answer for a translated flow, a bitmap per protocol
 * (key: PV_PORTS_UDP for UDP + port / 64; bit: port % 64). svc: replies our
 * own translation must see (bpf mode); ct: replies kernel NAT must see. */
struct pv_port_bits {
	__u64 svc;
	__u64 ct;
};

#define PV_PORTS_UDP 1024 /* UDP's half of svc_ports; TCP's starts at 0 */

/* Every verdict and drop reason. Names are printed by `debug counters`. */
enum pv_reason {
	PV_POD_TO_STACK = 0,    /* from a pod, handed to the kernel stack */
	PV_POD_TO_STACK_NAT,    /* from a pod, a flow the kernel NAT'd: stack */
	PV_POD_TO_STACK_FRAG,   /* from a pod, an IPv4 fragment or ICMP error: stack */
	PV_POD_TO_LOCAL,        /* from a pod to a pod on this node */
	PV_POD_TO_NIC,          /* from a pod into the VNet, to the cached next hop */
	PV_POD_ARP,             /* ARP from a pod, passed to the stack */
	PV_POD_ARP_REPLY,       /* ARP request for the gateway, answered */
	PV_POD_SHAPED,          /* from or to a shaped pod: left to tc and the stack */
	PV_NIC_TO_STACK,        /* from the NIC, not for a pod */
	PV_NIC_TO_STACK_NAT,    /* from the NIC to a pod, a flow the kernel NAT'd */
	PV_NIC_TO_STACK_FRAG,   /* from the NIC to a pod, a fragment or ICMP error */
	PV_NIC_SHAPED,          /* from the NIC to a shaped pod: the stack */
	PV_NIC_TO_LOCAL,        /* from the NIC to a pod on this node */
	PV_DROP_MALFORMED,      /* truncated Ethernet or IPv4 header, IHL < 5 */
	PV_DROP_UNSUPPORTED_L3, /* from a pod, neither IPv4 nor ARP */
	PV_DROP_SPOOFED_IP,     /* source IP is not the sending pod's */
	PV_DROP_SPOOFED_MAC,    /* source MAC is not the sending pod's */
	PV_DROP_TTL_EXCEEDED,   /* TTL <= 1 on a forwarded packet (no ICMP sent) */
	PV_DROP_WIRESERVER,     /* from a pod to the WireServer, 168.63.129.16:80/tcp */
	PV_DROP_HOSTGAPLUGIN,   /* from a pod to the HostGAPlugin, 168.63.129.16:32526/tcp */
	PV_DROP_IMDS,           /* from a pod to IMDS, 169.254.169.254:80/tcp (--block-imds) */
	PV_DROP_BLOCKED_ENDPOINT, /* from a pod to another entry of the blocked map */
	/* Appended, not grouped: the pinned counters map is adopted across
	 * upgrades, so an existing reason never changes its index. */
	PV_POD_TO_NIC_NEIGH,    /* from a pod into the VNet, next hop left to the kernel */
	PV_DROP_POLICY_INGRESS, /* no NetworkPolicy allows it into the pod */
	PV_DROP_POLICY_EGRESS,  /* no NetworkPolicy allows it out of the pod */
	PV_DROP_IPBLOCK_EXCEPT_INGRESS, /* into the pod: only an ipBlock would allow it, and its except holds the peer */
	PV_DROP_IPBLOCK_EXCEPT_EGRESS,  /* out of the pod: the same */
	PV_DROP_POLICY_PENDING_INGRESS, /* into a pod whose policy is not in the maps yet */
	PV_DROP_POLICY_PENDING_EGRESS,  /* out of such a pod */
	PV_STACK_TO_POD,        /* to_pod: what the stack delivers to a pod, passed */
	PV_STACK_TO_NIC,        /* to_nic: a pod's packet the stack routes out, judged and passed */
	/* Services (lib/lb.h, lib/sock.h): translations and their failures. */
	PV_SVC_SOCK_XLATE,      /* a socket's connect/sendmsg to a Service, translated to a backend */
	PV_SVC_SOCK_NO_BACKEND, /* a socket's connect/sendmsg to a Service without endpoints: refused */
	PV_SVC_XLATE,           /* a packet to a Service translated to a backend (DNAT, SNAT) */
	PV_SVC_REV_XLATE,       /* a reply of a translated flow translated back */
	PV_SVC_NO_BACKEND,      /* a packet to a Service without endpoints: ICMP port unreachable */
	PV_SVC_DROP,            /* a packet to a Service with a Local policy and no local endpoint */
	PV_SVC_NAT_FULL,        /* no free SNAT port for a new flow: dropped */
	PV_SVC_HOST_NO_SERVICE, /* from the node to the Service CIDR, no such frontend: dropped */
	PV_REASON_MAX,
};

struct pv_counter {
	__u64 packets;
	__u64 bytes;
};

/* Which program saw a packet: each program passes its own to pv_count. */
enum pv_hook {
	PV_HOOK_POD = 1,    /* from_pod: tc ingress of a pod's host veth */
	PV_HOOK_NIC = 2,    /* from_nic: tc ingress of the NIC */
	PV_HOOK_TO_POD = 3, /* to_pod: tc egress of a pod's host veth */
	PV_HOOK_TO_NIC = 4, /* to_nic: tc egress of the NIC */
	PV_HOOK_SOCK = 5,   /* the cgroup socket hooks (connect4, sendmsg4, ...) */
	PV_HOOK_HOST = 6,   /* from_host: the node's packets to the Service CIDR */
};

/* One packet reported to `debug monitor` through the events ring buffer. */
struct pv_event {
	__u64 ts_ns;      /* bpf_ktime_get_ns */
	__u32 reason;     /* enum pv_reason */
	__u32 ifindex;    /* the interface the packet arrived on */
	__u32 len;        /* skb->len */
	__be32 saddr;     /* IPv4 (or ARP sender/target) addresses, 0 if none */
	__be32 daddr;
	__be16 sport;     /* TCP/UDP ports, 0 otherwise */
	__be16 dport;
	__be16 eth_proto;
	__u8 proto;       /* IPv4 protocol */
	__u8 hook;        /* enum pv_hook */
	__u32 pad;
};

/* The monitor's lease, index 0 of the monitor array: events are written
 * only while a `debug monitor` renews it, so nobody listening costs one
 * array lookup per packet. */
struct pv_monitor {
	__u64 deadline_ns; /* bpf_ktime_get_ns() until which events flow; 0 = off */
	__u32 flags;       /* PV_MON_F_* */
	__be32 ip;         /* report only packets from or to this IPv4; 0 = all */
};

#define PV_MON_F_DROPS (1U << 0) /* report drops */
#define PV_MON_F_TRACE (1U << 1) /* report every other verdict too */

/*
 * NetworkPolicy (lib/policy.h). A peer is an identity: a number for each
 * distinct (namespace, labels, named ports) of a pod, allocated by the
 * agent, and a few reserved ones. Rules are kept per (endpoint, direction):
 * a peer's entry names a port set, an LPM trie of (protocol, port prefix)
 * under the set's number, so that an endPort range is a few prefixes.
 */
#define PV_ID_WORLD 1       /* an address the ipcache does not hold */
#define PV_ID_HOST 2        /* this node: always reaches its own pods */
#define PV_ID_REMOTE_NODE 3 /* another node (and its hostNetwork pods) */
#define PV_ID_FIRST_POD 256 /* pod identities are allocated from here */

#define PV_DIR_INGRESS 0
#define PV_DIR_EGRESS 1

/* ipcache: every pod IP of the cluster, and the nodes' IPs. */
struct pv_ipcache_key {
	__be32 ip;
};

struct pv_identity {
	__u32 id; /* PV_ID_* or a pod identity */
};

/* A peer identity's rule for an endpoint and direction. */
struct pv_policy_key {
	__u32 endpoint; /* pv_endpoint.policy_id */
	__u32 peer;     /* identity */
	__u8 dir;       /* PV_DIR_* */
	__u8 pad[3];
};

/* What a peer (policy) or a prefix (policy_cidr) may reach: port sets. */
struct pv_policy {
	__u32 ports;        /* the port set allowed; 0: none */
	__u32 except_ports; /* policy_cidr: ports an ipBlock would allow but for its except; counted as such */
	__u64 flows;        /* new flows this entry allowed (atomic) */
};

/* An ipBlock prefix of an endpoint's rules (LPM trie): the longest match
 * carries the union of the ports of every ipBlock containing it. */
struct pv_cidr_key {
	__u32 prefixlen; /* 64 + the prefix length */
	__u32 endpoint;
	__u8 dir;
	__u8 pad[3];
	__be32 addr;
};

/* One entry of a port set (LPM trie): prefixlen 32 allows every protocol
 * and port, 48 every port of proto, 48 + n a port prefix of n bits. */
struct pv_ports_key {
	__u32 prefixlen;
	__u32 set;
	__u8 proto;
	__u8 pad;
	__be16 port;
};

/* An endpoint's policy, index policy_id of the policy_endpoints array. */
struct pv_policy_endpoint {
	__u32 ingress_ports; /* port set for peers with no entry of their own */
	__u32 egress_ports;
	__u32 flags;         /* PV_POLICY_F_* */
	__u32 pad;
};

#define PV_POLICY_F_INGRESS_CIDR (1U << 0)    /* look ingress peers up in policy_cidr */
#define PV_POLICY_F_EGRESS_CIDR (1U << 1)
#define PV_POLICY_F_INGRESS_PENDING (1U << 2) /* not computed yet: deny, as pending */
#define PV_POLICY_F_EGRESS_PENDING (1U << 3)

/* Per endpoint (policy_id), per CPU: what its policy decided. */
struct pv_policy_stats {
	__u64 flows[2];     /* new flows allowed, by PV_DIR_* */
	__u64 any_flows[2]; /* of those, allowed by the set for every peer */
	__u64 denied[2];    /* packets dropped */
	__u64 denied_bytes[2];
};

/* Node-wide policy settings, index 0 of the policy_config array. */
struct pv_policy_config {
	__u32 gen;          /* bumped when rules change: flows judged under another are judged again */
	__u32 flags;        /* PV_POLICY_CFG_F_* */
	__be32 service_net; /* kube-proxy's Service CIDR: egress to it is judged after DNAT */
	__be32 service_mask;
};

#define PV_POLICY_CFG_F_EGRESS (1U << 0)   /* an endpoint of this node is isolated for egress: to_nic judges */
#define PV_POLICY_CFG_F_ISOLATED (1U << 1) /* an endpoint of this node is isolated either way: to_pod looks at local sources */

/* A flow judged by policy, in canonical order: (addr[0], port[0]) is the
 * lower (address, port) pair, so both directions find one entry. */
struct pv_flow_key {
	__be32 addr[2];
	__be16 port[2];
	__u8 proto;
	__u8 pad[3];
};

struct pv_flow {
	__u64 expires_ns; /* bpf_ktime_get_coarse_ns deadline */
	__u32 gen;        /* pv_policy_config.gen when last judged */
	__u8 flags;       /* PV_FLOW_F_* */
	__u8 pad[3];
};

#define PV_FLOW_F_INIT_1 (1U << 0)  /* side 1 opened the flow, else side 0 */
#define PV_FLOW_F_REPLIED (1U << 1) /* the other side answered */
#define PV_FLOW_F_FIN_0 (1U << 2)   /* TCP FIN seen from side 0 */
#define PV_FLOW_F_FIN_1 (1U << 3)
#define PV_FLOW_F_RST (1U << 4)     /* TCP RST seen */

/* The ports of a fragmented datagram, for its later fragments. */
struct pv_frag_key {
	__be32 saddr;
	__be32 daddr;
	__be16 id;
	__u8 proto;
	__u8 pad;
};

struct pv_frag {
	__be16 sport;
	__be16 dport;
};

/* Put the types only Go reads (the reason and hook enums, the event a ring
 * buffer carries) into the object's BTF, where the layout test reads them.
 * The section is never loaded. */
const enum pv_reason pv_reason_btf_anchor SEC(".podvnet.btf_only") __attribute__((unused));
const enum pv_hook pv_hook_btf_anchor SEC(".podvnet.btf_only") __attribute__((unused));
const struct pv_event pv_event_btf_anchor SEC(".podvnet.btf_only") __attribute__((unused));

#endif /* PODVNET_H */
