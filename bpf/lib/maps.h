/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The maps every program shares, and the lookups of their entries. */
#ifndef PV_MAPS_H
#define PV_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "podvnet.h"

#define PV_MAX_ENDPOINTS 1024
#define PV_MAX_NOSNAT 256
#define PV_MAX_BLOCKED 256
#define PV_BLOCKED_FILTER_SLOTS 256
/* NetworkPolicy (lib/policy.h, lib/flow.h). */
#define PV_MAX_IPCACHE 65536     /* pod IPs of the cluster and node IPs */
#define PV_MAX_POLICY 262144     /* (endpoint, direction, peer identity) rules of this node */
#define PV_MAX_POLICY_CIDR 16384 /* ipBlock prefixes of this node's endpoints */
#define PV_MAX_POLICY_PORTS 65536 /* entries of every port set */
#define PV_MAX_FLOWS 131072      /* flows judged by policy, LRU */
#define PV_MAX_FRAGS 8192        /* fragmented datagrams in flight, LRU */

/* The counters array is sized past the reasons there are, so that a release
 * adding one still adopts the pinned counters (a different max_entries
 * would be refused as an incompatible layout). */
#define PV_COUNTER_SLOTS 64
_Static_assert(PV_REASON_MAX <= PV_COUNTER_SLOTS, "enum pv_reason outgrew the counters map");

/*
 * One object holds every program, so each map below exists once and all
 * programs use it. The loader pins them under <bpffs-root>/maps by these
 * names (pkg/maps.Names) and adopts what is pinned there.
 */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PV_MAX_ENDPOINTS);
	__type(key, struct pv_endpoint_key);
	__type(value, struct pv_endpoint);
} endpoints SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pv_config);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PV_COUNTER_SLOTS);
	__type(key, __u32); /* enum pv_reason: array keys must be plain ints */
	__type(value, struct pv_counter);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, PV_MAX_NOSNAT);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct pv_nosnat_key);
	__type(value, __u8);
} nosnat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PV_MAX_BLOCKED);
	__type(key, struct pv_blocked_key);
	__type(value, struct pv_blocked);
} blocked SEC(".maps");

/* The blocked map's filter (lib/platform.h): slot = the XOR of the four
 * octets of a blocked address, bit (port % 64) set for each of its ports
 * (bit 0 for the guard). A clear bit proves a packet is not blocked for
 * the price of an array lookup, which the verifier inlines; a hash lookup
 * is a call. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PV_BLOCKED_FILTER_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} blocked_filter SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pv_monitor);
} monitor SEC(".maps");

/* NetworkPolicy: lib/policy.h reads them, the agent's policy engine
 * writes them (pkg/maps/policy.go). */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PV_MAX_IPCACHE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct pv_ipcache_key);
	__type(value, struct pv_identity);
} ipcache SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PV_MAX_POLICY);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct pv_policy_key);
	__type(value, struct pv_policy);
} policy SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, PV_MAX_POLICY_CIDR);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct pv_cidr_key);
	__type(value, struct pv_policy);
} policy_cidr SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, PV_MAX_POLICY_PORTS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct pv_ports_key);
	__type(value, __u32);
} policy_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PV_MAX_ENDPOINTS);
	__type(key, __u32);
	__type(value, struct pv_policy_endpoint);
} policy_endpoints SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PV_MAX_ENDPOINTS);
	__type(key, __u32);
	__type(value, struct pv_policy_stats);
} policy_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pv_policy_config);
} policy_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, PV_MAX_FLOWS);
	__type(key, struct pv_flow_key);
	__type(value, struct pv_flow);
} flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, PV_MAX_FRAGS);
	__type(key, struct pv_frag_key);
	__type(value, struct pv_frag);
} frags SEC(".maps");

static __always_inline struct pv_config *pv_config(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&config, &zero);
}

static __always_inline struct pv_endpoint *pv_endpoint(__be32 ip)
{
	struct pv_endpoint_key key = { .ip = ip };

	return bpf_map_lookup_elem(&endpoints, &key);
}

#endif /* PV_MAPS_H */
