//! A path MTU probe: what an application that does path MTU discovery learns about a
//! destination. A connected UDP socket with `IP_MTU_DISCOVER` = `IP_PMTUDISC_DO` (IPv6:
//! `IPV6_MTU_DISCOVER` = `IPV6_PMTUDISC_DO`) sends datagrams that may not be fragmented until
//! one fails with `EMSGSIZE` (an ICMP fragmentation needed or packet too big lowered the
//! route's MTU) or the deadline passes; then it reads the socket's `IP_MTU` (`IPV6_MTU`).

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use nix::libc;
use serde::{Deserialize, Serialize};

/// How often the probe sends again while no error came back.
const RESEND: Duration = Duration::from_millis(50);

/// What a probe saw; one JSON line of `netsim-client pmtu`'s output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathMtu {
    /// The socket's path MTU after the probe.
    pub mtu: Option<u32>,
    /// Whether a send failed with `EMSGSIZE`.
    pub emsgsize: bool,
    /// What failed otherwise, with the system call's name.
    pub error: Option<String>,
}

impl PathMtu {
    fn failed(op: &str, e: &std::io::Error) -> PathMtu {
        PathMtu {
            mtu: None,
            emsgsize: false,
            error: Some(format!("{op}: {e}")),
        }
    }
}

fn setsockopt_int(socket: &UdpSocket, level: i32, name: i32, value: i32) -> std::io::Result<()> {
    // SAFETY: a valid socket and a pointer to an int of the size given.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn getsockopt_int(socket: &UdpSocket, level: i32, name: i32) -> std::io::Result<i32> {
    let mut value: i32 = 0;
    let mut len = std::mem::size_of::<i32>() as libc::socklen_t;
    // SAFETY: a valid socket and a pointer to an int with its size.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&mut value as *mut i32).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(value)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Probes the path MTU to `target` with IP packets of `size` bytes (headers included),
/// sending until `EMSGSIZE` or `timeout`.
pub fn path_mtu(target: SocketAddr, size: usize, timeout: Duration) -> PathMtu {
    let (unspecified, level, discover, dont_fragment, mtu_opt, headers): (
        SocketAddr,
        _,
        _,
        _,
        _,
        usize,
    ) = match target {
        SocketAddr::V4(_) => (
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_DO,
            libc::IP_MTU,
            20 + 8,
        ),
        SocketAddr::V6(_) => (
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_DO,
            libc::IPV6_MTU,
            40 + 8,
        ),
    };
    let socket = match UdpSocket::bind(unspecified) {
        Ok(s) => s,
        Err(e) => return PathMtu::failed("bind", &e),
    };
    if let Err(e) = setsockopt_int(&socket, level, discover, dont_fragment) {
        return PathMtu::failed("setsockopt(MTU_DISCOVER)", &e);
    }
    if let Err(e) = socket.connect(target) {
        return PathMtu::failed("connect", &e);
    }
    let payload = vec![0x5a; size.saturating_sub(headers)];
    let deadline = Instant::now() + timeout;
    let mut emsgsize = false;
    while Instant::now() < deadline {
        match socket.send(&payload) {
            Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => {
                emsgsize = true;
                break;
            }
            // Other pending errors (a port unreachable) do not end the probe.
            _ => std::thread::sleep(RESEND),
        }
    }
    match getsockopt_int(&socket, level, mtu_opt) {
        Ok(mtu) => PathMtu {
            mtu: u32::try_from(mtu).ok(),
            emsgsize,
            error: None,
        },
        Err(e) => PathMtu::failed("getsockopt(MTU)", &e),
    }
}
