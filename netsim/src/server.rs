//! Identity servers: TCP and UDP servers that answer every connection or datagram with one line,
//! `<identity> <peer-address-they-saw>\n` (e.g. `backend-1 10.0.1.5:41234`), so a test learns
//! which backend answered and what source address reached it. In HTTP mode the same line is the
//! body of a `200 OK` answer to any request, so `curl` works against a backend too.
//!
//! A TCP connection gets the line when it is accepted, and again for every line the client
//! sends on it, until the client closes: a connection held open across steps can show that it
//! still reaches the same backend.
//!
//! [`IdentityServer`] runs the loop on a thread of the calling process, with a socket created
//! inside the namespace (a socket stays in the namespace it was created in, whatever thread
//! uses it). The `netsim-server` binary runs the same loop as a process of its own, for servers
//! that must sit in a cgroup.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Transport of a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// The identity line on every accepted connection.
    Tcp,
    /// The identity line in answer to every datagram.
    Udp,
    /// TCP answering every HTTP request with `200 OK` and the identity line as the body.
    Http,
}

impl Proto {
    /// The name on the `netsim-server` command line.
    pub fn as_arg(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Http => "http",
        }
    }

    /// The protocol named `arg` on the command line.
    pub fn from_arg(arg: &str) -> Option<Proto> {
        [Proto::Tcp, Proto::Udp, Proto::Http]
            .into_iter()
            .find(|p| p.as_arg() == arg)
    }
}

/// The largest request head (request line and headers) an HTTP server reads.
const MAX_REQUEST_HEAD: usize = 8192;

/// The answer of an HTTP server to any request: `200 OK` with the identity line as the body.
pub fn http_response(identity: &str, peer: SocketAddr) -> String {
    let body = identity_line(identity, peer);
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// The line a server sends to a peer.
pub fn identity_line(identity: &str, peer: SocketAddr) -> String {
    format!("{identity} {peer}\n")
}

/// A server running on a thread of this process; stopped and joined on drop.
#[derive(Debug)]
pub struct IdentityServer {
    proto: Proto,
    local: SocketAddr,
    fd: RawFd,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// A bound socket of any transport, created inside a namespace.
#[derive(Debug)]
pub enum BoundSocket {
    Tcp(TcpListener),
    Udp(UdpSocket),
    Http(TcpListener),
}

impl BoundSocket {
    /// Binds (and for TCP, listens on) `addr` in the calling thread's network namespace.
    pub fn bind(proto: Proto, addr: SocketAddr) -> std::io::Result<BoundSocket> {
        Ok(match proto {
            Proto::Tcp => BoundSocket::Tcp(TcpListener::bind(addr)?),
            Proto::Udp => BoundSocket::Udp(UdpSocket::bind(addr)?),
            Proto::Http => BoundSocket::Http(TcpListener::bind(addr)?),
        })
    }

    /// The address the socket is bound to (with the port the kernel chose for port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self {
            BoundSocket::Tcp(s) | BoundSocket::Http(s) => s.local_addr(),
            BoundSocket::Udp(s) => s.local_addr(),
        }
    }

    fn as_raw_fd(&self) -> RawFd {
        match self {
            BoundSocket::Tcp(s) | BoundSocket::Http(s) => s.as_raw_fd(),
            BoundSocket::Udp(s) => s.as_raw_fd(),
        }
    }

    /// Answers peers until `stop` is set and the socket is shut down.
    pub fn serve(self, identity: &str, stop: &Arc<AtomicBool>) {
        match self {
            BoundSocket::Tcp(listener) => serve_tcp(&listener, identity, stop),
            BoundSocket::Udp(socket) => serve_udp(&socket, identity, stop),
            BoundSocket::Http(listener) => serve_http(&listener, identity, stop),
        }
    }

    fn proto(&self) -> Proto {
        match self {
            BoundSocket::Tcp(_) => Proto::Tcp,
            BoundSocket::Udp(_) => Proto::Udp,
            BoundSocket::Http(_) => Proto::Http,
        }
    }
}

fn serve_tcp(listener: &TcpListener, identity: &str, stop: &Arc<AtomicBool>) {
    loop {
        let accepted = listener.accept();
        if stop.load(Ordering::Acquire) {
            return;
        }
        match accepted {
            Ok((stream, peer)) => {
                let (identity, stop) = (identity.to_owned(), stop.clone());
                // One thread per connection, so a held connection does not block new ones.
                let spawned = std::thread::Builder::new()
                    .name(format!("netsim-{identity}-conn"))
                    .spawn(move || serve_connection(stream, peer, &identity, &stop));
                if let Err(e) = spawned {
                    eprintln!("netsim-server: a thread for {peer}: {e}");
                }
            }
            Err(e) => eprintln!("netsim-server {identity}: accept: {e}"),
        }
    }
}

fn serve_http(listener: &TcpListener, identity: &str, stop: &AtomicBool) {
    loop {
        let accepted = listener.accept();
        if stop.load(Ordering::Acquire) {
            return;
        }
        match accepted {
            // One connection at a time: a demo's backend, not a web server.
            Ok((mut stream, peer)) => {
                if let Err(e) = answer_http(&mut stream, identity, peer) {
                    eprintln!("netsim-server {identity}: http from {peer}: {e}");
                }
            }
            Err(e) => eprintln!("netsim-server {identity}: accept: {e}"),
        }
    }
}

/// How often a connection's thread looks at the stop flag while its client is quiet.
const CONNECTION_POLL: Duration = Duration::from_millis(200);

/// Answers on accept and after every line, until the client closes or the server stops.
fn serve_connection(mut stream: TcpStream, peer: SocketAddr, identity: &str, stop: &AtomicBool) {
    let line = identity_line(identity, peer);
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    // The read timeout only bounds how long a stopped server's thread lingers.
    let _ = stream.set_read_timeout(Some(CONNECTION_POLL));
    if let Err(e) = stream.write_all(line.as_bytes()) {
        eprintln!("netsim-server {identity}: write to {peer}: {e}");
        return;
    }
    let Ok(reader) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(reader);
    let mut request = String::new();
    while !stop.load(Ordering::Acquire) {
        match reader.read_line(&mut request) {
            Ok(0) => return,
            Ok(_) if request.ends_with('\n') => {
                request.clear();
                if stream.write_all(line.as_bytes()).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

/// Reads the request head (up to the blank line) and answers with [`http_response`].
fn answer_http(stream: &mut TcpStream, identity: &str, peer: SocketAddr) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 || head.len() + n > MAX_REQUEST_HEAD {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "request head not ended by a blank line within 8 KiB",
            ));
        }
        head.extend_from_slice(&buf[..n]);
    }
    stream.write_all(http_response(identity, peer).as_bytes())
}

fn serve_udp(socket: &UdpSocket, identity: &str, stop: &AtomicBool) {
    let mut buf = [0u8; 2048];
    loop {
        // Not UdpSocket::recv_from: the shutdown that stops the server wakes recvfrom with no
        // source address, which std asserts against (a panic in this thread at every stop).
        let received = nix::sys::socket::recvfrom::<nix::sys::socket::SockaddrStorage>(
            socket.as_raw_fd(),
            &mut buf,
        );
        if stop.load(Ordering::Acquire) {
            return;
        }
        let peer = match received {
            Ok((_, Some(from))) => from
                .as_sockaddr_in()
                .map(|a| SocketAddr::from(std::net::SocketAddrV4::from(*a)))
                .or_else(|| {
                    from.as_sockaddr_in6()
                        .map(|a| SocketAddr::from(std::net::SocketAddrV6::from(*a)))
                }),
            Ok((_, None)) => None,
            Err(e) => {
                eprintln!("netsim-server {identity}: recvfrom: {e}");
                continue;
            }
        };
        let Some(peer) = peer else {
            continue;
        };
        if let Err(e) = socket.send_to(identity_line(identity, peer).as_bytes(), peer) {
            eprintln!("netsim-server {identity}: send to {peer}: {e}");
        }
    }
}

impl IdentityServer {
    /// Starts serving on `socket`, already bound inside its namespace: it accepts from the
    /// moment this returns, since the socket is bound (and listening) before.
    pub fn start(socket: BoundSocket, identity: &str, place: &str) -> Result<IdentityServer> {
        let proto = socket.proto();
        let local = socket.local_addr().map_err(|source| Error::Socket {
            ns: place.to_owned(),
            op: "getsockname of a server socket".into(),
            source,
        })?;
        let fd = socket.as_raw_fd();
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        let identity = identity.to_owned();
        let thread = std::thread::Builder::new()
            .name(format!("netsim-{identity}"))
            .spawn(move || socket.serve(&identity, &thread_stop))
            .map_err(|source| Error::Socket {
                ns: place.to_owned(),
                op: "start a server thread".into(),
                source,
            })?;
        Ok(IdentityServer {
            proto,
            local,
            fd,
            stop,
            thread: Some(thread),
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// TCP, UDP or HTTP.
    pub fn proto(&self) -> Proto {
        self.proto
    }
}

impl Drop for IdentityServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // shutdown() wakes a thread blocked in accept() (listening TCP) or recvfrom() (UDP, where
        // it also reports ENOTCONN but wakes the reader all the same). The fd is still open:
        // the serving thread owns the socket until it returns.
        // SAFETY: shutdown has no memory-safety preconditions.
        unsafe { libc::shutdown(self.fd, libc::SHUT_RDWR) };
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
