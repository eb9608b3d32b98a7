/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The pods' gateway (169.254.1.1) answering ARP, in from_pod. */
#ifndef PV_ARP_H
#define PV_ARP_H

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "podvnet.h"
#include "maps.h"
#include "parse.h"
#include "verdict.h"

/* Turns an ARP request for the gateway, sent by the endpoint that owns this
 * interface, into the reply and sends it back out to the pod. Other ARP
 * passes to the stack. */
static __always_inline int pv_arp(struct __sk_buff *skb, struct ethhdr *eth)
{
	void *data_end = (void *)(long)skb->data_end;
	struct pv_arp *arp = (void *)(eth + 1);
	struct pv_endpoint *src;
	struct pv_config *cfg;
	__be32 spa, tpa;

	if ((void *)(arp + 1) > data_end || arp->ar_op != bpf_htons(PV_ARPOP_REQUEST) ||
	    arp->ar_hrd != bpf_htons(PV_ARPHRD_ETHER) || arp->ar_pro != bpf_htons(ETH_P_IP) ||
	    arp->ar_hln != ETH_ALEN || arp->ar_pln != 4)
		return pv_count(skb, PV_HOOK_POD, PV_POD_ARP, TC_ACT_OK);
	cfg = pv_config();
	__builtin_memcpy(&tpa, arp->tpa, 4);
	if (!cfg || cfg->gateway_ip == 0 || tpa != cfg->gateway_ip)
		return pv_count(skb, PV_HOOK_POD, PV_POD_ARP, TC_ACT_OK);

	__builtin_memcpy(&spa, arp->spa, 4);
	src = pv_endpoint(spa);
	if (!src || src->ifindex != skb->ifindex)
		return pv_count(skb, PV_HOOK_POD, PV_DROP_SPOOFED_IP, TC_ACT_SHOT);
	if (__builtin_memcmp(arp->sha, src->pod_mac, ETH_ALEN) != 0 ||
	    __builtin_memcmp(eth->h_source, src->pod_mac, ETH_ALEN) != 0)
		return pv_count(skb, PV_HOOK_POD, PV_DROP_SPOOFED_MAC, TC_ACT_SHOT);

	arp->ar_op = bpf_htons(PV_ARPOP_REPLY);
	__builtin_memcpy(arp->tha, src->pod_mac, ETH_ALEN);
	__builtin_memcpy(arp->tpa, &spa, 4);
	__builtin_memcpy(arp->sha, src->host_mac, ETH_ALEN);
	__builtin_memcpy(arp->spa, &tpa, 4);
	__builtin_memcpy(eth->h_dest, src->pod_mac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, src->host_mac, ETH_ALEN);
	pv_count(skb, PV_HOOK_POD, PV_POD_ARP_REPLY, TC_ACT_OK);
	/* Out of the host veth: the reply arrives on the pod's eth0. */
	return bpf_redirect(skb->ifindex, 0);
}

#endif /* PV_ARP_H */
