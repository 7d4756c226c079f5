//! `lbctl explain`: what the packet datapath of this node will do with a flow — which frontend,
//! which backend and why, which translation, which verdict — found by running the simulator
//! ([`PktSim`]) over the node's live maps with the node's FIB, as the programs would run.
//!
//! The explanation is read off the simulator's run, not computed a second way: the conntrack
//! entries the packet created (or the one it hit), the drop counter it bumped, the verdict and
//! the frame it left. Only the "why" of the backend (the flow hash's slot, or the Maglev
//! entry) is recomputed from the same hash the programs use.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use ebpf::maps::{
    counter, ct_flags, svc_flags, svc_flags2, LbAddr, LbCtEntry, LbCtKey, LbDevice, LbService,
};

use crate::datapath::sim::jhash::flow_hash;
use crate::datapath::sim::packet_builder::{tcp_flags, FrameView, PacketBuilder};
use crate::datapath::sim::{Fib, PktConfig, PktOutcome, PktSim, Verdict, XdpAction};
use crate::datapath::MapContents;
use crate::model::{L4Protocol, ServiceName};

/// A node's datapath state, as its pinned maps hold it.
#[derive(Debug, Clone)]
pub struct NodeState {
    /// The programs' load-time settings.
    pub settings: PktConfig,
    /// Services, backends, reverse NAT, source ranges, Maglev tables.
    pub maps: MapContents,
    /// `lb_local_addrs`.
    pub local_addrs: Vec<IpAddr>,
    /// `lb_devices`.
    pub devices: BTreeMap<u32, LbDevice>,
    /// `lb_ct`.
    pub conntrack: BTreeMap<LbCtKey, LbCtEntry>,
    /// The service behind each frontend id.
    pub names: BTreeMap<u16, ServiceName>,
    /// CLOCK_MONOTONIC seconds, the programs' clock.
    pub now: u32,
}

/// Where the flow's first packet meets the datapath.
#[derive(Debug, Clone)]
pub enum EntryPoint {
    /// A NodePort device, with (`xdp`) or without the XDP program in front of tc.
    Device {
        /// Its name.
        name: String,
        /// Its ifindex.
        ifindex: u32,
        /// Whether the XDP program runs there.
        xdp: bool,
    },
    /// A pod's interface (`socketLB.hostNamespaceOnly`).
    Pod {
        /// Its name.
        name: String,
        /// Its ifindex.
        ifindex: u32,
    },
}

/// The flow to explain: protocol, client, destination.
#[derive(Debug, Clone, Copy)]
pub struct FlowSpec {
    /// TCP or UDP.
    pub proto: L4Protocol,
    /// The client's address and port.
    pub src: SocketAddr,
    /// Where it sends to.
    pub dst: SocketAddr,
}

/// What the datapath does with a flow, line by line.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Explanation {
    /// `(label, text)` lines, in order.
    pub lines: Vec<(String, String)>,
}

impl Explanation {
    /// The lines as a block, labels aligned.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (label, text) in &self.lines {
            let _ = writeln!(out, "{:<13}{text}", format!("{label}:"));
        }
        out
    }
}

fn proto_name(proto: L4Protocol) -> &'static str {
    match proto {
        L4Protocol::Tcp => "TCP",
        L4Protocol::Udp => "UDP",
    }
}

/// Why a packet was dropped, by `lb_counters` index.
fn drop_reason(index: u8) -> &'static str {
    crate::datapath::describe_drop(index).1
}

/// The frontend types of a service entry, as `service list` names them.
fn types(svc: &LbService) -> String {
    let names = [
        (svc_flags::CLUSTER_IP, "ClusterIP"),
        (svc_flags::NODE_PORT, "NodePort"),
        (svc_flags::LOADBALANCER, "LoadBalancer"),
        (svc_flags::EXTERNAL_IP, "ExternalIP"),
        (svc_flags::HOST_PORT, "HostPort"),
    ];
    names
        .iter()
        .filter(|(f, _)| svc.flags & f != 0)
        .map(|(_, n)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

fn sock(a: LbAddr, port_be: u16) -> SocketAddr {
    SocketAddr::new(a.into(), u16::from_be(port_be))
}

/// Runs the flow's first packet through the node's datapath and says what happened.
pub fn explain(
    state: &NodeState,
    fib: Box<dyn Fib + Send>,
    entry: &EntryPoint,
    flow: FlowSpec,
) -> Explanation {
    let mut sim = PktSim::new(state.settings, state.maps.clone(), fib);
    sim.set_local_addresses(&state.local_addrs);
    sim.set_devices(state.devices.clone());
    sim.set_now(state.now);
    for (k, e) in &state.conntrack {
        sim.insert_ct(*k, *e);
    }
    let frame = match flow.proto {
        L4Protocol::Tcp => PacketBuilder::tcp(flow.src, flow.dst, tcp_flags::SYN).build(),
        L4Protocol::Udp => PacketBuilder::udp(flow.src, flow.dst).build(),
    };
    let key = FrameView::of(&frame)
        .map(|_| LbCtKey {
            saddr: LbAddr::from(flow.src.ip()),
            daddr: LbAddr::from(flow.dst.ip()),
            sport: flow.src.port().to_be(),
            dport: flow.dst.port().to_be(),
            proto: flow.proto.number(),
            pad: [0; 3],
        })
        .unwrap_or_default();
    let before = sim.counters();
    let mut lines: Vec<(String, String)> = Vec::new();
    let (where_, ifindex) = match entry {
        EntryPoint::Device { name, ifindex, xdp } => (
            format!(
                "entering {name} (ifindex {ifindex}), at {}",
                if *xdp { "XDP" } else { "tc ingress" }
            ),
            *ifindex,
        ),
        EntryPoint::Pod { name, ifindex } => (
            format!("leaving a pod through {name} (ifindex {ifindex}), at tc"),
            *ifindex,
        ),
    };
    lines.push((
        "Flow".into(),
        format!(
            "{} {} -> {}, {where_}",
            proto_name(flow.proto),
            flow.src,
            flow.dst
        ),
    ));
    let (verdict, out) = match entry {
        EntryPoint::Device { xdp: true, .. } => {
            let o = sim.xdp(ifindex, &frame);
            let v = match (o.action, o.xfer) {
                (XdpAction::Tx, _) => "XDP_TX: back out of the device it came in on".to_owned(),
                (XdpAction::Redirect(i), _) => format!("XDP_REDIRECT out of ifindex {i}"),
                (XdpAction::Drop(c), _) => format!("XDP_DROP: {}", drop_reason(c)),
                (XdpAction::Pass, Some(x))
                    if x.magic & 0xffff == ebpf::maps::xfer::REDIRECT_NEIGH =>
                {
                    format!(
                        "XDP_PASS to tc, which sends it out of ifindex {} once the next hop's \
                         MAC is resolved",
                        x.ifindex
                    )
                }
                (XdpAction::Pass, _) => "XDP_PASS: on to the kernel's stack".to_owned(),
            };
            (v, o.packet)
        }
        EntryPoint::Device { .. } | EntryPoint::Pod { .. } => {
            let PktOutcome { verdict, packet } = match entry {
                EntryPoint::Pod { .. } => sim.pod_ingress(ifindex, &frame),
                _ => sim.ingress(ifindex, &frame),
            };
            let v = match verdict {
                Verdict::Pass => "pass: on to the kernel's stack".to_owned(),
                Verdict::Drop(c) => format!("drop: {}", drop_reason(c)),
                Verdict::Redirect { ifindex: i, neigh } => format!(
                    "redirect out of ifindex {i}{}",
                    if neigh {
                        ", the kernel resolving the next hop's MAC"
                    } else {
                        ""
                    }
                ),
            };
            (v, packet)
        }
    };
    let after = sim.counters();
    let bumped = (0..counter::MAX).find(|&c| after[usize::from(c)] > before[usize::from(c)]);
    let hit = state.conntrack.get(&key);
    let entry_now = sim.ct().get(&key).copied();
    match entry_now {
        Some(fwd) if fwd.flags & ct_flags::REPLY == 0 || hit.is_some() => {
            describe_flow(state, &key, &fwd, hit.is_some(), &mut lines);
        }
        _ => {
            let why = match bumped {
                Some(c) if c == counter::NO_BACKEND && out != frame => {
                    "rejected with an ICMP port unreachable: the service has no endpoints"
                        .to_owned()
                }
                Some(c) => format!("not translated: {}", drop_reason(c)),
                None => format!(
                    "no frontend at {} {} for traffic entering here: left untouched",
                    flow.dst,
                    proto_name(flow.proto)
                ),
            };
            lines.push(("Frontend".into(), why));
        }
    }
    if let Some(view) = FrameView::of(&out) {
        if out != frame {
            lines.push((
                "Leaves as".into(),
                format!("{} -> {}, TTL {}", view.src, view.dst, view.ttl),
            ));
        }
    }
    lines.push(("Verdict".into(), verdict));
    Explanation { lines }
}

/// The frontend, backend and translation of a flow with its forward entry `fwd`.
fn describe_flow(
    state: &NodeState,
    key: &LbCtKey,
    fwd: &LbCtEntry,
    existing: bool,
    lines: &mut Vec<(String, String)>,
) {
    let rev = fwd.rev_nat_index;
    let frontend = state.maps.reverse_nat.get(&rev);
    let head = state
        .maps
        .services
        .iter()
        .find(|(k, s)| k.backend_slot == 0 && s.rev_nat_index == rev);
    let name = state
        .names
        .get(&rev)
        .map_or_else(|| "(no name recorded)".to_owned(), ToString::to_string);
    let at = frontend.map_or_else(
        || "?".to_owned(),
        |f| format!("{}", sock(f.address, f.port)),
    );
    let kind = head.map_or_else(String::new, |(_, s)| types(s));
    let scope = head.map_or("", |(k, _)| {
        if k.scope == ebpf::maps::scope::INT {
            ", internal scope (internalTrafficPolicy)"
        } else {
            ", external scope (externalTrafficPolicy)"
        }
    });
    lines.push((
        "Frontend".into(),
        format!("{at} {kind}, id {rev}{scope}: {name}"),
    ));
    if let Some((_, svc)) = head {
        if svc.flags2 & svc_flags2::SOURCE_RANGES != 0 {
            lines.push((
                "Source".into(),
                "inside the service's loadBalancerSourceRanges".into(),
            ));
        }
    }
    let backend = state.maps.backends.get(&fwd.backend_id).map_or_else(
        || "?".to_owned(),
        |b| format!("{}", sock(b.address, b.port)),
    );
    let why = if existing {
        "the flow's conntrack entry (it is established)".to_owned()
    } else {
        let h = flow_hash(key, state.settings.flow_seed);
        match (
            state.settings.maglev_m,
            state.maps.maglev.contains_key(&rev),
        ) {
            (Some(m), true) => format!("Maglev: entry {} of the frontend's table of {m}", h % m),
            _ => {
                let count = head.map_or(0, |(_, s)| u32::from(s.count)).max(1);
                format!(
                    "the flow hash: slot {} of {count} (the same on every node with the same \
                     seed)",
                    h % count + 1
                )
            }
        }
    };
    lines.push((
        "Backend".into(),
        format!("{backend} (id {}), chosen by {why}", fwd.backend_id),
    ));
    let snat = fwd.flags & ct_flags::SNAT != 0;
    lines.push((
        "Translation".into(),
        format!(
            "{} -> {} becomes {} -> {}{}",
            sock(key.saddr, key.sport),
            sock(key.daddr, key.dport),
            sock(fwd.saddr, fwd.sport),
            sock(fwd.daddr, fwd.dport),
            if snat {
                " (SNAT: the backend is on another node, reached through a NodePort device)"
            } else {
                " (the backend is reached by the kernel and sees the client's address)"
            }
        ),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::sim::{FibResult, FibTable};
    use ebpf::maps::{scope, LbBackend, LbKey, LbReverseNat};

    const NODE: &str = "192.168.1.11";

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// A node with one NodePort frontend (id 1) whose one backend is on another node behind
    /// device 2, and a frontend (id 2) without endpoints.
    fn node() -> NodeState {
        let mut maps = MapContents::default();
        let key = |port, slot| LbKey::new(ip(NODE), port, 6, scope::EXT, slot);
        maps.backends
            .insert(7, LbBackend::new(ip("10.0.2.5"), 8080, 6, 0));
        maps.services.insert(
            key(30001, 0),
            LbService {
                count: 1,
                rev_nat_index: 1,
                flags: svc_flags::NODE_PORT,
                ..LbService::default()
            },
        );
        maps.services.insert(
            key(30001, 1),
            LbService {
                backend_id: 7,
                ..LbService::default()
            },
        );
        maps.services.insert(
            key(30002, 0),
            LbService {
                rev_nat_index: 2,
                flags: svc_flags::NODE_PORT,
                ..LbService::default()
            },
        );
        maps.reverse_nat
            .insert(1, LbReverseNat::new(ip(NODE), 30001));
        maps.reverse_nat
            .insert(2, LbReverseNat::new(ip(NODE), 30002));
        let device = LbDevice {
            addr4: LbAddr::from(ip(NODE)),
            ..LbDevice::default()
        };
        NodeState {
            settings: PktConfig::default(),
            maps,
            local_addrs: vec![ip(NODE)],
            devices: [(2, device)].into_iter().collect(),
            conntrack: BTreeMap::new(),
            names: [(
                1,
                ServiceName {
                    namespace: "default".into(),
                    name: "web".into(),
                },
            )]
            .into_iter()
            .collect(),
            now: 100,
        }
    }

    fn fib() -> Box<dyn Fib + Send> {
        let out = FibResult::Forward {
            ifindex: 2,
            smac: [2, 0, 0, 0, 0, 1],
            dmac: [2, 0, 0, 0, 0, 2],
        };
        Box::new(
            FibTable::new()
                .route(ip("10.0.2.5"), out)
                .route(ip("192.168.1.100"), out)
                .otherwise(FibResult::Unreachable),
        )
    }

    fn run(port: u16) -> String {
        let entry = EntryPoint::Device {
            name: "eth0".into(),
            ifindex: 2,
            xdp: false,
        };
        let flow = FlowSpec {
            proto: L4Protocol::Tcp,
            src: "192.168.1.100:40000".parse().unwrap(),
            dst: SocketAddr::new(ip(NODE), port),
        };
        explain(&node(), fib(), &entry, flow).render()
    }

    #[test]
    fn a_remote_backend_is_explained_as_snat_with_its_service_and_slot() {
        let text = run(30001);
        for want in [
            "Frontend:    192.168.1.11:30001 NodePort, id 1",
            "default/web",
            "Backend:     10.0.2.5:8080 (id 7), chosen by the flow hash: slot 1 of 1",
            "becomes 192.168.1.11:",
            "SNAT",
            "Verdict:     redirect out of ifindex 2",
        ] {
            assert!(text.contains(want), "{want:?} missing from:\n{text}");
        }
    }

    #[test]
    fn a_service_without_endpoints_is_explained_as_rejected() {
        let text = run(30002);
        assert!(
            text.contains("rejected with an ICMP port unreachable"),
            "{text}"
        );
    }

    #[test]
    fn a_port_without_a_frontend_is_left_untouched() {
        let text = run(12345);
        assert!(text.contains("no frontend at 192.168.1.11:12345"), "{text}");
        assert!(text.contains("Verdict:     pass"), "{text}");
    }
}
