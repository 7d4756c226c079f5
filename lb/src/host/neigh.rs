//! The node's neighbour table as the documents' "Neighbor Discovery" section uses it: the next
//! hop towards another node on a given device (`RTM_GETROUTE` with the output interface), and
//! externally learned entries for those next hops that the kernel resolves itself — "managed"
//! ones it keeps resolved on its own (Linux 5.16+), or plain ones the agent asks it to
//! re-resolve (`NTF_USE`) every refresh period.
//!
//! Entries are pushed without a link-layer address in state `NUD_NONE`, so the kernel does the
//! ARP / neighbour solicitation; `NTF_EXT_LEARNED` keeps its garbage collector off them.

use std::net::{IpAddr, Ipv4Addr};

use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourExtFlags, NeighbourFlags, NeighbourMessage,
    NeighbourState,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteFlags, RouteType};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::rtnl;
use super::HostError;

const ENOENT: i32 = 2;
const EINVAL: i32 = 22;

/// A neighbour entry as the kernel holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NeighbourEntry {
    /// The device.
    pub ifindex: u32,
    /// The next hop's address.
    pub ip: IpAddr,
    /// Its NUD state (`reachable`, `stale`, `incomplete`, `none`, ...).
    pub state: NeighbourState,
    /// `NTF_EXT_LEARNED`: pushed by a control plane, never garbage-collected by the kernel.
    pub ext_learned: bool,
    /// `NTF_EXT_MANAGED`: the kernel keeps it resolved itself.
    pub managed: bool,
    /// The resolved link-layer address, once there is one.
    pub lladdr: Option<[u8; 6]>,
}

impl NeighbourEntry {
    /// Whether the entry holds a usable link-layer address (what `bpf_fib_lookup` needs).
    pub fn resolved(&self) -> bool {
        self.lladdr.is_some()
            && matches!(
                self.state,
                NeighbourState::Reachable
                    | NeighbourState::Stale
                    | NeighbourState::Delay
                    | NeighbourState::Probe
                    | NeighbourState::Permanent
            )
    }
}

/// The next hop towards `dst` out of device `oif`: the gateway of the route the kernel picks
/// for that device (the hop on that device, for a route with several), or `dst` itself when it
/// is on the device's link. `None` when the kernel has no route towards `dst` through that
/// device (or picks another device), or when `dst` is local.
pub fn next_hop(dst: IpAddr, oif: u32) -> Option<IpAddr> {
    let mut message = super::rtnl::route_query(dst);
    message.attributes.push(RouteAttribute::Oif(oif));
    // Answer with the table the route was found in (0 when none was), not always main's.
    message.header.flags = RouteFlags::LookupTable;
    let answer = match rtnl::request(RouteNetlinkMessage::GetRoute(message), 0, "a route") {
        Ok(answer) => answer,
        Err(e) => {
            tracing::debug!(%dst, oif, "no route: {e}");
            return None;
        }
    };
    let route = answer.into_iter().find_map(|m| match m {
        RouteNetlinkMessage::NewRoute(r) => Some(r),
        _ => None,
    })?;
    if route.header.kind != RouteType::Unicast {
        return None;
    }
    // With an output interface and no route through it, the kernel answers as if `dst` were
    // on that device's link, from no table: no packet would go that way, so no entry.
    let table = route
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(route.header.table));
    if table == 0 {
        return None;
    }
    let gateway = |attrs: &[RouteAttribute]| {
        attrs.iter().find_map(|a| match a {
            RouteAttribute::Gateway(RouteAddress::Inet(g)) => Some(IpAddr::V4(*g)),
            RouteAttribute::Gateway(RouteAddress::Inet6(g)) => Some(IpAddr::V6(*g)),
            _ => None,
        })
    };
    let mut out = None;
    let mut hop = None;
    for attr in &route.attributes {
        match attr {
            RouteAttribute::Oif(i) => out = Some(*i),
            RouteAttribute::MultiPath(hops) => {
                hop = hops
                    .iter()
                    .find(|h| h.interface_index == oif)
                    .and_then(|h| gateway(&h.attributes));
            }
            _ => {}
        }
    }
    if out.is_some_and(|o| o != oif) {
        return None;
    }
    Some(hop.or_else(|| gateway(&route.attributes)).unwrap_or(dst))
}

/// Every IPv4 and IPv6 neighbour entry of the calling thread's namespace.
pub fn dump_neighbours() -> Result<Vec<NeighbourEntry>, HostError> {
    let mut out = Vec::new();
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        let mut message = NeighbourMessage::default();
        message.header.family = family;
        let answers = rtnl::request(
            RouteNetlinkMessage::GetNeighbour(message),
            NLM_F_DUMP,
            "the neighbour entries",
        )?;
        out.extend(answers.into_iter().filter_map(|m| match m {
            RouteNetlinkMessage::NewNeighbour(n) => entry(&n),
            _ => None,
        }));
    }
    Ok(out)
}

fn entry(n: &NeighbourMessage) -> Option<NeighbourEntry> {
    let mut ip = None;
    let mut lladdr = None;
    let mut managed = false;
    for attr in &n.attributes {
        match attr {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => ip = Some(IpAddr::V4(*a)),
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(a)) => {
                ip = Some(IpAddr::V6(*a))
            }
            NeighbourAttribute::LinkLayerAddress(l) => lladdr = l.as_slice().try_into().ok(),
            NeighbourAttribute::ExtFlags(f) => managed = f.contains(NeighbourExtFlags::Managed),
            _ => {}
        }
    }
    Some(NeighbourEntry {
        ifindex: n.header.ifindex,
        ip: ip?,
        state: n.header.state,
        ext_learned: n.header.flags.contains(NeighbourFlags::ExtLearned),
        managed,
        lladdr,
    })
}

fn neighbour(
    ifindex: u32,
    ip: IpAddr,
    state: NeighbourState,
    flags: NeighbourFlags,
) -> NeighbourMessage {
    let mut message = NeighbourMessage::default();
    message.header.family = super::rtnl::family(ip);
    message.header.ifindex = ifindex;
    message.header.state = state;
    message.header.flags = flags;
    message
        .attributes
        .push(NeighbourAttribute::Destination(match ip {
            IpAddr::V4(a) => NeighbourAddress::Inet(a),
            IpAddr::V6(a) => NeighbourAddress::Inet6(a),
        }));
    message
}

fn set(message: NeighbourMessage, what: &str) -> Result<(), (HostError, Option<i32>)> {
    rtnl::request_or_refusal(
        RouteNetlinkMessage::NewNeighbour(message),
        NLM_F_CREATE | NLM_F_REPLACE | NLM_F_ACK,
        what,
    )
    .map(drop)
}

/// Pushes a managed, externally learned entry for `ip` on `ifindex` (state `NUD_NONE`, no
/// link-layer address): the kernel resolves it and keeps it resolved (Linux 5.16+; an older
/// kernel ignores the managed flag).
pub fn push_managed(ifindex: u32, ip: IpAddr) -> Result<(), HostError> {
    let mut message = neighbour(
        ifindex,
        ip,
        NeighbourState::None,
        NeighbourFlags::ExtLearned,
    );
    message
        .attributes
        .push(NeighbourAttribute::ExtFlags(NeighbourExtFlags::Managed));
    set(message, &format!("a managed neighbour entry for {ip}")).map_err(|(e, _)| e)
}

/// Pushes (or refreshes) an externally learned entry for `ip` on `ifindex` that the kernel
/// re-resolves now (`NTF_USE`). `learned` says whether the table holds it as externally learned
/// already; if not, it is first pushed as `NTF_EXT_LEARNED` on its own, since kernels before
/// 5.16 leave that flag off an entry `NTF_USE` creates or updates (the kernel may refuse that
/// first step with `EINVAL` for want of a link-layer address, but sets the flag on the entry).
pub fn push_and_resolve(ifindex: u32, ip: IpAddr, learned: bool) -> Result<(), HostError> {
    if !learned {
        let first = neighbour(
            ifindex,
            ip,
            NeighbourState::Stale,
            NeighbourFlags::ExtLearned,
        );
        if let Err((e, errno)) = set(first, &format!("a neighbour entry for {ip}")) {
            if errno != Some(EINVAL) {
                return Err(e);
            }
        }
    }
    let message = neighbour(
        ifindex,
        ip,
        NeighbourState::None,
        NeighbourFlags::ExtLearned | NeighbourFlags::Use,
    );
    set(
        message,
        &format!("re-resolving the neighbour entry for {ip}"),
    )
    .map_err(|(e, _)| e)
}

/// Deletes the entry for `ip` on `ifindex`; `false` when there was none.
pub fn delete(ifindex: u32, ip: IpAddr) -> Result<bool, HostError> {
    let message = neighbour(ifindex, ip, NeighbourState::None, NeighbourFlags::empty());
    match rtnl::request_or_refusal(
        RouteNetlinkMessage::DelNeighbour(message),
        NLM_F_ACK,
        &format!("deleting the neighbour entry for {ip}"),
    ) {
        Ok(_) => Ok(true),
        Err((_, Some(ENOENT))) => Ok(false),
        Err((e, _)) => Err(e),
    }
}

/// Whether the kernel keeps managed neighbour entries (`NTF_EXT_MANAGED`, Linux 5.16): one is
/// pushed on the loopback device of a network namespace made for the probe, and read back; a
/// kernel without them ignores the attribute carrying the flag. Nothing of the node's is
/// touched.
pub fn probe_managed() -> Result<(), String> {
    let probe = || -> Result<(), String> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("cannot make a network namespace to probe in: {e}"))?;
        let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        const LOOPBACK: u32 = 1;
        push_managed(LOOPBACK, ip).map_err(|e| e.to_string())?;
        let entries = dump_neighbours().map_err(|e| e.to_string())?;
        if entries.iter().any(|n| n.ifindex == LOOPBACK && n.managed) {
            Ok(())
        } else {
            Err("the kernel dropped NTF_EXT_MANAGED from a new neighbour entry".to_owned())
        }
    };
    // unshare() moves only the calling thread, so the probe runs on a thread of its own, and
    // the namespace goes with it.
    std::thread::scope(|s| s.spawn(probe).join())
        .unwrap_or_else(|_| Err("the probe's thread panicked".to_owned()))
}
