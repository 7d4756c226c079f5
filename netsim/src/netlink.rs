//! rtnetlink requests run inside one network namespace: links, addresses, routes, neighbours.
//!
//! [`with_netlink`] enters the namespace on a fresh thread, starts a single-threaded tokio
//! runtime there and opens the netlink socket from that thread, so the socket (and every request
//! sent on it) belongs to that namespace.

use std::future::Future;
use std::net::IpAddr;
use std::os::fd::RawFd;
use std::path::Path;

use futures::TryStreamExt;
use ipnet::IpNet;
use rtnetlink::packet_route::address::AddressHeaderFlags;
use rtnetlink::packet_route::link::{InfoData, InfoVeth, LinkAttribute, LinkXdp};
use rtnetlink::packet_route::route::RouteScope;
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::error::{Error, Result};
use crate::netns::run_in;

/// A netlink handle opened inside the namespace `ns`, naming it in every error.
#[derive(Debug)]
pub(crate) struct Netlink {
    ns: String,
    handle: Handle,
}

/// Runs `f` with a netlink handle opened inside the namespace pinned at `path`.
pub(crate) fn with_netlink<T, F, Fut>(ns: &str, path: &Path, f: F) -> Result<T>
where
    T: Send,
    F: FnOnce(Netlink) -> Fut + Send,
    Fut: Future<Output = Result<T>>,
{
    run_in(ns, path, move || {
        let socket_err = |op: &str| {
            let op = op.to_owned();
            move |source| Error::Socket {
                ns: ns.to_owned(),
                op,
                source,
            }
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(socket_err("start a tokio runtime"))?;
        runtime.block_on(async move {
            let (connection, handle, _) =
                rtnetlink::new_connection().map_err(socket_err("open a netlink socket"))?;
            tokio::spawn(connection);
            f(Netlink {
                ns: ns.to_owned(),
                handle,
            })
            .await
        })
    })?
}

impl Netlink {
    fn err(&self, op: String) -> impl FnOnce(rtnetlink::Error) -> Error + '_ {
        move |source| Error::Netlink {
            ns: self.ns.clone(),
            op,
            source,
        }
    }

    /// The index of the link called `name`.
    pub(crate) async fn index(&self, name: &str) -> Result<u32> {
        let link = self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute()
            .try_next()
            .await
            .map_err(self.err(format!("find link {name}")))?;
        link.map(|l| l.header.index).ok_or_else(|| Error::Topology {
            what: "no such link",
            name: format!("{name} in namespace {}", self.ns),
        })
    }

    /// Applies a link change (`RTM_NEWLINK` on an existing link); `op` says what, in errors.
    async fn set_link(
        &self,
        msg: rtnetlink::packet_route::link::LinkMessage,
        op: String,
    ) -> Result<()> {
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(self.err(op))
    }

    /// Sets the link `name` up.
    pub(crate) async fn up(&self, name: &str) -> Result<()> {
        let msg = LinkUnspec::new_with_name(name).up().build();
        self.set_link(msg, format!("set {name} up")).await
    }

    /// Creates a veth pair: `name` (with MAC `mac`, if given) here, and `peer` inside the
    /// namespace open as `peer_ns` (which may be this one).
    pub(crate) async fn add_veth(
        &self,
        name: &str,
        mac: Option<[u8; 6]>,
        peer: &str,
        peer_ns: RawFd,
    ) -> Result<()> {
        let peer_msg = LinkUnspec::new_with_name(peer).setns_by_fd(peer_ns).build();
        let mut builder = LinkVeth::new(name, peer);
        if let Some(mac) = mac {
            builder = builder.address(mac.to_vec());
        }
        let msg = builder
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)))
            .build();
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(self.err(format!("add veth {name} with peer {peer}")))
    }

    /// Attaches the XDP program `prog` to link `name`, in its driver.
    pub(crate) async fn set_xdp(&self, name: &str, prog: RawFd) -> Result<()> {
        /// `XDP_FLAGS_DRV_MODE`.
        const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
        let msg = LinkUnspec::new_with_name(name)
            .append_extra_attribute(LinkAttribute::Xdp(vec![
                LinkXdp::Fd(prog),
                LinkXdp::Flags(XDP_FLAGS_DRV_MODE),
            ]))
            .build();
        self.set_link(msg, format!("attach an XDP program to {name}"))
            .await
    }

    /// Sets the MTU of link `name`.
    pub(crate) async fn set_mtu(&self, name: &str, mtu: u32) -> Result<()> {
        let msg = LinkUnspec::new_with_name(name).mtu(mtu).build();
        self.set_link(msg, format!("set the MTU of {name} to {mtu}"))
            .await
    }

    /// Creates a bridge `name`, up, with multicast snooping off so neighbour discovery floods.
    pub(crate) async fn add_bridge(&self, name: &str) -> Result<()> {
        let msg = LinkBridge::new(name).mcast_snooping(false).build();
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(self.err(format!("add bridge {name}")))
    }

    /// Makes `port` a port of `bridge`, and sets it up.
    pub(crate) async fn enslave(&self, port: &str, bridge: &str) -> Result<()> {
        let bridge_index = self.index(bridge).await?;
        let msg = LinkUnspec::new_with_name(port)
            .controller(bridge_index)
            .up()
            .build();
        self.set_link(msg, format!("attach {port} to bridge {bridge}"))
            .await
    }

    /// Adds `addr` (with its prefix length) to the link `name`, usable at once.
    pub(crate) async fn add_address(&self, name: &str, addr: IpNet) -> Result<()> {
        let index = self.index(name).await?;
        let mut request = self
            .handle
            .address()
            .add(index, addr.addr(), addr.prefix_len());
        // Without duplicate address detection the kernel never marks the address tentative,
        // so it can be bound as soon as this returns (accept_dad=0 still leaves a short window
        // in which DAD work is queued and the address unusable).
        request.message_mut().header.flags |= AddressHeaderFlags::Nodad;
        request
            .execute()
            .await
            .map_err(self.err(format!("add address {addr} to {name}")))
    }

    /// Adds a route to `dest`, via the gateway `via` and/or out of the link `dev`; `onlink`
    /// lets the gateway be outside every prefix of `dev`.
    pub(crate) async fn add_route(
        &self,
        dest: IpNet,
        via: Option<IpAddr>,
        dev: Option<&str>,
        onlink: bool,
    ) -> Result<()> {
        let what = format!(
            "add route {dest}{}{}",
            via.map(|v| format!(" via {v}")).unwrap_or_default(),
            dev.map(|d| format!(" dev {d}")).unwrap_or_default()
        );
        // rtnetlink does not export its InvalidRouteMessage; keep its text.
        let invalid = |e: String| Error::Socket {
            ns: self.ns.clone(),
            op: what.clone(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
        };
        let mut builder = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(dest.addr(), dest.prefix_len())
            .map_err(|e| invalid(e.to_string()))?;
        match via {
            Some(via) => builder = builder.gateway(via).map_err(|e| invalid(e.to_string()))?,
            // As `ip route add PREFIX dev DEV` does: a directly attached prefix has link scope.
            None => builder = builder.scope(RouteScope::Link),
        }
        if let Some(dev) = dev {
            builder = builder.output_interface(self.index(dev).await?);
        }
        if onlink {
            builder = builder.onlink();
        }
        self.handle
            .route()
            .add(builder.build())
            .execute()
            .await
            .map_err(self.err(what.clone()))
    }

    /// Replaces the route to `dest` by one via the gateway `via` (`ip route replace`).
    pub(crate) async fn replace_route(&self, dest: IpNet, via: IpAddr) -> Result<()> {
        let what = format!("replace route {dest} via {via}");
        let invalid = |e: String| Error::Socket {
            ns: self.ns.clone(),
            op: what.clone(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
        };
        let builder = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(dest.addr(), dest.prefix_len())
            .map_err(|e| invalid(e.to_string()))?
            .gateway(via)
            .map_err(|e| invalid(e.to_string()))?;
        self.handle
            .route()
            .add(builder.build())
            .replace()
            .execute()
            .await
            .map_err(self.err(what.clone()))
    }

    /// Adds a permanent neighbour entry: `ip` is at `mac` on the link `dev`.
    pub(crate) async fn add_neighbour(&self, dev: &str, ip: IpAddr, mac: [u8; 6]) -> Result<()> {
        let index = self.index(dev).await?;
        self.handle
            .neighbours()
            .add(index, ip)
            .link_layer_address(&mac)
            .execute()
            .await
            .map_err(self.err(format!("add neighbour {ip} on {dev}")))
    }
}
