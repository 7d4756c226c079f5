//! The host-side interfaces of this node's pods: where, with `socketLB.hostNamespaceOnly`, the
//! agent balances pods' service traffic per packet instead of at their sockets.
//!
//! CNI plugins connect a pod by a veth pair with one end in the pod's network namespace (Calico's
//! `cali*`, Cilium's `lxc*`, the bridge plugin's ports, netsim's `v-*`), and give the node's end
//! no address of its own. So a pod interface is a veth whose peer is in another namespace (the
//! kernel reports the peer's namespace id, `IFLA_LINK_NETNSID`) and which holds no global
//! address; a device the node reaches other hosts through (a NodePort device) never is one.

use netlink_packet_core::NLM_F_DUMP;
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use netlink_packet_route::RouteNetlinkMessage;

use super::HostError;

/// A pod's host-side interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInterface {
    /// Its name.
    pub name: String,
    /// Its ifindex.
    pub ifindex: u32,
}

/// The pods' host-side interfaces in this network namespace, in name order; devices named in
/// `exclude` (the NodePort devices) are left out.
pub fn pod_interfaces(exclude: &[String]) -> Result<Vec<PodInterface>, HostError> {
    let global = |ip: &std::net::IpAddr| match ip {
        std::net::IpAddr::V4(v4) => !v4.is_link_local(),
        std::net::IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) != 0xfe80,
    };
    let addressed: Vec<String> = super::local_devices()?
        .into_iter()
        .filter(|d| d.addrs.iter().any(global))
        .map(|d| d.name)
        .collect();
    let mut out: Vec<PodInterface> = dump_links()?
        .iter()
        .filter_map(veth_to_other_namespace)
        .filter(|p| !exclude.contains(&p.name) && !addressed.contains(&p.name))
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The link's name and ifindex when it is a veth with its peer in another namespace.
fn veth_to_other_namespace(link: &LinkMessage) -> Option<PodInterface> {
    let mut name = None;
    let mut veth = false;
    let mut peer_elsewhere = false;
    for attr in &link.attributes {
        match attr {
            LinkAttribute::IfName(n) => name = Some(n.clone()),
            LinkAttribute::LinkNetNsId(_) => peer_elsewhere = true,
            LinkAttribute::LinkInfo(infos) => {
                veth = infos
                    .iter()
                    .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Veth)));
            }
            _ => {}
        }
    }
    (veth && peer_elsewhere).then(|| PodInterface {
        name: name.unwrap_or_default(),
        ifindex: link.header.index,
    })
}

/// Every link of this namespace (`RTM_GETLINK` dump).
pub(crate) fn dump_links() -> Result<Vec<LinkMessage>, HostError> {
    Ok(super::rtnl::request(
        RouteNetlinkMessage::GetLink(LinkMessage::default()),
        NLM_F_DUMP,
        "the node's links",
    )?
    .into_iter()
    .filter_map(|m| match m {
        RouteNetlinkMessage::NewLink(link) => Some(link),
        _ => None,
    })
    .collect())
}
