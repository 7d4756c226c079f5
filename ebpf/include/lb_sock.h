/* Socket-level translation: the service lookup, backend selection and reverse lookup the
 * cgroup sock_addr hooks share. The hooks in sock_lb.c only call these.
 */
#ifndef LB_SOCK_H
#define LB_SOCK_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>

#include "lb_maps.h"

/* Load-time configuration (set by the agent through the object's .rodata). */
const volatile __u8 cfg_enable_tcp = 1; /* hostServices.protocols has tcp */
const volatile __u8 cfg_enable_udp = 1; /* hostServices.protocols has udp */

#define SYS_PROCEED 1

/* The port the application asked for, in network byte order (user_port holds it in the low
 * 16 bits of a 32-bit field). */
static __always_inline __be16 sock_user_port(const struct bpf_sock_addr *ctx)
{
	return (__be16)ctx->user_port;
}

static __always_inline int sock_proto_enabled(__u8 proto)
{
	return (proto == IPPROTO_TCP && cfg_enable_tcp) || (proto == IPPROTO_UDP && cfg_enable_udp);
}

/* The service at the frontend, preferring the internal-scope twin: socket-level traffic comes
 * from inside the cluster, so internalTrafficPolicy applies. */
static __always_inline const struct lb_service *lb4_lookup_service(struct lb4_key *key)
{
	const struct lb_service *svc;

	key->backend_slot = 0;
	key->scope = LB_SCOPE_EXT;
	svc = bpf_map_lookup_elem(&lb4_services_v1, key);
	if (svc && (svc->flags & LB_SVC_TWO_SCOPES)) {
		key->scope = LB_SCOPE_INT;
		svc = bpf_map_lookup_elem(&lb4_services_v1, key);
	}
	return svc;
}

/* A uniformly random active backend of svc, or NULL when it has none. */
static __always_inline const struct lb4_backend *
lb4_select_backend(struct lb4_key *key, const struct lb_service *svc, __u32 *backend_id)
{
	const struct lb_service *slot;

	if (svc->count == 0)
		return NULL;
	key->backend_slot = (bpf_get_prandom_u32() % svc->count) + 1;
	slot = bpf_map_lookup_elem(&lb4_services_v1, key);
	if (!slot)
		return NULL;
	*backend_id = slot->backend_id;
	return bpf_map_lookup_elem(&lb4_backends_v1, backend_id);
}

/* connect/sendmsg: point the socket at a backend of the service it addressed, and remember the
 * service for the reverse direction. */
static __always_inline void sock4_xlate_fwd(struct bpf_sock_addr *ctx)
{
	const struct lb_service *svc;
	const struct lb4_backend *backend;
	struct lb4_key key = {};
	struct lb4_sock_key sk = {};
	struct lb4_sock_value orig = {};
	__u32 backend_id = 0;
	__u8 proto = ctx->protocol;

	if (!sock_proto_enabled(proto))
		return;
	key.address = ctx->user_ip4;
	key.dport = sock_user_port(ctx);
	key.proto = proto;
	svc = lb4_lookup_service(&key);
	if (!svc)
		return;
	backend = lb4_select_backend(&key, svc, &backend_id);
	if (!backend)
		return; /* no backend: leave the address alone, the connection fails as it would */

	orig.address = key.address;
	orig.port = key.dport;
	orig.rev_nat_index = svc->rev_nat_index;
	sk.cookie = bpf_get_socket_cookie(ctx);
	sk.address = backend->address;
	sk.port = backend->port;
	bpf_map_update_elem(&lb4_reverse_sk_v1, &sk, &orig, BPF_ANY);

	ctx->user_ip4 = backend->address;
	ctx->user_port = backend->port;
}

/* recvmsg/getpeername: show the service address instead of the backend's, if this socket was
 * translated and the service still exists. */
static __always_inline void sock4_xlate_rev(struct bpf_sock_addr *ctx)
{
	const struct lb4_sock_value *orig;
	const struct lb4_reverse_nat *rev;
	struct lb4_sock_key sk = {};
	__u16 index;

	sk.cookie = bpf_get_socket_cookie(ctx);
	sk.address = ctx->user_ip4;
	sk.port = sock_user_port(ctx);
	orig = bpf_map_lookup_elem(&lb4_reverse_sk_v1, &sk);
	if (!orig)
		return;
	index = orig->rev_nat_index;
	rev = bpf_map_lookup_elem(&lb4_reverse_nat_v1, &index);
	if (!rev || rev->address != orig->address || rev->port != orig->port)
		return; /* the service is gone: show the truth */
	ctx->user_ip4 = orig->address;
	ctx->user_port = orig->port;
}

#endif /* LB_SOCK_H */
