/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Everything the podvnet tc programs share with Go.
 *
 * Keep in sync with pkg/maps/types.go: TestLayoutMatchesBTF in pkg/loader
 * compares every struct below (sizes, member names, offsets) and the
 * pv_reason enum (names, values) with their Go mirrors.
 *
 * Addresses are stored in network byte order. No struct has an implicit hole:
 * padding is spelled out so Go and C agree byte for byte.
 */
#ifndef PODVNET_H
#define PODVNET_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/netfilter/nf_conntrack_common.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define PV_MAX_ENDPOINTS 1024
#define PV_MAX_NOSNAT 256

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

/* Node-wide settings, index 0 of the config array. Updated in place by the
 * agent, so a settings change never needs a detach. */
struct pv_config {
	__u32 nic_ifindex;  /* the VNet NIC; 0 = not configured, pass to stack */
	__be32 node_ip;     /* primary IP of the NIC, always handled by the stack */
	__be32 gateway_ip;  /* the pods' default gateway (169.254.1.1) */
	__be32 subnet;      /* the VNet subnet, checked before the nosnat LPM */
	__be32 subnet_mask; /* 0: no subnet shortcut, the LPM decides */
	__u8 nic_mac[6];
	__u16 pad;
	__u32 flags;        /* PV_CFG_F_* */
};

struct pv_nosnat_key {
	__u32 prefixlen;
	__be32 addr;
};

/* An ARP packet for IPv4 over Ethernet (linux/if_arp.h drags in libc). */
#define PV_ARPHRD_ETHER 1
#define PV_ARPOP_REQUEST 1
#define PV_ARPOP_REPLY 2

struct pv_arp {
	__be16 ar_hrd;
	__be16 ar_pro;
	__u8 ar_hln;
	__u8 ar_pln;
	__be16 ar_op;
	__u8 sha[ETH_ALEN];
	__u8 spa[4];
	__u8 tha[ETH_ALEN];
	__u8 tpa[4];
};

/* The first four bytes of TCP and UDP. */
struct pv_ports {
	__be16 sport;
	__be16 dport;
};

/* Every verdict and drop reason. Names are printed by `debug counters`. */
enum pv_reason {
	PV_POD_TO_STACK = 0,    /* from a pod, handed to the kernel stack */
	PV_POD_TO_STACK_NAT,    /* from a pod, a flow the kernel NAT'd: stack */
	PV_POD_TO_STACK_FRAG,   /* from a pod, an IPv4 fragment or ICMP error: stack */
	PV_POD_TO_LOCAL,        /* from a pod to a pod on this node */
	PV_POD_TO_NIC,          /* from a pod into the VNet */
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
 * buffer carries) into the object's BTF, where the layout test reads them. The section is never loaded. */
const enum pv_reason pv_reason_btf_anchor SEC(".podvnet.btf_only") __attribute__((unused));
const enum pv_hook pv_hook_btf_anchor SEC(".podvnet.btf_only") __attribute__((unused));
const struct pv_event pv_event_btf_anchor SEC(".podvnet.btf_only") __attribute__((unused));

/* PV_EP_F_*: endpoint flags. */
#define PV_EP_F_NONE 0
/* tc shapes the pod's traffic on its host veth (the bandwidth plugin): it
 * stays on the kernel path, through those qdiscs. */
#define PV_EP_F_SHAPED (1U << 0)

/* PV_CFG_F_*: node config flags. */
#define PV_CFG_F_CT_LOOKUP (1U << 0) /* ask conntrack before a fast-path redirect */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PV_MAX_ENDPOINTS);
	__type(key, struct pv_endpoint_key);
	__type(value, struct pv_endpoint);
} endpoints SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pv_config);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PV_REASON_MAX);
	__type(key, __u32); /* enum pv_reason: array keys must be plain ints */
	__type(value, struct pv_counter);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, PV_MAX_NOSNAT);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct pv_nosnat_key);
	__type(value, __u8);
} nosnat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pv_monitor);
} monitor SEC(".maps");

/* pv_report writes an event for the monitor, if one listens and the packet
 * passes its filter. Only reached while a lease is held. */
static __noinline void pv_report(struct __sk_buff *skb, const struct pv_monitor *mon, enum pv_hook hook,
				 __u32 reason)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct pv_event ev = {};
	__u64 now = bpf_ktime_get_ns();

	if (mon->deadline_ns < now)
		return;
	ev.reason = reason;
	ev.ifindex = skb->ifindex;
	ev.len = skb->len;
	ev.hook = hook;
	if ((void *)(eth + 1) <= data_end) {
		ev.eth_proto = eth->h_proto;
		if (eth->h_proto == bpf_htons(ETH_P_IP)) {
			struct iphdr *ip = (void *)(eth + 1);

			if ((void *)(ip + 1) <= data_end) {
				ev.saddr = ip->saddr;
				ev.daddr = ip->daddr;
				ev.proto = ip->protocol;
				if ((ip->protocol == IPPROTO_TCP || ip->protocol == IPPROTO_UDP) &&
				    !(ip->frag_off & bpf_htons(0x1fff)) && ip->ihl >= 5) {
					struct pv_ports *ports = (void *)ip + ip->ihl * 4;

					if ((void *)(ports + 1) <= data_end) {
						ev.sport = ports->sport;
						ev.dport = ports->dport;
					}
				}
			}
		} else if (eth->h_proto == bpf_htons(ETH_P_ARP)) {
			struct pv_arp *arp = (void *)(eth + 1);

			if ((void *)(arp + 1) <= data_end) {
				__builtin_memcpy(&ev.saddr, arp->spa, 4);
				__builtin_memcpy(&ev.daddr, arp->tpa, 4);
			}
		}
	}
	if (mon->ip && ev.saddr != mon->ip && ev.daddr != mon->ip)
		return;
	ev.ts_ns = now;
	bpf_ringbuf_output(&events, &ev, sizeof(ev), 0);
}

/* pv_count counts a packet under reason and returns verdict, the program's
 * answer to tc. hook names the program for the monitor. */
static __always_inline int pv_count(struct __sk_buff *skb, enum pv_hook hook, enum pv_reason reason, int verdict)
{
	__u32 zero = 0;
	struct pv_counter *c = bpf_map_lookup_elem(&counters, &reason);
	struct pv_monitor *mon;

	if (c) {
		c->packets++;
		c->bytes += skb->len;
	}
	mon = bpf_map_lookup_elem(&monitor, &zero);
	if (mon && mon->deadline_ns &&
	    (mon->flags & (verdict == TC_ACT_SHOT ? PV_MON_F_DROPS : PV_MON_F_TRACE)))
		pv_report(skb, mon, hook, reason);
	return verdict;
}

static __always_inline struct pv_config *pv_config(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&config, &zero);
}

static __always_inline struct pv_endpoint *pv_endpoint(__be32 ip)
{
	struct pv_endpoint_key key = { .ip = ip };

	return bpf_map_lookup_elem(&endpoints, &key);
}

/*
 * Parses Ethernet + IPv4. Returns 1 for IPv4 with a sane header, 0 for
 * another EtherType (*eth is set), -1 for a truncated or malformed frame.
 */
static __always_inline int pv_parse_ipv4(struct __sk_buff *skb, struct ethhdr **eth, struct iphdr **ip)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *e = data;
	struct iphdr *h;

	if ((void *)(e + 1) > data_end)
		return -1;
	*eth = e;
	if (e->h_proto != bpf_htons(ETH_P_IP))
		return 0;
	h = (void *)(e + 1);
	if ((void *)(h + 1) > data_end)
		return -1;
	if (h->ihl < 5 || h->version != 4)
		return -1;
	*ip = h;
	return 1;
}

/*
 * Conntrack. Replies of connections the kernel NAT'd (kube-proxy's DNAT of a
 * Service, masquerading) must meet conntrack to be translated back, so they
 * leave the fast path. The kfuncs are weak: a kernel without them (before
 * 5.18) loads the programs all the same and skips the lookup.
 */
struct bpf_ct_opts___pv {
	__s32 netns_id;
	__s32 error;
	__u8 l4proto;
	__u8 dir;
	__u16 ct_zone_id; /* 6.9+; older kernels take the first 12 bytes */
	__u8 ct_zone_dir;
	__u8 reserved[3];
};

/* Only the field we read; CO-RE finds it in the running kernel. */
struct nf_conn {
	unsigned long status;
} __attribute__((preserve_access_index));

extern struct nf_conn *bpf_skb_ct_lookup(struct __sk_buff *skb, struct bpf_sock_tuple *tuple, __u32 tuple__sz,
					 struct bpf_ct_opts___pv *opts, __u32 opts__sz) __ksym __weak;
extern void bpf_ct_release(struct nf_conn *ct) __ksym __weak;

/* Size of struct bpf_ct_opts in the running kernel (12 or 16), set by the
 * loader from the kernel's BTF; 0 when the kernel has no conntrack kfuncs. */
volatile const __u32 pv_ct_opts_size = 0;

/* pv_is_frag_or_icmp_error: IPv4 fragments carry no ports to look up, and
 * ICMP errors refer to a flow that may be NAT'd; the kernel handles both. */
static __always_inline int pv_is_frag_or_icmp_error(struct __sk_buff *skb, struct iphdr *ip)
{
	void *data_end = (void *)(long)skb->data_end;
	__u8 *icmp_type;

	if (ip->frag_off & bpf_htons(0x3fff)) /* MF or an offset */
		return 1;
	if (ip->protocol != IPPROTO_ICMP)
		return 0;
	icmp_type = (void *)ip + ip->ihl * 4;
	if ((void *)(icmp_type + 1) > data_end)
		return 1;
	return *icmp_type == 3 || *icmp_type == 11 || *icmp_type == 12; /* unreach, time exceeded, param */
}

/* pv_nat_flow reports whether conntrack holds a NAT'd connection for this
 * TCP or UDP packet (in either direction). */
static __always_inline int pv_nat_flow(struct __sk_buff *skb, struct iphdr *ip, const struct pv_config *cfg)
{
	void *data_end = (void *)(long)skb->data_end;
	struct bpf_ct_opts___pv opts = { .netns_id = BPF_F_CURRENT_NETNS };
	struct bpf_sock_tuple tuple = {};
	struct pv_ports *ports;
	struct nf_conn *ct;
	unsigned long status;

	if (!(cfg->flags & PV_CFG_F_CT_LOOKUP) || pv_ct_opts_size == 0 || !bpf_skb_ct_lookup)
		return 0;
	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
		return 0;
	ports = (void *)ip + ip->ihl * 4;
	if ((void *)(ports + 1) > data_end)
		return 0;
	tuple.ipv4.saddr = ip->saddr;
	tuple.ipv4.daddr = ip->daddr;
	tuple.ipv4.sport = ports->sport;
	tuple.ipv4.dport = ports->dport;
	opts.l4proto = ip->protocol;
	ct = bpf_skb_ct_lookup(skb, &tuple, sizeof(tuple.ipv4), &opts, pv_ct_opts_size == 12 ? 12 : 16);
	if (!ct)
		return 0;
	status = ct->status;
	bpf_ct_release(ct);
	return (status & IPS_NAT_MASK) != 0;
}

/* A routed hop: decrement TTL with an incremental checksum update (RFC 1624),
 * as ip_decrease_ttl() does. Returns 0 when the packet must be dropped. */
static __always_inline int pv_decrease_ttl(struct iphdr *ip)
{
	__u32 check;

	if (ip->ttl <= 1)
		return 0;
	check = (__u32)ip->check;
	check += (__u32)bpf_htons(0x0100);
	ip->check = (__sum16)(check + (check >= 0xFFFF));
	ip->ttl--;
	return 1;
}

/* Deliver to a local pod: the frame looks as if the node routed it out of
 * the pod's host veth, then it moves straight into the pod's netns. */
static __always_inline int pv_to_local(struct __sk_buff *skb, enum pv_hook hook, struct ethhdr *eth, struct iphdr *ip,
				       const struct pv_endpoint *dst, enum pv_reason reason)
{
	if (!pv_decrease_ttl(ip))
		return pv_count(skb, hook, PV_DROP_TTL_EXCEEDED, TC_ACT_SHOT);
	__builtin_memcpy(eth->h_source, dst->host_mac, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, dst->pod_mac, ETH_ALEN);
	pv_count(skb, hook, reason, TC_ACT_OK);
	return bpf_redirect_peer(dst->ifindex, 0);
}

#endif /* PODVNET_H */
