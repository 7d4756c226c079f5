/* Address helpers over union lb_addr: family tests, loopback and wildcard forms, and the
 * node-local test that decides whether a wildcard NodePort/HostPort frontend applies. */
#ifndef LB_ADDR_H
#define LB_ADDR_H

#include <bpf/bpf_endian.h>

#include "lb_maps.h"

static __always_inline void lb_addr_from_v4(union lb_addr *a, __be32 v4)
{
	a->words[0] = 0;
	a->words[1] = 0;
	a->words[2] = bpf_htonl(0x0000ffff);
	a->words[3] = v4;
}

static __always_inline int lb_addr_is_v4(const union lb_addr *a)
{
	return a->words[0] == 0 && a->words[1] == 0 && a->words[2] == bpf_htonl(0x0000ffff);
}

/* Word by word: a memcmp would be a call the BPF target cannot make. */
static __always_inline int lb_addr_equal(const union lb_addr *a, const union lb_addr *b)
{
	return a->words[0] == b->words[0] && a->words[1] == b->words[1] &&
	       a->words[2] == b->words[2] && a->words[3] == b->words[3];
}

/* 0.0.0.0 (mapped) or ::, the address of a wildcard frontend. */
static __always_inline int lb_addr_is_wildcard(const union lb_addr *a)
{
	return a->words[0] == 0 && a->words[1] == 0 && a->words[3] == 0 &&
	       (a->words[2] == 0 || a->words[2] == bpf_htonl(0x0000ffff));
}

/* The wildcard address of a's family. */
static __always_inline void lb_addr_to_wildcard(union lb_addr *a)
{
	int v4 = lb_addr_is_v4(a);

	a->words[0] = 0;
	a->words[1] = 0;
	a->words[2] = v4 ? bpf_htonl(0x0000ffff) : 0;
	a->words[3] = 0;
}

/* 127.0.0.0/8 or ::1. */
static __always_inline int lb_addr_is_loopback(const union lb_addr *a)
{
	if (lb_addr_is_v4(a))
		return (bpf_ntohl(a->words[3]) >> 24) == 127;
	return a->words[0] == 0 && a->words[1] == 0 && a->words[2] == 0 &&
	       a->words[3] == bpf_htonl(1);
}

/* An address of this node, where its wildcard NodePort and HostPort frontends answer: one the
 * agent listed in lb_local_addrs, or loopback when the caller's loopback is the node's, that is
 * when it runs in the node's host namespace (`loopback_is_node`): a pod's loopback is the
 * pod's own, and what listens there must be reached. */
static __always_inline int lb_addr_is_node_local(const union lb_addr *a, int loopback_is_node)
{
	if (lb_addr_is_loopback(a))
		return loopback_is_node;
	return bpf_map_lookup_elem(&lb_local_addrs_v1, a) != NULL;
}

#endif /* LB_ADDR_H */
