//! The node's own addresses: wildcard NodePort and HostPort frontends answer on them from the
//! node itself, as they do on 127.0.0.1.

use std::collections::BTreeMap;
use std::net::IpAddr;

use nix::ifaddrs::getifaddrs;

use super::HostError;
use crate::k8s::NodeDevice;

/// Devices whose addresses are not the node's: the documents answer NodePorts on "any local
/// (except for `docker*` prefixed names) or loopback address".
const EXCLUDED_PREFIXES: [&str; 1] = ["docker"];

/// The node's addresses in this network namespace, as [`node_addresses`] orders them.
pub fn local_addresses() -> Result<Vec<IpAddr>, HostError> {
    Ok(node_addresses(local_devices()?))
}

/// The addresses of `devices` where wildcard frontends answer: `docker*` devices left out,
/// devices with fewer addresses first (name order among equals), so when not all fit in the
/// map, a device holding thousands (kube-proxy's IPVS dummy device) cannot crowd out the
/// node's own interfaces.
pub fn node_addresses(mut devices: Vec<NodeDevice>) -> Vec<IpAddr> {
    devices.retain(|d| !EXCLUDED_PREFIXES.iter().any(|p| d.name.starts_with(p)));
    devices.sort_by_key(|d| d.addrs.len());
    devices.into_iter().flat_map(|d| d.addrs).collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn device(name: &str, addrs: &[&str]) -> NodeDevice {
        NodeDevice {
            name: name.into(),
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn docker_devices_are_left_out_and_small_devices_come_first() {
        let ipvs: Vec<String> = (1..=3).map(|i| format!("10.96.0.{i}")).collect();
        let ipvs: Vec<&str> = ipvs.iter().map(String::as_str).collect();
        let got = node_addresses(vec![
            device("docker0", &["172.17.0.1"]),
            device("dockerbr1", &["172.18.0.1"]),
            device("eth0", &["192.168.56.11", "fd00::11"]),
            device("eth1", &["172.16.0.29"]),
            device("kube-ipvs0", &ipvs),
        ]);
        let got: Vec<String> = got.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "172.16.0.29",
                "192.168.56.11",
                "fd00::11",
                "10.96.0.1",
                "10.96.0.2",
                "10.96.0.3"
            ]
        );
    }
}
