/* Load balancing of packets: north-south, for packets entering a NodePort device (NodePort,
 * LoadBalancer and externalIPs frontends, ClusterIPs with bpf.lbExternalClusterIP, HostPorts),
 * and, with socketLB.hostNamespaceOnly, for what pods send (lb_from_pod, lb_new_pod_flow: the
 * socket hooks' lookup for a pod, the flow started as one to a local backend).
 *
 * One source for tc (nodeport.c) and XDP (nodeport_xdp.c), written against the context layer
 * (lb_ctx.h). At XDP, what it cannot finish (a next hop to resolve, a frame it cannot grow)
 * and every frame it decided to pass go on to the device's tc ingress program with what is
 * left in the frame's metadata (ctx_hand_to_tc, lb_finish_handed_over), so tc does not look
 * them up again.
 *
 * Ingress: a packet of a tracked flow is rewritten as its conntrack entry says. A new flow to
 * a frontend gets a backend from the flow hash (through the frontend's Maglev table with
 * loadBalancer.algorithm=maglev, lb_flow_backend), and two entries (lb_ct.h): the forward one
 * (client -> frontend becomes client -> backend) and the reply one (backend -> client becomes
 * frontend -> client). A local backend sees the client's address; the kernel routes the
 * translated packet to it, and its replies are translated back at the device's egress. A
 * backend on another node gets the flow from the node's address on the device that leads to
 * it and a port of the agent's SNAT range (cfg_snat_port_*), claimed through the reply entry's
 * key so no two flows share it; the program forwards those packets, and the replies coming
 * back, itself (lb_fib.h). A frontend without active backends rejects the packet with an ICMP
 * port unreachable (lb_icmp.h), as kube-proxy does, unless its traffic policy is Local and
 * other nodes have backends (LB_SVC_NO_LOCAL_BACKEND): then the packet is dropped. A
 * LoadBalancer frontend with loadBalancerSourceRanges drops clients outside them.
 *
 * ICMP errors about a translated flow are translated back (lb_icmp_err.h says which), the
 * rule Linux's NAT applies to them, so that path MTU discovery works through the node. Every
 * flow has two entries: the entry at key K rewrites a packet to tuple R, and its twin's key is
 * reverse(R). A packet this node emitted had tuple T as it left; an error about it quotes T.
 * E = lb_ct_v2[reverse(T)] (a plain lookup: the flow is not refreshed). If there is one, the
 * quoted tuple becomes reverse(E's rewrite) (the packet as its original sender sent it: saddr:
 * sport = E.daddr:E.dport, daddr:dport = E.saddr:E.sport); the outer destination becomes the
 * new quoted source (that sender); the outer source, when it is T's destination (the host the
 * packet went to answered, e.g. a local backend's port unreachable), becomes the new quoted
 * destination, and otherwise (a router on the way) stays. Checksums: the outer IPv4 header's,
 * the quoted IPv4 header's, and the ICMP checksum over the message (ICMPv6: with the outer
 * addresses of its pseudo-header); the quoted TCP/UDP checksum stays as quoted. Then, as the
 * flow's own packets: E with LB_CT_SNAT is forwarded (lb_forward), any other passes. At
 * ingress every entry applies; at egress only a local backend's reply entry (its own errors to
 * an outside client, which leave from the frontend's address). Anything else, an entry
 * missing, passes untouched.
 *
 * lb::datapath::sim::pkt is the same in Rust; keep the two in step.
 */
#ifndef LB_NODEPORT_H
#define LB_NODEPORT_H

#include "lb_core.h"
#include "lb_hash.h"
#include "lb_ct.h"
#include "lb_fib.h"
#include "lb_icmp.h"
#include "lb_icmp_err.h"

/* Load-time configuration (set by the agent through the object's .rodata). */
const volatile __u16 cfg_snat_port_min = 61000;   /* the agent's SNAT ports, host order */
const volatile __u16 cfg_snat_port_max = 65535;
const volatile __u32 cfg_flow_seed = 0;           /* the same on every node */
const volatile __u8 cfg_external_clusterip = 0;   /* bpf.lbExternalClusterIP */
const volatile __u8 cfg_external_ip_mitigation = 1; /* !bpf.disableExternalIPMitigation (pods) */
const volatile __u8 cfg_maglev = 0;               /* loadBalancer.algorithm=maglev */
const volatile __u32 cfg_maglev_m = 1;            /* maglev.tableSize: lb_maglev_v1's length */

/* SNAT ports tried for a new flow before it is dropped as exhausted. */
#define LB_SNAT_TRIES 32

/* Counts a drop on this CPU. Not inlined: drops are rare, and its parameter puts enum
 * lb_counter into the object's BTF, where the layout test checks it. */
static __noinline void lb_count(enum lb_counter counter)
{
	__u32 index = counter;
	__u64 *value = bpf_map_lookup_elem(&lb_counters_v1, &index);

	if (value)
		*value += 1;
}

/* Whether traffic from outside the node may use this frontend. */
static __always_inline int lb_serves_external(const struct lb_service *svc)
{
	if (svc->flags &
	    (LB_SVC_NODE_PORT | LB_SVC_EXTERNAL_IP | LB_SVC_LOADBALANCER | LB_SVC_HOST_PORT))
		return 1;
	return cfg_external_clusterip && (svc->flags & LB_SVC_CLUSTER_IP);
}

/* Whether a frontend with loadBalancerSourceRanges lets this client in: the client's address
 * falls in one of the frontend's CIDRs. */
static __always_inline int lb_source_allowed(__u16 rev_nat_index, const union lb_addr *client)
{
	struct lb_src_range_key key = {};

	key.prefixlen = 32 + 128;
	key.rev_nat_index = rev_nat_index;
	key.address = *client;
	return bpf_map_lookup_elem(&lb_source_ranges_v1, &key) != NULL;
}

/* Sends a translated packet (now addressed as `to` says) towards its destination itself. */
static __always_inline int lb_forward(lb_ctx_t *ctx, const struct lb_flow *flow,
				      const struct lb_ct_entry *to)
{
	struct bpf_fib_lookup params = {};
	int rc;

	if (lb_dec_ttl(ctx, flow)) {
		lb_count(LB_CNT_TTL_EXCEEDED);
		return LB_DROP;
	}
	rc = lb_fib_lookup(ctx, flow, &to->saddr, to->sport, &to->daddr, to->dport, &params);
	if (rc == BPF_FIB_LKUP_RET_SUCCESS) {
		if (ctx_store(ctx, 0, params.dmac, 6) || ctx_store(ctx, 6, params.smac, 6))
			return LB_DROP;
		return ctx_redirect(ctx, params.ifindex);
	}
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH)
		return ctx_redirect_neigh(ctx, params.ifindex);
	lb_count(LB_CNT_FIB_FAILED);
	return LB_DROP;
}

/* lb_forward for a packet of a tracked flow, whose next hop is most likely the one its
 * previous packet took: the one its entry keeps (lb_ct_next_hop). (A new flow's first packet
 * asks the FIB itself; its second keeps the answer.) */
static __always_inline int lb_forward_tracked(lb_ctx_t *ctx, const struct lb_flow *flow,
					      struct lb_ct_entry *entry,
					      const struct lb_ct_entry *to, __u32 now)
{
	struct lb_ct_hop hop;
	int rc;

	if (lb_dec_ttl(ctx, flow)) {
		lb_count(LB_CNT_TTL_EXCEEDED);
		return LB_DROP;
	}
	rc = lb_ct_next_hop(ctx, flow, entry, to, now, &hop);
	if (rc == BPF_FIB_LKUP_RET_SUCCESS) {
		if (ctx_store(ctx, 0, hop.dmac, 6) || ctx_store(ctx, 6, hop.smac, 6))
			return LB_DROP;
		return ctx_redirect(ctx, hop.ifindex);
	}
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH)
		return ctx_redirect_neigh(ctx, hop.ifindex);
	lb_count(LB_CNT_FIB_FAILED);
	return LB_DROP;
}

/* lb_icmp_err_translate's answer when the packet is not an ICMP error it translates: the
 * caller passes it untouched. */
#define LB_ICMP_ERR_NONE (-1)

/* Writes an ICMPv4 error's new outer and quoted addresses and quoted ports, with the outer
 * header's checksum, the quoted header's (recomputed) and the ICMP checksum over the message.
 * Not inlined, as the IPv6 half: see lb_icmp_err_ingress. */
static __noinline int lb_icmp_err_rewrite4(lb_ctx_t *ctx, const struct lb_icmp_err *err)
{
	__be32 old_outer[2] = { err->saddr.words[3], err->daddr.words[3] };
	__be32 new_outer[2] = { err->new_saddr.words[3], err->new_daddr.words[3] };
	__be16 old_ports[2] = { err->quoted.sport, err->quoted.dport };
	__be16 new_ports[2] = { err->inner.sport, err->inner.dport };
	struct iphdr old_in, new_in;
	__s64 diff;

	diff = bpf_csum_diff(old_outer, 8, new_outer, 8, 0);
	if (ctx_store(ctx, ETH_HLEN + offsetof(struct iphdr, saddr), new_outer, 8) ||
	    ctx_l3_csum_add(ctx, ETH_HLEN + offsetof(struct iphdr, check), diff))
		return -1;
	if (ctx_load(ctx, LB_ICMP_ERR_INNER4, &old_in, sizeof(old_in)))
		return -1;
	new_in = old_in;
	new_in.saddr = err->inner.saddr.words[3];
	new_in.daddr = err->inner.daddr.words[3];
	new_in.check = 0;
	new_in.check =
		lb_csum_fold(bpf_csum_diff(NULL, 0, (__be32 *)&new_in, sizeof(new_in), 0));
	/* The ICMP checksum covers the quoted header (its checksum included) and ports. */
	diff = bpf_csum_diff((__be32 *)&old_in, sizeof(old_in), (__be32 *)&new_in, sizeof(new_in),
			     0);
	diff = bpf_csum_diff((__be32 *)old_ports, 4, (__be32 *)new_ports, 4, (__u32)diff);
	if (ctx_store(ctx, LB_ICMP_ERR_INNER4, &new_in, sizeof(new_in)) ||
	    ctx_store(ctx, LB_ICMP_ERR_PORTS4, new_ports, 4) ||
	    ctx_l4_csum_add(ctx, LB_ICMP_ERR_ICMP4 + 2, diff, 0, 0))
		return -1;
	return 0;
}

/* The same for ICMPv6, whose checksum also covers the outer addresses (pseudo-header). */
static __noinline int lb_icmp_err_rewrite6(lb_ctx_t *ctx, const struct lb_icmp_err *err)
{
	union lb_addr old_addrs[2] = { err->saddr, err->daddr };
	union lb_addr new_addrs[2] = { err->new_saddr, err->new_daddr };
	__be16 old_ports[2] = { err->quoted.sport, err->quoted.dport };
	__be16 new_ports[2] = { err->inner.sport, err->inner.dport };
	__s64 diff;

	diff = bpf_csum_diff((__be32 *)old_addrs, 32, (__be32 *)new_addrs, 32, 0);
	if (ctx_store(ctx, ETH_HLEN + offsetof(struct ipv6hdr, saddr), new_addrs, 32) ||
	    ctx_l4_csum_add(ctx, LB_ICMP_ERR_ICMP6 + 2, diff, 1, 0))
		return -1;
	old_addrs[0] = err->quoted.saddr;
	old_addrs[1] = err->quoted.daddr;
	new_addrs[0] = err->inner.saddr;
	new_addrs[1] = err->inner.daddr;
	diff = bpf_csum_diff((__be32 *)old_addrs, 32, (__be32 *)new_addrs, 32, 0);
	diff = bpf_csum_diff((__be32 *)old_ports, 4, (__be32 *)new_ports, 4, (__u32)diff);
	if (ctx_store(ctx, LB_ICMP_ERR_INNER6 + offsetof(struct ipv6hdr, saddr), new_addrs, 32) ||
	    ctx_store(ctx, LB_ICMP_ERR_PORTS6, new_ports, 4) ||
	    ctx_l4_csum_add(ctx, LB_ICMP_ERR_ICMP6 + 2, diff, 0, 0))
		return -1;
	return 0;
}

/* Forwards a translated error of a SNATed flow to its new outer destination, as the flow's
 * packets are (lb_forward). Not inlined: see lb_icmp_err_ingress. */
static __noinline int lb_icmp_err_forward(lb_ctx_t *ctx, const struct lb_icmp_err *err)
{
	struct lb_flow flow = {};
	struct lb_ct_entry to = {};

	flow.v6 = err->v6;
	flow.key.proto = err->v6 ? LB_IPPROTO_ICMPV6 : LB_IPPROTO_ICMP;
	to.saddr = err->new_saddr;
	to.daddr = err->new_daddr;
	return lb_forward(ctx, &flow, &to);
}

/* An ICMP error about a packet this node translated (see the header comment): its quoted
 * packet and outer addresses become what the original sender sent and expects, then it is
 * forwarded as the flow's packets are (SNAT) or passed. At egress only a local backend's own
 * errors (their entry a local reply's). LB_ICMP_ERR_NONE for a packet it leaves alone. */
static __always_inline int lb_icmp_err_translate(lb_ctx_t *ctx, int egress)
{
	struct lb_icmp_err err = {};
	const struct lb_ct_entry *e;
	__u8 flags;

	if (lb_icmp_err_parse(ctx, &err))
		return LB_ICMP_ERR_NONE;
	/* The twin of the quoted packet's entry: a plain lookup, the flow is not refreshed. The
	 * key is written where the new quoted tuple goes next (one less key on the stack). */
	err.inner.saddr = err.quoted.daddr;
	err.inner.daddr = err.quoted.saddr;
	err.inner.sport = err.quoted.dport;
	err.inner.dport = err.quoted.sport;
	err.inner.proto = err.quoted.proto;
	e = bpf_map_lookup_elem(&lb_ct_v2, &err.inner);
	if (!e || (egress && !lb_ct_is_local_reply(e)))
		return LB_ICMP_ERR_NONE;
	/* The quoted packet as its original sender sent it: e's rewrite, reversed. */
	err.inner.saddr = e->daddr;
	err.inner.sport = e->dport;
	err.inner.daddr = e->saddr;
	err.inner.dport = e->sport;
	flags = e->flags;
	err.new_daddr = err.inner.saddr;
	/* The host the packet went to answers for the address the sender used; a router on
	 * the way keeps its own. */
	err.new_saddr = lb_addr_equal(&err.saddr, &err.quoted.daddr) ? err.inner.daddr : err.saddr;
	if (err.v6 ? lb_icmp_err_rewrite6(ctx, &err) : lb_icmp_err_rewrite4(ctx, &err))
		return LB_DROP;
	if (flags & LB_CT_SNAT)
		return lb_icmp_err_forward(ctx, &err);
	return LB_PASS;
}

/* lb_icmp_err_translate at ingress and at egress, with the program's verdict (a packet left
 * alone passes, one decided on passes as decided). Not inlined: their frames and the caller's
 * are not one (512 bytes for the whole call chain; the entry's frame must stay small for the
 * chain through lb_new_flow on Linux 5.10). Two functions rather than a parameter: clang would
 * drop a parameter that is constant in an object, which the verifier refuses. */
static __noinline int lb_icmp_err_ingress(lb_ctx_t *ctx)
{
	int rc = lb_icmp_err_translate(ctx, 0);

	if (rc == LB_ICMP_ERR_NONE)
		return LB_PASS;
	return rc == LB_PASS ? ctx_pass_decided(ctx) : rc;
}

static __noinline int lb_icmp_err_egress(lb_ctx_t *ctx)
{
	int rc = lb_icmp_err_translate(ctx, 1);

	return rc == LB_ICMP_ERR_NONE ? LB_PASS : rc;
}

/* A packet of a tracked flow: refresh its entry and translate it. Not inlined, so that its
 * stack frame and lb_new_flow's are not one (512 bytes in all). */
static __noinline int lb_apply(lb_ctx_t *ctx, const struct lb_flow *flow,
				    struct lb_ct_entry *entry, __u32 now)
{
	struct lb_ct_entry to;

	lb_ct_refresh(entry, flow, now);
	to = *entry;
	if (lb_rewrite(ctx, flow, &to))
		return LB_DROP;
	if (to.flags & LB_CT_SNAT)
		return lb_forward_tracked(ctx, flow, entry, &to, now);
	return LB_PASS;
}

static __always_inline int lb_addr_is_zero(const union lb_addr *a)
{
	return !(a->words[0] | a->words[1] | a->words[2] | a->words[3]);
}

/* A new flow to a backend on another node, reached through device `ifindex`: source NAT to
 * the node's address there and a free port, then forward. */
static __always_inline int lb_new_snat_flow(lb_ctx_t *ctx, const struct lb_flow *flow,
					    struct lb_ct_entry *fwd, struct lb_ct_entry *rev,
					    __u32 ifindex)
{
	const struct lb_device *dev = bpf_map_lookup_elem(&lb_devices_v1, &ifindex);
	__u32 range = (__u32)cfg_snat_port_max - cfg_snat_port_min + 1;
	struct lb_ct_key reply_key = {};
	__u32 start, i;

	if (!dev || lb_addr_is_zero(flow->v6 ? &dev->addr6 : &dev->addr4)) {
		lb_count(LB_CNT_NO_DEVICE_ADDR);
		return LB_DROP;
	}
	fwd->saddr = flow->v6 ? dev->addr6 : dev->addr4;
	fwd->flags |= LB_CT_SNAT;
	rev->flags |= LB_CT_SNAT;
	start = lb_flow_hash(&flow->key, cfg_flow_seed + 1) % range;
	/* Unrolled: Linux 5.10's verifier takes this bounded loop for an infinite one. */
#pragma unroll
	for (i = 0; i < LB_SNAT_TRIES; i++) {
		fwd->sport = bpf_htons(cfg_snat_port_min + (start + i) % range);
		lb_ct_twin_key(fwd, flow->key.proto, &reply_key);
		/* The reply entry's key holds the port: whoever writes it first owns it. */
		if (bpf_map_update_elem(&lb_ct_v2, &reply_key, rev, BPF_NOEXIST) == 0)
			goto claimed;
	}
	lb_count(LB_CNT_SNAT_EXHAUSTED);
	return LB_DROP;
claimed:
	if (bpf_map_update_elem(&lb_ct_v2, &flow->key, fwd, BPF_ANY)) {
		bpf_map_delete_elem(&lb_ct_v2, &reply_key);
		lb_count(LB_CNT_CT_FULL);
		return LB_DROP;
	}
	if (lb_rewrite(ctx, flow, fwd))
		return LB_DROP;
	return lb_forward(ctx, flow, fwd);
}

/* This CPU's room for a new flow's entries (lb_new_entries), zeroed; NULL never in practice. */
static __always_inline struct lb_new_entries *lb_new_entries_zeroed(void)
{
	__u32 zero = 0;
	struct lb_new_entries *e = bpf_map_lookup_elem(&lb_new_entries, &zero);

	if (e)
		__builtin_memset(e, 0, sizeof(*e));
	return e;
}

/* The two conntrack entries of a new flow from flow's client to backend: the forward one
 * (client -> frontend becomes client -> backend) and the reply one (backend -> client becomes
 * frontend -> client, the address the client used, not the wildcard frontend's). */
static __always_inline void lb_flow_entries(const struct lb_flow *flow,
					    const struct lb_backend *backend, __u32 backend_id,
					    __u16 rev_nat_index, __u32 now, struct lb_ct_entry *fwd,
					    struct lb_ct_entry *rev)
{
	fwd->saddr = flow->key.saddr;
	fwd->sport = flow->key.sport;
	fwd->daddr = backend->address;
	fwd->dport = backend->port;
	fwd->rev_nat_index = rev_nat_index;
	fwd->backend_id = backend_id;
	rev->saddr = flow->key.daddr;
	rev->sport = flow->key.dport;
	rev->daddr = flow->key.saddr;
	rev->dport = flow->key.sport;
	rev->flags = LB_CT_REPLY;
	rev->rev_nat_index = rev_nat_index;
	rev->backend_id = backend_id;
	lb_ct_init(fwd, flow, now);
	lb_ct_init(rev, flow, now);
}

/* A new flow to a backend the kernel routes to itself: both entries written, the packet's
 * destination rewritten, passed on. */
static __always_inline int lb_start_local_flow(lb_ctx_t *ctx, const struct lb_flow *flow,
					       const struct lb_ct_entry *fwd,
					       const struct lb_ct_entry *rev)
{
	struct lb_ct_key reply_key = {};

	lb_ct_twin_key(fwd, flow->key.proto, &reply_key);
	if (bpf_map_update_elem(&lb_ct_v2, &reply_key, rev, BPF_ANY) ||
	    bpf_map_update_elem(&lb_ct_v2, &flow->key, fwd, BPF_ANY)) {
		lb_count(LB_CNT_CT_FULL);
		return LB_DROP;
	}
	if (lb_rewrite(ctx, flow, fwd))
		return LB_DROP;
	return LB_PASS;
}

/* lb_new_flow's answer for a packet to reject: its caller calls lb_reject, so that the two
 * large stack frames are never on the stack together (512 bytes in all). */
#define LB_NEW_FLOW_REJECT (-2)

/* A new flow to a frontend without active backends, as kube-proxy treats it: a Local traffic
 * policy without local endpoints drops; a service without any endpoint rejects (the caller
 * answers LB_NEW_FLOW_REJECT with an ICMP port unreachable). */
static __always_inline int lb_no_backend(const struct lb_service *svc)
{
	if (svc->flags & LB_SVC_NO_LOCAL_BACKEND) {
		lb_count(LB_CNT_NO_LOCAL_BACKEND);
		return LB_DROP;
	}
	lb_count(LB_CNT_NO_BACKEND);
	return LB_NEW_FLOW_REJECT;
}

/* The backend id of a new flow with hash h: with Maglev, the frontend's lookup table at h % M
 * (the same on every node with the same backends); without it, or before the agent wrote the
 * frontend's table, the active slot h % count + 1. */
static __always_inline __u32 lb_flow_backend(struct lb_key *key, __u16 count,
					     __u16 rev_nat_index, __u32 h)
{
	if (cfg_maglev) {
		__u32 table_key = rev_nat_index;
		const __u32 *table = bpf_map_lookup_elem(&lb_maglev_v1, &table_key);
		__u32 idx = h % cfg_maglev_m;

		/* Linux 5.10's verifier does not bound a modulo: bound it by hand. */
		if (table && idx < cfg_maglev_m)
			return table[idx];
	}
	return lb_slot_backend(key, h % count + 1);
}

/* A packet no flow tracks: if it is for a frontend served to the outside, choose a backend
 * and start the flow; anything else passes untouched. Not inlined: see LB_NEW_FLOW_REJECT. */
static __noinline int lb_new_flow(lb_ctx_t *ctx, const struct lb_flow *flow, __u32 now)
{
	const struct lb_service *svc;
	const struct lb_backend *backend;
	struct lb_new_entries *e;
	struct lb_key key = {};
	__u32 backend_id, ifindex = 0;
	__u16 count, rev_nat_index;

	key.address = flow->key.daddr;
	key.dport = flow->key.dport;
	key.proto = flow->key.proto;
	/* External traffic: the node's loopback is not reached through a device, and the
	 * external scope applies (externalTrafficPolicy). */
	svc = lb_lookup_frontend(&key, 0, 0);
	if (!svc || !lb_serves_external(svc))
		return LB_PASS;
	count = svc->count;
	rev_nat_index = svc->rev_nat_index;
	if ((svc->flags2 & LB_SVC2_SOURCE_RANGES) &&
	    !lb_source_allowed(rev_nat_index, &flow->key.saddr)) {
		lb_count(LB_CNT_SOURCE_RANGE);
		return LB_DROP;
	}
	if (count == 0)
		return lb_no_backend(svc);
	backend_id = lb_flow_backend(&key, count, rev_nat_index,
				     lb_flow_hash(&flow->key, cfg_flow_seed));
	backend = backend_id ? bpf_map_lookup_elem(&lb_backends_v1, &backend_id) : NULL;
	if (!backend) {
		lb_count(LB_CNT_NO_BACKEND);
		return LB_DROP;
	}

	e = lb_new_entries_zeroed();
	if (!e)
		return LB_DROP;
	lb_flow_entries(flow, backend, backend_id, rev_nat_index, now, &e->fwd, &e->rev);
	if (lb_backend_is_remote(ctx, flow, backend, &ifindex))
		return lb_new_snat_flow(ctx, flow, &e->fwd, &e->rev, ifindex);
	return lb_start_local_flow(ctx, flow, &e->fwd, &e->rev);
}

/* A packet a pod sends that no flow tracks, met on the pod's host-side interface: with
 * socketLB.hostNamespaceOnly the socket hooks leave pods alone, and this is where their
 * services are resolved instead ("re-enables service lookup in the tc bpf program"). The lookup
 * is the socket hooks' for a pod: the internal scope (internalTrafficPolicy), every frontend
 * type, the node's addresses answering for NodePorts and HostPorts (a pod's loopback is its
 * own), an externalIP not of this node left alone while the CVE-2020-8554 mitigation is on. The
 * flow is started as one to a local backend: only the destination changes, the kernel routes
 * the packet on (to a pod here or another node), and the reply gets the frontend's address back
 * on its way into the pod (lb_nodeport_to_device on the same interface's egress). A service
 * without endpoints rejects as kube-proxy's REJECT does; a Local internalTrafficPolicy without
 * local endpoints drops. Not inlined: see LB_NEW_FLOW_REJECT. */
static __noinline int lb_new_pod_flow(lb_ctx_t *ctx, const struct lb_flow *flow, __u32 now)
{
	const struct lb_service *svc;
	const struct lb_backend *backend;
	struct lb_new_entries *e;
	struct lb_key key = {};
	__u32 backend_id;
	__u16 count, rev_nat_index;

	key.address = flow->key.daddr;
	key.dport = flow->key.dport;
	key.proto = flow->key.proto;
	svc = lb_lookup_frontend(&key, 0, 1);
	if (!svc)
		return LB_PASS;
	if (cfg_external_ip_mitigation && (svc->flags & LB_SVC_EXTERNAL_IP) &&
	    !lb_addr_is_node_local(&flow->key.daddr, 0))
		return LB_PASS;
	count = svc->count;
	rev_nat_index = svc->rev_nat_index;
	if (count == 0)
		return lb_no_backend(svc);
	backend_id = lb_slot_backend(&key, lb_flow_hash(&flow->key, cfg_flow_seed) % count + 1);
	backend = backend_id ? bpf_map_lookup_elem(&lb_backends_v1, &backend_id) : NULL;
	if (!backend) {
		lb_count(LB_CNT_NO_BACKEND);
		return LB_DROP;
	}
	e = lb_new_entries_zeroed();
	if (!e)
		return LB_DROP;
	lb_flow_entries(flow, backend, backend_id, rev_nat_index, now, &e->fwd, &e->rev);
	return lb_start_local_flow(ctx, flow, &e->fwd, &e->rev);
}

/* What XDP left to tc for a packet (ctx_handed_over): done with it, or the redirect or reject
 * XDP could not do itself; -1 when it left nothing. */
static __always_inline int lb_finish_handed_over(lb_ctx_t *ctx, struct lb_flow *flow)
{
	__u32 ifindex = 0;

	switch (ctx_handed_over(ctx, &ifindex)) {
	case LB_XFER_DONE:
		return LB_PASS;
	case LB_XFER_REDIRECT_NEIGH:
		return ctx_redirect_neigh(ctx, ifindex);
	case LB_XFER_REJECT:
		if (lb_parse(ctx, flow))
			return LB_DROP;
		return lb_reject(ctx, flow);
	default:
		return -1;
	}
}

/* A packet entering a NodePort device, at XDP or at tc. */
static __always_inline int lb_nodeport_from_device(lb_ctx_t *ctx)
{
	struct lb_flow flow = {};
	struct lb_ct_entry *entry;
	__u32 now;
	int rc;

	rc = lb_finish_handed_over(ctx, &flow);
	if (rc >= 0)
		return rc;
	if (lb_parse(ctx, &flow))
		return lb_icmp_err_ingress(ctx);
	now = lb_ct_now();
	entry = bpf_map_lookup_elem(&lb_ct_v2, &flow.key);
	if (entry && !lb_ct_is_local_reply(entry))
		rc = lb_apply(ctx, &flow, entry, now);
	else
		rc = lb_new_flow(ctx, &flow, now);
	if (rc == LB_NEW_FLOW_REJECT)
		return lb_reject(ctx, &flow);
	return rc == LB_PASS ? ctx_pass_decided(ctx) : rc;
}

/* A packet a pod sends, at tc ingress of its host-side interface (socketLB.hostNamespaceOnly):
 * a tracked flow's packet is translated, a new flow to a service started (lb_new_pod_flow). */
static __always_inline int lb_from_pod(lb_ctx_t *ctx)
{
	struct lb_flow flow = {};
	struct lb_ct_entry *entry;
	__u32 now;
	int rc;

	if (lb_parse(ctx, &flow))
		return LB_PASS;
	now = lb_ct_now();
	entry = bpf_map_lookup_elem(&lb_ct_v2, &flow.key);
	if (entry && !lb_ct_is_local_reply(entry))
		return lb_apply(ctx, &flow, entry, now);
	rc = lb_new_pod_flow(ctx, &flow, now);
	if (rc == LB_NEW_FLOW_REJECT)
		return lb_reject(ctx, &flow);
	return rc;
}

/* A packet leaving through a NodePort device: a local backend's reply gets its frontend's
 * address back. */
static __always_inline int lb_nodeport_to_device(lb_ctx_t *ctx)
{
	struct lb_flow flow = {};
	struct lb_ct_entry *entry;

	if (lb_parse(ctx, &flow))
		return lb_icmp_err_egress(ctx);
	entry = bpf_map_lookup_elem(&lb_ct_v2, &flow.key);
	if (!entry || !lb_ct_is_local_reply(entry))
		return LB_PASS;
	return lb_apply(ctx, &flow, entry, lb_ct_now());
}

#endif /* LB_NODEPORT_H */
