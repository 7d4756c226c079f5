//! The start-up decisions of the packet datapath: the NodePort programs' load-time settings
//! and which devices they are attached to (the documents' "NodePort Devices" section).

use std::net::IpAddr;

use crate::config::{Acceleration, AgentConfig, DevicePattern};
use crate::datapath::{DeviceAddrs, MaglevSettings, NodePortConfig, XdpPolicy};
use crate::host::HostDevice;
use crate::k8s::DeviceSelection;
use crate::maglev::HashSeed;

/// Devices never auto-detected as NodePort devices: the documents expose services on "native
/// devices"; bridges of container runtimes and Cilium's own devices are not (and `docker*`
/// addresses are not the node's, as the socket programs already treat them).
const NOT_NATIVE_PREFIXES: [&str; 3] = ["docker", "lxc", "cilium_"];

/// A device option names a device this node does not have.
#[derive(Debug, thiserror::Error)]
#[error(
    "{option} names device {name}, which this node does not have; its devices: {}",
    if available.is_empty() { "none".to_owned() } else { available.join(", ") }
)]
pub struct UnknownDevice {
    /// `devices` or `nodePort.directRoutingDevice`.
    pub option: &'static str,
    /// The name given.
    pub name: String,
    /// The node's devices.
    pub available: Vec<String>,
}

/// The NodePort programs' settings for `config`.
pub fn nodeport_settings(config: &AgentConfig) -> NodePortConfig {
    let snat = config.snat_port_range();
    NodePortConfig {
        map_max: config.values().bpf.lb_map_max,
        snat_port_min: snat.low,
        snat_port_max: snat.high,
        flow_seed: flow_seed(config.maglev_seed()),
        external_clusterip: config.values().bpf.lb_external_cluster_ip,
        xdp: xdp_policy(config).is_some(),
        external_ip_mitigation: !config.values().bpf.disable_external_ip_mitigation,
        maglev_m: maglev_table_size(config),
    }
}

/// Whether pods' service traffic is balanced per packet at their host-side interfaces: with
/// `socketLB.hostNamespaceOnly` the socket hooks leave pods alone, and the documents' tc
/// fallback takes over (it needs the NodePort programs loaded).
pub fn balances_pods_at_tc(config: &AgentConfig) -> bool {
    config.socket_lb() && config.values().socket_lb.host_namespace_only && config.node_port()
}

/// How `loadBalancer.acceleration` attaches the XDP program; `None` when it is `disabled`.
pub fn xdp_policy(config: &AgentConfig) -> Option<XdpPolicy> {
    match config.values().load_balancer.acceleration {
        Acceleration::Disabled => None,
        Acceleration::Native => Some(XdpPolicy::Native),
        Acceleration::BestEffort => Some(XdpPolicy::BestEffort),
    }
}

/// How the reconciler builds the Maglev tables, with `loadBalancer.algorithm=maglev`.
pub fn maglev_settings(config: &AgentConfig) -> Option<MaglevSettings> {
    maglev_table_size(config).map(|table_size| MaglevSettings {
        table_size,
        seed: *config.maglev_seed(),
        external_clusterip: config.values().bpf.lb_external_cluster_ip,
    })
}

/// `Some(maglev.tableSize)` with `loadBalancer.algorithm=maglev`, `None` with `random`.
pub fn maglev_table_size(config: &AgentConfig) -> Option<u32> {
    let values = config.values();
    (values.load_balancer.algorithm == crate::config::Algorithm::Maglev)
        .then_some(values.maglev.table_size)
}

/// The flow hash's seed: the three little-endian words of `maglev.hashSeed` XORed, so every
/// node with the same seed (the documents ask for one seed across the cluster) hashes a flow
/// alike and picks the same backend for it.
pub fn flow_seed(seed: &HashSeed) -> u32 {
    seed.as_bytes()
        .chunks_exact(4)
        .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
        .fold(0, |acc, w| acc ^ w)
}

/// Refuses a device named outright (not a `prefix+`) in `devices` or
/// `nodePort.directRoutingDevice` that the node lacks, naming it and listing the node's
/// devices. Needs only the options and the host, so the start checks it before it loads
/// anything.
pub fn check_named_devices(config: &AgentConfig, host: &[HostDevice]) -> Result<(), UnknownDevice> {
    let named = config.devices().iter().map(|p| ("devices", p)).chain(
        config
            .direct_routing_device()
            .map(|p| ("nodePort.directRoutingDevice", p)),
    );
    for (option, pattern) in named {
        if let DevicePattern::Name(name) = pattern {
            if !host.iter().any(|d| d.name == *name) {
                return Err(unknown_device(option, name, host));
            }
        }
    }
    Ok(())
}

fn unknown_device(option: &'static str, name: &str, host: &[HostDevice]) -> UnknownDevice {
    UnknownDevice {
        option,
        name: name.to_owned(),
        available: host.iter().map(|d| d.name.clone()).collect(),
    }
}

/// The devices to attach the NodePort programs to, in name order: those of `selection` (the
/// `devices` patterns and `nodePort.directRoutingDevice`, or the devices holding a Kubernetes
/// address), plus, when the patterns are unset or match nothing, the native devices a default
/// route leaves through. A device named outright (not a `prefix+`) that the node lacks is an
/// error naming it and listing the node's devices.
pub fn choose_devices(
    config: &AgentConfig,
    selection: &DeviceSelection,
    host: &[HostDevice],
) -> Result<Vec<DeviceAddrs>, UnknownDevice> {
    check_named_devices(config, host)?;
    let unknown = |option, name: &str| unknown_device(option, name, host);
    let mut names: Vec<&str> = selection.devices.iter().map(String::as_str).collect();
    if config.devices().is_empty() || selection.patterns_matched_nothing {
        names.extend(
            host.iter()
                .filter(|d| d.default_route)
                .filter(|d| !NOT_NATIVE_PREFIXES.iter().any(|p| d.name.starts_with(p)))
                .map(|d| d.name.as_str()),
        );
    }
    names.sort_unstable();
    names.dedup();
    names
        .into_iter()
        .map(|name| {
            let d = host
                .iter()
                .find(|d| d.name == name)
                .ok_or_else(|| unknown("devices", name))?;
            Ok(device_addrs(d))
        })
        .collect()
}

/// `device` with its first global IPv4 and IPv6 addresses.
pub fn device_addrs(device: &HostDevice) -> DeviceAddrs {
    let global = |ip: &&IpAddr| match ip {
        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_link_local() && !v4.is_unspecified(),
        IpAddr::V6(v6) => {
            !v6.is_loopback() && !v6.is_unspecified() && (v6.segments()[0] & 0xffc0) != 0xfe80
        }
    };
    DeviceAddrs {
        name: device.name.clone(),
        ifindex: device.ifindex,
        addr4: device.addrs.iter().filter(global).find_map(|ip| match ip {
            IpAddr::V4(v4) => Some(*v4),
            IpAddr::V6(_) => None,
        }),
        addr6: device.addrs.iter().filter(global).find_map(|ip| match ip {
            IpAddr::V6(v6) => Some(*v6),
            IpAddr::V4(_) => None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Values;

    fn host(name: &str, ifindex: u32, addrs: &[&str], default_route: bool) -> HostDevice {
        HostDevice {
            name: name.into(),
            ifindex,
            addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
            default_route,
        }
    }

    fn node() -> Vec<HostDevice> {
        vec![
            host("docker0", 2, &["172.17.0.1"], true),
            host("eth0", 3, &["fe80::1", "192.168.178.29", "fd00::29"], false),
            host("eth1", 4, &["172.16.0.29"], false),
            host("wlan0", 5, &["10.1.2.3"], true),
        ]
    }

    fn config(sets: &[(&str, &str)]) -> AgentConfig {
        let mut v = Values {
            kube_proxy_replacement: true,
            ..Values::default()
        };
        for (k, val) in sets {
            match *k {
                "devices" => v.devices = val.split(',').map(str::to_owned).collect(),
                "nodePort.directRoutingDevice" => {
                    v.node_port.direct_routing_device = Some((*val).to_owned())
                }
                _ => unreachable!(),
            }
        }
        AgentConfig::from_values(v).unwrap()
    }

    fn selection(devices: &[&str], matched_nothing: bool) -> DeviceSelection {
        DeviceSelection {
            devices: devices.iter().map(|d| (*d).to_owned()).collect(),
            direct_routing: devices.first().map(|d| (*d).to_owned()),
            patterns_matched_nothing: matched_nothing,
        }
    }

    fn names(devices: &[DeviceAddrs]) -> Vec<&str> {
        devices.iter().map(|d| d.name.as_str()).collect()
    }

    #[test]
    fn auto_detection_adds_native_devices_with_the_default_route() {
        let got = choose_devices(&config(&[]), &selection(&["eth0"], false), &node()).unwrap();
        assert_eq!(names(&got), ["eth0", "wlan0"]);
        assert_eq!(got[0].ifindex, 3);
        assert_eq!(got[0].addr4, Some("192.168.178.29".parse().unwrap()));
        assert_eq!(got[0].addr6, Some("fd00::29".parse().unwrap()));
        assert_eq!(got[1].addr6, None);
    }

    #[test]
    fn given_devices_are_taken_as_the_selection_says() {
        let c = config(&[("devices", "eth+")]);
        let got = choose_devices(&c, &selection(&["eth0", "eth1"], false), &node()).unwrap();
        assert_eq!(names(&got), ["eth0", "eth1"]);
    }

    #[test]
    fn a_named_device_the_node_lacks_is_an_error_listing_the_nodes_devices() {
        let c = config(&[("devices", "eth0,eth7")]);
        let err = choose_devices(&c, &selection(&["eth0"], false), &node()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "devices names device eth7, which this node does not have; its devices: docker0, \
             eth0, eth1, wlan0"
        );
        let c = config(&[("nodePort.directRoutingDevice", "bond0")]);
        let err = choose_devices(&c, &selection(&["eth0"], false), &node()).unwrap_err();
        assert!(err
            .to_string()
            .starts_with("nodePort.directRoutingDevice names device bond0"));
    }

    #[test]
    fn a_wildcard_matching_nothing_falls_back_to_auto_detection() {
        let c = config(&[("devices", "ens+")]);
        let got = choose_devices(&c, &selection(&["eth0"], true), &node()).unwrap();
        assert_eq!(names(&got), ["eth0", "wlan0"]);
    }

    #[test]
    fn the_flow_seed_follows_the_maglev_seed() {
        let a = flow_seed(&HashSeed::default());
        let b = flow_seed(&"AAAAAAAAAAAAAAAA".parse().unwrap());
        assert_eq!(b, 0);
        assert_ne!(a, b);
    }
}
