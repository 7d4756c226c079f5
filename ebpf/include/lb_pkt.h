/* Parsing the packets the NodePort programs handle, and rewriting their addresses and ports:
 * Ethernet, then IPv4 (options skipped) or IPv6 without extension headers, then TCP or UDP.
 * Anything else (fragments, extension headers, other protocols, a packet shorter than the
 * headers or the IP length it claims) is not parsed, and the programs pass it untouched.
 */
#ifndef LB_PKT_H
#define LB_PKT_H

#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>

#include "lb_ctx.h"
#include "lb_addr.h"

#define LB_IP_MF 0x2000
#define LB_IP_OFFSET 0x1fff
#define LB_TCP_FIN 0x01
#define LB_TCP_SYN 0x02
#define LB_TCP_RST 0x04
#define LB_TCP_FLAGS_OFF 13   /* the TCP header's byte of FIN, SYN, RST, ... */

/* A parsed packet: its tuple as the conntrack key, and where its headers are. */
struct lb_flow {
	struct lb_ct_key key;  /* addresses, ports and protocol as the packet arrived */
	__u32 l4_off;          /* offset of the TCP/UDP header */
	__u8 v6;               /* IPv6 (else IPv4) */
	__u8 tcp_flags;        /* the TCP flags byte, 0 for UDP */
};

/* Fills *flow from the packet; 0 when it is one the programs handle. */
static __always_inline int lb_parse(lb_ctx_t *ctx, struct lb_flow *flow)
{
	__u32 len = ctx_len(ctx);
	__be16 proto;
	__be16 ports[2];
	__u32 l4_len;

	if (ctx_load(ctx, offsetof(struct ethhdr, h_proto), &proto, sizeof(proto)))
		return -1;
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;

		if (ctx_load(ctx, ETH_HLEN, &ip, sizeof(ip)) || ip.version != 4 || ip.ihl < 5)
			return -1;
		if (ip.frag_off & bpf_htons(LB_IP_MF | LB_IP_OFFSET))
			return -1;
		/* Cut short: the checksums could not be updated over what is missing. */
		if (bpf_ntohs(ip.tot_len) > len - ETH_HLEN)
			return -1;
		lb_addr_from_v4(&flow->key.saddr, ip.saddr);
		lb_addr_from_v4(&flow->key.daddr, ip.daddr);
		flow->key.proto = ip.protocol;
		flow->l4_off = ETH_HLEN + ip.ihl * 4;
		flow->v6 = 0;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;

		if (ctx_load(ctx, ETH_HLEN, &ip6, offsetof(struct ipv6hdr, saddr)) || ip6.version != 6)
			return -1;
		if (sizeof(ip6) + bpf_ntohs(ip6.payload_len) > len - ETH_HLEN)
			return -1;
		/* Each address straight from the packet into the key: no copy of the header's
		 * in registers, which the tight frame of the programs' entry would spill. */
		if (ctx_load(ctx, ETH_HLEN + offsetof(struct ipv6hdr, saddr), flow->key.saddr.bytes,
			     16) ||
		    ctx_load(ctx, ETH_HLEN + offsetof(struct ipv6hdr, daddr), flow->key.daddr.bytes,
			     16))
			return -1;
		flow->key.proto = ip6.nexthdr;
		flow->l4_off = ETH_HLEN + sizeof(ip6);
		flow->v6 = 1;
	} else {
		return -1;
	}
	if (flow->key.proto == IPPROTO_TCP)
		l4_len = sizeof(struct tcphdr);
	else if (flow->key.proto == IPPROTO_UDP)
		l4_len = sizeof(struct udphdr);
	else
		return -1;
	if (len < flow->l4_off + l4_len)
		return -1;
	/* Constant lengths: XDP copies them from the frame itself. */
	if (ctx_load(ctx, flow->l4_off, ports, sizeof(ports)))
		return -1;
	flow->key.sport = ports[0];
	flow->key.dport = ports[1];
	flow->tcp_flags = 0;
	if (flow->key.proto == IPPROTO_TCP &&
	    ctx_load(ctx, flow->l4_off + LB_TCP_FLAGS_OFF, &flow->tcp_flags, 1))
		return -1;
	return 0;
}

/* Offset of the TCP or UDP checksum. */
static __always_inline __u32 lb_l4_csum_off(const struct lb_flow *flow)
{
	return flow->l4_off + (flow->key.proto == IPPROTO_TCP ? offsetof(struct tcphdr, check)
							       : offsetof(struct udphdr, check));
}

/* bpf_csum_diff(from, 4 * words, to, 4 * words, 0) without the helper call, which costs as
 * much as the rest of a rewrite: the one's-complement sum of `to`'s words and of the
 * complements of `from`'s, a 32-bit partial sum that the checksum updates fold. */
static __always_inline __u32 lb_csum_diff(const __be32 *from, const __be32 *to, int words)
{
	__u64 sum = 0;
	int i;

#pragma unroll
	for (i = 0; i < words; i++)
		sum += (__u64)(__u32)~from[i] + to[i];
	sum = (sum & 0xffffffff) + (sum >> 32);
	sum = (sum & 0xffffffff) + (sum >> 32);
	return (__u32)sum;
}

/* Rewrites the packet's addresses and ports to the entry's, with the checksums. The flow's key
 * keeps what the packet arrived with. 0 on success. */
static __always_inline int lb_rewrite(lb_ctx_t *ctx, const struct lb_flow *flow,
				      const struct lb_ct_entry *to)
{
	int udp = flow->key.proto == IPPROTO_UDP;
	__u32 csum_off = lb_l4_csum_off(flow);
	/* Read as one 32-bit word each: aligned as one. */
	__be16 old_ports[2] __attribute__((aligned(4))) = { flow->key.sport, flow->key.dport };
	__be16 new_ports[2] __attribute__((aligned(4))) = { to->sport, to->dport };
	__s64 diff;

	if (flow->v6) {
		union lb_addr old_addrs[2] = { flow->key.saddr, flow->key.daddr };
		union lb_addr new_addrs[2] = { to->saddr, to->daddr };

		/* The helper here: eight words in line hold so many registers that the
		 * offsets spill, and Linux 5.10's verifier loses their bounds on the way. */
		diff = bpf_csum_diff((__be32 *)old_addrs, 32, (__be32 *)new_addrs, 32, 0);
		if (ctx_store(ctx, ETH_HLEN + offsetof(struct ipv6hdr, saddr), new_addrs, 32))
			return -1;
	} else {
		__be32 old_addrs[2] = { flow->key.saddr.words[3], flow->key.daddr.words[3] };
		__be32 new_addrs[2] = { to->saddr.words[3], to->daddr.words[3] };

		diff = lb_csum_diff(old_addrs, new_addrs, 2);
		if (ctx_store(ctx, ETH_HLEN + offsetof(struct iphdr, saddr), new_addrs, 8) ||
		    ctx_l3_csum_add(ctx, ETH_HLEN + offsetof(struct iphdr, check), diff))
			return -1;
	}
	if (ctx_l4_csum_add(ctx, csum_off, diff, 1, udp))
		return -1;
	diff = lb_csum_diff((__be32 *)old_ports, (__be32 *)new_ports, 1);
	if (ctx_store(ctx, flow->l4_off, new_ports, 4) || ctx_l4_csum_add(ctx, csum_off, diff, 0, udp))
		return -1;
	return 0;
}

/* Decrements the TTL (IPv4, with its checksum) or hop limit (IPv6) of a packet the program
 * forwards itself. 0 on success, -1 when it would reach zero or the packet cannot be written. */
static __always_inline int lb_dec_ttl(lb_ctx_t *ctx, const struct lb_flow *flow)
{
	__u8 ttl;

	if (flow->v6) {
		__u32 off = ETH_HLEN + offsetof(struct ipv6hdr, hop_limit);

		if (ctx_load(ctx, off, &ttl, 1) || ttl <= 1)
			return -1;
		ttl--;
		return ctx_store(ctx, off, &ttl, 1);
	} else {
		__u32 off = ETH_HLEN + offsetof(struct iphdr, ttl);
		__be16 old_word, new_word;

		/* TTL and protocol form one 16-bit word of the header checksum. */
		if (ctx_load(ctx, off, &old_word, 2))
			return -1;
		ttl = ((__u8 *)&old_word)[0];
		if (ttl <= 1)
			return -1;
		new_word = old_word;
		((__u8 *)&new_word)[0] = ttl - 1;
		if (ctx_store(ctx, off, &new_word, 2))
			return -1;
		return ctx_l3_csum_replace2(ctx, ETH_HLEN + offsetof(struct iphdr, check), old_word,
					    new_word);
	}
}

#endif /* LB_PKT_H */
