/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Kubernetes NetworkPolicy. A packet is judged where podvnet first sees it
 * with its final addresses:
 *   from_pod  the source's egress, and a local destination's ingress (a
 *             redirect_peer skips the destination's host veth egress);
 *             not for a Service IP: kube-proxy has not translated it yet;
 *   from_nic  a local destination's ingress, before the redirect;
 *   to_pod    what the stack delivers to a pod (kube-proxy's DNAT, replies
 *             of masqueraded flows, the node, hostPort): the ingress, and
 *             the egress of a local source whose Service traffic the stack
 *             translated to this pod;
 *   to_nic    the egress of a local source whose Service traffic the stack
 *             translated to a remote backend (from_pod marks what it judged
 *             and sends out itself, so to_nic skips it).
 *
 * A new flow is one ipcache lookup (the peer's identity), one lookup of the
 * peer's rule (or the endpoint's set for every peer) and one port set
 * lookup per direction; an endpoint with ipBlock rules may add its CIDR
 * trie. The allowed flow enters the flow table (lib/flow.h): its later
 * packets and its replies cost one lookup, until the rules change.
 */
#ifndef PV_POLICY_H
#define PV_POLICY_H

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/netfilter/nf_conntrack_common.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "podvnet.h"
#include "maps.h"
#include "parse.h"
#include "verdict.h"
#include "conntrack.h"
#include "flow.h"

/* skb->mark of a packet from_pod judged and sends out of the NIC itself:
 * to_nic lets it pass and clears the mark. Never on a packet the stack
 * handles (kube-proxy's marks live there). */
#define PV_MARK_JUDGED 0x50560e00

static __always_inline struct pv_policy_config *pv_policy_config(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&policy_config, &zero);
}

/* pv_service_ip: egress to a Service IP is judged after kube-proxy's DNAT. */
static __always_inline int pv_service_ip(const struct pv_policy_config *pc, __be32 addr)
{
	return pc && pc->service_mask && (addr & pc->service_mask) == pc->service_net;
}

/* pv_peer_id is the identity of a peer address; host: the packet is this
 * node's own, whatever its source address. */
static __always_inline __u32 pv_peer_id(__be32 addr, __u32 host)
{
	struct pv_ipcache_key k = { .ip = addr };
	struct pv_identity *id;

	if (host)
		return PV_ID_HOST;
	id = bpf_map_lookup_elem(&ipcache, &k);
	return id ? id->id : PV_ID_WORLD;
}

/* pv_ports_allow: does port set hold (proto, port)? */
static __always_inline int pv_ports_allow(__u32 set, __u8 proto, __be16 port)
{
	struct pv_ports_key k = { .prefixlen = 64, .set = set, .proto = proto, .port = port };

	return set && bpf_map_lookup_elem(&policy_ports, &k) != NULL;
}

static __always_inline void pv_count_flow(__u32 policy_id, __u8 dir, __u64 *entry_flows)
{
	struct pv_policy_stats *st = bpf_map_lookup_elem(&policy_stats, &policy_id);

	if (entry_flows)
		__sync_fetch_and_add(entry_flows, 1);
	if (!st)
		return;
	st->flows[dir & 1]++;
	if (!entry_flows)
		st->any_flows[dir & 1]++;
}

/*
 * pv_allow applies ep's rules of direction dir to a peer (address, its
 * identity) and the port of the flow's responder. Returns 0 or the drop
 * reason. count: a new flow, counted on the entry that allowed it.
 */
static __always_inline __u32 pv_allow(const struct pv_endpoint *ep, __u8 dir, __be32 peer, __u32 peer_id, __u8 proto,
				      __be16 port, int count)
{
	__u32 pid = ep->policy_id;
	struct pv_policy_endpoint *pe = bpf_map_lookup_elem(&policy_endpoints, &pid);
	struct pv_policy_key key = { .endpoint = pid, .peer = peer_id, .dir = dir };
	struct pv_cidr_key ck = { .prefixlen = 96, .endpoint = pid, .dir = dir, .addr = peer };
	struct pv_policy *pol;
	__u32 set;

	dir &= 1;
	/* Kubernetes: a pod's own node always reaches it (kubelet probes). */
	if (dir == PV_DIR_INGRESS && peer_id == PV_ID_HOST)
		return 0;
	if (!pe)
		return PV_DROP_POLICY_INGRESS + dir;
	if (pe->flags & (dir ? PV_POLICY_F_EGRESS_PENDING : PV_POLICY_F_INGRESS_PENDING))
		return PV_DROP_POLICY_PENDING_INGRESS + dir;
	if (!pv_is_port_proto(proto))
		port = 0;
	pol = bpf_map_lookup_elem(&policy, &key);
	set = pol ? pol->ports : (dir ? pe->egress_ports : pe->ingress_ports);
	if (pv_ports_allow(set, proto, port)) {
		if (count)
			pv_count_flow(pid, dir, pol ? &pol->flows : NULL);
		return 0;
	}
	if (!(pe->flags & (dir ? PV_POLICY_F_EGRESS_CIDR : PV_POLICY_F_INGRESS_CIDR)))
		return PV_DROP_POLICY_INGRESS + dir;
	pol = bpf_map_lookup_elem(&policy_cidr, &ck);
	if (!pol)
		return PV_DROP_POLICY_INGRESS + dir;
	if (pv_ports_allow(pol->ports, proto, port)) {
		if (count)
			pv_count_flow(pid, dir, &pol->flows);
		return 0;
	}
	if (pv_ports_allow(pol->except_ports, proto, port))
		return PV_DROP_IPBLOCK_EXCEPT_INGRESS + dir;
	return PV_DROP_POLICY_INGRESS + dir;
}

/*
 * pv_eval judges a flow opened by init towards resp's port: init's egress
 * and resp's ingress, each where that endpoint is local (non-NULL) and
 * isolated in that direction. Egress to a Service IP is not judged: the
 * stack's DNAT has not chosen the pod yet. *denier is the policy_id of the
 * endpoint whose rules refused.
 */
static __always_inline __u32 pv_eval(const struct pv_policy_config *pc, const struct pv_endpoint *init, __be32 init_ip,
				     const struct pv_endpoint *resp, __be32 resp_ip, __u32 host_side, __u8 proto,
				     __be16 port, int count, __u32 *denier)
{
	__u32 r;

	if (init && (init->flags & PV_EP_F_POLICY_EGRESS) && !pv_service_ip(pc, resp_ip)) {
		r = pv_allow(init, PV_DIR_EGRESS, resp_ip, pv_peer_id(resp_ip, host_side == 2), proto, port, count);
		if (r) {
			*denier = init->policy_id;
			return r;
		}
	}
	if (resp && (resp->flags & PV_EP_F_POLICY_INGRESS)) {
		r = pv_allow(resp, PV_DIR_INGRESS, init_ip, pv_peer_id(init_ip, host_side == 1), proto, port, count);
		if (r) {
			*denier = resp->policy_id;
			return r;
		}
	}
	return 0;
}

static __always_inline void pv_count_denied(struct __sk_buff *skb, __u32 policy_id, __u32 reason)
{
	struct pv_policy_stats *st = bpf_map_lookup_elem(&policy_stats, &policy_id);
	/* Reasons come in (ingress, egress) pairs. */
	__u32 dir = (reason - PV_DROP_POLICY_INGRESS) & 1;

	if (st) {
		st->denied[dir]++;
		st->denied_bytes[dir] += skb->len;
	}
}

/*
 * pv_judge decides a packet: src and dst are the local endpoints holding
 * its source and destination address whose rules this hook applies (NULL:
 * not local, or not this hook's to judge); host: the source is this node
 * itself. Returns 0 to pass, or the drop reason (counted for the endpoint).
 * Inlined: a call costs more than the copies (a few ns per packet).
 */
static __always_inline __u32 pv_judge(struct __sk_buff *skb, struct iphdr *ip, const struct pv_endpoint *src,
				 const struct pv_endpoint *dst, __u32 host)
{
	struct pv_policy_config *pc = pv_policy_config();
	__u32 gen = pc ? pc->gen : 0;
	struct pv_tuple t = {};
	struct pv_flow_key k = {};
	struct pv_flow *f;
	__u32 denier = 0, denier2 = 0, r, r2;
	__u64 now = bpf_ktime_get_coarse_ns();
	__u8 side, orig;

	pv_parse_tuple(skb, ip, &t);
	if (t.kind == PV_TUPLE_ICMP_ERROR) {
		/* Related to a flow this node passed: it passes too. */
		pv_flow_key(&t, &k);
		f = bpf_map_lookup_elem(&flows, &k);
		if (f && f->expires_ns > now)
			return 0;
		/* About a packet the pod sent to a Service IP (kube-proxy's
		 * reject of a Service without endpoints): its egress there is
		 * never judged, nor is this. */
		if (dst && t.saddr == ip->daddr && pv_service_ip(pc, t.daddr))
			return 0;
		/* Otherwise it is an ICMP packet like any other: judged as a
		 * new flow, but never entered. */
		r = pv_eval(pc, src, ip->saddr, dst, ip->daddr, host, IPPROTO_ICMP, 0, 0, &denier);
		goto out;
	}
	if (t.kind == PV_TUPLE_NO_PORTS) {
		/* Only a rule for every port can allow what shows none. */
		r = pv_eval(pc, src, t.saddr, dst, t.daddr, host, t.proto, 0, 0, &denier);
		goto out;
	}

	side = pv_flow_key(&t, &k);
	f = bpf_map_lookup_elem(&flows, &k);
	if (f && f->expires_ns > now) {
		orig = side == ((f->flags & PV_FLOW_F_INIT_1) ? 1 : 0);
		/* A SYN against the flow's direction, or on a closing flow, opens
		 * a new connection on the same ports: judged afresh. */
		if (t.proto == IPPROTO_TCP && (t.tcp_flags & (PV_TCP_SYN | PV_TCP_ACK)) == PV_TCP_SYN &&
		    (!orig || (f->flags & (PV_FLOW_F_RST | PV_FLOW_F_FIN_0 | PV_FLOW_F_FIN_1))))
			goto open;
		if (f->gen != gen) {
			/* The rules changed since: the flow is judged again, as its
			 * opener sent it. */
			if (orig)
				r = pv_eval(pc, src, t.saddr, dst, t.daddr, host, t.proto, t.dport, 0, &denier);
			else
				r = pv_eval(pc, dst, t.daddr, src, t.saddr, host ? 2 : 0, t.proto, t.sport, 0, &denier);
			if (r) {
				bpf_map_delete_elem(&flows, &k);
				goto out;
			}
			f->gen = gen;
		}
		pv_flow_seen(f, &t, side, orig, now);
		pv_frag_note(ip, &t);
		return 0;
	}

open:
	r = pv_eval(pc, src, t.saddr, dst, t.daddr, host, t.proto, t.dport, 1, &denier);
	if (r == 0) {
		pv_flow_open(&k, &t, side, 0, gen, now);
		pv_frag_note(ip, &t);
		return 0;
	}
	/* A TCP segment that opens nothing, of a flow the table lost (expired,
	 * evicted, or older than the table): passed if the flow, opened by the
	 * other side, would be allowed. A SYN never is: the opener is known. */
	if (t.proto == IPPROTO_TCP && !(t.tcp_flags & PV_TCP_SYN)) {
		r2 = pv_eval(pc, dst, t.daddr, src, t.saddr, host ? 2 : 0, t.proto, t.sport, 0, &denier2);
		if (r2 == 0) {
			pv_flow_open(&k, &t, side ^ 1, PV_FLOW_F_REPLIED, gen, now);
			return 0;
		}
	}
out:
	if (r)
		pv_count_denied(skb, denier, r);
	return r;
}

/* pv_policy_from_pod: src sent the packet to dst (a local endpoint or NULL).
 * *judged is set when the source's egress was judged here. */
static __always_inline __u32 pv_policy_from_pod(struct __sk_buff *skb, struct iphdr *ip, const struct pv_endpoint *src,
						const struct pv_endpoint *dst, int *judged)
{
	struct pv_policy_config *pc;

	if (!(src->flags & PV_EP_F_POLICY) && !(dst && (dst->flags & PV_EP_F_POLICY)))
		return 0;
	pc = pv_policy_config();
	if (!dst && pv_service_ip(pc, ip->daddr))
		return 0;
	*judged = (src->flags & PV_EP_F_POLICY_EGRESS) != 0;
	return pv_judge(skb, ip, src, dst, 0);
}

/* pv_policy_from_nic: a packet from the VNet to dst, a local endpoint. */
static __always_inline __u32 pv_policy_from_nic(struct __sk_buff *skb, struct iphdr *ip, const struct pv_endpoint *dst)
{
	if (!(dst->flags & PV_EP_F_POLICY))
		return 0;
	return pv_judge(skb, ip, NULL, dst, 0);
}

/* pv_policy_translated: a packet a per-packet Service translation just
 * addressed to its backend. src: the local endpoint that sent it (its
 * egress), dst: the backend if it is local (its ingress). */
static __always_inline __u32 pv_policy_translated(struct __sk_buff *skb, struct iphdr *ip, const struct pv_endpoint *src,
						  const struct pv_endpoint *dst)
{
	if (!(src && (src->flags & PV_EP_F_POLICY)) && !(dst && (dst->flags & PV_EP_F_POLICY)))
		return 0;
	return pv_judge(skb, ip, src, dst, 0);
}

/* pv_service_reply: a packet from a Service IP to a pod is the stack's
 * translated answer on a connection the pod opened (a Service IP opens
 * none), when conntrack holds that connection, DNAT'd, with the pod as its
 * source. */
static __always_inline int pv_service_reply(struct __sk_buff *skb, struct iphdr *ip)
{
	struct pv_ports *ports = pv_l4_ports(skb, ip);

	if (!ports)
		return 0;
	return (pv_ct_status(skb, ip->daddr, ip->saddr, ports->dport, ports->sport, ip->protocol, 0) & IPS_DST_NAT) != 0;
}

#endif /* PV_POLICY_H */
