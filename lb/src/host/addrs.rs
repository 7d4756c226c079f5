//! The node's own addresses: wildcard NodePort and HostPort frontends answer on them from the
//! node itself, as they do on 127.0.0.1.

use std::collections::BTreeMap;
use std::net::IpAddr;

use nix::ifaddrs::getifaddrs;

use super::HostError;
use crate::k8s::NodeDevice;

/// Every address configured in this network namespace, loopback excluded.
pub fn local_addresses() -> Result<Vec<IpAddr>, HostError> {
    Ok(local_devices()?.into_iter().flat_map(|d| d.addrs).collect())
}

/// The namespace's devices with their addresses, loopback and address-less devices excluded,
/// in name order.
pub fn local_devices() -> Result<Vec<NodeDevice>, HostError> {
    let addrs = getifaddrs().map_err(|e| HostError::Unexpected {
        what: "the node's addresses (getifaddrs)".into(),
        detail: e.to_string(),
    })?;
    let mut devices: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
    for ifa in addrs {
        let Some(addr) = ifa.address else { continue };
        let ip = if let Some(v4) = addr.as_sockaddr_in() {
            IpAddr::V4(v4.ip())
        } else if let Some(v6) = addr.as_sockaddr_in6() {
            IpAddr::V6(v6.ip())
        } else {
            continue;
        };
        if ip.is_loopback() {
            continue;
        }
        devices.entry(ifa.interface_name).or_default().push(ip);
    }
    Ok(devices
        .into_iter()
        .map(|(name, addrs)| NodeDevice { name, addrs })
        .collect())
}
