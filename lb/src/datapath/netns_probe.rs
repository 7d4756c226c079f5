//! The agent's own network namespace cookie on kernels without `SO_NETNS_COOKIE` (before
//! 5.14), learned from the kernel itself: a one-shot cgroup `connect4` hook, attached for a
//! moment to the cgroup the agent runs in, records `bpf_get_netns_cookie()` of one UDP connect
//! the agent makes to a probe address, on a socket whose cookie it read first (so no other
//! process in the cgroup can answer for it), and is detached again (dropping the object
//! unloads it).
//! A UDP connect sends nothing, so the probe never puts a packet on the wire.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::Path;

use aya::maps::{Array, MapData};
use aya::programs::{CgroupAttachMode, CgroupSockAddr};
use aya::EbpfLoader;

use super::DatapathError;

/// Where the probe connects: a loopback address nothing serves and a port below the NodePort
/// range, so neither another process nor the agent's own hooks are likely to touch it.
const PROBE: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(127, 77, 78, 79), 9);

/// The network namespace cookie of the calling thread, as the socket programs see it
/// (`bpf_get_netns_cookie`). The calling process must be in `cgroup` or below it.
pub fn netns_cookie_through_bpf(cgroup: &Path) -> Result<u64, DatapathError> {
    let program = ebpf::NETNS_PROBE_PROGRAM;
    let failed = |source| DatapathError::Program { program, source };
    let socket_failed = |e: std::io::Error| DatapathError::Unsupported {
        what: format!("this namespace's cookie: the probe socket failed ({e})"),
        needs: "SO_NETNS_COOKIE (Linux 5.14), or a UDP socket for the BPF probe",
    };
    // Only this socket's connect counts: its cookie goes into the program.
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).map_err(socket_failed)?;
    let socket_cookie = so_cookie(&socket).map_err(socket_failed)?;
    let ip = u32::from_ne_bytes(PROBE.ip().octets());
    let port = u32::from(PROBE.port().to_be());
    let mut bpf = EbpfLoader::new()
        .override_global("cfg_probe_ip4", &ip, true)
        .override_global("cfg_probe_port", &port, true)
        .override_global("cfg_probe_cookie", &socket_cookie, true)
        .load(ebpf::netns_probe_object())?;
    let prog: &mut CgroupSockAddr = super::sock_lb::program(&mut bpf, program)?;
    prog.load().map_err(failed)?;
    let dir = File::open(cgroup).map_err(|source| DatapathError::Cgroup {
        path: cgroup.to_owned(),
        source,
    })?;
    prog.attach(&dir, CgroupAttachMode::Single)
        .map_err(failed)?;
    socket.connect(PROBE).map_err(socket_failed)?;
    let map_name = ebpf::NETNS_PROBE_MAP;
    let map = bpf.map(map_name).ok_or(DatapathError::Missing {
        kind: "map",
        name: map_name,
    })?;
    let cookies: Array<&MapData, u64> =
        Array::try_from(map).map_err(|source| DatapathError::Map {
            map: map_name,
            source,
        })?;
    let cookie = cookies.get(&0, 0).map_err(|source| DatapathError::Map {
        map: map_name,
        source,
    })?;
    if cookie == 0 {
        return Err(DatapathError::Unsupported {
            what: format!(
                "this namespace's cookie: a probe connect to {PROBE} from this process was not \
                 seen by a hook on {} (is the agent inside cgroup.hostRoot?)",
                cgroup.display()
            ),
            needs: "SO_NETNS_COOKIE (Linux 5.14), or the agent running inside cgroup.hostRoot",
        });
    }
    Ok(cookie)
}

/// The socket's cookie (`SO_COOKIE`, Linux 4.12), as `bpf_get_socket_cookie` gives it.
fn so_cookie(socket: &UdpSocket) -> std::io::Result<u64> {
    const SO_COOKIE: nix::libc::c_int = 57;
    crate::host::socket_u64_option(socket.as_raw_fd(), SO_COOKIE)
}
