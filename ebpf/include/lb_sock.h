/* Socket-level translation: what the cgroup sock_addr hooks add to the shared core of
 * lb_core.h: their load-time settings (cfg_*), the forward and reverse translation of a socket
 * address, the bind check, and loading and storing each family's context. A hook converts its
 * family's address to a union lb_addr, calls one of the functions here, and writes the result
 * back.
 *
 * lb::datapath::sim is the same logic in Rust; keep the two in step.
 */
#ifndef LB_SOCK_H
#define LB_SOCK_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_core_read.h>

#include "lb_core.h"
#include "lb_trace.h"

/* Load-time configuration (set by the agent through the object's .rodata). */
const volatile __u8 cfg_enable_tcp = 1;       /* hostServices.protocols has tcp */
const volatile __u8 cfg_enable_udp = 1;       /* hostServices.protocols has udp */
const volatile __u8 cfg_host_ns_only = 0;     /* socketLB.hostNamespaceOnly */
const volatile __u8 cfg_bind_protection = 1;  /* nodePort.bindProtection */
const volatile __u8 cfg_external_ip_mitigation = 1; /* !bpf.disableExternalIPMitigation */
/* The netns cookie of the agent's namespace, the node's "host" namespace; 0 means the
 * initial namespace (kernels without SO_NETNS_COOKIE, where the agent runs there). */
const volatile __u64 cfg_host_netns_cookie = 0;
/* Whether the kernel lets these programs ask for network namespace cookies (Linux 5.7). Without
 * them every socket counts as the host namespace's (bind protection applies everywhere, a pod's
 * loopback is the node's) and affinity has one client per service: the documents' behaviour of
 * older kernels. With the constant 0 the verifier never reaches the helper calls. */
const volatile __u8 cfg_netns_cookies = 1;
/* Whether the kernel lets these programs cast their socket to a TCP or UDP IPv6 socket
 * (bpf_skc_to_tcp6_sock/udp6_sock in socket-address programs, Linux 5.9), which is how bind6
 * learns IPV6_V6ONLY. Off by default: with the constant 0 the verifier never reaches the
 * helper calls, and a bind to [::] is checked as a dual-stack one. */
const volatile __u8 cfg_sock_v6only = 0;
#ifdef LB_BPF_ATOMICS
/* How many slots of lb_sock_conn_slots connect uses: a power of two up to LB_SOCK_CONN_SLOTS
 * (tests use fewer, so that live sockets share slots), or 0 for lb_sock_conn alone. Only in
 * the build for kernels with BPF atomics (sock_lb_atomics.o); the other build has no slots. */
const volatile __u32 cfg_sock_conn_slots = LB_SOCK_CONN_SLOTS;
#endif

#define SYS_REJECT 0
#define SYS_PROCEED 1
/* Address families, as <sys/socket.h> has them (not includable for the BPF target). */
#define LB_AF_INET 2
#define LB_AF_INET6 10

/* A socket address in the family-independent form the maps use. */
struct lb_sock_addr {
	union lb_addr address;
	__be16 port;
};

/* A forward translation made but not applied yet: what to remember once the hook has written
 * the new destination into its context. */
struct sock_fwd {
	struct lb_sock_key key;    /* the backend it goes to (the cookie is filled in when needed) */
	struct lb_sock_value orig; /* the frontend it asked for */
};

/* The context's protocol and port read as the 32-bit fields they are: clang may otherwise
 * narrow the load to the byte or half-word used, which some kernels' verifiers refuse on a
 * sock_addr context (Cilium's "narrow ctx access" workaround). */
static __always_inline __u8 sock_ctx_protocol(const struct bpf_sock_addr *ctx)
{
	volatile __u32 protocol = ctx->protocol;

	return (__u8)protocol;
}

static __always_inline __be16 sock_ctx_port(const struct bpf_sock_addr *ctx)
{
	volatile __u32 port = ctx->user_port;

	return (__be16)port;
}

static __always_inline int sock_proto_enabled(__u8 proto)
{
	return (proto == IPPROTO_TCP && cfg_enable_tcp) || (proto == IPPROTO_UDP && cfg_enable_udp);
}

static __always_inline int sock_in_host_ns(struct bpf_sock_addr *ctx)
{
	__u64 host;

	if (!cfg_netns_cookies)
		return 1;
	host = cfg_host_netns_cookie ? cfg_host_netns_cookie : bpf_get_netns_cookie(NULL);
	return bpf_get_netns_cookie(ctx) == host;
}

/* The client of session affinity: the socket's network namespace, or one client for all
 * where the kernel has no namespace cookies. */
static __always_inline __u64 sock_affinity_client(struct bpf_sock_addr *ctx)
{
	return cfg_netns_cookies ? bpf_get_netns_cookie(ctx) : 0;
}

/* Whether addr is a loopback address of the node's host namespace: a pod's loopback is the
 * pod's. Only loopback destinations pay for the namespace test. */
static __always_inline int sock_loopback_is_node(struct bpf_sock_addr *ctx,
						 const union lb_addr *a)
{
	return lb_addr_is_loopback(a) && sock_in_host_ns(ctx);
}

/* connect/sendmsg: if *dst is a service, replace it by one of its backends and fill *fwd with
 * the reverse entry to remember once the hook has stored *dst (sock_xlate_fwd_done). Returns 1
 * when *dst was changed. */
static __always_inline int sock_xlate_fwd(struct bpf_sock_addr *ctx, __u8 proto,
					  struct lb_sock_addr *dst, struct sock_fwd *fwd)
{
	const struct lb_service *svc;
	const struct lb_backend *backend;
	struct lb_key key = {};
	int loopback_is_node;
	__u64 client;

	if (!sock_proto_enabled(proto))
		return 0;
	if (cfg_host_ns_only && !sock_in_host_ns(ctx))
		return 0;
	key.address = dst->address;
	key.dport = dst->port;
	key.proto = proto;
	loopback_is_node = sock_loopback_is_node(ctx, &dst->address);
	svc = lb_lookup_frontend(&key, loopback_is_node, 1);
	if (!svc)
		return 0;
	/* CVE-2020-8554: anyone who may create a Service can claim any address as an externalIP.
	 * Unless it is this node's own address, the socket keeps the address it asked for. */
	if (cfg_external_ip_mitigation && (svc->flags & LB_SVC_EXTERNAL_IP) &&
	    !lb_addr_is_node_local(&dst->address, loopback_is_node))
		return 0;
	lb_emit_trace(ctx, LB_TRACE_PRE_XLATE_FWD, proto, &dst->address, dst->port);
	/* Session affinity is per client network namespace (the documents' socket-level
	 * affinity); the cookie is only asked for when the service has affinity. */
	client = lb_svc_has_affinity(svc) ? sock_affinity_client(ctx) : 0;
	backend = lb_select_backend(&key, svc, client);
	if (!backend)
		return 0; /* no backend: leave the address alone, the connection fails as it would */

	fwd->orig.address = dst->address;
	fwd->orig.port = dst->port;
	fwd->orig.rev_nat_index = svc->rev_nat_index;
	fwd->key.address = backend->address;
	fwd->key.port = backend->port;
	dst->address = backend->address;
	dst->port = backend->port;
	return 1;
}

/* The lb_sock_conn_hint counter of the socket with this cookie (always found: an array). */
static __always_inline __u32 *sock_conn_hint(__u64 cookie)
{
	__u32 index = cookie % LB_SOCK_CONN_HINTS;

	return bpf_map_lookup_elem(&lb_sock_conn_hint_v1, &index);
}

/* The slot of lb_sock_conn_slots the socket with this cookie would use; NULL in the build
 * without atomics or with no slots in use. */
static __always_inline struct lb_sock_conn_slot *sock_conn_slot(__u64 cookie)
{
#ifdef LB_BPF_ATOMICS
	__u32 index;

	if (!cfg_sock_conn_slots)
		return NULL;
	index = cookie & (cfg_sock_conn_slots - 1);
	return bpf_map_lookup_elem(&lb_sock_conn_slots_v1, &index);
#else
	return NULL;
#endif
}

/* Keeps conn in the socket's slot when the slot is free or already the socket's (a UDP socket
 * connecting again). Returns 0 when another live socket holds it. The claim (compare-and-
 * exchange to the cookie with LB_SOCK_SLOT_CLAIMED) makes the slot this socket's before conn
 * is written; the exchange that publishes the bare cookie is fully ordered, so no reader sees
 * the cookie before conn, on arm64 either. */
static __always_inline int sock_slot_store(__u64 cookie, const struct lb_sock_conn *conn)
{
#ifdef LB_BPF_ATOMICS
	struct lb_sock_conn_slot *slot = sock_conn_slot(cookie);
	__u64 old;

	if (!slot)
		return 0;
	old = __sync_val_compare_and_swap(&slot->cookie, 0, cookie | LB_SOCK_SLOT_CLAIMED);
	if (old == cookie)
		old = __sync_val_compare_and_swap(&slot->cookie, cookie,
						  cookie | LB_SOCK_SLOT_CLAIMED) == cookie ? 0 : 1;
	if (old)
		return 0;
	slot->conn = *conn;
	__sync_lock_test_and_set(&slot->cookie, cookie);
	return 1;
#else
	return 0;
#endif
}

/* Frees the socket's slot if it holds it. Returns 1 when it did. Only this socket ever writes
 * its own cookie into a slot, so a plain read that finds another value is final: most closing
 * sockets were never translated, and they only read the slot, never take its cache line for
 * writing as the exchange would. */
static __always_inline int sock_slot_free(__u64 cookie)
{
#ifdef LB_BPF_ATOMICS
	struct lb_sock_conn_slot *slot = sock_conn_slot(cookie);

	return slot && *(volatile __u64 *)&slot->cookie == cookie &&
	       __sync_val_compare_and_swap(&slot->cookie, cookie, 0) == cookie;
#else
	return 0;
#endif
}

/* The translation the socket's slot holds, if the slot is the socket's: the cookie is read
 * with a fully ordered operation, so conn is read after it. */
static __always_inline const struct lb_sock_conn *sock_slot_lookup(__u64 cookie)
{
#ifdef LB_BPF_ATOMICS
	struct lb_sock_conn_slot *slot = sock_conn_slot(cookie);

	if (slot && __sync_fetch_and_add(&slot->cookie, 0) == cookie)
		return &slot->conn;
#endif
	return NULL;
}

/* Deletes what a translated connect of the socket with this cookie kept in lb_sock_conn. Most
 * sockets never had an entry there: their group's hint is usually zero, and then the map is
 * not touched. */
static __always_inline void sock_forget_conn_entry(__u64 cookie)
{
	__u32 *hint = sock_conn_hint(cookie);

	if (!hint || !*(volatile __u32 *)hint)
		return;
	if (bpf_map_delete_elem(&lb_sock_conn_v1, &cookie) == 0)
		__sync_fetch_and_add(hint, -1);
}

/* connect: the socket now goes to fwd's backend; what it asked for is kept under its cookie
 * (a reconnect overwrites what an earlier connect kept): in its slot when it can have it, else
 * in lb_sock_conn. If neither can take it, the socket's getpeername shows the backend, as on a
 * kernel without the hook. */
static __always_inline void sock_remember_conn(struct bpf_sock_addr *ctx, const struct sock_fwd *fwd)
{
	struct lb_sock_conn conn = {};
	__u64 cookie = bpf_get_socket_cookie(ctx);
	__u32 *hint;

	conn.backend = fwd->key.address;
	conn.backend_port = fwd->key.port;
	conn.orig = fwd->orig;
	if (sock_slot_store(cookie, &conn)) {
		/* An earlier connect, when the slot was taken, may have left an entry in the map. */
		sock_forget_conn_entry(cookie);
		return;
	}
	hint = sock_conn_hint(cookie);
	if (bpf_map_update_elem(&lb_sock_conn_v1, &cookie, &conn, BPF_ANY) == 0 && hint)
		__sync_fetch_and_add(hint, 1);
}

/* Deletes what a translated connect of the socket with this cookie kept, in its slot or in
 * lb_sock_conn. */
static __always_inline void sock_forget_conn_of(__u64 cookie)
{
	if (!sock_slot_free(cookie))
		sock_forget_conn_entry(cookie);
}

/* connect to something that is not a service: what an earlier connect of this socket was
 * translated to is not where it goes now. Only a socket that was connected before (it has a
 * destination: a UDP socket connecting again) can have kept something; a TCP socket whose
 * translated connect failed has lost its destination, and if it then connects straight to
 * that same backend its getpeername shows the service until it closes. */
static __always_inline void sock_forget_conn(struct bpf_sock_addr *ctx)
{
	struct bpf_sock *sk = ctx->sk;
	volatile __u32 dst_port;

	if (!sk)
		return;
	/* Read as the 32-bit field it was before 5.16, which those kernels require. */
	dst_port = *(const __u32 *)&sk->dst_port;
	if (dst_port)
		sock_forget_conn_of(bpf_get_socket_cookie(ctx));
}

/* The hook wrote the translated *dst into its context: only now is the socket going there, so
 * only now is what it asked for remembered (a store the hook refused leaves nothing behind).
 * `connect` says whether the hook is connect (the socket's one destination from now on, kept
 * by socket in lb_sock_conn) or sendmsg (one datagram's, of which an unconnected socket may
 * have many, kept per destination in lb_reverse_sk until the LRU evicts it). */
static __always_inline void sock_xlate_fwd_done(struct bpf_sock_addr *ctx, __u8 proto,
						const struct lb_sock_addr *dst,
						struct sock_fwd *fwd, int connect)
{
	if (connect) {
		sock_remember_conn(ctx, fwd);
	} else {
		fwd->key.cookie = bpf_get_socket_cookie(ctx);
		bpf_map_update_elem(&lb_reverse_sk_v1, &fwd->key, &fwd->orig, BPF_ANY);
	}
	lb_emit_trace(ctx, LB_TRACE_POST_XLATE_FWD, proto, &dst->address, dst->port);
}

/* What the socket asked for when it was sent to peer: its connect's translation, or an
 * unconnected send's. NULL when it was not translated. */
static __always_inline const struct lb_sock_value *
sock_lookup_orig(struct bpf_sock_addr *ctx, const struct lb_sock_addr *peer)
{
	struct lb_sock_key sk = {};
	const struct lb_sock_conn *conn = NULL;
	__u32 *hint;

	sk.cookie = bpf_get_socket_cookie(ctx);
	conn = sock_slot_lookup(sk.cookie);
	hint = conn ? NULL : sock_conn_hint(sk.cookie);
	if (hint && *(volatile __u32 *)hint)
		conn = bpf_map_lookup_elem(&lb_sock_conn_v1, &sk.cookie);
	if (conn && conn->backend_port == peer->port &&
	    lb_addr_equal(&conn->backend, &peer->address))
		return &conn->orig;
	sk.address = peer->address;
	sk.port = peer->port;
	return bpf_map_lookup_elem(&lb_reverse_sk_v1, &sk);
}

/* recvmsg/getpeername: if this socket was translated to *peer and its service still exists,
 * replace *peer by the address the application asked for. Returns 1 when *peer changed. */
static __always_inline int sock_xlate_rev(struct bpf_sock_addr *ctx, __u8 proto,
					  struct lb_sock_addr *peer)
{
	const struct lb_sock_value *orig;
	const struct lb_reverse_nat *rev;
	__u16 index;

	if (!sock_proto_enabled(proto))
		return 0;
	if (cfg_host_ns_only && !sock_in_host_ns(ctx))
		return 0;
	orig = sock_lookup_orig(ctx, peer);
	if (!orig)
		return 0;
	lb_emit_trace(ctx, LB_TRACE_PRE_XLATE_REV, proto, &peer->address, peer->port);
	index = orig->rev_nat_index;
	rev = bpf_map_lookup_elem(&lb_reverse_nat_v1, &index);
	/* The service is gone, or its id now names another frontend: show the truth. A wildcard
	 * frontend was reached through a local address, which is what the application used. */
	if (!rev || rev->port != orig->port ||
	    !(lb_addr_equal(&rev->address, &orig->address) || lb_addr_is_wildcard(&rev->address)))
		return 0;
	peer->address = orig->address;
	peer->port = orig->port;
	lb_emit_trace(ctx, LB_TRACE_POST_XLATE_REV, proto, &peer->address, peer->port);
	return 1;
}

/* Whether a frontend owns addr:port for bind protection: NodePort, LoadBalancer and
 * externalIPs ports are the load balancer's on this node (HostPort ones belong to a pod).
 * Asked in the host namespace only, whose loopback is the node's. */
static __always_inline int sock_port_is_service(__u8 proto, const union lb_addr *addr, __be16 port)
{
	const struct lb_service *svc;
	struct lb_key key = {};

	key.address = *addr;
	key.dport = port;
	key.proto = proto;
	svc = lb_lookup_frontend(&key, 1, 1);
	return svc && (svc->flags & LB_SVC_NODE_OWNED_TYPES);
}

/* The one field of the kernel's struct sock_common that bind6 reads. CO-RE relocates the
 * bitfield read against the running kernel's BTF (the ___lb suffix is dropped when matching),
 * so the object does not depend on one kernel's layout. */
struct sock_common___lb {
	unsigned char skc_ipv6only : 1;
} __attribute__((preserve_access_index));

/* Whether the socket has IPV6_V6ONLY, so takes no IPv4 traffic. bpf_getsockopt(SOL_IPV6)
 * answers only IPV6_TCLASS and IPV6_AUTOFLOWLABEL and struct bpf_sock has no such field, so
 * the socket is cast to the kernel's tcp6_sock/udp6_sock (struct sock_common at offset 0 of
 * both) and skc_ipv6only read from it. Without the casts (cfg_sock_v6only 0) every socket
 * counts as dual-stack: a false refusal, never a port left unprotected. */
static __always_inline int sock_is_v6only(struct bpf_sock_addr *ctx, __u8 proto)
{
	struct sock_common___lb *skc;

	if (!cfg_sock_v6only)
		return 0;
	if (proto == IPPROTO_TCP)
		skc = (void *)bpf_skc_to_tcp6_sock(ctx->sk);
	else if (proto == IPPROTO_UDP)
		skc = (void *)bpf_skc_to_udp6_sock(ctx->sk);
	else
		return 0;
	if (!skc)
		return 0;
	return BPF_CORE_READ_BITFIELD(skc, skc_ipv6only);
}

/* bind: refuse, in the host namespace, a port that a NodePort, LoadBalancer or externalIP
 * service serves on that address (nodePort.bindProtection). A bind to :: also takes IPv4
 * traffic on a dual-stack socket, so it checks 0.0.0.0 too, unless the socket has
 * IPV6_V6ONLY (sock_is_v6only). Returns 0 to refuse (EPERM). */
static __always_inline int sock_bind_allowed(struct bpf_sock_addr *ctx, __u8 proto,
					     const struct lb_sock_addr *local)
{
	union lb_addr v4_any = {};

	if (!cfg_bind_protection || local->port == 0 || !sock_proto_enabled(proto) ||
	    !sock_in_host_ns(ctx))
		return 1;
	if (sock_port_is_service(proto, &local->address, local->port))
		return 0;
	if (lb_addr_is_wildcard(&local->address) && !lb_addr_is_v4(&local->address) &&
	    !sock_is_v6only(ctx, proto)) {
		lb_addr_from_v4(&v4_any, 0);
		if (sock_port_is_service(proto, &v4_any, local->port))
			return 0;
	}
	return 1;
}

/* sock_release: the socket is closing, so what its connect kept can never be asked for again.
 * Deleting it keeps lb_sock_conn holding live sockets only; otherwise closed connections would
 * fill it and evict the entries of long-lived ones, whose getpeername would then show the
 * backend. Keyed by the socket, so a socket that lost its destination (a failed connect,
 * connect(AF_UNSPEC)) is found too. Unconnected sends' entries are left to the LRU. */
static __always_inline void sock_forget_reverse(struct bpf_sock *ctx)
{
	sock_forget_conn_of(bpf_get_socket_cookie(ctx));
}

/* IPv4 hooks: the context's address as a mapped lb_sock_addr, and back. */
static __always_inline void sock4_load(const struct bpf_sock_addr *ctx, struct lb_sock_addr *a)
{
	lb_addr_from_v4(&a->address, ctx->user_ip4);
	a->port = sock_ctx_port(ctx);
}

/* Returns 1 when the context now holds *a. */
static __always_inline int sock4_store(struct bpf_sock_addr *ctx, const struct lb_sock_addr *a)
{
	/* The agent pairs frontends and backends by family, so this holds; if it ever did not,
	 * leaving the address alone is the safe failure. */
	if (!lb_addr_is_v4(&a->address))
		return 0;
	ctx->user_ip4 = a->address.words[3];
	ctx->user_port = a->port;
	return 1;
}

/* IPv6 hooks: v4-mapped destinations of dual-stack sockets are looked up as IPv4. */
static __always_inline void sock6_load(const struct bpf_sock_addr *ctx, struct lb_sock_addr *a)
{
	a->address.words[0] = ctx->user_ip6[0];
	a->address.words[1] = ctx->user_ip6[1];
	a->address.words[2] = ctx->user_ip6[2];
	a->address.words[3] = ctx->user_ip6[3];
	a->port = sock_ctx_port(ctx);
}

/* Returns 1: every address has an IPv6 form. */
static __always_inline int sock6_store(struct bpf_sock_addr *ctx, const struct lb_sock_addr *a)
{
	ctx->user_ip6[0] = a->address.words[0];
	ctx->user_ip6[1] = a->address.words[1];
	ctx->user_ip6[2] = a->address.words[2];
	ctx->user_ip6[3] = a->address.words[3];
	ctx->user_port = a->port;
	return 1;
}

#endif /* LB_SOCK_H */
