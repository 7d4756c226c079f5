// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Programs that do nothing: the floors the benches measure the real programs against. The
 * XDP and tc ones: what BPF_PROG_TEST_RUN itself costs per packet, per program type (`cargo
 * xtask bench nodeport`). The cgroup ones, on the socket-LB programs' hooks: what the kernel's
 * hook machinery costs a connection before any program does work (`cargo xtask bench
 * socket-lb`). */

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

/* One program per hook: a sock_addr program is loaded for one attach type. 1 lets the call
 * go on unchanged. */
#define LB_EMPTY_SOCK_ADDR(name, section)                                                    \
	SEC(section)                                                                         \
	int name(struct bpf_sock_addr *ctx)                                                  \
	{                                                                                    \
		return 1;                                                                    \
	}

LB_EMPTY_SOCK_ADDR(lb_empty_connect4, "cgroup/connect4")
LB_EMPTY_SOCK_ADDR(lb_empty_sendmsg4, "cgroup/sendmsg4")
LB_EMPTY_SOCK_ADDR(lb_empty_recvmsg4, "cgroup/recvmsg4")
LB_EMPTY_SOCK_ADDR(lb_empty_getpeername4, "cgroup/getpeername4")
LB_EMPTY_SOCK_ADDR(lb_empty_bind4, "cgroup/bind4")
LB_EMPTY_SOCK_ADDR(lb_empty_connect6, "cgroup/connect6")
LB_EMPTY_SOCK_ADDR(lb_empty_sendmsg6, "cgroup/sendmsg6")
LB_EMPTY_SOCK_ADDR(lb_empty_recvmsg6, "cgroup/recvmsg6")
LB_EMPTY_SOCK_ADDR(lb_empty_getpeername6, "cgroup/getpeername6")
LB_EMPTY_SOCK_ADDR(lb_empty_bind6, "cgroup/bind6")

SEC("cgroup/sock_release")
int lb_empty_sock_release(struct bpf_sock *sk)
{
	return 1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
