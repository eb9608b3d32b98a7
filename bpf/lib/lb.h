/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Services: the frontend of a destination and the backend a new connection
 * gets. Both the socket hooks (lib/sock.h: once per socket) and the
 * per-packet path (lib/nat.h: once per flow) choose here, so a Service
 * behaves the same whichever way it is reached.
 *
 * Choice: a random slot (TCP; UDP at the socket: the socket's cookie, so one
 * socket keeps one backend), or the client's affinity entry. Stable per
 * connection because a connection is translated once; Maglev's consistent
 * table would buy stability only where the translation state is lost, at a
 * table per Service (docs/design.md).
 */
#ifndef PV_LB_H
#define PV_LB_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>

#include "podvnet.h"
#include "svc_maps.h"

#define PV_NSEC_PER_SEC 1000000000ULL

/* pv_svc_lookup returns the frontend of (addr, port, proto) in scope: the
 * address's own, or on a node IP the NodePort's (key addr 0). */
static __always_inline struct pv_svc *pv_svc_lookup(__be32 addr, __be16 port, __u8 proto, __u8 scope)
{
	struct pv_svc_key key = { .addr = addr, .port = port, .proto = proto, .scope = scope };
	struct pv_svc *svc;

	svc = bpf_map_lookup_elem(&svc_frontends, &key);
	if (svc)
		return svc;
	if (!bpf_map_lookup_elem(&svc_nodes, &addr))
		return NULL;
	key.addr = 0;
	svc = bpf_map_lookup_elem(&svc_frontends, &key);
	if (svc && !(svc->flags & PV_SVC_F_NODEPORT))
		return NULL;
	return svc;
}

/* pv_svc_pick returns the backend id for a new connection of client (a
 * netns cookie or an IPv4 address) to svc, whose count is not 0: the
 * client's affinity entry while it is fresh and its backend still serves
 * the Service, else the slot hash selects. 0: none (a slot the agent has
 * not written, which it never leaves readable). */
static __always_inline __u32 pv_svc_pick(const struct pv_svc *svc, __u64 client, __u32 hash)
{
	struct pv_svc_slot_key sk = { .id = svc->id };
	struct pv_affinity_key ak = {};
	struct pv_affinity_match_key mk = {};
	struct pv_affinity *aff, fresh = {};
	__u64 now = 0;
	__u32 *be;

	if (svc->flags & PV_SVC_F_AFFINITY) {
		ak.client = client;
		ak.id = svc->id;
		now = bpf_ktime_get_ns();
		aff = bpf_map_lookup_elem(&svc_affinity, &ak);
		if (aff && now - aff->last_used_ns <= (__u64)svc->affinity_timeout * PV_NSEC_PER_SEC) {
			mk.id = svc->id;
			mk.backend_id = aff->backend_id;
			if (bpf_map_lookup_elem(&svc_affinity_match, &mk)) {
				/* As kube-proxy: each new connection restarts the timer. */
				aff->last_used_ns = now;
				return aff->backend_id;
			}
		}
	}
	sk.slot = hash % svc->count + 1;
	be = bpf_map_lookup_elem(&svc_slots, &sk);
	if (!be)
		return 0;
	if (svc->flags & PV_SVC_F_AFFINITY) {
		fresh.last_used_ns = now;
		fresh.backend_id = *be;
		bpf_map_update_elem(&svc_affinity, &ak, &fresh, BPF_ANY);
	}
	return *be;
}

/* pv_svc_backend returns backend id, counting the connection it is given. */
static __always_inline struct pv_backend *pv_svc_backend(__u32 id)
{
	struct pv_backend *be;
	__u64 *conns;

	if (id == 0)
		return NULL;
	be = bpf_map_lookup_elem(&svc_backends, &id);
	if (!be)
		return NULL;
	conns = bpf_map_lookup_elem(&svc_backend_conns, &id);
	if (conns)
		__sync_fetch_and_add(conns, 1);
	return be;
}

static __always_inline struct pv_svc_config *pv_svc_config(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&svc_config, &zero);
}

#endif /* PV_LB_H */
