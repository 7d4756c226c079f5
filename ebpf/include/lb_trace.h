/* trace-sock events: what a socket hook saw before and after it translated an address. */
#ifndef LB_TRACE_H
#define LB_TRACE_H

#include <bpf/bpf_helpers.h>

#include "lb_maps.h"

/* The event never appears in a map's BTF (a ring buffer has no value type), so its layout is
 * pinned here; ebpf/tests/layout.rs checks the Rust mirror against the same numbers. */
/* Never read: puts struct lb_trace_sock, and with it enum lb_trace_kind, into the object's
 * BTF, where ebpf/tests/layout.rs finds them. */
const volatile struct lb_trace_sock lb_btf_trace_sock = {};
_Static_assert(sizeof(struct lb_trace_sock) == 40, "lb_trace_sock size");
_Static_assert(__builtin_offsetof(struct lb_trace_sock, address) == 16, "address offset");
_Static_assert(__builtin_offsetof(struct lb_trace_sock, port) == 32, "port offset");
_Static_assert(__builtin_offsetof(struct lb_trace_sock, kind) == 34, "kind offset");
_Static_assert(__builtin_offsetof(struct lb_trace_sock, proto) == 35, "proto offset");
_Static_assert(__builtin_offsetof(struct lb_trace_sock, cpu) == 36, "cpu offset");

/* Sends one event when `lbctl monitor` is listening; costs one array lookup otherwise. */
static __always_inline void lb_emit_trace(void *ctx, enum lb_trace_kind kind, __u8 proto,
					  const union lb_addr *address, __be16 port)
{
	struct lb_trace_sock ev = {};
	__u32 zero = 0;
	__u32 *on = bpf_map_lookup_elem(&lb_monitor_v1, &zero);

	if (!on || !*on)
		return;
	ev.cgroup_id = bpf_get_current_cgroup_id();
	ev.sock_cookie = bpf_get_socket_cookie(ctx);
	ev.address = *address;
	ev.port = port;
	ev.kind = kind;
	ev.proto = proto;
	ev.cpu = bpf_get_smp_processor_id();
	bpf_ringbuf_output(&lb_events_v1, &ev, sizeof(ev), 0);
}

#endif /* LB_TRACE_H */
