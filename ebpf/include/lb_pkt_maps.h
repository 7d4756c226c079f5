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
 * entries (LB_CT_* lifetimes). Sized by bpf.lbMapMax. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct lb_ct_key);
	__type(value, struct lb_ct_entry);
	__uint(max_entries, LB_MAP_PLACEHOLDER_SIZE);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb_ct_v1 SEC(".maps");

/* The NodePort devices by ifindex, with the node's addresses on them; kept by the agent. A
 * backend reached through one of them is on another node. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct lb_device);
	__uint(max_entries, LB_DEVICES_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb_devices_v1 SEC(".maps");

/* Why service packets were dropped: one u64 per enum lb_counter, per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, LB_CNT_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} lb_counters_v1 SEC(".maps");

#endif /* LB_PKT_MAPS_H */
