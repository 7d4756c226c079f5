//! The textbook Maglev build, for checking [`build_table`](super::build_table) and for
//! benchmarking it: the full `N × M` permutation matrix as in the paper's pseudo-code (and
//! Cilium's Go code), written from the recipe in the module documentation rather than from the
//! fast implementation. It must give the same table; it takes O(M·N) memory, so the agent never
//! uses it.

use siphasher::sip::SipHasher24;

use super::{HashSeed, MaglevBackend, OFFSET_TAG, SKIP_TAG};

/// The table [`build_table`](super::build_table) builds, computed the textbook way. Inputs
/// are assumed valid (a listed table size, no duplicate backends).
pub fn reference_table(m: u32, seed: &HashSeed, backends: &[MaglevBackend]) -> Vec<u32> {
    let hasher = |tag: &[u8; 4]| {
        let mut key = [0u8; 16];
        key[..12].copy_from_slice(seed.as_bytes());
        key[12..].copy_from_slice(tag);
        SipHasher24::new_with_key(&key)
    };
    let (h1, h2) = (hasher(OFFSET_TAG), hasher(SKIP_TAG));
    let mut order: Vec<usize> = (0..backends.len())
        .filter(|&i| backends[i].weight > 0)
        .collect();
    order.sort_by_key(|&i| backends[i].addr.identity_bytes());
    if order.is_empty() {
        return Vec::new();
    }
    let (m, n) = (m as usize, order.len());
    // permutation[k·M + j] = (offset_k + j·skip_k) mod M.
    let mut permutation = vec![0u32; n * m];
    for (k, &i) in order.iter().enumerate() {
        let id = backends[i].addr.identity_bytes();
        let offset = (h1.hash(&id) % m as u64) as usize;
        let skip = (h2.hash(&id) % (m as u64 - 1) + 1) as usize;
        for j in 0..m {
            permutation[k * m + j] = ((offset + j * skip) % m) as u32;
        }
    }
    let weight = |k: usize| u64::from(backends[order[k]].weight);
    let w_max = (0..n).map(weight).max().unwrap();
    let mut next = vec![0usize; n];
    let mut turns = vec![0u64; n];
    let mut entry = vec![u32::MAX; m];
    let mut filled = 0;
    let mut t = 0u64;
    loop {
        t += 1;
        for k in 0..n {
            if t * weight(k) < (turns[k] + 1) * w_max {
                continue;
            }
            turns[k] += 1;
            let mut c = permutation[k * m + next[k]] as usize;
            while entry[c] != u32::MAX {
                next[k] += 1;
                c = permutation[k * m + next[k]] as usize;
            }
            entry[c] = order[k] as u32;
            next[k] += 1;
            filled += 1;
            if filled == m {
                return entry;
            }
        }
    }
}
