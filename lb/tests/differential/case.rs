//! The generated cases: services, the programs' switches and a sequence of socket calls, as
//! proptest strategies over small index spaces (so that services collide, targets hit and miss,
//! and failures shrink to a few readable steps), and what they resolve to: a [`DesiredState`],
//! backend addresses to listen on, and the socket addresses of each call.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use lb::model::{
    Backend, BackendState, DesiredState, Frontend, IpFamily, L3n4Addr, L4Protocol, LbService,
    Scope, ServiceName, ServicePolicies, ServiceType,
};
use proptest::prelude::*;

use super::{NODE_ADDR4, NODE_ADDR6};

/// One generated case.
#[derive(Clone, Debug)]
pub struct Case {
    /// The services at the start.
    pub services: Vec<GenService>,
    /// The programs' load-time switches.
    pub config: GenConfig,
    /// What happens, in order.
    pub steps: Vec<Step>,
}

/// A generated service: indices into small sets of addresses and ports.
#[derive(Clone, Debug)]
pub struct GenService {
    /// Its type.
    pub kind: ServiceType,
    /// IPv6 rather than IPv4.
    pub v6: bool,
    /// Its protocol.
    pub protocol: L4Protocol,
    /// Which of four frontend addresses of its type (unused for wildcard types).
    pub addr: u8,
    /// Which of three ports of its type.
    pub port: u8,
    /// Its backends: `true` for a terminating one.
    pub backends: Vec<bool>,
    /// An internal-scope twin with its own backends (`true`: terminating).
    pub twin: Option<Vec<bool>>,
    /// sessionAffinity: ClientIP, with a timeout a [`Step::Wait`] outlasts or one no run
    /// outlasts.
    pub affinity: Option<Timeout>,
}

/// A session affinity timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timeout {
    /// [`SHORT_TIMEOUT_SECS`]: a [`Step::Wait`] outlasts it.
    Short,
    /// Ten minutes: no run outlasts it.
    Long,
}

/// The short affinity timeout, in seconds (the smallest Kubernetes accepts).
pub const SHORT_TIMEOUT_SECS: u32 = 1;
/// How long a [`Step::Wait`] lets pass: the short timeout and a margin.
pub const WAIT: std::time::Duration = std::time::Duration::from_millis(1300);

/// Which namespace the programs take for the host's (`cfg_host_netns_cookie`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostNs {
    /// 0: the initial namespace (the child is not in it).
    Initial,
    /// The child's own namespace.
    Child,
    /// Some other namespace.
    Other,
}

/// The programs' switches.
#[derive(Clone, Copy, Debug)]
pub struct GenConfig {
    /// `cfg_enable_tcp`.
    pub tcp: bool,
    /// `cfg_enable_udp`.
    pub udp: bool,
    /// `cfg_host_ns_only`.
    pub host_namespace_only: bool,
    /// `cfg_bind_protection`.
    pub bind_protection: bool,
    /// `cfg_external_ip_mitigation`.
    pub external_ip_mitigation: bool,
    /// `cfg_netns_cookies`: false is how the programs run on kernels before 5.7.
    pub netns_cookies: bool,
    /// `cfg_sock_v6only`: false is how the programs run on kernels before 5.10.
    pub sock_v6only: bool,
    /// `cfg_host_netns_cookie`.
    pub host: HostNs,
    /// `cfg_sock_conn_slots`: 0 is the build without atomics (kernels before 5.12), 1 makes
    /// every live socket after the first keep its translation in `lb_sock_conn_v1`.
    pub conn_slots: u32,
    /// Whether the node addresses (present in the child's namespace either way) are in
    /// `lb_local_addrs`.
    pub node_addrs_listed: bool,
}

/// One step of a case.
#[derive(Clone, Copy, Debug)]
pub enum Step {
    /// A connection or datagram to a target.
    Send(Target, Style),
    /// A bind.
    Bind(BindAt),
    /// getpeername again on an earlier TCP socket (picked modulo their number).
    PeerName(usize),
    /// The agent reconciles a change of the services.
    Reconcile(Change),
    /// Real time passes ([`WAIT`]): short affinity timeouts expire.
    Wait,
}

/// How a call reaches its target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// TCP connect, getpeername, read who answered.
    Tcp,
    /// UDP connect, getpeername, send, recvfrom.
    UdpConnect,
    /// UDP sendto, recvfrom on an unconnected socket.
    UdpSendTo,
    /// The service's protocol (TCP, or connected UDP).
    Fitting,
    /// The service's protocol (TCP, or unconnected UDP).
    FittingUnconnected,
}

/// The destination of a call, relative to a service (picked modulo their number).
#[derive(Clone, Copy, Debug)]
pub struct Target {
    /// Which service.
    pub service: usize,
    /// Which of its addresses.
    pub how: How,
    /// Sent from a dual-stack IPv6 socket as an IPv4-mapped address (IPv4 targets only).
    pub mapped: bool,
    /// Sent by the second client namespace rather than the first.
    pub second_client: bool,
}

/// Which address of a service a call goes to.
#[derive(Clone, Copy, Debug)]
pub enum How {
    /// Its frontend; for a wildcard one, 127.0.0.1 or ::1.
    Frontend,
    /// Another loopback address (127.0.0.7; IPv6 has only ::1) at its port.
    OtherLoopback,
    /// The node address at its port.
    NodeAddress,
    /// The wildcard address at its port.
    Wildcard,
    /// Its first backend, directly.
    Backend,
    /// Its frontend at another port.
    OtherPort,
}

/// The local address of a bind, relative to a service.
#[derive(Clone, Copy, Debug)]
pub struct BindAt {
    /// The socket's protocol; `None`: the service's (a port it would protect).
    pub protocol: Option<L4Protocol>,
    /// Which service.
    pub service: usize,
    /// Pick among the NodePort, externalIPs and LoadBalancer services, if there are any.
    pub protected: bool,
    /// IPv6 rather than IPv4 (for the addresses that are not the service's own).
    pub v6: bool,
    /// An IPv6 socket with `IPV6_V6ONLY` (makes `v6` true, except at an IPv4 frontend's own
    /// address, where it is ignored).
    pub v6only: bool,
    /// Which address.
    pub addr: BindAddr,
    /// Which port.
    pub port: BindPort,
}

/// The address of a bind.
#[derive(Clone, Copy, Debug)]
pub enum BindAddr {
    /// `0.0.0.0` or `::`.
    Wildcard,
    /// `127.0.0.1` or `::1`.
    Loopback,
    /// The node address.
    NodeAddress,
    /// The service's frontend address.
    Frontend,
}

/// The port of a bind.
#[derive(Clone, Copy, Debug)]
pub enum BindPort {
    /// The service's port.
    Service,
    /// 0: any port.
    Zero,
    /// A port no service uses.
    Free,
}

/// A change the agent reconciles.
#[derive(Clone, Copy, Debug)]
pub struct Change {
    /// Which service.
    pub service: usize,
    /// What changes.
    pub what: ChangeKind,
}

/// What changes in a service.
#[derive(Clone, Copy, Debug)]
pub enum ChangeKind {
    /// The service goes away.
    Remove,
    /// Its first active backend starts terminating.
    TerminateFirst,
    /// Its last backend goes away.
    RemoveLast,
    /// A new backend joins.
    Add,
}

/// Cases of up to five services and sixteen steps.
pub fn case() -> impl Strategy<Value = Case> {
    (
        proptest::collection::vec(service(), 1..=5),
        config(),
        proptest::collection::vec(step(), 1..=16),
    )
        .prop_map(|(services, config, steps)| Case {
            services,
            config,
            steps,
        })
}

fn service() -> impl Strategy<Value = GenService> {
    let kind = prop_oneof![
        3 => Just(ServiceType::ClusterIP),
        3 => Just(ServiceType::NodePort),
        1 => Just(ServiceType::HostPort),
        1 => Just(ServiceType::ExternalIPs),
        1 => Just(ServiceType::LoadBalancer),
    ];
    let protocol = prop_oneof![Just(L4Protocol::Tcp), Just(L4Protocol::Udp)];
    let states = |max| proptest::collection::vec(proptest::bool::weighted(0.25), 0..=max);
    (
        kind,
        proptest::bool::weighted(0.3),
        protocol,
        0u8..4,
        0u8..3,
        states(4),
        proptest::option::weighted(0.2, states(2)),
        proptest::option::weighted(0.3, prop_oneof![Just(Timeout::Short), Just(Timeout::Long)]),
    )
        .prop_map(
            |(kind, v6, protocol, addr, port, backends, twin, affinity)| GenService {
                kind,
                v6,
                protocol,
                addr,
                port,
                backends,
                twin,
                affinity,
            },
        )
}

fn config() -> impl Strategy<Value = GenConfig> {
    let host = prop_oneof![
        1 => Just(HostNs::Initial),
        3 => Just(HostNs::Child),
        1 => Just(HostNs::Other),
    ];
    let conn_slots = prop_oneof![
        1 => Just(0),
        2 => Just(1),
        1 => Just(4),
        2 => Just(ebpf::maps::SOCK_CONN_SLOTS),
    ];
    (
        proptest::bool::weighted(0.85),
        proptest::bool::weighted(0.85),
        proptest::bool::weighted(0.3),
        proptest::bool::weighted(0.7),
        proptest::bool::weighted(0.7),
        proptest::bool::weighted(0.8),
        proptest::bool::weighted(0.7),
        host,
        any::<bool>(),
        conn_slots,
    )
        .prop_map(
            |(
                tcp,
                udp,
                host_namespace_only,
                bind_protection,
                external_ip_mitigation,
                netns_cookies,
                sock_v6only,
                host,
                node_addrs_listed,
                conn_slots,
            )| GenConfig {
                tcp,
                udp,
                host_namespace_only,
                bind_protection,
                external_ip_mitigation,
                netns_cookies,
                sock_v6only,
                host,
                node_addrs_listed,
                conn_slots,
            },
        )
}

fn step() -> impl Strategy<Value = Step> {
    let how = prop_oneof![
        4 => Just(How::Frontend),
        1 => Just(How::OtherLoopback),
        2 => Just(How::NodeAddress),
        1 => Just(How::Wildcard),
        1 => Just(How::Backend),
        1 => Just(How::OtherPort),
    ];
    let target = (
        0usize..8,
        how,
        proptest::bool::weighted(0.15),
        proptest::bool::weighted(0.3),
    )
        .prop_map(|(service, how, mapped, second_client)| Target {
            service,
            how,
            mapped,
            second_client,
        });
    let style = prop_oneof![
        1 => Just(Style::Tcp),
        1 => Just(Style::UdpConnect),
        1 => Just(Style::UdpSendTo),
        3 => Just(Style::Fitting),
        3 => Just(Style::FittingUnconnected),
    ];
    let protocol = prop_oneof![Just(L4Protocol::Tcp), Just(L4Protocol::Udp)];
    let bind_addr = prop_oneof![
        2 => Just(BindAddr::Wildcard),
        1 => Just(BindAddr::Loopback),
        1 => Just(BindAddr::NodeAddress),
        1 => Just(BindAddr::Frontend),
    ];
    let bind_port = prop_oneof![
        4 => Just(BindPort::Service),
        1 => Just(BindPort::Zero),
        1 => Just(BindPort::Free),
    ];
    let bind_protocol = proptest::option::weighted(0.3, protocol.clone());
    let bind = (
        bind_protocol,
        0usize..8,
        proptest::bool::weighted(0.7),
        any::<bool>(),
        any::<bool>(),
        bind_addr,
        bind_port,
    )
        .prop_map(
            |(protocol, service, protected, v6, v6only, addr, port)| BindAt {
                protocol,
                service,
                protected,
                v6,
                v6only,
                addr,
                port,
            },
        );
    let change = prop_oneof![
        Just(ChangeKind::Remove),
        Just(ChangeKind::TerminateFirst),
        Just(ChangeKind::RemoveLast),
        Just(ChangeKind::Add),
    ];
    let change = (0usize..8, change).prop_map(|(service, what)| Change { service, what });
    prop_oneof![
        10 => (target, style).prop_map(|(t, s)| Step::Send(t, s)),
        3 => bind.prop_map(Step::Bind),
        1 => any::<usize>().prop_map(Step::PeerName),
        1 => change.prop_map(Step::Reconcile),
        1 => Just(Step::Wait),
    ]
}

/// The services of a case as the agent would have them, and the backends it has handed out.
#[derive(Clone, Debug)]
pub struct Services {
    /// Every frontend (internal twins are entries of their own), in generation order.
    pub list: Vec<LbService>,
    next_backend: u16,
}

/// A port no generated service uses, for binds.
const FREE_PORT: u16 = 45000;

impl Services {
    /// The generated services with their backends allocated (distinct addresses and ports on
    /// loopback); a service whose frontend an earlier one already has is dropped.
    pub fn new(generated: &[GenService]) -> Self {
        let mut out = Services {
            list: Vec::new(),
            next_backend: 0,
        };
        for g in generated {
            let ip = frontend_ip(g.kind, g.v6, g.addr);
            let addr = L3n4Addr::new(ip, frontend_port(g.kind, g.port), g.protocol);
            if out.list.iter().any(|s| s.frontend.addr == addr) {
                continue;
            }
            let policies = ServicePolicies {
                session_affinity_timeout_secs: g.affinity.map(|t| match t {
                    Timeout::Short => SHORT_TIMEOUT_SECS,
                    Timeout::Long => 600,
                }),
                ..ServicePolicies::default()
            };
            let scopes = [
                Some((Scope::External, &g.backends)),
                g.twin.as_ref().map(|t| (Scope::Internal, t)),
            ];
            for (scope, states) in scopes.into_iter().flatten() {
                let backends = states
                    .iter()
                    .map(|&terminating| out.backend(addr, terminating))
                    .collect();
                out.list.push(LbService {
                    frontend: Frontend {
                        addr,
                        kind: g.kind,
                        scope,
                    },
                    name: ServiceName {
                        namespace: "default".into(),
                        name: format!("svc-{}", out.list.len()),
                    },
                    port_name: String::new(),
                    no_local_backends: false,
                    backends,
                    policies: policies.clone(),
                });
            }
        }
        out
    }

    /// A new backend for `frontend`'s family and protocol.
    fn backend(&mut self, frontend: L3n4Addr, terminating: bool) -> Backend {
        let k = self.next_backend;
        self.next_backend += 1;
        let ip: IpAddr = if frontend.ip.is_ipv6() {
            Ipv6Addr::LOCALHOST.into()
        } else {
            Ipv4Addr::new(127, 0, 0, 2 + (k % 5) as u8).into()
        };
        Backend {
            state: if terminating {
                BackendState::Terminating
            } else {
                BackendState::Active
            },
            ..Backend::active(L3n4Addr::new(ip, 8000 + k, frontend.protocol))
        }
    }

    /// The desired state the agent reconciles.
    pub fn desired(&self) -> DesiredState {
        let mut state = DesiredState::new();
        for s in &self.list {
            // Frontends are distinct by construction.
            let _ = state.insert(s.clone());
        }
        state
    }

    /// Every backend (each a listener in the child).
    pub fn backends(&self) -> Vec<(L4Protocol, SocketAddr)> {
        self.list
            .iter()
            .flat_map(|s| s.backends.iter())
            .map(|b| (b.addr.protocol, SocketAddr::new(b.addr.ip, b.addr.port)))
            .collect()
    }

    fn pick(&self, index: usize) -> Option<&LbService> {
        (!self.list.is_empty()).then(|| &self.list[index % self.list.len()])
    }

    /// Where a call to `t` goes.
    pub fn target(&self, t: Target) -> SocketAddr {
        let Some(s) = self.pick(t.service) else {
            return SocketAddr::from((Ipv4Addr::new(10, 96, 0, 99), 80));
        };
        let fe = s.frontend.addr;
        let v6 = fe.ip.is_ipv6();
        let loopback = |v6: bool| -> IpAddr {
            if v6 {
                Ipv6Addr::LOCALHOST.into()
            } else {
                Ipv4Addr::LOCALHOST.into()
            }
        };
        let frontend = if fe.ip.is_unspecified() {
            loopback(v6)
        } else {
            fe.ip
        };
        let plain = match t.how {
            How::Frontend => SocketAddr::new(frontend, fe.port),
            How::OtherLoopback if v6 => SocketAddr::new(loopback(v6), fe.port),
            How::OtherLoopback => SocketAddr::from((Ipv4Addr::new(127, 0, 0, 7), fe.port)),
            How::NodeAddress => SocketAddr::new(node_addr(v6), fe.port),
            How::Wildcard => SocketAddr::new(IpFamily::of(fe.ip).unspecified(), fe.port),
            How::Backend => s
                .backends
                .first()
                .map_or(SocketAddr::new(frontend, fe.port), |b| {
                    SocketAddr::new(b.addr.ip, b.addr.port)
                }),
            How::OtherPort => SocketAddr::new(frontend, fe.port + 100),
        };
        match plain {
            SocketAddr::V4(v4) if t.mapped => {
                SocketAddr::from((v4.ip().to_ipv6_mapped(), v4.port()))
            }
            other => other,
        }
    }

    /// How a call in `style` to `t` is made: the concrete style.
    pub fn style(&self, t: Target, style: Style) -> Style {
        let udp = self
            .pick(t.service)
            .is_some_and(|s| s.frontend.addr.protocol == L4Protocol::Udp);
        match style {
            Style::Fitting if udp => Style::UdpConnect,
            Style::FittingUnconnected if udp => Style::UdpSendTo,
            Style::Fitting | Style::FittingUnconnected => Style::Tcp,
            other => other,
        }
    }

    /// Where a bind at `b` binds, with which protocol, and whether with `IPV6_V6ONLY`.
    pub fn bind_at(&self, b: BindAt) -> (L4Protocol, SocketAddr, bool) {
        let protected: Vec<&LbService> = self
            .list
            .iter()
            .filter(|s| {
                matches!(
                    s.frontend.kind,
                    ServiceType::NodePort | ServiceType::ExternalIPs | ServiceType::LoadBalancer
                )
            })
            .collect();
        let service = if b.protected && !protected.is_empty() {
            Some(protected[b.service % protected.len()])
        } else {
            self.pick(b.service)
        };
        // IPV6_V6ONLY means something on an IPv6 socket only, so a v6only bind is one.
        let v6 = b.v6 || b.v6only;
        let v6 = service.map_or(v6, |s| match b.addr {
            BindAddr::Frontend => s.frontend.addr.ip.is_ipv6(),
            _ => v6,
        });
        let ip: IpAddr = match (b.addr, service) {
            (BindAddr::Frontend, Some(s)) => s.frontend.addr.ip,
            (BindAddr::Wildcard | BindAddr::Frontend, _) if v6 => Ipv6Addr::UNSPECIFIED.into(),
            (BindAddr::Wildcard | BindAddr::Frontend, _) => Ipv4Addr::UNSPECIFIED.into(),
            (BindAddr::Loopback, _) if v6 => Ipv6Addr::LOCALHOST.into(),
            (BindAddr::Loopback, _) => Ipv4Addr::LOCALHOST.into(),
            (BindAddr::NodeAddress, _) => node_addr(v6),
        };
        let port = match (b.port, service) {
            (BindPort::Service, Some(s)) => s.frontend.addr.port,
            (BindPort::Zero, _) => 0,
            (BindPort::Service | BindPort::Free, _) => FREE_PORT,
        };
        let protocol = b
            .protocol
            .or(service.map(|s| s.frontend.addr.protocol))
            .unwrap_or(L4Protocol::Tcp);
        (
            protocol,
            SocketAddr::new(ip, port),
            b.v6only && ip.is_ipv6(),
        )
    }

    /// Applies `c`; returns the backend that joined, if one did (the child must listen on it).
    pub fn change(&mut self, c: Change) -> Option<(L4Protocol, SocketAddr)> {
        if self.list.is_empty() {
            return None;
        }
        let at = c.service % self.list.len();
        match c.what {
            ChangeKind::Remove => {
                self.list.remove(at);
            }
            ChangeKind::TerminateFirst => {
                let s = &mut self.list[at];
                if let Some(b) = s
                    .backends
                    .iter_mut()
                    .find(|b| b.state == BackendState::Active)
                {
                    b.state = BackendState::Terminating;
                }
            }
            ChangeKind::RemoveLast => {
                self.list[at].backends.pop();
            }
            ChangeKind::Add => {
                let frontend = self.list[at].frontend.addr;
                let b = self.backend(frontend, false);
                self.list[at].backends.push(b.clone());
                return Some((b.addr.protocol, SocketAddr::new(b.addr.ip, b.addr.port)));
            }
        }
        None
    }
}

fn node_addr(v6: bool) -> IpAddr {
    if v6 {
        NODE_ADDR6.into()
    } else {
        NODE_ADDR4.into()
    }
}

/// The frontend address of the `i`th service of a type (wildcard for NodePort and HostPort).
fn frontend_ip(kind: ServiceType, v6: bool, i: u8) -> IpAddr {
    let i = i + 1;
    match (kind, v6) {
        (ServiceType::NodePort | ServiceType::HostPort, false) => Ipv4Addr::UNSPECIFIED.into(),
        (ServiceType::NodePort | ServiceType::HostPort, true) => Ipv6Addr::UNSPECIFIED.into(),
        (ServiceType::ClusterIP, false) => Ipv4Addr::new(10, 96, 0, i).into(),
        (ServiceType::ClusterIP, true) => Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, i.into()).into(),
        (ServiceType::ExternalIPs, false) => Ipv4Addr::new(203, 0, 113, i).into(),
        (ServiceType::ExternalIPs, true) => {
            Ipv6Addr::new(0x2001, 0xdb8, 0xe, 0, 0, 0, 0, i.into()).into()
        }
        (ServiceType::LoadBalancer, false) => Ipv4Addr::new(198, 51, 100, i).into(),
        (ServiceType::LoadBalancer, true) => {
            Ipv6Addr::new(0x2001, 0xdb8, 0x1b, 0, 0, 0, 0, i.into()).into()
        }
    }
}

/// The `i`th port of a type: NodePorts and HostPorts below the ephemeral range (so a client's
/// own port never looks like one), other ports well known.
fn frontend_port(kind: ServiceType, i: u8) -> u16 {
    let i = u16::from(i);
    match kind {
        ServiceType::NodePort => 30000 + i,
        ServiceType::HostPort => 9000 + i,
        _ => [80, 443, 53][usize::from(i % 3)],
    }
}
