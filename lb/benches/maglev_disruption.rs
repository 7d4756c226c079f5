//! How many entries of other backends move when one backend goes or comes, over many random
//! cases per (M, N) with M ≥ 100·N: the figures behind `Disruption` in `lb::maglev`.
//!
//! `cargo xtask bench maglev-disruption`; `TRIALS=n` cases per (M, N) (default 100),
//! `WEIGHTED=1` draws weights in 1..=100 instead of equal weights.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use lb::maglev::{moved_on_addition, moved_on_removal, HashSeed, MaglevBackend, TABLE_SIZES};
use lb::model::{L3n4Addr, L4Protocol};

/// xorshift64: a fixed, dependency-free sequence, so runs are repeatable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn main() {
    let trials: usize = std::env::var("TRIALS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let weighted = std::env::var_os("WEIGHTED").is_some();
    let mut rng = Rng(0x1234_5678_9abc_def1);
    println!(
        "Maglev disruption: entries of other backends that change owner when one of N backends \
         is removed (N -> N-1) or the N-th added (N-1 -> N), in % of M; {trials} random cases per \
         row; weights {}.",
        if weighted { "random 1..=100" } else { "equal" }
    );
    println!(
        "{:>7} {:>5} | {:>9} {:>9} {:>8} | {:>9} {:>9} {:>8}",
        "M", "N", "rm max", "rm mean", "rm >1%", "add max", "add mean", "add >1%"
    );
    let mut summary = Vec::new();
    for m in TABLE_SIZES {
        let n_max = (m / 100) as usize;
        let mut ns: Vec<usize> = [2, 3, 5, 10, 20, 50, 100, 200, 400, 650, 1000]
            .into_iter()
            .filter(|&n| n < n_max)
            .collect();
        ns.push(n_max);
        let (mut worst, mut over, mut cases) = (0usize, 0usize, 0usize);
        for n in ns {
            let (mut rm, mut add) = (Vec::with_capacity(trials), Vec::with_capacity(trials));
            for _ in 0..trials {
                let mut seen = BTreeSet::new();
                let mut backends = Vec::with_capacity(n);
                while backends.len() < n {
                    let addr = L3n4Addr::new(
                        Ipv4Addr::from(rng.next() as u32).into(),
                        rng.next() as u16,
                        L4Protocol::Tcp,
                    );
                    let weight = if weighted {
                        1 + (rng.next() % 100) as u16
                    } else {
                        100
                    };
                    if seen.insert(addr) {
                        backends.push(MaglevBackend::new(addr, weight));
                    }
                }
                let mut seed = [0u8; 12];
                seed.iter_mut().for_each(|b| *b = rng.next() as u8);
                let seed = HashSeed::from_bytes(seed);
                let victim = rng.next() as usize % n;
                rm.push(moved_on_removal(m, &seed, &backends, victim).expect("valid table"));
                let added = backends.pop().expect("n >= 2");
                add.push(moved_on_addition(m, &seed, &backends, added).expect("valid table"));
            }
            let pct = |x: usize| 100.0 * x as f64 / f64::from(m);
            let mean = |v: &[usize]| pct(v.iter().sum::<usize>()) / v.len() as f64;
            let over_one = |v: &[usize]| v.iter().filter(|&&x| x * 100 > m as usize).count();
            let (rm_max, add_max) = (
                *rm.iter().max().unwrap_or(&0),
                *add.iter().max().unwrap_or(&0),
            );
            println!(
                "{m:>7} {n:>5} | {:>8.2}% {:>8.2}% {:>8} | {:>8.2}% {:>8.2}% {:>8}",
                pct(rm_max),
                mean(&rm),
                over_one(&rm),
                pct(add_max),
                mean(&add),
                over_one(&add)
            );
            worst = worst.max(rm_max).max(add_max);
            over += over_one(&rm) + over_one(&add);
            cases += 2 * trials;
        }
        summary.push((m, 100.0 * worst as f64 / f64::from(m), over, cases));
    }
    println!("\nper M: worst case, and cases above 1% of M");
    for (m, worst, over, cases) in summary {
        println!("{m:>7}: worst {worst:>5.2}%   above 1%: {over:>5} / {cases}");
    }
}
