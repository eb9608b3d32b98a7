/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The maps every program shares, and the lookups of their entries. */
#ifndef PV_MAPS_H
#define PV_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "podvnet.h"

#define PV_MAX_ENDPOINTS 1024
#define PV_MAX_NOSNAT 256

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
	__uint(max_entries, PV_REASON_MAX);
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
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pv_monitor);
} monitor SEC(".maps");

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
