/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Packet parsing: the Ethernet, IPv4, ARP and port headers, bounds-checked. */
#ifndef PV_PARSE_H
#define PV_PARSE_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <bpf/bpf_endian.h>

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

/* IPv4 frag_off bits: MF and the fragment offset (IP_MF | IP_OFFSET). */
#define PV_IP_MF_OFFSET 0x3fff
#define PV_IP_OFFSET 0x1fff

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

/* pv_l4_ports returns the ports of a TCP or UDP packet, or NULL for another
 * protocol, a fragment after the first (no ports) or a truncated frame. */
static __always_inline struct pv_ports *pv_l4_ports(struct __sk_buff *skb, struct iphdr *ip)
{
	void *data_end = (void *)(long)skb->data_end;
	struct pv_ports *ports;

	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
		return NULL;
	if ((ip->frag_off & bpf_htons(PV_IP_OFFSET)) || ip->ihl < 5)
		return NULL;
	ports = (void *)ip + ip->ihl * 4;
	if ((void *)(ports + 1) > data_end)
		return NULL;
	return ports;
}

#endif /* PV_PARSE_H */
