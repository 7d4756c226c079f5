//! The node's FIB as `bpf_fib_lookup` answers the packet programs, asked from userspace
//! (`RTM_GETROUTE`, then the next hop's neighbour entry): what `lbctl explain` gives the
//! simulator so it decides as the programs on this node would.

use std::net::IpAddr;

use netlink_packet_core::NLM_F_DUMP;
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteType};
use netlink_packet_route::RouteNetlinkMessage;

use crate::datapath::sim::{Fib, FibQuery, FibResult};

/// The FIB of the calling thread's network namespace.
#[derive(Debug, Default, Clone, Copy)]
pub struct HostFib;

impl Fib for HostFib {
    fn lookup(&self, query: &FibQuery) -> FibResult {
        lookup(IpAddr::from(query.dst)).unwrap_or(FibResult::Unreachable)
    }
}

/// Where the kernel sends a packet to `dst`: local, out of a device to a resolved next hop, out
/// of a device with the next hop unresolved, or nowhere.
fn lookup(dst: IpAddr) -> Option<FibResult> {
    let message = super::rtnl::route_query(dst);
    let answer = super::rtnl::request(RouteNetlinkMessage::GetRoute(message), 0, "a route")
        .ok()?
        .into_iter()
        .find_map(|m| match m {
            RouteNetlinkMessage::NewRoute(r) => Some(r),
            _ => None,
        })?;
    match answer.header.kind {
        RouteType::Local => return Some(FibResult::Local),
        RouteType::Unicast => {}
        _ => return Some(FibResult::Unreachable),
    }
    let mut oif = None;
    let mut next_hop = dst;
    for attr in &answer.attributes {
        match attr {
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Gateway(RouteAddress::Inet(g)) => next_hop = IpAddr::V4(*g),
            RouteAttribute::Gateway(RouteAddress::Inet6(g)) => next_hop = IpAddr::V6(*g),
            _ => {}
        }
    }
    let ifindex = oif?;
    match (neighbour_mac(ifindex, next_hop), link_mac(ifindex)) {
        (Some(dmac), Some(smac)) => Some(FibResult::Forward {
            ifindex,
            smac,
            dmac,
        }),
        _ => Some(FibResult::NoNeigh { ifindex }),
    }
}

fn mac(bytes: &[u8]) -> Option<[u8; 6]> {
    bytes.try_into().ok()
}

/// The link-layer address of `ip`'s neighbour entry on `ifindex`, while it is usable.
fn neighbour_mac(ifindex: u32, ip: IpAddr) -> Option<[u8; 6]> {
    let mut message = NeighbourMessage::default();
    message.header.family = super::rtnl::family(ip);
    super::rtnl::request(
        RouteNetlinkMessage::GetNeighbour(message),
        NLM_F_DUMP,
        "the neighbour entries",
    )
    .ok()?
    .into_iter()
    .filter_map(|m| match m {
        RouteNetlinkMessage::NewNeighbour(n) => Some(n),
        _ => None,
    })
    .filter(|n| n.header.ifindex == ifindex)
    .filter(|n| {
        !matches!(
            n.header.state,
            NeighbourState::Incomplete | NeighbourState::Failed | NeighbourState::None
        )
    })
    .find_map(|n| {
        let mut dst = None;
        let mut lladdr = None;
        for attr in &n.attributes {
            match attr {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => {
                    dst = Some(IpAddr::V4(*a))
                }
                NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                    dst = Some(IpAddr::V6(*a))
                }
                NeighbourAttribute::LinkLayerAddress(l) => lladdr = mac(l),
                _ => {}
            }
        }
        (dst == Some(ip)).then_some(lladdr).flatten()
    })
}

/// The MAC address of link `ifindex`.
fn link_mac(ifindex: u32) -> Option<[u8; 6]> {
    super::pod_links::dump_links()
        .ok()?
        .into_iter()
        .find(|l: &LinkMessage| l.header.index == ifindex)?
        .attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Address(a) => mac(a),
            _ => None,
        })
}
