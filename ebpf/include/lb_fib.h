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

/* Most destinations whose next hop the programs remember (lb_fib_cache): backends on other
 * nodes and the clients replies go back to. Past it the least recently used are forgotten. */
#define LB_FIB_CACHE_SIZE 16384

/* Key of lb_fib_cache: a packet's addresses as it leaves, and the device it came in on. */
struct lb_fib_key {
	union lb_addr src;
	union lb_addr dst;
	__u32 ifindex;
};

/* What bpf_fib_lookup answered for a resolved next hop, and the second it answered. */
struct lb_fib_hop {
	__u32 ifindex;   /* the device the packet leaves by */
	__u32 checked;   /* CLOCK_MONOTONIC second of the lookup */
	__u8 smac[6];    /* that device's address */
	__u8 dmac[6];    /* the next hop's */
};

/* The FIB's resolved answers of the last second, per source, destination and ingress device: a
 * kernel FIB lookup costs more than all the rest of a tracked packet's work, and a flow's
 * packets ask it the same question. Both addresses are in the key, so source routing and the
 * default multipath hash (fib_multipath_hash_policy 0, over the addresses) get their own
 * answers; with a hash over the ports (policy 1 and up) the flows between two addresses share
 * the next hop of the first one asked in a second. Not pinned: each loaded program has its
 * own, and a new one starts empty. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct lb_fib_key);
	__type(value, struct lb_fib_hop);
	__uint(max_entries, LB_FIB_CACHE_SIZE);
} lb_fib_cache SEC(".maps");

/* Where a packet now addressed as `to` says leaves, and to which MAC: the cached answer while
 * it is from this second (`now`), else bpf_fib_lookup's, cached when resolved. So a route or
 * neighbour change reaches a tracked flow within a second. Returns BPF_FIB_LKUP_RET_*; on
 * SUCCESS *hop is complete, on NO_NEIGH its ifindex is set. */
static __always_inline int lb_fib_hop(lb_ctx_t *ctx, const struct lb_flow *flow,
				      const struct lb_ct_entry *to, __u32 now,
				      struct lb_fib_hop *hop)
{
	struct lb_fib_key key = {};
	struct bpf_fib_lookup params = {};
	const struct lb_fib_hop *cached;
	int rc;

	key.src = to->saddr;
	key.dst = to->daddr;
	key.ifindex = ctx_ifindex(ctx);
	cached = bpf_map_lookup_elem(&lb_fib_cache, &key);
	if (cached && cached->checked == now) {
		*hop = *cached;
		return BPF_FIB_LKUP_RET_SUCCESS;
	}
	rc = lb_fib_lookup(ctx, flow, &to->saddr, to->sport, &to->daddr, to->dport, &params);
	hop->ifindex = params.ifindex;
	if (rc != BPF_FIB_LKUP_RET_SUCCESS)
		return rc;
	hop->checked = now;
	__builtin_memcpy(hop->smac, params.smac, 6);
	__builtin_memcpy(hop->dmac, params.dmac, 6);
	bpf_map_update_elem(&lb_fib_cache, &key, hop, BPF_ANY);
	return rc;
}

#endif /* LB_FIB_H */
