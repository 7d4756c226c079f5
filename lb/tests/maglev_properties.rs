//! Properties of Maglev tables (`lb::maglev`), checked on random inputs.
//!
//! Sizes are kept small where the property allows, so the file runs in a few seconds in the debug
//! profile. Failures are not persisted to `proptest-regressions/`: a failing case is printed, with
//! its seed, in the test output.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use lb::maglev::reference::reference_table;
use lb::maglev::{
    build_table, entry_counts, moved_on_addition, moved_on_removal, HashSeed, MaglevBackend,
    TableDump, TABLE_SIZES,
};
use lb::model::{L3n4Addr, L4Protocol};
use proptest::prelude::*;
use proptest::sample::select;

// ---------------------------------------------------------------------------------------------
// Generators and helpers.

/// A config running `cases` cases (or `PROPTEST_CASES`, if set, for a deeper run), without
/// writing regression files into the source tree.
fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Any TCP or UDP address, IPv4 or IPv6 (`fd00::/16`).
fn addr() -> impl Strategy<Value = L3n4Addr> {
    (any::<u32>(), any::<u16>(), any::<bool>(), any::<bool>()).prop_map(|(ip, port, udp, v6)| {
        let ip: IpAddr = if v6 {
            Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, (ip >> 16) as u16, ip as u16).into()
        } else {
            Ipv4Addr::from(ip).into()
        };
        let protocol = if udp {
            L4Protocol::Udp
        } else {
            L4Protocol::Tcp
        };
        L3n4Addr::new(ip, port, protocol)
    })
}

/// Exactly `n` distinct addresses, in random order.
fn distinct_addrs(n: usize) -> impl Strategy<Value = Vec<L3n4Addr>> {
    prop::collection::btree_set(addr(), n)
        .prop_map(|set: BTreeSet<L3n4Addr>| set.into_iter().collect::<Vec<_>>())
        .prop_shuffle()
}

/// The table sizes from `min` to `max`.
fn sizes(min: u32, max: u32) -> impl Strategy<Value = u32> {
    let sizes: Vec<u32> = TABLE_SIZES
        .iter()
        .copied()
        .filter(|&m| (min..=max).contains(&m))
        .collect();
    select(sizes)
}

fn seed() -> impl Strategy<Value = HashSeed> {
    any::<[u8; 12]>().prop_map(HashSeed::from_bytes)
}

/// `n` backends with weights drawn from `weight`.
fn backends_with(
    n: usize,
    weight: impl Strategy<Value = u16> + Clone,
) -> impl Strategy<Value = Vec<MaglevBackend>> {
    (distinct_addrs(n), prop::collection::vec(weight, n..=n)).prop_map(|(addrs, weights)| {
        addrs
            .into_iter()
            .zip(weights)
            .map(|(addr, weight)| MaglevBackend::new(addr, weight))
            .collect()
    })
}

/// `n` backends sharing one random weight.
fn equal_backends(n: usize) -> impl Strategy<Value = Vec<MaglevBackend>> {
    (distinct_addrs(n), 1..=u16::MAX).prop_map(|(addrs, weight)| {
        addrs
            .into_iter()
            .map(|addr| MaglevBackend::new(addr, weight))
            .collect()
    })
}

/// The address owning each slot: comparable between tables built from different lists.
fn owners(table: &[u32], backends: &[MaglevBackend]) -> Vec<L3n4Addr> {
    table.iter().map(|&i| backends[i as usize].addr).collect()
}

/// Whether `build_table`'s documentation guarantees backend `i` an entry:
/// `Σⱼ ⌊t·wⱼ / w_max⌋ ≤ M` for `t = ⌈w_max / wᵢ⌉`.
fn guaranteed_an_entry(m: u32, backends: &[MaglevBackend], i: usize) -> bool {
    let w_max = backends
        .iter()
        .map(|b| u64::from(b.weight))
        .max()
        .unwrap_or(0);
    let w_i = u64::from(backends[i].weight);
    if w_i == 0 {
        return false;
    }
    let t = w_max.div_ceil(w_i);
    let turns: u64 = backends
        .iter()
        .map(|b| t * u64::from(b.weight) / w_max)
        .sum();
    turns <= u64::from(m)
}

// ---------------------------------------------------------------------------------------------
// (a) Every entry names a live backend; every live backend appears.

proptest! {
    #![proptest_config(config(256))]

    /// Whatever the weights (including 0 and extremes), every entry is a backend with weight > 0,
    /// the table has M entries (or none when no backend is live), and every backend the
    /// documentation guarantees an entry has one.
    #[test]
    fn every_entry_names_a_live_backend(
        (m, backends) in sizes(251, 4093).prop_flat_map(|m| {
            let weight = prop_oneof![Just(0u16), 1..=u16::MAX, 1..=10u16];
            (Just(m), (1usize..=60).prop_flat_map(move |n| backends_with(n, weight.clone())))
        }),
        seed in seed(),
    ) {
        let table = build_table(m, &seed, &backends).unwrap();
        let any_live = backends.iter().any(|b| b.weight > 0);
        prop_assert_eq!(table.len(), if any_live { m as usize } else { 0 });
        let counts = entry_counts(&table, backends.len());
        for (i, b) in backends.iter().enumerate() {
            if b.weight == 0 {
                prop_assert_eq!(counts[i], 0, "weight-0 backend {} has entries", b.addr);
            } else if guaranteed_an_entry(m, &backends, i) {
                prop_assert!(counts[i] > 0, "live backend {} ({}) has no entry", b.addr, b.weight);
            }
        }
    }

    /// Equal weights: every backend appears, even with as many backends as entries.
    #[test]
    fn every_backend_appears_with_equal_weights(
        (m, backends) in sizes(251, 509)
            .prop_flat_map(|m| (Just(m), (1..=m as usize).prop_flat_map(equal_backends))),
        seed in seed(),
    ) {
        let table = build_table(m, &seed, &backends).unwrap();
        let counts = entry_counts(&table, backends.len());
        prop_assert!(counts.iter().all(|&c| c > 0), "{:?}", counts);
    }

    /// Weights up to 100× apart with M ≥ 100·N: every live backend appears, no dead one does.
    #[test]
    fn every_weighted_backend_appears(
        (m, backends) in sizes(251, 16381).prop_flat_map(|m| {
            let weight = prop_oneof![1 => Just(0u16), 4 => 1..=100u16];
            let n_max = (m / 100) as usize;
            (Just(m), (1..=n_max).prop_flat_map(move |n| backends_with(n, weight.clone())))
        }),
        seed in seed(),
    ) {
        let table = build_table(m, &seed, &backends).unwrap();
        let counts = entry_counts(&table, backends.len());
        for (i, b) in backends.iter().enumerate() {
            prop_assert_eq!(counts[i] > 0, b.weight > 0, "{} weight {}: {} entries",
                b.addr, b.weight, counts[i]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// (b) Equal weights: entry counts differ by at most one.

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn equal_weights_share_within_one_entry(
        (m, backends, dead) in sizes(251, 16381).prop_flat_map(|m| {
            let n_max = (m as usize).min(300);
            (Just(m), (1..=n_max).prop_flat_map(equal_backends), distinct_addrs(3))
        }),
        dead_count in 0usize..=3,
        seed in seed(),
    ) {
        // Weight-0 backends, if any, must not disturb the others' shares. (Addresses that
        // collide with a live one are dropped: duplicates are an error.)
        let mut all = backends.clone();
        for addr in dead.into_iter().take(dead_count) {
            if !backends.iter().any(|b| b.addr.identity_bytes() == addr.identity_bytes()) {
                all.push(MaglevBackend::new(addr, 0));
            }
        }
        let table = build_table(m, &seed, &all).unwrap();
        let counts = entry_counts(&table, all.len());
        let live = &counts[..backends.len()];
        let (min, max) = (live.iter().min().unwrap(), live.iter().max().unwrap());
        prop_assert!(max - min <= 1, "counts {:?}", live);
        prop_assert!(counts[backends.len()..].iter().all(|&c| c == 0));
    }
}

// ---------------------------------------------------------------------------------------------
// (c) Weighted shares within 0.01 of the weight shares when M ≥ 100·N.

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn weighted_shares_follow_weights(
        (m, backends) in sizes(251, 16381).prop_flat_map(|m| {
            let weight = prop_oneof![1 => Just(0u16), 3 => 1..=u16::MAX, 3 => 1..=20u16];
            let n_max = (m / 100) as usize;
            (Just(m), (1..=n_max).prop_flat_map(move |n| backends_with(n, weight.clone())))
        }),
        seed in seed(),
    ) {
        let table = build_table(m, &seed, &backends).unwrap();
        let counts = entry_counts(&table, backends.len());
        let w_sum: u64 = backends.iter().map(|b| u64::from(b.weight)).sum();
        prop_assume!(w_sum > 0);
        // A backend of weight w takes floor(T·w/w_max) turns, plus one in a last partial
        // iteration; the floors of all N backends lose at most N turns, which the extra
        // iterations hand out in proportion to weight. So the count is within 2 + N·w/W of
        // M·w/W (entries, not shares: a backend with no entry where several are due fails).
        let live = backends.iter().filter(|b| b.weight > 0).count() as f64;
        for (i, b) in backends.iter().enumerate() {
            let want = b.weight as f64 / w_sum as f64;
            let expected = f64::from(m) * want;
            let slack = 2.0 + live * want;
            prop_assert!(
                (f64::from(counts[i]) - expected).abs() <= slack,
                "{} weight {}: {} of {} entries, {:.1} expected (slack {:.1})",
                b.addr, b.weight, counts[i], m, expected, slack
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// (d) The input order does not matter.

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn input_order_does_not_matter(
        (m, backends, shuffled) in sizes(251, 16381).prop_flat_map(|m| {
            let weight = prop_oneof![Just(0u16), 1..=1000u16, Just(100u16)];
            (Just(m), (1usize..=80).prop_flat_map(move |n| backends_with(n, weight.clone())))
        }).prop_flat_map(|(m, backends)| {
            (Just(m), Just(backends.clone()), Just(backends).prop_shuffle())
        }),
        seed in seed(),
    ) {
        let a = build_table(m, &seed, &backends).unwrap();
        let b = build_table(m, &seed, &shuffled).unwrap();
        prop_assert_eq!(owners(&a, &backends), owners(&b, &shuffled));
        let mut reversed = backends.clone();
        reversed.reverse();
        let c = build_table(m, &seed, &reversed).unwrap();
        prop_assert_eq!(owners(&a, &backends), owners(&c, &reversed));
    }
}

// ---------------------------------------------------------------------------------------------
// (e) Few entries move when one backend goes or comes. The documents claim "with M ≥ 100·N, at
// most 1% difference in the reassignments"; measured, that holds on average only for large
// tables and not case by case for small ones (see `Disruption` in lb/src/maglev/mod.rs and
// `cargo xtask bench maglev-disruption`). These tests hold the claim where the documents make
// it concretely: M = 65521 for ~650 backends.

/// M = 65521 with 600 to 650 backends: random addresses and seeds, drawn from a fixed RNG seed
/// so the sample is the same on every run (the claim is statistical; a fresh sample per run
/// would make the test flaky rather than stricter). `PROPTEST_CASES` draws a larger sample.
fn documents_example() -> ProptestConfig {
    ProptestConfig {
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x6d61_676c_6576),
        ..config(12)
    }
}

proptest! {
    #![proptest_config(documents_example())]

    #[test]
    fn removing_one_backend_moves_at_most_one_percent_at_65521(
        backends in (600usize..=650).prop_flat_map(equal_backends),
        seed in seed(),
        victim in any::<proptest::sample::Index>(),
    ) {
        let m = 65521;
        let moved = moved_on_removal(m, &seed, &backends, victim.index(backends.len())).unwrap();
        prop_assert!(moved * 100 <= m as usize, "removal moved {} of {} entries of other backends", moved, m);
    }

    #[test]
    fn adding_one_backend_moves_at_most_one_percent_at_65521(
        backends in (601usize..=651).prop_flat_map(equal_backends),
        seed in seed(),
    ) {
        let m = 65521;
        let (added, rest) = backends.split_last().unwrap();
        let moved = moved_on_addition(m, &seed, rest, *added).unwrap();
        prop_assert!(moved * 100 <= m as usize, "addition moved {} of {} entries of other backends", moved, m);
    }
}

/// The 1% figure does hold for the configuration the benchmark targets (M = 65521, N = 650
/// equal weights): a fixed, deterministic check, so that a change in the algorithm that makes
/// large tables less stable is caught. (Measured on random inputs of this size: at most 0.91%.)
#[test]
fn one_change_moves_under_one_percent_in_the_benchmark_configuration() {
    let m = 65521;
    let all: Vec<MaglevBackend> = (0..651u32)
        .map(|i| {
            let ip = Ipv4Addr::from(0x0a00_0000 + i * 7919);
            MaglevBackend::new(L3n4Addr::new(ip.into(), 80, L4Protocol::Tcp), 100)
        })
        .collect();
    let (added, backends) = all.split_last().unwrap();
    for (seed, removed) in [
        (HashSeed::default(), 0),
        (HashSeed::from_bytes([7; 12]), 321),
    ] {
        let moved = moved_on_removal(m, &seed, backends, removed).unwrap();
        assert!(moved * 100 <= m as usize, "removal moved {moved} of {m}");
        let moved = moved_on_addition(m, &seed, backends, *added).unwrap();
        assert!(moved * 100 <= m as usize, "addition moved {moved} of {m}");
    }
}

// ---------------------------------------------------------------------------------------------
// (f) Same seed, same table: across processes (snapshot) and within one.

/// A fixed table, pinned in `tests/snapshots/`: any change to the hashes, the identity encoding,
/// the canonical order or the fill shows here. (The snapshot was also checked against an
/// independent implementation of the documented recipe.)
#[test]
fn fixed_seed_table_is_stable_across_processes() {
    let backends: Vec<MaglevBackend> = [
        "10.0.0.1:80",
        "10.0.0.2:80@50",
        "[fd00::3]:8080/UDP@200",
        "10.0.0.4:443",
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect();
    let seed: HashSeed = "q83vEjRWeJq8zeHy".parse().unwrap();
    let dump = TableDump::build(251, &seed, &backends).unwrap();
    insta::assert_json_snapshot!("maglev_m251_fixed_seed", dump);
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn same_inputs_same_table(
        (m, backends) in sizes(251, 16381).prop_flat_map(|m| {
            let weight = prop_oneof![Just(0u16), 1..=u16::MAX];
            (Just(m), (1usize..=100).prop_flat_map(move |n| backends_with(n, weight.clone())))
        }),
        seed_bytes in any::<[u8; 12]>(),
    ) {
        let a = build_table(m, &HashSeed::from_bytes(seed_bytes), &backends).unwrap();
        // A seed parsed back from its text form is the same seed.
        let reparsed: HashSeed = HashSeed::from_bytes(seed_bytes).to_string().parse().unwrap();
        let b = build_table(m, &reparsed, &backends.clone()).unwrap();
        prop_assert_eq!(a, b);
    }
}

// ---------------------------------------------------------------------------------------------
// (g) Different seeds, different tables.

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn different_seeds_give_different_tables(
        (m, backends) in sizes(251, 4093).prop_flat_map(|m| {
            let weight = prop_oneof![Just(100u16), 1..=10u16];
            (Just(m), (2usize..=50).prop_flat_map(move |n| backends_with(n, weight.clone())))
        }),
        s1 in seed(),
        s2 in seed(),
    ) {
        prop_assume!(s1 != s2);
        let a = build_table(m, &s1, &backends).unwrap();
        let b = build_table(m, &s2, &backends).unwrap();
        prop_assert_ne!(a, b);
    }
}

// ---------------------------------------------------------------------------------------------
// The implementation agrees with the textbook algorithm, weights included.

proptest! {
    #![proptest_config(config(256))]

    /// Including very uneven weights (one heavy backend, the rest at 0..=10), which from about
    /// 50 backends on take the implementation's priority-queue path.
    #[test]
    fn matches_the_textbook_algorithm(
        (m, backends) in sizes(251, 4093).prop_flat_map(|m| {
            let weight = prop_oneof![Just(100u16), 0..=u16::MAX, 0..=10u16];
            (Just(m), (1usize..=80).prop_flat_map(move |n| backends_with(n, weight.clone())))
        }),
        heavy in prop::option::of(prop_oneof![500..=5000u16, Just(u16::MAX)]),
        seed in seed(),
    ) {
        let mut backends = backends;
        if let Some(heavy) = heavy {
            backends[0].weight = heavy;
            for b in &mut backends[1..] {
                b.weight %= 11;
            }
        }
        let ours = build_table(m, &seed, &backends).unwrap();
        prop_assert_eq!(ours, reference_table(m, &seed, &backends));
    }
}
