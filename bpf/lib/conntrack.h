/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Which packets the kernel's conntrack must see: NAT'd flows, fragments, ICMP errors. */
#ifndef PV_CONNTRACK_H
#define PV_CONNTRACK_H

#include <linux/bpf.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/netfilter/nf_conntrack_common.h>
#include <linux/netfilter/nf_conntrack_tcp.h>
#include <linux/netfilter/nf_conntrack_tuple_common.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "podvnet.h"
#include "parse.h"
#include "svc_maps.h"

/*
 * Replies of connections the kernel NAT'd (kube-proxy's DNAT of a Service,
 * masquerading) must meet conntrack to be translated back, so they leave
 * the fast path. The kfuncs are weak: a kernel without them (before 5.18)
 * loads the programs all the same and skips the lookup.
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

/* Only the fields we read; CO-RE finds them in the running kernel. */
struct ip_ct_tcp {
	__u8 state;
	__u8 last_dir;
	__u8 last_index;
} __attribute__((preserve_access_index));

/* enum tcp_bit_set (nf_conntrack_proto_tcp.c): the kind of the last packet. */
#define PV_CT_TCP_SYN_SET 0

union nf_conntrack_proto {
	struct ip_ct_tcp tcp;
} __attribute__((preserve_access_index));

struct nf_conn {
	unsigned long status;
	union nf_conntrack_proto proto;
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

	if (ip->frag_off & bpf_htons(PV_IP_MF_OFFSET))
		return 1;
	if (ip->protocol != IPPROTO_ICMP)
		return 0;
	icmp_type = (void *)ip + ip->ihl * 4;
	if ((void *)(icmp_type + 1) > data_end)
		return 1;
	return *icmp_type == 3 || *icmp_type == 11 || *icmp_type == 12; /* unreach, time exceeded, param */
}

/* pv_ct_status is the status of conntrack's entry for the TCP or UDP tuple
 * (saddr, sport) -> (daddr, dport), found from either direction, or 0 when
 * conntrack holds none or the kernel has no lookup kfunc. With live_only, a
 * TCP connection that has ended (TIME_WAIT, CLOSE) holds none: see
 * pv_nat_flow. */
static __always_inline unsigned long pv_ct_status(struct __sk_buff *skb, __be32 saddr, __be32 daddr, __be16 sport,
						  __be16 dport, __u8 proto, int live_only)
{
	struct bpf_ct_opts___pv opts = { .netns_id = BPF_F_CURRENT_NETNS, .l4proto = proto };
	struct bpf_sock_tuple tuple = {};
	struct nf_conn *ct;
	unsigned long status;

	if (pv_ct_opts_size == 0 || !bpf_skb_ct_lookup)
		return 0;
	tuple.ipv4.saddr = saddr;
	tuple.ipv4.daddr = daddr;
	tuple.ipv4.sport = sport;
	tuple.ipv4.dport = dport;
	ct = bpf_skb_ct_lookup(skb, &tuple, sizeof(tuple.ipv4), &opts, pv_ct_opts_size == 12 ? 12 : 16);
	if (!ct)
		return 0;
	status = ct->status;
	if (live_only && proto == IPPROTO_TCP) {
		__u8 state = ct->proto.tcp.state;

		/* Unless the client reopens it through the NAT: a SYN conntrack
		 * could not tell from the old connection's is let through with
		 * the entry left as it was, and the answer resyncs it. */
		if ((state == TCP_CONNTRACK_TIME_WAIT || state == TCP_CONNTRACK_CLOSE) &&
		    !(ct->proto.tcp.last_index == PV_CT_TCP_SYN_SET && ct->proto.tcp.last_dir == IP_CT_DIR_ORIGINAL))
			status = 0;
	}
	bpf_ct_release(ct);
	return status;
}

/* pv_nat_flow reports whether conntrack holds a NAT'd connection for this
 * TCP or UDP packet (in either direction). With PV_CFG_F_CT_BY_PORT only a
 * packet from a port kernel NAT can answer from is looked up: on the fast
 * path a NAT'd flow shows only as its reply, which comes from the port
 * kube-proxy DNAT'd to or portmap's container port (svc_ports).
 * An ended TCP connection claims no packet: a client that reached a backend
 * through its Service and then reaches it directly from the same port (the
 * kernel lets it: the peer differs) opens a connection whose replies carry
 * the old one's reply tuple, and conntrack would translate them back as the
 * old one's, or drop them as invalid, until the old entry expires. A
 * connection reopened through the Service is conntrack's new entry, or the
 * ended one awaiting the answer to a SYN it let through (pv_ct_status). */
static __always_inline int pv_nat_flow(struct __sk_buff *skb, struct iphdr *ip, const struct pv_config *cfg)
{
	struct pv_ports *ports;

	if (!(cfg->flags & PV_CFG_F_CT_LOOKUP))
		return 0;
	ports = pv_l4_ports(skb, ip);
	if (!ports)
		return 0;
	if (cfg->flags & PV_CFG_F_CT_BY_PORT) {
		__u64 bit = 0;
		struct pv_port_bits *bits = pv_port_bits(ip->protocol, ports->sport, &bit);

		if (!bits || !(bits->ct & bit))
			return 0;
	}
	return (pv_ct_status(skb, ip->saddr, ip->daddr, ports->sport, ports->dport, ip->protocol, 1) & IPS_NAT_MASK) != 0;
}

#endif /* PV_CONNTRACK_H */
