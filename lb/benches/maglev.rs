//! Maglev table build: time and memory of `lb::maglev::build_table`, side by side with the
//! textbook algorithm that precomputes the full `M × N` permutation matrix (the paper's
//! pseudo-code; Cilium's Go code does the same).
//!
//! `cargo bench -p lb --bench maglev`. Reports, does not assert timing; exits non-zero if the two
//! implementations ever build different tables. Arguments (such as the `--bench` cargo passes)
//! are ignored.

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use lb::maglev::reference::reference_table;
use lb::maglev::{build_table, HashSeed, MaglevBackend};
use lb::model::{L3n4Addr, L4Protocol};

#[path = "common/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::{peak_extra, Counting};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

// ---------------------------------------------------------------------------------------------

const CASES: [(u32, usize); 4] = [(16381, 100), (16381, 1000), (65521, 650), (131071, 1000)];
const TARGET: (u32, usize) = (65521, 650);
const TARGET_MS: f64 = 2.0;
const TARGET_EXTRA_KIB: f64 = 1024.0;
const WARMUP: usize = 3;
const RUNS: usize = 25;

/// `n` backends `10.x.y.z:80`, equal weights.
fn backends(n: usize) -> Vec<MaglevBackend> {
    (0..n as u32)
        .map(|i| {
            let ip = Ipv4Addr::from(0x0a00_0001 + i);
            MaglevBackend::new(L3n4Addr::new(ip.into(), 80, L4Protocol::Tcp), 100)
        })
        .collect()
}

/// Median and minimum wall time of `RUNS` calls of `f`, after `WARMUP` calls.
fn time<T>(mut f: impl FnMut() -> T) -> (Duration, Duration) {
    for _ in 0..WARMUP {
        black_box(f());
    }
    let mut times: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            black_box(f());
            start.elapsed()
        })
        .collect();
    times.sort();
    (times[RUNS / 2], times[0])
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn kib(bytes: usize) -> f64 {
    bytes as f64 / 1024.0
}

#[derive(Debug)]
struct Row {
    m: u32,
    n: usize,
    ours: (Duration, Duration),
    ours_peak: usize,
    reference: (Duration, Duration),
    reference_peak: usize,
    same: bool,
}

fn main() -> ExitCode {
    // Arguments (`--bench`, filters) are accepted and ignored.
    let seed = HashSeed::default();
    let mut rows = Vec::new();
    for (m, n) in CASES {
        let backends = backends(n);
        let (ours_table, ours_peak) =
            peak_extra(|| build_table(m, &seed, &backends).expect("valid input"));
        let (reference, reference_peak) = peak_extra(|| reference_table(m, &seed, &backends));
        let same = ours_table == reference;
        drop((ours_table, reference));
        let ours = time(|| build_table(m, &seed, &backends).expect("valid input"));
        let reference = time(|| reference_table(m, &seed, &backends));
        rows.push(Row {
            m,
            n,
            ours,
            ours_peak,
            reference,
            reference_peak,
            same,
        });
    }

    println!("Maglev table build, one thread: lb::maglev::build_table (\"ours\", O(M + N) memory)");
    println!("vs the textbook M x N permutation-matrix algorithm (\"ref\"); backends 10.x.y.z:80,");
    println!("equal weights, default seed. Times: median and min of {RUNS} runs after {WARMUP} warm-up runs.");
    println!("Peak: heap growth during one build (peak in use minus in use before), output table");
    println!("included; \"beyond table\" subtracts the output table (4·M bytes).");
    println!();
    println!(
        "{:>7} {:>5} | {:>9} {:>9} {:>10} {:>10} {:>12} | {:>9} {:>9} {:>11} | {:>8} {:>8} | {:>5}",
        "M",
        "N",
        "ours med",
        "ours min",
        "table KiB",
        "peak KiB",
        "beyond KiB",
        "ref med",
        "ref min",
        "ref pk KiB",
        "time o/r",
        "mem o/r",
        "same"
    );
    println!(
        "{:>7} {:>5} | {:>9} {:>9} {:>10} {:>10} {:>12} | {:>9} {:>9} {:>11} | {:>8} {:>8} | {:>5}",
        "", "", "ms", "ms", "", "", "", "ms", "ms", "", "", "", "table"
    );
    for r in &rows {
        let table = r.m as usize * 4;
        println!(
            "{:>7} {:>5} | {:>9.3} {:>9.3} {:>10.1} {:>10.1} {:>12.1} | {:>9.3} {:>9.3} {:>11.1} | {:>8.3} {:>8.4} | {:>5}",
            r.m,
            r.n,
            ms(r.ours.0),
            ms(r.ours.1),
            kib(table),
            kib(r.ours_peak),
            kib(r.ours_peak.saturating_sub(table)),
            ms(r.reference.0),
            ms(r.reference.1),
            kib(r.reference_peak),
            ms(r.ours.0) / ms(r.reference.0),
            r.ours_peak as f64 / r.reference_peak as f64,
            if r.same { "yes" } else { "NO" },
        );
    }
    println!();

    let target = rows
        .iter()
        .find(|r| (r.m, r.n) == TARGET)
        .expect("the target is one of the cases");
    let verdict = |ok: bool| if ok { "PASS" } else { "FAIL" };
    let median = ms(target.ours.0);
    println!(
        "target {:?}: {median:.2} ms < {TARGET_MS} ms: {}",
        TARGET,
        verdict(median < TARGET_MS)
    );
    let extra = kib(target.ours_peak.saturating_sub(target.m as usize * 4));
    println!(
        "memory extra beyond table {:?}: {extra:.1} KiB < {TARGET_EXTRA_KIB} KiB: {}",
        TARGET,
        verdict(extra < TARGET_EXTRA_KIB)
    );

    let differ: Vec<_> = rows
        .iter()
        .filter(|r| !r.same)
        .map(|r| (r.m, r.n))
        .collect();
    if differ.is_empty() {
        println!(
            "identical tables (ours vs reference) in all {} cases: PASS",
            rows.len()
        );
        ExitCode::SUCCESS
    } else {
        println!("ours and the reference built DIFFERENT tables for (M, N) = {differ:?}: FAIL");
        ExitCode::FAILURE
    }
}
