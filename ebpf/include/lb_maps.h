/* The load balancer's maps. Sizes are set at load time from bpf.lbMapMax (the value here is
 * only a placeholder). Every map is pinned by name under the agent's bpffs directory, so an
 * agent restart finds and keeps them; a layout change bumps the name's version.
 */
#ifndef LB_MAPS_H
#define LB_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "lb_types.h"

#define LB_MAP_PLACEHOLDER_SIZE 65536

/* Frontends and their backend slots. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct lb_key);
	__type(value, struct lb_service);
	__uint(max_entries, LB_MAP_PLACEHOLDER_SIZE);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb_services_v1 SEC(".maps");

/* Backends by id. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct lb_backend);
	__uint(max_entries, LB_MAP_PLACEHOLDER_SIZE);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb_backends_v1 SEC(".maps");

/* Frontends by rev_nat_index, for reverse translation. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u16);
	__type(value, struct lb_reverse_nat);
	__uint(max_entries, LB_MAP_PLACEHOLDER_SIZE);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb_reverse_nat_v1 SEC(".maps");

/* What each translated socket asked for, so getpeername and recvmsg can show it. LRU: an
 * entry of a closed socket ages out instead of filling the map. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct lb_sock_key);
	__type(value, struct lb_sock_value);
	__uint(max_entries, LB_MAP_PLACEHOLDER_SIZE);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb_reverse_sk_v1 SEC(".maps");

/* Session affinity: which backend a client last used per frontend. LRU: clients that went away
 * age out. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct lb_affinity_key);
	__type(value, struct lb_affinity_value);
	__uint(max_entries, LB_MAP_PLACEHOLDER_SIZE);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb_affinity_v1 SEC(".maps");

/* Which backends a client with session affinity may stay on: (backend id, frontend id) of every
 * active backend of a frontend with affinity, kept by the agent. An affinity entry follows its
 * backend, not a slot, so unrelated endpoint churn does not move pinned clients. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct lb_affinity_match_key);
	__type(value, __u8);
	__uint(max_entries, LB_MAP_PLACEHOLDER_SIZE);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb_affinity_match_v1 SEC(".maps");

/* The node's own addresses, kept by the agent. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, union lb_addr);
	__type(value, struct lb_local_addr);
	__uint(max_entries, 1024);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb_local_addrs_v1 SEC(".maps");

/* Whether anyone is listening to trace events: index 0 is non-zero while `lbctl monitor` runs,
 * so hooks pay for an event only when someone reads it. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb_monitor_v1 SEC(".maps");

/* Trace events for `lbctl monitor`. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb_events_v1 SEC(".maps");

#endif /* LB_MAPS_H */
