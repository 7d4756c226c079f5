// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* North-south load balancing at tc: lb_nodeport.h's datapath on a NodePort device's ingress
 * and egress. */

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "lb_ctx_tc.h"
#include "lb_nodeport.h"

SEC("classifier")
int lb_nodeport_ingress(struct __sk_buff *skb)
{
	return lb_nodeport_from_device(skb);
}

SEC("classifier")
int lb_nodeport_egress(struct __sk_buff *skb)
{
	return lb_nodeport_to_device(skb);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
