/* The context layer of the packet programs: the few things they do to a packet (read and write
 * bytes, update checksums by a difference, change its length, redirect it, hand it from XDP to
 * tc), written once per program type so the datapath above it is one source compiled for each:
 * lb_ctx_tc.h (struct __sk_buff) and lb_ctx_xdp.h (struct xdp_md). A program's source includes
 * one of them before any datapath header; this file only stops a source that forgot.
 *
 * Both halves give: lb_ctx_t, LB_PASS, LB_DROP, ctx_len, ctx_ifindex, ctx_load, ctx_store,
 * ctx_l3_csum_add, ctx_l3_csum_replace2, ctx_l4_csum_add, ctx_set_len, ctx_redirect,
 * ctx_redirect_neigh, ctx_hand_to_tc and ctx_handed_over.
 */
#ifndef LB_CTX_H
#error "include lb_ctx_tc.h or lb_ctx_xdp.h before the datapath headers"
#endif
