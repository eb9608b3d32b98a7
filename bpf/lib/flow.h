/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The flows NetworkPolicy judged (lib/policy.h): an LRU table of its own,
 * because kernel conntrack never sees fast-path packets. A flow is entered
 * once its first packet is allowed; every later packet of it, and every
 * reply, costs one lookup. Entries expire by their own timers (never by
 * conntrack's: AWS's policy agent dropped replies of long flows that way)
 * and are judged again when the rules change (pv_policy_config.gen).
 */
#ifndef PV_FLOW_H
#define PV_FLOW_H

#include <linux/bpf.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "podvnet.h"
#include "maps.h"
#include "parse.h"

#define PV_NSEC 1000000000ULL
/* As Cilium's defaults: an unanswered SYN, an established connection, a
 * closing one; everything else, refreshed by each packet. */
#define PV_FLOW_SYN_TIMEOUT (60 * PV_NSEC)
#define PV_FLOW_TCP_TIMEOUT (8000 * PV_NSEC)
#define PV_FLOW_CLOSE_TIMEOUT (10 * PV_NSEC)
#define PV_FLOW_OTHER_TIMEOUT (60 * PV_NSEC)
/* A deadline moves at most this often: fewer writes to a shared line. */
#define PV_FLOW_REFRESH (1 * PV_NSEC)

#define PV_TCP_FIN 0x01
#define PV_TCP_SYN 0x02
#define PV_TCP_RST 0x04
#define PV_TCP_ACK 0x10

#define PV_IP_MF 0x2000

/* What a packet is to the flow table and the rules. */
struct pv_tuple {
	__be32 saddr;
	__be32 daddr;
	__be16 sport; /* TCP, UDP, SCTP ports; the ICMP echo id (both) */
	__be16 dport;
	__u8 proto;
	__u8 tcp_flags;
	__u8 kind; /* PV_TUPLE_* */
	__u8 frag; /* PV_FRAG_* */
};

#define PV_TUPLE_PLAIN 0      /* the packet's own addresses and ports */
#define PV_TUPLE_ICMP_ERROR 1 /* an ICMP error: the tuple is the packet it quotes */
#define PV_TUPLE_NO_PORTS 2   /* ports unknown: a truncated header, a later fragment of an unseen first */

#define PV_FRAG_NONE 0
#define PV_FRAG_FIRST 1 /* ports recorded for the later fragments */
#define PV_FRAG_LATER 2 /* ports from the first fragment */

/* pv_is_port_proto: protocols whose rules name ports. */
static __always_inline int pv_is_port_proto(__u8 proto)
{
	return proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_SCTP;
}

/* pv_l4_tuple reads the ports (and TCP flags, the ICMP echo id) at l4. */
static __always_inline void pv_l4_tuple(void *l4, void *data_end, struct pv_tuple *t)
{
	__u8 *b = l4;

	if (pv_is_port_proto(t->proto)) {
		struct pv_ports *p = l4;

		if ((void *)(p + 1) > data_end) {
			t->kind = PV_TUPLE_NO_PORTS;
			return;
		}
		t->sport = p->sport;
		t->dport = p->dport;
		if (t->proto == IPPROTO_TCP) {
			if ((void *)(b + 14) > data_end) {
				t->kind = PV_TUPLE_NO_PORTS;
				return;
			}
			t->tcp_flags = b[13];
		}
		return;
	}
	if (t->proto == IPPROTO_ICMP && (void *)(b + 8) <= data_end && (b[0] == 0 || b[0] == 8)) {
		/* Echo request and reply share the id: one flow. */
		__builtin_memcpy(&t->sport, b + 4, 2);
		t->dport = t->sport;
	}
}

/* pv_parse_tuple fills t from the packet at ip. */
static __always_inline void pv_parse_tuple(struct __sk_buff *skb, struct iphdr *ip, struct pv_tuple *t)
{
	void *data_end = (void *)(long)skb->data_end;
	__u8 *l4 = (void *)ip + ip->ihl * 4;

	t->saddr = ip->saddr;
	t->daddr = ip->daddr;
	t->proto = ip->protocol;
	if (ip->frag_off & bpf_htons(PV_IP_OFFSET)) {
		struct pv_frag_key fk = { .saddr = ip->saddr, .daddr = ip->daddr, .id = ip->id, .proto = ip->protocol };
		struct pv_frag *f = bpf_map_lookup_elem(&frags, &fk);

		if (!f) {
			t->kind = PV_TUPLE_NO_PORTS;
			return;
		}
		t->sport = f->sport;
		t->dport = f->dport;
		t->frag = PV_FRAG_LATER;
		return;
	}
	if (ip->frag_off & bpf_htons(PV_IP_MF))
		t->frag = PV_FRAG_FIRST;
	if (t->proto == IPPROTO_ICMP && (void *)(l4 + 8) <= data_end &&
	    (l4[0] == 3 || l4[0] == 11 || l4[0] == 12)) {
		/* Unreachable, time exceeded, parameter problem: about the
		 * packet quoted after the 8-byte ICMP header. */
		struct iphdr *in = (void *)(l4 + 8);

		if ((void *)(in + 1) > data_end || in->ihl < 5) {
			t->kind = PV_TUPLE_NO_PORTS;
			return;
		}
		t->kind = PV_TUPLE_ICMP_ERROR;
		t->saddr = in->saddr;
		t->daddr = in->daddr;
		t->proto = in->protocol;
		t->frag = PV_FRAG_NONE;
		pv_l4_tuple((void *)in + in->ihl * 4, data_end, t);
		/* A truncated quote still names its flow by addresses; the
		 * lookup just misses. */
		if (t->kind == PV_TUPLE_NO_PORTS)
			t->kind = PV_TUPLE_ICMP_ERROR;
		t->tcp_flags = 0;
		return;
	}
	pv_l4_tuple(l4, data_end, t);
}

/* pv_flow_key writes t's flow in canonical order and returns the side (0
 * or 1) of t's source in it. */
static __always_inline __u8 pv_flow_key(const struct pv_tuple *t, struct pv_flow_key *k)
{
	__u8 src_side = t->saddr > t->daddr || (t->saddr == t->daddr && t->sport > t->dport);

	k->proto = t->proto;
	if (src_side == 0) {
		k->addr[0] = t->saddr;
		k->addr[1] = t->daddr;
		k->port[0] = t->sport;
		k->port[1] = t->dport;
	} else {
		k->addr[0] = t->daddr;
		k->addr[1] = t->saddr;
		k->port[0] = t->dport;
		k->port[1] = t->sport;
	}
	return src_side;
}

/* pv_flow_timeout: how long a flow lives after its last packet. */
static __always_inline __u64 pv_flow_timeout(__u8 proto, __u8 flags)
{
	if (proto != IPPROTO_TCP)
		return PV_FLOW_OTHER_TIMEOUT;
	if ((flags & PV_FLOW_F_RST) || (flags & (PV_FLOW_F_FIN_0 | PV_FLOW_F_FIN_1)) == (PV_FLOW_F_FIN_0 | PV_FLOW_F_FIN_1))
		return PV_FLOW_CLOSE_TIMEOUT;
	if (!(flags & PV_FLOW_F_REPLIED))
		return PV_FLOW_SYN_TIMEOUT;
	return PV_FLOW_TCP_TIMEOUT;
}

/* pv_flow_seen updates a live flow with a packet from side, in place. */
static __always_inline void pv_flow_seen(struct pv_flow *f, const struct pv_tuple *t, __u8 side, __u8 orig, __u64 now)
{
	__u8 flags = f->flags;
	__u64 deadline;

	if (!orig)
		flags |= PV_FLOW_F_REPLIED;
	if (t->proto == IPPROTO_TCP) {
		if (t->tcp_flags & PV_TCP_RST)
			flags |= PV_FLOW_F_RST;
		if (t->tcp_flags & PV_TCP_FIN)
			flags |= side ? PV_FLOW_F_FIN_1 : PV_FLOW_F_FIN_0;
	}
	if (flags != f->flags)
		f->flags = flags;
	deadline = now + pv_flow_timeout(t->proto, flags);
	/* A shorter timeout (closing) takes effect at once. */
	if (deadline > f->expires_ns + PV_FLOW_REFRESH || deadline < f->expires_ns)
		f->expires_ns = deadline;
}

/* pv_flow_open enters an allowed flow; init is the side that opened it. */
static __always_inline void pv_flow_open(const struct pv_flow_key *k, const struct pv_tuple *t, __u8 init, __u8 flags,
					 __u32 gen, __u64 now)
{
	struct pv_flow f = { .gen = gen, .flags = flags | (init ? PV_FLOW_F_INIT_1 : 0) };

	if (t->proto == IPPROTO_TCP && (t->tcp_flags & PV_TCP_RST))
		f.flags |= PV_FLOW_F_RST;
	f.expires_ns = now + pv_flow_timeout(t->proto, f.flags);
	bpf_map_update_elem(&flows, k, &f, BPF_ANY);
}

/* pv_frag_note keeps a first fragment's ports for the fragments after it. */
static __always_inline void pv_frag_note(const struct iphdr *ip, const struct pv_tuple *t)
{
	struct pv_frag_key fk = { .saddr = ip->saddr, .daddr = ip->daddr, .id = ip->id, .proto = ip->protocol };
	struct pv_frag f = { .sport = t->sport, .dport = t->dport };

	if (t->frag == PV_FRAG_FIRST)
		bpf_map_update_elem(&frags, &fk, &f, BPF_ANY);
}

#endif /* PV_FLOW_H */
