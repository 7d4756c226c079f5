// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* North-south load balancing at tc: NodePort, LoadBalancer and externalIPs frontends for
 * packets entering a NodePort device, with connection tracking and SNAT. (Being written: the
 * programs pass every packet for now.) */

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#include "lb_core.h"
#include "lb_pkt_maps.h"

/* Load-time configuration (set by the agent through the object's .rodata). */
const volatile __u16 cfg_snat_port_min = 61000;
const volatile __u16 cfg_snat_port_max = 65535;
const volatile __u32 cfg_flow_seed = 0;
const volatile __u8 cfg_external_clusterip = 0;

/* Counts a drop on this CPU. Not inlined: drops are rare, and its parameter puts enum
 * lb_counter into the object's BTF, where the layout test checks it. */
static __noinline void lb_count(enum lb_counter counter)
{
	__u32 index = counter;
	__u64 *value = bpf_map_lookup_elem(&lb_counters_v1, &index);

	if (value)
		*value += 1;
}

SEC("tc")
int lb_nodeport_ingress(struct __sk_buff *skb)
{
	struct lb_ct_key key = {};
	struct lb_ct_entry *entry = bpf_map_lookup_elem(&lb_ct_v1, &key);
	__u32 ifindex = skb->ifindex;
	struct lb_device *dev = bpf_map_lookup_elem(&lb_devices_v1, &ifindex);

	if (entry && dev)
		lb_count(LB_CNT_FIB_FAILED);
	return TC_ACT_OK;
}

SEC("tc")
int lb_nodeport_egress(struct __sk_buff *skb)
{
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
