//! One test per rule of the tc NodePort datapath, named for what a client or a backend of the
//! node observes on the wire.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use ebpf::maps::{counter, ct_flags, LbAddr, LbCtKey, LbDevice};

use super::packet_builder::{
    checksums_valid, icmp_error_checksums_valid, tcp_flags, FrameView, IcmpErrorBuilder,
    IcmpErrorView, PacketBuilder,
};
use super::tests::{maps, svc, Svc};
use super::{FibResult, FibTable, PktConfig, PktOutcome, PktSim, Verdict};
use crate::model::ServiceType;

const ETH0: u32 = 2;
const POD_VETH: u32 = 10;
const ETH0_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xc1];
const BACKEND_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xb1];
const NODE4: &str = "192.0.2.1";
const NODE6: &str = "2001:db8::1";
const CLIENT: &str = "203.0.113.7:40000";
const CLIENT6: &str = "[2001:db8:ff::7]:40000";
const LOCAL_BACKEND: &str = "10.0.1.5:8080";
const REMOTE_BACKEND: &str = "10.0.2.7:8080";
const NOW: u32 = 1000;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The node's FIB: clients and remote backends behind eth0 (one remote backend without a
/// resolved neighbour), local backends behind a pod's veth, the node's own addresses local.
fn fib() -> FibTable {
    let via_eth0 = |dmac| FibResult::Forward {
        ifindex: ETH0,
        smac: ETH0_MAC,
        dmac,
    };
    let pod = FibResult::Forward {
        ifindex: POD_VETH,
        smac: [0x02, 0, 0, 0, 0, 0x10],
        dmac: [0x02, 0, 0, 0, 0, 0x11],
    };
    FibTable::new()
        .route(ip("203.0.113.7"), via_eth0(CLIENT_MAC))
        .route(ip("2001:db8:ff::7"), via_eth0(CLIENT_MAC))
        .route(ip("10.0.1.5"), pod)
        .route(ip("fd00:1::5"), pod)
        .route(ip("10.0.2.7"), via_eth0(BACKEND_MAC))
        .route(ip("fd00:2::7"), via_eth0(BACKEND_MAC))
        .route(ip("10.0.2.8"), FibResult::NoNeigh { ifindex: ETH0 })
        .route(ip(NODE4), FibResult::Local)
        .route(ip(NODE6), FibResult::Local)
}

/// A node with eth0 as its NodePort device and these services, at [`NOW`].
fn node_with(config: PktConfig, services: Vec<Svc>) -> PktSim {
    let mut sim = PktSim::new(config, maps(services), Box::new(fib()));
    sim.set_local_addresses(&[ip(NODE4), ip(NODE6)]);
    sim.set_devices(BTreeMap::from([(
        ETH0,
        LbDevice {
            addr4: LbAddr::from(ip(NODE4)),
            addr6: LbAddr::from(ip(NODE6)),
            flags: 0,
        },
    )]));
    sim.set_now(NOW);
    sim
}

fn node(services: Vec<Svc>) -> PktSim {
    node_with(PktConfig::default(), services)
}

fn nodeport(backend: &str) -> Svc {
    svc("0.0.0.0:30080", ServiceType::NodePort).backend(backend)
}

fn syn(src: &str, dst: &str) -> Vec<u8> {
    PacketBuilder::tcp(sa(src), sa(dst), tcp_flags::SYN)
        .macs(ETH0_MAC, CLIENT_MAC)
        .build()
}

fn seg(src: &str, dst: &str, flags: u8) -> Vec<u8> {
    PacketBuilder::tcp(sa(src), sa(dst), flags)
        .macs(ETH0_MAC, CLIENT_MAC)
        .payload(b"hello")
        .build()
}

/// The frame's fields, checking on the way that its checksums are right.
fn view(o: &PktOutcome) -> FrameView {
    assert!(
        checksums_valid(&o.packet),
        "bad checksums in {:02x?}",
        o.packet
    );
    FrameView::of(&o.packet).expect("a TCP or UDP frame")
}

/// A new NodePort flow's SNAT port (the reply entry's destination port).
fn snat_port(o: &PktOutcome) -> u16 {
    view(o).src.port()
}

#[test]
fn nodeport_to_a_local_backend_keeps_the_client_address_and_replies_come_from_the_nodeport() {
    let mut sim = node(vec![nodeport(LOCAL_BACKEND)]);
    let out = sim.ingress(ETH0, &syn(CLIENT, "192.0.2.1:30080"));
    assert_eq!(out.verdict, Verdict::Pass);
    let v = view(&out);
    assert_eq!((v.src, v.dst), (sa(CLIENT), sa(LOCAL_BACKEND)));
    assert_eq!(
        v.ttl, 64,
        "the kernel routes it on and decrements the TTL itself"
    );
    // The next segment of the flow takes the same way.
    let out = sim.ingress(ETH0, &seg(CLIENT, "192.0.2.1:30080", tcp_flags::ACK));
    assert_eq!(view(&out).dst, sa(LOCAL_BACKEND));

    let reply = seg(LOCAL_BACKEND, CLIENT, tcp_flags::SYN | tcp_flags::ACK);
    let out = sim.egress(ETH0, &reply);
    assert_eq!(out.verdict, Verdict::Pass);
    let v = view(&out);
    assert_eq!((v.src, v.dst), (sa("192.0.2.1:30080"), sa(CLIENT)));
    assert_eq!(sim.ct().len(), 2);
}

#[test]
fn the_reply_comes_from_the_address_the_client_used_not_the_wildcard() {
    let mut sim = node(vec![nodeport(LOCAL_BACKEND)]);
    sim.set_local_addresses(&[ip(NODE4), ip("198.51.100.1")]);
    sim.ingress(ETH0, &syn(CLIENT, "198.51.100.1:30080"));
    let out = sim.egress(ETH0, &seg(LOCAL_BACKEND, CLIENT, tcp_flags::ACK));
    assert_eq!(view(&out).src, sa("198.51.100.1:30080"));
}

#[test]
fn a_local_backends_reply_entering_a_device_is_not_translated() {
    let mut sim = node(vec![nodeport(LOCAL_BACKEND)]);
    sim.ingress(ETH0, &syn(CLIENT, "192.0.2.1:30080"));
    let frame = seg(LOCAL_BACKEND, CLIENT, tcp_flags::ACK);
    let out = sim.ingress(ETH0, &frame);
    assert_eq!((out.verdict, out.packet), (Verdict::Pass, frame));
}

#[test]
fn nodeport_to_a_remote_backend_is_source_natted_and_forwarded_and_so_is_the_reply() {
    let mut sim = node(vec![nodeport(REMOTE_BACKEND)]);
    let out = sim.ingress(ETH0, &syn(CLIENT, "192.0.2.1:30080"));
    assert_eq!(
        out.verdict,
        Verdict::Redirect {
            ifindex: ETH0,
            neigh: false
        }
    );
    let v = view(&out);
    let port = v.src.port();
    assert_eq!(v.src.ip(), ip(NODE4));
    assert!((61000..=65535).contains(&port), "SNAT port {port}");
    assert_eq!(v.dst, sa(REMOTE_BACKEND));
    assert_eq!((v.dmac, v.smac, v.ttl), (BACKEND_MAC, ETH0_MAC, 63));

    let flags: Vec<u8> = sim.ct().values().map(|e| e.flags).collect();
    assert_eq!(sim.ct().len(), 2);
    assert!(flags.contains(&ct_flags::SNAT));
    assert!(flags.contains(&(ct_flags::SNAT | ct_flags::REPLY)));

    let reply = PacketBuilder::tcp(
        sa(REMOTE_BACKEND),
        SocketAddr::new(ip(NODE4), port),
        tcp_flags::SYN | tcp_flags::ACK,
    )
    .macs(ETH0_MAC, BACKEND_MAC)
    .build();
    let out = sim.ingress(ETH0, &reply);
    assert_eq!(
        out.verdict,
        Verdict::Redirect {
            ifindex: ETH0,
            neigh: false
        }
    );
    let v = view(&out);
    assert_eq!((v.src, v.dst), (sa("192.0.2.1:30080"), sa(CLIENT)));
    assert_eq!((v.dmac, v.smac, v.ttl), (CLIENT_MAC, ETH0_MAC, 63));
}

#[test]
fn a_tracked_flow_follows_a_new_next_hop_from_the_next_second_on() {
    let mut sim = node(vec![nodeport(REMOTE_BACKEND)]);
    let first = sim.ingress(ETH0, &syn(CLIENT, "192.0.2.1:30080"));
    assert_eq!(view(&first).dmac, BACKEND_MAC);
    let data = seg(CLIENT, "192.0.2.1:30080", tcp_flags::ACK);
    assert_eq!(view(&sim.ingress(ETH0, &data)).dmac, BACKEND_MAC);
    // The backend's node moved to another MAC (a replaced NIC, a moved address).
    const MOVED_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xb2];
    let moved = FibResult::Forward {
        ifindex: ETH0,
        smac: ETH0_MAC,
        dmac: MOVED_MAC,
    };
    sim.set_fib(Box::new(fib().route(ip("10.0.2.7"), moved)));
    // Within the second the flow's packets keep the next hop they were given...
    assert_eq!(view(&sim.ingress(ETH0, &data)).dmac, BACKEND_MAC);
    // ...a new flow asks the FIB itself...
    let other = sim.ingress(ETH0, &syn("203.0.113.7:40001", "192.0.2.1:30080"));
    assert_eq!(view(&other).dmac, MOVED_MAC);
    // ...and from the next second on the tracked flow follows.
    sim.set_now(NOW + 1);
    assert_eq!(view(&sim.ingress(ETH0, &data)).dmac, MOVED_MAC);
}

#[test]
fn a_remote_backend_without_a_resolved_neighbour_goes_to_the_neighbour_subsystem() {
    let mut sim = node(vec![nodeport("10.0.2.8:8080")]);
    let frame = syn(CLIENT, "192.0.2.1:30080");
    let out = sim.ingress(ETH0, &frame);
    assert_eq!(
        out.verdict,
        Verdict::Redirect {
            ifindex: ETH0,
            neigh: true
        }
    );
    assert_eq!(
        out.packet[..12],
        frame[..12],
        "MACs are the neighbour's to write"
    );
    assert_eq!(view(&out).dst, sa("10.0.2.8:8080"));
}

#[test]
fn loadbalancer_and_external_ips_are_served_from_outside() {
    let mut sim = node(vec![
        svc("198.51.100.10:80", ServiceType::LoadBalancer).backend(LOCAL_BACKEND),
        svc("198.51.100.11:80", ServiceType::ExternalIPs).backend(REMOTE_BACKEND),
    ]);
    let out = sim.ingress(ETH0, &syn(CLIENT, "198.51.100.10:80"));
    assert_eq!(
        (out.verdict, view(&out).dst),
        (Verdict::Pass, sa(LOCAL_BACKEND))
    );
    let out = sim.ingress(ETH0, &syn(CLIENT, "198.51.100.11:80"));
    assert_eq!(view(&out).dst, sa(REMOTE_BACKEND));
    assert!(matches!(out.verdict, Verdict::Redirect { .. }));
}

#[test]
fn a_clusterip_is_unreachable_from_outside_unless_external_clusterip_is_on() {
    let services = || vec![svc("10.96.0.10:80", ServiceType::ClusterIP).backend(LOCAL_BACKEND)];
    let frame = syn(CLIENT, "10.96.0.10:80");
    let out = node(services()).ingress(ETH0, &frame);
    assert_eq!((out.verdict, out.packet), (Verdict::Pass, frame.clone()));

    let config = PktConfig {
        external_clusterip: true,
        ..PktConfig::default()
    };
    let out = node_with(config, services()).ingress(ETH0, &frame);
    assert_eq!(view(&out).dst, sa(LOCAL_BACKEND));
}

#[test]
fn nodeports_do_not_answer_on_loopback_or_foreign_addresses_at_tc() {
    let mut sim = node(vec![nodeport(LOCAL_BACKEND)]);
    // Even where the agent lists loopback among the node's addresses.
    sim.set_local_addresses(&[ip(NODE4), ip("127.0.0.1")]);
    for dst in ["127.0.0.1:30080", "192.0.2.99:30080", "192.0.2.1:30081"] {
        let frame = syn(CLIENT, dst);
        let out = sim.ingress(ETH0, &frame);
        assert_eq!((out.verdict, out.packet), (Verdict::Pass, frame), "{dst}");
    }
    assert!(sim.ct().is_empty());
}

/// The one's-complement sum of `bytes` folded: 0xffff when a checksum over them is right.
fn ones_sum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

#[test]
fn a_service_without_backends_rejects_with_port_unreachable_and_counts() {
    let mut sim = node(vec![svc("0.0.0.0:30080", ServiceType::NodePort)]);
    let frame = syn(CLIENT, "192.0.2.1:30080");
    let out = sim.ingress(ETH0, &frame);
    assert_eq!(
        out.verdict,
        Verdict::Redirect {
            ifindex: ETH0,
            neigh: false
        },
        "back out of the device it came in on"
    );
    let r = &out.packet;
    assert_eq!(
        (&r[..6], &r[6..12]),
        (&frame[6..12], &frame[..6]),
        "MACs swapped"
    );
    assert_eq!(r.len(), 14 + 20 + 8 + 28);
    assert_eq!((r[14], r[22], r[23]), (0x45, 64, 1), "IPv4, TTL 64, ICMP");
    assert_eq!(
        r[26..30],
        [192, 0, 2, 1],
        "from the address the client used"
    );
    assert_eq!(r[30..34], [203, 0, 113, 7]);
    assert_eq!(
        (r[34], r[35]),
        (3, 3),
        "destination unreachable, port unreachable"
    );
    assert_eq!(r[42..], frame[14..42], "the IP header and 8 bytes quoted");
    assert_eq!((ones_sum(&r[14..34]), ones_sum(&r[34..])), (0xffff, 0xffff));
    assert_eq!(sim.counters()[usize::from(counter::NO_BACKEND)], 1);
    assert!(sim.ct().is_empty());
}

#[test]
fn an_ipv6_client_of_a_service_without_backends_gets_icmpv6_port_unreachable() {
    let mut sim = node(vec![svc("[::]:30080", ServiceType::NodePort)]);
    let frame = syn(CLIENT6, "[2001:db8::1]:30080");
    let out = sim.ingress(ETH0, &frame);
    assert!(matches!(
        out.verdict,
        Verdict::Redirect {
            ifindex: ETH0,
            neigh: false
        }
    ));
    let r = &out.packet;
    assert_eq!(r.len(), 14 + 40 + 8 + 48);
    assert_eq!((r[20], r[21]), (58, 64), "ICMPv6, hop limit 64");
    assert_eq!(r[22..38], LbAddr::from(ip(NODE6)).bytes);
    assert_eq!((r[54], r[55]), (1, 4));
    assert_eq!(r[62..], frame[14..62]);
    let mut pseudo = r[22..54].to_vec();
    pseudo.extend_from_slice(&56u32.to_be_bytes());
    pseudo.extend_from_slice(&58u32.to_be_bytes());
    pseudo.extend_from_slice(&r[54..]);
    assert_eq!(ones_sum(&pseudo), 0xffff);
}

#[test]
fn a_packet_with_ipv4_options_for_a_service_without_backends_is_dropped() {
    let mut sim = node(vec![svc("0.0.0.0:30080", ServiceType::NodePort)]);
    let frame = PacketBuilder::tcp(sa(CLIENT), sa("192.0.2.1:30080"), tcp_flags::SYN)
        .ipv4_options(&[1, 1, 1, 1])
        .build();
    let out = sim.ingress(ETH0, &frame);
    assert_eq!(out.verdict, Verdict::Drop(counter::NO_BACKEND));
    assert_eq!(sim.counters()[usize::from(counter::NO_BACKEND)], 1);
}

/// SNAT ports 61000..=61003.
fn small_range() -> PktConfig {
    PktConfig {
        snat_port_min: 61000,
        snat_port_max: 61003,
        ..PktConfig::default()
    }
}

#[test]
fn a_snat_port_in_use_is_skipped_for_the_next_one() {
    let first = snat_port(
        &node_with(small_range(), vec![nodeport(REMOTE_BACKEND)])
            .ingress(ETH0, &syn(CLIENT, "192.0.2.1:30080")),
    );
    let mut sim = node_with(small_range(), vec![nodeport(REMOTE_BACKEND)]);
    let taken = LbCtKey {
        saddr: LbAddr::from(ip("10.0.2.7")),
        daddr: LbAddr::from(ip(NODE4)),
        sport: 8080u16.to_be(),
        dport: first.to_be(),
        proto: 6,
        pad: [0; 3],
    };
    let other = ebpf::maps::LbCtEntry {
        flags: ct_flags::REPLY | ct_flags::SNAT,
        expires: 5000,
        ..Default::default()
    };
    sim.insert_ct(taken, other);
    let port = snat_port(&sim.ingress(ETH0, &syn(CLIENT, "192.0.2.1:30080")));
    assert_eq!(
        port,
        61000 + (first - 61000 + 1) % 4,
        "the next port of the range"
    );
    assert_eq!(sim.ct()[&taken], other, "the other flow keeps its port");
}

#[test]
fn snat_ports_run_out_and_the_drop_is_counted() {
    let config = PktConfig {
        snat_port_min: 61000,
        snat_port_max: 61000,
        ..PktConfig::default()
    };
    let mut sim = node_with(config, vec![nodeport(REMOTE_BACKEND)]);
    assert_eq!(
        snat_port(&sim.ingress(ETH0, &syn(CLIENT, "192.0.2.1:30080"))),
        61000
    );
    let out = sim.ingress(ETH0, &syn("203.0.113.7:40001", "192.0.2.1:30080"));
    assert_eq!(out.verdict, Verdict::Drop(counter::SNAT_EXHAUSTED));
    assert_eq!(sim.counters()[usize::from(counter::SNAT_EXHAUSTED)], 1);
    assert_eq!(sim.ct().len(), 2, "only the first flow's entries");
}

#[test]
fn a_device_without_an_address_of_the_family_cannot_snat() {
    let mut sim = node(vec![
        svc("[::]:30080", ServiceType::NodePort).backend("[fd00:2::7]:8080")
    ]);
    sim.set_devices(BTreeMap::from([(
        ETH0,
        LbDevice {
            addr4: LbAddr::from(ip(NODE4)),
            ..LbDevice::default()
        },
    )]));
    let out = sim.ingress(ETH0, &syn(CLIENT6, "[2001:db8::1]:30080"));
    assert_eq!(out.verdict, Verdict::Drop(counter::NO_DEVICE_ADDR));
}

/// The expiry of the entry of a flow's direction: `reply` picks the reply's.
fn expires(sim: &PktSim, reply: bool) -> (u32, bool) {
    let e = sim
        .ct()
        .values()
        .find(|e| (e.flags & ct_flags::REPLY != 0) == reply)
        .unwrap();
    (e.expires, e.flags & ct_flags::CLOSING != 0)
}

#[test]
fn entries_live_by_protocol_and_state_and_a_fin_closes_both_directions() {
    let mut sim = node(vec![nodeport(LOCAL_BACKEND)]);
    let to_node = "192.0.2.1:30080";
    sim.ingress(ETH0, &syn(CLIENT, to_node));
    assert_eq!(expires(&sim, false), (NOW + 60, false));
    assert_eq!(expires(&sim, true), (NOW + 60, false));

    sim.set_now(NOW + 1);
    sim.ingress(ETH0, &seg(CLIENT, to_node, tcp_flags::ACK));
    assert_eq!(expires(&sim, false), (NOW + 1 + 21600, false));
    assert_eq!(
        expires(&sim, true),
        (NOW + 60, false),
        "the reply's is its own"
    );

    sim.set_now(NOW + 3);
    sim.ingress(ETH0, &seg(CLIENT, to_node, tcp_flags::FIN | tcp_flags::ACK));
    assert_eq!(expires(&sim, false), (NOW + 13, true));
    assert_eq!(expires(&sim, true), (NOW + 13, true), "the twin closes too");

    sim.set_now(NOW + 5);
    sim.egress(ETH0, &seg(LOCAL_BACKEND, CLIENT, tcp_flags::ACK));
    assert_eq!(expires(&sim, true), (NOW + 15, true), "closing stays 10 s");

    sim.set_now(NOW + 14);
    assert_eq!(
        sim.collect_garbage(),
        0,
        "the reply is alive, so is its twin"
    );
    sim.set_now(NOW + 16);
    assert_eq!(sim.collect_garbage(), 2);
    assert!(sim.ct().is_empty());
}

#[test]
fn a_reset_from_a_remote_backend_closes_the_snat_flow() {
    let mut sim = node(vec![nodeport(REMOTE_BACKEND)]);
    let port = snat_port(&sim.ingress(ETH0, &seg(CLIENT, "192.0.2.1:30080", tcp_flags::ACK)));
    assert_eq!(expires(&sim, false), (NOW + 21600, false));
    sim.set_now(NOW + 2);
    let rst = seg(REMOTE_BACKEND, &format!("{NODE4}:{port}"), tcp_flags::RST);
    sim.ingress(ETH0, &rst);
    assert_eq!(expires(&sim, false), (NOW + 12, true));
    assert_eq!(expires(&sim, true), (NOW + 12, true));
}

#[test]
fn udp_entries_live_a_minute() {
    let mut sim = node(vec![nodeport(LOCAL_BACKEND).udp()]);
    let frame = PacketBuilder::udp(sa(CLIENT), sa("192.0.2.1:30080"))
        .payload(b"q")
        .build();
    sim.ingress(ETH0, &frame);
    assert_eq!(expires(&sim, false), (NOW + 60, false));
}

#[test]
fn a_forwarded_packet_with_ttl_1_is_dropped_and_counted_a_local_one_is_not() {
    let frame = PacketBuilder::tcp(sa(CLIENT), sa("192.0.2.1:30080"), tcp_flags::SYN)
        .ttl(1)
        .build();
    let mut sim = node(vec![nodeport(REMOTE_BACKEND)]);
    assert_eq!(
        sim.ingress(ETH0, &frame).verdict,
        Verdict::Drop(counter::TTL_EXCEEDED)
    );
    assert_eq!(sim.counters()[usize::from(counter::TTL_EXCEEDED)], 1);
    let mut sim = node(vec![nodeport(LOCAL_BACKEND)]);
    assert_eq!(sim.ingress(ETH0, &frame).verdict, Verdict::Pass);
}

#[test]
fn ipv4_options_are_kept_through_dnat_and_snat() {
    let options = [0x94, 0x04, 0x00, 0x00]; // Router Alert
    let frame = PacketBuilder::tcp(sa(CLIENT), sa("192.0.2.1:30080"), tcp_flags::SYN)
        .ipv4_options(&options)
        .payload(b"data")
        .build();
    for backend in [LOCAL_BACKEND, REMOTE_BACKEND] {
        let out = node(vec![nodeport(backend)]).ingress(ETH0, &frame);
        assert_eq!(view(&out).dst, sa(backend));
        assert_eq!(out.packet.len(), frame.len());
        assert_eq!(
            out.packet[34..38],
            options,
            "options after the fixed header"
        );
        assert_eq!(out.packet[out.packet.len() - 4..], *b"data");
    }
}

#[test]
fn fragments_ipv6_extension_headers_vlans_and_other_protocols_pass_untouched() {
    let to = sa("192.0.2.1:30080");
    let frames = [
        PacketBuilder::tcp(sa(CLIENT), to, tcp_flags::SYN)
            .fragment(0, true)
            .build(),
        PacketBuilder::udp(sa(CLIENT), to)
            .fragment(185, false)
            .build(),
        PacketBuilder::tcp(sa(CLIENT6), sa("[2001:db8::1]:30080"), tcp_flags::SYN)
            .hop_by_hop()
            .build(),
        PacketBuilder::tcp(sa(CLIENT), to, tcp_flags::SYN)
            .vlan(7)
            .build(),
        PacketBuilder::other(132, sa(CLIENT), to).build(),
    ];
    let mut sim = node(vec![
        nodeport(LOCAL_BACKEND),
        nodeport(LOCAL_BACKEND).udp(),
        svc("[::]:30080", ServiceType::NodePort).backend("[fd00:1::5]:8080"),
    ]);
    for frame in frames {
        let out = sim.ingress(ETH0, &frame);
        assert_eq!((out.verdict, out.packet), (Verdict::Pass, frame));
    }
    assert!(sim.ct().is_empty());
}

#[test]
fn truncated_packets_pass_untouched() {
    let mut sim = node(vec![nodeport(LOCAL_BACKEND), nodeport(LOCAL_BACKEND).udp()]);
    let full = [
        syn(CLIENT, "192.0.2.1:30080"),
        PacketBuilder::udp(sa(CLIENT), sa("192.0.2.1:30080")).build(),
        PacketBuilder::tcp(sa(CLIENT), sa("192.0.2.1:30080"), tcp_flags::SYN)
            .ipv4_options(&[1, 1, 1, 1, 1, 1, 1, 1])
            .build(),
        // Cut inside the payload: the IP length claims more than the frame holds, and no
        // checksum could be updated over what is missing.
        PacketBuilder::udp(sa(CLIENT), sa("192.0.2.1:30080"))
            .payload(b"a payload cut short")
            .build(),
        PacketBuilder::udp(sa("[2001:db8::7]:40000"), sa("[fd00::1]:30080"))
            .payload(b"a payload cut short")
            .build(),
    ];
    for frame in full {
        for len in 0..frame.len() {
            let cut = &frame[..len];
            let out = sim.ingress(ETH0, cut);
            assert_eq!(
                (out.verdict, &out.packet[..]),
                (Verdict::Pass, cut),
                "{len} bytes"
            );
        }
    }
    assert!(sim.ct().is_empty());
}

#[test]
fn ipv6_nodeport_reaches_local_and_remote_backends() {
    let mut sim = node(vec![
        svc("[::]:30080", ServiceType::NodePort).backend("[fd00:1::5]:8080"),
        svc("[::]:30081", ServiceType::NodePort).backend("[fd00:2::7]:8080"),
    ]);
    let out = sim.ingress(ETH0, &syn(CLIENT6, "[2001:db8::1]:30080"));
    assert_eq!(out.verdict, Verdict::Pass);
    assert_eq!(
        (view(&out).src, view(&out).dst),
        (sa(CLIENT6), sa("[fd00:1::5]:8080"))
    );
    let out = sim.egress(ETH0, &seg("[fd00:1::5]:8080", CLIENT6, tcp_flags::ACK));
    assert_eq!(view(&out).src, sa("[2001:db8::1]:30080"));

    let out = sim.ingress(ETH0, &syn(CLIENT6, "[2001:db8::1]:30081"));
    assert!(matches!(
        out.verdict,
        Verdict::Redirect { neigh: false, .. }
    ));
    let v = view(&out);
    assert_eq!(
        (v.src.ip(), v.dst, v.ttl),
        (ip(NODE6), sa("[fd00:2::7]:8080"), 63)
    );
    let reply = seg(
        "[fd00:2::7]:8080",
        &format!("[{NODE6}]:{}", v.src.port()),
        tcp_flags::ACK,
    );
    let v = view(&sim.ingress(ETH0, &reply));
    assert_eq!((v.src, v.dst), (sa("[2001:db8::1]:30081"), sa(CLIENT6)));
}

/// The UDP checksum field of a frame whose IPv4 header has no options.
fn udp_checksum(frame: &[u8]) -> u16 {
    u16::from_be_bytes([frame[40], frame[41]])
}

#[test]
fn udp_without_a_checksum_keeps_none_and_a_computed_zero_is_sent_as_ffff() {
    let services = || vec![nodeport(LOCAL_BACKEND).udp()];
    let to = sa("192.0.2.1:30080");
    let frame = PacketBuilder::udp(sa(CLIENT), to)
        .no_udp_checksum()
        .payload(b"q")
        .build();
    let out = node(services()).ingress(ETH0, &frame);
    assert_eq!(view(&out).dst, sa(LOCAL_BACKEND));
    assert_eq!(udp_checksum(&out.packet), 0);
    // IPv6 forbids it, but the programs leave it as it came in both families
    // (BPF_F_MARK_MANGLED_0); its receiver drops it either way.
    let v6 = || {
        vec![svc("[::]:30080", ServiceType::NodePort)
            .backend("[fd00:1::5]:8080")
            .udp()]
    };
    let frame = PacketBuilder::udp(sa("[2001:db8::7]:40000"), sa("[fd00::1]:30080"))
        .no_udp_checksum()
        .payload(b"q")
        .build();
    let mut sim = node(v6());
    sim.set_local_addresses(&["fd00::1".parse().unwrap()]);
    let out = sim.ingress(ETH0, &frame);
    let rewritten = FrameView::of(&out.packet).expect("still a UDP datagram");
    assert_eq!(rewritten.dst, sa("[fd00:1::5]:8080"));
    // Ethernet, the IPv6 header, then the UDP checksum at byte 6.
    assert_eq!(&out.packet[14 + 40 + 6..14 + 40 + 8], &[0, 0]);

    // A payload word equal to the checksum the rewritten datagram has with a zero payload
    // makes its sum 0xffff, so its checksum computes to 0.
    let zero_payload = PacketBuilder::udp(sa(CLIENT), to).payload(&[0, 0]).build();
    let c0 = udp_checksum(&node(services()).ingress(ETH0, &zero_payload).packet);
    let frame = PacketBuilder::udp(sa(CLIENT), to)
        .payload(&c0.to_be_bytes())
        .build();
    let out = node(services()).ingress(ETH0, &frame);
    assert_eq!(udp_checksum(&out.packet), 0xffff);
    assert!(checksums_valid(&out.packet));
}

#[test]
fn traffic_entering_a_device_uses_the_external_scope_never_the_internal_twin() {
    // externalTrafficPolicy and internalTrafficPolicy differ: the twins hold other backends.
    let lb = "198.51.100.10:80";
    let mut sim = node(vec![
        nodeport(LOCAL_BACKEND),
        svc("0.0.0.0:30080", ServiceType::NodePort)
            .internal()
            .backend(REMOTE_BACKEND),
        svc(lb, ServiceType::LoadBalancer).backend(LOCAL_BACKEND),
        svc(lb, ServiceType::LoadBalancer)
            .internal()
            .backend(REMOTE_BACKEND),
    ]);
    for to in ["192.0.2.1:30080", lb] {
        for port in 40000..40016 {
            let out = sim.ingress(ETH0, &syn(&format!("203.0.113.7:{port}"), to));
            assert_eq!(view(&out).dst, sa(LOCAL_BACKEND), "{to}");
        }
    }
}

/// With Maglev a new flow's backend is the frontend's table entry at `hash % M` (here a table
/// that names the second backend everywhere); a frontend without a table yet, or a node
/// balancing at random, uses the slot hash, which spreads the same flows over both.
#[test]
fn with_maglev_the_frontends_table_picks_the_backend_and_without_one_the_slot_hash_does() {
    const SECOND: &str = "10.0.1.6:8080";
    let services = || vec![nodeport(LOCAL_BACKEND).backend(SECOND)];
    let maglev = PktConfig {
        maglev_m: Some(251),
        ..PktConfig::default()
    };
    let mut with_table = maps(services());
    let head = with_table
        .frontends()
        .into_iter()
        .find(|f| f.frontend.scope == crate::model::Scope::External)
        .unwrap();
    let second_id = head.backends[1].0;
    with_table.maglev.insert(head.id, vec![second_id; 251]);
    let answered = |sim: &mut PktSim| -> Vec<SocketAddr> {
        (40000..40016)
            .map(|port| {
                let frame = syn(&format!("203.0.113.7:{port}"), &format!("{NODE4}:30080"));
                view(&sim.ingress(ETH0, &frame)).dst
            })
            .collect()
    };
    let mut sim = node_with(maglev, services());
    sim.set_maps(with_table.clone());
    assert!(answered(&mut sim).iter().all(|&d| d == sa(SECOND)));

    let spread = |sim: &mut PktSim| {
        let got = answered(sim);
        got.contains(&sa(LOCAL_BACKEND)) && got.contains(&sa(SECOND))
    };
    assert!(
        spread(&mut node_with(maglev, services())),
        "no table: slots"
    );
    let mut random = node(services());
    random.set_maps(with_table);
    assert!(spread(&mut random), "random ignores the tables");
}

/// A translated ICMP error's fields, checking on the way that its checksums are right.
fn error_view(o: &PktOutcome) -> IcmpErrorView {
    assert!(
        icmp_error_checksums_valid(&o.packet),
        "bad checksums in {:02x?}",
        o.packet
    );
    IcmpErrorView::of(&o.packet).expect("an ICMP error")
}

const ROUTER: &str = "198.51.100.254";
const TO_CLIENT: Verdict = Verdict::Redirect {
    ifindex: ETH0,
    neigh: false,
};

#[test]
fn frag_needed_about_a_snatted_packet_reaches_the_client_translated() {
    let mut sim = node(vec![nodeport(REMOTE_BACKEND).udp()]);
    let big = PacketBuilder::udp(sa(CLIENT), sa("192.0.2.1:30080"))
        .payload(&[7; 1400])
        .build();
    let out = sim.ingress(ETH0, &big);
    assert_eq!(out.verdict, TO_CLIENT);
    let sent = out.packet;
    let before: Vec<_> = sim.ct().values().copied().collect();

    // The backend's node cannot take it: fragmentation needed, MTU 1300.
    sim.set_now(NOW + 30);
    let err = IcmpErrorBuilder::frag_needed(ip("10.0.2.7"), ip(NODE4), &sent, 1300)
        .macs(ETH0_MAC, BACKEND_MAC)
        .build();
    let out = sim.ingress(ETH0, &err);
    assert_eq!(
        out.verdict, TO_CLIENT,
        "forwarded as the flow's replies are"
    );
    let v = error_view(&out);
    assert_eq!(
        (v.src, v.dst),
        (ip(NODE4), ip("203.0.113.7")),
        "from the address the client used, to the client"
    );
    assert_eq!(
        (v.quoted_src, v.quoted_dst),
        (sa(CLIENT), sa("192.0.2.1:30080")),
        "quoting the datagram the client sent"
    );
    assert_eq!((v.icmp_type, v.code, v.ttl), (3, 4, 63));
    assert_eq!(
        &out.packet[14 + 20 + 6..14 + 20 + 8],
        &1300u16.to_be_bytes()
    );
    assert_eq!(
        (&out.packet[..6], &out.packet[6..12]),
        (&CLIENT_MAC[..], &ETH0_MAC[..])
    );
    let after: Vec<_> = sim.ct().values().copied().collect();
    assert_eq!(before, after, "an error does not refresh the flow");
}

#[test]
fn a_routers_time_exceeded_keeps_its_source() {
    let mut sim = node(vec![nodeport(REMOTE_BACKEND)]);
    let sent = sim.ingress(ETH0, &syn(CLIENT, "192.0.2.1:30080")).packet;
    let err = IcmpErrorBuilder::time_exceeded(ip(ROUTER), ip(NODE4), &sent).build();
    let out = sim.ingress(ETH0, &err);
    assert_eq!(out.verdict, TO_CLIENT);
    let v = error_view(&out);
    assert_eq!((v.src, v.dst), (ip(ROUTER), ip("203.0.113.7")));
    assert_eq!(
        (v.quoted_src, v.quoted_dst),
        (sa(CLIENT), sa("192.0.2.1:30080"))
    );
    assert_eq!(v.icmp_type, 11);
}

#[test]
fn a_local_backends_port_unreachable_at_egress_gets_the_frontend_address() {
    let mut sim = node(vec![nodeport(LOCAL_BACKEND).udp()]);
    let dgram = PacketBuilder::udp(sa(CLIENT), sa("192.0.2.1:30080"))
        .payload(b"q")
        .build();
    let delivered = sim.ingress(ETH0, &dgram).packet;
    assert_eq!(view_of(&delivered).dst, sa(LOCAL_BACKEND));
    let err =
        IcmpErrorBuilder::port_unreachable(ip("10.0.1.5"), ip("203.0.113.7"), &delivered).build();
    let out = sim.egress(ETH0, &err);
    assert_eq!(out.verdict, Verdict::Pass);
    let v = error_view(&out);
    assert_eq!((v.src, v.dst), (ip(NODE4), ip("203.0.113.7")));
    assert_eq!(
        (v.quoted_src, v.quoted_dst),
        (sa(CLIENT), sa("192.0.2.1:30080"))
    );
    assert_eq!(
        (v.icmp_type, v.code, v.ttl),
        (3, 3, 64),
        "the kernel routes it on"
    );
}

fn view_of(frame: &[u8]) -> FrameView {
    FrameView::of(frame).expect("a TCP or UDP frame")
}

#[test]
fn an_ipv6_packet_too_big_about_a_snatted_packet_reaches_the_client_translated() {
    let mut sim = node(vec![
        svc("[::]:30081", ServiceType::NodePort).backend("[fd00:2::7]:8080")
    ]);
    let sent = sim
        .ingress(ETH0, &syn(CLIENT6, "[2001:db8::1]:30081"))
        .packet;
    for from in ["fd00:2::7", "2001:db8:ee::1"] {
        let err = IcmpErrorBuilder::packet_too_big(ip(from), ip(NODE6), &sent, 1280).build();
        let out = sim.ingress(ETH0, &err);
        assert_eq!(out.verdict, TO_CLIENT);
        let v = error_view(&out);
        let src = if from == "fd00:2::7" {
            ip(NODE6)
        } else {
            ip(from)
        };
        assert_eq!((v.src, v.dst), (src, ip("2001:db8:ff::7")), "from {from}");
        assert_eq!(
            (v.quoted_src, v.quoted_dst),
            (sa(CLIENT6), sa("[2001:db8::1]:30081"))
        );
        assert_eq!((v.icmp_type, v.ttl), (2, 63));
    }
}

#[test]
fn an_icmp_error_without_a_flow_passes_untouched() {
    let mut sim = node(vec![nodeport(REMOTE_BACKEND)]);
    let stranger =
        PacketBuilder::tcp(sa("192.0.2.1:61000"), sa(REMOTE_BACKEND), tcp_flags::SYN).build();
    let echo = IcmpErrorBuilder::new(ip(ROUTER), ip(NODE4), 8, 0, &stranger).build();
    for err in [
        IcmpErrorBuilder::frag_needed(ip(ROUTER), ip(NODE4), &stranger, 1300).build(),
        echo,
    ] {
        let out = sim.ingress(ETH0, &err);
        assert_eq!((out.verdict, &out.packet), (Verdict::Pass, &err));
        let out = sim.egress(ETH0, &err);
        assert_eq!((out.verdict, &out.packet), (Verdict::Pass, &err));
    }
}

#[test]
fn an_icmp_error_quoting_ipv4_options_or_cut_short_passes_untouched() {
    let mut sim = node(vec![nodeport(REMOTE_BACKEND)]);
    let with_options = PacketBuilder::tcp(sa(CLIENT), sa("192.0.2.1:30080"), tcp_flags::SYN)
        .ipv4_options(&[0x94, 0x04, 0, 0])
        .build();
    let sent = sim.ingress(ETH0, &with_options).packet;
    assert_eq!(view_of(&sent).src.ip(), ip(NODE4), "the flow is tracked");
    let quoting = IcmpErrorBuilder::frag_needed(ip(ROUTER), ip(NODE4), &sent, 1300).build();
    let out = sim.ingress(ETH0, &quoting);
    assert_eq!((out.verdict, &out.packet), (Verdict::Pass, &quoting));

    let plain = sim
        .ingress(ETH0, &syn("203.0.113.7:40001", "192.0.2.1:30080"))
        .packet;
    let short = IcmpErrorBuilder::frag_needed(ip(ROUTER), ip(NODE4), &plain, 1300)
        .quote(20 + 4)
        .build();
    let out = sim.ingress(ETH0, &short);
    assert_eq!((out.verdict, &out.packet), (Verdict::Pass, &short));
    // The same error, whole, is translated.
    let whole = IcmpErrorBuilder::frag_needed(ip(ROUTER), ip(NODE4), &plain, 1300).build();
    assert_eq!(sim.ingress(ETH0, &whole).verdict, TO_CLIENT);
}
