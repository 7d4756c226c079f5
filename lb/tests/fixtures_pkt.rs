//! Packet fixtures, in the style of Katran's: one file per feature under `fixtures_pkt/`, each a
//! list of cases — a description, an input packet built with the packet builder, and what the
//! documents (or Kubernetes) say must come out: the verdict, the metadata XDP leaves, and the
//! fields of the output frame (addresses, ports, TTL, MACs, an ICMP error). Every case runs on
//! the kernel (`BPF_PROG_TEST_RUN`, on the differential test's node, whose FIB answers as a real
//! node's) and on the simulator, and both must meet the expectation, which is written from the
//! specification, not taken from either implementation. Cases of a feature run in order over one
//! copy of the objects, so a reply case can answer what an earlier case sent.
//!
//! Without root the test is reported as ignored; under `CI=true` it fails instead.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use ebpf::maps::{scope, xfer, LbBackend, LbKey, LbReverseNat, LbService, LbSrcRangeKey};
use lb::datapath::sim::packet_builder::{checksums_valid, FrameView};
use lb::datapath::sim::{PktConfig, PktSim, Verdict, XdpAction};
use lb::datapath::MapContents;
use libtest_mimic::Failed;

#[path = "differential_pkt/kernel.rs"]
#[allow(dead_code, reason = "the differential test reads the maps too")]
mod kernel;
#[path = "differential_pkt/node.rs"]
mod node;
#[allow(dead_code, reason = "the socket tiers' helpers are not all used here")]
mod support;

#[path = "fixtures_pkt/nodeport.rs"]
mod nodeport;
#[path = "fixtures_pkt/pods.rs"]
mod pods;
#[path = "fixtures_pkt/policy.rs"]
mod policy;
#[path = "fixtures_pkt/xdp.rs"]
mod xdp;

use kernel::Hook;
use node::Node;

fn main() {
    support::run_tier(
        "fixtures_pkt",
        vec![(
            "nodeport::fixtures_hold_on_the_kernel_and_the_simulator",
            run_all,
        )],
    );
}

/// A service frontend of a fixture: address, port, protocol, type flags, backends.
pub(crate) struct Svc {
    pub frontend: &'static str,
    pub port: u16,
    pub udp: bool,
    pub flags: u8,
    pub backends: &'static [&'static str],
    /// `LB_SVC_NO_LOCAL_BACKEND` (a Local traffic policy, no endpoint on this node).
    pub no_local: bool,
    /// `loadBalancerSourceRanges` (IPv4 CIDRs).
    pub source_ranges: &'static [&'static str],
}

/// Where a packet meets the datapath.
#[derive(Clone, Copy, Debug)]
pub(crate) enum At {
    /// The first NodePort device (towards clients).
    Np0,
    /// The second one (towards the other nodes).
    Np1,
    /// The pod's interface.
    Pod,
}

/// What a program must return.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Expect {
    /// tc: `TC_ACT_OK`; XDP: `XDP_PASS`.
    Pass,
    /// tc: `TC_ACT_SHOT`; XDP: `XDP_DROP`.
    Drop,
    /// tc: `TC_ACT_REDIRECT`.
    Redirect,
    /// `XDP_TX`.
    Tx,
    /// `XDP_REDIRECT`.
    XdpRedirect,
}

/// A property of the output frame.
#[derive(Clone, Debug)]
pub(crate) enum Check {
    Src(SocketAddr),
    Dst(SocketAddr),
    SrcIp(IpAddr),
    SrcPortIn(u16, u16),
    Ttl(u8),
    Dmac([u8; 6]),
    Smac([u8; 6]),
    /// The frame left as it came.
    Unchanged,
    /// An ICMP (v4) error of this type and code from `src` to `dst`.
    Icmp {
        ty: u8,
        code: u8,
        src: IpAddr,
        dst: IpAddr,
    },
    /// XDP left this action (and ifindex, for a redirect) for tc in the metadata.
    Xfer(u32, Option<At>),
}

/// Builds a case's input from the outputs (on the kernel) of the cases before it.
pub(crate) type Input = Box<dyn Fn(&[Vec<u8>]) -> Vec<u8>>;

/// One case.
pub(crate) struct Case {
    pub description: &'static str,
    pub hook: Hook,
    pub at: At,
    pub input: Input,
    pub expect: Expect,
    pub checks: Vec<Check>,
}

/// One feature's fixture.
pub(crate) struct Fixture {
    pub feature: &'static str,
    pub services: Vec<Svc>,
    pub cases: Vec<Case>,
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("an address constant")
}

fn run_all() -> Result<(), Failed> {
    let bpffs = support::TestBpffs::new("fixtures-pkt")?;
    let result = std::thread::scope(|s| {
        s.spawn(|| {
            let node = Node::build()?;
            let mut count = 0;
            for (n, fixture) in [
                nodeport::fixture(),
                policy::fixture(),
                xdp::fixture(),
                pods::fixture(),
            ]
            .into_iter()
            .enumerate()
            {
                count += run_fixture(&fixture, &node, &bpffs.path, n)?;
            }
            eprintln!("fixtures_pkt: {count} cases hold on the kernel and the simulator");
            Ok::<(), String>(())
        })
        .join()
        .unwrap_or_else(|_| Err("the test thread panicked".to_string()))
    });
    result.map_err(Failed::from)
}

/// The maps of a fixture's services.
fn maps(services: &[Svc]) -> MapContents {
    let mut out = MapContents::default();
    let mut next_backend = 1u32;
    for (i, s) in services.iter().enumerate() {
        let proto = if s.udp { 17 } else { 6 };
        let rev_nat_index = i as u16 + 1;
        let key = |slot| LbKey::new(ip(s.frontend), s.port, proto, scope::EXT, slot);
        for (slot, b) in (1..).zip(s.backends) {
            out.backends
                .insert(next_backend, LbBackend::new(ip(b), 8080, proto, 0));
            out.services.insert(
                key(slot),
                LbService {
                    backend_id: next_backend,
                    ..LbService::default()
                },
            );
            next_backend += 1;
        }
        let mut flags = s.flags;
        if s.no_local {
            flags |= ebpf::maps::svc_flags::NO_LOCAL_BACKEND;
        }
        let flags2 = if s.source_ranges.is_empty() {
            0
        } else {
            ebpf::maps::svc_flags2::SOURCE_RANGES
        };
        out.services.insert(
            key(0),
            LbService {
                count: s.backends.len() as u16,
                rev_nat_index,
                flags,
                flags2,
                ..LbService::default()
            },
        );
        out.reverse_nat
            .insert(rev_nat_index, LbReverseNat::new(ip(s.frontend), s.port));
        for cidr in s.source_ranges {
            let net: ipnet::IpNet = cidr.parse().expect("a CIDR constant");
            let mapped = match net {
                ipnet::IpNet::V4(v4) => 96 + u32::from(v4.prefix_len()),
                ipnet::IpNet::V6(v6) => u32::from(v6.prefix_len()),
            };
            out.source_ranges.insert(
                LbSrcRangeKey {
                    prefixlen: 32 + mapped,
                    rev_nat_index,
                    pad: 0,
                    address: net.network().into(),
                },
                0,
            );
        }
    }
    out
}

fn ifindex(node: &Node, at: At) -> u32 {
    match at {
        At::Np0 => node.np0,
        At::Np1 => node.np1,
        At::Pod => node.pod,
    }
}

/// Runs a fixture's cases in order; returns how many.
fn run_fixture(fixture: &Fixture, node: &Node, bpffs: &Path, n: usize) -> Result<usize, String> {
    let contents = maps(&fixture.services);
    let settings = PktConfig::default();
    let uses_xdp = fixture.cases.iter().any(|c| c.hook == Hook::Xdp);
    let loaded = kernel::load(
        &settings,
        uses_xdp,
        &contents,
        &Node::local_addrs(),
        &node.devices(false),
        &bpffs.join(format!("fixture-{n}")),
    )?;
    let mut sim = PktSim::new(settings, contents, Box::new(node.fib()));
    sim.set_local_addresses(&Node::local_addrs());
    sim.set_devices(node.devices(false).into_iter().collect());
    let mut outputs: Vec<Vec<u8>> = Vec::new();
    for (i, case) in fixture.cases.iter().enumerate() {
        let frame = (case.input)(&outputs);
        let dev = ifindex(node, case.at);
        let context = |who: &str| {
            format!(
                "{} case {i} ({}) on {who}",
                fixture.feature, case.description
            )
        };
        sim.set_now(
            nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
                .map_or(0, |t| t.tv_sec() as u32),
        );
        let (code, out) = loaded.run(case.hook, dev, &frame)?;
        let kernel = outcome_of_code(case.hook, code, out);
        let simulated = sim_outcome(&mut sim, case.hook, dev, &frame);
        for (who, got) in [("the kernel", &kernel), ("the simulator", &simulated)] {
            check(case, node, &frame, got).map_err(|why| format!("{}: {why}", context(who)))?;
        }
        outputs.push(kernel.frame);
    }
    Ok(fixture.cases.len())
}

/// What a program did, in the fixtures' terms.
struct Outcome {
    verdict: Expect,
    xfer: Option<(u32, u32)>,
    frame: Vec<u8>,
}

fn outcome_of_code(hook: Hook, code: i32, out: Vec<u8>) -> Outcome {
    let verdict = match (hook, code) {
        (Hook::Xdp, 1) => Expect::Drop,
        (Hook::Xdp, 2) => Expect::Pass,
        (Hook::Xdp, 3) => Expect::Tx,
        (Hook::Xdp, 4) => Expect::XdpRedirect,
        (_, 0) => Expect::Pass,
        (_, 2) => Expect::Drop,
        (_, 7) => Expect::Redirect,
        _ => Expect::Drop,
    };
    // XDP's output begins with the metadata it left, when it left some.
    let magic = out
        .get(..4)
        .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
    if hook == Hook::Xdp && magic.is_some_and(|m| m & 0xffff_0000 == xfer::MAGIC) {
        let word = |o: usize| u32::from_ne_bytes([out[o], out[o + 1], out[o + 2], out[o + 3]]);
        return Outcome {
            verdict,
            xfer: Some((word(0) & 0xffff, word(4))),
            frame: out[8..].to_vec(),
        };
    }
    Outcome {
        verdict,
        xfer: None,
        frame: out,
    }
}

fn sim_outcome(sim: &mut PktSim, hook: Hook, ifindex: u32, frame: &[u8]) -> Outcome {
    let tc = |o: lb::datapath::sim::PktOutcome| Outcome {
        verdict: match o.verdict {
            Verdict::Pass => Expect::Pass,
            Verdict::Drop(_) => Expect::Drop,
            Verdict::Redirect { .. } => Expect::Redirect,
        },
        xfer: None,
        frame: o.packet,
    };
    match hook {
        Hook::Ingress => tc(sim.ingress(ifindex, frame)),
        Hook::Egress => tc(sim.egress(ifindex, frame)),
        Hook::PodIngress => tc(sim.pod_ingress(ifindex, frame)),
        Hook::Xdp => {
            let o = sim.xdp(ifindex, frame);
            Outcome {
                verdict: match o.action {
                    XdpAction::Pass => Expect::Pass,
                    XdpAction::Drop(_) => Expect::Drop,
                    XdpAction::Tx => Expect::Tx,
                    XdpAction::Redirect(_) => Expect::XdpRedirect,
                },
                xfer: o.xfer.map(|x| (x.magic & 0xffff, x.ifindex)),
                frame: o.packet,
            }
        }
    }
}

fn check(case: &Case, node: &Node, input: &[u8], got: &Outcome) -> Result<(), String> {
    if got.verdict != case.expect {
        return Err(format!(
            "verdict {:?}, expected {:?}",
            got.verdict, case.expect
        ));
    }
    if got.verdict == Expect::Drop {
        return Ok(());
    }
    let frame = &got.frame;
    if !checksums_valid(frame) {
        return Err("the output's checksums are wrong".into());
    }
    let view = FrameView::of(frame);
    for c in &case.checks {
        let ok = match c {
            Check::Unchanged => frame.as_slice() == input,
            Check::Src(a) => view.as_ref().is_some_and(|v| v.src == *a),
            Check::Dst(a) => view.as_ref().is_some_and(|v| v.dst == *a),
            Check::SrcIp(a) => view.as_ref().is_some_and(|v| v.src.ip() == *a),
            Check::SrcPortIn(lo, hi) => view
                .as_ref()
                .is_some_and(|v| (*lo..=*hi).contains(&v.src.port())),
            Check::Ttl(t) => view.as_ref().is_some_and(|v| v.ttl == *t),
            Check::Dmac(m) => frame.get(..6) == Some(&m[..]),
            Check::Smac(m) => frame.get(6..12) == Some(&m[..]),
            Check::Icmp { ty, code, src, dst } => icmp_of(frame) == Some((*ty, *code, *src, *dst)),
            Check::Xfer(action, at) => {
                got.xfer == Some((*action, at.map_or(0, |a| ifindex(node, a))))
            }
        };
        if !ok {
            return Err(format!(
                "{c:?} does not hold: output {:02x?} (xfer {:?})",
                frame, got.xfer
            ));
        }
    }
    if !case.checks.iter().any(|c| matches!(c, Check::Xfer(..))) && got.xfer.is_some() {
        if case.hook == Hook::Xdp && got.xfer.map(|x| x.0) == Some(xfer::DONE) {
            return Ok(());
        }
        return Err(format!("unexpected metadata {:?}", got.xfer));
    }
    Ok(())
}

/// Type, code, source and destination of an IPv4 ICMP frame.
fn icmp_of(frame: &[u8]) -> Option<(u8, u8, IpAddr, IpAddr)> {
    if frame.get(12..14)? != [0x08, 0x00] || *frame.get(23)? != 1 {
        return None;
    }
    let v4 = |o: usize| -> Option<IpAddr> {
        let b = frame.get(o..o + 4)?;
        Some(IpAddr::from([b[0], b[1], b[2], b[3]]))
    };
    let ihl = usize::from(frame.get(14)? & 0x0f) * 4;
    Some((
        *frame.get(14 + ihl)?,
        *frame.get(15 + ihl)?,
        v4(26)?,
        v4(30)?,
    ))
}
