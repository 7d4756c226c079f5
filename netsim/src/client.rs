//! The client side of the identity servers: one exchange (connect or send, then read the
//! answer), run by the `netsim-client` binary inside a node or pod, reported as JSON lines.
//! [`crate::held`] keeps a socket open across exchanges instead.
//!
//! The exchange runs in a process of its own because cgroup BPF hooks (connect, sendmsg,
//! recvmsg, getpeername) see calls by the caller's cgroup, and only a whole process can be put
//! into an ordinary cgroup.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How the client talks to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientMode {
    /// connect(), getpeername(), read the answer.
    Tcp,
    /// connect() a UDP socket, send(), recv(), getpeername().
    UdpConnected,
    /// sendto() and recvfrom() on an unconnected UDP socket; the peer is recvfrom's source.
    UdpUnconnected,
    /// connect(), getpeername(), `GET /` over HTTP/1.0; the answer is the body of a `200`.
    Http,
}

impl ClientMode {
    /// The name on the `netsim-client` command line.
    pub fn as_arg(self) -> &'static str {
        match self {
            ClientMode::Tcp => "tcp",
            ClientMode::UdpConnected => "udp-connected",
            ClientMode::UdpUnconnected => "udp-unconnected",
            ClientMode::Http => "http",
        }
    }

    /// The mode named `arg` on the command line.
    pub fn from_arg(arg: &str) -> Option<ClientMode> {
        [
            ClientMode::Tcp,
            ClientMode::UdpConnected,
            ClientMode::UdpUnconnected,
            ClientMode::Http,
        ]
        .into_iter()
        .find(|m| m.as_arg() == arg)
    }
}

/// What one exchange saw; one JSON line of `netsim-client`'s output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// The server's line, without its newline.
    pub answer: Option<String>,
    /// The client socket's own address (getsockname).
    pub local: Option<SocketAddr>,
    /// The peer: getpeername() for TCP and connected UDP, recvfrom's source for unconnected UDP.
    pub peer: Option<SocketAddr>,
    /// What failed, with the system call's name, e.g. `connect: Connection refused (os error 111)`.
    pub error: Option<String>,
    /// The errno of that failure, if it had one.
    pub errno: Option<i32>,
}

impl Reply {
    /// The identity that answered (the answer's first word).
    pub fn identity(&self) -> Option<&str> {
        self.answer.as_deref()?.split_whitespace().next()
    }

    /// The client address the server saw (the answer's second word).
    pub fn seen_by_server(&self) -> Option<SocketAddr> {
        self.answer
            .as_deref()?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }

    pub(crate) fn failed(op: &str, e: &std::io::Error, local: Option<SocketAddr>) -> Reply {
        Reply {
            answer: None,
            local,
            peer: None,
            error: Some(format!("{op}: {e}")),
            errno: errno_of(e),
        }
    }
}

/// The errno a failure stands for. The standard library's `connect_timeout` reports its own
/// deadline passing as a `TimedOut` error without one (the connect was still in progress): that
/// is ETIMEDOUT to the caller, not an errno-less failure.
fn errno_of(e: &std::io::Error) -> Option<i32> {
    e.raw_os_error()
        .or_else(|| (e.kind() == std::io::ErrorKind::TimedOut).then_some(nix::libc::ETIMEDOUT))
}

/// One exchange with the server at `target`, from the calling process, giving up after
/// `timeout` per blocking step.
pub fn exchange(mode: ClientMode, target: SocketAddr, timeout: Duration) -> Reply {
    exchange_from(mode, target, timeout, 0)
}

/// [`exchange`] from a UDP socket bound to `source_port` (0: any); TCP and HTTP ignore it.
pub fn exchange_from(
    mode: ClientMode,
    target: SocketAddr,
    timeout: Duration,
    source_port: u16,
) -> Reply {
    match mode {
        ClientMode::Tcp => tcp(target, timeout),
        ClientMode::UdpConnected => udp_connected(target, timeout, source_port),
        ClientMode::UdpUnconnected => udp_unconnected(target, timeout, source_port),
        ClientMode::Http => http(target, timeout),
    }
}

/// A TCP connection to `target` with its local address and the peer the application sees
/// (getpeername), or the reply that says which of those calls failed.
fn tcp_connect(
    target: SocketAddr,
    timeout: Duration,
) -> Result<(TcpStream, Option<SocketAddr>, SocketAddr), Reply> {
    let stream = TcpStream::connect_timeout(&target, timeout)
        .map_err(|e| Reply::failed("connect", &e, None))?;
    let local = stream.local_addr().ok();
    let peer = stream
        .peer_addr()
        .map_err(|e| Reply::failed("getpeername", &e, local))?;
    Ok((stream, local, peer))
}

fn tcp(target: SocketAddr, timeout: Duration) -> Reply {
    let (stream, local, peer) = match tcp_connect(target, timeout) {
        Ok(connected) => connected,
        Err(reply) => return reply,
    };
    if let Err(e) = stream.set_read_timeout(Some(timeout)) {
        return Reply::failed("setsockopt(SO_RCVTIMEO)", &e, local);
    }
    // The server's first line is the answer; closing then ends the connection.
    let mut answer = String::new();
    if let Err(e) = BufReader::new(&stream).read_line(&mut answer) {
        return Reply::failed("read", &e, local);
    }
    Reply {
        answer: Some(answer.trim_end().to_owned()),
        local,
        peer: Some(peer),
        error: None,
        errno: None,
    }
}

fn http(target: SocketAddr, timeout: Duration) -> Reply {
    let (mut stream, local, peer) = match tcp_connect(target, timeout) {
        Ok(connected) => connected,
        Err(reply) => return reply,
    };
    let request = format!("GET / HTTP/1.0\r\nHost: {target}\r\nUser-Agent: netsim-client\r\n\r\n");
    if let Err(e) = stream
        .set_write_timeout(Some(timeout))
        .and_then(|()| stream.write_all(request.as_bytes()))
    {
        return Reply::failed("write", &e, local);
    }
    if let Err(e) = stream.set_read_timeout(Some(timeout)) {
        return Reply::failed("setsockopt(SO_RCVTIMEO)", &e, local);
    }
    let mut response = String::new();
    if let Err(e) = stream.read_to_string(&mut response) {
        return Reply::failed("read", &e, local);
    }
    match http_body(&response) {
        Ok(body) => Reply {
            answer: Some(body.trim_end().to_owned()),
            local,
            peer: Some(peer),
            error: None,
            errno: None,
        },
        Err(why) => Reply {
            answer: None,
            local,
            peer: Some(peer),
            error: Some(format!("http: {why}")),
            errno: None,
        },
    }
}

/// The body of an HTTP response whose status is 200, or why it is not one.
fn http_body(response: &str) -> Result<&str, String> {
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no end of headers in {} bytes", response.len()))?;
    let status = head.lines().next().unwrap_or_default();
    let code = status.split_whitespace().nth(1);
    if !status.starts_with("HTTP/1.") || code != Some("200") {
        return Err(format!("status line {status:?}, expected HTTP/1.x 200"));
    }
    Ok(body)
}

fn unspecified(target: SocketAddr, port: u16) -> SocketAddr {
    match target {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, port).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, port).into(),
    }
}

pub(crate) fn udp_socket(target: SocketAddr, timeout: Duration) -> Result<UdpSocket, Reply> {
    udp_socket_from(target, timeout, 0)
}

/// A UDP socket of `target`'s family bound to `port` (0: any).
fn udp_socket_from(target: SocketAddr, timeout: Duration, port: u16) -> Result<UdpSocket, Reply> {
    let socket =
        UdpSocket::bind(unspecified(target, port)).map_err(|e| Reply::failed("bind", &e, None))?;
    socket
        .set_read_timeout(Some(timeout))
        .map_err(|e| Reply::failed("setsockopt(SO_RCVTIMEO)", &e, None))?;
    Ok(socket)
}

fn udp_connected(target: SocketAddr, timeout: Duration, port: u16) -> Reply {
    let socket = match udp_socket_from(target, timeout, port) {
        Ok(s) => s,
        Err(reply) => return reply,
    };
    if let Err(e) = socket.connect(target) {
        return Reply::failed("connect", &e, None);
    }
    let local = socket.local_addr().ok();
    if let Err(e) = socket.send(b"hello\n") {
        return Reply::failed("send", &e, local);
    }
    let mut buf = [0u8; 2048];
    let n = match socket.recv(&mut buf) {
        Ok(n) => n,
        Err(e) => return Reply::failed("recv", &e, local),
    };
    let peer = match socket.peer_addr() {
        Ok(p) => p,
        Err(e) => return Reply::failed("getpeername", &e, local),
    };
    Reply {
        answer: Some(String::from_utf8_lossy(&buf[..n]).trim_end().to_owned()),
        local,
        peer: Some(peer),
        error: None,
        errno: None,
    }
}

fn udp_unconnected(target: SocketAddr, timeout: Duration, port: u16) -> Reply {
    let socket = match udp_socket_from(target, timeout, port) {
        Ok(s) => s,
        Err(reply) => return reply,
    };
    if let Err(e) = socket.send_to(b"hello\n", target) {
        return Reply::failed("sendto", &e, None);
    }
    let local = socket.local_addr().ok();
    let mut buf = [0u8; 2048];
    let (n, from) = match socket.recv_from(&mut buf) {
        Ok(r) => r,
        Err(e) => return Reply::failed("recvfrom", &e, local),
    };
    Reply {
        answer: Some(String::from_utf8_lossy(&buf[..n]).trim_end().to_owned()),
        local,
        peer: Some(from),
        error: None,
        errno: None,
    }
}

/// Finds a binary of this crate (`netsim-client`, `netsim-server`) in the cargo target
/// directory of the running executable: next to it, or one level up when it runs from `deps/`
/// (as test binaries do). `NETSIM_BIN_DIR` overrides the search.
pub fn binary_path(name: &str) -> Result<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = std::env::var_os("NETSIM_BIN_DIR") {
        dirs.push(PathBuf::from(dir));
    } else if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            dirs.push(dir.to_owned());
            if dir.file_name().is_some_and(|n| n == "deps") {
                dirs.extend(dir.parent().map(ToOwned::to_owned));
            }
        }
    }
    dirs.iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| Error::BinaryMissing {
            name: name.to_owned(),
            looked_in: dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connect_that_outlives_its_deadline_reports_etimedout() {
        // What `TcpStream::connect_timeout` returns when nothing answered the SYN in time.
        let quiet = std::io::Error::new(std::io::ErrorKind::TimedOut, "connection timed out");
        let reply = Reply::failed("connect", &quiet, None);
        assert_eq!(reply.errno, Some(nix::libc::ETIMEDOUT));
        let refused = std::io::Error::from_raw_os_error(nix::libc::ECONNREFUSED);
        assert_eq!(
            Reply::failed("connect", &refused, None).errno,
            Some(nix::libc::ECONNREFUSED)
        );
        let other = std::io::Error::other("no errno");
        assert_eq!(Reply::failed("connect", &other, None).errno, None);
    }

    #[test]
    fn http_body_of_a_200_is_the_identity_line() {
        let peer: SocketAddr = "10.0.1.5:41234".parse().unwrap();
        let response = crate::server::http_response("backend-1", peer);
        assert_eq!(http_body(&response), Ok("backend-1 10.0.1.5:41234\n"));
    }

    #[test]
    fn http_body_refuses_other_statuses_and_garbage() {
        let err = http_body("HTTP/1.1 404 Not Found\r\n\r\nnope").unwrap_err();
        assert!(err.contains("404"), "{err}");
        assert!(http_body("backend-1 10.0.1.5:1\n").is_err());
    }
}
