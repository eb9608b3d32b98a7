/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Forwarding on the fast path: where a destination is reached, TTL, the redirects. */
#ifndef PV_FORWARD_H
#define PV_FORWARD_H

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "podvnet.h"
#include "maps.h"
#include "verdict.h"

/* pv_nosnat_dest reports whether pods reach daddr directly, with their own
 * source IP: the VNet subnet or another no-SNAT range. */
static __always_inline int pv_nosnat_dest(const struct pv_config *cfg, __be32 daddr)
{
	struct pv_nosnat_key nk = {};

	/* The subnet is the common case and a mask is cheaper than the trie. */
	if (cfg->subnet_mask && (daddr & cfg->subnet_mask) == cfg->subnet)
		return 1;
	nk.prefixlen = 32;
	nk.addr = daddr;
	return bpf_map_lookup_elem(&nosnat, &nk) != NULL;
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
 * the pod's host veth, then it moves straight into the pod's netns (from a
 * tc ingress, peer set) or out of the host veth (from an egress, where no
 * peer redirect exists). */
static __always_inline int pv_deliver_local(struct __sk_buff *skb, enum pv_hook hook, struct ethhdr *eth, struct iphdr *ip,
					    const struct pv_endpoint *dst, enum pv_reason reason, int peer)
{
	if (!pv_decrease_ttl(ip))
		return pv_count(skb, hook, PV_DROP_TTL_EXCEEDED, TC_ACT_SHOT);
	__builtin_memcpy(eth->h_source, dst->host_mac, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, dst->pod_mac, ETH_ALEN);
	pv_count(skb, hook, reason, TC_ACT_OK);
	if (peer)
		return bpf_redirect_peer(dst->ifindex, 0);
	return bpf_redirect(dst->ifindex, 0);
}

/* pv_to_local delivers to a local pod from a tc ingress. */
static __always_inline int pv_to_local(struct __sk_buff *skb, enum pv_hook hook, struct ethhdr *eth, struct iphdr *ip,
				       const struct pv_endpoint *dst, enum pv_reason reason)
{
	return pv_deliver_local(skb, hook, eth, ip, dst, reason, 1);
}

/* pv_unicast_mac: neither all zero (not known) nor multicast/broadcast. */
static __always_inline int pv_unicast_mac(const __u8 *m)
{
	return !(m[0] & 1) && (m[0] | m[1] | m[2] | m[3] | m[4] | m[5]);
}

/* Send into the VNet: out of the NIC, without the host's routing and
 * netfilter, and without a forwarding sysctl either way.
 * With the next hop cached (the agent keeps the VNet gateway's MAC in the
 * config, where the fabric answers every address with it), the frame leaves
 * as written here: bpf_redirect, no route or neighbour lookup per packet.
 * Without it (another kind of network, the gateway not resolved yet, or
 * --nexthop=kernel), bpf_redirect_neigh: the kernel routes, resolves the
 * next hop and writes the Ethernet header. */
static __always_inline int pv_to_nic(struct __sk_buff *skb, enum pv_hook hook, struct ethhdr *eth, struct iphdr *ip,
				     const struct pv_config *cfg)
{
	if (!pv_decrease_ttl(ip))
		return pv_count(skb, hook, PV_DROP_TTL_EXCEEDED, TC_ACT_SHOT);
	if (pv_unicast_mac(cfg->nexthop_mac) && pv_unicast_mac(cfg->nic_mac)) {
		__builtin_memcpy(eth->h_dest, cfg->nexthop_mac, ETH_ALEN);
		__builtin_memcpy(eth->h_source, cfg->nic_mac, ETH_ALEN);
		pv_count(skb, hook, PV_POD_TO_NIC, TC_ACT_OK);
		return bpf_redirect(cfg->nic_ifindex, 0);
	}
	pv_count(skb, hook, PV_POD_TO_NIC_NEIGH, TC_ACT_OK);
	return bpf_redirect_neigh(cfg->nic_ifindex, NULL, 0, 0);
}

#endif /* PV_FORWARD_H */
