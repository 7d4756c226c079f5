//! Differential test of the packet datapath: the tc NodePort programs (`ebpf::nodeport_object`)
//! on the host kernel against the simulator (`lb::datapath::sim::PktSim`), which must make the
//! same decisions over the same maps.
//!
//! The test thread enters a network namespace of its own (gone with the thread) and builds a
//! node there (`differential_pkt/node.rs`): two NodePort devices, a pod's veth, addresses,
//! routes and permanent neighbours, so that `bpf_fib_lookup` finds clients, local pods, remote
//! backends with and without a resolved neighbour, the node's own addresses and unroutable
//! ones; the simulator gets the same answers as its FIB table. proptest generates each case's
//! settings (flow seed, SNAT range down to one port, `bpf.lbExternalClusterIP`, Maglev with
//! tables of 251 entries for most frontends and none for some, whether the
//! second device has an IPv6 address), services (every type, wildcard and not, TCP and UDP,
//! IPv4 and IPv6, 0-3 backends, sometimes a dangling slot) and packets: new flows from
//! clients, more packets of tracked flows, backends' replies (at the egress of the client's
//! device for a local backend, at the ingress of the other device for a SNATed one), as SYN,
//! data, FIN, RST or UDP, plain or with IPv4 options, as fragments, with an IPv6 extension
//! header, truncated, with TTL 1, VLAN-tagged, UDP without checksum, or of another protocol.
//!
//! Each case loads its own copy of the object with its settings into a directory of the test's
//! bpffs (maps sized small), fills the maps, and runs each packet through
//! `BPF_PROG_TEST_RUN` (the ingress or egress program, with the device's ifindex in the
//! context) and through the simulator, whose clock is set to CLOCK_MONOTONIC's seconds first.
//! After every packet they must agree on: the verdict, every byte of the output frame (when it
//! is not dropped), the whole conntrack map (`expires` within ±2 s), and the drop counters. The
//! redirect target itself is not visible from a test run; its MACs are (a `bpf_redirect` writes
//! the FIB's, a `bpf_redirect_neigh` none).
//!
//! A mismatch names the step, the frame and both answers. `LB_DIFFERENTIAL_PKT_SEED=<n>`
//! replays a run; the seed is printed when the run starts. Without root the test is reported
//! as ignored; under `CI=true` it fails instead.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use ebpf::maps::{ct_flags, LbAddr, LbCtEntry, LbCtHop, LbCtKey};
use lb::datapath::sim::{PktConfig, PktSim, Verdict, XdpOutcome};
use libtest_mimic::Failed;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};

#[path = "differential_pkt/case.rs"]
mod case;
#[path = "differential_pkt/kernel.rs"]
mod kernel;
#[path = "differential_pkt/node.rs"]
mod node;
#[allow(dead_code, reason = "the socket tiers' helpers are not all used here")]
mod support;

use case::{Case, Frame};
use kernel::{Hook, Loaded};
use node::Node;

/// Cases per run: each loads the object (about 20 ms) and runs up to 24 packets.
const CASES: u32 = 64;
/// Replays a run's cases.
const SEED_ENV: &str = "LB_DIFFERENTIAL_PKT_SEED";

fn main() {
    support::run_tier(
        "differential_pkt",
        vec![("nodeport::packets_agree_with_the_simulator", packets_agree)],
    );
}

/// The run's seed: `LB_DIFFERENTIAL_PKT_SEED` when set, else the clock; printed first.
fn seed() -> u64 {
    support::seed("differential_pkt", SEED_ENV)
}

fn packets_agree() -> Result<(), Failed> {
    let bpffs = support::TestBpffs::new("differential-pkt")?;
    let seed = seed();
    // The namespace is the thread's: bpf_fib_lookup and the test run's ifindex resolve in it.
    let result = std::thread::scope(|s| {
        s.spawn(|| run(&bpffs.path, seed))
            .join()
            .unwrap_or_else(|_| Err("the test thread panicked".to_string()))
    });
    result.map_err(Failed::from)
}

/// What a run saw, to show what it covered.
#[derive(Default)]
struct Seen {
    cases: usize,
    packets: usize,
    outcomes: BTreeMap<String, usize>,
}

fn run(bpffs: &Path, seed: u64) -> Result<(), String> {
    let node = Node::build()?;
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config {
        cases: CASES,
        failure_persistence: None,
        max_shrink_iters: 256,
        ..Config::default()
    };
    let mut runner = TestRunner::new_with_rng(
        config,
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    let seen = std::cell::RefCell::new(Seen::default());
    let started = Instant::now();
    let result = runner.run(&case::case(), |case| {
        run_case(&case, &node, bpffs, &mut seen.borrow_mut()).map_err(TestCaseError::fail)
    });
    let seen = seen.into_inner();
    match result {
        Ok(()) => {
            eprintln!(
                "differential_pkt: {} cases, {} packets, {:.1?} ({SEED_ENV}={seed})\n  seen: {:?}",
                seen.cases,
                seen.packets,
                started.elapsed(),
                seen.outcomes
            );
            Ok(())
        }
        Err(TestError::Fail(why, case)) => Err(format!(
            "the kernel and the simulator disagree.\n{why}\nminimal case: {case:#?}\n\
             replay with {SEED_ENV}={seed}"
        )),
        Err(TestError::Abort(why)) => Err(format!("aborted: {why} ({SEED_ENV}={seed})")),
    }
}

/// The case's objects on the kernel, in directory `case-<n>` of the bpffs.
fn load(case: &Case, node: &Node, bpffs: &Path, n: usize) -> Result<Loaded, String> {
    kernel::load(
        &settings(case),
        case.xdp,
        &case.maps(),
        &Node::local_addrs(),
        &node.devices(case.np1_v6),
        &bpffs.join(format!("case-{n}")),
    )
}

/// The case's load-time settings.
fn settings(case: &Case) -> PktConfig {
    PktConfig {
        snat_port_min: case.snat_min,
        snat_port_max: case.snat_min + case.snat_span,
        flow_seed: case.flow_seed,
        external_clusterip: case.external_clusterip,
        external_ip_mitigation: case.external_ip_mitigation,
        maglev_m: case.maglev.then_some(kernel::MAGLEV_M),
    }
}

/// The simulator of a case, as the kernel's maps are filled.
fn simulator(case: &Case, node: &Node) -> PktSim {
    let mut sim = PktSim::new(settings(case), case.maps(), Box::new(node.fib()));
    sim.set_local_addresses(&Node::local_addrs());
    sim.set_devices(node.devices(case.np1_v6).into_iter().collect());
    sim
}

/// CLOCK_MONOTONIC in seconds: `bpf_ktime_get_ns() / 1e9`.
fn monotonic_secs() -> u32 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |t| t.tv_sec() as u32)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn describe(v: Verdict) -> String {
    match v {
        Verdict::Pass => "pass".into(),
        Verdict::Drop(c) => format!("drop({c})"),
        Verdict::Redirect { neigh: false, .. } => "redirect".into(),
        Verdict::Redirect { neigh: true, .. } => "redirect-neigh".into(),
    }
}

/// A conntrack key as a reader wants it: `proto src:port -> dst:port`.
fn show_key(k: &LbCtKey) -> String {
    let ip = |a: LbAddr| std::net::IpAddr::from(a);
    format!(
        "{} {}:{} -> {}:{}",
        k.proto,
        ip(k.saddr),
        u16::from_be(k.sport),
        ip(k.daddr),
        u16::from_be(k.dport)
    )
}

/// A conntrack entry as a reader wants it.
fn show_entry(e: &LbCtEntry) -> String {
    let ip = |a: LbAddr| std::net::IpAddr::from(a);
    format!(
        "{}:{} -> {}:{} flags {:#x} rev_nat {} backend {} expires {} hop {:?}",
        ip(e.saddr),
        u16::from_be(e.sport),
        ip(e.daddr),
        u16::from_be(e.dport),
        e.flags,
        e.rev_nat_index,
        e.backend_id,
        e.expires,
        e.hop
    )
}

/// Where two conntrack tables differ, or `None`. The seconds (`expires`, and when a next hop
/// was kept) may differ by 2: the model reads CLOCK_MONOTONIC, the programs the kernel tick.
fn ct_difference(
    kernel: &BTreeMap<LbCtKey, LbCtEntry>,
    sim: &BTreeMap<LbCtKey, LbCtEntry>,
) -> Option<String> {
    let mut out = String::new();
    for (k, e) in kernel {
        match sim.get(k) {
            None => {
                let _ = writeln!(
                    out,
                    "  only the kernel has {}: {}",
                    show_key(k),
                    show_entry(e)
                );
            }
            Some(s) => {
                let near = |a: u32, b: u32| (i64::from(a) - i64::from(b)).abs() <= 2;
                let close = near(e.expires, s.expires) && near(e.hop.checked, s.hop.checked);
                let timeless = |e: &LbCtEntry| LbCtEntry {
                    expires: 0,
                    hop: LbCtHop {
                        checked: 0,
                        ..e.hop
                    },
                    ..*e
                };
                let same = timeless(e) == timeless(s);
                if !close || !same {
                    let _ = writeln!(
                        out,
                        "  {}\n    kernel {}\n    sim    {}",
                        show_key(k),
                        show_entry(e),
                        show_entry(s)
                    );
                }
            }
        }
    }
    for (k, s) in sim {
        if !kernel.contains_key(k) {
            let _ = writeln!(
                out,
                "  only the simulator has {}: {}",
                show_key(k),
                show_entry(s)
            );
        }
    }
    (!out.is_empty()).then_some(out)
}

fn run_case(case: &Case, node: &Node, bpffs: &Path, seen: &mut Seen) -> Result<(), String> {
    seen.cases += 1;
    let loaded = load(case, node, bpffs, seen.cases)?;
    let mut sim = simulator(case, node);
    for (i, step) in case.steps.iter().enumerate() {
        let flows: Vec<(LbCtKey, LbCtEntry)> = sim
            .ct()
            .iter()
            .filter(|(_, e)| e.flags & ct_flags::REPLY == 0)
            .map(|(k, e)| (*k, *e))
            .collect();
        let Some(frame) = step.frame(case, node, &flows) else {
            continue;
        };
        seen.packets += 1;
        sim.set_now(monotonic_secs());
        if loaded.has_xdp() && !frame.egress && !frame.pod {
            let (code, kernel_out) = loaded.run(Hook::Xdp, frame.ifindex, &frame.bytes)?;
            let sim_out = sim.xdp(frame.ifindex, &frame.bytes);
            compare_xdp(i, step, &frame, code as u32, &kernel_out, &sim_out, seen)?;
            compare_state(&loaded, &sim, || format!("step {i} ({step:?}): xdp"))?;
            continue;
        }
        let hook = match (frame.egress, frame.pod) {
            (true, _) => Hook::Egress,
            (false, true) => Hook::PodIngress,
            (false, false) => Hook::Ingress,
        };
        let (code, kernel_out) = loaded.run(hook, frame.ifindex, &frame.bytes)?;
        let sim_out = if frame.egress {
            sim.egress(frame.ifindex, &frame.bytes)
        } else if frame.pod {
            sim.pod_ingress(frame.ifindex, &frame.bytes)
        } else {
            sim.ingress(frame.ifindex, &frame.bytes)
        };
        let outcome = match sim_out.verdict {
            Verdict::Pass if sim_out.packet != frame.bytes => "pass-rewritten".to_string(),
            v => describe(v),
        };
        let outcome = if frame.pod {
            format!("pod-{}{outcome}", kind_tag(step))
        } else {
            format!("{}{outcome}", kind_tag(step))
        };
        *seen.outcomes.entry(outcome).or_default() += 1;
        let program = match (frame.egress, frame.pod) {
            (true, _) => "egress",
            (false, true) => "pod ingress",
            (false, false) => "ingress",
        };
        let context = || {
            format!(
                "step {i} ({step:?}): {program} on ifindex {}\n  frame  {}",
                frame.ifindex,
                hex(&frame.bytes)
            )
        };
        if code != sim_out.verdict.tc_action() {
            return Err(format!(
                "{}\n  verdict: kernel {code}, simulator {} ({})\n  kernel frame {}\n  sim frame    {}",
                context(),
                sim_out.verdict.tc_action(),
                describe(sim_out.verdict),
                hex(&kernel_out),
                hex(&sim_out.packet)
            ));
        }
        if !matches!(sim_out.verdict, Verdict::Drop(_)) && kernel_out != sim_out.packet {
            return Err(format!(
                "{}\n  verdict {} on both, but the frames differ\n  kernel {}\n  sim    {}",
                context(),
                describe(sim_out.verdict),
                hex(&kernel_out),
                hex(&sim_out.packet)
            ));
        }
        compare_state(&loaded, &sim, context)?;
    }
    Ok(())
}

/// How the run's summary tells a step's outcomes apart: `icmp-` for ICMP errors.
fn kind_tag(step: &case::Step) -> &'static str {
    match step {
        case::Step::Error { .. } => "icmp-",
        _ => "",
    }
}

/// The XDP program's verdict and output (metadata and frame) against the simulator's.
fn compare_xdp(
    i: usize,
    step: &case::Step,
    frame: &Frame,
    code: u32,
    kernel_out: &[u8],
    sim_out: &XdpOutcome,
    seen: &mut Seen,
) -> Result<(), String> {
    let sim_bytes = sim_out.meta_and_frame();
    let outcome = match sim_out.xfer {
        Some(x) => format!("xdp-pass-xfer-{}", x.magic & 0xffff),
        None => format!("xdp-{:?}", sim_out.action)
            .to_lowercase()
            .replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', ""),
    };
    let outcome = format!("{}{outcome}", kind_tag(step));
    *seen.outcomes.entry(outcome).or_default() += 1;
    let context = format!(
        "step {i} ({step:?}): xdp on ifindex {}\n  frame  {}",
        frame.ifindex,
        hex(&frame.bytes)
    );
    if code != sim_out.action.code() {
        return Err(format!(
            "{context}\n  verdict: kernel {code}, simulator {} ({:?})\n  kernel out {}\n  sim out    {}",
            sim_out.action.code(),
            sim_out.action,
            hex(kernel_out),
            hex(&sim_bytes)
        ));
    }
    if !matches!(sim_out.action, lb::datapath::sim::XdpAction::Drop(_)) && kernel_out != sim_bytes {
        return Err(format!(
            "{context}\n  verdict {:?} on both, but the output differs (metadata, then frame)\n  kernel {}\n  sim    {}",
            sim_out.action,
            hex(kernel_out),
            hex(&sim_bytes)
        ));
    }
    Ok(())
}

/// The conntrack map and the drop counters of the kernel against the simulator's.
fn compare_state(
    loaded: &Loaded,
    sim: &PktSim,
    context: impl Fn() -> String,
) -> Result<(), String> {
    if let Some(diff) = ct_difference(&loaded.ct()?, sim.ct()) {
        return Err(format!("{}\n  conntrack differs:\n{diff}", context()));
    }
    let kernel_counters = loaded.counters()?;
    if kernel_counters != sim.counters() {
        return Err(format!(
            "{}\n  counters: kernel {kernel_counters:?}, simulator {:?}",
            context(),
            sim.counters()
        ));
    }
    Ok(())
}
