//! What one case of the packet differential test is (settings, services, packets), its
//! proptest strategy, and how a step becomes a frame given what the flows so far became.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use ebpf::maps::{
    ct_flags, scope, svc_flags, LbBackend, LbCtEntry, LbKey, LbReverseNat, LbService,
};
use lb::datapath::sim::packet_builder::{tcp_flags, IcmpErrorBuilder, PacketBuilder};
use lb::datapath::MapContents;
use lb::maglev::{build_table, HashSeed, MaglevBackend};
use lb::model::{L3n4Addr, L4Protocol};
use proptest::prelude::*;

use super::node::{
    Node, BACKENDS_V4, BACKENDS_V6, CLIENTS_V4, CLIENTS_V6, NP0_V4, NP0_V6, NP1_V4, NP1_V6,
};

/// `maglev.tableSize` of the cases with Maglev: the smallest, the length the object declares
/// for `lb_maglev_v1`, so the map the loader creates fits.
pub use super::kernel::MAGLEV_M;

/// Frontends a service may have: address, type flag.
const FRONTENDS: [(&str, u8); 11] = [
    ("0.0.0.0", svc_flags::NODE_PORT),
    (NP0_V4, svc_flags::NODE_PORT),
    ("203.0.113.10", svc_flags::LOADBALANCER),
    ("203.0.113.11", svc_flags::EXTERNAL_IP),
    ("10.96.0.10", svc_flags::CLUSTER_IP),
    ("0.0.0.0", svc_flags::HOST_PORT),
    ("0.0.0.0", svc_flags::CLUSTER_IP),
    ("::", svc_flags::NODE_PORT),
    (NP0_V6, svc_flags::NODE_PORT),
    ("2001:db8:ff::10", svc_flags::LOADBALANCER),
    ("fd00:96::10", svc_flags::CLUSTER_IP),
];
const PORTS: [u16; 3] = [30080, 30081, 80];
const CLIENT_PORTS: [u16; 4] = [40000, 40001, 40002, 50000];
const BACKEND_PORT: u16 = 8080;
/// Every packet's transport payload.
const PAYLOAD: &[u8] = b"0123456789abcdef";

/// A service: frontend (index into [`FRONTENDS`]), port, protocol, backends (indexes into the
/// family's backend pool), whether its last slot points at a backend that does not exist,
/// whether it has session affinity (which packets ignore in increment 1), and an
/// internal-scope twin's backends (which packets entering a device must never use).
#[derive(Clone, Debug)]
pub struct SvcSpec {
    pub frontend: usize,
    pub port: usize,
    pub udp: bool,
    pub backends: Vec<usize>,
    pub dangling: bool,
    pub affinity: bool,
    pub twin: Option<Vec<usize>>,
    /// `LB_SVC_NO_LOCAL_BACKEND`: traffic policy Local, no endpoint on this node.
    pub no_local: bool,
}

/// What a TCP packet carries (UDP frontends get a datagram whatever this says).
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Syn,
    Data,
    Fin,
    Rst,
}

/// How the frame is dressed.
#[derive(Clone, Copy, Debug)]
pub enum Dress {
    Plain,
    Ipv4Options,
    FirstFragment,
    LaterFragment,
    HopByHop,
    Truncated(usize),
    Ttl1,
    Vlan,
    NoUdpChecksum,
    OtherProtocol,
}

/// One packet.
#[derive(Clone, Copy, Debug)]
pub enum Step {
    /// A client's packet to a service's frontend (`dst` picks the address of a wildcard one:
    /// a node address, loopback or a foreign one).
    New {
        service: usize,
        client: usize,
        port: usize,
        dst: usize,
        kind: Kind,
        dress: Dress,
    },
    /// Another packet of a tracked flow from the client (`flow` picks a forward entry).
    Again {
        flow: usize,
        kind: Kind,
        dress: Dress,
    },
    /// The backend's reply of a tracked flow: at np1's ingress for a remote backend, at np0's
    /// egress for a local one (with `wrong_way`, the other program of the same device).
    Reply {
        flow: usize,
        kind: Kind,
        dress: Dress,
        wrong_way: bool,
    },
    /// An ICMP error about a packet of a tracked flow (`kind` picks the type: destination
    /// unreachable with various codes, fragmentation needed / packet too big, time exceeded),
    /// at the program it meets (with `wrong_way`, the other program of the same device).
    Error {
        flow: usize,
        about: About,
        kind: usize,
        quirk: Quirk,
        wrong_way: bool,
    },
}

/// Which packet of a tracked flow an ICMP error quotes.
#[derive(Clone, Copy, Debug)]
pub enum About {
    /// The client's packet as the node sent it on: to a remote backend from the SNAT address
    /// (the error enters np1), or to a local backend (the pod's own error leaves through
    /// np0's egress to the client).
    Forward,
    /// The reply as the node sent it to the client (the error enters np0).
    Reply,
}

/// How an ICMP error differs from one to translate.
#[derive(Clone, Copy, Debug)]
pub enum Quirk {
    None,
    /// From a router on the way, not from the quoted packet's destination.
    FromRouter,
    /// Quoting a tuple no flow has (the source port off by one).
    NoEntry,
    /// The frame cut short (inside the quote).
    Cut(usize),
    /// Fewer than the quoted IP header and 8 bytes quoted.
    ShortQuote(usize),
    /// The quoted IPv4 header has options.
    QuotedOptions,
    /// An echo request / ICMPv6 echo request, not an error.
    Echo,
}

/// One case.
#[derive(Clone, Debug)]
pub struct Case {
    pub flow_seed: u32,
    pub snat_min: u16,
    pub snat_span: u16,
    pub external_clusterip: bool,
    /// `loadBalancer.algorithm=maglev`: tables of [`MAGLEV_M`] entries for most frontends.
    pub maglev: bool,
    pub np1_v6: bool,
    /// Ingress frames meet the XDP program (`loadBalancer.acceleration`) instead of tc's.
    pub xdp: bool,
    /// Clients are pods: their packets meet `lb_pod_ingress` on the pod's interface and the
    /// replies its egress (`socketLB.hostNamespaceOnly`), instead of the NodePort device's.
    pub from_pods: bool,
    /// `cfg_external_ip_mitigation` (the pod programs).
    pub external_ip_mitigation: bool,
    pub services: Vec<SvcSpec>,
    pub steps: Vec<Step>,
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![
        3 => Just(Kind::Syn),
        3 => Just(Kind::Data),
        1 => Just(Kind::Fin),
        1 => Just(Kind::Rst),
    ]
}

fn dress() -> impl Strategy<Value = Dress> {
    prop_oneof![
        12 => Just(Dress::Plain),
        1 => Just(Dress::Ipv4Options),
        1 => Just(Dress::FirstFragment),
        1 => Just(Dress::LaterFragment),
        1 => Just(Dress::HopByHop),
        1 => (0usize..100).prop_map(Dress::Truncated),
        1 => Just(Dress::Ttl1),
        1 => Just(Dress::Vlan),
        1 => Just(Dress::NoUdpChecksum),
        1 => Just(Dress::OtherProtocol),
    ]
}

fn quirk() -> impl Strategy<Value = Quirk> {
    prop_oneof![
        6 => Just(Quirk::None),
        3 => Just(Quirk::FromRouter),
        1 => Just(Quirk::NoEntry),
        1 => (0usize..64).prop_map(Quirk::Cut),
        1 => (0usize..48).prop_map(Quirk::ShortQuote),
        1 => Just(Quirk::QuotedOptions),
        1 => Just(Quirk::Echo),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => (0usize..8, prop_oneof![Just(About::Forward), Just(About::Reply)], 0usize..4, quirk(), prop::bool::weighted(0.1)).prop_map(
            |(flow, about, kind, quirk, wrong_way)| Step::Error { flow, about, kind, quirk, wrong_way }
        ),
        4 => (0usize..8, 0usize..8, 0usize..8, 0usize..8, kind(), dress()).prop_map(
            |(service, client, port, dst, kind, dress)| Step::New { service, client, port, dst, kind, dress }
        ),
        2 => (0usize..8, kind(), dress()).prop_map(|(flow, kind, dress)| Step::Again { flow, kind, dress }),
        3 => (0usize..8, kind(), dress(), prop::bool::weighted(0.15)).prop_map(
            |(flow, kind, dress, wrong_way)| Step::Reply { flow, kind, dress, wrong_way }
        ),
    ]
}

fn service() -> impl Strategy<Value = SvcSpec> {
    (
        0..FRONTENDS.len(),
        0..PORTS.len(),
        prop::bool::weighted(0.3),
        prop::collection::vec(0usize..7, 0..4),
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.1),
        prop::option::weighted(0.15, prop::collection::vec(0usize..7, 1..3)),
        prop::bool::weighted(0.15),
    )
        .prop_map(
            |(frontend, port, udp, backends, dangling, affinity, twin, no_local)| SvcSpec {
                frontend,
                port,
                udp,
                backends,
                dangling,
                affinity,
                twin,
                no_local,
            },
        )
}

pub fn case() -> impl Strategy<Value = Case> {
    (
        any::<u32>(),
        prop_oneof![Just(0u16), Just(1), Just(3), Just(4535)],
        prop::bool::weighted(0.3),
        prop::bool::weighted(0.4),
        prop::bool::weighted(0.8),
        (
            prop::bool::weighted(0.5),
            prop::bool::weighted(0.25),
            any::<bool>(),
        ),
        prop::collection::vec(service(), 1..6),
        prop::collection::vec(step(), 1..24),
    )
        .prop_map(
            |(
                flow_seed,
                snat_span,
                external_clusterip,
                maglev,
                np1_v6,
                (xdp, from_pods, external_ip_mitigation),
                services,
                steps,
            )| Case {
                flow_seed,
                snat_min: 61000,
                snat_span,
                external_clusterip,
                maglev,
                np1_v6,
                xdp,
                from_pods,
                external_ip_mitigation,
                services,
                steps,
            },
        )
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("an address constant")
}

fn is_v6(frontend: usize) -> bool {
    FRONTENDS[frontend].0.contains(':')
}

impl Case {
    /// The services' map contents: one slot-0 entry per distinct frontend (a later duplicate
    /// is left out), its slots and backends.
    pub fn maps(&self) -> MapContents {
        let mut out = MapContents::default();
        let mut backend_ids: BTreeMap<(IpAddr, u8), u32> = BTreeMap::new();
        for (i, s) in self.services.iter().enumerate() {
            let (address, mut flags) = FRONTENDS[s.frontend];
            let proto = if s.udp { 17 } else { 6 };
            let ext = LbKey::new(ip(address), PORTS[s.port], proto, scope::EXT, 0);
            if out.services.contains_key(&ext) {
                continue;
            }
            if s.affinity {
                flags |= svc_flags::AFFINITY;
            }
            if s.no_local {
                flags |= svc_flags::NO_LOCAL_BACKEND;
            }
            let rev_nat_index = i as u16 + 1;
            let mut frontend = |scope, flags, backends: &[usize], dangling| {
                let v6 = is_v6(s.frontend);
                let pool: Vec<&str> = if v6 {
                    BACKENDS_V6.iter().map(|b| b.0).collect()
                } else {
                    BACKENDS_V4.iter().map(|b| b.0).collect()
                };
                let key = |slot| LbKey::new(ip(address), PORTS[s.port], proto, scope, slot);
                let mut slots = Vec::new();
                for &b in backends {
                    let addr = ip(pool[b % pool.len()]);
                    let next = backend_ids.len() as u32 + 1;
                    let id = *backend_ids.entry((addr, proto)).or_insert(next);
                    out.backends
                        .insert(id, LbBackend::new(addr, BACKEND_PORT, proto, 0));
                    slots.push(id);
                }
                if dangling && !slots.is_empty() {
                    *slots.last_mut().expect("not empty") = 999;
                }
                for (slot, id) in (1..).zip(&slots) {
                    let entry = LbService {
                        backend_id: *id,
                        ..LbService::default()
                    };
                    out.services.insert(key(slot), entry);
                }
                let svc = LbService {
                    count: slots.len() as u16,
                    rev_nat_index,
                    flags,
                    affinity_timeout: if s.affinity { 10800 } else { 0 },
                    ..LbService::default()
                };
                out.services.insert(key(0), svc);
            };
            match &s.twin {
                None => frontend(scope::EXT, flags, &s.backends, s.dangling),
                Some(twin) => {
                    frontend(
                        scope::EXT,
                        flags | svc_flags::TWO_SCOPES,
                        &s.backends,
                        s.dangling,
                    );
                    frontend(scope::INT, flags | svc_flags::TWO_SCOPES, twin, false);
                }
            }
            out.reverse_nat
                .insert(rev_nat_index, LbReverseNat::new(ip(address), PORTS[s.port]));
        }
        if self.maglev {
            out.maglev = maglev_tables(&out);
        }
        out
    }
}

/// The Maglev tables of a case with Maglev: every external head with backends but every third
/// (by rev_nat_index: those keep the slot fallback) gets the table `build_table` makes over its
/// distinct slot ids, a dangling id included (whose entries then name no backend).
fn maglev_tables(out: &MapContents) -> BTreeMap<u16, Vec<u32>> {
    let mut tables = BTreeMap::new();
    for (key, head) in &out.services {
        if key.backend_slot != 0 || key.scope != scope::EXT || head.count == 0 {
            continue;
        }
        if head.rev_nat_index % 3 == 0 {
            continue;
        }
        let mut ids: Vec<u32> = (1..=head.count)
            .filter_map(|slot| {
                let slot_key = LbKey {
                    backend_slot: slot,
                    ..*key
                };
                Some(out.services.get(&slot_key)?.backend_id)
            })
            .collect();
        ids.sort_unstable();
        ids.dedup();
        // Stand-in addresses, one per id: the table only has to be the same on both sides.
        let backends: Vec<MaglevBackend> = ids
            .iter()
            .map(|id| {
                let addr = L3n4Addr::new(
                    IpAddr::from([10, 255, (id >> 8) as u8, *id as u8]),
                    80,
                    L4Protocol::Tcp,
                );
                MaglevBackend::new(addr, 1)
            })
            .collect();
        let table = build_table(MAGLEV_M, &HashSeed::default(), &backends)
            .expect("a few backends fit 251 entries");
        tables.insert(
            head.rev_nat_index,
            table.iter().map(|&i| ids[i as usize]).collect(),
        );
    }
    tables
}

/// A frame to run: the program (ingress or egress; at ingress, a pod's or a NodePort
/// device's), the device, the bytes.
#[derive(Clone, Debug)]
pub struct Frame {
    pub egress: bool,
    /// At ingress: `lb_pod_ingress` on the pod's interface, not the NodePort device's program.
    pub pod: bool,
    pub ifindex: u32,
    pub bytes: Vec<u8>,
}

fn flags_of(kind: Kind) -> u8 {
    match kind {
        Kind::Syn => tcp_flags::SYN,
        Kind::Data => tcp_flags::ACK | tcp_flags::PSH,
        Kind::Fin => tcp_flags::FIN | tcp_flags::ACK,
        Kind::Rst => tcp_flags::RST,
    }
}

/// The frame of a packet from `src` to `dst` dressed as asked.
fn frame(src: SocketAddr, dst: SocketAddr, udp: bool, kind: Kind, dress: Dress) -> Vec<u8> {
    let mut b = if udp {
        PacketBuilder::udp(src, dst)
    } else {
        PacketBuilder::tcp(src, dst, flags_of(kind))
    }
    .payload(PAYLOAD);
    let v6 = src.is_ipv6();
    b = match dress {
        Dress::Plain | Dress::Truncated(_) => b,
        Dress::Ipv4Options if !v6 => b.ipv4_options(&[0x94, 0x04, 0, 0, 0x01, 0x01, 0x01, 0x01]),
        Dress::FirstFragment if !v6 => b.fragment(0, true),
        Dress::LaterFragment if !v6 => b.fragment(64, false),
        Dress::HopByHop if v6 => b.hop_by_hop(),
        Dress::Ttl1 => b.ttl(1),
        Dress::Vlan => b.vlan(100),
        // Not IPv6: a zero UDP checksum there (invalid, RFC 8200) stays 0 in the C
        // (BPF_F_MARK_MANGLED_0 applies to both families) and is recomputed by the simulator,
        // whose contract keeps only IPv4's; left out until the contract says which.
        Dress::NoUdpChecksum if !v6 => b.no_udp_checksum(),
        Dress::OtherProtocol => PacketBuilder::other(132, src, dst),
        _ => b,
    };
    let mut bytes = b.build();
    if let Dress::Truncated(n) = dress {
        // Cut inside the transport header: BPF_PROG_TEST_RUN refuses a frame without a whole
        // IP header (EINVAL on Linux 6.18), and a frame cut inside its payload is outside the
        // contract (the C rewrites it with incremental checksums, the simulator recomputes
        // them over the bytes there).
        let ip_end = 14 + if v6 { 40 } else { 20 };
        let headers_end = bytes.len() - PAYLOAD.len();
        let len = ip_end + n % (headers_end - ip_end);
        bytes.truncate(len);
    }
    bytes
}

impl Case {
    /// A client's frame: into the NodePort device, or out of a pod into its interface.
    fn client_frame(&self, node: &Node, bytes: Vec<u8>) -> Frame {
        Frame {
            egress: false,
            pod: self.from_pods,
            ifindex: if self.from_pods { node.pod } else { node.np0 },
            bytes,
        }
    }
}

impl Step {
    /// The frame of this step, given the flows the simulator tracks now (`None` when the step
    /// refers to a flow and there is none).
    pub fn frame(
        &self,
        case: &Case,
        node: &Node,
        forward_flows: &[(ebpf::maps::LbCtKey, LbCtEntry)],
    ) -> Option<Frame> {
        let sock =
            |a: ebpf::maps::LbAddr, port_be: u16| SocketAddr::new(a.into(), u16::from_be(port_be));
        match *self {
            Step::New {
                service,
                client,
                port,
                dst,
                kind,
                dress,
            } => {
                let s = &case.services[service % case.services.len()];
                let (address, _) = FRONTENDS[s.frontend];
                let v6 = is_v6(s.frontend);
                let client = if v6 {
                    ip(CLIENTS_V6[client % CLIENTS_V6.len()])
                } else {
                    ip(CLIENTS_V4[client % CLIENTS_V4.len()])
                };
                let to = if ip(address).is_unspecified() {
                    let choices: [&str; 4] = if v6 {
                        [NP0_V6, NP1_V6, "::1", "2001:db8:1::99"]
                    } else {
                        [NP0_V4, NP1_V4, "127.0.0.1", "192.0.2.99"]
                    };
                    ip(choices[dst % 4])
                } else {
                    ip(address)
                };
                let src = SocketAddr::new(client, CLIENT_PORTS[port % CLIENT_PORTS.len()]);
                let bytes = frame(src, SocketAddr::new(to, PORTS[s.port]), s.udp, kind, dress);
                Some(case.client_frame(node, bytes))
            }
            Step::Again { flow, kind, dress } => {
                if forward_flows.is_empty() {
                    return None;
                }
                let (key, _) = forward_flows[flow % forward_flows.len()];
                let bytes = frame(
                    sock(key.saddr, key.sport),
                    sock(key.daddr, key.dport),
                    key.proto == 17,
                    kind,
                    dress,
                );
                Some(case.client_frame(node, bytes))
            }
            Step::Reply {
                flow,
                kind,
                dress,
                wrong_way,
            } => {
                if forward_flows.is_empty() {
                    return None;
                }
                let (key, e) = forward_flows[flow % forward_flows.len()];
                let bytes = frame(
                    sock(e.daddr, e.dport),
                    sock(e.saddr, e.sport),
                    key.proto == 17,
                    kind,
                    dress,
                );
                let snat = e.flags & ct_flags::SNAT != 0;
                let client_side = if case.from_pods { node.pod } else { node.np0 };
                Some(Frame {
                    // The way it goes, or the other program (which must leave it alone).
                    egress: snat == wrong_way,
                    pod: case.from_pods && !snat,
                    ifindex: if snat { node.np1 } else { client_side },
                    bytes,
                })
            }
            Step::Error {
                flow,
                about,
                kind,
                quirk,
                wrong_way,
            } => {
                if forward_flows.is_empty() {
                    return None;
                }
                let (key, e) = forward_flows[flow % forward_flows.len()];
                let snat = e.flags & ct_flags::SNAT != 0;
                // The quoted packet as it left the node, and where its error comes from and
                // goes: (quoted src, quoted dst, program is egress, device).
                let (mut src, dst, egress, ifindex) = match about {
                    About::Forward => (
                        sock(e.saddr, e.sport),
                        sock(e.daddr, e.dport),
                        !snat,
                        if snat { node.np1 } else { node.np0 },
                    ),
                    About::Reply => (
                        sock(key.daddr, key.dport),
                        sock(key.saddr, key.sport),
                        false,
                        node.np0,
                    ),
                };
                if let Quirk::NoEntry = quirk {
                    src.set_port(src.port().wrapping_add(1));
                }
                let v6 = src.is_ipv6();
                let mut quoted = if key.proto == 17 {
                    PacketBuilder::udp(src, dst)
                } else {
                    PacketBuilder::tcp(src, dst, tcp_flags::ACK)
                }
                .payload(PAYLOAD);
                if let (Quirk::QuotedOptions, false) = (quirk, v6) {
                    quoted = quoted.ipv4_options(&[0x94, 0x04, 0, 0]);
                }
                let quoted = quoted.build();
                // From the quoted packet's destination, or a router; to its source.
                let from = match quirk {
                    Quirk::FromRouter if v6 => ip("2001:db8:1::fe"),
                    Quirk::FromRouter => ip("192.0.2.254"),
                    _ => dst.ip(),
                };
                let (icmp_type, code) = match (v6, quirk) {
                    (false, Quirk::Echo) => (8, 0),
                    (true, Quirk::Echo) => (128, 0),
                    (false, _) => [(3, 4), (3, 3), (11, 0), (3, 1)][kind % 4],
                    (true, _) => [(2, 0), (1, 4), (3, 0), (1, 3)][kind % 4],
                };
                let mut b =
                    IcmpErrorBuilder::new(from, src.ip(), icmp_type, code, &quoted).rest(1280);
                if let Quirk::ShortQuote(n) = quirk {
                    b = b.quote(n % (if v6 { 48 } else { 28 }));
                }
                let mut bytes = b.build();
                if let Quirk::Cut(n) = quirk {
                    // Within the quote: the frame keeps its outer headers whole (see
                    // Dress::Truncated).
                    let outer = 14 + if v6 { 40 } else { 20 };
                    bytes.truncate(outer + n % (bytes.len() - outer));
                }
                // A pod's flows: the error meets the pod's interface, at egress on its way
                // into the pod, at the pod program on its way out.
                let egress = egress != wrong_way;
                Some(Frame {
                    egress,
                    pod: case.from_pods && !egress,
                    ifindex: if case.from_pods { node.pod } else { ifindex },
                    bytes,
                })
            }
        }
    }
}
