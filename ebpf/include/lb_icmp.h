/* Rejecting a packet as kube-proxy's REJECT rule does for a service without endpoints: the
 * packet becomes an ICMP destination unreachable, port unreachable (ICMPv6 type 1 code 4) from
 * the address it was sent to, quoting its IP header and first 8 bytes, sent back out of the
 * device it came in on. A TCP client's connect fails at once with ECONNREFUSED instead of
 * timing out.
 */
#ifndef LB_ICMP_H
#define LB_ICMP_H

#include "lb_pkt.h"

/* <linux/icmp.h> pulls in the C library's headers, which the BPF target has not: the few
 * definitions used here. */
#define LB_ICMP_DEST_UNREACH 3
#define LB_ICMP_PORT_UNREACH 3
#define LB_ICMPV6_DEST_UNREACH 1
#define LB_ICMPV6_PORT_UNREACH 4

/* The ICMP and ICMPv6 header: type, code, checksum and a word unused by unreachables. */
struct lb_icmp_hdr {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	__be32 unused;
};

#define LB_ICMP_TTL 64
/* What is quoted: the IP header without options and 8 bytes of what follows. */
#define LB_ICMP4_QUOTE (sizeof(struct iphdr) + 8)
#define LB_ICMP6_QUOTE (sizeof(struct ipv6hdr) + 8)

/* A one's-complement sum folded to 16 bits and complemented: the checksum field's value. */
static __always_inline __u16 lb_csum_fold(__s64 sum)
{
	__u32 csum = (__u32)sum;

	csum = (csum & 0xffff) + (csum >> 16);
	csum = (csum & 0xffff) + (csum >> 16);
	return (__u16)~csum;
}

/* The reply's Ethernet header: the packet's, with source and destination swapped. */
static __always_inline int lb_icmp_eth(lb_ctx_t *ctx, struct ethhdr *eth)
{
	__u8 mac[ETH_ALEN];

	if (ctx_load(ctx, 0, eth, sizeof(*eth)))
		return -1;
	__builtin_memcpy(mac, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, mac, ETH_ALEN);
	return 0;
}

static __noinline int lb_reject4(lb_ctx_t *ctx, const struct lb_flow *flow)
{
	struct ethhdr eth;
	struct {
		struct iphdr ip;
		struct lb_icmp_hdr icmp;
		__u8 quote[LB_ICMP4_QUOTE];
	} out = {};

	_Static_assert(sizeof(out) == 56, "IPv4 + ICMP + quote, no padding");
	/* An IPv4 header with options is not quoted whole here: drop the packet instead. */
	if (flow->l4_off != ETH_HLEN + sizeof(struct iphdr))
		return LB_DROP;
	if (lb_icmp_eth(ctx, &eth) || ctx_load(ctx, ETH_HLEN, out.quote, sizeof(out.quote)))
		return LB_DROP;
	out.ip.version = 4;
	out.ip.ihl = 5;
	out.ip.tot_len = bpf_htons(sizeof(out));
	out.ip.ttl = LB_ICMP_TTL;
	out.ip.protocol = IPPROTO_ICMP;
	out.ip.saddr = flow->key.daddr.words[3];
	out.ip.daddr = flow->key.saddr.words[3];
	out.ip.check = lb_csum_fold(bpf_csum_diff(NULL, 0, (__be32 *)&out.ip, sizeof(out.ip), 0));
	out.icmp.type = LB_ICMP_DEST_UNREACH;
	out.icmp.code = LB_ICMP_PORT_UNREACH;
	out.icmp.checksum = lb_csum_fold(
		bpf_csum_diff(NULL, 0, (__be32 *)&out.icmp, sizeof(out.icmp) + sizeof(out.quote), 0));
	/* XDP may have no room to grow the frame: then tc rejects it. */
	if (ctx_set_len(ctx, sizeof(eth) + sizeof(out)))
		return ctx_hand_to_tc(ctx, LB_XFER_REJECT, 0);
	if (ctx_store(ctx, 0, &eth, sizeof(eth)) || ctx_store(ctx, sizeof(eth), &out, sizeof(out)))
		return LB_DROP;
	return ctx_redirect(ctx, ctx_ifindex(ctx));
}

static __noinline int lb_reject6(lb_ctx_t *ctx, const struct lb_flow *flow)
{
	struct ethhdr eth;
	struct {
		struct ipv6hdr ip6;
		struct lb_icmp_hdr icmp6;
		__u8 quote[LB_ICMP6_QUOTE];
	} out = {};
	struct {
		union lb_addr saddr;
		union lb_addr daddr;
		__be32 len;
		__be32 nexthdr;
	} pseudo = {};
	__s64 sum;

	_Static_assert(sizeof(out) == 96, "IPv6 + ICMPv6 + quote, no padding");
	if (lb_icmp_eth(ctx, &eth) || ctx_load(ctx, ETH_HLEN, out.quote, sizeof(out.quote)))
		return LB_DROP;
	out.ip6.version = 6;
	out.ip6.payload_len = bpf_htons(sizeof(out.icmp6) + sizeof(out.quote));
	out.ip6.nexthdr = IPPROTO_ICMPV6;
	out.ip6.hop_limit = LB_ICMP_TTL;
	__builtin_memcpy(&out.ip6.saddr, flow->key.daddr.bytes, 16);
	__builtin_memcpy(&out.ip6.daddr, flow->key.saddr.bytes, 16);
	out.icmp6.type = LB_ICMPV6_DEST_UNREACH;
	out.icmp6.code = LB_ICMPV6_PORT_UNREACH;
	pseudo.saddr = flow->key.daddr;
	pseudo.daddr = flow->key.saddr;
	pseudo.len = bpf_htonl(sizeof(out.icmp6) + sizeof(out.quote));
	pseudo.nexthdr = bpf_htonl(IPPROTO_ICMPV6);
	sum = bpf_csum_diff(NULL, 0, (__be32 *)&pseudo, sizeof(pseudo), 0);
	sum = bpf_csum_diff(NULL, 0, (__be32 *)&out.icmp6, sizeof(out.icmp6) + sizeof(out.quote),
			    (__u32)sum);
	out.icmp6.checksum = lb_csum_fold(sum);
	/* XDP may have no room to grow the frame: then tc rejects it. */
	if (ctx_set_len(ctx, sizeof(eth) + sizeof(out)))
		return ctx_hand_to_tc(ctx, LB_XFER_REJECT, 0);
	if (ctx_store(ctx, 0, &eth, sizeof(eth)) || ctx_store(ctx, sizeof(eth), &out, sizeof(out)))
		return LB_DROP;
	return ctx_redirect(ctx, ctx_ifindex(ctx));
}

/* Rejects the packet: answers it with an ICMP port unreachable out of the device it came in
 * on. */
static __always_inline int lb_reject(lb_ctx_t *ctx, const struct lb_flow *flow)
{
	return flow->v6 ? lb_reject6(ctx, flow) : lb_reject4(ctx, flow);
}

#endif /* LB_ICMP_H */
