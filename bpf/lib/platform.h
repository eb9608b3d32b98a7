/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Destinations no pod may reach, checked in from_pod before any forwarding
 * decision: Azure's WireServer (168.63.129.16:80, which serves the VM's
 * protected settings) and HostGAPlugin (:32526), IMDS when the operator
 * denies it, and whatever else the operator lists. The agent fills the
 * blocked map from the same list as its nftables rule for the kernel path.
 */
#ifndef PV_PLATFORM_H
#define PV_PLATFORM_H

#include <linux/bpf.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "podvnet.h"
#include "maps.h"
#include "parse.h"

/*
 * pv_blocked_reason returns the drop reason when the packet's destination
 * (address, port, protocol) is in the blocked map, else 0 (no drop reason
 * is 0). It runs on every packet of every pod, so it is built to be cheap:
 * nothing for protocols without ports (ICMP), and for the rest an array
 * lookup in the filter, which clears nearly every packet; only a packet to
 * an address and port the filter cannot rule out pays the hash lookup.
 *
 * A packet whose ports cannot be read, a fragment after the first above all,
 * is looked up with port 0: the agent's guard entry for each blocked
 * (address, protocol) drops it, so fragmenting cannot smuggle a request past
 * the check.
 */
static __always_inline __u32 pv_blocked_reason(struct __sk_buff *skb, const struct iphdr *ip)
{
	void *data_end = (void *)(long)skb->data_end;
	struct pv_blocked_key key = {};
	struct pv_blocked *b;
	struct pv_ports *ports;
	__u32 slot = ip->daddr;
	__u64 *filter;

	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP && ip->protocol != IPPROTO_SCTP)
		return 0;
	/* The XOR of the address's four octets, whatever the byte order. */
	slot ^= slot >> 16;
	slot = (slot ^ (slot >> 8)) & (PV_BLOCKED_FILTER_SLOTS - 1);
	filter = bpf_map_lookup_elem(&blocked_filter, &slot);
	if (!filter || !*filter)
		return 0;
	if (!(ip->frag_off & bpf_htons(PV_IP_OFFSET))) {
		/* SCTP's ports sit where TCP's and UDP's do. */
		ports = (void *)ip + ip->ihl * 4;
		if ((void *)(ports + 1) <= data_end)
			key.port = ports->dport;
	}
	if (!(*filter & (1ULL << (bpf_ntohs(key.port) & 63))))
		return 0;
	key.addr = ip->daddr;
	key.proto = ip->protocol;
	b = bpf_map_lookup_elem(&blocked, &key);
	if (!b)
		return 0;
	/* The agent writes only drop reasons; anything else still drops, and
	 * is counted as an operator's entry. */
	if (b->reason < PV_DROP_WIRESERVER || b->reason >= PV_REASON_MAX)
		return PV_DROP_BLOCKED_ENDPOINT;
	return b->reason;
}

#endif /* PV_PLATFORM_H */
