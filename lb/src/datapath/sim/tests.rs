//! One test per rule of the socket datapath, named for what a user of the node observes.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ebpf::maps::trace_kind;
use nix::errno::Errno;

use super::{HeldSocket, SimConfig, SockCall, SockSim};
use crate::config::Protocols;
use crate::datapath::{MapContents, RemovedBackends};
use crate::model::{
    Backend, BackendState, DesiredState, Frontend, L3n4Addr, L4Protocol, LbService, Scope,
    ServiceName, ServicePolicies, ServiceType,
};

const HOST_NS: u64 = 4096;
const POD_NS: u64 = 8192;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn set(addrs: &[&str]) -> BTreeSet<SocketAddr> {
    addrs.iter().map(|a| sa(a)).collect()
}

/// A service builder: `svc("10.96.0.1:80", ClusterIP).backend("127.0.0.2:8080")`.
pub(super) struct Svc(LbService);

pub(super) fn svc(frontend: &str, kind: ServiceType) -> Svc {
    Svc(LbService {
        frontend: Frontend::external(frontend.parse().unwrap(), kind),
        name: ServiceName {
            namespace: "default".into(),
            name: "svc".into(),
        },
        port_name: String::new(),
        no_local_backends: false,
        backends: Vec::new(),
        policies: ServicePolicies::default(),
    })
}

impl Svc {
    pub(super) fn backend(self, addr: &str) -> Self {
        self.backend_in(addr, BackendState::Active)
    }

    fn terminating(self, addr: &str) -> Self {
        self.backend_in(addr, BackendState::Terminating)
    }

    fn backend_in(mut self, addr: &str, state: BackendState) -> Self {
        let mut a: L3n4Addr = addr.parse().unwrap();
        a.protocol = self.0.frontend.addr.protocol;
        self.0.backends.push(Backend {
            state,
            ..Backend::active(a)
        });
        self
    }

    fn affinity(mut self, secs: u32) -> Self {
        self.0.policies.session_affinity_timeout_secs = Some(secs);
        self
    }

    /// A UDP frontend; call before adding backends, which take its protocol.
    pub(super) fn udp(mut self) -> Self {
        self.0.frontend.addr.protocol = L4Protocol::Udp;
        self
    }

    pub(super) fn internal(mut self) -> Self {
        self.0.frontend.scope = Scope::Internal;
        self
    }
}

pub(super) fn maps(services: Vec<Svc>) -> MapContents {
    let mut desired = DesiredState::new();
    for s in services {
        desired.insert(s.0).map_err(|_| "duplicate").unwrap();
    }
    MapContents::build(&desired, &MapContents::default()).unwrap()
}

fn config() -> SimConfig {
    SimConfig {
        protocols: Protocols {
            tcp: true,
            udp: true,
        },
        host_namespace_only: false,
        bind_protection: true,
        host_netns_cookie: 0,
        external_ip_mitigation: true,
        netns_cookies: true,
        sock_v6only: true,
        initial_netns_cookie: HOST_NS,
        map_max: crate::config::DEFAULT_LB_MAP_MAX,
    }
}

fn sim(services: Vec<Svc>) -> SockSim {
    SockSim::new(config(), maps(services))
}

fn tcp(socket_cookie: u64) -> SockCall {
    SockCall {
        netns_cookie: HOST_NS,
        socket_cookie,
        cgroup_id: 77,
        protocol: L4Protocol::Tcp,
        v6only: false,
    }
}

fn udp(socket_cookie: u64) -> SockCall {
    SockCall {
        protocol: L4Protocol::Udp,
        ..tcp(socket_cookie)
    }
}

fn in_pod(call: SockCall) -> SockCall {
    SockCall {
        netns_cookie: POD_NS,
        ..call
    }
}

/// Where `n` fresh sockets connecting to `dst` went.
fn destinations(sim: &mut SockSim, call: SockCall, dst: &str, n: u64) -> BTreeSet<SocketAddr> {
    (0..n)
        .map(|i| {
            sim.connect(
                &SockCall {
                    socket_cookie: 1000 + i,
                    ..call
                },
                sa(dst),
            )
        })
        .collect()
}

fn web() -> Svc {
    svc("10.96.0.1:80", ServiceType::ClusterIP)
        .backend("127.0.0.2:8080")
        .backend("127.0.0.3:8080")
}

#[test]
fn connecting_to_a_clusterip_reaches_a_backend_and_getpeername_shows_the_service() {
    let mut s = sim(vec![web()]);
    let to = s.connect(&tcp(1), sa("10.96.0.1:80"));
    assert!(set(&["127.0.0.2:8080", "127.0.0.3:8080"]).contains(&to));
    assert_eq!(s.peer_name(&tcp(1), to), sa("10.96.0.1:80"));
}

#[test]
fn a_socket_reconnected_straight_to_the_backend_no_longer_shows_the_service() {
    let mut s = sim(vec![web()]);
    let to = s.connect(&tcp(1), sa("10.96.0.1:80"));
    assert_eq!(s.peer_name(&tcp(1), to), sa("10.96.0.1:80"));
    // The same socket connects again, to the backend's own address: no service was asked for.
    assert_eq!(s.connect(&tcp(1), to), to);
    assert_eq!(s.peer_name(&tcp(1), to), to);
}

#[test]
fn an_unconnected_send_keeps_a_translation_per_destination() {
    let mut s = sim(vec![svc("10.96.0.10:53", ServiceType::ClusterIP)
        .udp()
        .backend("127.0.0.2:5353")]);
    let to = s.sendmsg(&udp(1), sa("10.96.0.10:53"));
    assert_eq!(to, sa("127.0.0.2:5353"));
    // A later connect elsewhere does not make the send's replies show the backend.
    assert_eq!(s.connect(&udp(1), sa("192.0.2.7:9")), sa("192.0.2.7:9"));
    assert_eq!(s.peer_name(&udp(1), to), sa("10.96.0.10:53"));
}

#[test]
fn every_active_backend_is_used_and_the_same_seed_makes_the_same_choices() {
    let mut a = sim(vec![web()]).with_seed(7);
    let mut b = sim(vec![web()]).with_seed(7);
    let seq = |s: &mut SockSim| -> Vec<SocketAddr> {
        (0..64)
            .map(|i| s.connect(&tcp(i), sa("10.96.0.1:80")))
            .collect()
    };
    let (first, second) = (seq(&mut a), seq(&mut b));
    assert_eq!(first, second);
    let used: BTreeSet<SocketAddr> = first.into_iter().collect();
    assert_eq!(used, set(&["127.0.0.2:8080", "127.0.0.3:8080"]));
}

#[test]
fn terminating_backends_keep_no_new_connections() {
    let mut s = sim(vec![svc("10.96.0.1:80", ServiceType::ClusterIP)
        .terminating("127.0.0.9:8080")
        .backend("127.0.0.2:8080")
        .terminating("127.0.0.8:8080")]);
    assert_eq!(
        s.candidates(&tcp(1), sa("10.96.0.1:80")),
        Some(set(&["127.0.0.2:8080"]))
    );
    assert_eq!(
        destinations(&mut s, tcp(0), "10.96.0.1:80", 32),
        set(&["127.0.0.2:8080"])
    );
}

#[test]
fn a_service_without_active_backends_leaves_the_address_alone() {
    let mut s = sim(vec![
        svc("10.96.0.1:80", ServiceType::ClusterIP).terminating("127.0.0.9:8080"),
        svc("10.96.0.2:80", ServiceType::ClusterIP),
    ]);
    for dst in ["10.96.0.1:80", "10.96.0.2:80"] {
        assert_eq!(s.candidates(&tcp(1), sa(dst)), None);
        assert_eq!(s.connect(&tcp(1), sa(dst)), sa(dst));
        assert_eq!(s.peer_name(&tcp(1), sa(dst)), sa(dst));
    }
}

#[test]
fn addresses_that_are_no_service_are_left_alone() {
    let mut s = sim(vec![web()]);
    for dst in [
        "10.96.0.1:81",
        "10.96.0.9:80",
        "127.0.0.2:8080",
        "[fd00::1]:80",
    ] {
        assert_eq!(s.connect(&tcp(1), sa(dst)), sa(dst));
    }
    assert_eq!(
        s.connect(&udp(1), sa("10.96.0.1:80")),
        sa("10.96.0.1:80"),
        "the service is TCP only"
    );
}

#[test]
fn a_protocol_left_out_of_host_services_is_not_translated() {
    let mut s = SockSim::new(
        SimConfig {
            protocols: Protocols {
                tcp: true,
                udp: false,
            },
            ..config()
        },
        maps(vec![
            web(),
            svc("10.96.0.1:53/UDP", ServiceType::ClusterIP).backend("127.0.0.2:5353"),
        ]),
    );
    assert_eq!(s.connect(&udp(1), sa("10.96.0.1:53")), sa("10.96.0.1:53"));
    assert_ne!(s.connect(&tcp(2), sa("10.96.0.1:80")), sa("10.96.0.1:80"));
}

#[test]
fn host_namespace_only_leaves_pods_alone_in_both_directions() {
    let cfg = SimConfig {
        host_namespace_only: true,
        ..config()
    };
    // host_netns_cookie 0 stands for the initial namespace.
    let mut s = SockSim::new(cfg, maps(vec![web()]));
    assert_eq!(
        s.connect(&in_pod(tcp(1)), sa("10.96.0.1:80")),
        sa("10.96.0.1:80")
    );
    let to = s.connect(&tcp(2), sa("10.96.0.1:80"));
    assert_ne!(to, sa("10.96.0.1:80"));
    // A pod socket with the same cookie as a translated one is not reverse-translated either.
    assert_eq!(s.peer_name(&in_pod(tcp(2)), to), to);
    // An explicit host namespace cookie replaces the initial one.
    let mut pods = SockSim::new(
        SimConfig {
            host_netns_cookie: POD_NS,
            ..cfg
        },
        maps(vec![web()]),
    );
    assert_ne!(
        pods.connect(&in_pod(tcp(1)), sa("10.96.0.1:80")),
        sa("10.96.0.1:80")
    );
    assert_eq!(
        pods.connect(&tcp(2), sa("10.96.0.1:80")),
        sa("10.96.0.1:80")
    );
}

#[test]
fn sockets_use_the_internal_scope_when_the_traffic_policies_differ() {
    let ext = svc("0.0.0.0:30080", ServiceType::NodePort)
        .backend("127.0.0.2:8080")
        .backend("127.0.0.3:8080");
    let int = svc("0.0.0.0:30080", ServiceType::NodePort)
        .internal()
        .backend("127.0.0.4:8080");
    let mut s = sim(vec![ext, int]);
    assert_eq!(
        destinations(&mut s, tcp(0), "127.0.0.1:30080", 16),
        set(&["127.0.0.4:8080"])
    );
    // An external frontend flagged with a twin that is missing translates nothing.
    let mut lone = maps(vec![web()]);
    for (_, v) in lone
        .services
        .iter_mut()
        .filter(|(k, _)| k.backend_slot == 0)
    {
        v.flags |= ebpf::maps::svc_flags::TWO_SCOPES;
    }
    let mut s = SockSim::new(config(), lone);
    assert_eq!(s.connect(&tcp(1), sa("10.96.0.1:80")), sa("10.96.0.1:80"));
}

#[test]
fn a_nodeport_answers_on_loopback_and_node_addresses() {
    let mut s = sim(vec![
        svc("0.0.0.0:30080", ServiceType::NodePort).backend("127.0.0.2:8080"),
        svc("[::]:30080", ServiceType::NodePort).backend("[::1]:8080"),
    ]);
    for dst in ["127.0.0.1:30080", "127.3.4.5:30080", "0.0.0.0:30080"] {
        assert_eq!(s.connect(&tcp(1), sa(dst)), sa("127.0.0.2:8080"), "{dst}");
    }
    assert_eq!(s.connect(&tcp(1), sa("[::1]:30080")), sa("[::1]:8080"));
    assert_eq!(
        s.connect(&tcp(1), sa("192.0.2.1:30080")),
        sa("192.0.2.1:30080"),
        "not a node address yet"
    );
    s.set_local_addresses(&["192.0.2.1".parse::<IpAddr>().unwrap()]);
    assert_eq!(
        s.connect(&tcp(2), sa("192.0.2.1:30080")),
        sa("127.0.0.2:8080")
    );
    // What the application asked for is what it is shown.
    assert_eq!(
        s.peer_name(&tcp(2), sa("127.0.0.2:8080")),
        sa("192.0.2.1:30080")
    );
    assert_eq!(
        s.connect(&tcp(3), sa("127.0.0.1:30081")),
        sa("127.0.0.1:30081"),
        "another port"
    );
}

#[test]
fn inside_a_pod_loopback_is_the_pods_own_but_node_addresses_are_the_nodes() {
    let mut s = sim(vec![
        svc("0.0.0.0:30080", ServiceType::NodePort).backend("10.0.0.2:8080"),
        svc("0.0.0.0:8081", ServiceType::HostPort).backend("10.0.0.3:80"),
        svc("[::]:30080", ServiceType::NodePort).backend("[fd00::2]:8080"),
    ]);
    s.set_local_addresses(&["192.0.2.1".parse::<IpAddr>().unwrap()]);
    for dst in [
        "127.0.0.1:30080",
        "127.0.0.1:8081",
        "[::1]:30080",
        "10.0.0.9:30080",
    ] {
        assert_eq!(
            s.connect(&in_pod(tcp(1)), sa(dst)),
            sa(dst),
            "{dst} from a pod"
        );
    }
    assert_eq!(
        s.connect(&in_pod(tcp(2)), sa("192.0.2.1:30080")),
        sa("10.0.0.2:8080"),
        "the node's address is the node's from anywhere"
    );
    assert_eq!(
        s.connect(&tcp(3), sa("127.0.0.1:30080")),
        sa("10.0.0.2:8080")
    );
    assert_eq!(s.connect(&tcp(4), sa("127.0.0.1:8081")), sa("10.0.0.3:80"));
    assert_eq!(s.connect(&tcp(5), sa("[::1]:30080")), sa("[fd00::2]:8080"));
}

#[test]
fn a_hostport_answers_on_loopback_but_a_wildcard_clusterip_does_not() {
    let mut s = sim(vec![
        svc("0.0.0.0:8081", ServiceType::HostPort).backend("127.0.0.2:80"),
        svc("0.0.0.0:8082", ServiceType::ClusterIP).backend("127.0.0.3:80"),
    ]);
    assert_eq!(s.connect(&tcp(1), sa("127.0.0.1:8081")), sa("127.0.0.2:80"));
    assert_eq!(
        s.connect(&tcp(2), sa("127.0.0.1:8082")),
        sa("127.0.0.1:8082")
    );
}

#[test]
fn a_dual_stack_socket_reaches_an_ipv4_service_through_its_mapped_address() {
    let mut s = sim(vec![web()]);
    let to = s.connect(&tcp(1), sa("[::ffff:10.96.0.1]:80"));
    assert!(set(&["[::ffff:127.0.0.2]:8080", "[::ffff:127.0.0.3]:8080"]).contains(&to));
    assert_eq!(s.peer_name(&tcp(1), to), sa("[::ffff:10.96.0.1]:80"));
}

#[test]
fn an_ipv4_socket_is_left_alone_when_the_backend_is_ipv6() {
    // The agent never pairs families so; the program must still fail safe.
    let mut m = maps(vec![
        svc("10.96.0.1:80", ServiceType::ClusterIP).backend("127.0.0.2:8080")
    ]);
    for b in m.backends.values_mut() {
        b.address = "::1".parse::<IpAddr>().unwrap().into();
    }
    let mut s = SockSim::new(config(), m);
    s.set_monitor(true);
    assert_eq!(s.connect(&tcp(1), sa("10.96.0.1:80")), sa("10.96.0.1:80"));
    // The store was refused, so no reverse entry claims the socket went to the backend, and
    // no event says it was translated.
    assert_eq!(s.peer_name(&tcp(1), sa("[::1]:8080")), sa("[::1]:8080"));
    let kinds: Vec<u8> = s.take_events().iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [trace_kind::PRE_XLATE_FWD]);
    assert_eq!(
        s.connect(&tcp(1), sa("[::ffff:10.96.0.1]:80")),
        sa("[::1]:8080")
    );
}

#[test]
fn session_affinity_keeps_a_client_on_its_backend_until_it_is_idle_too_long() {
    let many = || {
        svc("10.96.0.1:80", ServiceType::ClusterIP)
            .backend("127.0.0.2:8080")
            .backend("127.0.0.3:8080")
            .backend("127.0.0.4:8080")
            .backend("127.0.0.5:8080")
            .affinity(60)
    };
    let mut s = sim(vec![many()]);
    let first = s.connect(&tcp(1), sa("10.96.0.1:80"));
    assert_eq!(s.affinity_target(&tcp(9), sa("10.96.0.1:80")), Some(first));
    assert_eq!(
        destinations(&mut s, tcp(0), "10.96.0.1:80", 16),
        BTreeSet::from([first])
    );
    // Each use refreshes it: 50 s, use, 50 s is still within 60 s of the last use.
    s.advance_clock(Duration::from_secs(50));
    assert_eq!(s.connect(&tcp(2), sa("10.96.0.1:80")), first);
    s.advance_clock(Duration::from_secs(50));
    assert_eq!(s.affinity_target(&tcp(3), sa("10.96.0.1:80")), Some(first));
    // Idle past the timeout: a fresh choice, over time every backend.
    s.advance_clock(Duration::from_secs(61));
    assert_eq!(s.affinity_target(&tcp(3), sa("10.96.0.1:80")), None);
    let mut seen = BTreeSet::new();
    for i in 0..64 {
        seen.insert(s.connect(&tcp(100 + i), sa("10.96.0.1:80")));
        s.advance_clock(Duration::from_secs(61));
    }
    assert_eq!(seen.len(), 4);
}

#[test]
fn session_affinity_is_per_client_namespace_and_per_service() {
    let mut s = sim(vec![web().affinity(600)]);
    let host = s.connect(&tcp(1), sa("10.96.0.1:80"));
    let pod = s.connect(&in_pod(tcp(2)), sa("10.96.0.1:80"));
    assert_eq!(s.affinity_target(&tcp(3), sa("10.96.0.1:80")), Some(host));
    assert_eq!(
        s.affinity_target(&in_pod(tcp(3)), sa("10.96.0.1:80")),
        Some(pod)
    );
    // Without affinity nothing is pinned.
    let s = sim(vec![web()]);
    assert_eq!(s.affinity_target(&tcp(1), sa("10.96.0.1:80")), None);
}

#[test]
fn session_affinity_ends_when_its_backend_leaves_or_terminates() {
    let mut s = sim(vec![svc("10.96.0.1:80", ServiceType::ClusterIP)
        .backend("127.0.0.2:8080")
        .affinity(600)]);
    assert_eq!(s.connect(&tcp(1), sa("10.96.0.1:80")), sa("127.0.0.2:8080"));
    // The backend terminates: its slot moves past the active ones, the pin is dropped.
    let reconciled = |s: &SockSim, svc: Svc| {
        let mut desired = DesiredState::new();
        desired.insert(svc.0).map_err(|_| "duplicate").unwrap();
        MapContents::build(&desired, s.maps()).unwrap()
    };
    let next = reconciled(
        &s,
        svc("10.96.0.1:80", ServiceType::ClusterIP)
            .terminating("127.0.0.2:8080")
            .backend("127.0.0.3:8080")
            .affinity(600),
    );
    s.set_maps(next);
    assert_eq!(s.affinity_target(&tcp(2), sa("10.96.0.1:80")), None);
    assert_eq!(s.connect(&tcp(2), sa("10.96.0.1:80")), sa("127.0.0.3:8080"));
    // Another backend takes the recorded slot: not the same backend, so not reused.
    let next = reconciled(
        &s,
        svc("10.96.0.1:80", ServiceType::ClusterIP)
            .backend("127.0.0.4:8080")
            .affinity(600),
    );
    s.set_maps(next);
    assert_eq!(s.affinity_target(&tcp(3), sa("10.96.0.1:80")), None);
    assert_eq!(s.connect(&tcp(3), sa("10.96.0.1:80")), sa("127.0.0.4:8080"));
}

/// The maps after the agent reconciles `services`, keeping the ids `s` has.
fn reconcile(s: &SockSim, services: Vec<Svc>) -> MapContents {
    let mut desired = DesiredState::new();
    for svc in services {
        desired.insert(svc.0).map_err(|_| "duplicate").unwrap();
    }
    MapContents::build(&desired, s.maps()).unwrap()
}

#[test]
fn session_affinity_follows_its_backend_through_unrelated_endpoint_churn() {
    let with = |backends: &[&str]| {
        let mut svc = svc("10.96.0.1:80", ServiceType::ClusterIP).affinity(600);
        for b in backends {
            svc = svc.backend(b);
        }
        svc
    };
    let mut s = sim(vec![with(&["127.0.0.3:8080", "127.0.0.4:8080"])]);
    let pinned = s.connect(&tcp(1), sa("10.96.0.1:80"));
    // A lower-addressed backend joins (every slot moves up), then leaves again.
    for backends in [
        &[
            "127.0.0.1:8080",
            "127.0.0.2:8080",
            "127.0.0.3:8080",
            "127.0.0.4:8080",
        ][..],
        &["127.0.0.3:8080", "127.0.0.4:8080"][..],
        &["127.0.0.4:8080", "127.0.0.3:8080", "127.0.0.9:8080"][..],
    ] {
        let next = reconcile(&s, vec![with(backends)]);
        s.set_maps(next);
        assert_eq!(
            s.affinity_target(&tcp(2), sa("10.96.0.1:80")),
            Some(pinned),
            "{backends:?}"
        );
        assert_eq!(
            destinations(&mut s, tcp(0), "10.96.0.1:80", 8),
            BTreeSet::from([pinned])
        );
    }
}

#[test]
fn session_affinity_is_per_service_port() {
    let port = |p: u16| {
        svc(&format!("10.96.0.1:{p}"), ServiceType::ClusterIP)
            .backend("127.0.0.2:8080")
            .backend("127.0.0.3:8080")
            .affinity(600)
    };
    let mut s = sim(vec![port(80), port(81)]);
    let mut first = |slots: &[SocketAddr]| {
        assert_eq!(slots.len(), 2);
        0
    };
    let mut second = |_: &[SocketAddr]| 1;
    let on_80 = s.connect_with(&tcp(1), sa("10.96.0.1:80"), &mut first);
    let on_81 = s.connect_with(&tcp(2), sa("10.96.0.1:81"), &mut second);
    assert_ne!(on_80, on_81);
    assert_eq!(s.affinity_target(&tcp(3), sa("10.96.0.1:80")), Some(on_80));
    assert_eq!(s.affinity_target(&tcp(3), sa("10.96.0.1:81")), Some(on_81));
}

#[test]
fn session_affinity_expires_exactly_after_its_timeout() {
    let mut s = sim(vec![web().affinity(2)]);
    let pinned = s.connect(&tcp(1), sa("10.96.0.1:80"));
    s.advance_clock(Duration::from_secs(2));
    assert_eq!(s.affinity_target(&tcp(2), sa("10.96.0.1:80")), Some(pinned));
    s.advance_clock(Duration::from_nanos(1));
    assert_eq!(s.affinity_target(&tcp(2), sa("10.96.0.1:80")), None);
    assert_eq!(
        s.affinity_last_use(&tcp(2), sa("10.96.0.1:80")),
        Some((0, 2_000_000_000))
    );
}

#[test]
fn only_the_translated_socket_sees_the_service_as_its_peer() {
    let mut s = sim(vec![web()]);
    let to = s.connect(&tcp(1), sa("10.96.0.1:80"));
    assert_eq!(s.peer_name(&tcp(2), to), to, "another socket");
    let other = if to == sa("127.0.0.2:8080") {
        sa("127.0.0.3:8080")
    } else {
        sa("127.0.0.2:8080")
    };
    assert_eq!(s.peer_name(&tcp(1), other), other, "another peer");
}

#[test]
fn an_unconnected_udp_reply_comes_from_the_service() {
    let mut s = sim(vec![
        svc("10.96.0.1:53/UDP", ServiceType::ClusterIP).backend("127.0.0.2:5353")
    ]);
    let to = s.connect(&udp(5), sa("10.96.0.1:53"));
    assert_eq!(to, sa("127.0.0.2:5353"));
    assert_eq!(s.peer_name(&udp(5), to), sa("10.96.0.1:53"));
}

#[test]
fn once_the_service_is_gone_the_application_sees_the_backend() {
    let mut s = sim(vec![web()]);
    let to = s.connect(&tcp(1), sa("10.96.0.1:80"));
    s.set_maps(MapContents::default());
    assert_eq!(s.peer_name(&tcp(1), to), to);
    // Its id now names another frontend: the backend too.
    let mut s = sim(vec![web()]);
    let to = s.connect(&tcp(1), sa("10.96.0.1:80"));
    let mut other = s.maps().clone();
    for rev in other.reverse_nat.values_mut() {
        *rev = ebpf::maps::LbReverseNat::new("10.96.0.7".parse().unwrap(), 80);
    }
    s.set_maps(other.clone());
    assert_eq!(s.peer_name(&tcp(1), to), to);
    for rev in other.reverse_nat.values_mut() {
        *rev = ebpf::maps::LbReverseNat::new("10.96.0.1".parse().unwrap(), 81);
    }
    s.set_maps(other);
    assert_eq!(s.peer_name(&tcp(1), to), to);
}

fn protected() -> SockSim {
    sim(vec![
        svc("0.0.0.0:30080", ServiceType::NodePort).backend("127.0.0.2:8080"),
        svc("[::]:30090", ServiceType::NodePort).backend("[::1]:8080"),
        svc("0.0.0.0:8081", ServiceType::HostPort).backend("127.0.0.2:80"),
        svc("10.96.0.1:80", ServiceType::ClusterIP).backend("127.0.0.2:8080"),
        svc("203.0.113.1:443", ServiceType::ExternalIPs).backend("127.0.0.2:8443"),
        svc("198.51.100.1:443", ServiceType::LoadBalancer).backend("127.0.0.2:8443"),
    ])
}

#[test]
fn bind_protection_refuses_nodeport_ports_on_every_node_address() {
    let mut s = protected();
    for local in [
        "0.0.0.0:30080",
        "127.0.0.1:30080",
        "[::]:30090",
        "[::1]:30090",
    ] {
        assert_eq!(s.bind(&tcp(1), sa(local)), Err(Errno::EPERM), "{local}");
    }
    assert_eq!(
        s.bind(&tcp(1), sa("[::]:30080")),
        Err(Errno::EPERM),
        ":: takes IPv4 too on a dual-stack socket"
    );
    assert_eq!(s.bind(&tcp(1), sa("192.0.2.1:30080")), Ok(()));
    s.set_local_addresses(&["192.0.2.1".parse::<IpAddr>().unwrap()]);
    assert_eq!(s.bind(&tcp(1), sa("192.0.2.1:30080")), Err(Errno::EPERM));
    assert_eq!(
        s.bind(&udp(1), sa("0.0.0.0:30080")),
        Ok(()),
        "the NodePort is TCP"
    );
}

#[test]
fn a_v6only_bind_to_the_ipv6_wildcard_is_checked_against_ipv6_frontends_only() {
    let s = protected();
    let v6only = SockCall {
        v6only: true,
        ..tcp(1)
    };
    assert_eq!(s.bind(&v6only, sa("[::]:30080")), Ok(()), "takes no IPv4");
    assert_eq!(s.bind(&v6only, sa("[::]:30090")), Err(Errno::EPERM));
    assert_eq!(s.bind(&tcp(1), sa("[::]:30080")), Err(Errno::EPERM));
    let no_casts = SockSim::new(
        SimConfig {
            sock_v6only: false,
            ..config()
        },
        protected().maps().clone(),
    );
    assert_eq!(
        no_casts.bind(&v6only, sa("[::]:30080")),
        Err(Errno::EPERM),
        "without the socket casts every socket counts as dual-stack"
    );
}

#[test]
fn bind_protection_covers_external_and_load_balancer_addresses_only() {
    let s = protected();
    assert_eq!(s.bind(&tcp(1), sa("203.0.113.1:443")), Err(Errno::EPERM));
    assert_eq!(s.bind(&tcp(1), sa("198.51.100.1:443")), Err(Errno::EPERM));
    assert_eq!(s.bind(&tcp(1), sa("0.0.0.0:443")), Ok(()));
    assert_eq!(s.bind(&tcp(1), sa("10.96.0.1:80")), Ok(()), "ClusterIP");
    assert_eq!(s.bind(&tcp(1), sa("0.0.0.0:8081")), Ok(()), "HostPort");
    assert_eq!(s.bind(&tcp(1), sa("0.0.0.0:0")), Ok(()), "port 0");
}

#[test]
fn bind_protection_applies_only_in_the_host_namespace_and_when_enabled() {
    let s = protected();
    assert_eq!(s.bind(&in_pod(tcp(1)), sa("0.0.0.0:30080")), Ok(()));
    let off = SockSim::new(
        SimConfig {
            bind_protection: false,
            ..config()
        },
        protected().maps().clone(),
    );
    assert_eq!(off.bind(&tcp(1), sa("0.0.0.0:30080")), Ok(()));
    let no_tcp = SockSim::new(
        SimConfig {
            protocols: Protocols {
                tcp: false,
                udp: true,
            },
            ..config()
        },
        protected().maps().clone(),
    );
    assert_eq!(no_tcp.bind(&tcp(1), sa("0.0.0.0:30080")), Ok(()));
}

#[test]
fn the_monitor_sees_each_translation_before_and_after() {
    let mut s = sim(vec![
        svc("10.96.0.1:80", ServiceType::ClusterIP).backend("127.0.0.2:8080"),
        svc("10.96.0.2:80", ServiceType::ClusterIP),
    ]);
    s.connect(&tcp(1), sa("10.96.0.1:80"));
    assert!(s.take_events().is_empty(), "nobody is listening");
    s.set_monitor(true);
    let to = s.connect(&tcp(1), sa("10.96.0.1:80"));
    s.peer_name(&tcp(1), to);
    s.connect(&tcp(2), sa("10.96.0.2:80"));
    s.connect(&tcp(3), sa("10.96.0.9:80"));
    let events: Vec<(u8, u64, SocketAddr)> = s
        .take_events()
        .iter()
        .map(|e| {
            assert_eq!((e.cgroup_id, e.proto, e.cpu), (77, 6, 0));
            (
                e.kind,
                e.sock_cookie,
                SocketAddr::new(e.address.into(), u16::from_be(e.port)),
            )
        })
        .collect();
    assert_eq!(
        events,
        [
            (trace_kind::PRE_XLATE_FWD, 1, sa("10.96.0.1:80")),
            (trace_kind::POST_XLATE_FWD, 1, sa("127.0.0.2:8080")),
            (trace_kind::PRE_XLATE_REV, 1, sa("127.0.0.2:8080")),
            (trace_kind::POST_XLATE_REV, 1, sa("10.96.0.1:80")),
            // A service without backends is seen, but not translated.
            (trace_kind::PRE_XLATE_FWD, 2, sa("10.96.0.2:80")),
        ]
    );
    assert!(s.take_events().is_empty(), "taken once");
}

#[test]
fn external_ips_are_translated_only_on_node_addresses_unless_the_mitigation_is_off() {
    let services = || {
        vec![
            svc("203.0.113.10:80", ServiceType::ExternalIPs).backend("10.0.1.5:8080"),
            svc("192.168.56.11:80", ServiceType::ExternalIPs).backend("10.0.1.6:8080"),
        ]
    };
    let mut mitigated = sim(services());
    mitigated.set_local_addresses(&["192.168.56.11".parse().unwrap()]);
    assert_eq!(
        mitigated.connect(&tcp(1), sa("203.0.113.10:80")),
        sa("203.0.113.10:80"),
        "an externalIP that is not the node's keeps its address"
    );
    assert_eq!(
        mitigated.connect(&in_pod(tcp(2)), sa("192.168.56.11:80")),
        sa("10.0.1.6:8080"),
        "the node's own address is served, from pods too"
    );
    let mut open = SockSim::new(
        SimConfig {
            external_ip_mitigation: false,
            ..config()
        },
        maps(services()),
    );
    assert_eq!(
        open.connect(&in_pod(tcp(3)), sa("203.0.113.10:80")),
        sa("10.0.1.5:8080")
    );
}

/// A DNS service at `address` (`IP:PORT/PROTO`) with two backends.
fn dns_on(address: &str) -> Svc {
    svc(address, ServiceType::ClusterIP)
        .backend("10.0.0.1:53")
        .backend("10.0.0.2:53")
}

fn dns() -> Svc {
    dns_on("10.96.0.10:53/UDP")
}

#[test]
fn a_held_socket_keeps_its_backend_when_it_turns_terminating() {
    let mut sim = sim(vec![dns()]);
    let mut held = HeldSocket::connect(&mut sim, in_pod(udp(1)), sa("10.96.0.10:53"));
    let backend = held.destination().unwrap();
    let remaining = if backend == sa("10.0.0.1:53") {
        "10.0.0.2:53"
    } else {
        "10.0.0.1:53"
    };
    let before = sim.maps().clone();
    let after = maps(vec![svc("10.96.0.10:53/UDP", ServiceType::ClusterIP)
        .backend(remaining)
        .terminating(&backend.to_string())]);
    sim.set_maps(after.clone());
    let removed = RemovedBackends::between(&before, &after, L4Protocol::Udp);
    let translated = crate::reconciler::DatapathMaps::translated_sockets(&mut sim).unwrap();
    assert_eq!(
        held.sweep(&removed, &translated),
        None,
        "a terminating backend is not removed"
    );
    assert_eq!(held.exchange(), Ok(backend));
    assert_eq!(held.peer_name(&mut sim), Ok(sa("10.96.0.10:53")));
}

#[test]
fn a_destroyed_udp_socket_reports_econnaborted_once_then_is_disconnected() {
    let mut sim = sim(vec![dns(), dns_on("10.96.0.10:53/TCP")]);
    let mut held = HeldSocket::connect(&mut sim, in_pod(udp(1)), sa("10.96.0.10:53"));
    let mut tcp_held = HeldSocket::connect(&mut sim, in_pod(tcp(2)), sa("10.96.0.10:53"));
    let backend = held.destination().unwrap();
    assert_ne!(backend, sa("10.96.0.10:53"), "the hook translated it");
    let mut direct = HeldSocket::connect(&mut sim, in_pod(udp(3)), backend);
    let removed: RemovedBackends = [backend, tcp_held.destination().unwrap()]
        .into_iter()
        .collect();
    let translated = crate::reconciler::DatapathMaps::translated_sockets(&mut sim).unwrap();
    assert_eq!(held.sweep(&removed, &translated), Some((1, backend)));
    assert_eq!(
        tcp_held.sweep(&removed, &translated),
        None,
        "only UDP sockets are destroyed"
    );
    assert_eq!(
        direct.sweep(&removed, &translated),
        None,
        "a socket the application connected to the backend itself is its own"
    );
    assert_eq!(held.destination(), None);
    assert_eq!(held.exchange(), Err(Errno::ECONNABORTED));
    assert_eq!(held.exchange(), Err(Errno::EDESTADDRREQ));
    assert_eq!(held.peer_name(&mut sim), Err(Errno::ENOTCONN));
    assert!(tcp_held.exchange().is_ok());
}
