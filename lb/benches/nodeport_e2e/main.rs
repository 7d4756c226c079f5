//! The NodePort paths end to end: packets and requests per second from an outside host to a
//! backend pod on another node, through a middle node that is
//!
//! - **XDP**: `lb-agent` with `loadBalancer.acceleration=native` (SNAT, out of the other
//!   device by `XDP_REDIRECT`);
//! - **tc**: the same agent with acceleration disabled;
//! - **iptables**: no agent, kube-proxy's `nat` rules for the same services (DNAT +
//!   MASQUERADE, nf_tables backend);
//! - **routing**: nothing but forwarding, the client addressing a backend directly: the limit
//!   of this generator on this machine.
//!
//! For 1 and 10 000 NodePort services (TCP; the last also UDP), sending to the last service
//! (the end of kube-proxy's chains). Every variant has its own middle node in one
//! topology (`world.rs`), so they are measured side by side: each round runs every variant
//! once, the order rotating, so drift of the machine hits all alike; the report gives the
//! median over rounds and the ratios per round (median).
//!
//! - **Packets/s**: a UDP flood with `sendmmsg` (64-byte frames) from [`FLOWS`] source ports,
//!   for [`ROUND`]; the backends' sinks count what arrives (`recvmmsg`). Both the datagrams
//!   the generator got out and those delivered are reported.
//! - **Requests/s**: one TCP connection after another (connect, one-byte request, one-byte
//!   answer, close), [`REQUESTS_PER_ROUND`] of them or for [`ROUND`] if that ends first.
//!   Each is a new flow: iptables walks its chains for each, the flood's flows only on their
//!   first packet.
//!
//! The generator and client run on one CPU, the backends on the other: with two CPUs
//! everything is CPU-bound, and the sender's CPU also carries the softirq work of the whole
//! path (veth delivers on the sending CPU), so the numbers are what one CPU achieves.
//!
//! `cargo xtask bench nodeport` (after the program-level half) or `cargo xtask bench
//! nodeport-e2e` (root). Reports, does not assert timing; exits non-zero when it cannot run
//! (not root, a variant delivers nothing, a backend is never reached). Every namespace,
//! rule and program is its own and removed at the end; the host's are not touched.

#[path = "../common/agent_files.rs"]
mod agent_files;
#[path = "../common/iptables.rs"]
mod iptables;
mod services;
mod traffic;
mod world;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use world::{Variant, Via, World};

/// Service counts measured.
const COUNTS: [u32; 2] = [1, 10_000];
/// Rounds; each runs every variant once. Many short rounds rather than a few long ones: the
/// machine is shared, its noise comes in bursts, and short rounds spread a burst over every
/// variant alike.
const ROUNDS: usize = 20;
/// How long each measurement of a round lasts.
const ROUND: Duration = Duration::from_millis(500);
/// How long the warm-up and check of each variant lasts.
const WARMUP: Duration = Duration::from_millis(500);
/// Requests per variant and round, at most. The agent's SNAT ports (61000-65535) are each
/// held for a flow until its conntrack entry has expired (10 s after the close) and the
/// agent's garbage collection (every 30 s, not run by `lb-agent --once`) has deleted it; a new
/// flow that finds none free is dropped. So the SNAT variants' connections per backend over
/// the whole run must stay well below 4 536: 2 backends, a warm-up and [`ROUNDS`] of this.
const REQUESTS_PER_ROUND: u64 = 200;
/// Requests per variant in the warm-up.
const WARMUP_REQUESTS: u64 = 200;
/// Source ports of the flood.
const FLOWS: usize = 64;
/// How long the sinks may take to see the last datagrams of a flood.
const SETTLE: Duration = Duration::from_millis(500);

/// What one round measured of one variant.
#[derive(Clone, Copy, Debug)]
struct Round {
    sent_pps: f64,
    delivered_pps: f64,
    rps: f64,
    /// Requests that failed.
    failed: u64,
}

fn main() -> ExitCode {
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "nodeport-e2e bench: needs root (it creates network namespaces, BPF programs and \
             iptables rules of its own); run `cargo xtask bench nodeport-e2e` as root"
        );
        return ExitCode::from(2);
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nodeport-e2e bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn variants() -> Vec<Variant> {
    let mut out: Vec<Variant> = [Via::Xdp, Via::Tc, Via::Iptables]
        .into_iter()
        .flat_map(|via| COUNTS.map(|services| Variant { via, services }))
        .collect();
    out.push(Variant {
        via: Via::Routing,
        services: 0,
    });
    out
}

fn run() -> Result<()> {
    let (sender_cpu, backend_cpu) = two_cpus()?;
    let variants = variants();
    let world = World::new(&variants, backend_cpu)?;
    eprintln!(
        "nodeport-e2e: topology {} up: outside, {} middle nodes, backend with be-1 and be-2; \
         sender on CPU {sender_cpu}, backends on CPU {backend_cpu}",
        world.prefix(),
        variants.len()
    );
    for &v in &variants {
        let (what, took) = world.program(v)?;
        eprintln!(
            "nodeport-e2e: {}: {what} in {:.2} s",
            name(v),
            took.as_secs_f64()
        );
    }
    for &v in &variants {
        let r = measure(&world, v, sender_cpu, WARMUP, true)?;
        eprintln!(
            "nodeport-e2e: {}: warm-up {:.0} packets/s, {:.0} requests/s, both backends reached",
            name(v),
            r.delivered_pps,
            r.rps
        );
    }
    let mut rounds: Vec<Vec<Round>> = vec![Vec::new(); variants.len()];
    for r in 0..ROUNDS {
        let started = Instant::now();
        for k in 0..variants.len() {
            let i = (k + r) % variants.len();
            rounds[i].push(measure(&world, variants[i], sender_cpu, ROUND, false)?);
        }
        eprintln!(
            "nodeport-e2e: round {}/{ROUNDS} done in {:.1} s",
            r + 1,
            started.elapsed().as_secs_f64()
        );
    }
    report(&variants, &rounds);
    Ok(())
}

/// The CPU the sender runs on (the last this process may use) and the one the backends run
/// on (another, when there is one).
fn two_cpus() -> Result<(usize, usize)> {
    use nix::sched::{sched_getaffinity, CpuSet};
    let allowed = sched_getaffinity(nix::unistd::Pid::from_raw(0))?;
    let cpus: Vec<usize> = (0..CpuSet::count())
        .filter(|&c| allowed.is_set(c).unwrap_or(false))
        .collect();
    match cpus.as_slice() {
        [] => bail!("no CPU in this process's affinity mask"),
        [only] => Ok((*only, *only)),
        [.., other, last] => Ok((*last, *other)),
    }
}

fn name(v: Variant) -> String {
    match v.via {
        Via::Routing => v.via.label().to_owned(),
        _ => format!("{} with {} services", v.via.label(), v.services),
    }
}

/// One flood and one request loop of `duration` through `v`; with `check`, fails unless
/// both backends got datagrams and answered requests.
fn measure(
    world: &World,
    v: Variant,
    cpu: usize,
    duration: Duration,
    check: bool,
) -> Result<Round> {
    let targets = world.targets(v)?;
    let before = world.backends().settled(SETTLE);
    let flood = traffic::flood(world.outside(), cpu, &targets, FLOWS, duration)?;
    let after = world.backends().settled(SETTLE);
    let per_backend: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    let delivered: u64 = per_backend.iter().sum();
    let count = if check {
        WARMUP_REQUESTS
    } else {
        REQUESTS_PER_ROUND
    };
    let requests = traffic::request_loop(world.outside(), cpu, &targets, count, duration)?;
    if check {
        if per_backend.contains(&0) {
            bail!(
                "{}: the flood to {targets:?} reached the backends {per_backend:?} times \
                 (sent {})",
                name(v),
                flood.sent
            );
        }
        if requests.spread.len() < per_backend.len() || requests.failed > 0 {
            bail!(
                "{}: requests to {targets:?} were answered by {:?} (backend: count); {} \
                 failed, the first: {}",
                name(v),
                requests.spread,
                requests.failed,
                requests.first_error.as_deref().unwrap_or("none")
            );
        }
    }
    if let Some(e) = &requests.first_error {
        eprintln!(
            "nodeport-e2e: {}: {} requests failed, the first: {e}",
            name(v),
            requests.failed
        );
    }
    let secs = |d: Duration| d.as_secs_f64();
    Ok(Round {
        sent_pps: flood.sent as f64 / secs(flood.elapsed),
        delivered_pps: delivered as f64 / secs(flood.elapsed),
        rps: requests.done as f64 / secs(requests.elapsed),
        failed: requests.failed,
    })
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    match xs.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => xs[n / 2],
        n => (xs[n / 2 - 1] + xs[n / 2]) / 2.0,
    }
}

fn min_max(xs: &[f64]) -> (f64, f64) {
    xs.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

/// Which measure of a round.
#[derive(Clone, Copy)]
enum Measure {
    Packets,
    Requests,
}

impl Measure {
    fn of(self, r: &Round) -> f64 {
        match self {
            Measure::Packets => r.delivered_pps,
            Measure::Requests => r.rps,
        }
    }
}

fn report(variants: &[Variant], rounds: &[Vec<Round>]) {
    println!(
        "\nNodePort end to end: outside host -> middle node -> backend pod on another node; \
         {ROUNDS} rounds of {:.1} s per variant and measure,\nmedian [min-max] over rounds. \
         Packets: UDP 64-byte frames from {FLOWS} source ports, delivered to the backends' \
         sockets.\nRequests: TCP connect + 1-byte request + 1-byte answer + close, one at a time, \
         {REQUESTS_PER_ROUND} per round.",
        ROUND.as_secs_f64()
    );
    println!(
        "\n| services | path | sent packets/s | delivered packets/s | requests/s | failed requests |\n|---|---|---|---|---|---|"
    );
    for (v, rs) in variants.iter().zip(rounds) {
        let col = |f: fn(&Round) -> f64| {
            let xs: Vec<f64> = rs.iter().map(f).collect();
            let (lo, hi) = min_max(&xs);
            format!("{:.0} [{:.0}-{:.0}]", median(xs), lo, hi)
        };
        let services = match v.via {
            Via::Routing => "-".to_owned(),
            _ => v.services.to_string(),
        };
        println!(
            "| {services} | {} | {} | {} | {} | {} |",
            v.via.label(),
            col(|r| r.sent_pps),
            col(|r| r.delivered_pps),
            col(|r| r.rps),
            rs.iter().map(|r| r.failed).sum::<u64>()
        );
    }
    let find = |via: Via, services: u32| {
        variants
            .iter()
            .position(|v| v.via == via && (via == Via::Routing || v.services == services))
    };
    // The median over rounds of a's figure ÷ b's in the same round.
    let paired = |a: Option<usize>, b: Option<usize>, m: Measure| -> f64 {
        match (a, b) {
            (Some(a), Some(b)) => median(
                rounds[a]
                    .iter()
                    .zip(&rounds[b])
                    .map(|(x, y)| m.of(x) / m.of(y))
                    .collect(),
            ),
            _ => f64::NAN,
        }
    };
    println!(
        "\nRatios (median over rounds of the per-round ratio; packets/s, requests/s) and the \
         issue's targets:\n\n| ratio | services | packets/s | requests/s | target |\n|---|---|---|---|---|"
    );
    let big = COUNTS[COUNTS.len() - 1];
    let small = COUNTS[0];
    let line = |label: &str, services: &str, a, b, target: &str| {
        println!(
            "| {label} | {services} | {:.2} | {:.2} | {target} |",
            paired(a, b, Measure::Packets),
            paired(a, b, Measure::Requests)
        );
    };
    for n in COUNTS {
        let (xdp, tc, ipt, route) = (
            find(Via::Xdp, n),
            find(Via::Tc, n),
            find(Via::Iptables, n),
            find(Via::Routing, 0),
        );
        let at_big = n == big;
        let s = n.to_string();
        line(
            "XDP / iptables",
            &s,
            xdp,
            ipt,
            if at_big { ">= 3" } else { "" },
        );
        line(
            "tc / iptables",
            &s,
            tc,
            ipt,
            if at_big { ">= 1.5" } else { "" },
        );
        line("XDP / routing", &s, xdp, route, ">= 0.90");
        line("tc / routing", &s, tc, route, "");
        line("iptables / routing", &s, ipt, route, "");
    }
    let span = format!("{big} / {small}");
    for via in [Via::Xdp, Via::Tc, Via::Iptables] {
        let target = if via == Via::Iptables {
            ""
        } else {
            "flat (about 1)"
        };
        line(
            &format!("{} {big} vs {small} services", via.label()),
            &span,
            find(via, big),
            find(via, small),
            target,
        );
    }
}
