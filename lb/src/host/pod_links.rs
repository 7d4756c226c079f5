//! The host-side interfaces of this node's pods: where, with `socketLB.hostNamespaceOnly`, the
//! agent balances pods' service traffic per packet instead of at their sockets.
//!
//! CNI plugins connect a pod by a veth pair with one end in the pod's network namespace (Calico's
//! `cali*`, Cilium's `lxc*`, the bridge plugin's ports, netsim's `v-*`), and give the node's end
//! no address of its own. So a pod interface is a veth whose peer is in another namespace (the
//! kernel reports the peer's namespace id, `IFLA_LINK_NETNSID`) and which holds no global
//! address; a device the node reaches other hosts through (a NodePort device) never is one.

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

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
fn dump_links() -> Result<Vec<LinkMessage>, HostError> {
    let failed = |what: &str, detail: String| HostError::Unexpected {
        what: format!("the node's links ({what})"),
        detail,
    };
    let mut socket =
        Socket::new(NETLINK_ROUTE).map_err(|e| failed("netlink socket", e.to_string()))?;
    socket
        .bind_auto()
        .map_err(|e| failed("netlink bind", e.to_string()))?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .map_err(|e| failed("netlink connect", e.to_string()))?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    header.sequence_number = 1;
    let mut request = NetlinkMessage::new(
        header,
        NetlinkPayload::from(RouteNetlinkMessage::GetLink(LinkMessage::default())),
    );
    request.finalize();
    let mut buf = vec![0; request.buffer_len()];
    request.serialize(&mut buf);
    socket
        .send(&buf, 0)
        .map_err(|e| failed("send", e.to_string()))?;
    let mut links = Vec::new();
    let mut recv = vec![0u8; 64 * 1024];
    loop {
        let n = socket
            .recv(&mut &mut recv[..], 0)
            .map_err(|e| failed("recv", e.to_string()))?;
        let mut offset = 0;
        while offset < n {
            let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&recv[offset..n])
                .map_err(|e| failed("decode", e.to_string()))?;
            let len = reply.header.length as usize;
            match reply.payload {
                NetlinkPayload::Done(_) => return Ok(links),
                NetlinkPayload::Error(e) if e.code.is_some() => {
                    return Err(failed("dump", e.to_io().to_string()))
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => {
                    links.push(link)
                }
                _ => {}
            }
            if len == 0 {
                break;
            }
            offset += len;
        }
    }
}
