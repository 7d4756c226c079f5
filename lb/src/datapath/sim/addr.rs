//! `lb_addr.h` over [`LbAddr`], and the hooks' load/store between a socket address and the
//! family-independent form the maps use (`sock4_load`, `sock6_store`, ...).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use ebpf::maps::LbAddr;

/// The `::ffff:0:0/96` prefix of IPv4-mapped addresses.
const V4_MAPPED_PREFIX: [u8; 12] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff];

/// `lb_addr_is_v4`.
pub(super) fn is_v4(a: &LbAddr) -> bool {
    a.bytes[..12] == V4_MAPPED_PREFIX
}

/// `lb_addr_is_wildcard`: `0.0.0.0` (mapped) or `::`.
pub(super) fn is_wildcard(a: &LbAddr) -> bool {
    a.bytes[12..] == [0; 4] && (a.bytes[..12] == [0; 12] || is_v4(a))
}

/// `lb_addr_to_wildcard`: the wildcard address of `a`'s family.
pub(super) fn to_wildcard(a: &LbAddr) -> LbAddr {
    let mut out = LbAddr::default();
    if is_v4(a) {
        out.bytes[..12].copy_from_slice(&V4_MAPPED_PREFIX);
    }
    out
}

/// `lb_addr_from_v4(0)`: `0.0.0.0`, mapped.
pub(super) fn v4_any() -> LbAddr {
    LbAddr::from(std::net::IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

/// `lb_addr_is_loopback`: `127.0.0.0/8` or `::1` (not `::ffff:127.x`, which is IPv4).
pub(super) fn is_loopback(a: &LbAddr) -> bool {
    if is_v4(a) {
        a.bytes[12] == 127
    } else {
        Ipv6Addr::from(a.bytes) == Ipv6Addr::LOCALHOST
    }
}

/// `sock4_load` / `sock6_load`: the hook's address as the maps hold it, port in network order.
/// An IPv4 socket address is the IPv4 hook's context; an IPv6 one (IPv4-mapped included, as a
/// dual-stack socket passes it) the IPv6 hook's.
pub(super) fn load(sa: SocketAddr) -> (LbAddr, u16) {
    (LbAddr::from(sa.ip()), sa.port().to_be())
}

/// `sock4_store` / `sock6_store`: what the hook writes back into `orig`'s context. The IPv4
/// hook leaves the address alone when the translation is not IPv4 (the agent never pairs
/// families so, and leaving it is the safe failure); the IPv6 hook writes any address, an
/// IPv4 one as IPv4-mapped, and keeps the flow label and scope id it was given.
pub(super) fn store(orig: SocketAddr, address: &LbAddr, port_be: u16) -> SocketAddr {
    stored(orig, address, port_be).unwrap_or(orig)
}

/// [`store`], `None` when the hook leaves the context alone (its store returns 0).
pub(super) fn stored(orig: SocketAddr, address: &LbAddr, port_be: u16) -> Option<SocketAddr> {
    let port = u16::from_be(port_be);
    Some(match orig {
        SocketAddr::V4(_) if is_v4(address) => {
            let [a, b, c, d] = [
                address.bytes[12],
                address.bytes[13],
                address.bytes[14],
                address.bytes[15],
            ];
            SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(a, b, c, d), port))
        }
        SocketAddr::V4(_) => return None,
        SocketAddr::V6(v6) => SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::from(address.bytes),
            port,
            v6.flowinfo(),
            v6.scope_id(),
        )),
    })
}
