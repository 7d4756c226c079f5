//! Who may use a frontend from outside: `externalTrafficPolicy: Local` on a node without local
//! endpoints drops (kube-proxy: "has no local endpoints"), and `loadBalancerSourceRanges` let
//! in only the clients inside them.

use ebpf::maps::svc_flags::{LOADBALANCER, NODE_PORT};
use lb::datapath::sim::packet_builder::tcp_flags;

use super::kernel::Hook;
use super::node::{CLIENTS_V4, NP0_V4};
use super::nodeport::{sock, svc, tcp};
use super::{At, Case, Check, Expect, Fixture, Svc};

pub(crate) fn fixture() -> Fixture {
    Fixture {
        feature: "policy",
        services: vec![
            Svc {
                no_local: true,
                ..svc(NP0_V4, 30090, NODE_PORT, &[])
            },
            Svc {
                source_ranges: &["192.0.2.0/25"],
                ..svc("203.0.113.20", 80, LOADBALANCER, &["10.0.1.5"])
            },
        ],
        cases: vec![
            Case {
                description: "externalTrafficPolicy Local without a local endpoint drops",
                hook: Hook::Ingress,
                at: At::Np0,
                input: tcp(
                    sock(CLIENTS_V4[0], 41000),
                    sock(NP0_V4, 30090),
                    tcp_flags::SYN,
                ),
                expect: Expect::Drop,
                checks: vec![],
            },
            Case {
                description: "a client inside loadBalancerSourceRanges reaches the backend",
                hook: Hook::Ingress,
                at: At::Np0,
                input: tcp(
                    sock(CLIENTS_V4[0], 41001),
                    sock("203.0.113.20", 80),
                    tcp_flags::SYN,
                ),
                expect: Expect::Pass,
                checks: vec![Check::Dst(sock("10.0.1.5", 8080))],
            },
            Case {
                description: "a client outside loadBalancerSourceRanges is dropped",
                hook: Hook::Ingress,
                at: At::Np0,
                input: tcp(
                    sock(CLIENTS_V4[2], 41002),
                    sock("203.0.113.20", 80),
                    tcp_flags::SYN,
                ),
                expect: Expect::Drop,
                checks: vec![],
            },
        ],
    }
}
