// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Learning the agent's own network namespace cookie on kernels without SO_NETNS_COOKIE
 * (before 5.14): attached for a moment to the agent's cgroup, this connect4 hook records
 * bpf_get_netns_cookie() of the one connect the agent makes on a socket whose cookie it read
 * beforehand, then the agent detaches it. Every other connect passes untouched, so no other
 * process in the cgroup (a pod) can pass its namespace off as the agent's. */

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

const volatile __be32 cfg_probe_ip4 = 0;    /* the probe's destination address */
const volatile __u32 cfg_probe_port = 0;    /* its port, as user_port holds it */
const volatile __u64 cfg_probe_cookie = 0;  /* the agent's probe socket (SO_COOKIE) */

/* The cookie seen, at index 0; 0 until the probe connect ran. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 1);
} lb_netns_probe SEC(".maps");

SEC("cgroup/connect4")
int lb_netns_probe_connect4(struct bpf_sock_addr *ctx)
{
	__u32 index = 0;
	__u64 cookie;

	if (ctx->user_ip4 != cfg_probe_ip4 || ctx->user_port != cfg_probe_port ||
	    bpf_get_socket_cookie(ctx) != cfg_probe_cookie)
		return 1;
	cookie = bpf_get_netns_cookie(ctx);
	bpf_map_update_elem(&lb_netns_probe, &index, &cookie, BPF_ANY);
	return 1;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
