//! The same frontends at XDP (`loadBalancer.acceleration`): a forwarded flow leaves at once
//! (`XDP_REDIRECT`, or `XDP_TX` back out of the device it came in on); what XDP cannot finish,
//! a next hop whose MAC is unknown, it passes to tc with `redirect-neigh` in the metadata; what
//! it decided to pass carries `done`.

use ebpf::maps::svc_flags::NODE_PORT;
use ebpf::maps::xfer;
use lb::datapath::sim::packet_builder::tcp_flags;

use super::kernel::Hook;
use super::node::{remote_mac, CLIENTS_V4, NP0_V4, NP1_MAC, NP1_V4};
use super::nodeport::{reply_to, sock, svc, tcp};
use super::{At, Case, Check, Expect, Fixture};

pub(crate) fn fixture() -> Fixture {
    let client = |port| sock(CLIENTS_V4[1], port);
    Fixture {
        feature: "xdp",
        services: vec![
            svc(NP0_V4, 30080, NODE_PORT, &["10.0.1.5"]),
            svc(NP0_V4, 30081, NODE_PORT, &["198.51.100.11"]),
            svc(NP0_V4, 30082, NODE_PORT, &[]),
            svc(NP0_V4, 30083, NODE_PORT, &["198.51.100.20"]),
        ],
        cases: vec![
            Case {
                description: "a local backend's flow is translated and passed, tc told it is done",
                hook: Hook::Xdp,
                at: At::Np0,
                input: tcp(client(42000), sock(NP0_V4, 30080), tcp_flags::SYN),
                expect: Expect::Pass,
                checks: vec![
                    Check::Dst(sock("10.0.1.5", 8080)),
                    Check::Xfer(xfer::DONE, None),
                ],
            },
            Case {
                description: "a remote backend's flow is SNATed and redirected to the device \
                              towards it",
                hook: Hook::Xdp,
                at: At::Np0,
                input: tcp(client(42001), sock(NP0_V4, 30081), tcp_flags::SYN),
                expect: Expect::XdpRedirect,
                checks: vec![
                    Check::SrcIp(NP1_V4.parse().expect("an address")),
                    Check::SrcPortIn(61000, 65535),
                    Check::Dst(sock("198.51.100.11", 8080)),
                    Check::Ttl(63),
                    Check::Dmac(remote_mac(0x11)),
                    Check::Smac(NP1_MAC),
                ],
            },
            Case {
                description: "its reply, entering the other device, is redirected to the client",
                hook: Hook::Xdp,
                at: At::Np1,
                input: reply_to(1),
                expect: Expect::XdpRedirect,
                checks: vec![Check::Src(sock(NP0_V4, 30081)), Check::Dst(client(42001))],
            },
            Case {
                description: "a NodePort without endpoints is answered by XDP_TX with an ICMP \
                              port unreachable",
                hook: Hook::Xdp,
                at: At::Np0,
                input: tcp(client(42002), sock(NP0_V4, 30082), tcp_flags::SYN),
                expect: Expect::Tx,
                checks: vec![Check::Icmp {
                    ty: 3,
                    code: 3,
                    src: NP0_V4.parse().expect("an address"),
                    dst: CLIENTS_V4[1].parse().expect("an address"),
                }],
            },
            Case {
                description: "a backend whose MAC is unknown: translated, then passed to tc to \
                              resolve the neighbour",
                hook: Hook::Xdp,
                at: At::Np0,
                input: tcp(client(42003), sock(NP0_V4, 30083), tcp_flags::SYN),
                expect: Expect::Pass,
                checks: vec![
                    Check::Dst(sock("198.51.100.20", 8080)),
                    Check::SrcIp(NP1_V4.parse().expect("an address")),
                    Check::Xfer(xfer::REDIRECT_NEIGH, Some(At::Np1)),
                ],
            },
            Case {
                description: "a packet for no service passes untouched, tc told it is done",
                hook: Hook::Xdp,
                at: At::Np0,
                input: tcp(client(42004), sock(NP0_V4, 1234), tcp_flags::SYN),
                expect: Expect::Pass,
                checks: vec![Check::Unchanged, Check::Xfer(xfer::DONE, None)],
            },
        ],
    }
}
