// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Socket-level load balancing: cgroup sock_addr hooks that translate a service address to a
 * backend at connect/sendmsg, and back at recvmsg/getpeername, so no packet is ever NATed. */

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "lb_sock.h"

SEC("cgroup/connect4")
int lb_sock4_connect(struct bpf_sock_addr *ctx)
{
	sock4_xlate_fwd(ctx);
	return SYS_PROCEED;
}

/* Unconnected UDP: every datagram is translated on its own. */
SEC("cgroup/sendmsg4")
int lb_sock4_sendmsg(struct bpf_sock_addr *ctx)
{
	sock4_xlate_fwd(ctx);
	return SYS_PROCEED;
}

/* Unconnected UDP: replies come from the backend; show the service the datagram went to. */
SEC("cgroup/recvmsg4")
int lb_sock4_recvmsg(struct bpf_sock_addr *ctx)
{
	sock4_xlate_rev(ctx);
	return SYS_PROCEED;
}

SEC("cgroup/getpeername4")
int lb_sock4_getpeername(struct bpf_sock_addr *ctx)
{
	sock4_xlate_rev(ctx);
	return SYS_PROCEED;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
