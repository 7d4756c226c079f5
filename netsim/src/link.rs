//! Wiring: per-namespace set-up, node ports on the fabric's bridges, pod veths with CNI-style
//! routes. Everything is created inside private namespaces, so no interface ever shows up in
//! the host namespace, and fixed names (`eth0`, `br0`) cannot clash between topologies.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::path::Path;

use ipnet::IpNet;

use crate::error::{Error, Result};
use crate::netlink::with_netlink;
use crate::netns::write_sysctl;

/// The MAC address of every node-side pod veth (as Calico does): pods reach their gateway
/// through a static neighbour entry for it, so no ARP or NDP proxying is needed.
pub const GATEWAY_MAC: [u8; 6] = [0xee; 6];
/// The IPv4 gateway pods route through: link-local, never configured on the node.
pub const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// The IPv6 gateway pods route through.
pub const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);

/// Whether this kernel has IPv6 (a kernel booted with ipv6.disable=1 has no /proc/sys/net/ipv6).
fn has_ipv6() -> bool {
    Path::new("/proc/sys/net/ipv6").exists()
}

/// Brings loopback up and sets the namespace's sysctls: no duplicate address detection (IPv6
/// addresses are usable at once instead of after a second or two), and for a node, forwarding.
pub(crate) fn set_up_namespace(ns: &str, path: &Path, forwarding: bool) -> Result<()> {
    with_netlink(ns, path, |nl| async move {
        if has_ipv6() {
            write_sysctl("net/ipv6/conf/all/accept_dad", "0")?;
            write_sysctl("net/ipv6/conf/default/accept_dad", "0")?;
        }
        if forwarding {
            write_sysctl("net/ipv4/ip_forward", "1")?;
            if has_ipv6() {
                write_sysctl("net/ipv6/conf/all/forwarding", "1")?;
            }
        }
        nl.up("lo").await
    })
}

fn open_netns(path: &Path) -> Result<File> {
    File::open(path).map_err(|e| Error::io("open netns file", path, e))
}

/// The bridge of segment `segment` in the fabric namespace.
pub(crate) fn bridge_name(segment: usize) -> String {
    format!("br{segment}")
}

/// Creates the bridge of a segment in the fabric namespace.
pub(crate) fn add_segment(fabric: (&str, &Path), segment: usize) -> Result<()> {
    let bridge = bridge_name(segment);
    with_netlink(fabric.0, fabric.1, |nl| async move {
        nl.add_bridge(&bridge).await
    })
}

/// Connects a node to a segment: `s<segment>-<node>` on the fabric's bridge, `eth<segment>` in
/// the node with `addrs`. With `mtu`, both ends get it (a jumbo MTU makes a veth refuse native
/// XDP); without, the fabric's end gets a pass-through XDP program, so frames the node's own
/// XDP programs send back out reach the bridge. The fabric's end sends complete checksums, as
/// a wire delivers them ([`crate::xdp`]).
pub(crate) fn connect_node(
    fabric: (&str, &Path),
    node: (&str, &Path),
    segment: usize,
    addrs: &[IpNet],
    mtu: Option<u32>,
) -> Result<()> {
    let port = format!("s{segment}-{}", node.0);
    let dev = format!("eth{segment}");
    let node_ns = open_netns(node.1)?;
    let node_fd = node_ns.as_raw_fd();
    let peer = dev.clone();
    let pass = match mtu {
        Some(_) => None,
        None => Some(crate::xdp::load_pass_program()?),
    };
    let pass_fd = pass.as_ref().map(AsRawFd::as_raw_fd);
    with_netlink(fabric.0, fabric.1, |nl| async move {
        nl.add_veth(&port, None, &peer, node_fd).await?;
        if let Some(mtu) = mtu {
            nl.set_mtu(&port, mtu).await?;
        }
        if let Some(fd) = pass_fd {
            nl.set_xdp(&port, fd).await?;
        }
        crate::xdp::disable_tx_checksum(&port)?;
        nl.enslave(&port, &bridge_name(segment)).await
    })?;
    drop(pass);
    drop(node_ns);
    with_netlink(node.0, node.1, |nl| async move {
        if let Some(mtu) = mtu {
            nl.set_mtu(&dev, mtu).await?;
        }
        nl.up(&dev).await?;
        for addr in addrs {
            nl.add_address(&dev, *addr).await?;
        }
        Ok(())
    })
}

/// Connects a pod to its node the way CNI plugins route pods: a veth `v-<pod>` in the node,
/// `eth0` in the pod; in the node a host route to each pod address out of the veth; in the pod
/// the addresses as /32 and /128 and default routes through a link-local gateway whose MAC is
/// the node-side veth's.
pub(crate) fn connect_pod(
    node: (&str, &Path),
    pod: (&str, &Path),
    ipv4: Ipv4Addr,
    ipv6: Option<Ipv6Addr>,
    mtu: Option<u32>,
) -> Result<String> {
    let veth = format!("v-{}", pod.0);
    let host_routes: Vec<IpNet> = std::iter::once(IpNet::from(IpAddr::V4(ipv4)))
        .chain(ipv6.map(|a| IpNet::from(IpAddr::V6(a))))
        .collect();
    let pod_ns = open_netns(pod.1)?;
    let pod_fd = pod_ns.as_raw_fd();
    let node_veth = veth.clone();
    let routes = host_routes.clone();
    with_netlink(node.0, node.1, |nl| async move {
        nl.add_veth(&node_veth, Some(GATEWAY_MAC), "eth0", pod_fd)
            .await?;
        if let Some(mtu) = mtu {
            nl.set_mtu(&node_veth, mtu).await?;
        }
        nl.up(&node_veth).await?;
        for dest in routes {
            nl.add_route(dest, None, Some(&node_veth), false).await?;
        }
        Ok(())
    })?;
    drop(pod_ns);
    with_netlink(pod.0, pod.1, |nl| async move {
        if let Some(mtu) = mtu {
            nl.set_mtu("eth0", mtu).await?;
        }
        nl.up("eth0").await?;
        for addr in host_routes {
            nl.add_address("eth0", addr).await?;
        }
        nl.add_neighbour("eth0", GATEWAY_V4.into(), GATEWAY_MAC)
            .await?;
        let default_v4 = IpNet::new(Ipv4Addr::UNSPECIFIED.into(), 0).expect("prefix 0 is valid");
        nl.add_route(default_v4, Some(GATEWAY_V4.into()), Some("eth0"), true)
            .await?;
        if ipv6.is_some() {
            nl.add_neighbour("eth0", GATEWAY_V6.into(), GATEWAY_MAC)
                .await?;
            let default_v6 =
                IpNet::new(Ipv6Addr::UNSPECIFIED.into(), 0).expect("prefix 0 is valid");
            nl.add_route(default_v6, Some(GATEWAY_V6.into()), Some("eth0"), false)
                .await?;
        }
        Ok(())
    })?;
    Ok(veth)
}

/// Adds a route to `dest` via `via` in the namespace at `path`.
pub(crate) fn add_route(ns: (&str, &Path), dest: IpNet, via: IpAddr) -> Result<()> {
    with_netlink(ns.0, ns.1, |nl| async move {
        nl.add_route(dest, Some(via), None, false).await
    })
}

/// In the namespace, replaces the route to `dest` by one via `via`.
pub(crate) fn replace_route(ns: (&str, &Path), dest: IpNet, via: IpAddr) -> Result<()> {
    with_netlink(
        ns.0,
        ns.1,
        |nl| async move { nl.replace_route(dest, via).await },
    )
}
