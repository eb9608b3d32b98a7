/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Services per packet: what no socket hook sees. From the VNet, NodePorts,
 * LoadBalancer ingress IPs and externalIPs (from_nic); from the node and
 * hostNetwork processes outside the pods' cgroup, the Service CIDR, routed
 * to the Service device (from_host); from pods, a Service packet no socket
 * hook translated (from_pod). The first packet of a flow picks a backend
 * (lib/lb.h) and writes both directions into svc_nat; every later packet,
 * and every reply, is rewritten from there. Replies are found by their
 * source port first (svc_ports), so that other traffic pays no lookup.
 *
 * A NodePort with the Cluster policy is SNAT'd to the node, from a port
 * above the node's ephemeral range, so that the backend's reply (from any
 * node) returns here to be translated back; with the Local policy the
 * backend is on this node and the client's address is kept.
 *
 * NetworkPolicy judges a translated packet as the backend receives it
 * (pv_lb_forward; from_nic's pod path for what arrived from the VNet):
 * Kubernetes defines policy on the backend pod, after the Service. Replies
 * are judged where the backend sends them (from_pod).
 */
#ifndef PV_NAT_H
#define PV_NAT_H

#include <stddef.h>
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "podvnet.h"
#include "maps.h"
#include "parse.h"
#include "verdict.h"
#include "conntrack.h"
#include "forward.h"
#include "svc_maps.h"
#include "lb.h"
#include "policy.h"

/* The per-packet entry points (pv_lb_reply, pv_lb_to_frontend) return
 * PV_LB_PASS for a packet that is not a Service's (the caller goes on with
 * its own decisions), else PV_LB_DONE with the tc verdict in *verdict. Not
 * a sentinel verdict: a helper's return value could equal it, and the
 * verifier would follow the caller's path with the packet rewritten. */
#define PV_LB_PASS 0
#define PV_LB_DONE 1

/* PV_LB_TO_POD, in place of a tc verdict (none is this large): the packet,
 * translated in from_nic, is now for a pod of this node; from_nic parses it
 * again and takes it down its pod path (NetworkPolicy, delivery). */
#define PV_LB_TO_POD 0x100

/* pv_lb_done hands the caller a verdict. */
static __always_inline int pv_lb_done(int *verdict, int v)
{
	*verdict = v;
	return PV_LB_DONE;
}

#define PV_NAT_TRIES 8 /* SNAT ports tried for a new flow */

#define PV_TCP_FLAGS_OFF 13
#define PV_TCP_SYN 0x02
#define PV_TCP_ACK 0x10

#define PV_IP_CHECK_OFF (ETH_HLEN + offsetof(struct iphdr, check))
#define PV_IP_SADDR_OFF (ETH_HLEN + offsetof(struct iphdr, saddr))
#define PV_IP_DADDR_OFF (ETH_HLEN + offsetof(struct iphdr, daddr))

/* A TCP or UDP packet's tuple as it arrived, and where its header is. */
struct pv_nat_pkt {
	struct pv_nat_key key;
	__u32 l4_off;
	__u8 tcp_flags;
};

/* pv_nat_pkt_read fills f from the packet; 0 for what per-packet translation
 * leaves to the kernel: not TCP or UDP, fragments, ICMP errors, truncated. */
static __always_inline int pv_nat_pkt_read(struct __sk_buff *skb, struct pv_nat_pkt *f)
{
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = NULL;
	struct iphdr *ip = NULL;
	struct pv_ports *ports;
	__u8 *flags;

	if (pv_parse_ipv4(skb, &eth, &ip) <= 0 || pv_is_frag_or_icmp_error(skb, ip))
		return 0;
	ports = pv_l4_ports(skb, ip);
	if (!ports)
		return 0;
	f->key.saddr = ip->saddr;
	f->key.daddr = ip->daddr;
	f->key.sport = ports->sport;
	f->key.dport = ports->dport;
	f->key.proto = ip->protocol;
	f->l4_off = ETH_HLEN + ip->ihl * 4;
	if (ip->protocol == IPPROTO_TCP) {
		flags = (__u8 *)ports + PV_TCP_FLAGS_OFF;
		if ((void *)(flags + 1) > data_end)
			return 0;
		f->tcp_flags = *flags;
	} else if ((void *)ports + 8 > data_end) {
		return 0; /* UDP: the checksum must be there to be updated */
	}
	return 1;
}

/* pv_nat_rewrite gives the packet of f the addresses and ports of n,
 * updating the IPv4 and L4 checksums (the helpers keep the skb's checksum
 * state right, whatever offload it carries). Packet pointers are invalid
 * afterwards. */
static __always_inline int pv_nat_rewrite(struct __sk_buff *skb, const struct pv_nat_pkt *f, const struct pv_nat *n)
{
	__u32 csum_off = f->l4_off + (f->key.proto == IPPROTO_TCP ? 16 : 6);
	__u64 l4 = f->key.proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;

	if (n->saddr != f->key.saddr &&
	    (bpf_l4_csum_replace(skb, csum_off, f->key.saddr, n->saddr, l4 | BPF_F_PSEUDO_HDR | 4) ||
	     bpf_l3_csum_replace(skb, PV_IP_CHECK_OFF, f->key.saddr, n->saddr, 4) ||
	     bpf_skb_store_bytes(skb, PV_IP_SADDR_OFF, &n->saddr, 4, 0)))
		return -1;
	if (n->daddr != f->key.daddr &&
	    (bpf_l4_csum_replace(skb, csum_off, f->key.daddr, n->daddr, l4 | BPF_F_PSEUDO_HDR | 4) ||
	     bpf_l3_csum_replace(skb, PV_IP_CHECK_OFF, f->key.daddr, n->daddr, 4) ||
	     bpf_skb_store_bytes(skb, PV_IP_DADDR_OFF, &n->daddr, 4, 0)))
		return -1;
	if (n->sport != f->key.sport &&
	    (bpf_l4_csum_replace(skb, csum_off, f->key.sport, n->sport, l4 | 2) ||
	     bpf_skb_store_bytes(skb, f->l4_off, &n->sport, 2, 0)))
		return -1;
	if (n->dport != f->key.dport &&
	    (bpf_l4_csum_replace(skb, csum_off, f->key.dport, n->dport, l4 | 2) ||
	     bpf_skb_store_bytes(skb, f->l4_off + 2, &n->dport, 2, 0)))
		return -1;
	return 0;
}

static __always_inline __u16 pv_csum_fold(__s64 sum)
{
	__u32 s = (__u32)sum;

	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)~s;
}

/* pv_reject answers a packet with ICMP port unreachable from its
 * destination, as kube-proxy rejects a Service without endpoints (for TCP
 * too: a client's connect fails with ECONNREFUSED). The reply goes back the
 * way the packet came: out of the interface it arrived on, or for the
 * node's own packet (from_host) into the host through the Service device. */
static __always_inline int pv_reject(struct __sk_buff *skb, enum pv_hook hook)
{
	/* Ethernet, the new IPv4 header and ICMP's 8, then the quote: the
	 * packet's IPv4 header (without options) and 8 bytes after it. */
	const __u32 len = ETH_HLEN + 20 + 8 + 20 + 8;
	struct ethhdr *eth = NULL;
	struct iphdr *ip = NULL;
	struct pv_svc_config *sc = NULL;
	__u8 smac[ETH_ALEN], dmac[ETH_ALEN];
	void *data, *data_end;
	__u8 *icmp;
	__be32 saddr, daddr;
	__u32 ifindex = skb->ifindex;
	__u64 flags = 0;

	if (pv_parse_ipv4(skb, &eth, &ip) <= 0 || ip->ihl != 5)
		return TC_ACT_SHOT;
	__builtin_memcpy(smac, eth->h_source, ETH_ALEN);
	__builtin_memcpy(dmac, eth->h_dest, ETH_ALEN);
	saddr = ip->saddr;
	daddr = ip->daddr;
	if (hook == PV_HOOK_HOST) {
		sc = pv_svc_config();
		if (!sc || !sc->host_ifindex)
			return TC_ACT_SHOT;
		ifindex = sc->host_ifindex;
		flags = BPF_F_INGRESS;
		__builtin_memcpy(smac, sc->host_mac, ETH_ALEN);
	}
	/* Keep the quote, then make room in front of it for the new headers. */
	if (bpf_skb_change_tail(skb, ETH_HLEN + 28, 0) || bpf_skb_change_head(skb, 28, 0))
		return TC_ACT_SHOT;
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	if (data + len > data_end)
		return TC_ACT_SHOT;
	eth = data;
	__builtin_memcpy(eth->h_dest, smac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, dmac, ETH_ALEN);
	eth->h_proto = bpf_htons(ETH_P_IP);
	ip = data + ETH_HLEN;
	ip->version = 4;
	ip->ihl = 5;
	ip->tos = 0;
	ip->tot_len = bpf_htons(20 + 8 + 28);
	ip->id = 0;
	ip->frag_off = 0;
	ip->ttl = 64;
	ip->protocol = IPPROTO_ICMP;
	ip->check = 0;
	ip->saddr = daddr;
	ip->daddr = saddr;
	ip->check = pv_csum_fold(bpf_csum_diff(NULL, 0, (__be32 *)ip, 20, 0));
	icmp = (void *)(ip + 1);
	icmp[0] = 3; /* destination unreachable */
	icmp[1] = 3; /* port unreachable */
	*(__u16 *)(icmp + 2) = 0;
	*(__u32 *)(icmp + 4) = 0;
	*(__u16 *)(icmp + 2) = pv_csum_fold(bpf_csum_diff(NULL, 0, (__be32 *)icmp, 36, 0));
	return bpf_redirect(ifindex, flags);
}

/* pv_lb_forward sends a translated packet on: into the host for the node's
 * own flows, into a pod of this node, or into the VNet. */
static __always_inline int pv_lb_forward(struct __sk_buff *skb, enum pv_hook hook, const struct pv_config *cfg, __u32 nat_flags)
{
	struct ethhdr *eth = NULL;
	struct iphdr *ip = NULL;
	struct pv_endpoint *ep;
	struct pv_svc_config *sc;
	__u32 denied;

	if (pv_parse_ipv4(skb, &eth, &ip) <= 0)
		return pv_count(skb, hook, PV_DROP_MALFORMED, TC_ACT_SHOT);
	if (nat_flags & PV_NAT_F_TO_HOST) {
		sc = pv_svc_config();
		if (!sc || !sc->host_ifindex)
			return pv_count(skb, hook, PV_SVC_DROP, TC_ACT_SHOT);
		__builtin_memcpy(eth->h_dest, sc->host_mac, ETH_ALEN);
		return bpf_redirect(sc->host_ifindex, BPF_F_INGRESS);
	}
	ep = pv_endpoint(ip->daddr);
	if (!(nat_flags & PV_NAT_F_REPLY)) {
		/* From the VNet to a local backend: now a packet like any other
		 * for a pod, which from_nic's pod path judges and delivers. */
		if (hook == PV_HOOK_NIC && ep)
			return PV_LB_TO_POD;
		/* A pod's egress, and a local backend's ingress (the node reaches
		 * its own pods always; a remote backend's node judges its own). */
		if (hook == PV_HOOK_POD) {
			denied = pv_policy_translated(skb, ip, pv_endpoint(ip->saddr), ep);
			if (denied)
				return pv_count(skb, hook, denied, TC_ACT_SHOT);
		}
	}
	if (ep)
		/* from_host runs on an egress: no peer redirect there. */
		return pv_deliver_local(skb, hook, eth, ip, ep, hook == PV_HOOK_NIC ? PV_NIC_TO_LOCAL : PV_POD_TO_LOCAL,
					hook != PV_HOOK_HOST);
	if (!cfg->nic_ifindex)
		return pv_count(skb, hook, PV_SVC_DROP, TC_ACT_SHOT);
	return pv_to_nic(skb, hook, eth, ip, cfg);
}

/* pv_lb_apply translates a packet of a known flow and sends it on. */
static __always_inline int pv_lb_apply(struct __sk_buff *skb, enum pv_hook hook, const struct pv_config *cfg,
				       const struct pv_nat_pkt *f, const struct pv_nat *entry)
{
	struct pv_nat n = *entry;

	pv_count(skb, hook, (n.flags & PV_NAT_F_REPLY) ? PV_SVC_REV_XLATE : PV_SVC_XLATE, TC_ACT_OK);
	if (pv_nat_rewrite(skb, f, &n))
		return pv_count(skb, hook, PV_DROP_MALFORMED, TC_ACT_SHOT);
	return pv_lb_forward(skb, hook, cfg, n.flags);
}

/* pv_lb_new_flow picks a backend for the first packet of a flow to svc,
 * records both directions and sends the packet on. */
static __always_inline int pv_lb_new_flow(struct __sk_buff *skb, enum pv_hook hook, const struct pv_config *cfg,
					  const struct pv_nat_pkt *f, const struct pv_svc *svc, int *verdict)
{
	struct pv_nat fwd = {}, rev = {};
	struct pv_nat_key rk = {};
	struct pv_svc_config *sc;
	struct pv_backend *be;
	__u32 id, range, i;

	/* Only a SYN starts a TCP flow; anything else of an unknown flow is
	 * the kernel's to answer (a reset). */
	if (f->key.proto == IPPROTO_TCP && (f->tcp_flags & (PV_TCP_SYN | PV_TCP_ACK)) != PV_TCP_SYN)
		return PV_LB_PASS;
	if (svc->count == 0) {
		if (svc->flags & PV_SVC_F_DROP)
			return pv_lb_done(verdict, pv_count(skb, hook, PV_SVC_DROP, TC_ACT_SHOT));
		pv_count(skb, hook, PV_SVC_NO_BACKEND, TC_ACT_SHOT);
		return pv_lb_done(verdict, pv_reject(skb, hook));
	}
	id = pv_svc_pick(svc, f->key.saddr, bpf_get_prandom_u32());
	be = pv_svc_backend(id);
	if (!be) {
		pv_count(skb, hook, PV_SVC_NO_BACKEND, TC_ACT_SHOT);
		return pv_lb_done(verdict, pv_reject(skb, hook));
	}
	fwd.saddr = f->key.saddr;
	fwd.sport = f->key.sport;
	fwd.daddr = be->addr;
	fwd.dport = be->port;
	fwd.id = svc->id;
	fwd.backend_id = id;
	/* The reply, as it will arrive, becomes the frontend answering. */
	rk.saddr = be->addr;
	rk.sport = be->port;
	rk.daddr = fwd.saddr;
	rk.dport = fwd.sport;
	rk.proto = f->key.proto;
	rev.saddr = f->key.daddr;
	rev.sport = f->key.dport;
	rev.daddr = f->key.saddr;
	rev.dport = f->key.sport;
	rev.id = svc->id;
	rev.backend_id = id;
	rev.flags = PV_NAT_F_REPLY | (hook == PV_HOOK_HOST ? PV_NAT_F_TO_HOST : 0);

	if (hook == PV_HOOK_NIC && !(svc->flags & PV_SVC_F_LOCAL)) {
		sc = pv_svc_config();
		if (!sc || sc->nat_port_max < sc->nat_port_min)
			return pv_lb_done(verdict, pv_count(skb, hook, PV_SVC_NAT_FULL, TC_ACT_SHOT));
		fwd.saddr = cfg->node_ip;
		rk.daddr = cfg->node_ip;
		range = (__u32)sc->nat_port_max - sc->nat_port_min + 1;
		for (i = 0; i < PV_NAT_TRIES; i++) {
			rk.dport = bpf_htons((__u16)(sc->nat_port_min + bpf_get_prandom_u32() % range));
			if (bpf_map_update_elem(&svc_nat, &rk, &rev, BPF_NOEXIST) == 0)
				break;
		}
		if (i == PV_NAT_TRIES)
			return pv_lb_done(verdict, pv_count(skb, hook, PV_SVC_NAT_FULL, TC_ACT_SHOT));
		fwd.sport = rk.dport;
	} else if (bpf_map_update_elem(&svc_nat, &rk, &rev, BPF_ANY)) {
		return pv_lb_done(verdict, pv_count(skb, hook, PV_SVC_NAT_FULL, TC_ACT_SHOT));
	}
	if (bpf_map_update_elem(&svc_nat, &f->key, &fwd, BPF_ANY))
		return pv_lb_done(verdict, pv_count(skb, hook, PV_SVC_NAT_FULL, TC_ACT_SHOT));
	pv_count(skb, hook, PV_SVC_XLATE, TC_ACT_OK);
	if (pv_nat_rewrite(skb, f, &fwd))
		return pv_lb_done(verdict, pv_count(skb, hook, PV_DROP_MALFORMED, TC_ACT_SHOT));
	return pv_lb_done(verdict, pv_lb_forward(skb, hook, cfg, 0));
}

/* pv_lb_reply translates a packet that answers a translated flow: its
 * source port is one a backend serves on (svc_ports), and svc_nat knows its
 * tuple. PV_LB_PASS for anything else. */
static __always_inline int pv_lb_reply(struct __sk_buff *skb, enum pv_hook hook, const struct pv_config *cfg, int *verdict)
{
	struct pv_nat_pkt f = {};
	struct pv_port_bits *bits;
	struct pv_nat *n;
	__u64 bit = 0;

	if (!pv_nat_pkt_read(skb, &f))
		return PV_LB_PASS;
	bits = pv_port_bits(f.key.proto, f.key.sport, &bit);
	if (!bits || !(bits->svc & bit))
		return PV_LB_PASS;
	n = bpf_map_lookup_elem(&svc_nat, &f.key);
	if (!n)
		return PV_LB_PASS;
	return pv_lb_done(verdict, pv_lb_apply(skb, hook, cfg, &f, n));
}

/* pv_lb_to_frontend translates a packet of a flow already translated, or
 * the first packet of one to a frontend of scope. PV_LB_PASS for anything
 * else. */
static __always_inline int pv_lb_to_frontend(struct __sk_buff *skb, enum pv_hook hook, const struct pv_config *cfg, __u8 scope,
					     int *verdict)
{
	struct pv_nat_pkt f = {};
	struct pv_svc *svc;
	struct pv_nat *n;

	if (!pv_nat_pkt_read(skb, &f))
		return PV_LB_PASS;
	n = bpf_map_lookup_elem(&svc_nat, &f.key);
	if (n)
		return pv_lb_done(verdict, pv_lb_apply(skb, hook, cfg, &f, n));
	svc = pv_svc_lookup(f.key.daddr, f.key.dport, f.key.proto, scope);
	if (!svc)
		return PV_LB_PASS;
	return pv_lb_new_flow(skb, hook, cfg, &f, svc, verdict);
}

#endif /* PV_NAT_H */
