// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Programs that do nothing: the floor `cargo xtask bench nodeport` measures the NodePort
 * programs against (what BPF_PROG_TEST_RUN itself costs per packet, per program type). */

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int lb_empty_xdp(struct xdp_md *ctx)
{
	return XDP_PASS;
}

SEC("classifier")
int lb_empty_tc(struct __sk_buff *skb)
{
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
