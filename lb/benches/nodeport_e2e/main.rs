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
//! - **Live frames**: the flood's frames (64 bytes, [`FLOWS`] flows) injected straight into
//!   the middle node's outside-facing device with `BPF_PROG_TEST_RUN` in live-frames mode
//!   (`live.rs`), for [`ROUND`]: the XDP variant's meet the agent's attached XDP program,
//!   the others' an `XDP_PASS` program that hands them to the stack; what leaves the node's
//!   backend-side device is counted, where the fabric's end drops them for the run
//!   ([`World::sink_backend_side`]). No sender stack or first bridge stands in front of the
//!   middle node and nothing after it runs on its CPU, and the rate is by the kernel's own time
//!   for the frames (not the test runs' setup), so this measures the middle node. Frames
//!   injected and forwarded per second are both reported; a variant forwarding under 90 % of
//!   them in the warm-up is an error. A kernel without live frames (before 5.18) leaves this
//!   part out, saying so.
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
mod live;
mod services;
mod traffic;
mod world;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
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
/// The live-frames generator's first source port (one flow per port, [`FLOWS`] of them).
const LIVE_FIRST_PORT: u16 = 20_000;

/// What one round measured of one variant.
#[derive(Clone, Copy, Debug)]
struct Round {
    sent_pps: f64,
    delivered_pps: f64,
    rps: f64,
    /// Requests that failed.
    failed: u64,
    /// Live frames injected and forwarded per second (NaN when live frames cannot run).
    live_injected_pps: f64,
    live_forwarded_pps: f64,
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
    let generators = live_generators(&world, &variants, sender_cpu)?;
    for (&v, generator) in variants.iter().zip(&generators) {
        let r = measure(&world, v, generator.as_ref(), sender_cpu, WARMUP, true)?;
        eprintln!(
            "nodeport-e2e: {}: warm-up {:.0} packets/s, {:.0} requests/s, both backends reached; \
             live frames {:.0} forwarded/s of {:.0} injected/s",
            name(v),
            r.delivered_pps,
            r.rps,
            r.live_forwarded_pps,
            r.live_injected_pps
        );
    }
    let mut rounds: Vec<Vec<Round>> = vec![Vec::new(); variants.len()];
    for r in 0..ROUNDS {
        let started = Instant::now();
        for k in 0..variants.len() {
            let i = (k + r) % variants.len();
            let generator = generators[i].as_ref();
            rounds[i].push(measure(
                &world,
                variants[i],
                generator,
                sender_cpu,
                ROUND,
                false,
            )?);
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

/// A live-frames generator per variant, or none at all (said on stderr, with why) when this
/// kernel cannot run them; the rest of the bench runs either way.
fn live_generators(
    world: &World,
    variants: &[Variant],
    cpu: usize,
) -> Result<Vec<Option<live::Generator>>> {
    match live::supported(world.outside(), cpu, WARMUP) {
        Ok(rate) => eprintln!(
            "nodeport-e2e: live frames: the generator alone (an XDP_DROP program) runs \
             {rate:.0} frames/s"
        ),
        Err(e) => {
            eprintln!("nodeport-e2e: LIVE FRAMES CANNOT RUN, their half is left out: {e:#}");
            return Ok(variants.iter().map(|_| None).collect());
        }
    }
    let flows = u16::try_from(FLOWS).expect("a few flows");
    variants
        .iter()
        .map(|&v| {
            world
                .live_generator(v, LIVE_FIRST_PORT, flows)
                .map(Some)
                .with_context(|| format!("{}: the live-frames generator", name(v)))
        })
        .collect()
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

/// One flood, one request loop and, with a `generator`, one live-frames run of `duration`
/// through `v`; with `check`, fails unless both backends got datagrams and answered requests
/// and the live frames were forwarded.
fn measure(
    world: &World,
    v: Variant,
    generator: Option<&live::Generator>,
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
    let (live_injected_pps, live_forwarded_pps) = match generator {
        Some(g) => {
            world.sink_backend_side(v, true)?;
            let live = g
                .run(cpu, duration, check)
                .with_context(|| format!("{}: live frames", name(v)));
            world.sink_backend_side(v, false)?;
            let live = live?;
            (
                live.injected as f64 / secs(live.elapsed),
                live.forwarded as f64 / secs(live.elapsed),
            )
        }
        None => (f64::NAN, f64::NAN),
    };
    Ok(Round {
        sent_pps: flood.sent as f64 / secs(flood.elapsed),
        delivered_pps: delivered as f64 / secs(flood.elapsed),
        rps: requests.done as f64 / secs(requests.elapsed),
        failed: requests.failed,
        live_injected_pps,
        live_forwarded_pps,
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
    LiveFrames,
}

impl Measure {
    fn of(self, r: &Round) -> f64 {
        match self {
            Measure::Packets => r.delivered_pps,
            Measure::Requests => r.rps,
            Measure::LiveFrames => r.live_forwarded_pps,
        }
    }
}

fn report(variants: &[Variant], rounds: &[Vec<Round>]) {
    println!(
        "\nNodePort end to end: outside host -> middle node -> backend pod on another node; \
         {ROUNDS} rounds of {:.1} s per variant and measure,\nmedian [min-max] over rounds. \
         Packets: UDP 64-byte frames from {FLOWS} source ports, delivered to the backends' \
         sockets.\nRequests: TCP connect + 1-byte request + 1-byte answer + close, one at a time, \
         {REQUESTS_PER_ROUND} per round.\nLive frames: the same frames injected on the middle \
         node's outside device by BPF_PROG_TEST_RUN in live-frames mode (XDP: the agent's \
         program; others: XDP_PASS to the stack),\ncounted leaving its backend-side device.",
        ROUND.as_secs_f64()
    );
    println!(
        "\n| services | path | sent packets/s | delivered packets/s | requests/s | failed requests \
         | live injected frames/s | live forwarded frames/s |\n|---|---|---|---|---|---|---|---|"
    );
    for (v, rs) in variants.iter().zip(rounds) {
        let col = |f: fn(&Round) -> f64| {
            let xs: Vec<f64> = rs.iter().map(f).collect();
            let (lo, hi) = min_max(&xs);
            let mid = median(xs);
            if mid.is_nan() {
                "-".to_owned()
            } else {
                format!("{mid:.0} [{lo:.0}-{hi:.0}]")
            }
        };
        let services = match v.via {
            Via::Routing => "-".to_owned(),
            _ => v.services.to_string(),
        };
        println!(
            "| {services} | {} | {} | {} | {} | {} | {} | {} |",
            v.via.label(),
            col(|r| r.sent_pps),
            col(|r| r.delivered_pps),
            col(|r| r.rps),
            rs.iter().map(|r| r.failed).sum::<u64>(),
            col(|r| r.live_injected_pps),
            col(|r| r.live_forwarded_pps),
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
        "\nRatios (median over rounds of the per-round ratio; delivered packets/s, requests/s, \
         live forwarded frames/s) and the issue's targets:\n\n\
         | ratio | services | packets/s | requests/s | live frames/s | target |\n|---|---|---|---|---|---|"
    );
    let big = COUNTS[COUNTS.len() - 1];
    let small = COUNTS[0];
    let line = |label: &str, services: &str, a, b, target: &str| {
        let live = paired(a, b, Measure::LiveFrames);
        let live = if live.is_nan() {
            "-".to_owned()
        } else {
            format!("{live:.2}")
        };
        println!(
            "| {label} | {services} | {:.2} | {:.2} | {live} | {target} |",
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
