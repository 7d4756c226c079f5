//! [`MetricsServer`]: `GET /metrics` on `prometheus.port` of every node address, on the same
//! kind of server thread as the health server.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::sync::Arc;

use super::Metrics;
use crate::health::{serve_on_thread, Answer, Responder};

/// The OpenMetrics text format, which Prometheus asks for and reads.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsServerError {
    /// The port cannot be listened on (in use, no permission).
    #[error("prometheus.port={port}: cannot listen on {addr}: {source}")]
    Bind {
        /// The option's value.
        port: u16,
        /// The address tried.
        addr: SocketAddr,
        /// The kernel's refusal.
        #[source]
        source: std::io::Error,
    },
    /// The server's thread or runtime could not be made.
    #[error("prometheus.port={port}: cannot start the metrics server: {source}")]
    Start {
        /// The option's value.
        port: u16,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
}

/// The running server. It serves until the process exits.
#[derive(Debug)]
pub struct MetricsServer {
    local_addr: SocketAddr,
}

impl MetricsServer {
    /// Listens on `port` of every address now (so a taken port is a start-up error) and
    /// serves `metrics` from a new thread. Every address means `[::]`, which takes IPv4 too,
    /// or `0.0.0.0` where the kernel has no IPv6.
    pub fn start(port: u16, metrics: Arc<Metrics>) -> Result<Self, MetricsServerError> {
        let listener = listen(port)?;
        let respond: Responder = Arc::new(move |path: &str| answer(&metrics, path));
        let local_addr = serve_on_thread("metrics", listener, respond)
            .map_err(|source| MetricsServerError::Start { port, source })?;
        Ok(MetricsServer { local_addr })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

fn listen(port: u16) -> Result<TcpListener, MetricsServerError> {
    let any6 = SocketAddr::from((Ipv6Addr::UNSPECIFIED, port));
    let bind = |addr: SocketAddr| {
        TcpListener::bind(addr).map_err(|source| MetricsServerError::Bind { port, addr, source })
    };
    match TcpListener::bind(any6) {
        Ok(listener) => Ok(listener),
        Err(e) if e.raw_os_error() == Some(nix::libc::EAFNOSUPPORT) => {
            bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))
        }
        Err(source) => Err(MetricsServerError::Bind {
            port,
            addr: any6,
            source,
        }),
    }
}

/// `/metrics` is the metrics; any other path is not found.
fn answer(metrics: &Metrics, path: &str) -> Answer {
    if path == "/metrics" {
        Answer {
            status: 200,
            content_type: OPENMETRICS,
            body: metrics.encode(),
            endpoint_weight: None,
        }
    } else {
        Answer {
            status: 404,
            content_type: "text/plain; charset=utf-8",
            body: "404 page not found\n".to_owned(),
            endpoint_weight: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::{Duration, SystemTime};

    use super::*;

    /// `GET path` to `port` on the loopback address; the whole response as text.
    fn get(port: u16, path: &str) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    }

    /// A port nothing listens on now (the kernel's pick, released).
    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[test]
    fn serves_openmetrics_on_metrics_and_not_found_elsewhere() {
        let metrics = Arc::new(Metrics::new(SystemTime::now(), true));
        let port = free_port();
        let server = MetricsServer::start(port, Arc::clone(&metrics)).unwrap();
        assert_eq!(server.local_addr().port(), port);
        let ok = get(port, "/metrics");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.to_ascii_lowercase()
                .contains("\r\ncontent-type: application/openmetrics-text; version=1.0.0"),
            "{ok}"
        );
        assert!(ok.contains("\nlb_services 0\n"), "{ok}");
        assert!(ok.ends_with("# EOF\n"), "{ok}");
        let missing = get(port, "/healthz");
        assert!(
            missing.starts_with("HTTP/1.1 404 Not Found\r\n"),
            "{missing}"
        );
    }

    #[test]
    fn a_taken_port_is_an_error_naming_the_option_and_address() {
        let taken = TcpListener::bind("[::]:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let metrics = Arc::new(Metrics::new(SystemTime::now(), true));
        let err = MetricsServer::start(port, metrics).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "prometheus.port={port}: cannot listen on [::]:{port}: "
            )),
            "{err}"
        );
        assert!(err.contains("in use"), "{err}");
    }
}
