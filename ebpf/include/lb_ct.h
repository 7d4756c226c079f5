/* Connection tracking of the packet programs: how long an entry lives, refreshing it when a
 * packet of its flow passes, and writing a new flow's two entries. The agent deletes expired
 * entries (lb::datapath::ct_gc), a flow's two together.
 */
#ifndef LB_CT_H
#define LB_CT_H

#include "lb_pkt.h"
#include "lb_pkt_maps.h"

#define LB_CT_CLOSE_SECS 10     /* after a TCP FIN or RST */
#define LB_CT_SYN_SECS 60       /* a TCP packet with SYN: the handshake */
#define LB_CT_TCP_SECS 21600    /* an established TCP flow */
#define LB_CT_UDP_SECS 60       /* a UDP flow */

/* The kernel tick, calibrated by the agent (lb::host::jiffies): jiffies per second
 * (CONFIG_HZ), and jiffies when CLOCK_MONOTONIC read 0. 0 Hz: not calibrated, a helper clock
 * serves instead. bpf_jiffies64 is one load on 64-bit JITs (the verifier writes it in place of
 * the call), where the clock helpers are calls, with return thunks as costly as a map lookup. */
const volatile __u32 cfg_jiffies_hz = 0;
const volatile __u64 cfg_jiffies_at_zero = 0;
/* Whether bpf_ktime_get_coarse_ns exists (Linux 5.11; the agent probes it). Where it does
 * not, the call below is dead code the verifier never visits. */
const volatile __u8 cfg_coarse_clock = 0;

/* CLOCK_MONOTONIC seconds, the clock of lb_ct_entry.expires: the tick where the agent
 * calibrated it, else the coarse clock (the last tick's time) where there is one, as seconds
 * do not need the clock source's read. */
static __always_inline __u32 lb_ct_now(void)
{
	__u64 ns;

	if (cfg_jiffies_hz)
		return (bpf_jiffies64() - cfg_jiffies_at_zero) / cfg_jiffies_hz;
	ns = cfg_coarse_clock ? bpf_ktime_get_coarse_ns() : bpf_ktime_get_ns();
	return ns / LB_NSEC_PER_SEC;
}

/* Whether the packet ends its TCP flow. */
static __always_inline int lb_ct_closes(const struct lb_flow *flow)
{
	return flow->key.proto == IPPROTO_TCP && (flow->tcp_flags & (LB_TCP_FIN | LB_TCP_RST));
}

/* How long an entry lives after this packet, unless the flow is closing. */
static __always_inline __u32 lb_ct_lifetime(const struct lb_flow *flow)
{
	if (flow->key.proto != IPPROTO_TCP)
		return LB_CT_UDP_SECS;
	if (lb_ct_closes(flow))
		return LB_CT_CLOSE_SECS;
	if (flow->tcp_flags & LB_TCP_SYN)
		return LB_CT_SYN_SECS;
	return LB_CT_TCP_SECS;
}

/* The key of the entry's twin: the entry's rewritten tuple, reversed. */
static __always_inline void lb_ct_twin_key(const struct lb_ct_entry *entry, __u8 proto,
					   struct lb_ct_key *twin)
{
	twin->saddr = entry->daddr;
	twin->daddr = entry->saddr;
	twin->sport = entry->dport;
	twin->dport = entry->sport;
	twin->proto = proto;
}

/* A packet of the entry's flow passed: extend its life. The first FIN or RST closes both
 * directions' entries, so the flow goes after LB_CT_CLOSE_SECS whichever side saw it. */
static __always_inline void lb_ct_refresh(struct lb_ct_entry *entry, const struct lb_flow *flow,
					  __u32 now)
{
	int was_closing = entry->flags & LB_CT_CLOSING;
	int closes = lb_ct_closes(flow);
	__u32 expires = now + (was_closing || closes ? LB_CT_CLOSE_SECS : lb_ct_lifetime(flow));
	struct lb_ct_key twin_key = {};
	struct lb_ct_entry *twin;

	if (entry->expires != expires)
		entry->expires = expires;
	if (!closes || was_closing)
		return;
	entry->flags |= LB_CT_CLOSING;
	lb_ct_twin_key(entry, flow->key.proto, &twin_key);
	twin = bpf_map_lookup_elem(&lb_ct_v2, &twin_key);
	if (twin) {
		twin->flags |= LB_CT_CLOSING;
		twin->expires = now + LB_CT_CLOSE_SECS;
	}
}

/* A new entry's flags and lifetime, from the packet that creates it. */
static __always_inline void lb_ct_init(struct lb_ct_entry *entry, const struct lb_flow *flow,
				       __u32 now)
{
	entry->expires = now + lb_ct_lifetime(flow);
	if (lb_ct_closes(flow))
		entry->flags |= LB_CT_CLOSING;
}

/* Whether an entry applies at ingress: all but the replies of local backends, which leave
 * through egress. */
static __always_inline int lb_ct_is_local_reply(const struct lb_ct_entry *entry)
{
	return (entry->flags & (LB_CT_REPLY | LB_CT_SNAT)) == LB_CT_REPLY;
}

#endif /* LB_CT_H */
