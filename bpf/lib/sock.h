/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Services at the socket (cgroup v2 sock_addr hooks, attached to the pods'
 * cgroup): a pod's connect() or sendto() to a Service address is rewritten
 * to a backend before any packet exists, so the connection is a plain
 * pod-to-pod one on the fast path, with no NAT state per packet. recvmsg and
 * getpeername translate back, so the application still sees the Service:
 * resolvers drop DNS answers from any other source than the server asked.
 */
#ifndef PV_SOCK_H
#define PV_SOCK_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "podvnet.h"
#include "maps.h"
#include "svc_maps.h"
#include "lb.h"

#define PV_ECONNREFUSED 111

/* sock_addr programs: 1 lets the call go on, 0 fails it. */
#define PV_SOCK_ALLOW 1
#define PV_SOCK_REJECT 0

/* pv_sock_report writes an event for a socket call (no packet yet: the
 * frontend is the destination, nothing else is known). */
static __noinline void pv_sock_report(const struct pv_monitor *mon, __u32 reason, __be32 daddr, __be16 dport, __u8 proto)
{
	struct pv_event ev = {};
	__u64 now = bpf_ktime_get_ns();

	if (mon->deadline_ns < now || (mon->ip && mon->ip != daddr))
		return;
	ev.ts_ns = now;
	ev.reason = reason;
	ev.daddr = daddr;
	ev.dport = dport;
	ev.proto = proto;
	ev.eth_proto = bpf_htons(ETH_P_IP);
	ev.hook = PV_HOOK_SOCK;
	bpf_ringbuf_output(&events, &ev, sizeof(ev), 0);
}

/* pv_sock_count counts a socket call under reason (bytes stay 0) and
 * reports it to a live monitor: a refusal as a drop, a translation as a
 * trace. */
static __always_inline void pv_sock_count(__u32 reason, int refused, __be32 daddr, __be16 dport, __u8 proto)
{
	__u32 zero = 0;
	struct pv_counter *c = bpf_map_lookup_elem(&counters, &reason);
	struct pv_monitor *mon;

	if (c)
		c->packets++;
	mon = bpf_map_lookup_elem(&monitor, &zero);
	if (mon && mon->deadline_ns && (mon->flags & (refused ? PV_MON_F_DROPS : PV_MON_F_TRACE)))
		pv_sock_report(mon, reason, daddr, dport, proto);
}

/* pv_sock_backend finds the backend a connect() or sendto() to (addr,
 * port) goes to: 1 with *out set to translate, 0 for a destination that is
 * no Service's, -1 to refuse the call with ECONNREFUSED (a Service without
 * endpoints, as kube-proxy's reject makes a client see). The reverse for
 * recvmsg and getpeername is recorded. */
static __always_inline int pv_sock_backend(struct bpf_sock_addr *ctx, __be32 addr, __be16 port, int udp_only,
					   struct pv_backend **out)
{
	struct pv_sock_key rk = {};
	struct pv_sock_revnat rv = {};
	struct pv_config *cfg;
	struct pv_backend *be;
	struct pv_svc *svc;
	__u8 proto = ctx->protocol;
	__u64 cookie;
	__u32 hash;

	if (proto != IPPROTO_UDP && (udp_only || proto != IPPROTO_TCP))
		return 0;
	cfg = pv_config();
	if (!cfg || !(cfg->flags & PV_CFG_F_SVC))
		return 0;
	svc = pv_svc_lookup(addr, port, proto, PV_SVC_SCOPE_INT);
	if (!svc)
		return 0;
	if (svc->count == 0) {
		pv_sock_count(PV_SVC_SOCK_NO_BACKEND, 1, addr, port, proto);
		bpf_set_retval(-PV_ECONNREFUSED);
		return -1;
	}
	cookie = bpf_get_socket_cookie(ctx);
	/* prandom per connection; for UDP the cookie, so that every datagram
	 * of one socket (sendto after sendto) reaches the same backend. */
	hash = proto == IPPROTO_UDP ? (__u32)cookie : bpf_get_prandom_u32();
	be = pv_svc_backend(pv_svc_pick(svc, bpf_get_netns_cookie(ctx), hash));
	if (!be) {
		pv_sock_count(PV_SVC_SOCK_NO_BACKEND, 1, addr, port, proto);
		bpf_set_retval(-PV_ECONNREFUSED);
		return -1;
	}
	rk.cookie = cookie;
	rk.addr = be->addr;
	rk.port = be->port;
	rv.addr = addr;
	rv.port = port;
	rv.id = svc->id;
	bpf_map_update_elem(&svc_sock_revnat, &rk, &rv, BPF_ANY);
	pv_sock_count(PV_SVC_SOCK_XLATE, 0, addr, port, proto);
	*out = be;
	return 1;
}

/* pv_sock_xlate rewrites the destination of an IPv4 socket's connect() or
 * sendto() to a Service frontend into one of its backends. */
static __always_inline int pv_sock_xlate(struct bpf_sock_addr *ctx, int udp_only)
{
	struct pv_backend *be = NULL;
	int ret = pv_sock_backend(ctx, ctx->user_ip4, (__be16)ctx->user_port, udp_only, &be);

	if (ret < 0)
		return PV_SOCK_REJECT;
	if (ret > 0 && be) {
		ctx->user_ip4 = be->addr;
		ctx->user_port = (__u32)be->port;
	}
	return PV_SOCK_ALLOW;
}

/* pv_v4_mapped reports whether an IPv6 socket address is an IPv4 one
 * (::ffff:a.b.c.d): dual-stack sockets reach IPv4 Services that way, and
 * the kernel runs the IPv6 hooks for them. */
static __always_inline int pv_v4_mapped(struct bpf_sock_addr *ctx)
{
	return ctx->user_ip6[0] == 0 && ctx->user_ip6[1] == 0 && ctx->user_ip6[2] == bpf_htonl(0xffff);
}

/* pv_sock_xlate6 is pv_sock_xlate for an IPv6 socket's IPv4-mapped
 * destination; other IPv6 destinations pass (podvnet is IPv4-only). */
static __always_inline int pv_sock_xlate6(struct bpf_sock_addr *ctx, int udp_only)
{
	struct pv_backend *be = NULL;
	int ret;

	if (!pv_v4_mapped(ctx))
		return PV_SOCK_ALLOW;
	ret = pv_sock_backend(ctx, ctx->user_ip6[3], (__be16)ctx->user_port, udp_only, &be);
	if (ret < 0)
		return PV_SOCK_REJECT;
	if (ret > 0 && be) {
		ctx->user_ip6[3] = be->addr;
		ctx->user_port = (__u32)be->port;
	}
	return PV_SOCK_ALLOW;
}

/* pv_sock_frontend returns the frontend a socket sent (addr, port) to,
 * where it was translated, or NULL. */
static __always_inline struct pv_sock_revnat *pv_sock_frontend(struct bpf_sock_addr *ctx, __be32 addr, __be16 port)
{
	struct pv_sock_key rk = {};

	if (ctx->protocol != IPPROTO_UDP && ctx->protocol != IPPROTO_TCP)
		return NULL;
	rk.cookie = bpf_get_socket_cookie(ctx);
	rk.addr = addr;
	rk.port = port;
	return bpf_map_lookup_elem(&svc_sock_revnat, &rk);
}

/* pv_sock_revnat shows the Service again where the socket would show the
 * backend: the source of a received datagram, the peer's address. */
static __always_inline int pv_sock_revnat(struct bpf_sock_addr *ctx)
{
	struct pv_sock_revnat *rv = pv_sock_frontend(ctx, ctx->user_ip4, (__be16)ctx->user_port);

	if (rv) {
		ctx->user_ip4 = rv->addr;
		ctx->user_port = (__u32)rv->port;
	}
	return PV_SOCK_ALLOW;
}

/* pv_sock_revnat6 is pv_sock_revnat for an IPv6 socket's IPv4-mapped peer. */
static __always_inline int pv_sock_revnat6(struct bpf_sock_addr *ctx)
{
	struct pv_sock_revnat *rv;

	if (!pv_v4_mapped(ctx))
		return PV_SOCK_ALLOW;
	rv = pv_sock_frontend(ctx, ctx->user_ip6[3], (__be16)ctx->user_port);
	if (rv) {
		ctx->user_ip6[3] = rv->addr;
		ctx->user_port = (__u32)rv->port;
	}
	return PV_SOCK_ALLOW;
}

#endif /* PV_SOCK_H */
