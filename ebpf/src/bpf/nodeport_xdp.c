// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* North-south load balancing at XDP (loadBalancer.acceleration): lb_nodeport.h's ingress
 * datapath, the same source as the tc program's, compiled over XDP's context layer. A frame it
 * forwards leaves at once (XDP_TX or a redirect); one it passes carries, in its metadata, what
 * the device's tc ingress program still has to do with it (lb_ctx_xdp.h). Replies of local
 * backends are translated by the tc egress program as without XDP.
 */

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "lb_ctx_xdp.h"
#include "lb_nodeport.h"

SEC("xdp")
int lb_nodeport_xdp(struct xdp_md *ctx)
{
	return lb_nodeport_from_device(ctx);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
