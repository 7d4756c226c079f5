//! [`ServiceHealthServers`]: one HTTP server per Service health check node port
//! (`nodePort.enableHealthCheck`), opened and closed as the services come and go, all served
//! from one thread of their own so the agent's loop never waits on a client.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use nix::sys::socket::{
    self, sockopt, AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage,
};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tracing::info;

use super::server::{serve, Responder};
use super::{service_answer, Health};
use crate::k8s::HealthChecks;
use crate::model::ServiceName;

/// How many connections may wait to be accepted on one port.
const BACKLOG: i32 = 128;

/// A health check node port that could not be opened. Not fatal: the other services' servers
/// run, and the next [`ServiceHealthServers::sync`] tries again (kube-proxy does the same).
#[derive(Debug, thiserror::Error)]
#[error("service {service}: cannot serve its healthCheckNodePort {port} on {addr}: {source}; retried on the next pass")]
pub struct ServicePortError {
    /// The service.
    pub service: ServiceName,
    /// Its `healthCheckNodePort`.
    pub port: u16,
    /// The address that could not be listened on.
    pub addr: SocketAddr,
    /// The kernel's refusal.
    #[source]
    pub source: std::io::Error,
}

/// One service's open server.
#[derive(Debug)]
struct Running {
    port: u16,
    /// What its answers report; updated in place on every sync.
    local_endpoints: Arc<AtomicUsize>,
    /// One accept loop per listening address.
    tasks: Vec<JoinHandle<()>>,
}

/// The health check node port servers of this node, each answering for its service from the
/// shared [`Health`] and the local endpoint count of the last [`ServiceHealthServers::sync`].
#[derive(Debug)]
pub struct ServiceHealthServers {
    runtime: Handle,
    health: Arc<Health>,
    /// The wildcard addresses each port is opened on.
    addresses: Vec<IpAddr>,
    running: BTreeMap<ServiceName, Running>,
}

impl ServiceHealthServers {
    /// No servers yet; ports will be opened on `0.0.0.0` and `[::]`, all of the node's
    /// addresses in both families whatever families the agent serves, as kube-proxy listens
    /// (Go's wildcard listener is dual-stack); `[::]` is left out on a kernel without IPv6.
    /// The servers run on a new thread.
    pub fn start(health: Arc<Health>) -> std::io::Result<Self> {
        let mut addresses = vec![IpAddr::V4(Ipv4Addr::UNSPECIFIED)];
        if ipv6_supported() {
            addresses.push(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
        }
        Self::start_on(health, addresses)
    }

    /// No servers yet; ports will be opened on each of `addresses`.
    pub fn start_on(health: Arc<Health>, addresses: Vec<IpAddr>) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()?;
        let handle = runtime.handle().clone();
        std::thread::Builder::new()
            .name("hc-node-ports".into())
            .spawn(move || runtime.block_on(std::future::pending::<()>()))?;
        Ok(ServiceHealthServers {
            runtime: handle,
            health,
            addresses,
            running: BTreeMap::new(),
        })
    }

    /// Makes the servers those of `wanted`: a server whose service is gone or whose port
    /// changed is closed (its port free when this returns), a new one opened, and every
    /// server's count updated. The ports that could not be opened are returned.
    pub fn sync(&mut self, wanted: &HealthChecks) -> Vec<ServicePortError> {
        let stale: Vec<ServiceName> = self
            .running
            .iter()
            .filter(|(name, r)| wanted.get(*name).map(|c| c.port) != Some(r.port))
            .map(|(name, _)| name.clone())
            .collect();
        for name in stale {
            let running = self.running.remove(&name).expect("listed above");
            let port = running.port;
            self.close(running);
            info!(service = %name, port, "health check node port closed");
        }
        let mut errors = Vec::new();
        for (name, check) in wanted {
            if let Some(running) = self.running.get(name) {
                running
                    .local_endpoints
                    .store(check.local_endpoints, Ordering::Relaxed);
                continue;
            }
            match self.open(name, check.port, check.local_endpoints) {
                Ok(running) => {
                    info!(service = %name, port = check.port, "health check node port open");
                    self.running.insert(name.clone(), running);
                }
                Err(e) => errors.push(e),
            }
        }
        errors
    }

    /// The open ports, by service.
    pub fn ports(&self) -> BTreeMap<ServiceName, u16> {
        self.running
            .iter()
            .map(|(name, r)| (name.clone(), r.port))
            .collect()
    }

    /// Listens on `port` on every address, or on none (a port half open would answer on one
    /// family only).
    fn open(
        &self,
        service: &ServiceName,
        port: u16,
        local_endpoints: usize,
    ) -> Result<Running, ServicePortError> {
        let mut listeners = Vec::new();
        for ip in &self.addresses {
            let addr = SocketAddr::new(*ip, port);
            match listen(addr) {
                Ok(l) => listeners.push(l),
                Err(source) => {
                    return Err(ServicePortError {
                        service: service.clone(),
                        port,
                        addr,
                        source,
                    })
                }
            }
        }
        let count = Arc::new(AtomicUsize::new(local_endpoints));
        let respond: Responder = {
            let (health, count, service) = (
                Arc::clone(&self.health),
                Arc::clone(&count),
                service.clone(),
            );
            Arc::new(move |_path: &str| {
                let (state, now) = health.snapshot();
                service_answer(&service, count.load(Ordering::Relaxed), state.healthy(now))
            })
        };
        let tasks = listeners
            .into_iter()
            .map(|l| self.runtime.spawn(serve(l, Arc::clone(&respond))))
            .collect();
        Ok(Running {
            port,
            local_endpoints: count,
            tasks,
        })
    }

    /// Stops `running`'s accept loops and connections and waits until their sockets are
    /// closed, so the port can be opened again at once. Called from inside an async runtime
    /// (where it must not block) it does not wait: the sockets close moments later.
    fn close(&self, running: Running) {
        for task in &running.tasks {
            task.abort();
        }
        if Handle::try_current().is_ok() {
            return;
        }
        for task in running.tasks {
            // An aborted task ends as cancelled once its sockets are dropped; that is the
            // end this waits for, not an error.
            let _ = self.runtime.block_on(task);
        }
    }
}

impl Drop for ServiceHealthServers {
    fn drop(&mut self) {
        for running in std::mem::take(&mut self.running).into_values() {
            for task in running.tasks {
                task.abort();
            }
        }
    }
}

/// Whether this kernel makes IPv6 sockets (not when built without IPv6 or booted with
/// `ipv6.disable=1`).
fn ipv6_supported() -> bool {
    socket::socket(
        AddressFamily::Inet6,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .is_ok()
}

/// A listening TCP socket on `addr`, non-blocking, with `SO_REUSEADDR` (as Go's listeners, so
/// a port just closed with connections in TIME_WAIT can be opened again) and, for IPv6,
/// `IPV6_V6ONLY` (so `[::]` and `0.0.0.0` can both hold the port).
fn listen(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd = socket::socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    if addr.is_ipv6() {
        socket::setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    }
    socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    socket::listen(&fd, Backlog::new(BACKLOG)?)?;
    Ok(std::net::TcpListener::from(fd))
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;

    use super::*;
    use crate::health::{Clock, HEALTH_TIMEOUT};
    use crate::k8s::HealthCheck;

    #[derive(Debug)]
    struct Stopped;

    impl Clock for Stopped {
        fn now(&self) -> std::time::SystemTime {
            std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_284_800)
        }
    }

    fn web() -> ServiceName {
        ServiceName {
            namespace: "shop".into(),
            name: "web".into(),
        }
    }

    /// A port free on the loopback addresses now.
    fn free_port() -> u16 {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }

    fn servers(health: &Arc<Health>) -> ServiceHealthServers {
        let loopback = vec![
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ];
        ServiceHealthServers::start_on(Arc::clone(health), loopback).unwrap()
    }

    fn checks(port: u16, local_endpoints: usize) -> HealthChecks {
        HealthChecks::from([(
            web(),
            HealthCheck {
                port,
                local_endpoints,
            },
        )])
    }

    /// `GET /any/path` to `ip:port`: the whole response, or the connection's error.
    fn get(ip: IpAddr, port: u16) -> std::io::Result<String> {
        let mut stream = TcpStream::connect(SocketAddr::new(ip, port))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(
            stream,
            "GET /any/path HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n"
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response)
    }

    #[test]
    fn a_port_answers_on_both_families_follows_the_count_and_closes() {
        let health = Arc::new(Health::new(HEALTH_TIMEOUT, Arc::new(Stopped)));
        let mut s = servers(&health);
        let port = free_port();
        assert!(s.sync(&checks(port, 2)).is_empty());
        for ip in [
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ] {
            let ok = get(ip, port).unwrap();
            assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
            let head = ok.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
            assert!(
                head.contains("\r\nx-load-balancing-endpoint-weight: 2\r\n"),
                "{ok}"
            );
            assert!(
                head.contains("\r\ncontent-type: application/json\r\n"),
                "{ok}"
            );
            assert!(
                head.contains("\r\nx-content-type-options: nosniff\r\n"),
                "{ok}"
            );
            assert!(ok.contains("\"localEndpoints\": 2"), "{ok}");
        }

        assert!(s.sync(&checks(port, 0)).is_empty());
        let drained = get(IpAddr::V4(Ipv4Addr::LOCALHOST), port).unwrap();
        assert!(
            drained.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{drained}"
        );

        assert!(s.sync(&HealthChecks::new()).is_empty());
        assert!(s.ports().is_empty());
        let refused = get(IpAddr::V4(Ipv4Addr::LOCALHOST), port).unwrap_err();
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused);
    }

    #[test]
    fn a_changed_port_moves_the_server() {
        let health = Arc::new(Health::new(HEALTH_TIMEOUT, Arc::new(Stopped)));
        let mut s = servers(&health);
        let (first, second) = (free_port(), free_port());
        assert!(s.sync(&checks(first, 1)).is_empty());
        assert!(s.sync(&checks(second, 1)).is_empty());
        assert_eq!(s.ports(), BTreeMap::from([(web(), second)]));
        let old = get(IpAddr::V4(Ipv4Addr::LOCALHOST), first).unwrap_err();
        assert_eq!(old.kind(), std::io::ErrorKind::ConnectionRefused);
        assert!(get(IpAddr::V4(Ipv4Addr::LOCALHOST), second)
            .unwrap()
            .starts_with("HTTP/1.1 200 OK\r\n"));
    }

    #[test]
    fn a_taken_port_is_reported_naming_service_and_port_and_retried() {
        let health = Arc::new(Health::new(HEALTH_TIMEOUT, Arc::new(Stopped)));
        let mut s = servers(&health);
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let errors = s.sync(&checks(port, 1));
        assert_eq!(errors.len(), 1, "{errors:?}");
        let text = errors[0].to_string();
        assert!(
            text.starts_with(&format!(
                "service shop/web: cannot serve its healthCheckNodePort {port} on 127.0.0.1:{port}: "
            )),
            "{text}"
        );
        assert!(s.ports().is_empty(), "nothing half open");
        drop(taken);
        assert!(s.sync(&checks(port, 1)).is_empty(), "retried once free");
        assert_eq!(s.ports(), BTreeMap::from([(web(), port)]));
    }
}
