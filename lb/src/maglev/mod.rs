//! Maglev consistent hashing (Eisenbud et al., "Maglev: A Fast and Reliable Software Network Load
//! Balancer", NSDI 2016, §3.4), with Envoy-style weights.
//!
//! A service's backends are spread over a lookup table of `M` entries (`maglev.tableSize`, a prime
//! from [`TABLE_SIZES`]); the datapath picks `table[hash(flow) % M]`. Every node builds the same
//! table from the same backends, so a flow keeps its backend whichever node it reaches, and a
//! change of backends moves few entries.
//!
//! # The recipe
//!
//! Everything below is exact, so that another implementation (the datapath's tests, a tool in
//! another language) can reproduce the tables byte for byte.
//!
//! **Inputs.** The table size `M` (one of [`TABLE_SIZES`]); the 12-byte seed `S`
//! (`maglev.hashSeed`, see [`HashSeed`]); the backends, each an address and a weight `w`
//! (0..=65535).
//!
//! **Identity.** A backend's identity is
//! [`L3n4Addr::identity_bytes`](crate::model::L3n4Addr::identity_bytes):
//! 19 bytes, the IPv6 address (IPv4 as IPv4-mapped IPv6, `::ffff:a.b.c.d`) in 16 bytes, the port
//! big-endian in 2, and the IANA protocol number (TCP 6, UDP 17) in 1. Two backends with the same
//! identity are an error.
//!
//! **Hashes.** Two independent keyed hashes, both SipHash-2-4 with the standard 64-bit output
//! (as in the reference implementation; the 16-byte key is read as two little-endian `u64`s `k0`,
//! `k1`), of the 19 identity bytes:
//!
//! * `h1 = SipHash-2-4(key = S ++ b"offs", identity)`
//! * `h2 = SipHash-2-4(key = S ++ b"skip", identity)`
//!
//! where `S ++ tag` is the 12 seed bytes followed by the 4 ASCII bytes of the tag. Then
//! `offset = h1 mod M` and `skip = (h2 mod (M − 1)) + 1` (in `u64` arithmetic). The backend's
//! permutation of the table is `offset, offset + skip, offset + 2·skip, … (mod M)`; as `M` is
//! prime and `1 ≤ skip < M`, it visits every slot exactly once. Test vector: with
//! `S = AAECAwQFBgcICQoL` (bytes 0 to 11), `10.0.0.1:80/TCP` has `(offset, skip) = (18, 68)` for
//! `M = 251` and `(56596, 19568)` for `M = 65521`; `tests/snapshots/` holds a full table.
//!
//! **Order.** Backends with weight 0 take no entries and are set aside. The others are visited in
//! canonical order: ascending identity bytes (lexicographic), so the table does not depend on the
//! order the backends were listed in.
//!
//! **Fill.** Let `w_max` be the largest weight. Every backend starts with 0 turns taken and its
//! cursor at `offset`. For iterations `t = 1, 2, …`, visit the backends in canonical order; backend
//! `i` takes a turn in iteration `t` iff `t · wᵢ ≥ (turnsᵢ + 1) · w_max` (integers). A turn
//! advances `i`'s cursor along its permutation to the first empty slot, gives that slot to `i`,
//! moves the cursor one step further, and counts the turn. The fill stops as soon as all `M` slots
//! are taken (possibly in the middle of an iteration). With equal weights every backend takes a
//! turn in every iteration: exactly the paper's round-robin `Populate`.
//!
//! **Result.** [`build_table`] returns, for every slot, the index of its backend in the caller's
//! list. With no backend of weight > 0 the table is empty ("no backend").
//!
//! # Cost
//!
//! The fill keeps O(1) state per backend (cursor, skip, weight, turn count): memory is the table
//! plus O(N), with no `M × N` permutation matrix. Time is about `M · ln M` probes of the table plus
//! `N` hashes; `benches/maglev.rs` compares it with the textbook matrix implementation.
//!
//! # Disruption (measured)
//!
//! Maglev is not perfectly stable: when one backend goes (or comes), entries that belonged to
//! *other* backends can move too. The rule of thumb "with `M ≥ 100·N`, at most 1% of the
//! entries are reassigned" does **not** hold as a bound for this algorithm (nor for the paper's,
//! which builds the same tables). Measured with `M ≥ 100·N`: for each M and N from 2 to M/100,
//! 300 random cases of removing one of N backends and 300 of adding the N-th, counted with
//! [`moved_on_removal`] and [`moved_on_addition`]; "moved" = entries of the other backends that
//! change owner, in % of M; the last column counts equal-weight cases:
//!
//! | M      | worst (equal w.) | worst (w. 1..=100) | mean at N = M/100 | cases > 1 % |
//! |--------|-----------------:|-------------------:|------------------:|------------:|
//! | 251    |            0.0 % |              0.0 % |             0.0 % |     0 / 600 |
//! | 509    |           25.5 % |              8.6 % |             2.0 % |  680 / 1800 |
//! | 1021   |           11.4 % |             30.7 % |             2.5 % | 1065 / 2400 |
//! | 2039   |           14.1 % |              8.2 % |             2.5 % | 1367 / 3000 |
//! | 4093   |            4.4 % |              8.1 % |             2.2 % | 1686 / 3600 |
//! | 8191   |            5.8 % |              4.7 % |             1.8 % | 1700 / 4200 |
//! | 16381  |            2.7 % |              3.9 % |             1.6 % | 1575 / 4800 |
//! | 32749  |            2.5 % |              2.5 % |             1.2 % | 1176 / 5400 |
//! | 65521  |            2.0 % |              1.7 % |             0.8 % |   71 / 6600 |
//! | 131071 |            1.3 % |              1.9 % |             0.5 % |    4 / 7200 |
//!
//! At M = 251 only N = 2 satisfies `M ≥ 100·N`, and going between 1 and 2 backends moves nothing
//! else. Single cases go far above the mean, mostly with few backends. At the boundary N = M/100
//! the mean itself is over 1% for every M up to 32749; it falls as M grows. The documents'
//! worked example, M = 65521 with 650 backends, stays under 1% (at most 0.91% measured).
//! `cargo xtask bench maglev-disruption` reproduces the table (`TRIALS=n` cases per (M, N),
//! `WEIGHTED=1` for random weights).

mod backend;
mod disruption;
mod dump;
pub mod reference;
mod seed;
mod table;

pub use backend::{BackendParseError, MaglevBackend, DEFAULT_WEIGHT};
pub use disruption::{moved_on_addition, moved_on_removal};
pub use dump::{table_json, TableDump};
pub use seed::{HashSeed, SeedParseError, DEFAULT_HASH_SEED, SEED_LEN};
pub use table::{
    build_table, check_table_size, entry_counts, offset_and_skip, MaglevError, DEFAULT_TABLE_SIZE,
    OFFSET_TAG, SKIP_TAG, TABLE_SIZES,
};
