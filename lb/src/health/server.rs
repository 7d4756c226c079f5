//! [`HealthServer`]: HTTP/1.1 on `kubeProxyReplacementHealthzBindAddr`, answering from the shared
//! [`Health`] on a thread of its own with a one-thread tokio runtime, so the agent's loop never
//! waits on a client. [`serve_on_thread`] is that server without its answers, which the
//! metrics server shares.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::task::JoinSet;
use tracing::{debug, warn};

use super::{respond, Answer, Health};

/// The header weighted load balancers read a node's share from (the local endpoint count).
const ENDPOINT_WEIGHT: hyper::header::HeaderName =
    hyper::header::HeaderName::from_static("x-load-balancing-endpoint-weight");

/// How long a client may take to send its request headers before the connection is closed,
/// so idle or slow connections cannot pile up.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum HealthServerError {
    /// The address cannot be listened on (in use, not an address of this node, no permission).
    #[error("kubeProxyReplacementHealthzBindAddr={addr}: cannot listen there: {source}")]
    Bind {
        /// The option's value.
        addr: SocketAddr,
        /// The kernel's refusal.
        #[source]
        source: std::io::Error,
    },
    /// The server's thread or runtime could not be made.
    #[error("kubeProxyReplacementHealthzBindAddr={addr}: cannot start the server: {source}")]
    Start {
        /// The option's value.
        addr: SocketAddr,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
}

/// The running server. It serves until the process exits; dropping the handle does not stop it.
#[derive(Debug)]
pub struct HealthServer {
    local_addr: SocketAddr,
}

impl HealthServer {
    /// Listens on `addr` now (so a bad address is a start-up error) and serves `health` from a
    /// new thread.
    pub fn start(addr: SocketAddr, health: Arc<Health>) -> Result<Self, HealthServerError> {
        let bind = |source| HealthServerError::Bind { addr, source };
        let start = |source| HealthServerError::Start { addr, source };
        let listener = std::net::TcpListener::bind(addr).map_err(bind)?;
        let respond: Responder = Arc::new(move |path: &str| {
            let (state, now) = health.snapshot();
            respond(&state, now, path)
        });
        let local_addr = serve_on_thread("healthz", listener, respond).map_err(start)?;
        Ok(HealthServer { local_addr })
    }

    /// The address it listens on (the bound port when the option asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

/// Serves `listener` with `respond` on a new thread named `name`, with a one-thread tokio
/// runtime of its own, until the process exits; returns the address it listens on. The
/// listener is bound by the caller, so a bad address is the caller's start-up error.
pub(crate) fn serve_on_thread(
    name: &str,
    listener: std::net::TcpListener,
    respond: Responder,
) -> std::io::Result<SocketAddr> {
    listener.set_nonblocking(true)?;
    let local_addr = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || runtime.block_on(serve(listener, respond)))?;
    Ok(local_addr)
}

/// What a server answers a request's path with, computed at once (nothing in it waits).
pub(crate) type Responder = Arc<dyn Fn(&str) -> Answer + Send + Sync>;

/// Accepts connections on `listener` until the task is dropped, each served on a task of its
/// own with `respond`. The connections' tasks belong to this one, so dropping it (aborting the
/// task) closes the listening socket and every connection at once, freeing the port.
pub(super) async fn serve(listener: std::net::TcpListener, respond: Responder) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            warn!("HTTP server stopped: cannot register its socket: {e}");
            return;
        }
    };
    let mut connections = JoinSet::new();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors and the like: pause rather than spin.
                warn!("HTTP server cannot accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Forget the connections that have ended, so the set holds only live ones.
        while connections.try_join_next().is_some() {}
        let respond = Arc::clone(&respond);
        connections.spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                std::future::ready(Ok::<_, Infallible>(http_response(respond(
                    req.uri().path(),
                ))))
            });
            let served = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                debug!(%peer, "HTTP connection ended: {e}");
            }
        });
    }
}

/// `a` as an HTTP response.
fn http_response(a: Answer) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(a.body)));
    *response.status_mut() = StatusCode::from_u16(a.status).expect("answers are 200, 404 or 503");
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(a.content_type));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if let Some(weight) = a.endpoint_weight {
        headers.insert(ENDPOINT_WEIGHT, HeaderValue::from(weight));
    }
    response
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::SystemTime;

    use super::*;
    use crate::health::{Clock, HEALTH_TIMEOUT};

    /// A clock stopped at 2026-12-03T08:00:00Z.
    #[derive(Debug)]
    struct Stopped;

    impl Clock for Stopped {
        fn now(&self) -> SystemTime {
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_284_800)
        }
    }

    /// `METHOD path` over HTTP/1.1 with `Connection: close`; the whole response as text.
    fn request(addr: SocketAddr, method: &str, path: &str) -> String {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    }

    fn started(health: &Arc<Health>) -> HealthServer {
        HealthServer::start("127.0.0.1:0".parse().unwrap(), Arc::clone(health)).unwrap()
    }

    #[test]
    fn serves_status_headers_and_body_over_http() {
        let health = Arc::new(Health::new(HEALTH_TIMEOUT, Arc::new(Stopped)));
        let server = started(&health);
        let ok = request(server.local_addr(), "GET", "/healthz?verbose=1");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        let head = ok.split("\r\n\r\n").next().unwrap().to_ascii_lowercase();
        assert!(
            head.contains("\r\ncontent-type: application/json\r\n"),
            "{ok}"
        );
        assert!(
            head.contains("\r\nx-content-type-options: nosniff\r\n"),
            "{ok}"
        );
        assert!(
            ok.ends_with(
                r#"{"lastUpdated":"2026-12-03T08:00:00Z","currentTime":"2026-12-03T08:00:00Z","nodeEligible":true,"healthy":true}"#
            ),
            "{ok}"
        );

        health.set_node_eligible(false);
        let healthz = request(server.local_addr(), "GET", "/healthz");
        assert!(
            healthz.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{healthz}"
        );
        let livez = request(server.local_addr(), "GET", "/livez");
        assert!(livez.starts_with("HTTP/1.1 200 OK\r\n"), "{livez}");
    }

    #[test]
    fn other_methods_get_the_same_status_and_head_no_body() {
        let health = Arc::new(Health::new(HEALTH_TIMEOUT, Arc::new(Stopped)));
        let server = started(&health);
        let post = request(server.local_addr(), "POST", "/livez");
        assert!(post.starts_with("HTTP/1.1 200 OK\r\n"), "{post}");
        assert!(post.contains(r#""healthy":true"#), "{post}");
        let head = request(server.local_addr(), "HEAD", "/livez");
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(
            head.ends_with("\r\n\r\n"),
            "HEAD answered with a body: {head}"
        );
        let missing = request(server.local_addr(), "GET", "/metrics");
        assert!(
            missing.starts_with("HTTP/1.1 404 Not Found\r\n"),
            "{missing}"
        );
        assert!(missing.ends_with("404 page not found\n"), "{missing}");
    }

    #[test]
    fn an_address_in_use_is_an_error_naming_the_option_and_address() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let health = Arc::new(Health::new(HEALTH_TIMEOUT, Arc::new(Stopped)));
        let err = HealthServer::start(addr, health).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("kubeProxyReplacementHealthzBindAddr={addr}: ")),
            "{err}"
        );
        assert!(err.contains("in use"), "{err}");
    }

    #[test]
    fn an_address_not_on_this_node_is_an_error_naming_the_option_and_address() {
        // TEST-NET-1 (RFC 5737): assigned to no host.
        let addr: SocketAddr = "192.0.2.1:10256".parse().unwrap();
        let health = Arc::new(Health::new(HEALTH_TIMEOUT, Arc::new(Stopped)));
        let err = HealthServer::start(addr, health).unwrap_err().to_string();
        assert!(
            err.starts_with("kubeProxyReplacementHealthzBindAddr=192.0.2.1:10256: cannot listen"),
            "{err}"
        );
        assert!(err.contains("assign requested address"), "{err}");
    }
}
