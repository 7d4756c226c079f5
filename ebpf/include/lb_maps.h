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

/* What each unconnected send asked for, per socket and destination, so recvmsg can show it.
 * LRU: an entry of a closed socket ages out instead of filling the map. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct lb_sock_key);
	__type(value, struct lb_sock_value);
	__uint(max_entries, LB_MAP_PLACEHOLDER_SIZE);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb_reverse_sk_v1 SEC(".maps");

/* What each connected socket's translated connect did, by socket cookie: getpeername and
 * recvmsg show the frontend from it. Keyed by the socket alone, so sock_release deletes it even
 * once the socket lost its destination (a failed connect, connect(AF_UNSPEC)), a reconnect
 * overwrites it, and a connect straight to an address deletes it. The map holds live sockets
 * only, except on kernels without sock_release (before 5.9), where the LRU evicts closed
 * sockets' entries. Per-CPU LRU lists: an entry deleted at close is the next one reused on that
 * CPU, so the connect path touches memory that is already in cache. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, __u64);
	__type(value, struct lb_sock_conn);
	__uint(max_entries, LB_MAP_PLACEHOLDER_SIZE);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb_sock_conn_v1 SEC(".maps");

/* How many lb_sock_conn entries each group of socket cookies (cookie % LB_SOCK_CONN_HINTS) may
 * have: a counter a translated connect increments and the deletion of its entry decrements.
 * sock_release and an untranslated connect look in lb_sock_conn only when their group's
 * counter is not zero, so the sockets that were never translated (most of a node's) cost a
 * read of this small, cache-warm array instead of a hash lookup in a large map. A counter may
 * stay above the truth (a reconnect counts twice, the LRU evicts without counting down): that
 * costs a lookup that finds nothing, never a missed deletion. */
#define LB_SOCK_CONN_HINTS 16384

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, LB_SOCK_CONN_HINTS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb_sock_conn_hint_v1 SEC(".maps");

/* Connected sockets' translations in a fixed array indexed by socket cookie, in front of
 * lb_sock_conn. The kernel hands out socket cookies in per-CPU runs of consecutive numbers,
 * so connection after connection lands in neighbouring, cache-warm slots, where the hash map
 * lands each connect and each close in a random bucket of a large table (measured: a connect
 * costs about half as much). A socket whose slot another live socket holds uses lb_sock_conn
 * instead. Claiming and freeing a slot takes BPF atomic compare-and-exchange (Linux 5.12):
 * only the programs built for it (sock_lb_atomics.o) touch this map; elsewhere it stays
 * empty. A power of two, never resized: not sized by bpf.lbMapMax. */
#define LB_SOCK_CONN_SLOTS 65536
/* The top bit of a slot's cookie: a connect is writing the slot. Cookies never reach it. */
#define LB_SOCK_SLOT_CLAIMED (1ULL << 63)

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct lb_sock_conn_slot);
	__uint(max_entries, LB_SOCK_CONN_SLOTS);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb_sock_conn_slots_v1 SEC(".maps");

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

/* loadBalancerSourceRanges: the client CIDRs each frontend flagged LB_SVC2_SOURCE_RANGES
 * allows; the value is a reserved zero byte. Kept by the agent; an LPM trie allocates as it
 * goes (the kernel requires BPF_F_NO_PREALLOC). */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct lb_src_range_key);
	__type(value, __u8);
	__uint(max_entries, LB_MAP_PLACEHOLDER_SIZE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb_source_ranges_v1 SEC(".maps");

/* The node's own addresses, kept by the agent. A node can hold thousands (kube-proxy's IPVS
 * dummy device carries one per service address), so the agent sizes it by bpf.lbMapMax;
 * written only by the agent, so entries are allocated as they come instead of up front. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, union lb_addr);
	__type(value, struct lb_local_addr);
	__uint(max_entries, LB_MAP_PLACEHOLDER_SIZE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb_local_addrs_v1 SEC(".maps");

/* How many `lbctl monitor`s can listen at once. Each has a slot of its own, so each sees every
 * event; a monitor that finds every slot taken says so. */
#define LB_MONITOR_SLOTS 8

/* Which monitor slots listen: bit n is set while a monitor reads lb_events_s<n>_v2, so the hooks
 * build an event only when someone reads it. Monitors set and clear their bit; a killed
 * monitor's bit is cleared by the next monitor or the agent (lb::datapath::monitor), and until
 * then the kernel has already dropped its buffers, so nothing is sent. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u32);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb_monitor_v2 SEC(".maps");

/* Trace events of monitor slot n: one perf buffer per CPU (the loader sizes the array to the
 * CPUs). A monitor installs its buffers through its own descriptor of the pinned array, and
 * the kernel removes them when that descriptor closes (Linux 4.10), so a monitor killed with
 * SIGKILL leaves no buffer behind. bpf_perf_event_output from cgroup sock_addr programs needs
 * Linux 5.7. */
#define LB_EVENTS_SLOT(n)                                                                   \
	struct {                                                                            \
		__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);                                \
		__uint(key_size, sizeof(__u32));                                            \
		__uint(value_size, sizeof(__u32));                                          \
		__uint(pinning, LIBBPF_PIN_BY_NAME);                                        \
	} lb_events_s##n##_v2 SEC(".maps");

LB_EVENTS_SLOT(0)
LB_EVENTS_SLOT(1)
LB_EVENTS_SLOT(2)
LB_EVENTS_SLOT(3)
LB_EVENTS_SLOT(4)
LB_EVENTS_SLOT(5)
LB_EVENTS_SLOT(6)
LB_EVENTS_SLOT(7)

#endif /* LB_MAPS_H */
