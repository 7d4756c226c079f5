//! Socket-LB against its limit and against kube-proxy: connect + first byte + close, one
//! connection at a time, from pods of one netsim node to three backend pods:
//!
//! - **direct**: to a backend's address from a pod with neither hooks nor rules (the limit);
//! - **direct, hooked**: the same from the pod under the socket-LB hooks (the hooks' miss path);
//! - **direct, empty hooks**: the same from a pod whose cgroup has programs that do nothing on
//!   the same hooks: the kernel's hook machinery alone, the floor of the two above;
//! - **socket-LB**: to a ClusterIP from that pod; the `connect` hook rewrites the address;
//! - **iptables**: to the same ClusterIP from a pod whose `nat` table holds the rules
//!   kube-proxy's iptables mode writes for the same services (nf_tables backend).
//!
//! For 1, 1 000 and 10 000 services, programmed by `lb-agent --once` from generated manifests
//! and by one `iptables-restore`; the connections go to the *last* service, the end of
//! `KUBE-SERVICES`, where iptables' linear match costs most. Variants alternate in short rounds
//! (the order rotating), everything pinned to one CPU, so that machine noise hits all of them
//! alike. The table ends with whether socket-LB reached 0.98 × direct at every N, judged by the
//! overall rate and by the paired per-round ratio. Every address is inside namespaces the bench
//! created; the host's tables, interfaces and cgroups are not touched.
//!
//! `cargo xtask bench socket-lb` (root). Reports, does not assert timing; exits non-zero when it
//! cannot run (not root, a connection fails, a backend is never chosen). Arguments (such as the
//! `--bench` cargo passes) are ignored.

#[path = "../common/agent_files.rs"]
mod agent_files;
#[path = "../common/iptables.rs"]
mod iptables;
mod services;
mod stats;
mod worker;
mod world;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use stats::{Samples, Summary};
use world::{Client, World};

/// Service counts measured.
const COUNTS: [u32; 3] = [1, 1_000, 10_000];
/// Rounds per service count; each round runs every variant once. Short rounds, many of them:
/// on a shared machine noise comes in bursts of milliseconds to seconds, and rounds much
/// shorter than a burst spread it over every variant alike.
const ROUNDS: u32 = 2_000;
/// Connections per variant and round.
const PER_ROUND: u32 = 20;
/// Time one round of one variant may take; a slower round measures fewer connections.
const ROUND_BUDGET: Duration = Duration::from_secs(1);
/// Connections per variant before measuring, also checking every backend answers.
const WARMUP: u32 = 600;
/// The target: socket-LB at least this fraction of direct (0.95 before; 0.98 leaves the hooks
/// almost no fixed cost to hide behind).
const TARGET: f64 = 0.98;

/// A measured way of reaching a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    Direct,
    DirectEmptyHooks,
    DirectHooked,
    SocketLb,
    Iptables,
}

const VARIANTS: [Variant; 5] = [
    Variant::Direct,
    Variant::DirectEmptyHooks,
    Variant::DirectHooked,
    Variant::SocketLb,
    Variant::Iptables,
];

impl Variant {
    fn label(self) -> &'static str {
        match self {
            Variant::Direct => "direct to backend (limit)",
            Variant::DirectEmptyHooks => "direct, empty-hooks pod",
            Variant::DirectHooked => "direct, socket-LB pod",
            Variant::SocketLb => "ClusterIP via socket-LB",
            Variant::Iptables => "ClusterIP via iptables",
        }
    }

    fn client(self) -> Client {
        match self {
            Variant::Direct => Client::Direct,
            Variant::DirectEmptyHooks => Client::EmptyHooks,
            Variant::DirectHooked | Variant::SocketLb => Client::Sock,
            Variant::Iptables => Client::Iptables,
        }
    }

    /// Whether it goes through a service (and so should reach every backend).
    fn via_service(self) -> bool {
        matches!(self, Variant::SocketLb | Variant::Iptables)
    }
}

fn main() -> ExitCode {
    if std::env::var_os(world::ROLE_VAR).is_some() {
        return worker::client_main();
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "socket-lb bench: needs root (it creates network namespaces, cgroups, a bpffs and \
             BPF programs, and iptables rules inside its own namespace); run it as root"
        );
        return ExitCode::from(2);
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("socket-lb bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// One row of the table.
struct Row {
    services: u32,
    variant: Variant,
    summary: Summary,
}

fn run() -> Result<()> {
    let cpu = pin_to_one_cpu()?;
    eprintln!("socket-lb: clients, servers and everything they start run on CPU {cpu}");
    let mut world = World::new(&COUNTS)?;
    eprintln!(
        "socket-lb: topology up (node n1; pods client-direct, client-empty, client-sock, ipt-N \
         for each N, backend-1..3); iptables backend nf_tables"
    );
    let mut rows = Vec::new();
    for count in COUNTS {
        let set = world.service_set(count);
        eprintln!("socket-lb: {count} services: programming the socket-LB maps with lb-agent…");
        let agent = world.program_socket_lb(&set)?;
        eprintln!(
            "socket-lb: {count} services: lb-agent --once programmed them in {:.2} s",
            agent.as_secs_f64()
        );
        let (rules, ipt) = world.program_iptables(&set)?;
        eprintln!(
            "socket-lb: {count} services: iptables-restore loaded {rules} rules in {:.2} s",
            ipt.as_secs_f64()
        );
        let started = Instant::now();
        let samples = measure(&mut world, &set)?;
        eprintln!(
            "socket-lb: {count} services: measured in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        for (variant, s) in VARIANTS.iter().zip(&samples) {
            let summary = s
                .summary(&samples[0])
                .ok_or_else(|| anyhow::anyhow!("no {} samples", variant.label()))?;
            rows.push(Row {
                services: count,
                variant: *variant,
                summary,
            });
        }
    }
    print_table(&rows);
    Ok(())
}

/// Pins this process, and so the threads and processes it starts, to the last CPU it may run
/// on. Clients and servers then share one CPU whatever the variant: without it, whether a
/// client lands on the server's CPU or the other one (and what else runs there) changes its
/// latency by a factor of three, which is more than the mechanisms differ.
fn pin_to_one_cpu() -> Result<usize> {
    use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
    use nix::unistd::Pid;
    let allowed = sched_getaffinity(Pid::from_raw(0))?;
    let cpu = (0..CpuSet::count())
        .rev()
        .find(|&c| allowed.is_set(c).unwrap_or(false))
        .ok_or_else(|| anyhow::anyhow!("no CPU in this process's affinity mask"))?;
    let mut one = CpuSet::new();
    one.set(cpu)?;
    sched_setaffinity(Pid::from_raw(0), &one)?;
    Ok(cpu)
}

/// Warms up and checks each variant, then runs the interleaved rounds.
fn measure(world: &mut World, set: &services::ServiceSet) -> Result<Vec<Samples>> {
    // Direct connections pick a backend at random per connection, as the services do, so
    // every variant spreads its connections over the three servers alike.
    let backends = world.backends();
    let service = [set.last()];
    let targets = |variant: Variant| -> &[std::net::SocketAddrV4] {
        if variant.via_service() {
            &service
        } else {
            &backends
        }
    };
    for variant in VARIANTS {
        let m = world.measure(variant.client(), targets(variant), WARMUP, ROUND_BUDGET)?;
        if m.spread.len() != backends.len() {
            bail!(
                "{} with {} services reached only {}",
                variant.label(),
                set.count,
                worker::describe_spread(&m.spread)
            );
        }
    }
    let mut samples = vec![Samples::default(); VARIANTS.len()];
    for round in 0..ROUNDS {
        for k in 0..VARIANTS.len() {
            let i = (k + round as usize) % VARIANTS.len();
            let variant = VARIANTS[i];
            let m = world.measure(variant.client(), targets(variant), PER_ROUND, ROUND_BUDGET)?;
            samples[i].extend(&m.nanos);
            samples[i].end_round();
        }
    }
    Ok(samples)
}

fn print_table(rows: &[Row]) {
    println!(
        "\nconnect + first byte + close, one at a time; ClusterIP connections to the last of N \
         services;\nconnects/s = 1 / mean; vs direct = connects/s ÷ direct's; paired = median \
         over rounds of direct's mean ÷ this variant's"
    );
    println!(
        "{:>8}  {:<26} {:>8} {:>12} {:>9} {:>9} {:>10} {:>8}",
        "services", "variant", "connects", "connects/s", "p50 µs", "p99 µs", "vs direct", "paired"
    );
    let mut held = Vec::new();
    let mut floor = Vec::new();
    for row in rows {
        let direct = rows
            .iter()
            .find(|r| r.services == row.services && r.variant == Variant::Direct)
            .map(|r| r.summary.rate)
            .unwrap_or(f64::NAN);
        let ratio = row.summary.rate / direct;
        println!(
            "{:>8}  {:<26} {:>8} {:>12.0} {:>9.1} {:>9.1} {:>10.3} {:>8.3}",
            row.services,
            row.variant.label(),
            row.summary.count,
            row.summary.rate,
            row.summary.p50_us,
            row.summary.p99_us,
            ratio,
            row.summary.paired
        );
        if row.variant == Variant::SocketLb {
            held.push((row.services, ratio, row.summary.paired));
        }
        if row.variant == Variant::DirectEmptyHooks {
            floor.push(format!("N={}: {:.3}", row.services, row.summary.paired));
        }
    }
    println!();
    println!(
        "the hooks' machinery alone (programs that do nothing on the same hooks), paired: {}",
        floor.join(", ")
    );
    verdict(
        "connects/s ÷ direct's",
        held.iter().map(|&(n, r, _)| (n, r)),
    );
    verdict("paired", held.iter().map(|&(n, _, p)| (n, p)));
}

/// The final line for one measure of the ratio: whether socket-LB reached [`TARGET`] at
/// every service count.
fn verdict(measure: &str, ratios: impl Iterator<Item = (u32, f64)> + Clone) {
    let all: Vec<String> = ratios
        .clone()
        .map(|(n, r)| format!("N={n}: {r:.3}"))
        .collect();
    let missed: Vec<String> = ratios
        // A NaN ratio (no direct row) is a miss too.
        .filter(|(_, r)| r.is_nan() || *r < TARGET)
        .map(|(n, _)| format!("N={n}"))
        .collect();
    let outcome = if missed.is_empty() {
        "held at every N".to_owned()
    } else {
        format!("missed at {}", missed.join(", "))
    };
    println!(
        "target ClusterIP via socket-LB ≥ {TARGET} × direct, by {measure}: {outcome} ({})",
        all.join(", ")
    );
}
