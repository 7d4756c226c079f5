//! NodePort, LoadBalancer and ClusterIP frontends at tc, from outside the cluster: the
//! documents' "Client Source IP Preservation" (a local backend sees the client), SNAT mode (a
//! remote backend sees the node), kube-proxy's REJECT for a service without endpoints, and
//! `bpf.lbExternalClusterIP`'s default.

use std::net::SocketAddr;

use ebpf::maps::svc_flags::{CLUSTER_IP, LOADBALANCER, NODE_PORT};
use lb::datapath::sim::packet_builder::{tcp_flags, FrameView, PacketBuilder};

use super::kernel::Hook;
use super::node::{remote_mac, CLIENTS_V4, NP0_MAC, NP0_V4, NP1_MAC, NP1_V4};
use super::{At, Case, Check, Expect, Fixture, Input, Svc};

const PAYLOAD: &[u8] = b"0123456789abcdef";

pub(crate) fn sock(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().expect("an address constant"), port)
}

/// A client's TCP packet.
pub(crate) fn tcp(src: SocketAddr, dst: SocketAddr, flags: u8) -> Input {
    Box::new(move |_| PacketBuilder::tcp(src, dst, flags).payload(PAYLOAD).build())
}

/// The answer to what case `k` sent: addresses and ports swapped, as its receiver replies.
pub(crate) fn reply_to(k: usize) -> Input {
    Box::new(move |outputs| {
        let view = FrameView::of(&outputs[k]).expect("case k sent TCP");
        PacketBuilder::tcp(view.dst, view.src, tcp_flags::ACK)
            .payload(PAYLOAD)
            .build()
    })
}

pub(crate) fn svc(
    frontend: &'static str,
    port: u16,
    flags: u8,
    backends: &'static [&'static str],
) -> Svc {
    Svc {
        frontend,
        port,
        udp: false,
        flags,
        backends,
        no_local: false,
        source_ranges: &[],
    }
}

pub(crate) fn fixture() -> Fixture {
    let client = |port| sock(CLIENTS_V4[0], port);
    Fixture {
        feature: "nodeport",
        services: vec![
            svc(NP0_V4, 30080, NODE_PORT, &["10.0.1.5"]),
            svc(NP0_V4, 30081, NODE_PORT, &["198.51.100.10"]),
            svc(NP0_V4, 30082, NODE_PORT, &[]),
            svc("203.0.113.10", 80, LOADBALANCER, &["10.0.1.6"]),
            svc("10.96.0.10", 80, CLUSTER_IP, &["10.0.1.5"]),
        ],
        cases: vec![
            Case {
                description: "a SYN to a NodePort with a local backend reaches it with the \
                              client's address",
                hook: Hook::Ingress,
                at: At::Np0,
                input: tcp(client(40000), sock(NP0_V4, 30080), tcp_flags::SYN),
                expect: Expect::Pass,
                checks: vec![
                    Check::Src(client(40000)),
                    Check::Dst(sock("10.0.1.5", 8080)),
                ],
            },
            Case {
                description: "the local backend's reply leaves with the NodePort's address",
                hook: Hook::Egress,
                at: At::Np0,
                input: reply_to(0),
                expect: Expect::Pass,
                checks: vec![Check::Src(sock(NP0_V4, 30080)), Check::Dst(client(40000))],
            },
            Case {
                description: "a SYN to a NodePort whose backend is on another node leaves SNATed \
                              to the node's address towards it, forwarded by the program",
                hook: Hook::Ingress,
                at: At::Np0,
                input: tcp(client(40001), sock(NP0_V4, 30081), tcp_flags::SYN),
                expect: Expect::Redirect,
                checks: vec![
                    Check::SrcIp(NP1_V4.parse().expect("an address")),
                    Check::SrcPortIn(61000, 65535),
                    Check::Dst(sock("198.51.100.10", 8080)),
                    Check::Ttl(63),
                    Check::Dmac(remote_mac(0x10)),
                    Check::Smac(NP1_MAC),
                ],
            },
            Case {
                description: "the remote backend's reply goes back to the client from the \
                              NodePort",
                hook: Hook::Ingress,
                at: At::Np1,
                input: reply_to(2),
                expect: Expect::Redirect,
                checks: vec![
                    Check::Src(sock(NP0_V4, 30081)),
                    Check::Dst(client(40001)),
                    Check::Ttl(63),
                    Check::Smac(NP0_MAC),
                ],
            },
            Case {
                description: "a NodePort without endpoints answers with an ICMP port unreachable \
                              from its address",
                hook: Hook::Ingress,
                at: At::Np0,
                input: tcp(client(40002), sock(NP0_V4, 30082), tcp_flags::SYN),
                expect: Expect::Redirect,
                checks: vec![Check::Icmp {
                    ty: 3,
                    code: 3,
                    src: NP0_V4.parse().expect("an address"),
                    dst: CLIENTS_V4[0].parse().expect("an address"),
                }],
            },
            Case {
                description: "a LoadBalancer IP is served as a NodePort is",
                hook: Hook::Ingress,
                at: At::Np0,
                input: tcp(client(40003), sock("203.0.113.10", 80), tcp_flags::SYN),
                expect: Expect::Pass,
                checks: vec![Check::Dst(sock("10.0.1.6", 8080))],
            },
            Case {
                description: "a ClusterIP is not served from outside (bpf.lbExternalClusterIP \
                              off)",
                hook: Hook::Ingress,
                at: At::Np0,
                input: tcp(client(40004), sock("10.96.0.10", 80), tcp_flags::SYN),
                expect: Expect::Pass,
                checks: vec![Check::Unchanged],
            },
            Case {
                description: "a packet to a port no service uses passes untouched",
                hook: Hook::Ingress,
                at: At::Np0,
                input: tcp(client(40005), sock(NP0_V4, 1234), tcp_flags::SYN),
                expect: Expect::Pass,
                checks: vec![Check::Unchanged],
            },
            Case {
                description: "a later fragment passes untouched (it has no ports to look up)",
                hook: Hook::Ingress,
                at: At::Np0,
                input: Box::new(move |_| {
                    PacketBuilder::tcp(client(40006), sock(NP0_V4, 30080), tcp_flags::ACK)
                        .fragment(64, false)
                        .payload(PAYLOAD)
                        .build()
                }),
                expect: Expect::Pass,
                checks: vec![Check::Unchanged],
            },
        ],
    }
}
