/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Every verdict goes through pv_count: counted, and reported to a live monitor. */
#ifndef PV_VERDICT_H
#define PV_VERDICT_H

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#include "podvnet.h"
#include "maps.h"
#include "parse.h"

/* pv_report writes an event for the monitor, if one listens and the packet
 * passes its filter. Only reached while a lease is held; not inlined: one
 * copy serves every verdict of a program. */
static __noinline void pv_report(struct __sk_buff *skb, const struct pv_monitor *mon, enum pv_hook hook,
				 __u32 reason)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct pv_event ev = {};
	__u64 now = bpf_ktime_get_ns();

	if (mon->deadline_ns < now)
		return;
	ev.reason = reason;
	ev.ifindex = skb->ifindex;
	ev.len = skb->len;
	ev.hook = hook;
	/* Parsed again, and leniently: a malformed frame's event still shows
	 * what addresses it carries. */
	if ((void *)(eth + 1) <= data_end) {
		ev.eth_proto = eth->h_proto;
		if (eth->h_proto == bpf_htons(ETH_P_IP)) {
			struct iphdr *ip = (void *)(eth + 1);

			if ((void *)(ip + 1) <= data_end) {
				struct pv_ports *ports = pv_l4_ports(skb, ip);

				ev.saddr = ip->saddr;
				ev.daddr = ip->daddr;
				ev.proto = ip->protocol;
				if (ports) {
					ev.sport = ports->sport;
					ev.dport = ports->dport;
				}
			}
		} else if (eth->h_proto == bpf_htons(ETH_P_ARP)) {
			struct pv_arp *arp = (void *)(eth + 1);

			if ((void *)(arp + 1) <= data_end) {
				__builtin_memcpy(&ev.saddr, arp->spa, 4);
				__builtin_memcpy(&ev.daddr, arp->tpa, 4);
			}
		}
	}
	if (mon->ip && ev.saddr != mon->ip && ev.daddr != mon->ip)
		return;
	ev.ts_ns = now;
	bpf_ringbuf_output(&events, &ev, sizeof(ev), 0);
}

/* pv_count counts a packet under reason and returns verdict, the program's
 * answer to tc. hook names the program for the monitor. */
static __always_inline int pv_count(struct __sk_buff *skb, enum pv_hook hook, enum pv_reason reason, int verdict)
{
	__u32 zero = 0;
	struct pv_counter *c = bpf_map_lookup_elem(&counters, &reason);
	struct pv_monitor *mon;

	if (c) {
		c->packets++;
		c->bytes += skb->len;
	}
	mon = bpf_map_lookup_elem(&monitor, &zero);
	if (mon && mon->deadline_ns &&
	    (mon->flags & (verdict == TC_ACT_SHOT ? PV_MON_F_DROPS : PV_MON_F_TRACE)))
		pv_report(skb, mon, hook, reason);
	return verdict;
}

#endif /* PV_VERDICT_H */
