// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * from_nic: tc ingress of the VNet NIC. A frame for a pod on this node goes
 * straight into the pod (MAC rewrite, TTL-1, bpf_redirect_peer); everything
 * else is the node's own traffic and goes to the stack untouched.
 */
#include "podvnet.h"

char __license[] SEC("license") = "Dual BSD/GPL";

SEC("tc")
int from_nic(struct __sk_buff *skb)
{
	struct ethhdr *eth = NULL;
	struct iphdr *ip = NULL;
	struct pv_endpoint *dst;
	int ret;

	ret = pv_parse_ipv4(skb, &eth, &ip);
	if (ret <= 0 || skb->pkt_type != PACKET_HOST)
		return pv_count(skb, PV_NIC_TO_STACK, TC_ACT_OK);

	dst = pv_endpoint(ip->daddr);
	if (!dst)
		return pv_count(skb, PV_NIC_TO_STACK, TC_ACT_OK);
	return pv_to_local(skb, eth, ip, dst, PV_NIC_TO_LOCAL);
}
