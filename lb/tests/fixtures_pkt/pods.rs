//! Pods' traffic at their interface (`socketLB.hostNamespaceOnly`): a ClusterIP is translated
//! on the way out of the pod and the reply given the ClusterIP back on the way in; a NodePort on
//! the node's address is served too; a service without endpoints is rejected; an externalIP
//! that is not the node's stays untranslated (the CVE-2020-8554 mitigation).

use ebpf::maps::svc_flags::{CLUSTER_IP, EXTERNAL_IP, NODE_PORT};
use lb::datapath::sim::packet_builder::tcp_flags;

use super::kernel::Hook;
use super::node::NP0_V4;
use super::nodeport::{reply_to, sock, svc, tcp};
use super::{At, Case, Check, Expect, Fixture};

const POD: &str = "10.0.1.50";

pub(crate) fn fixture() -> Fixture {
    Fixture {
        feature: "pods",
        services: vec![
            svc("10.96.0.10", 80, CLUSTER_IP, &["198.51.100.10"]),
            svc("10.96.0.11", 80, CLUSTER_IP, &[]),
            svc(NP0_V4, 30080, NODE_PORT, &["10.0.1.6"]),
            svc("203.0.113.11", 80, EXTERNAL_IP, &["10.0.1.6"]),
        ],
        cases: vec![
            Case {
                description: "a pod's SYN to a ClusterIP goes to the backend from the pod's \
                              address",
                hook: Hook::PodIngress,
                at: At::Pod,
                input: tcp(sock(POD, 43000), sock("10.96.0.10", 80), tcp_flags::SYN),
                expect: Expect::Pass,
                checks: vec![
                    Check::Src(sock(POD, 43000)),
                    Check::Dst(sock("198.51.100.10", 8080)),
                ],
            },
            Case {
                description: "the backend's reply enters the pod from the ClusterIP",
                hook: Hook::Egress,
                at: At::Pod,
                input: reply_to(0),
                expect: Expect::Pass,
                checks: vec![
                    Check::Src(sock("10.96.0.10", 80)),
                    Check::Dst(sock(POD, 43000)),
                ],
            },
            Case {
                description: "a ClusterIP without endpoints answers the pod with an ICMP port \
                              unreachable",
                hook: Hook::PodIngress,
                at: At::Pod,
                input: tcp(sock(POD, 43001), sock("10.96.0.11", 80), tcp_flags::SYN),
                expect: Expect::Redirect,
                checks: vec![Check::Icmp {
                    ty: 3,
                    code: 3,
                    src: "10.96.0.11".parse().expect("an address"),
                    dst: POD.parse().expect("an address"),
                }],
            },
            Case {
                description: "a NodePort on the node's address is served to a pod",
                hook: Hook::PodIngress,
                at: At::Pod,
                input: tcp(sock(POD, 43002), sock(NP0_V4, 30080), tcp_flags::SYN),
                expect: Expect::Pass,
                checks: vec![Check::Dst(sock("10.0.1.6", 8080))],
            },
            Case {
                description: "an externalIP that is not the node's stays untranslated",
                hook: Hook::PodIngress,
                at: At::Pod,
                input: tcp(sock(POD, 43003), sock("203.0.113.11", 80), tcp_flags::SYN),
                expect: Expect::Pass,
                checks: vec![Check::Unchanged],
            },
        ],
    }
}
