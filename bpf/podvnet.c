// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * podvnet's data path: one object holding every program, so that the maps
 * (lib/maps.h) exist once and all programs share them by construction.
 *
 * from_pod: tc ingress of a pod's host-side veth, i.e. every frame a pod
 * sends. Anti-spoofing first: the source IP and MAC must be those of the
 * endpoint that owns the ingress interface. Next, the destinations no pod
 * may reach (lib/platform.h: the WireServer, ...) are dropped. Then:
 *   - to a pod on this node: MAC rewrite, TTL-1, bpf_redirect_peer;
 *   - to a no-SNAT range (the VNet, peered ranges): TTL-1, out of the NIC,
 *     skipping the host's routing and netfilter: MACs written from the
 *     cached next hop and bpf_redirect, or bpf_redirect_neigh where the
 *     next hop is not cached (lib/forward.h);
 *   - anything else (this node, Service CIDR, Internet): the kernel stack,
 *     where kube-proxy and masquerading live.
 * Before a redirect, packets of connections the kernel NAT'd (a Service's
 * backend answering, a NodePort reply), fragments and ICMP errors go to the
 * stack instead: only there are they translated back. So does the traffic
 * of a pod whose bandwidth tc shapes: only the kernel path meets the qdiscs.
 * ARP: a request for the gateway (169.254.1.1) is answered here (lib/arp.h);
 * other ARP passes to the stack, where nothing answers it (the host veth
 * owns no address). Other non-IPv4 frames are dropped: podvnet is IPv4-only,
 * and IPv6 from a pod would reach the host stack without any source check.
 *
 * from_nic: tc ingress of the VNet NIC. A frame for a pod on this node goes
 * straight into the pod (MAC rewrite, TTL-1, bpf_redirect_peer); everything
 * else is the node's own traffic and goes to the stack untouched. Packets of
 * connections the kernel NAT'd (the reply of a Service backend on another
 * node), fragments and ICMP errors also go to the stack, which translates
 * them back and routes them to the pod over its /32 route.
 *
 * NetworkPolicy (lib/policy.h) is judged in from_pod and from_nic before
 * any redirect, and in two programs that only judge: to_pod, on the tc
 * egress of a pod's host veth (what the stack delivers to the pod), and
 * to_nic, on the tc egress of the NIC (a pod's packets the stack routed
 * out after translating them). A pod no policy isolates costs a flag test.
 * Services (--service-mode=bpf, PV_CFG_F_SVC): a pod's socket calls to a
 * Service are translated by the cgroup programs (sock_*, lib/sock.h) before
 * any packet exists; what no socket hook sees is translated per packet
 * (lib/nat.h): NodePorts and other external frontends in from_nic, the
 * node's own Service traffic in from_host (the Service device's egress),
 * and the replies of those flows where they arrive.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "podvnet.h"
#include "lib/maps.h"
#include "lib/parse.h"
#include "lib/verdict.h"
#include "lib/conntrack.h"
#include "lib/forward.h"
#include "lib/arp.h"
#include "lib/platform.h"
#include "lib/policy.h"
#include "lib/lb.h"
#include "lib/nat.h"
#include "lib/sock.h"

char __license[] SEC("license") = "Dual BSD/GPL";

SEC("tc")
int from_pod(struct __sk_buff *skb)
{
	struct ethhdr *eth = NULL;
	struct iphdr *ip = NULL;
	struct pv_endpoint *src, *dst;
	struct pv_config *cfg;
	__u32 blocked, denied;
	int ret, judged = 0;

	ret = pv_parse_ipv4(skb, &eth, &ip);
	if (ret < 0)
		return pv_count(skb, PV_HOOK_POD, PV_DROP_MALFORMED, TC_ACT_SHOT);
	if (ret == 0) {
		if (eth->h_proto == bpf_htons(ETH_P_ARP))
			return pv_arp(skb, eth);
		return pv_count(skb, PV_HOOK_POD, PV_DROP_UNSUPPORTED_L3, TC_ACT_SHOT);
	}

	src = pv_endpoint(ip->saddr);
	if (!src || src->ifindex != skb->ifindex)
		return pv_count(skb, PV_HOOK_POD, PV_DROP_SPOOFED_IP, TC_ACT_SHOT);
	if (__builtin_memcmp(eth->h_source, src->pod_mac, ETH_ALEN) != 0)
		return pv_count(skb, PV_HOOK_POD, PV_DROP_SPOOFED_MAC, TC_ACT_SHOT);

	/* Before every branch below, so that no path (shaped, stack,
	 * masquerade, fast path) reaches a blocked destination. */
	blocked = pv_blocked_reason(skb, ip);
	if (blocked)
		return pv_count(skb, PV_HOOK_POD, blocked, TC_ACT_SHOT);

	/* NetworkPolicy, also before every branch below: the stack masquerades
	 * what leaves for the Internet, so it is judged here or never. A reply
	 * of a flow translated per packet is judged as its backend sent it. */
	dst = pv_endpoint(ip->daddr);
	denied = pv_policy_from_pod(skb, ip, src, dst, &judged);
	if (denied)
		return pv_count(skb, PV_HOOK_POD, denied, TC_ACT_SHOT);

	cfg = pv_config();
	/* A backend's answer to a flow translated per packet (a NodePort, the
	 * node's own Service traffic): translated back before anything else,
	 * to wherever the client is. */
	if (cfg && (cfg->flags & PV_CFG_F_SVC) && pv_lb_reply(skb, PV_HOOK_POD, cfg, &ret) == PV_LB_DONE)
		return ret;

	/* TC_ACT_UNSPEC: under tcx, "next", so that the tc filters of a
	 * chained bandwidth plugin (mirred to its ifb) still run. */
	if (src->flags & PV_EP_F_SHAPED)
		return pv_count(skb, PV_HOOK_POD, PV_POD_SHAPED, TC_ACT_UNSPEC);

	if (!cfg || cfg->nic_ifindex == 0 || ip->daddr == cfg->node_ip)
		return pv_count(skb, PV_HOOK_POD, PV_POD_TO_STACK, TC_ACT_OK);

	if (dst && (dst->flags & PV_EP_F_SHAPED))
		return pv_count(skb, PV_HOOK_POD, PV_POD_SHAPED, TC_ACT_OK);
	if (!dst && !pv_nosnat_dest(cfg, ip->daddr)) {
		/* A Service packet no socket hook translated (a raw socket, a
		 * process outside the pods' cgroup) is translated here. */
		if ((cfg->flags & PV_CFG_F_SVC) &&
		    pv_lb_to_frontend(skb, PV_HOOK_POD, cfg, PV_SVC_SCOPE_INT, &ret) == PV_LB_DONE)
			return ret;
		return pv_count(skb, PV_HOOK_POD, PV_POD_TO_STACK, TC_ACT_OK);
	}
	if (pv_is_frag_or_icmp_error(skb, ip))
		return pv_count(skb, PV_HOOK_POD, PV_POD_TO_STACK_FRAG, TC_ACT_OK);
	if (pv_nat_flow(skb, ip, cfg))
		return pv_count(skb, PV_HOOK_POD, PV_POD_TO_STACK_NAT, TC_ACT_OK);
	if (dst)
		return pv_to_local(skb, PV_HOOK_POD, eth, ip, dst, PV_POD_TO_LOCAL);
	if (judged)
		skb->mark = PV_MARK_JUDGED;
	return pv_to_nic(skb, PV_HOOK_POD, eth, ip, cfg);
}

/* What the NIC receives for no pod: the node's own traffic, and in
 * service mode bpf the Service frontends from outside (NodePorts, ...) and
 * the replies of flows translated here. Not inlined: from_nic's pod path
 * stays as small as it was. */
static __noinline int pv_nic_not_for_pod(struct __sk_buff *skb)
{
	struct pv_config *cfg = pv_config();
	int ret;

	if (cfg && (cfg->flags & PV_CFG_F_SVC) && pv_lb_to_frontend(skb, PV_HOOK_NIC, cfg, PV_SVC_SCOPE_EXT, &ret) == PV_LB_DONE)
		return ret;
	return pv_count(skb, PV_HOOK_NIC, PV_NIC_TO_STACK, TC_ACT_OK);
}

SEC("tc")
int from_nic(struct __sk_buff *skb)
{
	struct ethhdr *eth = NULL;
	struct iphdr *ip = NULL;
	struct pv_endpoint *dst;
	struct pv_config *cfg;
	__u32 denied;
	int ret, translated = 0;

	ret = pv_parse_ipv4(skb, &eth, &ip);
	if (ret <= 0 || skb->pkt_type != PACKET_HOST)
		return pv_count(skb, PV_HOOK_NIC, PV_NIC_TO_STACK, TC_ACT_OK);

	/* Most of what the NIC receives is the node's own: it leaves before the
	 * config lookup, which only the checks for a pod need. */
	dst = pv_endpoint(ip->daddr);
	if (!dst) {
		ret = pv_nic_not_for_pod(skb);
		if (ret != PV_LB_TO_POD)
			return ret;
		/* A Service's frontend, translated to a backend on this node. */
		translated = 1;
		if (pv_parse_ipv4(skb, &eth, &ip) <= 0)
			return pv_count(skb, PV_HOOK_NIC, PV_DROP_MALFORMED, TC_ACT_SHOT);
		dst = pv_endpoint(ip->daddr);
		if (!dst)
			return pv_count(skb, PV_HOOK_NIC, PV_SVC_DROP, TC_ACT_SHOT);
	}
	cfg = pv_config();
	if (!cfg)
		return pv_count(skb, PV_HOOK_NIC, PV_NIC_TO_STACK, TC_ACT_OK);
	/* A remote backend answering a pod's flow translated per packet. */
	if (!translated && (cfg->flags & PV_CFG_F_SVC) && pv_lb_reply(skb, PV_HOOK_NIC, cfg, &ret) == PV_LB_DONE)
		return ret;
	if (dst->flags & PV_EP_F_SHAPED)
		return pv_count(skb, PV_HOOK_NIC, PV_NIC_SHAPED, TC_ACT_OK);
	if (pv_is_frag_or_icmp_error(skb, ip))
		return pv_count(skb, PV_HOOK_NIC, PV_NIC_TO_STACK_FRAG, TC_ACT_OK);
	if (pv_nat_flow(skb, ip, cfg))
		return pv_count(skb, PV_HOOK_NIC, PV_NIC_TO_STACK_NAT, TC_ACT_OK);
	denied = pv_policy_from_nic(skb, ip, dst);
	if (denied)
		return pv_count(skb, PV_HOOK_NIC, denied, TC_ACT_SHOT);
	return pv_to_local(skb, PV_HOOK_NIC, eth, ip, dst, PV_NIC_TO_LOCAL);
}

/* to_pod: tc egress of a pod's host veth, i.e. what the stack delivers to
 * the pod (redirect_peer skips it). It only judges NetworkPolicy: the pod's
 * ingress, and the egress of a local pod whose packet the stack translated
 * to this one (kube-proxy's DNAT to a local backend). A packet this node
 * originates (no ingress interface) is the node's: always allowed in. */
SEC("tc")
int to_pod(struct __sk_buff *skb)
{
	struct ethhdr *eth = NULL;
	struct iphdr *ip = NULL;
	struct pv_endpoint *src = NULL, *dst;
	struct pv_policy_config *pc;
	__u32 denied;

	/* ARP from the node resolving the pod, and the like. */
	if (pv_parse_ipv4(skb, &eth, &ip) <= 0)
		return pv_count(skb, PV_HOOK_TO_POD, PV_STACK_TO_POD, TC_ACT_OK);
	dst = pv_endpoint(ip->daddr);
	if (!dst || dst->ifindex != skb->ifindex)
		return pv_count(skb, PV_HOOK_TO_POD, PV_STACK_TO_POD, TC_ACT_OK);
	pc = pv_policy_config();
	if (skb->ingress_ifindex && pc && (pc->flags & PV_POLICY_CFG_F_ISOLATED)) {
		/* A local pod's packet, if it came in through that pod's veth. */
		src = pv_endpoint(ip->saddr);
		if (src && src->ifindex != skb->ingress_ifindex)
			src = NULL;
	}
	if (!(dst->flags & PV_EP_F_POLICY) && !(src && (src->flags & PV_EP_F_POLICY)))
		return pv_count(skb, PV_HOOK_TO_POD, PV_STACK_TO_POD, TC_ACT_OK);
	if (pv_service_ip(pc, ip->saddr) && pv_service_reply(skb, ip))
		return pv_count(skb, PV_HOOK_TO_POD, PV_STACK_TO_POD, TC_ACT_OK);
	denied = pv_judge(skb, ip, src, dst, skb->ingress_ifindex == 0);
	if (denied)
		return pv_count(skb, PV_HOOK_TO_POD, denied, TC_ACT_SHOT);
	return pv_count(skb, PV_HOOK_TO_POD, PV_STACK_TO_POD, TC_ACT_OK);
}

/* to_nic: tc egress of the NIC. It only judges the egress of a local pod
 * whose packet the stack routed out after translating it (kube-proxy's
 * DNAT to a backend on another node); what from_pod judged and sent out
 * itself carries PV_MARK_JUDGED, and the node's own traffic has no
 * ingress interface. Counted only when judged: every packet of the node
 * passes here. */
SEC("tc")
int to_nic(struct __sk_buff *skb)
{
	struct ethhdr *eth = NULL;
	struct iphdr *ip = NULL;
	struct pv_endpoint *src;
	struct pv_policy_config *pc;
	__u32 denied;

	if (skb->mark == PV_MARK_JUDGED) {
		skb->mark = 0;
		return TC_ACT_OK;
	}
	pc = pv_policy_config();
	if (!pc || !(pc->flags & PV_POLICY_CFG_F_EGRESS) || !skb->ingress_ifindex)
		return TC_ACT_OK;
	if (pv_parse_ipv4(skb, &eth, &ip) <= 0)
		return TC_ACT_OK;
	src = pv_endpoint(ip->saddr);
	if (!src || src->ifindex != skb->ingress_ifindex || !(src->flags & PV_EP_F_POLICY_EGRESS))
		return TC_ACT_OK;
	denied = pv_judge(skb, ip, src, NULL, 0);
	if (denied)
		return pv_count(skb, PV_HOOK_TO_NIC, denied, TC_ACT_SHOT);
	return pv_count(skb, PV_HOOK_TO_NIC, PV_STACK_TO_NIC, TC_ACT_OK);
}

/* from_host: tc egress of the Service device, where the node's route for
 * the Service CIDR sends what the node itself (and hostNetwork processes
 * outside the pods' cgroup) sends to a Service. Translated per packet
 * (lib/nat.h) and sent on to the backend; replies come back into the host
 * through the same device. */
SEC("tc")
int from_host(struct __sk_buff *skb)
{
	struct ethhdr *eth = NULL;
	struct iphdr *ip = NULL;
	struct pv_config *cfg;
	int ret;

	if (pv_parse_ipv4(skb, &eth, &ip) <= 0)
		return pv_count(skb, PV_HOOK_HOST, PV_SVC_HOST_NO_SERVICE, TC_ACT_SHOT);
	cfg = pv_config();
	if (cfg && (cfg->flags & PV_CFG_F_SVC) && pv_lb_to_frontend(skb, PV_HOOK_HOST, cfg, PV_SVC_SCOPE_INT, &ret) == PV_LB_DONE)
		return ret;
	return pv_count(skb, PV_HOOK_HOST, PV_SVC_HOST_NO_SERVICE, TC_ACT_SHOT);
}

/* The socket hooks (lib/sock.h), attached to the pods' cgroup v2. */
SEC("cgroup/connect4")
int sock_connect4(struct bpf_sock_addr *ctx)
{
	return pv_sock_xlate(ctx, 0);
}

SEC("cgroup/sendmsg4")
int sock_sendmsg4(struct bpf_sock_addr *ctx)
{
	return pv_sock_xlate(ctx, 1);
}

SEC("cgroup/recvmsg4")
int sock_recvmsg4(struct bpf_sock_addr *ctx)
{
	return pv_sock_revnat(ctx);
}

SEC("cgroup/getpeername4")
int sock_getpeername4(struct bpf_sock_addr *ctx)
{
	return pv_sock_revnat(ctx);
}

/* The same for IPv6 sockets, whose IPv4-mapped destinations (a dual-stack
 * socket reaching an IPv4 Service) run these hooks, not the IPv4 ones. */
SEC("cgroup/connect6")
int sock_connect6(struct bpf_sock_addr *ctx)
{
	return pv_sock_xlate6(ctx, 0);
}

SEC("cgroup/sendmsg6")
int sock_sendmsg6(struct bpf_sock_addr *ctx)
{
	return pv_sock_xlate6(ctx, 1);
}

SEC("cgroup/recvmsg6")
int sock_recvmsg6(struct bpf_sock_addr *ctx)
{
	return pv_sock_revnat6(ctx);
}

SEC("cgroup/getpeername6")
int sock_getpeername6(struct bpf_sock_addr *ctx)
{
	return pv_sock_revnat6(ctx);
}
