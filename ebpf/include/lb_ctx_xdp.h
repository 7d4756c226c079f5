/* The context layer's XDP half (struct xdp_md; see lb_ctx.h). XDP reads and writes the frame
 * directly, each access checked against its end, as Linux 5.10 has no bpf_xdp_load_bytes. A
 * frame at XDP carries full checksums (no partial checksum of a local socket), so they are
 * updated here by plain one's-complement arithmetic. What XDP cannot do (resolve a neighbour,
 * grow a frame whose driver has no room) it hands to the tc program of the same device through
 * the frame's metadata (struct lb_xfer), with what is left to do, and passes the frame on.
 */
#ifndef LB_CTX_H
#define LB_CTX_H
#define LB_CTX_XDP 1

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "lb_types.h"

typedef struct xdp_md lb_ctx_t;

#define LB_PASS XDP_PASS
#define LB_DROP XDP_DROP

/* The furthest offset a load or store starts at: headers only, and a bound the verifier needs
 * for an offset it cannot know. */
#define LB_XDP_MAX_OFF 512

static __always_inline __u32 ctx_len(const lb_ctx_t *ctx)
{
	return ctx->data_end - ctx->data;
}

/* The device the frame arrived on. Read through a fresh copy of the pointer: clang may
 * otherwise keep &ctx->ingress_ifindex in a register for a second read, and the verifier
 * refuses a load through a moved context pointer. */
static __always_inline __u32 ctx_ifindex(const lb_ctx_t *ctx)
{
	const lb_ctx_t *fresh = ctx;

	asm volatile("" : "+r"(fresh));
	return fresh->ingress_ifindex;
}

/* Where len bytes at off are in the frame, NULL past its end. */
static __always_inline void *ctx_at(const lb_ctx_t *ctx, __u32 off, __u32 len)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	void *at;

	if (off > LB_XDP_MAX_OFF)
		return NULL;
	at = data + off;
	if (at + len > end)
		return NULL;
	return at;
}

/* 0 on success. */
static __always_inline int ctx_load(const lb_ctx_t *ctx, __u32 off, void *to, __u32 len)
{
	void *at = ctx_at(ctx, off, len);

	if (!at)
		return -1;
	__builtin_memcpy(to, at, len);
	return 0;
}

/* 0 on success. */
static __always_inline int ctx_store(lb_ctx_t *ctx, __u32 off, const void *from, __u32 len)
{
	void *at = ctx_at(ctx, off, len);

	if (!at)
		return -1;
	__builtin_memcpy(at, from, len);
	return 0;
}

/* The checksum field `check` after adding a bpf_csum_diff difference to what it covers. */
static __always_inline __u16 ctx_csum_add(__u16 check, __s64 diff)
{
	__u64 sum = (__u16)~check + (__u64)(__u32)diff;

	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

/* Adds a checksum difference to the 16-bit checksum at off, `udp` keeping a zero (no
 * checksum) zero and never writing a computed zero (it would mean none). */
static __always_inline int ctx_csum_field_add(lb_ctx_t *ctx, __u32 off, __s64 diff, int udp)
{
	__u16 *at = ctx_at(ctx, off, sizeof(__u16));
	__u16 check;

	if (!at)
		return -1;
	if (udp && *at == 0)
		return 0;
	check = ctx_csum_add(*at, diff);
	if (udp && check == 0)
		check = 0xffff;
	*at = check;
	return 0;
}

/* Adds a checksum difference (bpf_csum_diff) to the IPv4 header checksum at off. */
static __always_inline int ctx_l3_csum_add(lb_ctx_t *ctx, __u32 off, __s64 diff)
{
	return ctx_csum_field_add(ctx, off, diff, 0);
}

/* Replaces the 16-bit word `from` by `to` in the IPv4 header checksum at off. */
static __always_inline int ctx_l3_csum_replace2(lb_ctx_t *ctx, __u32 off, __be16 from, __be16 to)
{
	return ctx_csum_field_add(ctx, off, (__u16)~from + (__u32)to, 0);
}

/* Adds a checksum difference to the TCP/UDP checksum at off (`pseudo` matters only to tc's
 * partial checksums), `udp` to leave a zero UDP checksum zero. */
static __always_inline int ctx_l4_csum_add(lb_ctx_t *ctx, __u32 off, __s64 diff, int pseudo,
					   int udp)
{
	return ctx_csum_field_add(ctx, off, diff, udp);
}

/* Makes the frame `len` bytes long (trimming or extending its end). 0 on success; a driver
 * without room after the frame refuses to grow it. */
static __always_inline int ctx_set_len(lb_ctx_t *ctx, __u32 len)
{
	return bpf_xdp_adjust_tail(ctx, (int)len - (int)ctx_len(ctx));
}

/* Sends the frame out of ifindex as it is: back out of the device it came in on (XDP_TX), or
 * out of another. */
static __always_inline int ctx_redirect(lb_ctx_t *ctx, __u32 ifindex)
{
	if (ifindex == ctx_ifindex(ctx))
		return XDP_TX;
	return bpf_redirect(ifindex, 0);
}

/* Leaves `action` to the device's tc ingress program in the frame's metadata and passes the
 * frame on to it. Without room for the metadata the frame is dropped (it would be passed as
 * tc's to look up again, with its translation done already). */
static __always_inline int ctx_hand_to_tc(lb_ctx_t *ctx, enum lb_xfer_action action,
					  __u32 ifindex)
{
	struct lb_xfer *xfer;
	void *data;

	if (bpf_xdp_adjust_meta(ctx, -(int)sizeof(*xfer)))
		return XDP_DROP;
	xfer = (void *)(long)ctx->data_meta;
	data = (void *)(long)ctx->data;
	if ((void *)(xfer + 1) > data)
		return XDP_DROP;
	xfer->magic = LB_XFER_MAGIC | action;
	xfer->ifindex = ifindex;
	return XDP_PASS;
}

/* Passes a frame this program decided on (translated or not) so tc does not look it up again;
 * one already handed over passes as it is. Without room for the metadata tc looks it up again,
 * which finds nothing to do for it. */
static __always_inline int ctx_pass_decided(lb_ctx_t *ctx)
{
	if (ctx->data_meta >= ctx->data)
		ctx_hand_to_tc(ctx, LB_XFER_DONE, 0);
	return XDP_PASS;
}

/* XDP has no neighbour resolution: tc sends the translated frame on. */
static __always_inline int ctx_redirect_neigh(lb_ctx_t *ctx, __u32 ifindex)
{
	return ctx_hand_to_tc(ctx, LB_XFER_REDIRECT_NEIGH, ifindex);
}

/* Nothing comes before XDP. */
static __always_inline enum lb_xfer_action ctx_handed_over(lb_ctx_t *ctx, __u32 *ifindex)
{
	return 0;
}

#endif /* LB_CTX_H */
