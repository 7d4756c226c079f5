//! Netlink `sock_diag` for UDP sockets: list the connected ones of the calling thread's network
//! namespace and destroy one (`SOCK_DESTROY`), the way `ss -K` does.
//!
//! A destroyed UDP socket gets `ECONNABORTED` as its pending error (the next `recv`, or
//! `getsockopt(SO_ERROR)`, reports it) and is disconnected, so the application notices, and its
//! next `connect` is load-balanced again. This needs `CONFIG_INET_DIAG`,
//! `CONFIG_INET_UDP_DIAG` and `CONFIG_INET_DIAG_DESTROY`; [`probe`] tells which is missing.
//!
//! The messages are those of `netlink-packet-sock-diag` over a `netlink-sys` socket; sock_diag
//! sockets see only their own network namespace, so callers enter a pod's namespace on a
//! thread first ([`super::pod_netns`]).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NetlinkSerializable, NLM_F_ACK, NLM_F_DUMP,
    NLM_F_REQUEST,
};
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_UDP};
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
use netlink_packet_sock_diag::{SockDiagDestroy, SockDiagMessage};
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket};

/// A sock_diag operation that failed, with the system call or message it was.
#[derive(Debug, thiserror::Error)]
pub enum SockDiagError {
    /// The netlink socket could not be opened, or a send or receive on it failed.
    #[error("sock_diag: {op}: {source}")]
    Io {
        /// What was done, e.g. `socket(NETLINK_SOCK_DIAG)`.
        op: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The kernel refused a request (its errno, as an I/O error).
    #[error("sock_diag: {request} refused: {source}")]
    Refused {
        /// The request, e.g. `SOCK_DESTROY 10.0.1.5:40000 -> 10.0.2.7:53`.
        request: String,
        /// The kernel's errno.
        #[source]
        source: std::io::Error,
    },
    /// A message from the kernel could not be decoded.
    #[error("sock_diag: undecodable answer to {request}: {detail}")]
    Decode {
        /// The request.
        request: String,
        /// What was wrong.
        detail: String,
    },
}

impl SockDiagError {
    /// The kernel's errno, when the kernel refused the request.
    pub fn errno(&self) -> Option<i32> {
        match self {
            SockDiagError::Refused { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// A connected UDP socket as sock_diag lists it: enough to destroy exactly this one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpSocketEntry {
    family: u8,
    id: SocketId,
}

impl UdpSocketEntry {
    /// The socket's local address.
    pub fn local(&self) -> SocketAddr {
        SocketAddr::new(self.id.source_address, self.id.source_port)
    }

    /// The address it is connected to (IPv4-mapped for an IPv6 socket connected to IPv4).
    pub fn peer(&self) -> SocketAddr {
        SocketAddr::new(self.id.destination_address, self.id.destination_port)
    }

    /// The socket's cookie, as `bpf_get_socket_cookie` gives it (the kernel sends it as two
    /// 32-bit words in host order, low word first).
    pub fn cookie(&self) -> u64 {
        let word = |i: usize| {
            let bytes: [u8; 4] = self.id.cookie[i * 4..i * 4 + 4]
                .try_into()
                .expect("four bytes");
            u64::from(u32::from_ne_bytes(bytes))
        };
        word(0) | (word(1) << 32)
    }
}

/// How far the kernel supports destroying UDP sockets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Support {
    /// Listing and destroying both work.
    Available,
    /// Something is missing; the text says which kernel option or privilege.
    Unavailable(String),
}

impl Support {
    /// `Enabled`, or `Disabled (why)`, for `lbctl status --verbose`.
    pub fn describe(&self) -> String {
        match self {
            Support::Available => "Enabled".to_owned(),
            Support::Unavailable(why) => format!("Disabled ({why})"),
        }
    }
}

/// The socket cookie that tells the kernel not to check the cookie (`INET_DIAG_NOCOOKIE`).
const NO_COOKIE: [u8; 8] = [0xff; 8];
/// Large enough for a dump batch the kernel sends at once.
const RECV_BUFFER: usize = 64 * 1024;

/// A sock_diag netlink socket in the network namespace of the thread that opened it.
#[derive(Debug)]
pub struct SockDiag {
    socket: Socket,
    seq: u32,
}

impl SockDiag {
    /// Opens a sock_diag socket in the calling thread's network namespace.
    pub fn open() -> Result<Self, SockDiagError> {
        let io = |op| move |source| SockDiagError::Io { op, source };
        let mut socket = Socket::new(NETLINK_SOCK_DIAG).map_err(io("socket(NETLINK_SOCK_DIAG)"))?;
        socket.bind_auto().map_err(io("bind"))?;
        socket
            .connect(&netlink_sys::SocketAddr::new(0, 0))
            .map_err(io("connect"))?;
        Ok(SockDiag { socket, seq: 0 })
    }

    /// The connected UDP sockets of both families (IPv4 and IPv6, dual-stack ones included).
    pub fn connected_udp(&mut self) -> Result<Vec<UdpSocketEntry>, SockDiagError> {
        let mut out = Vec::new();
        for (family, id) in [
            (AF_INET, SocketId::new_v4()),
            (AF_INET6, SocketId::new_v6()),
        ] {
            let request = InetRequest {
                family,
                protocol: IPPROTO_UDP,
                extensions: ExtensionFlags::empty(),
                // A connected UDP socket is in TCP_ESTABLISHED; unconnected ones are TCP_CLOSE.
                states: StateFlags::ESTABLISHED,
                socket_id: id,
            };
            let what = format!("UDP dump (family {family})");
            let answers = self.exchange(
                SockDiagMessage::InetRequest(request),
                NLM_F_REQUEST | NLM_F_DUMP,
                &what,
            )?;
            out.extend(answers.into_iter().filter_map(|m| match m {
                SockDiagMessage::InetResponse(r) => Some(UdpSocketEntry {
                    family: r.header.family,
                    id: r.header.socket_id,
                }),
                _ => None,
            }));
        }
        Ok(out)
    }

    /// Destroys `socket`: the kernel finds it by its addresses and cookie, sets `ECONNABORTED`
    /// and disconnects it.
    pub fn destroy(&mut self, socket: &UdpSocketEntry) -> Result<(), SockDiagError> {
        let what = format!("SOCK_DESTROY {} -> {}", socket.local(), socket.peer());
        self.destroy_id(socket.family, socket.id.clone(), &what)
    }

    fn destroy_id(&mut self, family: u8, id: SocketId, what: &str) -> Result<(), SockDiagError> {
        let request = InetRequest {
            family,
            protocol: IPPROTO_UDP,
            extensions: ExtensionFlags::empty(),
            states: StateFlags::all(),
            socket_id: id,
        };
        let message = SockDiagDestroy::new(SockDiagMessage::InetRequest(request));
        self.exchange(message, NLM_F_REQUEST | NLM_F_ACK, what)
            .map(drop)
    }

    /// Sends one request and collects the answers until the dump's end (`NLMSG_DONE`) or the
    /// ACK or error (`NLMSG_ERROR`), skipping messages of other sequence numbers.
    fn exchange<M: NetlinkSerializable + std::fmt::Debug>(
        &mut self,
        message: M,
        flags: u16,
        what: &str,
    ) -> Result<Vec<SockDiagMessage>, SockDiagError>
    where
        NetlinkPayload<M>: From<M>,
    {
        self.seq += 1;
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(message));
        packet.finalize();
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket
            .send(&buf, 0)
            .map_err(|source| SockDiagError::Io { op: "send", source })?;
        let mut out = Vec::new();
        let mut recv = vec![0u8; RECV_BUFFER];
        loop {
            let n = self
                .socket
                .recv(&mut &mut recv[..], 0)
                .map_err(|source| SockDiagError::Io { op: "recv", source })?;
            let mut offset = 0;
            while offset < n {
                let bytes = &recv[offset..n];
                let reply = NetlinkMessage::<SockDiagMessage>::deserialize(bytes).map_err(|e| {
                    SockDiagError::Decode {
                        request: what.to_owned(),
                        detail: e.to_string(),
                    }
                })?;
                let len = reply.header.length as usize;
                if reply.header.sequence_number == self.seq {
                    match reply.payload {
                        NetlinkPayload::Done(_) => return Ok(out),
                        NetlinkPayload::Error(e) => {
                            return match e.code {
                                // An ACK.
                                None => Ok(out),
                                Some(_) => Err(SockDiagError::Refused {
                                    request: what.to_owned(),
                                    source: e.to_io(),
                                }),
                            };
                        }
                        NetlinkPayload::InnerMessage(m) => out.push(m),
                        // Noop, Overrun (the payload type is non-exhaustive).
                        _ => {}
                    }
                }
                if len == 0 {
                    break;
                }
                offset += len;
            }
        }
    }
}

/// Whether this kernel lists and destroys UDP sockets, tried in the calling thread's
/// namespace: a UDP dump (refused without `CONFIG_INET_UDP_DIAG`), then a `SOCK_DESTROY` of a
/// socket that cannot exist (all-zero addresses and ports): `ENOENT` means the kernel looked
/// it up, `EOPNOTSUPP` that it lacks `CONFIG_INET_DIAG_DESTROY`.
pub fn probe() -> Support {
    let mut diag = match SockDiag::open() {
        Ok(d) => d,
        Err(e) => {
            return Support::Unavailable(format!(
                "no NETLINK_SOCK_DIAG, the kernel lacks CONFIG_INET_DIAG: {e}"
            ))
        }
    };
    if let Err(e) = diag.connected_udp() {
        return Support::Unavailable(format!(
            "UDP sockets cannot be listed, the kernel lacks CONFIG_INET_UDP_DIAG: {e}"
        ));
    }
    let nothing = SocketId {
        source_port: 0,
        destination_port: 0,
        source_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        destination_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        interface_id: 0,
        cookie: NO_COOKIE,
    };
    match diag.destroy_id(AF_INET, nothing, "SOCK_DESTROY probe") {
        Err(e) if e.errno() == Some(nix::libc::ENOENT) => Support::Available,
        Err(e) if e.errno() == Some(nix::libc::EOPNOTSUPP) => Support::Unavailable(
            "SOCK_DESTROY not supported, the kernel lacks CONFIG_INET_DIAG_DESTROY".to_owned(),
        ),
        Err(e) if e.errno() == Some(nix::libc::EPERM) => {
            Support::Unavailable(format!("SOCK_DESTROY needs CAP_NET_ADMIN: {e}"))
        }
        Err(e) => Support::Unavailable(e.to_string()),
        Ok(()) => Support::Unavailable(
            "SOCK_DESTROY of a socket that cannot exist succeeded; not trusting it".to_owned(),
        ),
    }
}
