//! What the parent and the child of the differential tests say to each other, one JSON line
//! each way per call: the parent sends a [`Call`], the child runs it with real sockets and
//! answers with a [`Report`].

use std::net::SocketAddr;

use lb::model::L4Protocol;
use serde::{Deserialize, Serialize};

/// One socket call (or a step the calls need) for the child to make.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Call {
    /// Start a backend at this address that answers with its own address (TCP: on every
    /// connection, then closes; UDP: to every datagram).
    Listen(L4Protocol, SocketAddr),
    /// A TCP socket of the address's family connects, asks getpeername, and reads who
    /// answered. The socket stays open for [`Call::PeerName`].
    TcpConnect(SocketAddr),
    /// A UDP socket connects, asks getpeername, sends a datagram and receives the answer with
    /// its source (recvfrom).
    UdpConnect(SocketAddr),
    /// An unconnected UDP socket (with IP_RECVERR, so a refusal is reported) sends a datagram
    /// with sendto and receives the answer with recvfrom.
    UdpSendTo(SocketAddr),
    /// A socket of this protocol binds to the address, with `IPV6_V6ONLY` set when the flag
    /// says so (IPv6 addresses only).
    Bind(L4Protocol, SocketAddr, bool),
    /// getpeername again on the `n`th socket [`Call::TcpConnect`] kept (counting from 0).
    PeerName(usize),
}

/// The syscall that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stage {
    /// socket(2) or a socket option: the test's own problem.
    Socket,
    /// connect(2).
    Connect,
    /// getpeername(2).
    PeerName,
    /// send(2) or sendto(2).
    Send,
    /// read(2) or recvfrom(2).
    Recv,
    /// bind(2).
    Bind,
    /// A listener's bind or listen: the test's own problem.
    Listen,
}

/// What the application saw: the addresses the calls returned, and the first failure.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The socket's cookie (`SO_COOKIE`), as the programs see it.
    pub cookie: u64,
    /// What getpeername returned.
    pub peer: Option<SocketAddr>,
    /// Who answered: the backend's own address, as it wrote it.
    pub answer: Option<SocketAddr>,
    /// The source recvfrom returned.
    pub from: Option<SocketAddr>,
    /// The call that failed and its errno; nothing after it was attempted.
    pub error: Option<(Stage, i32)>,
}

impl std::fmt::Display for Report {
    /// `socket 123: peer 10.96.0.1:80, answer 127.0.0.2:8000` or `... failed: recv ECONNREFUSED`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "socket {}:", self.cookie)?;
        let fields = [
            ("peer", self.peer),
            ("answer", self.answer),
            ("from", self.from),
        ];
        for (name, value) in fields {
            if let Some(v) = value {
                write!(f, " {name} {v}")?;
            }
        }
        match self.error {
            Some((stage, errno)) => write!(
                f,
                " failed: {stage:?} {:?}",
                nix::errno::Errno::from_raw(errno)
            ),
            None => f.write_str(" ok"),
        }
    }
}
