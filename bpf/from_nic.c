// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * from_nic: tc ingress of the VNet NIC. A frame for a pod on this node goes
 * straight into the pod (MAC rewrite, TTL-1, bpf_redirect_peer); everything
 * else is the node's own traffic and goes to the stack untouched. Packets of
 * connections the kernel NAT'd (the reply of a Service backend on another
 * node), fragments and ICMP errors also go to the stack, which translates
 * them back and routes them to the pod over its /32 route.
 */
#define PV_HOOK PV_HOOK_NIC
#include "podvnet.h"

char __license[] SEC("license") = "Dual BSD/GPL";

SEC("tc")
int from_nic(struct __sk_buff *skb)
{
	struct ethhdr *eth = NULL;
	struct iphdr *ip = NULL;
	struct pv_endpoint *dst;
	struct pv_config *cfg;
	int ret;

	ret = pv_parse_ipv4(skb, &eth, &ip);
	if (ret <= 0 || skb->pkt_type != PACKET_HOST)
		return pv_count(skb, PV_NIC_TO_STACK, TC_ACT_OK);

	/* Most of what the NIC receives is the node's own: it leaves before the
	 * config lookup, which only the checks for a pod need. */
	dst = pv_endpoint(ip->daddr);
	if (!dst)
		return pv_count(skb, PV_NIC_TO_STACK, TC_ACT_OK);
	cfg = pv_config();
	if (!cfg)
		return pv_count(skb, PV_NIC_TO_STACK, TC_ACT_OK);
	if (dst->flags & PV_EP_F_SHAPED)
		return pv_count(skb, PV_NIC_SHAPED, TC_ACT_OK);
	if (pv_is_frag_or_icmp_error(skb, ip))
		return pv_count(skb, PV_NIC_TO_STACK_FRAG, TC_ACT_OK);
	if (pv_nat_flow(skb, ip, cfg))
		return pv_count(skb, PV_NIC_TO_STACK_NAT, TC_ACT_OK);
	return pv_to_local(skb, eth, ip, dst, PV_NIC_TO_LOCAL);
}
