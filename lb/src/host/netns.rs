//! The agent's network namespace: the node's "host" namespace for `socketLB.hostNamespaceOnly`
//! and bind protection. Several agents on one machine each treat their own namespace so.

use std::os::fd::AsRawFd;

use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};

use super::HostError;

/// `SO_NETNS_COOKIE` (Linux 5.14), not in every libc's headers.
const SO_NETNS_COOKIE: nix::libc::c_int = 71;

/// How the BPF programs recognise the host namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetnsIdentity {
    /// This namespace's cookie.
    Cookie(u64),
    /// The initial namespace (kernels without `SO_NETNS_COOKIE`, where the programs ask for
    /// the initial namespace's cookie themselves).
    Initial,
}

impl NetnsIdentity {
    /// The value of the programs' `cfg_host_netns_cookie`: 0 stands for the initial namespace.
    pub fn cookie_for_bpf(self) -> u64 {
        match self {
            NetnsIdentity::Cookie(c) => c,
            NetnsIdentity::Initial => 0,
        }
    }
}

/// The identity of the calling thread's network namespace.
pub fn own_netns_cookie() -> Result<NetnsIdentity, HostError> {
    match so_netns_cookie() {
        Ok(cookie) => Ok(NetnsIdentity::Cookie(cookie)),
        Err(_) if in_initial_netns() => Ok(NetnsIdentity::Initial),
        Err(err) => Err(HostError::Unexpected {
            what: "this network namespace's identity".into(),
            detail: format!(
                "SO_NETNS_COOKIE failed ({err}; it needs Linux 5.14) and this is not the initial \
                 namespace, so the programs cannot tell the host namespace apart"
            ),
        }),
    }
}

/// Whether the calling thread is in the initial network namespace (PID 1's).
pub fn in_initial_netns() -> bool {
    let ino = |p| std::fs::metadata(p).map(|m| std::os::unix::fs::MetadataExt::ino(&m));
    matches!((ino("/proc/thread-self/ns/net"), ino("/proc/1/ns/net")), (Ok(a), Ok(b)) if a == b)
}

/// The calling thread's namespace cookie by `SO_NETNS_COOKIE`; `Err` is the kernel's answer.
pub(crate) fn so_netns_cookie() -> Result<u64, String> {
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| format!("a socket to read the netns cookie: {e}"))?;
    socket_u64_option(sock.as_raw_fd(), SO_NETNS_COOKIE)
        .map_err(|e| format!("getsockopt(SO_NETNS_COOKIE): {e}"))
}

/// A `SOL_SOCKET` option whose value is a `u64` (`SO_NETNS_COOKIE`, `SO_COOKIE`).
pub(crate) fn socket_u64_option(
    fd: std::os::fd::RawFd,
    option: nix::libc::c_int,
) -> std::io::Result<u64> {
    let mut value: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as nix::libc::socklen_t;
    // SAFETY: the caller's open socket, and an out buffer of the size passed.
    let rc = unsafe {
        nix::libc::getsockopt(
            fd,
            nix::libc::SOL_SOCKET,
            option,
            (&mut value as *mut u64).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(value)
    } else {
        Err(std::io::Error::last_os_error())
    }
}
