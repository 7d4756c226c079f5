// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Socket-level load balancing: cgroup sock_addr hooks that translate a service address to a
 * backend at connect/sendmsg, and back at recvmsg/getpeername, so no packet is ever NATed.
 * Each hook only converts between its family's context and the shared translation. */

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "lb_sock.h"

/* Forward translation (connect, sendmsg: where is the socket going). What the socket asked for
 * is remembered only once the new destination is in the context; `connect` is 1 for connect,
 * where a socket that goes somewhere untranslated forgets an earlier connect's translation. */
#define SOCK_FWD_HOOK(section, name, load, store, connect)                                 \
	SEC(section)                                                                            \
	int name(struct bpf_sock_addr *ctx)                                                     \
	{                                                                                       \
		struct lb_sock_addr dst = {};                                                   \
		struct sock_fwd fwd = {};                                                       \
		__u8 proto = sock_ctx_protocol(ctx);                                            \
		load(ctx, &dst);                                                                \
		if (sock_xlate_fwd(ctx, proto, &dst, &fwd) && store(ctx, &dst))                 \
			sock_xlate_fwd_done(ctx, proto, &dst, &fwd, connect);                   \
		else if (connect)                                                               \
			sock_forget_conn(ctx);                                                  \
		return SYS_PROCEED;                                                             \
	}

/* Reverse translation (recvmsg, getpeername: who does the application think it talks to). */
#define SOCK_REV_HOOK(section, name, load, store)                                          \
	SEC(section)                                                                            \
	int name(struct bpf_sock_addr *ctx)                                                     \
	{                                                                                       \
		struct lb_sock_addr peer = {};                                                  \
		load(ctx, &peer);                                                               \
		if (sock_xlate_rev(ctx, sock_ctx_protocol(ctx), &peer))                         \
			store(ctx, &peer);                                                      \
		return SYS_PROCEED;                                                             \
	}

/* Bind protection (bind: may the socket take this local address). */
#define SOCK_BIND_HOOK(section, name, load)                                                \
	SEC(section)                                                                            \
	int name(struct bpf_sock_addr *ctx)                                                     \
	{                                                                                       \
		struct lb_sock_addr local = {};                                                 \
		load(ctx, &local);                                                              \
		return sock_bind_allowed(ctx, sock_ctx_protocol(ctx), &local) ? SYS_PROCEED     \
									       : SYS_REJECT;    \
	}

SOCK_FWD_HOOK("cgroup/connect4", lb_sock4_connect, sock4_load, sock4_store, 1)
SOCK_FWD_HOOK("cgroup/sendmsg4", lb_sock4_sendmsg, sock4_load, sock4_store, 0)
SOCK_REV_HOOK("cgroup/recvmsg4", lb_sock4_recvmsg, sock4_load, sock4_store)
SOCK_REV_HOOK("cgroup/getpeername4", lb_sock4_getpeername, sock4_load, sock4_store)

SOCK_BIND_HOOK("cgroup/bind4", lb_sock4_bind, sock4_load)

SOCK_FWD_HOOK("cgroup/connect6", lb_sock6_connect, sock6_load, sock6_store, 1)
SOCK_FWD_HOOK("cgroup/sendmsg6", lb_sock6_sendmsg, sock6_load, sock6_store, 0)
SOCK_REV_HOOK("cgroup/recvmsg6", lb_sock6_recvmsg, sock6_load, sock6_store)
SOCK_REV_HOOK("cgroup/getpeername6", lb_sock6_getpeername, sock6_load, sock6_store)

SOCK_BIND_HOOK("cgroup/bind6", lb_sock6_bind, sock6_load)

/* Socket close: forget what the socket's connect kept (Linux 5.9). */
SEC("cgroup/sock_release")
int lb_sock_release(struct bpf_sock *ctx)
{
	sock_forget_reverse(ctx);
	return SYS_PROCEED;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
