//! [`RemovedBackends`]: the backends a reconciliation took out of the maps, which the agent
//! uses to find the connected UDP sockets still pointing at them.
//!
//! The socket hooks translate a connected UDP socket once, at `connect`: its datagrams then go
//! to the backend directly, and keep going there after the backend is deleted. The agent
//! destroys such sockets (see [`crate::host::sock_diag`]); the simulator models the same with
//! [`crate::datapath::sim::HeldSocket`].

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use ebpf::maps::LbBackend;

use super::MapContents;
use crate::model::L4Protocol;

/// Backend addresses (address and port) of one protocol that were in the maps before a
/// reconciliation and are in no backend entry after it. A backend that only turned
/// terminating is still in the maps, so its sockets are kept: existing connections go on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RemovedBackends {
    /// Canonical addresses: IPv4 as IPv4, never IPv4-mapped.
    addrs: BTreeSet<SocketAddr>,
}

fn backend_addr(b: &LbBackend) -> SocketAddr {
    let ip = Ipv6Addr::from(b.address.bytes).to_canonical();
    SocketAddr::new(ip, u16::from_be(b.port))
}

/// `addr` with an IPv4-mapped IPv6 address written as IPv4 (a dual-stack socket connected to
/// an IPv4 backend reports it mapped).
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V6(v6) => SocketAddr::new(v6.to_canonical(), addr.port()),
        IpAddr::V4(_) => addr,
    }
}

/// The `lb_reverse_sk_v1` key of a socket with this cookie connected to `backend`.
pub fn reverse_key(cookie: u64, backend: SocketAddr) -> ebpf::maps::LbSockKey {
    let backend = canonical(backend);
    ebpf::maps::LbSockKey {
        cookie,
        address: ebpf::maps::LbAddr::from(backend.ip()),
        port: backend.port().to_be(),
        pad: [0; 6],
    }
}

/// The `lb_reverse_sk_v1`-style key of a connected socket's `lb_sock_conn_v1` entry: the socket
/// and the backend its connect went to.
pub fn reverse_key_of(cookie: u64, conn: &ebpf::maps::LbSockConn) -> ebpf::maps::LbSockKey {
    ebpf::maps::LbSockKey {
        cookie,
        address: conn.backend,
        port: conn.backend_port,
        pad: [0; 6],
    }
}

/// `(socket cookie, backend)` of a reverse-map key, the backend in canonical form.
pub fn reverse_key_socket(key: &ebpf::maps::LbSockKey) -> (u64, SocketAddr) {
    let ip = IpAddr::from(key.address);
    (
        key.cookie,
        canonical(SocketAddr::new(ip, u16::from_be(key.port))),
    )
}

impl RemovedBackends {
    /// The `protocol` backends of `before` that `after` no longer has.
    pub fn between(before: &MapContents, after: &MapContents, protocol: L4Protocol) -> Self {
        let proto = protocol.number();
        let of = |m: &MapContents| -> BTreeSet<SocketAddr> {
            m.backends
                .values()
                .filter(|b| b.proto == proto)
                .map(backend_addr)
                .collect()
        };
        let kept = of(after);
        RemovedBackends {
            addrs: of(before).difference(&kept).copied().collect(),
        }
    }

    /// The `protocol` backends among `gone` (entries deleted from the backend map).
    pub fn of<'a>(gone: impl IntoIterator<Item = &'a LbBackend>, protocol: L4Protocol) -> Self {
        let proto = protocol.number();
        RemovedBackends {
            addrs: gone
                .into_iter()
                .filter(|b| b.proto == proto)
                .map(backend_addr)
                .collect(),
        }
    }

    /// Whether nothing was removed.
    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty()
    }

    /// The removed addresses, IPv4 as IPv4.
    pub fn iter(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.addrs.iter().copied()
    }

    /// Whether a socket connected to `peer` points at a removed backend (`peer` may be
    /// IPv4-mapped).
    pub fn contains(&self, peer: SocketAddr) -> bool {
        self.addrs.contains(&canonical(peer))
    }
}

impl FromIterator<SocketAddr> for RemovedBackends {
    fn from_iter<I: IntoIterator<Item = SocketAddr>>(iter: I) -> Self {
        RemovedBackends {
            addrs: iter.into_iter().map(canonical).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn maps(backends: &[(&str, u16, u8, u8)]) -> MapContents {
        let mut m = MapContents::default();
        for (i, (ip, port, proto, state)) in backends.iter().enumerate() {
            let id = u32::try_from(i).unwrap() + 1;
            m.backends.insert(
                id,
                LbBackend::new(ip.parse().unwrap(), *port, *proto, *state),
            );
        }
        m
    }

    #[test]
    fn a_deleted_udp_backend_is_removed_and_matches_its_mapped_form() {
        let before = maps(&[
            ("10.0.0.1", 53, 17, 0),
            ("10.0.0.2", 53, 17, 0),
            ("fd00::3", 53, 17, 0),
        ]);
        let after = maps(&[("10.0.0.2", 53, 17, 0)]);
        let removed = RemovedBackends::between(&before, &after, L4Protocol::Udp);
        assert_eq!(
            removed.iter().collect::<Vec<_>>(),
            [
                "10.0.0.1:53".parse().unwrap(),
                "[fd00::3]:53".parse().unwrap()
            ]
        );
        assert!(removed.contains("[::ffff:10.0.0.1]:53".parse().unwrap()));
        assert!(!removed.contains("10.0.0.2:53".parse().unwrap()));
        assert!(!removed.contains("10.0.0.1:54".parse().unwrap()));
    }

    #[test]
    fn terminating_backends_and_other_protocols_are_not_removed() {
        let before = maps(&[("10.0.0.1", 53, 17, 0), ("10.0.0.1", 80, 6, 0)]);
        // Terminating (state 1) but still there; the TCP backend went, but only UDP counts.
        let after = maps(&[("10.0.0.1", 53, 17, 1)]);
        assert!(RemovedBackends::between(&before, &after, L4Protocol::Udp).is_empty());
        assert!(!RemovedBackends::between(&before, &after, L4Protocol::Tcp).is_empty());
    }
}
