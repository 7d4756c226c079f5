//! Linux's `jhash2` (`include/linux/jhash.h`), the hash the packet programs pick a backend and
//! a SNAT port with, and [`flow_hash`], the flow hash of a conntrack key.

use ebpf::maps::LbCtKey;

/// `JHASH_INITVAL`: the arbitrary initial value of Bob Jenkins' lookup3, as Linux has it.
pub const JHASH_INITVAL: u32 = 0xdead_beef;

/// `__jhash_mix`.
fn mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    *a = a.wrapping_sub(*c);
    *a ^= c.rotate_left(4);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= a.rotate_left(6);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= b.rotate_left(8);
    *b = b.wrapping_add(*a);
    *a = a.wrapping_sub(*c);
    *a ^= c.rotate_left(16);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= a.rotate_left(19);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= b.rotate_left(4);
    *b = b.wrapping_add(*a);
}

/// `__jhash_final`.
fn final_mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(14));
    *a ^= *c;
    *a = a.wrapping_sub(c.rotate_left(11));
    *b ^= *a;
    *b = b.wrapping_sub(a.rotate_left(25));
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(16));
    *a ^= *c;
    *a = a.wrapping_sub(c.rotate_left(4));
    *b ^= *a;
    *b = b.wrapping_sub(a.rotate_left(14));
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(24));
}

/// `jhash2(k, length, initval)`: the hash of `words` (its length is the C's `length`).
pub fn jhash2(words: &[u32], initval: u32) -> u32 {
    // The C takes a u32 length; a key of 2^30 words or more is not a key.
    let length = u32::try_from(words.len()).unwrap_or(u32::MAX);
    let init = JHASH_INITVAL
        .wrapping_add(length.wrapping_shl(2))
        .wrapping_add(initval);
    let (mut a, mut b, mut c) = (init, init, init);
    let mut rest = words;
    while rest.len() > 3 {
        a = a.wrapping_add(rest[0]);
        b = b.wrapping_add(rest[1]);
        c = c.wrapping_add(rest[2]);
        mix(&mut a, &mut b, &mut c);
        rest = &rest[3..];
    }
    if rest.is_empty() {
        return c;
    }
    if let Some(&w) = rest.get(2) {
        c = c.wrapping_add(w);
    }
    if let Some(&w) = rest.get(1) {
        b = b.wrapping_add(w);
    }
    a = a.wrapping_add(rest[0]);
    final_mix(&mut a, &mut b, &mut c);
    c
}

/// The 40 bytes of `struct lb_ct_key` as the program holds them, field by field.
pub fn ct_key_bytes(key: &LbCtKey) -> [u8; 40] {
    let mut out = [0u8; 40];
    out[..16].copy_from_slice(&key.saddr.bytes);
    out[16..32].copy_from_slice(&key.daddr.bytes);
    out[32..34].copy_from_slice(&key.sport.to_ne_bytes());
    out[34..36].copy_from_slice(&key.dport.to_ne_bytes());
    out[36] = key.proto;
    out[37..].copy_from_slice(&key.pad);
    out
}

/// The flow hash of the packet programs: `jhash2` of the conntrack key's 40 bytes read as 10
/// native-endian words, with `seed` (`cfg_flow_seed` for the backend, one more for the SNAT
/// port's first try).
pub fn flow_hash(key: &LbCtKey, seed: u32) -> u32 {
    let bytes = ct_key_bytes(key);
    let mut words = [0u32; 10];
    for (word, chunk) in words.iter_mut().zip(bytes.chunks_exact(4)) {
        *word = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
    }
    jhash2(&words, seed)
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use ebpf::maps::LbAddr;

    use super::*;

    /// (length, initval, jhash2) of the words `i * 0x01010101 + 1`, i = 0..length: printed by
    /// `testdata/jhash_vectors.c` (a verbatim copy of Linux's jhash2) built with the host's cc.
    const SEQ_VECTORS: &[(usize, u32, u32)] = &[
        (0, 0x00000000, 0xdeadbeef),
        (1, 0x00000000, 0x72a82a9b),
        (2, 0x00000000, 0xa6416824),
        (3, 0x00000000, 0x87ce2910),
        (4, 0x00000000, 0xc554c99b),
        (6, 0x00000000, 0x59538ec5),
        (7, 0x00000000, 0x1b2d48d0),
        (10, 0x00000000, 0x526b9a8b),
        (0, 0x00000001, 0xdeadbef0),
        (1, 0x00000001, 0x76efdf8d),
        (2, 0x00000001, 0x045a9121),
        (3, 0x00000001, 0xb4055618),
        (4, 0x00000001, 0xaf8bc072),
        (6, 0x00000001, 0xe3a2f7c2),
        (7, 0x00000001, 0x973ab363),
        (10, 0x00000001, 0xd02f5ece),
        (0, 0x12345678, 0xf0e21567),
        (1, 0x12345678, 0x22417ff4),
        (2, 0x12345678, 0x5de852d7),
        (3, 0x12345678, 0x21b8ec59),
        (4, 0x12345678, 0x4c40050d),
        (6, 0x12345678, 0x70c58bf0),
        (7, 0x12345678, 0xebc3bc35),
        (10, 0x12345678, 0x669e184f),
        (0, 0xffffffff, 0xdeadbeee),
        (1, 0xffffffff, 0x8f68e60d),
        (2, 0xffffffff, 0xe00f4ba1),
        (3, 0xffffffff, 0x6e471909),
        (4, 0xffffffff, 0x3b451e27),
        (6, 0xffffffff, 0xa37287a9),
        (7, 0xffffffff, 0xbe4918be),
        (10, 0xffffffff, 0x43c9647b),
    ];

    /// (seed, flow hash) of the TCP key 10.0.0.1:40000 -> 192.0.2.1:30080, from the same
    /// program (it lays the key out as `struct lb_ct_key` and hashes its 10 words).
    const CT_KEY_VECTORS: &[(u32, u32)] = &[
        (0x00000000, 0x1aab7e6c),
        (0x00000001, 0x5a237a3f),
        (0x12345678, 0x222d23d4),
        (0xffffffff, 0x28ea30cf),
    ];

    #[test]
    fn jhash2_matches_the_kernels_c() {
        let words: Vec<u32> = (0..10u32).map(|i| i * 0x0101_0101 + 1).collect();
        for &(len, seed, want) in SEQ_VECTORS {
            assert_eq!(
                jhash2(&words[..len], seed),
                want,
                "jhash2 of {len} words, initval {seed:#x}"
            );
        }
    }

    #[test]
    fn the_flow_hash_of_a_ct_key_matches_the_kernels_c() {
        let ip = |s: &str| LbAddr::from(s.parse::<IpAddr>().unwrap());
        let key = LbCtKey {
            saddr: ip("10.0.0.1"),
            daddr: ip("192.0.2.1"),
            sport: 40000u16.to_be(),
            dport: 30080u16.to_be(),
            proto: 6,
            pad: [0; 3],
        };
        for &(seed, want) in CT_KEY_VECTORS {
            assert_eq!(flow_hash(&key, seed), want, "seed {seed:#x}");
        }
    }
}
