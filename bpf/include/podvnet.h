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
	__u8 nic_mac[6];
	__u16 pad;
	__u32 flags;        /* PV_CFG_F_* */
};

struct pv_nosnat_key {
	__u32 prefixlen;
	__be32 addr;
};

/* Every verdict and drop reason. Names are printed by `debug counters`. */
enum pv_reason {
	PV_POD_TO_STACK = 0,    /* from a pod, handed to the kernel stack */
	PV_POD_TO_LOCAL,        /* from a pod to a pod on this node */
	PV_POD_TO_NIC,          /* from a pod into the VNet */
	PV_POD_ARP,             /* ARP from a pod, passed to the stack */
	PV_POD_ARP_REPLY,       /* ARP request for the gateway, answered */
	PV_NIC_TO_STACK,        /* from the NIC, not for a pod */
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

/* Puts enum pv_reason into the object's BTF, where bpf2go and the layout
 * test read it. The section is never loaded. */
const enum pv_reason pv_reason_btf_anchor SEC(".podvnet.btf_only") __attribute__((unused));

/* PV_EP_F_*: endpoint flags. */
#define PV_EP_F_NONE 0

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

static __always_inline int pv_count(struct __sk_buff *skb, enum pv_reason reason, int verdict)
{
	struct pv_counter *c = bpf_map_lookup_elem(&counters, &reason);

	if (c) {
		c->packets++;
		c->bytes += skb->len;
	}
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
static __always_inline int pv_to_local(struct __sk_buff *skb, struct ethhdr *eth, struct iphdr *ip,
				       const struct pv_endpoint *dst, enum pv_reason reason)
{
	if (!pv_decrease_ttl(ip))
		return pv_count(skb, PV_DROP_TTL_EXCEEDED, TC_ACT_SHOT);
	__builtin_memcpy(eth->h_source, dst->host_mac, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, dst->pod_mac, ETH_ALEN);
	pv_count(skb, reason, TC_ACT_OK);
	return bpf_redirect_peer(dst->ifindex, 0);
}

#endif /* PODVNET_H */
