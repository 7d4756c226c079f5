//! The child side of the differential tests: in the test's cgroup and a network namespace of
//! its own (loopback plus the test's node addresses), it prints `ready <netns cookie>`, then
//! runs each [`Call`] read from stdin with real sockets and prints its [`Report`], until stdin
//! closes.

use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Duration;

use lb::model::L4Protocol;
use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrStorage};

use super::wire::{Call, Report, Stage};
use super::{NODE_ADDR4, NODE_ADDR6};

/// How long a socket waits for an answer that should come at once over loopback: a deadline
/// for a broken run, never reached by a working one.
const TIMEOUT: Duration = Duration::from_secs(5);

/// `SO_COOKIE` (Linux 4.12), not in the libc crate for Linux.
const SO_COOKIE: nix::libc::c_int = 57;

/// Runs the child and exits non-zero on an error of its own (not of a call).
pub fn run() {
    if let Err(e) = serve() {
        eprintln!("differential child: {e}");
        std::process::exit(1);
    }
}

fn serve() -> Result<(), Box<dyn std::error::Error>> {
    let v4 = format!("{NODE_ADDR4}/32");
    let v6 = format!("{NODE_ADDR6}/128");
    super::support::loopback_up(&[
        &["addr", "add", &v4, "dev", "lo"],
        &["-6", "addr", "add", &v6, "dev", "lo", "nodad"],
    ])?;
    let netns = lb::host::own_netns_cookie()?.cookie_for_bpf();
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready {netns}")?;
    out.flush()?;
    let mut kept: Vec<TcpStream> = Vec::new();
    for line in std::io::stdin().lock().lines() {
        let call: Call = serde_json::from_str(&line?)?;
        let report = run_call(&call, &mut kept);
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
        out.flush()?;
    }
    Ok(())
}

/// Records the first failure of a call in its report.
trait Staged<T> {
    fn at(self, stage: Stage) -> Result<T, (Stage, i32)>;
}

impl<T> Staged<T> for std::io::Result<T> {
    fn at(self, stage: Stage) -> Result<T, (Stage, i32)> {
        self.map_err(|e| (stage, e.raw_os_error().unwrap_or(-1)))
    }
}

impl<T> Staged<T> for nix::Result<T> {
    fn at(self, stage: Stage) -> Result<T, (Stage, i32)> {
        self.map_err(|e| (stage, e as i32))
    }
}

fn run_call(call: &Call, kept: &mut Vec<TcpStream>) -> Report {
    let mut report = Report::default();
    let result = match *call {
        Call::Listen(protocol, addr) => listen(protocol, addr),
        Call::TcpConnect(target) => tcp_connect(target, &mut report, kept),
        Call::UdpConnect(target) => udp_connect(target, &mut report),
        Call::UdpSendTo(target) => udp_send_to(target, &mut report),
        Call::Bind(protocol, local, v6only) => bind(protocol, local, v6only, &mut report),
        Call::PeerName(n) => match kept.get(n) {
            Some(stream) => cookie(stream)
                .at(Stage::Socket)
                .and_then(|c| {
                    report.cookie = c;
                    stream.peer_addr().at(Stage::PeerName)
                })
                .map(|peer| report.peer = Some(peer)),
            None => Err((Stage::Socket, -1)),
        },
    };
    if let Err(error) = result {
        report.error = Some(error);
    }
    report
}

/// A socket of `addr`'s family and `protocol`, and its cookie.
fn open(protocol: L4Protocol, addr: SocketAddr) -> Result<(OwnedFd, u64), (Stage, i32)> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let kind = match protocol {
        L4Protocol::Tcp => SockType::Stream,
        L4Protocol::Udp => SockType::Datagram,
    };
    let fd = socket::socket(family, kind, SockFlag::SOCK_CLOEXEC, None).at(Stage::Socket)?;
    let cookie = cookie(&fd).at(Stage::Socket)?;
    Ok((fd, cookie))
}

fn cookie(fd: &impl AsFd) -> std::io::Result<u64> {
    let mut cookie: u64 = 0;
    let mut len = size_of::<u64>() as nix::libc::socklen_t;
    // SAFETY: a valid socket, and an out buffer of the size passed.
    let rc = unsafe {
        nix::libc::getsockopt(
            fd.as_fd().as_raw_fd(),
            nix::libc::SOL_SOCKET,
            SO_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(cookie)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn parse_answer(bytes: &[u8]) -> Result<SocketAddr, (Stage, i32)> {
    String::from_utf8_lossy(bytes)
        .parse()
        .map_err(|_| (Stage::Recv, -1))
}

fn tcp_connect(
    target: SocketAddr,
    report: &mut Report,
    kept: &mut Vec<TcpStream>,
) -> Result<(), (Stage, i32)> {
    let (fd, cookie) = open(L4Protocol::Tcp, target)?;
    report.cookie = cookie;
    socket::connect(fd.as_raw_fd(), &SockaddrStorage::from(target)).at(Stage::Connect)?;
    let mut stream = TcpStream::from(fd);
    report.peer = Some(stream.peer_addr().at(Stage::PeerName)?);
    stream.set_read_timeout(Some(TIMEOUT)).at(Stage::Socket)?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).at(Stage::Recv)?;
    report.answer = Some(parse_answer(&answer)?);
    kept.push(stream);
    Ok(())
}

fn udp_connect(target: SocketAddr, report: &mut Report) -> Result<(), (Stage, i32)> {
    let (fd, cookie) = open(L4Protocol::Udp, target)?;
    report.cookie = cookie;
    let socket = UdpSocket::from(fd);
    socket.set_read_timeout(Some(TIMEOUT)).at(Stage::Socket)?;
    socket.connect(target).at(Stage::Connect)?;
    report.peer = Some(socket.peer_addr().at(Stage::PeerName)?);
    socket.send(b"ping").at(Stage::Send)?;
    receive(&socket, report)
}

fn udp_send_to(target: SocketAddr, report: &mut Report) -> Result<(), (Stage, i32)> {
    let (fd, cookie) = open(L4Protocol::Udp, target)?;
    report.cookie = cookie;
    // Without IP_RECVERR an unconnected socket never hears that nobody listens; a dual-stack
    // socket sending to an IPv4-mapped address hears it through IPv4.
    socket::setsockopt(&fd, sockopt::Ipv4RecvErr, &true).at(Stage::Socket)?;
    if target.is_ipv6() {
        socket::setsockopt(&fd, sockopt::Ipv6RecvErr, &true).at(Stage::Socket)?;
    }
    let socket = UdpSocket::from(fd);
    socket.set_read_timeout(Some(TIMEOUT)).at(Stage::Socket)?;
    socket.send_to(b"ping", target).at(Stage::Send)?;
    receive(&socket, report)
}

fn receive(socket: &UdpSocket, report: &mut Report) -> Result<(), (Stage, i32)> {
    let mut buf = [0u8; 128];
    let (n, from) = socket.recv_from(&mut buf).at(Stage::Recv)?;
    report.from = Some(from);
    report.answer = Some(parse_answer(&buf[..n])?);
    Ok(())
}

fn bind(
    protocol: L4Protocol,
    local: SocketAddr,
    v6only: bool,
    report: &mut Report,
) -> Result<(), (Stage, i32)> {
    let (fd, cookie) = open(protocol, local)?;
    report.cookie = cookie;
    if local.is_ipv6() {
        socket::setsockopt(&fd, sockopt::Ipv6V6Only, &v6only).at(Stage::Socket)?;
    }
    socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(local)).at(Stage::Bind)
}

/// A backend at `addr` that answers with its own address.
fn listen(protocol: L4Protocol, addr: SocketAddr) -> Result<(), (Stage, i32)> {
    match protocol {
        L4Protocol::Tcp => {
            let listener = TcpListener::bind(addr).at(Stage::Listen)?;
            std::thread::spawn(move || {
                for mut stream in listener.incoming().flatten() {
                    let me = stream
                        .local_addr()
                        .map(|a| a.to_string())
                        .unwrap_or_default();
                    let _ = stream.write_all(me.as_bytes());
                }
            });
        }
        L4Protocol::Udp => {
            let socket = UdpSocket::bind(addr).at(Stage::Listen)?;
            let me = socket.local_addr().at(Stage::Listen)?.to_string();
            std::thread::spawn(move || {
                let mut buf = [0u8; 64];
                while let Ok((_, from)) = socket.recv_from(&mut buf) {
                    let _ = socket.send_to(me.as_bytes(), from);
                }
            });
        }
    }
    Ok(())
}
