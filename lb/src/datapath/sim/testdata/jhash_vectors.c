/* Prints jhash2 vectors for lb/src/datapath/sim/jhash.rs's tests, from a verbatim copy of
 * Linux's include/linux/jhash.h (jhash2, __jhash_mix, __jhash_final, JHASH_INITVAL) and
 * include/linux/bitops.h (rol32).  Build and run: cc -O2 -o /tmp/jv jhash_vectors.c && /tmp/jv
 */
#include <stdint.h>
#include <stdio.h>

typedef uint32_t u32;

static inline u32 rol32(u32 word, unsigned int shift)
{
	return (word << (shift & 31)) | (word >> ((-shift) & 31));
}

#define JHASH_INITVAL 0xdeadbeef

#define __jhash_mix(a, b, c)                  \
	{                                     \
		a -= c; a ^= rol32(c, 4);  c += b; \
		b -= a; b ^= rol32(a, 6);  a += c; \
		c -= b; c ^= rol32(b, 8);  b += a; \
		a -= c; a ^= rol32(c, 16); c += b; \
		b -= a; b ^= rol32(a, 19); a += c; \
		c -= b; c ^= rol32(b, 4);  b += a; \
	}

#define __jhash_final(a, b, c)                \
	{                                     \
		c ^= b; c -= rol32(b, 14);    \
		a ^= c; a -= rol32(c, 11);    \
		b ^= a; b -= rol32(a, 25);    \
		c ^= b; c -= rol32(b, 16);    \
		a ^= c; a -= rol32(c, 4);     \
		b ^= a; b -= rol32(a, 14);    \
		c ^= b; c -= rol32(b, 24);    \
	}

static inline u32 jhash2(const u32 *k, u32 length, u32 initval)
{
	u32 a, b, c;

	a = b = c = JHASH_INITVAL + (length << 2) + initval;
	while (length > 3) {
		a += k[0];
		b += k[1];
		c += k[2];
		__jhash_mix(a, b, c);
		length -= 3;
		k += 3;
	}
	switch (length) {
	case 3: c += k[2]; /* fall through */
	case 2: b += k[1]; /* fall through */
	case 1: a += k[0];
		__jhash_final(a, b, c);
		break;
	case 0:
		break;
	}
	return c;
}

int main(void)
{
	/* Words 0..9 of a key: i * 0x01010101 + 1, and a TCP key 10.0.0.1:40000 -> 192.0.2.1:30080
	 * as struct lb_ct_key's 40 bytes (mapped addresses, ports in network order, proto 6). */
	u32 seq[10];
	unsigned char key[40] = {0};
	u32 words[10];
	u32 seeds[] = {0, 1, 0x12345678, 0xffffffff};
	u32 lens[] = {0, 1, 2, 3, 4, 6, 7, 10};

	for (int i = 0; i < 10; i++)
		seq[i] = (u32)i * 0x01010101u + 1;
	for (unsigned s = 0; s < sizeof(seeds) / sizeof(seeds[0]); s++)
		for (unsigned l = 0; l < sizeof(lens) / sizeof(lens[0]); l++)
			printf("seq len=%u seed=0x%08x -> 0x%08x\n", lens[l], seeds[s],
			       jhash2(seq, lens[l], seeds[s]));

	key[10] = 0xff; key[11] = 0xff; key[12] = 10; key[15] = 1;
	key[26] = 0xff; key[27] = 0xff; key[28] = 192; key[30] = 2; key[31] = 1;
	key[32] = 40000 >> 8; key[33] = 40000 & 0xff;
	key[34] = 30080 >> 8; key[35] = 30080 & 0xff;
	key[36] = 6;
	__builtin_memcpy(words, key, sizeof(words));
	for (unsigned s = 0; s < sizeof(seeds) / sizeof(seeds[0]); s++)
		printf("ctkey seed=0x%08x -> 0x%08x\n", seeds[s], jhash2(words, 10, seeds[s]));
	return 0;
}
