/* trace-sock events: what a socket hook saw before and after it translated an address, sent
 * to every `lbctl monitor` listening (one perf event array per monitor slot, lb_maps.h). */
#ifndef LB_TRACE_H
#define LB_TRACE_H

#include <bpf/bpf_helpers.h>

#include "lb_maps.h"

/* What a monitor receives: the event and when it happened. A monitor reads one buffer per
 * CPU, so it orders the events of a socket that moved between CPUs by this time. */
struct lb_trace_record {
	struct lb_trace_sock event; /* the event */
	__u64 ktime_ns;             /* bpf_ktime_get_ns() when the hook ran */
};

/* Never read: puts struct lb_trace_sock, and with it enum lb_trace_kind, into the object's
 * BTF, where ebpf/tests/layout.rs finds them. */
const volatile struct lb_trace_sock lb_btf_trace_sock = {};

/* The record never appears in a map's BTF (a perf event array has no value type), so its
 * layout is pinned here; ebpf/tests/layout.rs checks the Rust mirror against the same numbers. */
_Static_assert(sizeof(struct lb_trace_sock) == 40, "lb_trace_sock size");
_Static_assert(__builtin_offsetof(struct lb_trace_sock, address) == 16, "address offset");
_Static_assert(__builtin_offsetof(struct lb_trace_sock, port) == 32, "port offset");
_Static_assert(__builtin_offsetof(struct lb_trace_sock, kind) == 34, "kind offset");
_Static_assert(__builtin_offsetof(struct lb_trace_sock, proto) == 35, "proto offset");
_Static_assert(__builtin_offsetof(struct lb_trace_sock, cpu) == 36, "cpu offset");
_Static_assert(sizeof(struct lb_trace_record) == 48, "lb_trace_record size");
_Static_assert(__builtin_offsetof(struct lb_trace_record, ktime_ns) == 40, "ktime_ns offset");

/* Sends the record to slot n's buffer on this CPU when slot n listens. A slot whose monitor
 * died has no buffer any more: the helper returns -ENOENT and nothing is kept. */
#define LB_EMIT_TO_SLOT(n, slots, ctx, rec)                                                 \
	do {                                                                                \
		if ((slots) & (1U << (n)))                                                  \
			bpf_perf_event_output(ctx, &lb_events_s##n##_v2, BPF_F_CURRENT_CPU, \
					      rec, sizeof(*(rec)));                         \
	} while (0)

/* Sends one event to every listening monitor; costs one array lookup when none listens. */
static __always_inline void lb_emit_trace(void *ctx, enum lb_trace_kind kind, __u8 proto,
					  const union lb_addr *address, __be16 port)
{
	struct lb_trace_record rec = {};
	__u32 zero = 0;
	__u32 *listening = bpf_map_lookup_elem(&lb_monitor_v2, &zero);
	__u32 slots;

	if (!listening)
		return;
	slots = *listening;
	if (!slots)
		return;
	rec.event.cgroup_id = bpf_get_current_cgroup_id();
	rec.event.sock_cookie = bpf_get_socket_cookie(ctx);
	rec.event.address = *address;
	rec.event.port = port;
	rec.event.kind = kind;
	rec.event.proto = proto;
	rec.event.cpu = bpf_get_smp_processor_id();
	rec.ktime_ns = bpf_ktime_get_ns();
	LB_EMIT_TO_SLOT(0, slots, ctx, &rec);
	LB_EMIT_TO_SLOT(1, slots, ctx, &rec);
	LB_EMIT_TO_SLOT(2, slots, ctx, &rec);
	LB_EMIT_TO_SLOT(3, slots, ctx, &rec);
	LB_EMIT_TO_SLOT(4, slots, ctx, &rec);
	LB_EMIT_TO_SLOT(5, slots, ctx, &rec);
	LB_EMIT_TO_SLOT(6, slots, ctx, &rec);
	LB_EMIT_TO_SLOT(7, slots, ctx, &rec);
}

#endif /* LB_TRACE_H */
