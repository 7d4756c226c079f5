// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Load balancing at tc: lb_nodeport.h's datapath on a NodePort device's ingress and egress
 * (north-south), and, with socketLB.hostNamespaceOnly, on the ingress of pods' host-side
 * interfaces (their egress runs lb_nodeport_egress, which gives replies their frontend back). */

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

SEC("classifier")
int lb_pod_ingress(struct __sk_buff *skb)
{
	return lb_from_pod(skb);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
