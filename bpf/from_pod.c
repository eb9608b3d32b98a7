// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * from_pod: tc ingress of a pod's host-side veth, i.e. every frame a pod sends.
 *
 * Anti-spoofing first: the source IP and MAC must be those of the endpoint
 * that owns the ingress interface. Then:
 *   - to a pod on this node: MAC rewrite, TTL-1, bpf_redirect_peer;
 *   - to a no-SNAT range (the VNet, peered ranges): TTL-1, bpf_redirect_neigh
 *     out of the NIC, skipping the host's routing and netfilter;
 *   - anything else (this node, Service CIDR, Internet): the kernel stack,
 *     where kube-proxy and masquerading live.
 * ARP passes to the stack (the host veth owns no address, so nothing answers
 * but neighbour probes stay harmless); other non-IPv4 frames are dropped:
 * podvnet is IPv4-only, and IPv6 from a pod would reach the host stack without
 * any source check.
 */
#include "podvnet.h"

char __license[] SEC("license") = "Dual BSD/GPL";

SEC("tc")
int from_pod(struct __sk_buff *skb)
{
	struct ethhdr *eth = NULL;
	struct iphdr *ip = NULL;
	struct pv_endpoint *src, *dst;
	struct pv_nosnat_key nk = {};
	struct pv_config *cfg;
	int ret;

	ret = pv_parse_ipv4(skb, &eth, &ip);
	if (ret < 0)
		return pv_count(skb, PV_DROP_MALFORMED, TC_ACT_SHOT);
	if (ret == 0) {
		if (eth->h_proto == bpf_htons(ETH_P_ARP))
			return pv_count(skb, PV_POD_ARP, TC_ACT_OK);
		return pv_count(skb, PV_DROP_UNSUPPORTED_L3, TC_ACT_SHOT);
	}

	src = pv_endpoint(ip->saddr);
	if (!src || src->ifindex != skb->ifindex)
		return pv_count(skb, PV_DROP_SPOOFED_IP, TC_ACT_SHOT);
	if (__builtin_memcmp(eth->h_source, src->pod_mac, ETH_ALEN) != 0)
		return pv_count(skb, PV_DROP_SPOOFED_MAC, TC_ACT_SHOT);

	dst = pv_endpoint(ip->daddr);
	if (dst)
		return pv_to_local(skb, eth, ip, dst, PV_POD_TO_LOCAL);

	cfg = pv_config();
	if (!cfg || cfg->nic_ifindex == 0 || ip->daddr == cfg->node_ip)
		return pv_count(skb, PV_POD_TO_STACK, TC_ACT_OK);

	nk.prefixlen = 32;
	nk.addr = ip->daddr;
	if (!bpf_map_lookup_elem(&nosnat, &nk))
		return pv_count(skb, PV_POD_TO_STACK, TC_ACT_OK);

	if (!pv_decrease_ttl(ip))
		return pv_count(skb, PV_DROP_TTL_EXCEEDED, TC_ACT_SHOT);
	pv_count(skb, PV_POD_TO_NIC, TC_ACT_OK);
	/* The kernel resolves the next hop (the VNet answers every ARP) and
	 * writes the Ethernet header; no forwarding sysctl is consulted. */
	return bpf_redirect_neigh(cfg->nic_ifindex, NULL, 0, 0);
}
