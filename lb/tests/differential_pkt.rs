//! Differential test of the packet datapath: the tc NodePort programs (`ebpf::nodeport_object`)
//! on the host kernel against the simulator (`lb::datapath::sim::PktSim`), which must make the
//! same decisions over the same maps.
//!
//! The test thread enters a network namespace of its own (gone with the thread) and builds a
//! node there (`differential_pkt/node.rs`): two NodePort devices, a pod's veth, addresses,
//! routes and permanent neighbours, so that `bpf_fib_lookup` finds clients, local pods, remote
//! backends with and without a resolved neighbour, the node's own addresses and unroutable
//! ones; the simulator gets the same answers as its FIB table. proptest generates each case's
//! settings (flow seed, SNAT range down to one port, `bpf.lbExternalClusterIP`, whether the
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

use aya::maps::{HashMap, MapData, PerCpuArray};
use aya::programs::{SchedClassifier, TestRun, TestRunOptions, Xdp};
use aya::{Ebpf, EbpfLoader, Pod};
use ebpf::maps::{
    counter, ct_flags, LbAddr, LbBackend, LbCtEntry, LbCtKey, LbDevice, LbKey, LbLocalAddr,
    LbReverseNat, LbService,
};
use lb::datapath::sim::{PktConfig, PktSim, Verdict, XdpOutcome};
use libtest_mimic::Failed;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};

#[path = "differential_pkt/case.rs"]
mod case;
#[path = "differential_pkt/node.rs"]
mod node;
#[allow(dead_code, reason = "the socket tiers' helpers are not all used here")]
mod support;

use case::{Case, Frame};
use node::Node;

/// Cases per run: each loads the object (about 20 ms) and runs up to 24 packets.
const CASES: u32 = 64;
/// Replays a run's cases.
const SEED_ENV: &str = "LB_DIFFERENTIAL_PKT_SEED";
/// `lb_ct_v1`'s size here: far above what a case creates, so the LRU never evicts.
const CT_SIZE: u32 = 4096;
/// Offsets of `ingress_ifindex` and `ifindex` in `struct __sk_buff`.
const SKB_INGRESS_IFINDEX: usize = 36;
const SKB_IFINDEX: usize = 40;

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

/// One case's copy of the object, pinned in its own directory (removed on drop).
struct Loaded {
    ebpf: Ebpf,
    /// The XDP object over the same maps, for a case with XDP.
    xdp: Option<Ebpf>,
    dir: std::path::PathBuf,
    ct: HashMap<MapData, LbCtKey, LbCtEntry>,
    counters: PerCpuArray<MapData, u64>,
}

impl Drop for Loaded {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn take_hash<K: Pod, V: Pod>(
    ebpf: &mut Ebpf,
    name: &str,
) -> Result<HashMap<MapData, K, V>, String> {
    let map = ebpf.take_map(name).ok_or(format!("no map {name}"))?;
    HashMap::try_from(map).map_err(|e| format!("{name}: {e}"))
}

fn load(case: &Case, node: &Node, bpffs: &Path, n: usize) -> Result<Loaded, String> {
    let dir = bpffs.join(format!("case-{n}"));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let snat_max = case.snat_min + case.snat_span;
    let external_clusterip = u8::from(case.external_clusterip);
    let mut loader = EbpfLoader::new();
    loader
        .override_global("cfg_snat_port_min", &case.snat_min, true)
        .override_global("cfg_snat_port_max", &snat_max, true)
        .override_global("cfg_flow_seed", &case.flow_seed, true)
        .override_global("cfg_external_clusterip", &external_clusterip, true)
        .default_map_pin_directory(&dir);
    for map in ebpf::maps::SOCK_LB_SIZED_MAPS {
        loader.map_max_entries(map, 1024);
    }
    loader.map_max_entries(ebpf::maps::LB_CT, CT_SIZE);
    let mut ebpf = loader
        .load(ebpf::nodeport_object())
        .map_err(|e| format!("loading nodeport.o: {e}"))?;
    // Loaded after the tc object has pinned the maps, so it adopts them.
    let xdp = if case.xdp {
        let mut xdp = loader
            .load(ebpf::nodeport_xdp_object())
            .map_err(|e| format!("loading nodeport_xdp.o: {e}"))?;
        let prog: &mut Xdp = xdp
            .program_mut(ebpf::NODEPORT_XDP_PROGRAM)
            .ok_or("no XDP program")?
            .try_into()
            .map_err(|e| format!("{}: {e}", ebpf::NODEPORT_XDP_PROGRAM))?;
        prog.load()
            .map_err(|e| format!("loading {}: {e:?}", ebpf::NODEPORT_XDP_PROGRAM))?;
        Some(xdp)
    } else {
        None
    };
    for name in [
        ebpf::NODEPORT_INGRESS_PROGRAM,
        ebpf::NODEPORT_EGRESS_PROGRAM,
    ] {
        let prog: &mut SchedClassifier = ebpf
            .program_mut(name)
            .ok_or(format!("no program {name}"))?
            .try_into()
            .map_err(|e| format!("{name}: {e}"))?;
        prog.load().map_err(|e| format!("loading {name}: {e:?}"))?;
    }
    let maps = case.maps();
    let mut services: HashMap<MapData, LbKey, LbService> =
        take_hash(&mut ebpf, ebpf::maps::LB_SERVICES)?;
    for (k, v) in &maps.services {
        services
            .insert(k, v, 0)
            .map_err(|e| format!("lb_services: {e}"))?;
    }
    let mut backends: HashMap<MapData, u32, LbBackend> =
        take_hash(&mut ebpf, ebpf::maps::LB_BACKENDS)?;
    for (k, v) in &maps.backends {
        backends
            .insert(k, v, 0)
            .map_err(|e| format!("lb_backends: {e}"))?;
    }
    let mut rev: HashMap<MapData, u16, LbReverseNat> =
        take_hash(&mut ebpf, ebpf::maps::LB_REVERSE_NAT)?;
    for (k, v) in &maps.reverse_nat {
        rev.insert(k, v, 0)
            .map_err(|e| format!("lb_reverse_nat: {e}"))?;
    }
    let mut local: HashMap<MapData, LbAddr, LbLocalAddr> =
        take_hash(&mut ebpf, ebpf::maps::LB_LOCAL_ADDRS)?;
    for a in Node::local_addrs() {
        local
            .insert(LbAddr::from(a), LbLocalAddr::default(), 0)
            .map_err(|e| format!("lb_local_addrs: {e}"))?;
    }
    let mut devices: HashMap<MapData, u32, LbDevice> =
        take_hash(&mut ebpf, ebpf::maps::LB_DEVICES)?;
    for (k, v) in node.devices(case.np1_v6) {
        devices
            .insert(k, v, 0)
            .map_err(|e| format!("lb_devices: {e}"))?;
    }
    let ct = take_hash(&mut ebpf, ebpf::maps::LB_CT)?;
    let counters_map = ebpf
        .take_map(ebpf::maps::LB_COUNTERS)
        .ok_or("no counters map")?;
    let counters = PerCpuArray::try_from(counters_map).map_err(|e| format!("lb_counters: {e}"))?;
    Ok(Loaded {
        ebpf,
        xdp,
        dir,
        ct,
        counters,
    })
}

/// The simulator of a case, as the kernel's maps are filled.
fn simulator(case: &Case, node: &Node) -> PktSim {
    let config = PktConfig {
        snat_port_min: case.snat_min,
        snat_port_max: case.snat_min + case.snat_span,
        flow_seed: case.flow_seed,
        external_clusterip: case.external_clusterip,
    };
    let mut sim = PktSim::new(config, case.maps(), Box::new(node.fib()));
    sim.set_local_addresses(&Node::local_addrs());
    sim.set_devices(node.devices(case.np1_v6).into_iter().collect());
    sim
}

/// CLOCK_MONOTONIC in seconds: `bpf_ktime_get_ns() / 1e9`.
fn monotonic_secs() -> u32 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |t| t.tv_sec() as u32)
}

/// The kernel's answer for one frame: return code and output frame.
fn kernel_run(loaded: &Loaded, frame: &Frame) -> Result<(i32, Vec<u8>), String> {
    let name = if frame.egress {
        ebpf::NODEPORT_EGRESS_PROGRAM
    } else {
        ebpf::NODEPORT_INGRESS_PROGRAM
    };
    let prog: &SchedClassifier = loaded
        .ebpf
        .program(name)
        .ok_or(format!("no program {name}"))?
        .try_into()
        .map_err(|e| format!("{name}: {e}"))?;
    let mut ctx = [0u8; SKB_IFINDEX + 4];
    if !frame.egress {
        ctx[SKB_INGRESS_IFINDEX..SKB_IFINDEX].copy_from_slice(&frame.ifindex.to_ne_bytes());
    }
    ctx[SKB_IFINDEX..].copy_from_slice(&frame.ifindex.to_ne_bytes());
    let mut out = vec![0u8; 2048];
    let result = prog
        .test_run(TestRunOptions {
            data_in: Some(&frame.bytes),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx),
            ..TestRunOptions::new()
        })
        .map_err(|e| format!("test run of {name}: {e:?}"))?;
    out.truncate(result.data_size_out as usize);
    Ok((result.return_value as i32, out))
}

/// Offsets in `struct xdp_md` of `data_end` and `ingress_ifindex`; its size.
const XDP_MD_DATA_END: usize = 4;
const XDP_MD_INGRESS_IFINDEX: usize = 12;
const XDP_MD_SIZE: usize = 24;

/// The XDP program's answer for an ingress frame: return code, and its metadata followed by
/// the frame (what a test run returns).
fn kernel_run_xdp(xdp: &Ebpf, frame: &Frame) -> Result<(u32, Vec<u8>), String> {
    let name = ebpf::NODEPORT_XDP_PROGRAM;
    let prog: &Xdp = xdp
        .program(name)
        .ok_or(format!("no program {name}"))?
        .try_into()
        .map_err(|e| format!("{name}: {e}"))?;
    let mut ctx = [0u8; XDP_MD_SIZE];
    ctx[XDP_MD_DATA_END..XDP_MD_DATA_END + 4]
        .copy_from_slice(&(frame.bytes.len() as u32).to_ne_bytes());
    ctx[XDP_MD_INGRESS_IFINDEX..XDP_MD_INGRESS_IFINDEX + 4]
        .copy_from_slice(&frame.ifindex.to_ne_bytes());
    let mut out = vec![0u8; 4096];
    let result = prog
        .test_run(TestRunOptions {
            data_in: Some(&frame.bytes),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx),
            ..TestRunOptions::new()
        })
        .map_err(|e| format!("test run of {name}: {e:?}"))?;
    out.truncate(result.data_size_out as usize);
    Ok((result.return_value, out))
}

fn kernel_ct(loaded: &Loaded) -> Result<BTreeMap<LbCtKey, LbCtEntry>, String> {
    loaded
        .ct
        .iter()
        .map(|r| r.map_err(|e| format!("reading lb_ct: {e}")))
        .collect()
}

fn kernel_counters(loaded: &Loaded) -> Result<[u64; counter::MAX as usize], String> {
    let mut out = [0u64; counter::MAX as usize];
    for (i, c) in out.iter_mut().enumerate() {
        let values = loaded
            .counters
            .get(&(i as u32), 0)
            .map_err(|e| format!("reading lb_counters[{i}]: {e}"))?;
        *c = values.iter().sum();
    }
    Ok(out)
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
        "{}:{} -> {}:{} flags {:#x} rev_nat {} backend {} expires {}",
        ip(e.saddr),
        u16::from_be(e.sport),
        ip(e.daddr),
        u16::from_be(e.dport),
        e.flags,
        e.rev_nat_index,
        e.backend_id,
        e.expires
    )
}

/// Where two conntrack tables differ (`expires` within ±2 s), or `None`.
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
                let close = (i64::from(e.expires) - i64::from(s.expires)).abs() <= 2;
                let same = LbCtEntry { expires: 0, ..*e } == LbCtEntry { expires: 0, ..*s };
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
        if let (Some(xdp), false) = (&loaded.xdp, frame.egress) {
            let (code, kernel_out) = kernel_run_xdp(xdp, &frame)?;
            let sim_out = sim.xdp(frame.ifindex, &frame.bytes);
            compare_xdp(i, step, &frame, code, &kernel_out, &sim_out, seen)?;
            compare_state(&loaded, &sim, || format!("step {i} ({step:?}): xdp"))?;
            continue;
        }
        let (code, kernel_out) = kernel_run(&loaded, &frame)?;
        let sim_out = if frame.egress {
            sim.egress(frame.ifindex, &frame.bytes)
        } else {
            sim.ingress(frame.ifindex, &frame.bytes)
        };
        let outcome = match sim_out.verdict {
            Verdict::Pass if sim_out.packet != frame.bytes => "pass-rewritten".to_string(),
            v => describe(v),
        };
        let outcome = format!("{}{outcome}", kind_tag(step));
        *seen.outcomes.entry(outcome).or_default() += 1;
        let program = if frame.egress { "egress" } else { "ingress" };
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
    if let Some(diff) = ct_difference(&kernel_ct(loaded)?, sim.ct()) {
        return Err(format!("{}\n  conntrack differs:\n{diff}", context()));
    }
    let kernel_counters = kernel_counters(loaded)?;
    if kernel_counters != sim.counters() {
        return Err(format!(
            "{}\n  counters: kernel {kernel_counters:?}, simulator {:?}",
            context(),
            sim.counters()
        ));
    }
    Ok(())
}
