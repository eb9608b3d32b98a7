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
};

/* PV_EP_F_*: endpoint flags. */
#define PV_EP_F_NONE 0
/* tc shapes the pod's traffic on its host veth (the bandwidth plugin): it
 * stays on the kernel path, through those qdiscs. */
#define PV_EP_F_SHAPED (1U << 0)

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
	PV_REASON_MAX,
};

struct pv_counter {
	__u64 packets;
	__u64 bytes;
};

/* Which program saw a packet: each program passes its own to pv_count. */
enum pv_hook {
	PV_HOOK_POD = 1, /* from_pod */
	PV_HOOK_NIC = 2, /* from_nic */
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

/* Put the types only Go reads (the reason and hook enums, the event a ring
 * buffer carries) into the object's BTF, where the layout test reads them.
 * The section is never loaded. */
const enum pv_reason pv_reason_btf_anchor SEC(".podvnet.btf_only") __attribute__((unused));
const enum pv_hook pv_hook_btf_anchor SEC(".podvnet.btf_only") __attribute__((unused));
const struct pv_event pv_event_btf_anchor SEC(".podvnet.btf_only") __attribute__((unused));

#endif /* PODVNET_H */
