//! Building a Maglev lookup table (see [the module documentation](crate::maglev) for the recipe).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use siphasher::sip::SipHasher24;

use super::{HashSeed, MaglevBackend};
use crate::model::{L3n4Addr, IDENTITY_LEN};

/// The only sizes `maglev.tableSize` may take: primes, so that every `skip` in `1..M` is coprime
/// with `M` and every backend's permutation visits every slot.
pub const TABLE_SIZES: [u32; 10] = [
    251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071,
];

/// The table size used when `maglev.tableSize` is not set.
pub const DEFAULT_TABLE_SIZE: u32 = 16381;

/// Domain tag appended to the seed to key the `offset` hash (h1).
pub const OFFSET_TAG: &[u8; 4] = b"offs";

/// Domain tag appended to the seed to key the `skip` hash (h2).
pub const SKIP_TAG: &[u8; 4] = b"skip";

/// Marks a slot no backend has taken yet while the table fills. Never appears in a built table.
const EMPTY: u32 = u32::MAX;

/// The weighted fill switches from visiting every backend in every iteration to a priority queue
/// when the visits would outnumber the entries by more than this factor (very uneven weights).
/// Both orders are the same; this only changes the cost.
const QUEUE_THRESHOLD: u64 = 48;

/// Why a Maglev table cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaglevError {
    /// The table size is not one of [`TABLE_SIZES`].
    #[error(
        "invalid maglev.tableSize {size}: expected one of the primes 251, 509, 1021, 2039, 4093, \
         8191, 16381, 32749, 65521, 131071 (default 16381), ideally at least 100 times the \
         number of backends"
    )]
    InvalidTableSize {
        /// The size given.
        size: u32,
    },
    /// Two backends have the same address (the same [`L3n4Addr::identity_bytes`]: an IPv4
    /// address and its IPv4-mapped IPv6 form are the same).
    #[error(
        "duplicate Maglev backend: {} (position {first}) and {} (position {second}) are the same \
         address; each backend address may appear only once",
        first_addr.display_with_protocol(),
        second_addr.display_with_protocol()
    )]
    DuplicateBackend {
        /// Position (from 0) of the first occurrence in the backend list.
        first: usize,
        /// The address at `first`.
        first_addr: L3n4Addr,
        /// Position (from 0) of the later occurrence.
        second: usize,
        /// The address at `second`.
        second_addr: L3n4Addr,
    },
    /// More backends with weight > 0 than table entries.
    #[error(
        "too many Maglev backends: {count} backends with weight > 0 do not fit in a table of \
         {table_size} entries; use a larger maglev.tableSize, ideally at least 100 times the \
         number of backends"
    )]
    TooManyBackends {
        /// The number of backends with weight > 0.
        count: usize,
        /// The table size given.
        table_size: u32,
    },
}

/// Checks that `size` is one of [`TABLE_SIZES`].
pub fn check_table_size(size: u32) -> Result<(), MaglevError> {
    if TABLE_SIZES.contains(&size) {
        Ok(())
    } else {
        Err(MaglevError::InvalidTableSize { size })
    }
}

/// The two keyed hashes of the recipe, built once per table.
struct Hashes {
    offset: SipHasher24,
    skip: SipHasher24,
}

impl Hashes {
    fn new(seed: &HashSeed) -> Self {
        Hashes {
            offset: SipHasher24::new_with_key(&seed.sip_key(OFFSET_TAG)),
            skip: SipHasher24::new_with_key(&seed.sip_key(SKIP_TAG)),
        }
    }

    /// `(offset, skip)` of the backend with this identity in a table of `m` (≥ 2) entries.
    fn offset_and_skip(&self, identity: &[u8; IDENTITY_LEN], m: u32) -> (u32, u32) {
        let m = u64::from(m);
        let offset = self.offset.hash(identity) % m;
        let skip = self.skip.hash(identity) % (m - 1) + 1;
        // Both are below `m`, which is a u32.
        (offset as u32, skip as u32)
    }
}

/// The start (`offset`) and stride (`skip`) of `addr`'s permutation in a table of `table_size`
/// entries under `seed`: its preference list is `offset`, `offset + skip`, `offset + 2·skip`, …
/// (mod `table_size`).
///
/// # Panics
///
/// If `table_size < 2` (every size in [`TABLE_SIZES`] is larger).
pub fn offset_and_skip(seed: &HashSeed, addr: &L3n4Addr, table_size: u32) -> (u32, u32) {
    assert!(table_size >= 2, "a Maglev table has at least 2 entries");
    Hashes::new(seed).offset_and_skip(&addr.identity_bytes(), table_size)
}

/// One live backend's state while the table fills: O(1) per backend, no permutation matrix.
#[derive(Debug)]
struct Cursor {
    /// The next position of its permutation to try.
    next: u32,
    /// Its permutation's stride.
    skip: u32,
    /// Its index in the caller's slice: what its entries hold.
    index: u32,
    /// Its weight.
    weight: u32,
    /// `t · weight` after iteration `t` (simple fill only).
    progress: u64,
    /// `(turns taken + 1) · w_max`: it takes a turn once `progress` reaches this.
    threshold: u64,
}

impl Cursor {
    /// Walks the permutation from `next` to the first empty slot, takes it, and moves past it.
    /// The caller guarantees an empty slot exists; since `skip` is coprime with the (prime) table
    /// size, the walk reaches every slot, so it ends.
    #[inline(always)]
    fn take_turn(&mut self, table: &mut [u32], m: u32) {
        let mut pos = self.next;
        while table[pos as usize] != EMPTY {
            pos += self.skip;
            if pos >= m {
                pos -= m;
            }
        }
        table[pos as usize] = self.index;
        pos += self.skip;
        if pos >= m {
            pos -= m;
        }
        self.next = pos;
    }
}

/// Builds the Maglev lookup table of `table_size` entries for `backends` under `seed`.
///
/// Returns, for every slot, the index into `backends` of the backend that owns it. The table
/// depends only on the set of (address, weight) pairs, never on their order in `backends` (only
/// the indices stored follow the caller's order).
///
/// If no backend has weight > 0 (including an empty `backends`), returns an **empty** table,
/// which the datapath treats as "no backend": a service whose backends are all drained is a normal
/// state, not an error.
///
/// Every backend with weight > 0 owns at least one entry when the weights are equal (any number
/// of backends up to `table_size`). With unequal weights, a backend whose weight gives it less
/// than about one entry's worth of the table may own none: precisely, backend `i` is guaranteed an
/// entry when `Σⱼ ⌊t·wⱼ / w_max⌋ ≤ table_size` for `t = ⌈w_max / wᵢ⌉`.
///
/// # Errors
///
/// [`MaglevError::InvalidTableSize`] if `table_size` is not in [`TABLE_SIZES`],
/// [`MaglevError::DuplicateBackend`] if two backends have the same address (weights aside), and
/// [`MaglevError::TooManyBackends`] if more than `table_size` backends have weight > 0.
pub fn build_table(
    table_size: u32,
    seed: &HashSeed,
    backends: &[MaglevBackend],
) -> Result<Vec<u32>, MaglevError> {
    check_table_size(table_size)?;
    let m = table_size;
    if backends.len() >= EMPTY as usize {
        return Err(MaglevError::TooManyBackends {
            count: backends.len(),
            table_size,
        });
    }

    // Canonical order: by identity, so that the table does not depend on the input order.
    let mut order: Vec<([u8; IDENTITY_LEN], u32)> = backends
        .iter()
        .zip(0u32..)
        .map(|(b, i)| (b.addr.identity_bytes(), i))
        .collect();
    order.sort_unstable();
    check_duplicates(&order, backends)?;

    let live = || {
        order
            .iter()
            .map(|&(id, i)| (id, i, backends[i as usize].weight))
            .filter(|&(_, _, w)| w > 0)
    };
    let count = live().count();
    if count == 0 {
        return Ok(Vec::new());
    }
    if count > m as usize {
        return Err(MaglevError::TooManyBackends { count, table_size });
    }

    let hashes = Hashes::new(seed);
    let w_max = live().map(|(_, _, w)| u64::from(w)).max().unwrap_or(1);
    let w_sum: u64 = live().map(|(_, _, w)| u64::from(w)).sum();
    let mut cursors: Vec<Cursor> = Vec::with_capacity(count);
    cursors.extend(live().map(|(id, index, w)| {
        let (offset, skip) = hashes.offset_and_skip(&id, m);
        Cursor {
            next: offset,
            skip,
            index,
            weight: u32::from(w),
            progress: 0,
            threshold: w_max,
        }
    }));
    drop(order);

    let mut table = vec![EMPTY; m as usize];
    // The simple fill visits every backend in each of about `m · w_max / w_sum` iterations.
    let visits = u64::from(m) * w_max / w_sum * count as u64;
    if visits > QUEUE_THRESHOLD * u64::from(m) {
        fill_queued(&mut table, &mut cursors, w_max);
    } else {
        fill_rounds(&mut table, &mut cursors, w_max);
    }
    debug_assert!(!table.contains(&EMPTY));
    Ok(table)
}

/// Fails on the first (by later position) pair of backends with the same identity. `order` is
/// sorted by (identity, position).
fn check_duplicates(
    order: &[([u8; IDENTITY_LEN], u32)],
    backends: &[MaglevBackend],
) -> Result<(), MaglevError> {
    let dup = order
        .windows(2)
        .filter(|w| w[0].0 == w[1].0)
        .map(|w| (w[0].1 as usize, w[1].1 as usize))
        .min_by_key(|&(_, second)| second);
    match dup {
        None => Ok(()),
        Some((first, second)) => Err(MaglevError::DuplicateBackend {
            first,
            first_addr: backends[first].addr,
            second,
            second_addr: backends[second].addr,
        }),
    }
}

/// The fill as specified: iterations `t = 1, 2, …`, each visiting the backends in canonical
/// order; a backend takes a turn iff `t · w ≥ (turns + 1) · w_max`. Stops when the table is full.
fn fill_rounds(table: &mut [u32], cursors: &mut [Cursor], w_max: u64) {
    let m = table.len() as u32;
    let mut empty = table.len();
    loop {
        for c in cursors.iter_mut() {
            c.progress += u64::from(c.weight);
            if c.progress < c.threshold {
                continue;
            }
            c.threshold += w_max;
            c.take_turn(table, m);
            empty -= 1;
            if empty == 0 {
                return;
            }
        }
    }
}

/// The same fill as [`fill_rounds`], with the turns taken from a priority queue ordered by
/// (iteration of the backend's next turn, canonical position): the same turns in the same order,
/// without visiting backends whose turn has not come. A backend's next turn is the least `t` with
/// `t · w ≥ (turns + 1) · w_max`; since `w ≤ w_max`, it takes at most one turn per iteration.
fn fill_queued(table: &mut [u32], cursors: &mut [Cursor], w_max: u64) {
    let m = table.len() as u32;
    let mut empty = table.len();
    let mut queue: BinaryHeap<Reverse<(u64, u32)>> = cursors
        .iter()
        .zip(0u32..)
        .map(|(c, pos)| Reverse((c.threshold.div_ceil(u64::from(c.weight)), pos)))
        .collect();
    while let Some(Reverse((_, pos))) = queue.pop() {
        let c = &mut cursors[pos as usize];
        c.take_turn(table, m);
        empty -= 1;
        if empty == 0 {
            return;
        }
        c.threshold += w_max;
        queue.push(Reverse((c.threshold.div_ceil(u64::from(c.weight)), pos)));
    }
}

/// How many entries of `table` each of `backend_count` backends owns (indexed like the backend
/// slice the table was built from).
///
/// # Panics
///
/// If `table` holds an index `≥ backend_count`.
pub fn entry_counts(table: &[u32], backend_count: usize) -> Vec<u32> {
    let mut counts = vec![0u32; backend_count];
    for &i in table {
        counts[i as usize] += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backends(specs: &[&str]) -> Vec<MaglevBackend> {
        specs.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn seed() -> HashSeed {
        "AAECAwQFBgcICQoL".parse().unwrap()
    }

    #[test]
    fn offset_and_skip_follow_the_documented_recipe() {
        // Computed independently from the module documentation's recipe (SipHash-2-4 of the
        // 19 identity bytes, key = seed ++ tag).
        let addr: L3n4Addr = "10.0.0.1:80".parse().unwrap();
        assert_eq!(offset_and_skip(&seed(), &addr, 251), (18, 68));
        assert_eq!(offset_and_skip(&seed(), &addr, 65521), (56596, 19568));
    }

    #[test]
    fn three_backends_share_the_table_evenly_and_deterministically() {
        let bs = backends(&["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]);
        let table = build_table(251, &seed(), &bs).unwrap();
        assert_eq!(table.len(), 251);
        let counts = entry_counts(&table, 3);
        assert_eq!(counts.iter().sum::<u32>(), 251);
        assert!(counts.iter().all(|&c| c == 83 || c == 84), "{counts:?}");
        assert_eq!(build_table(251, &seed(), &bs).unwrap(), table);
        // A different seed moves entries around.
        assert_ne!(build_table(251, &HashSeed::default(), &bs).unwrap(), table);
    }

    #[test]
    fn weights_set_shares_and_zero_weight_takes_nothing() {
        let bs = backends(&["10.0.0.1:80@1", "10.0.0.2:80@3", "10.0.0.3:80@0"]);
        let table = build_table(4093, &seed(), &bs).unwrap();
        let counts = entry_counts(&table, 3);
        assert_eq!(counts[2], 0);
        // 1:3 of 4093 entries is 1023.25 : 3069.75.
        assert!((1022..=1024).contains(&counts[0]), "{counts:?}");
        assert_eq!(counts[0] + counts[1], 4093);
    }

    #[test]
    fn first_iterations_follow_the_paper() {
        // With equal weights, iteration 1 gives each backend (in identity order) the first empty
        // slot of its permutation.
        let bs = backends(&["10.0.0.2:80", "10.0.0.1:80"]);
        let table = build_table(251, &seed(), &bs).unwrap();
        let (o1, _) = offset_and_skip(&seed(), &bs[1].addr, 251);
        let (o2, s2) = offset_and_skip(&seed(), &bs[0].addr, 251);
        // 10.0.0.1 (index 1) sorts first: it takes its offset; then 10.0.0.2 takes its own offset,
        // or the next slot of its permutation if that is taken.
        assert_eq!(table[o1 as usize], 1);
        let second = if o2 == o1 { (o2 + s2) % 251 } else { o2 };
        assert_eq!(table[second as usize], 0);
    }

    #[test]
    fn no_live_backend_gives_an_empty_table() {
        assert_eq!(build_table(251, &seed(), &[]).unwrap(), Vec::<u32>::new());
        let bs = backends(&["10.0.0.1:80@0", "10.0.0.2:80@0"]);
        assert_eq!(build_table(251, &seed(), &bs).unwrap(), Vec::<u32>::new());
    }

    #[test]
    fn rejects_sizes_outside_the_list_naming_the_size() {
        for size in [0, 1, 250, 252, 1000, 65537, u32::MAX] {
            let err = build_table(size, &seed(), &backends(&["10.0.0.1:80"])).unwrap_err();
            assert_eq!(err, MaglevError::InvalidTableSize { size });
            let msg = err.to_string();
            assert!(msg.contains(&format!("maglev.tableSize {size}:")), "{msg}");
            // The message lists exactly the accepted sizes.
            let listed = msg
                .split("primes ")
                .nth(1)
                .unwrap()
                .split(" (")
                .next()
                .unwrap();
            let listed: Vec<u32> = listed.split(", ").map(|s| s.parse().unwrap()).collect();
            assert_eq!(listed, TABLE_SIZES);
        }
        for size in TABLE_SIZES {
            assert_eq!(check_table_size(size), Ok(()));
        }
        assert!(TABLE_SIZES.contains(&DEFAULT_TABLE_SIZE));
    }

    #[test]
    fn rejects_duplicates_naming_both_positions() {
        let bs = backends(&["10.0.0.1:80", "10.0.0.2:80", "10.0.0.1:80@5"]);
        let err = build_table(251, &seed(), &bs).unwrap_err();
        assert_eq!(
            err.to_string(),
            "duplicate Maglev backend: 10.0.0.1:80/TCP (position 0) and 10.0.0.1:80/TCP \
             (position 2) are the same address; each backend address may appear only once"
        );
        // An IPv4 address and its IPv4-mapped IPv6 form are the same backend.
        let bs = backends(&["[::ffff:10.0.0.1]:80@0", "10.0.0.1:80"]);
        let err = build_table(251, &seed(), &bs).unwrap_err();
        assert!(
            matches!(
                err,
                MaglevError::DuplicateBackend {
                    first: 0,
                    second: 1,
                    ..
                }
            ),
            "{err}"
        );
        // Same IP and port, other protocol: distinct.
        let bs = backends(&["10.0.0.1:80/TCP", "10.0.0.1:80/UDP"]);
        assert!(build_table(251, &seed(), &bs).is_ok());
    }

    #[test]
    fn rejects_more_live_backends_than_entries() {
        let mut bs: Vec<MaglevBackend> = (0..252u16)
            .map(|i| format!("10.0.{}.{}:80", i / 256, i % 256).parse().unwrap())
            .collect();
        let err = build_table(251, &seed(), &bs).unwrap_err();
        assert_eq!(
            err,
            MaglevError::TooManyBackends {
                count: 252,
                table_size: 251
            }
        );
        assert!(err.to_string().contains("252 backends"), "{err}");
        // Exactly 251 live fit, one entry each; weight-0 backends do not count.
        bs[7].weight = 0;
        let table = build_table(251, &seed(), &bs).unwrap();
        let counts = entry_counts(&table, bs.len());
        assert_eq!(counts[7], 0);
        assert!(counts
            .iter()
            .enumerate()
            .all(|(i, &c)| c == u32::from(i != 7)));
    }

    #[test]
    fn queued_fill_matches_round_fill() {
        let seed = seed();
        let hashes = Hashes::new(&seed);
        let cases: [&[u16]; 4] = [
            &[1, 1, 1],
            &[100, 1, 7, 65535, 3, 3, 9],
            &[65535, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
            &[5, 10, 15, 20, 20],
        ];
        for weights in cases {
            for m in [251, 4093] {
                let make = || -> Vec<Cursor> {
                    let w_max = u64::from(*weights.iter().max().unwrap());
                    weights
                        .iter()
                        .zip(0u32..)
                        .map(|(&w, i)| {
                            let addr: L3n4Addr = format!("10.0.0.{i}:80").parse().unwrap();
                            let (offset, skip) = hashes.offset_and_skip(&addr.identity_bytes(), m);
                            Cursor {
                                next: offset,
                                skip,
                                index: i,
                                weight: u32::from(w),
                                progress: 0,
                                threshold: w_max,
                            }
                        })
                        .collect()
                };
                let w_max = u64::from(*weights.iter().max().unwrap());
                let mut a = vec![EMPTY; m as usize];
                fill_rounds(&mut a, &mut make(), w_max);
                let mut b = vec![EMPTY; m as usize];
                fill_queued(&mut b, &mut make(), w_max);
                assert_eq!(a, b, "weights {weights:?}, m {m}");
                assert!(!a.contains(&EMPTY));
            }
        }
    }
}
