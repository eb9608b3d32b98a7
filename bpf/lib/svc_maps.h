/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The Services' maps (lib/lb.h, lib/nat.h, lib/sock.h), shared by every program. */
#ifndef PV_SVC_MAPS_H
#define PV_SVC_MAPS_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "podvnet.h"

/* 5,000 Services with a ClusterIP, a NodePort in two scopes and a few
 * backends each fit with room; the agent refuses to grow past them. */
#define PV_MAX_SVC_FRONTENDS 65536
#define PV_MAX_SVC_SLOTS 131072
#define PV_MAX_BACKENDS 65536
#define PV_MAX_AFFINITY 65536
#define PV_MAX_SOCK_REVNAT 131072
#define PV_MAX_NAT 131072
#define PV_MAX_NODES 4096
#define PV_PORT_FILTER_SLOTS 2048 /* 65536 ports / 64 bits, for TCP and UDP */

/* What the agent writes changes only with the cluster: no preallocation,
 * memory follows the Services there are. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PV_MAX_SVC_FRONTENDS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct pv_svc_key);
	__type(value, struct pv_svc);
} svc_frontends SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PV_MAX_SVC_SLOTS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct pv_svc_slot_key);
	__type(value, __u32); /* backend id */
} svc_slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PV_MAX_BACKENDS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32); /* backend id */
	__type(value, struct pv_backend);
} svc_backends SEC(".maps");

/* Connections (sockets and flows) each backend was given, for `debug
 * services`; indexed by backend id, reset by the agent when it reuses one. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PV_MAX_BACKENDS);
	__type(key, __u32);
	__type(value, __u64);
} svc_backend_conns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, PV_MAX_AFFINITY);
	__type(key, struct pv_affinity_key);
	__type(value, struct pv_affinity);
} svc_affinity SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PV_MAX_SVC_SLOTS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct pv_affinity_match_key);
	__type(value, __u8);
} svc_affinity_match SEC(".maps");

/* Sockets' reverse translations; an LRU, so closed sockets' entries age
 * out without the agent. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, PV_MAX_SOCK_REVNAT);
	__type(key, struct pv_sock_key);
	__type(value, struct pv_sock_revnat);
} svc_sock_revnat SEC(".maps");

/* Flows translated per packet, both directions; pinned, so established
 * flows outlive an agent restart. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, PV_MAX_NAT);
	__type(key, struct pv_nat_key);
	__type(value, struct pv_nat);
} svc_nat SEC(".maps");

/* The cluster's node IPs (value: 1 for this node): a NodePort answers on each. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PV_MAX_NODES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __be32);
	__type(value, __u32);
} svc_nodes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pv_svc_config);
} svc_config SEC(".maps");

/* An array, so that the lookup on the fast path is inlined, not a call. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PV_PORT_FILTER_SLOTS);
	__type(key, __u32);
	__type(value, struct pv_port_bits);
} svc_ports SEC(".maps");

/* pv_port_bits returns the filter word of a source port, or NULL for a
 * protocol the filter does not cover. */
static __always_inline struct pv_port_bits *pv_port_bits(__u8 proto, __be16 port, __u64 *bit)
{
	__u32 p = bpf_ntohs(port);
	__u32 slot = p >> 6;

	if (proto == IPPROTO_UDP)
		slot += PV_PORTS_UDP;
	else if (proto != IPPROTO_TCP)
		return NULL;
	*bit = 1ULL << (p & 63);
	return bpf_map_lookup_elem(&svc_ports, &slot);
}

#endif /* PV_SVC_MAPS_H */
