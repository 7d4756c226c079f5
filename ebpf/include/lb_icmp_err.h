/* Parsing the ICMP errors lb_nodeport.h translates for the flows it tracks: an ICMPv4
 * destination unreachable (every code, fragmentation needed included) or time exceeded, an
 * ICMPv6 destination unreachable, packet too big or time exceeded, quoting the IP header and
 * the first 8 bytes of a TCP or UDP packet. Path MTU discovery through the node depends on
 * them reaching the packet's original sender with the tuple it sent.
 *
 * Only the plain layout is taken, so that every header is at a constant offset (XDP and tc
 * alike): an outer IPv4 header without options (or an outer IPv6 header without extension
 * headers), the ICMP header, an inner IPv4 header without options (or an inner IPv6 header
 * whose next header is TCP or UDP), and 8 bytes of it, all within the IP length the outer
 * header claims. Anything else is not parsed, and passes untouched.
 */
#ifndef LB_ICMP_ERR_H
#define LB_ICMP_ERR_H

#include "lb_pkt.h"

#define LB_IPPROTO_ICMP 1
#define LB_IPPROTO_ICMPV6 58
#define LB_ICMP_TIME_EXCEEDED 11
#define LB_ICMPV6_PKT_TOOBIG 2
#define LB_ICMPV6_TIME_EXCEED 3

/* Where the headers of an error are: the ICMP header after the outer IP header, the quoted
 * IP header after the ICMP header's 8 bytes, the quoted ports after that. */
#define LB_ICMP_ERR_ICMP4 (ETH_HLEN + 20)
#define LB_ICMP_ERR_INNER4 (LB_ICMP_ERR_ICMP4 + 8)
#define LB_ICMP_ERR_PORTS4 (LB_ICMP_ERR_INNER4 + 20)
#define LB_ICMP_ERR_ICMP6 (ETH_HLEN + 40)
#define LB_ICMP_ERR_INNER6 (LB_ICMP_ERR_ICMP6 + 8)
#define LB_ICMP_ERR_PORTS6 (LB_ICMP_ERR_INNER6 + 40)
/* The shortest IP packet carrying an error to translate: outer header, ICMP header, quoted
 * header and 8 bytes. */
#define LB_ICMP_ERR_MIN4 (20 + 8 + 20 + 8)
#define LB_ICMP_ERR_MIN6 (40 + 8 + 40 + 8)

/* An ICMP error about a TCP or UDP packet, and what it becomes (filled by lb_nodeport.h). */
struct lb_icmp_err {
	struct lb_ct_key quoted;    /* the quoted packet's tuple, as quoted */
	struct lb_ct_key inner;     /* the quoted tuple after translation */
	union lb_addr saddr;        /* outer source, as the error came */
	union lb_addr daddr;        /* outer destination, as the error came */
	union lb_addr new_saddr;    /* outer source after translation */
	union lb_addr new_daddr;    /* outer destination after translation */
	__u8 v6;                    /* ICMPv6 over IPv6 (else ICMP over IPv4) */
};

/* Whether a quoted protocol's first 8 bytes hold the ports this datapath tracks. */
static __always_inline int lb_icmp_err_proto_ok(__u8 proto)
{
	return proto == IPPROTO_TCP || proto == IPPROTO_UDP;
}

static __always_inline int lb_icmp_err_parse4(lb_ctx_t *ctx, struct lb_icmp_err *err)
{
	struct iphdr ip;
	__u8 type;

	if (ctx_load(ctx, ETH_HLEN, &ip, sizeof(ip)) || ip.version != 4 || ip.ihl != 5)
		return -1;
	if (ip.protocol != LB_IPPROTO_ICMP || (ip.frag_off & bpf_htons(LB_IP_MF | LB_IP_OFFSET)))
		return -1;
	if (bpf_ntohs(ip.tot_len) > ctx_len(ctx) - ETH_HLEN ||
	    bpf_ntohs(ip.tot_len) < LB_ICMP_ERR_MIN4)
		return -1;
	lb_addr_from_v4(&err->saddr, ip.saddr);
	lb_addr_from_v4(&err->daddr, ip.daddr);
	if (ctx_load(ctx, LB_ICMP_ERR_ICMP4, &type, 1))
		return -1;
	if (type != 3 /* ICMP_DEST_UNREACH */ && type != LB_ICMP_TIME_EXCEEDED)
		return -1;
	/* The quoted header: a later fragment's first bytes are not its ports. */
	if (ctx_load(ctx, LB_ICMP_ERR_INNER4, &ip, sizeof(ip)) || ip.version != 4 || ip.ihl != 5)
		return -1;
	if (!lb_icmp_err_proto_ok(ip.protocol) || (ip.frag_off & bpf_htons(LB_IP_OFFSET)))
		return -1;
	lb_addr_from_v4(&err->quoted.saddr, ip.saddr);
	lb_addr_from_v4(&err->quoted.daddr, ip.daddr);
	err->quoted.proto = ip.protocol;
	err->v6 = 0;
	return ctx_load(ctx, LB_ICMP_ERR_PORTS4, &err->quoted.sport, 4);
}

static __always_inline int lb_icmp_err_parse6(lb_ctx_t *ctx, struct lb_icmp_err *err)
{
	struct ipv6hdr ip6;
	__u8 type;

	if (ctx_load(ctx, ETH_HLEN, &ip6, sizeof(ip6)) || ip6.version != 6)
		return -1;
	if (ip6.nexthdr != LB_IPPROTO_ICMPV6)
		return -1;
	if (sizeof(ip6) + bpf_ntohs(ip6.payload_len) > ctx_len(ctx) - ETH_HLEN ||
	    sizeof(ip6) + bpf_ntohs(ip6.payload_len) < LB_ICMP_ERR_MIN6)
		return -1;
	__builtin_memcpy(err->saddr.bytes, &ip6.saddr, 16);
	__builtin_memcpy(err->daddr.bytes, &ip6.daddr, 16);
	if (ctx_load(ctx, LB_ICMP_ERR_ICMP6, &type, 1))
		return -1;
	if (type != 1 /* ICMPV6_DEST_UNREACH */ && type != LB_ICMPV6_PKT_TOOBIG &&
	    type != LB_ICMPV6_TIME_EXCEED)
		return -1;
	if (ctx_load(ctx, LB_ICMP_ERR_INNER6, &ip6, sizeof(ip6)) || ip6.version != 6 ||
	    !lb_icmp_err_proto_ok(ip6.nexthdr))
		return -1;
	__builtin_memcpy(err->quoted.saddr.bytes, &ip6.saddr, 16);
	__builtin_memcpy(err->quoted.daddr.bytes, &ip6.daddr, 16);
	err->quoted.proto = ip6.nexthdr;
	err->v6 = 1;
	return ctx_load(ctx, LB_ICMP_ERR_PORTS6, &err->quoted.sport, 4);
}

/* Fills err->quoted, the outer addresses and v6 from the packet; 0 when it is an ICMP error
 * this datapath translates. Not inlined: its headers' copies and the translation's frame are
 * not one (512 bytes for the whole call chain). */
static __noinline int lb_icmp_err_parse(lb_ctx_t *ctx, struct lb_icmp_err *err)
{
	__be16 proto;

	if (ctx_load(ctx, offsetof(struct ethhdr, h_proto), &proto, sizeof(proto)))
		return -1;
	if (proto == bpf_htons(ETH_P_IP))
		return lb_icmp_err_parse4(ctx, err);
	if (proto == bpf_htons(ETH_P_IPV6))
		return lb_icmp_err_parse6(ctx, err);
	return -1;
}

#endif /* LB_ICMP_ERR_H */
