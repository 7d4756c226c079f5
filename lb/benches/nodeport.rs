//! The packet programs' cost per packet: the NodePort datapath at XDP and at tc, run by
//! `BPF_PROG_TEST_RUN`, against an empty program of the same type (the floor: what a test run
//! costs with no program work at all), for 1 and 10 000 NodePort services.
//!
//! Packets (IPv4 TCP, the client on the far side of the first NodePort device):
//! - **SNAT hit**: a packet of an established flow to a backend on another node: conntrack hit,
//!   both addresses and ports rewritten, TTL, FIB lookup, MACs, redirect (`XDP_TX` / tc redirect);
//! - **SNAT reply**: the backend's answer to it: the reply entry's hit, rewritten back, forwarded
//!   to the client the same way;
//! - **miss**: a packet to a node port no service uses: conntrack miss, service lookup miss,
//!   passed on.
//!
//! The flows are started by one real packet each first (a SYN through the tc program). Each
//! variant is measured two ways:
//! - **one packet per run**: every packet arrives in a fresh test run, cold as a packet after a
//!   syscall is; the kernel's per-run setup is in the floor, its cache misses are not;
//! - **steady flow**: [`STEADY_REPEAT`] packets per run (`repeat`), as Katran's harness and
//!   the kernel's own selftests measure. A repeated run feeds the program the frame it rewrote
//!   the time before, so the bench gives each rewritten tuple a conntrack entry that rewrites it
//!   to itself: from the second packet on each is a hit of that entry with the full rewrite,
//!   FIB lookup and redirect, and the TTL (255 at the start) stays above 1 for the whole run.
//!
//! Variants alternate in rounds so that machine noise hits all alike; the report gives the
//! median of the rounds' medians of ns/packet, the cost above the floor, and whether each path
//! is flat from 1 to 10 000 services. It runs in a network namespace and a bpffs of its own (the FIB needs the
//! devices, addresses and neighbours of `tests/differential_pkt/node.rs`'s node), and touches
//! nothing of the host's.
//!
//! `cargo xtask bench nodeport` (root). Reports, does not assert timing; exits non-zero when
//! it cannot run or a packet does not take the path it is measured for.

#[path = "../tests/differential_pkt/node.rs"]
#[allow(
    dead_code,
    reason = "the differential test's node; the bench needs its devices only"
)]
mod node;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use aya::maps::{HashMap, MapData};
use aya::programs::{SchedClassifier, TestRun, TestRunOptions, Xdp};
use aya::{Ebpf, EbpfLoader, Pod};
use ebpf::maps::{
    ct_flags, scope, svc_flags, LbAddr, LbBackend, LbCtEntry, LbCtKey, LbDevice, LbKey,
    LbLocalAddr, LbService,
};
use lb::datapath::sim::packet_builder::{tcp_flags, PacketBuilder};
use node::{Node, CLIENTS_V4, NP0_V4};

/// Service counts measured.
const COUNTS: [u32; 2] = [1, 10_000];
/// Rounds per service count; each runs every variant once.
const ROUNDS: usize = 31;
/// Test runs (of one packet each) per variant and round.
const PER_ROUND: usize = 2_000;
/// Packets per test run in the steady-flow measurement: below the frames' TTL of 255, which
/// every forwarded packet decrements.
const STEADY_REPEAT: u32 = 200;
/// The XDP target for the SNAT hit, ns/packet (Katran's harness measures 100-120).
const XDP_TARGET_NS: f64 = 100.0;
/// The backends: on np1's segment, with permanent neighbours (so the FIB answers SUCCESS).
const BACKENDS: [&str; 2] = ["198.51.100.10", "198.51.100.11"];
const BACKEND_PORT: u16 = 8080;
/// Services get node ports from here up (10 000 of them end at 39 999).
const FIRST_NODE_PORT: u16 = 30000;
/// `TC_ACT_REDIRECT`, `XDP_PASS`, `XDP_TX`, `XDP_REDIRECT`, `TC_ACT_OK`.
const TC_ACT_OK: u32 = 0;
const TC_ACT_REDIRECT: u32 = 7;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;
const XDP_REDIRECT: u32 = 4;
/// Offsets in `struct __sk_buff` and `struct xdp_md`.
const SKB_INGRESS_IFINDEX: usize = 36;
const SKB_IFINDEX: usize = 40;
const XDP_MD_DATA_END: usize = 4;
const XDP_MD_INGRESS_IFINDEX: usize = 12;

/// A program type and what it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Hook {
    Xdp,
    Tc,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Packet {
    Empty,
    SnatHit,
    SnatReply,
    Miss,
}

impl Packet {
    fn label(self) -> &'static str {
        match self {
            Packet::Empty => "empty program (floor)",
            Packet::SnatHit => "SNAT hit",
            Packet::SnatReply => "SNAT reply",
            Packet::Miss => "miss",
        }
    }
}

/// A bpffs mounted for the bench; unmounted on drop.
struct Bpffs(PathBuf);

impl Bpffs {
    fn mount() -> Result<Self> {
        let path = std::env::temp_dir().join(format!("lb-bench-nodeport-{}", std::process::id()));
        std::fs::create_dir_all(&path)?;
        nix::mount::mount(
            Some("bpf"),
            &path,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .with_context(|| format!("mounting a bpffs at {}", path.display()))?;
        Ok(Bpffs(path))
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        let _ = nix::mount::umount(&self.0);
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench nodeport: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("an address constant")
}

fn run() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("needs root: it builds a network namespace, a bpffs and BPF programs of its own");
    }
    lb::host::features::raise_memlock_limit();
    println!(
        "bench nodeport: the programs count conntrack seconds by {}",
        lb::datapath::PacketClock::of_this_kernel().describe()
    );
    let node = Node::build().map_err(anyhow::Error::msg)?;
    let bpffs = Bpffs::mount()?;
    let mut empty = load_empty()?;
    // Every service count is loaded side by side, and every round runs every variant of
    // every count, so that the machine's slow and fast spells hit all of them alike.
    let mut worlds = Vec::new();
    for (i, &count) in COUNTS.iter().enumerate() {
        let dir = bpffs.0.join(format!("n{i}"));
        std::fs::create_dir_all(&dir)?;
        let mut world = World::load(&dir, &node, count)?;
        let frames = world.frames(&node)?;
        worlds.push((count, world, frames));
    }
    // Each XDP test run adds its program to the kernel's XDP dispatcher and takes it out
    // again, waiting for an RCU grace period both times (milliseconds, most of the bench's
    // time), unless the program is in the dispatcher already: attached to a device.
    let parked =
        std::iter::once(&mut empty).chain(worlds.iter_mut().map(|(_, w, _)| &mut w.programs));
    for (n, programs) in parked.enumerate() {
        programs.park_xdp(n)?;
    }
    let mut variants: Vec<(usize, Hook, Packet)> = Vec::new();
    for w in 0..worlds.len() {
        for hook in [Hook::Xdp, Hook::Tc] {
            for packet in [
                Packet::Empty,
                Packet::SnatHit,
                Packet::SnatReply,
                Packet::Miss,
            ] {
                variants.push((w, hook, packet));
            }
        }
    }
    let mut samples: BTreeMap<(u32, Hook, Packet), Vec<f64>> = BTreeMap::new();
    let mut steady: BTreeMap<(u32, Hook, Packet), Vec<f64>> = BTreeMap::new();
    for round in 0..ROUNDS {
        let mut order = variants.clone();
        let len = order.len();
        order.rotate_left(round % len);
        for (w, hook, packet) in order {
            let (count, world, frames) = &worlds[w];
            let (frame, ifindex) = match packet {
                Packet::Empty | Packet::Miss => (&frames.miss, node.np0),
                Packet::SnatHit => (&frames.hit, node.np0),
                Packet::SnatReply => (&frames.reply, node.np1),
            };
            let (programs, measured) = match packet {
                Packet::Empty => (&empty, None),
                _ => (&world.programs, Some(packet)),
            };
            let ns = time_run(programs, hook, frame, ifindex, measured, 1, PER_ROUND)?;
            samples.entry((*count, hook, packet)).or_default().push(ns);
            let ns = time_run(
                programs,
                hook,
                frame,
                ifindex,
                measured,
                STEADY_REPEAT,
                PER_ROUND / 20,
            )?;
            steady.entry((*count, hook, packet)).or_default().push(ns);
        }
    }
    report(
        &format!("one packet per BPF_PROG_TEST_RUN, median of {PER_ROUND} runs"),
        &medians(samples),
    );
    report(
        &format!(
            "steady flow, {STEADY_REPEAT} packets per BPF_PROG_TEST_RUN, median of {} runs",
            PER_ROUND / 20
        ),
        &medians(steady),
    );
    Ok(())
}

fn medians(samples: BTreeMap<(u32, Hook, Packet), Vec<f64>>) -> BTreeMap<(u32, Hook, Packet), f64> {
    samples
        .into_iter()
        .map(|(k, mut ns)| {
            ns.sort_by(f64::total_cmp);
            (k, ns[ns.len() / 2])
        })
        .collect()
}

/// The loaded programs of one service count.
struct World {
    programs: Programs,
    ct: HashMap<MapData, LbCtKey, LbCtEntry>,
    /// The port of the last service programmed, the one the measured flow goes to.
    last_port: u16,
}

/// The NodePort programs (or the empty ones), both types, in the objects that hold them.
struct Programs {
    objects: Vec<Ebpf>,
    tc_name: &'static str,
    xdp_name: &'static str,
}

impl Programs {
    /// Attaches the XDP program natively to a veth of its own (`lbpark<n>`, in the bench's
    /// namespace, carrying no traffic), so the kernel's XDP dispatcher holds it for the
    /// bench's life and test runs skip the dispatcher update.
    fn park_xdp(&mut self, n: usize) -> Result<()> {
        let dev = format!("lbpark{n}");
        for cmd in [
            format!("ip link add {dev} type veth peer name {dev}p"),
            format!("ip link set {dev} up"),
            format!("ip link set {dev}p up"),
        ] {
            let args: Vec<&str> = cmd.split(' ').collect();
            let status = std::process::Command::new(args[0])
                .args(&args[1..])
                .status()?;
            if !status.success() {
                bail!("`{cmd}` failed: {status}");
            }
        }
        let name = self.xdp_name;
        let prog: &mut Xdp = self
            .objects
            .iter_mut()
            .find_map(|o| o.program_mut(name))
            .with_context(|| format!("no program {name}"))?
            .try_into()?;
        prog.attach(&dev, aya::programs::XdpMode::Driver)
            .with_context(|| format!("attaching {name} to {dev}"))?;
        Ok(())
    }

    fn program(&self, name: &str) -> Result<&aya::programs::Program> {
        self.objects
            .iter()
            .find_map(|o| o.program(name))
            .with_context(|| format!("no program {name}"))
    }
}

fn load_empty() -> Result<Programs> {
    let mut ebpf = EbpfLoader::new().load(ebpf::empty_object())?;
    let xdp: &mut Xdp = ebpf
        .program_mut(ebpf::EMPTY_XDP_PROGRAM)
        .context("no empty XDP program")?
        .try_into()?;
    xdp.load()?;
    let tc: &mut SchedClassifier = ebpf
        .program_mut(ebpf::EMPTY_TC_PROGRAM)
        .context("no empty tc program")?
        .try_into()?;
    tc.load()?;
    Ok(Programs {
        objects: vec![ebpf],
        tc_name: ebpf::EMPTY_TC_PROGRAM,
        xdp_name: ebpf::EMPTY_XDP_PROGRAM,
    })
}

fn take_hash<K: Pod, V: Pod>(ebpf: &mut Ebpf, name: &str) -> Result<HashMap<MapData, K, V>> {
    let map = ebpf
        .take_map(name)
        .with_context(|| format!("no map {name}"))?;
    Ok(HashMap::try_from(map)?)
}

impl World {
    /// Both NodePort objects over maps pinned in `dir`, holding `count` NodePort services on
    /// np0's address, each with the two remote backends.
    fn load(dir: &Path, node: &Node, count: u32) -> Result<World> {
        let map_max = (count * 3).max(1024);
        // The clock the agent gives the programs on this kernel.
        let clock = lb::datapath::PacketClock::of_this_kernel();
        let mut loader = EbpfLoader::new();
        loader.default_map_pin_directory(dir);
        clock.set_globals(&mut loader);
        for map in ebpf::maps::SOCK_LB_SIZED_MAPS {
            loader.map_max_entries(map, map_max);
        }
        loader.map_max_entries(ebpf::maps::LB_CT, 65536);
        let mut tc = loader.load(ebpf::nodeport_object())?;
        let prog: &mut SchedClassifier = tc
            .program_mut(ebpf::NODEPORT_INGRESS_PROGRAM)
            .context("no tc ingress program")?
            .try_into()?;
        prog.load()?;
        let mut xdp = loader.load(ebpf::nodeport_xdp_object())?;
        let prog: &mut Xdp = xdp
            .program_mut(ebpf::NODEPORT_XDP_PROGRAM)
            .context("no XDP program")?
            .try_into()?;
        prog.load()?;

        let mut services: HashMap<MapData, LbKey, LbService> =
            take_hash(&mut tc, ebpf::maps::LB_SERVICES)?;
        let mut backends: HashMap<MapData, u32, LbBackend> =
            take_hash(&mut tc, ebpf::maps::LB_BACKENDS)?;
        for (i, b) in BACKENDS.iter().enumerate() {
            backends.insert(i as u32 + 1, LbBackend::new(ip(b), BACKEND_PORT, 6, 0), 0)?;
        }
        for n in 0..count {
            let port = FIRST_NODE_PORT + n as u16;
            let key = |slot| LbKey::new(ip(NP0_V4), port, 6, scope::EXT, slot);
            services.insert(
                key(0),
                LbService {
                    count: BACKENDS.len() as u16,
                    rev_nat_index: (n + 1) as u16,
                    flags: svc_flags::NODE_PORT,
                    ..LbService::default()
                },
                0,
            )?;
            for slot in 1..=BACKENDS.len() as u16 {
                services.insert(
                    key(slot),
                    LbService {
                        backend_id: u32::from(slot),
                        ..LbService::default()
                    },
                    0,
                )?;
            }
        }
        let mut local: HashMap<MapData, LbAddr, LbLocalAddr> =
            take_hash(&mut tc, ebpf::maps::LB_LOCAL_ADDRS)?;
        for a in Node::local_addrs() {
            local.insert(LbAddr::from(a), LbLocalAddr::default(), 0)?;
        }
        let mut devices: HashMap<MapData, u32, LbDevice> =
            take_hash(&mut tc, ebpf::maps::LB_DEVICES)?;
        for (k, v) in node.devices(false) {
            devices.insert(k, v, 0)?;
        }
        let ct = take_hash(&mut tc, ebpf::maps::LB_CT)?;
        Ok(World {
            programs: Programs {
                objects: vec![tc, xdp],
                tc_name: ebpf::NODEPORT_INGRESS_PROGRAM,
                xdp_name: ebpf::NODEPORT_XDP_PROGRAM,
            },
            ct,
            last_port: FIRST_NODE_PORT + (count - 1) as u16,
        })
    }

    /// The measured frames: the SNAT flow to the last service is started first (a SYN through
    /// tc), and its reply built from the reply entry that made. Each of the flow's two
    /// rewritten tuples then gets an entry rewriting it to itself, for the steady-flow runs.
    fn frames(&mut self, node: &Node) -> Result<Frames> {
        let last = self.last_port;
        let client = SocketAddr::new(ip(CLIENTS_V4[0]), 40000);
        let frontend = SocketAddr::new(ip(NP0_V4), last);
        let syn = PacketBuilder::tcp(client, frontend, tcp_flags::SYN)
            .payload(b"0123456789abcdef")
            .build();
        let code = run_once(&self.programs, Hook::Tc, &syn, node.np0)?;
        if code != TC_ACT_REDIRECT {
            bail!("the first SYN was not forwarded to the remote backend (tc returned {code})");
        }
        let hit = PacketBuilder::tcp(client, frontend, tcp_flags::ACK | tcp_flags::PSH)
            .ttl(255)
            .payload(b"0123456789abcdef")
            .build();
        let reply_entry = self
            .ct
            .iter()
            .filter_map(Result::ok)
            .find(|(_, e)| {
                e.flags & (ct_flags::REPLY | ct_flags::SNAT) == ct_flags::REPLY | ct_flags::SNAT
            })
            .context("the SYN left no SNAT reply entry")?;
        let (key, _) = reply_entry;
        let sock = |a: LbAddr, p: u16| SocketAddr::new(a.into(), u16::from_be(p));
        let reply = PacketBuilder::tcp(
            sock(key.saddr, key.sport),
            sock(key.daddr, key.dport),
            tcp_flags::ACK | tcp_flags::PSH,
        )
        .ttl(255)
        .payload(b"0123456789abcdef")
        .build();
        let entries: Vec<LbCtEntry> = self
            .ct
            .iter()
            .filter_map(Result::ok)
            .map(|(_, e)| e)
            .collect();
        for entry in entries {
            let itself = LbCtKey {
                saddr: entry.saddr,
                daddr: entry.daddr,
                sport: entry.sport,
                dport: entry.dport,
                proto: 6,
                ..LbCtKey::default()
            };
            self.ct.insert(itself, entry, 0)?;
        }
        let miss = PacketBuilder::tcp(
            client,
            SocketAddr::new(ip(NP0_V4), 1234),
            tcp_flags::ACK | tcp_flags::PSH,
        )
        .payload(b"0123456789abcdef")
        .build();
        Ok(Frames { hit, reply, miss })
    }
}

struct Frames {
    hit: Vec<u8>,
    reply: Vec<u8>,
    miss: Vec<u8>,
}

/// The context of a test run of `hook` on ifindex.
fn context(hook: Hook, frame: &[u8], ifindex: u32) -> Vec<u8> {
    match hook {
        Hook::Tc => {
            let mut ctx = vec![0u8; SKB_IFINDEX + 4];
            ctx[SKB_INGRESS_IFINDEX..SKB_IFINDEX].copy_from_slice(&ifindex.to_ne_bytes());
            ctx[SKB_IFINDEX..].copy_from_slice(&ifindex.to_ne_bytes());
            ctx
        }
        Hook::Xdp => {
            let mut ctx = vec![0u8; 24];
            ctx[XDP_MD_DATA_END..XDP_MD_DATA_END + 4]
                .copy_from_slice(&(frame.len() as u32).to_ne_bytes());
            ctx[XDP_MD_INGRESS_IFINDEX..XDP_MD_INGRESS_IFINDEX + 4]
                .copy_from_slice(&ifindex.to_ne_bytes());
            ctx
        }
    }
}

/// One test run of `repeat` packets; returns (code, mean ns per packet as the kernel timed it).
fn test_run(
    programs: &Programs,
    hook: Hook,
    frame: &[u8],
    ifindex: u32,
    repeat: u32,
) -> Result<(u32, f64)> {
    let ctx = context(hook, frame, ifindex);
    let mut out = vec![0u8; 4096];
    let opts = TestRunOptions {
        data_in: Some(frame),
        data_out: Some(&mut out),
        ctx_in: Some(&ctx),
        repeat,
        ..TestRunOptions::new()
    };
    let result = match hook {
        Hook::Tc => {
            let p: &SchedClassifier = programs.program(programs.tc_name)?.try_into()?;
            p.test_run(opts)?
        }
        Hook::Xdp => {
            let p: &Xdp = programs.program(programs.xdp_name)?.try_into()?;
            p.test_run(opts)?
        }
    };
    Ok((result.return_value, result.duration.as_nanos() as f64))
}

fn run_once(programs: &Programs, hook: Hook, frame: &[u8], ifindex: u32) -> Result<u32> {
    Ok(test_run(programs, hook, frame, ifindex, 1)?.0)
}

/// The median ns/packet of `runs` test runs of `repeat` packets each, checking every verdict is
/// the measured path's (the last packet's, which the kernel returns).
///
/// The kernel times each run itself (around the program, not the syscall) and divides by
/// `repeat`; the empty program's runs carry the same timer cost, so "above floor" is the
/// program's own. With `repeat` > 1 the frame rewritten by one packet is the next one's input:
/// see the module's "steady flow".
fn time_run(
    programs: &Programs,
    hook: Hook,
    frame: &[u8],
    ifindex: u32,
    packet: Option<Packet>,
    repeat: u32,
    runs: usize,
) -> Result<f64> {
    let expected: &[u32] = match (hook, packet) {
        (Hook::Tc, None | Some(Packet::Miss)) => &[TC_ACT_OK],
        (Hook::Xdp, None | Some(Packet::Miss)) => &[XDP_PASS],
        (Hook::Tc, Some(_)) => &[TC_ACT_REDIRECT],
        (Hook::Xdp, Some(_)) => &[XDP_TX, XDP_REDIRECT],
    };
    let mut ns = Vec::with_capacity(runs);
    for _ in 0..runs {
        let (code, took) = test_run(programs, hook, frame, ifindex, repeat)?;
        if !expected.contains(&code) {
            bail!("{hook:?} {packet:?}: returned {code}, not the measured path's {expected:?}");
        }
        ns.push(took);
    }
    ns.sort_by(f64::total_cmp);
    Ok(ns[ns.len() / 2])
}

fn report(how: &str, results: &BTreeMap<(u32, Hook, Packet), f64>) {
    println!("\nNodePort programs, ns/packet ({how}; median over {ROUNDS} rounds):\n");
    println!(
        "{:<8} {:<24} {:>10} {:>10} {:>12} {:>12}",
        "hook", "packet", "1 svc", "10000 svc", "above floor", "10k / 1"
    );
    for hook in [Hook::Xdp, Hook::Tc] {
        for packet in [
            Packet::Empty,
            Packet::SnatHit,
            Packet::SnatReply,
            Packet::Miss,
        ] {
            let one = results[&(COUNTS[0], hook, packet)];
            let many = results[&(COUNTS[1], hook, packet)];
            let floor = results[&(COUNTS[1], hook, Packet::Empty)];
            println!(
                "{:<8} {:<24} {:>10.1} {:>10.1} {:>12.1} {:>12.3}",
                format!("{hook:?}"),
                packet.label(),
                one,
                many,
                many - floor,
                many / one
            );
        }
    }
    let xdp_hit = results[&(COUNTS[1], Hook::Xdp, Packet::SnatHit)];
    let tc_hit = results[&(COUNTS[1], Hook::Tc, Packet::SnatHit)];
    println!(
        "\nXDP SNAT hit at 10 000 services: {xdp_hit:.1} ns/packet (target <= {XDP_TARGET_NS}: {}); \
         tc: {tc_hit:.1} ns/packet; tc / XDP = {:.2}",
        if xdp_hit <= XDP_TARGET_NS { "met" } else { "NOT met" },
        tc_hit / xdp_hit
    );
}
