/* Forwarding by the kernel's FIB: where a backend is (this node, or another one behind a
 * NodePort device), and sending a packet the program translated out of the right device to the
 * right neighbour itself, as the kernel's forwarding would.
 */
#ifndef LB_FIB_H
#define LB_FIB_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "lb_pkt.h"
#include "lb_pkt_maps.h"

#define LB_FIB_AF_INET 2
#define LB_FIB_AF_INET6 10

/* bpf_fib_lookup for a packet of flow's family and protocol from src:sport to dst:dport, as if
 * it entered the device the program runs on. Returns BPF_FIB_LKUP_RET_*; *params holds the
 * result. */
static __always_inline int lb_fib_lookup(lb_ctx_t *ctx, const struct lb_flow *flow,
					 const union lb_addr *src, __be16 sport,
					 const union lb_addr *dst, __be16 dport,
					 struct bpf_fib_lookup *params)
{
	params->family = flow->v6 ? LB_FIB_AF_INET6 : LB_FIB_AF_INET;
	params->l4_protocol = flow->key.proto;
	params->sport = sport;
	params->dport = dport;
	params->ifindex = ctx_ifindex(ctx);
	if (flow->v6) {
		__builtin_memcpy(params->ipv6_src, src->bytes, 16);
		__builtin_memcpy(params->ipv6_dst, dst->bytes, 16);
	} else {
		params->ipv4_src = src->words[3];
		params->ipv4_dst = dst->words[3];
	}
	return bpf_fib_lookup(ctx, params, sizeof(*params), 0);
}

/* Whether a new flow's backend is on another node: the FIB sends it out of a NodePort device
 * (lb_devices). Then *ifindex is that device. A backend behind a pod's interface, or an
 * address of this node, is local. */
static __always_inline int lb_backend_is_remote(lb_ctx_t *ctx, const struct lb_flow *flow,
						const struct lb_backend *backend, __u32 *ifindex)
{
	struct bpf_fib_lookup params = {};
	int rc = lb_fib_lookup(ctx, flow, &flow->key.saddr, flow->key.sport, &backend->address,
			       backend->port, &params);

	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return 0;
	*ifindex = params.ifindex;
	return bpf_map_lookup_elem(&lb_devices_v1, ifindex) != NULL;
}

/* Where a packet of a tracked flow, now addressed as `to` (its entry's copy) says, leaves and
 * to which MAC: the hop its entry keeps while that is from this second (`now`), else
 * bpf_fib_lookup's, kept in the entry when resolved. A kernel FIB lookup costs more than all
 * the rest of a tracked packet's work, and a flow's packets ask it the same question; a route
 * or neighbour change reaches the flow within a second. The hop is written in place, `checked`
 * last: a packet of the same flow read on another CPU at that instant may take the old hop's
 * device with the new one's MAC, once a second at most, and only when the flow's packets
 * spread over CPUs. Returns BPF_FIB_LKUP_RET_*; on SUCCESS *hop is complete, on NO_NEIGH its
 * ifindex is set. */
static __always_inline int lb_ct_next_hop(lb_ctx_t *ctx, const struct lb_flow *flow,
					  struct lb_ct_entry *entry, const struct lb_ct_entry *to,
					  __u32 now, struct lb_ct_hop *hop)
{
	struct bpf_fib_lookup params = {};
	int rc;

	if (to->hop.checked == now && to->hop.ifindex) {
		*hop = to->hop;
		return BPF_FIB_LKUP_RET_SUCCESS;
	}
	rc = lb_fib_lookup(ctx, flow, &to->saddr, to->sport, &to->daddr, to->dport, &params);
	hop->ifindex = params.ifindex;
	if (rc != BPF_FIB_LKUP_RET_SUCCESS)
		return rc;
	hop->checked = now;
	__builtin_memcpy(hop->smac, params.smac, 6);
	__builtin_memcpy(hop->dmac, params.dmac, 6);
	entry->hop.ifindex = hop->ifindex;
	__builtin_memcpy(entry->hop.smac, hop->smac, 6);
	__builtin_memcpy(entry->hop.dmac, hop->dmac, 6);
	*(volatile __u32 *)&entry->hop.checked = now;
	return rc;
}

#endif /* LB_FIB_H */
