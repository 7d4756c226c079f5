//! Identity servers: TCP and UDP servers that answer every connection or datagram with one line,
//! `<identity> <peer-address-they-saw>\n` (e.g. `backend-1 10.0.1.5:41234`), so a test learns
//! which backend answered and what source address reached it.
//!
//! A TCP connection gets the line when it is accepted, and again for every line the client
//! sends on it, until the client closes: a connection held open across steps can show that it
//! still reaches the same backend.
//!
//! [`IdentityServer`] runs the loop on a thread of the calling process, with a socket created
//! inside the namespace (a socket stays in the namespace it was created in, whatever thread
//! uses it). The `netsim-server` binary runs the same loop as a process of its own, for servers
//! that must sit in a cgroup.

use std::io::{BufRead, BufReader, Write};
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
    Tcp,
    Udp,
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

/// A bound socket of either transport, created inside a namespace.
#[derive(Debug)]
pub enum BoundSocket {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

impl BoundSocket {
    /// Binds (and for TCP, listens on) `addr` in the calling thread's network namespace.
    pub fn bind(proto: Proto, addr: SocketAddr) -> std::io::Result<BoundSocket> {
        Ok(match proto {
            Proto::Tcp => BoundSocket::Tcp(TcpListener::bind(addr)?),
            Proto::Udp => BoundSocket::Udp(UdpSocket::bind(addr)?),
        })
    }

    /// The address the socket is bound to (with the port the kernel chose for port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self {
            BoundSocket::Tcp(s) => s.local_addr(),
            BoundSocket::Udp(s) => s.local_addr(),
        }
    }

    fn as_raw_fd(&self) -> RawFd {
        match self {
            BoundSocket::Tcp(s) => s.as_raw_fd(),
            BoundSocket::Udp(s) => s.as_raw_fd(),
        }
    }

    /// Answers peers until `stop` is set and the socket is shut down.
    pub fn serve(self, identity: &str, stop: &Arc<AtomicBool>) {
        match self {
            BoundSocket::Tcp(listener) => serve_tcp(&listener, identity, stop),
            BoundSocket::Udp(socket) => serve_udp(&socket, identity, stop),
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

fn serve_udp(socket: &UdpSocket, identity: &str, stop: &AtomicBool) {
    let mut buf = [0u8; 2048];
    loop {
        let received = socket.recv_from(&mut buf);
        if stop.load(Ordering::Acquire) {
            return;
        }
        match received {
            Ok((_, peer)) => {
                if let Err(e) = socket.send_to(identity_line(identity, peer).as_bytes(), peer) {
                    eprintln!("netsim-server {identity}: send to {peer}: {e}");
                }
            }
            Err(e) => eprintln!("netsim-server {identity}: recvfrom: {e}"),
        }
    }
}

impl IdentityServer {
    /// Starts serving on `socket`, already bound inside its namespace: it accepts from the
    /// moment this returns, since the socket is bound (and listening) before.
    pub fn start(socket: BoundSocket, identity: &str, place: &str) -> Result<IdentityServer> {
        let proto = match socket {
            BoundSocket::Tcp(_) => Proto::Tcp,
            BoundSocket::Udp(_) => Proto::Udp,
        };
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

    /// TCP or UDP.
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
