//! Session affinity on the kernel against the simulator with real time passing: two client
//! namespaces, one service on several ports with many backends and a one-second timeout.
//!
//! Which backend a fresh choice takes is random in the kernel, so the checks that affinity is
//! per client and per port, and that it ends after the timeout, are statements about many
//! independent choices at once, each with a stated chance of failing a correct program:
//!
//! - before the timeout every client stays on its backend of every port (exact, as the
//!   simulator says);
//! - a client's ports were not all given one backend, nor were both clients given the same
//!   backends: with affinity per client and per port that happens with probability
//!   `(1/BACKENDS)^(PORTS-1)` per client and `(1/BACKENDS)^PORTS`;
//! - after the timeout at least one of the `2 × PORTS` choices moved, which a program whose
//!   affinity never expires never does, and a correct one fails with probability
//!   `(1/BACKENDS)^(2 × PORTS)`.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use lb::datapath::sim::{SimConfig, SockCall, SockSim};
use lb::datapath::{MapContents, SockLbConfig};
use lb::model::{
    Backend, DesiredState, Frontend, L3n4Addr, L4Protocol, LbService, ServiceName, ServicePolicies,
    ServiceType,
};

use super::wire::Call;
use super::{CaseDatapath, Child, Env};

/// Ports of the service (each a frontend with its own affinity).
const PORTS: u16 = 6;
/// Backends behind every port.
const BACKENDS: u16 = 16;
/// `sessionAffinityConfig.clientIP.timeoutSeconds`.
const TIMEOUT_SECS: u32 = 1;
/// How long the clients stay idle to let affinity expire: the timeout plus a margin for the
/// calls' own duration.
const IDLE: Duration = Duration::from_millis(1600);
const CLUSTER_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 7, 1);

fn desired() -> DesiredState {
    let mut state = DesiredState::new();
    for p in 0..PORTS {
        let backends = (0..BACKENDS)
            .map(|b| {
                Backend::active(L3n4Addr::new(
                    Ipv4Addr::new(127, 0, 1, 1 + b as u8).into(),
                    9000,
                    L4Protocol::Tcp,
                ))
            })
            .collect();
        let policies = ServicePolicies {
            session_affinity_timeout_secs: Some(TIMEOUT_SECS),
            ..ServicePolicies::default()
        };
        let _ = state.insert(LbService {
            frontend: Frontend::external(
                L3n4Addr::new(CLUSTER_IP.into(), 80 + p, L4Protocol::Tcp),
                ServiceType::ClusterIP,
            ),
            name: ServiceName {
                namespace: "default".into(),
                name: "sticky".into(),
            },
            port_name: format!("p{p}"),
            no_local_backends: false,
            backends,
            policies,
        });
    }
    state
}

/// Every client's answer on every port, in (client, port) order.
type Answers = BTreeMap<(usize, u16), SocketAddr>;

/// The trial: see the module documentation.
pub fn run(env: &Env) -> Result<(), String> {
    let mut clients = [
        Child::start(&env.cgroup.path)?,
        Child::start(&env.cgroup.path)?,
    ];
    let config = SockLbConfig {
        protocols: lb::config::Protocols {
            tcp: true,
            udp: true,
        },
        map_max: 1024,
        host_namespace_only: false,
        bind_protection: false,
        host_netns_cookie: 0,
        external_ip_mitigation: true,
        netns_cookies: true,
        sock_v6only: true,
        conn_slots: ebpf::maps::SOCK_CONN_SLOTS,
    };
    let mut datapath =
        CaseDatapath::load(env.bpffs.path.join("affinity"), config, &env.cgroup.path)?;
    let maps = MapContents::build(&desired(), &MapContents::default())
        .map_err(|e| format!("laying out the maps: {e}"))?;
    datapath.apply(&maps)?;
    let mut sim = SockSim::new(SimConfig::of(&config, env.initial_netns), maps);
    for client in &mut clients {
        for b in 0..BACKENDS {
            let addr = SocketAddr::from((Ipv4Addr::new(127, 0, 1, 1 + b as u8), 9000));
            let report = client.call(&Call::Listen(L4Protocol::Tcp, addr))?;
            if let Some(e) = report.error {
                return Err(format!("listening on {addr}: {e:?}"));
            }
        }
    }
    let started = Instant::now();
    let round = |sim: &mut SockSim, clients: &mut [Child; 2]| -> Result<Answers, String> {
        let mut out = Answers::new();
        for (c, client) in clients.iter_mut().enumerate() {
            for p in 0..PORTS {
                let target = SocketAddr::from((CLUSTER_IP, 80 + p));
                let report = client.call(&Call::TcpConnect(target))?;
                let answer = report
                    .answer
                    .ok_or_else(|| format!("client {c} to {target}: {report}"))?;
                let call = SockCall {
                    netns_cookie: client.netns,
                    socket_cookie: report.cookie,
                    cgroup_id: env.cgroup_id,
                    protocol: L4Protocol::Tcp,
                    v6only: false,
                };
                let pinned = sim.affinity_target(&call, target);
                if pinned.is_some_and(|pin| pin != answer) {
                    return Err(format!(
                        "client {c} to {target}: affinity pins {pinned:?}, the kernel chose \
                         {answer}"
                    ));
                }
                let mut follow =
                    |slots: &[SocketAddr]| slots.iter().position(|s| *s == answer).unwrap_or(0);
                sim.connect_with(&call, target, &mut follow);
                out.insert((c, p), answer);
            }
        }
        Ok(out)
    };
    let first = round(&mut sim, &mut clients)?;
    let again = round(&mut sim, &mut clients)?;
    let fresh_for = started.elapsed();
    if fresh_for >= Duration::from_secs(TIMEOUT_SECS.into()) {
        return Err(format!(
            "two rounds of calls took {fresh_for:?}, longer than the affinity timeout: the \
             machine is too slow for this test to say anything"
        ));
    }
    if again != first {
        return Err(format!(
            "within the timeout a client moved:\nfirst {first:?}\nthen  {again:?}"
        ));
    }
    for c in 0..2 {
        let ports: std::collections::BTreeSet<IpAddr> =
            (0..PORTS).map(|p| first[&(c, p)].ip()).collect();
        if ports.len() == 1 {
            return Err(format!(
                "client {c} was given one backend on all {PORTS} ports ({ports:?}): affinity \
                 is not per port (a correct program does this with probability 1/{BACKENDS}^{})",
                PORTS - 1
            ));
        }
    }
    if (0..PORTS).all(|p| first[&(0, p)] == first[&(1, p)]) {
        return Err(format!(
            "both clients were given the same backends on every port: affinity is not per \
             client ({first:?})"
        ));
    }
    std::thread::sleep(IDLE);
    sim.advance_clock(started.elapsed());
    for (c, client) in clients.iter().enumerate() {
        let call = SockCall {
            netns_cookie: client.netns,
            socket_cookie: 0,
            cgroup_id: env.cgroup_id,
            protocol: L4Protocol::Tcp,
            v6only: false,
        };
        for p in 0..PORTS {
            let target = SocketAddr::from((CLUSTER_IP, 80 + p));
            if let Some(pin) = sim.affinity_target(&call, target) {
                return Err(format!(
                    "the simulator still pins client {c} on {target} to {pin} after {IDLE:?}"
                ));
            }
        }
    }
    let after = round(&mut sim, &mut clients)?;
    if after == first {
        return Err(format!(
            "{IDLE:?} idle, past the {TIMEOUT_SECS} s timeout, every one of {} choices kept its \
             backend: the program's affinity does not expire (a correct one does this with \
             probability 1/{BACKENDS}^{})",
            2 * PORTS,
            2 * PORTS
        ));
    }
    drop(datapath);
    for client in clients {
        client.finish()?;
    }
    Ok(())
}
