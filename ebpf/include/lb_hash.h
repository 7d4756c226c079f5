/* Linux's jhash2 (include/linux/jhash.h) and the flow hash built on it: which backend slot and
 * which SNAT port a new flow starts from. A hash of the flow rather than a random number, so
 * every node computes the same answer for the same flow and seed (what Maglev needs next), and
 * the simulator can predict it exactly. lb::datapath::sim::jhash is the same in Rust.
 */
#ifndef LB_HASH_H
#define LB_HASH_H

#include <linux/types.h>

#include "lb_types.h"

#define LB_JHASH_INITVAL 0xdeadbeef

static __always_inline __u32 lb_rol32(__u32 word, unsigned int shift)
{
	return (word << shift) | (word >> ((-shift) & 31));
}

#define lb_jhash_mix(a, b, c)                                                              \
	{                                                                                  \
		a -= c;  a ^= lb_rol32(c, 4);  c += b;                                     \
		b -= a;  b ^= lb_rol32(a, 6);  a += c;                                     \
		c -= b;  c ^= lb_rol32(b, 8);  b += a;                                     \
		a -= c;  a ^= lb_rol32(c, 16); c += b;                                     \
		b -= a;  b ^= lb_rol32(a, 19); a += c;                                     \
		c -= b;  c ^= lb_rol32(b, 4);  b += a;                                     \
	}

#define lb_jhash_final(a, b, c)                                                            \
	{                                                                                  \
		c ^= b; c -= lb_rol32(b, 14);                                              \
		a ^= c; a -= lb_rol32(c, 11);                                              \
		b ^= a; b -= lb_rol32(a, 25);                                              \
		c ^= b; c -= lb_rol32(b, 16);                                              \
		a ^= c; a -= lb_rol32(c, 4);                                               \
		b ^= a; b -= lb_rol32(a, 14);                                              \
		c ^= b; c -= lb_rol32(b, 24);                                              \
	}

/* jhash2 of the 40-byte conntrack key read as ten native-endian words (length 10: three mixes,
 * then the last word and the final mix). */
static __always_inline __u32 lb_flow_hash(const struct lb_ct_key *key, __u32 seed)
{
	const __u32 *k = (const __u32 *)key;
	__u32 a, b, c;

	_Static_assert(sizeof(*key) == 40, "lb_ct_key is ten words");
	a = b = c = LB_JHASH_INITVAL + (10 << 2) + seed;
	a += k[0]; b += k[1]; c += k[2];
	lb_jhash_mix(a, b, c);
	a += k[3]; b += k[4]; c += k[5];
	lb_jhash_mix(a, b, c);
	a += k[6]; b += k[7]; c += k[8];
	lb_jhash_mix(a, b, c);
	a += k[9];
	lb_jhash_final(a, b, c);
	return c;
}

#endif /* LB_HASH_H */
