/* The context layer's tc half (struct __sk_buff; see lb_ctx.h). Loads and stores go straight
 * to the packet where the headers are in its linear part (they are, for what veth and the
 * stack hand to tc), each access checked against data_end, and through bpf_skb_load_bytes /
 * bpf_skb_store_bytes otherwise: a helper call costs as much as the whole access here. A store
 * changes bytes only, as bpf_skb_store_bytes without flags does; the checksums are updated by
 * the skb helpers, which keep the kernel's checksum state right (a packet from a local socket
 * carries a partial checksum they know how to update, and tc cannot read which state it is in).
 * Writing the packet makes the verifier unclone a cloned skb first, as the store helper does.
 */
#ifndef LB_CTX_H
#define LB_CTX_H
#define LB_CTX_TC 1

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#include "lb_types.h"

typedef struct __sk_buff lb_ctx_t;

#define LB_PASS TC_ACT_OK
#define LB_DROP TC_ACT_SHOT

static __always_inline __u32 ctx_len(const lb_ctx_t *ctx)
{
	return ctx->len;
}

/* The device the program runs on (ingress or egress). */
static __always_inline __u32 ctx_ifindex(const lb_ctx_t *ctx)
{
	return ctx->ifindex;
}

/* The furthest offset a direct access starts at: headers only, and a bound the verifier needs
 * for an offset it cannot know. Past it the helpers do the access. */
#define LB_TC_MAX_OFF 512

/* Where len bytes at off are in the packet's linear part, NULL when they are not (past its
 * end, or in paged data). */
static __always_inline void *ctx_linear_at(const lb_ctx_t *ctx, __u32 off, __u32 len)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	void *at;

	if (off > LB_TC_MAX_OFF)
		return NULL;
	at = data + off;
	if (at + len > end)
		return NULL;
	return at;
}

/* 0 on success. len is a constant at every caller. */
static __always_inline int ctx_load(const lb_ctx_t *ctx, __u32 off, void *to, __u32 len)
{
	void *at = ctx_linear_at(ctx, off, len);

	if (at) {
		__builtin_memcpy(to, at, len);
		return 0;
	}
	return bpf_skb_load_bytes(ctx, off, to, len);
}

/* 0 on success. len is a constant at every caller. */
static __always_inline int ctx_store(lb_ctx_t *ctx, __u32 off, const void *from, __u32 len)
{
	void *at = ctx_linear_at(ctx, off, len);

	if (at) {
		__builtin_memcpy(at, from, len);
		return 0;
	}
	return bpf_skb_store_bytes(ctx, off, from, len, 0);
}

/* Adds a checksum difference (bpf_csum_diff) to the IPv4 header checksum at off. */
static __always_inline int ctx_l3_csum_add(lb_ctx_t *ctx, __u32 off, __s64 diff)
{
	return bpf_l3_csum_replace(ctx, off, 0, diff, 0);
}

/* Replaces the 16-bit word `from` by `to` in the IPv4 header checksum at off. */
static __always_inline int ctx_l3_csum_replace2(lb_ctx_t *ctx, __u32 off, __be16 from, __be16 to)
{
	return bpf_l3_csum_replace(ctx, off, from, to, 2);
}

/* Adds a checksum difference to the TCP/UDP checksum at off: `pseudo` when the difference is
 * in the pseudo-header (addresses), `udp` to leave a zero UDP checksum zero. */
static __always_inline int ctx_l4_csum_add(lb_ctx_t *ctx, __u32 off, __s64 diff, int pseudo,
					   int udp)
{
	__u64 flags = (pseudo ? BPF_F_PSEUDO_HDR : 0) | (udp ? BPF_F_MARK_MANGLED_0 : 0);

	return bpf_l4_csum_replace(ctx, off, 0, diff, flags);
}

/* Makes the packet `len` bytes long (trimming or extending its end). 0 on success. */
static __always_inline int ctx_set_len(lb_ctx_t *ctx, __u32 len)
{
	return bpf_skb_change_tail(ctx, len, 0);
}

/* Sends the packet out of ifindex as it is. */
static __always_inline int ctx_redirect(lb_ctx_t *ctx, __u32 ifindex)
{
	return bpf_redirect(ifindex, 0);
}

/* Sends the packet out of ifindex, the kernel resolving the next hop's link-layer address
 * (Linux 5.10). */
static __always_inline int ctx_redirect_neigh(lb_ctx_t *ctx, __u32 ifindex)
{
	return bpf_redirect_neigh(ifindex, NULL, 0, 0);
}

/* What XDP could not finish is tc's (lb_ctx_xdp.h); tc is the last program a packet meets,
 * so here such a packet is dropped. */
static __always_inline int ctx_hand_to_tc(lb_ctx_t *ctx, enum lb_xfer_action action,
					  __u32 ifindex)
{
	return LB_DROP;
}

/* Passes a packet this program decided on. */
static __always_inline int ctx_pass_decided(lb_ctx_t *ctx)
{
	return TC_ACT_OK;
}

/* What the NodePort XDP program left for this program in the packet's metadata: an
 * LB_XFER_* action (0 when none; *ifindex is its device). Only at ingress, where XDP ran. */
static __always_inline enum lb_xfer_action ctx_handed_over(lb_ctx_t *ctx, __u32 *ifindex)
{
	void *meta = (void *)(long)ctx->data_meta;
	void *data = (void *)(long)ctx->data;
	struct lb_xfer *xfer = meta;

	if (meta + sizeof(*xfer) > data || (xfer->magic & LB_XFER_MAGIC_MASK) != LB_XFER_MAGIC)
		return 0;
	*ifindex = xfer->ifindex;
	return xfer->magic & ~LB_XFER_MAGIC_MASK;
}

#endif /* LB_CTX_H */
