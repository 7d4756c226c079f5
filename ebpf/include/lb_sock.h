/* Socket-level translation: the service lookup, backend selection and reverse lookup the
 * cgroup sock_addr hooks share. A hook converts its family's address to a union lb_addr, calls
 * one of the two translations here, and writes the result back.
 */
#ifndef LB_SOCK_H
#define LB_SOCK_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "lb_maps.h"

/* Load-time configuration (set by the agent through the object's .rodata). */
const volatile __u8 cfg_enable_tcp = 1; /* hostServices.protocols has tcp */
const volatile __u8 cfg_enable_udp = 1; /* hostServices.protocols has udp */

#define SYS_PROCEED 1

/* A socket address in the family-independent form the maps use. */
struct lb_sock_addr {
	union lb_addr address;
	__be16 port;
};

static __always_inline void lb_addr_from_v4(union lb_addr *a, __be32 v4)
{
	a->words[0] = 0;
	a->words[1] = 0;
	a->words[2] = bpf_htonl(0x0000ffff);
	a->words[3] = v4;
}

static __always_inline int lb_addr_is_v4(const union lb_addr *a)
{
	return a->words[0] == 0 && a->words[1] == 0 && a->words[2] == bpf_htonl(0x0000ffff);
}

/* Word by word: a memcmp would be a call the BPF target cannot make. */
static __always_inline int lb_addr_equal(const union lb_addr *a, const union lb_addr *b)
{
	return a->words[0] == b->words[0] && a->words[1] == b->words[1] &&
	       a->words[2] == b->words[2] && a->words[3] == b->words[3];
}

static __always_inline int sock_proto_enabled(__u8 proto)
{
	return (proto == IPPROTO_TCP && cfg_enable_tcp) || (proto == IPPROTO_UDP && cfg_enable_udp);
}

/* The service at the frontend, preferring the internal-scope twin: socket-level traffic comes
 * from inside the cluster, so internalTrafficPolicy applies. */
static __always_inline const struct lb_service *lb_lookup_service(struct lb_key *key)
{
	const struct lb_service *svc;

	key->backend_slot = 0;
	key->scope = LB_SCOPE_EXT;
	svc = bpf_map_lookup_elem(&lb_services_v1, key);
	if (svc && (svc->flags & LB_SVC_TWO_SCOPES)) {
		key->scope = LB_SCOPE_INT;
		svc = bpf_map_lookup_elem(&lb_services_v1, key);
	}
	return svc;
}

/* A uniformly random active backend of svc, or NULL when it has none. */
static __always_inline const struct lb_backend *
lb_select_backend(struct lb_key *key, const struct lb_service *svc)
{
	const struct lb_service *slot;
	__u32 backend_id;

	if (svc->count == 0)
		return NULL;
	key->backend_slot = (bpf_get_prandom_u32() % svc->count) + 1;
	slot = bpf_map_lookup_elem(&lb_services_v1, key);
	if (!slot)
		return NULL;
	backend_id = slot->backend_id;
	return bpf_map_lookup_elem(&lb_backends_v1, &backend_id);
}

/* connect/sendmsg: if *dst is a service, replace it by one of its backends and remember the
 * service for the reverse direction. Returns 1 when *dst was changed. */
static __always_inline int sock_xlate_fwd(void *ctx, __u8 proto, struct lb_sock_addr *dst)
{
	const struct lb_service *svc;
	const struct lb_backend *backend;
	struct lb_key key = {};
	struct lb_sock_key sk = {};
	struct lb_sock_value orig = {};

	if (!sock_proto_enabled(proto))
		return 0;
	key.address = dst->address;
	key.dport = dst->port;
	key.proto = proto;
	svc = lb_lookup_service(&key);
	if (!svc)
		return 0;
	backend = lb_select_backend(&key, svc);
	if (!backend)
		return 0; /* no backend: leave the address alone, the connection fails as it would */

	orig.address = dst->address;
	orig.port = dst->port;
	orig.rev_nat_index = svc->rev_nat_index;
	sk.cookie = bpf_get_socket_cookie(ctx);
	sk.address = backend->address;
	sk.port = backend->port;
	bpf_map_update_elem(&lb_reverse_sk_v1, &sk, &orig, BPF_ANY);

	dst->address = backend->address;
	dst->port = backend->port;
	return 1;
}

/* recvmsg/getpeername: if this socket was translated to *peer and its service still exists,
 * replace *peer by the service address. Returns 1 when *peer was changed. */
static __always_inline int sock_xlate_rev(void *ctx, struct lb_sock_addr *peer)
{
	const struct lb_sock_value *orig;
	const struct lb_reverse_nat *rev;
	struct lb_sock_key sk = {};
	__u16 index;

	sk.cookie = bpf_get_socket_cookie(ctx);
	sk.address = peer->address;
	sk.port = peer->port;
	orig = bpf_map_lookup_elem(&lb_reverse_sk_v1, &sk);
	if (!orig)
		return 0;
	index = orig->rev_nat_index;
	rev = bpf_map_lookup_elem(&lb_reverse_nat_v1, &index);
	if (!rev || rev->port != orig->port || !lb_addr_equal(&rev->address, &orig->address))
		return 0; /* the service is gone: show the truth */
	peer->address = orig->address;
	peer->port = orig->port;
	return 1;
}

/* IPv4 hooks: the context's address as a mapped lb_sock_addr, and back. */
static __always_inline void sock4_load(const struct bpf_sock_addr *ctx, struct lb_sock_addr *a)
{
	lb_addr_from_v4(&a->address, ctx->user_ip4);
	a->port = (__be16)ctx->user_port;
}

static __always_inline void sock4_store(struct bpf_sock_addr *ctx, const struct lb_sock_addr *a)
{
	/* The agent pairs frontends and backends by family, so this holds; if it ever did not,
	 * leaving the address alone is the safe failure. */
	if (!lb_addr_is_v4(&a->address))
		return;
	ctx->user_ip4 = a->address.words[3];
	ctx->user_port = a->port;
}

/* IPv6 hooks: v4-mapped destinations of dual-stack sockets are looked up as IPv4. */
static __always_inline void sock6_load(const struct bpf_sock_addr *ctx, struct lb_sock_addr *a)
{
	a->address.words[0] = ctx->user_ip6[0];
	a->address.words[1] = ctx->user_ip6[1];
	a->address.words[2] = ctx->user_ip6[2];
	a->address.words[3] = ctx->user_ip6[3];
	a->port = (__be16)ctx->user_port;
}

static __always_inline void sock6_store(struct bpf_sock_addr *ctx, const struct lb_sock_addr *a)
{
	ctx->user_ip6[0] = a->address.words[0];
	ctx->user_ip6[1] = a->address.words[1];
	ctx->user_ip6[2] = a->address.words[2];
	ctx->user_ip6[3] = a->address.words[3];
	ctx->user_port = a->port;
}

#endif /* LB_SOCK_H */
