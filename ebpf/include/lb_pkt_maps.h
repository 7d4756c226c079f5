/* The maps of the packet programs (tc and XDP) beyond those they share with the socket
 * programs: connection tracking with NAT, the NodePort devices and the drop counters. Only
 * the packet object defines them, so a node with socket-level balancing alone does not
 * allocate a conntrack table. Pinned by name beside the shared maps.
 */
#ifndef LB_PKT_MAPS_H
#define LB_PKT_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "lb_types.h"

/* Most NodePort devices a node has (a placeholder the loader keeps). */
#define LB_DEVICES_MAX 256

/* Connection tracking and NAT: a packet's tuple -> the tuple it leaves with (lb_ct_entry).
 * LRU: under pressure the least recently used flows go first; the agent deletes expired
 * entries (LB_CT_* lifetimes). Sized by bpf.lbMapMax. Version 2 added the next hop to the
 * value; an agent finding version 1 pinned copies its entries over (lb::datapath::migrate). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct lb_ct_key);
	__type(value, struct lb_ct_entry);
	__uint(max_entries, LB_MAP_PLACEHOLDER_SIZE);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb_ct_v2 SEC(".maps");

/* A new flow's two conntrack entries while the program builds them: off the stack, where
 * Linux 5.10 counts the frames of the whole call chain against 512 bytes. Per CPU, one
 * element: a program runs to its end on its CPU, and the packet programs do not interrupt each
 * other there. Not pinned. */
struct lb_new_entries {
	struct lb_ct_entry fwd;  /* client -> frontend becomes ... */
	struct lb_ct_entry rev;  /* ... and its replies */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct lb_new_entries);
	__uint(max_entries, 1);
} lb_new_entries SEC(".maps");

/* The NodePort devices by ifindex, with the node's addresses on them; kept by the agent. A
 * backend reached through one of them is on another node. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct lb_device);
	__uint(max_entries, LB_DEVICES_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb_devices_v1 SEC(".maps");

/* The value size the object declares for lb_maglev_v1: a placeholder. The agent creates and
 * pins the map before loading, with a value of maglev.tableSize (cfg_maglev_m) backend ids, and
 * the verifier checks every access against that real size. */
#define LB_MAGLEV_PLACEHOLDER_M 251

/* Maglev lookup tables (loadBalancer.algorithm=maglev): a frontend's rev_nat_index (u32) ->
 * __u32[cfg_maglev_m] backend ids, the table crate::maglev::build_table makes over the
 * frontend's external-scope backends. One entry per external frontend with active backends,
 * replaced whole (one update) when its backends change. Sizes by key_size/value_size, not BTF
 * types: the value's length is only known at load time. Sized by bpf.lbMapMax. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, LB_MAGLEV_PLACEHOLDER_M * sizeof(__u32));
	__uint(max_entries, LB_MAP_PLACEHOLDER_SIZE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb_maglev_v1 SEC(".maps");

/* Why service packets were dropped: one u64 per enum lb_counter, per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, LB_CNT_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb_counters_v1 SEC(".maps");

#endif /* LB_PKT_MAPS_H */
