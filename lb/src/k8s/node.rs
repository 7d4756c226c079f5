//! The node this agent runs on: its name, zone, devices and addresses, and which devices and
//! addresses serve NodePort.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Node;
use serde::Serialize;

use super::error::{ErrorSink, ObjectRef, TranslateError};
use super::fields;
use crate::config::DevicePattern;
use crate::model::IpFamily;

/// Label carrying a node's (or endpoint's) zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// A network device of the node and its addresses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeDevice {
    /// Interface name.
    pub name: String,
    /// Its addresses.
    pub addrs: Vec<IpAddr>,
}

/// Kubernetes' kinds of node address that expose services.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum K8sAddressType {
    /// `InternalIP`, preferred.
    InternalIP,
    /// `ExternalIP`.
    ExternalIP,
}

/// Everything translation needs to know about the local node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NodeContext {
    /// `metadata.name` of the local Node.
    pub name: String,
    /// Its zone label, for topology hints.
    pub zone: Option<String>,
    /// Its devices (from the kernel, or given on the command line when rendering offline).
    pub devices: Vec<NodeDevice>,
    /// Its Kubernetes addresses, InternalIP first.
    pub k8s_addresses: Vec<(K8sAddressType, IpAddr)>,
}

/// The devices that serve NodePort, and the one used between nodes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeviceSelection {
    /// NodePort devices in name order.
    pub devices: Vec<String>,
    /// The direct-routing device, if one could be chosen.
    pub direct_routing: Option<String>,
    /// `devices` was set but matched no device, so the devices were auto-detected instead.
    pub patterns_matched_nothing: bool,
}

impl NodeContext {
    /// The context for `node` with the given devices, and an error for each address of a
    /// service-exposing kind (InternalIP, ExternalIP) that is not an IP address; such an
    /// address is left out.
    pub fn from_node(node: &Node, devices: Vec<NodeDevice>) -> (Self, Vec<TranslateError>) {
        let mut sink = ErrorSink::new(ObjectRef {
            namespace: String::new(),
            ..ObjectRef::new("Node", &node.metadata)
        });
        let zone = node
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(ZONE_LABEL))
            .cloned();
        let mut k8s_addresses: Vec<(K8sAddressType, IpAddr)> = node
            .status
            .iter()
            .flat_map(|s| s.addresses.iter().flatten())
            .enumerate()
            .filter_map(|(i, a)| {
                let kind = match a.type_.as_str() {
                    "InternalIP" => K8sAddressType::InternalIP,
                    "ExternalIP" => K8sAddressType::ExternalIP,
                    _ => return None, // Hostname and the like expose nothing.
                };
                let ip = fields::ip(
                    &mut sink,
                    &format!("status.addresses[{i}].address"),
                    &a.address,
                )?;
                Some((kind, ip))
            })
            .collect();
        k8s_addresses.sort();
        let ctx = NodeContext {
            name: node.metadata.name.clone().unwrap_or_default(),
            zone,
            devices,
            k8s_addresses,
        };
        (ctx, sink.into_errors())
    }

    /// Chooses the NodePort devices and the direct-routing device as the documents describe:
    /// the `devices` patterns (or, when empty, the devices holding a Kubernetes address); the
    /// direct-routing device is `directRoutingDevice` (first match in name order, added to the
    /// list), else the only device, else the one holding InternalIP, else ExternalIP.
    pub fn select_devices(
        &self,
        patterns: &[DevicePattern],
        direct_routing: Option<&DevicePattern>,
    ) -> DeviceSelection {
        let mut names: Vec<&NodeDevice> = self.devices.iter().collect();
        names.sort_by(|a, b| a.name.cmp(&b.name));
        let auto_detected = || -> Vec<String> {
            names
                .iter()
                .filter(|d| d.addrs.iter().any(|ip| self.k8s_type_of(*ip).is_some()))
                .map(|d| d.name.clone())
                .collect()
        };
        let mut selected: Vec<String> = names
            .iter()
            .filter(|d| patterns.iter().any(|p| p.matches(&d.name)))
            .map(|d| d.name.clone())
            .collect();
        // As the documents say: when no device matches, fall back to auto-detection.
        let patterns_matched_nothing =
            !patterns.is_empty() && selected.is_empty() && !names.is_empty();
        if patterns.is_empty() || patterns_matched_nothing {
            selected = auto_detected();
        }
        let direct = match direct_routing {
            Some(pattern) => names
                .iter()
                .find(|d| pattern.matches(&d.name))
                .map(|d| d.name.clone()),
            None if selected.len() == 1 => selected.first().cloned(),
            None => [K8sAddressType::InternalIP, K8sAddressType::ExternalIP]
                .into_iter()
                .find_map(|kind| {
                    names
                        .iter()
                        .filter(|d| selected.contains(&d.name))
                        .find(|d| d.addrs.iter().any(|ip| self.k8s_type_of(*ip) == Some(kind)))
                        .map(|d| d.name.clone())
                }),
        };
        if let Some(dr) = &direct {
            if !selected.contains(dr) {
                selected.push(dr.clone());
                selected.sort();
            }
        }
        DeviceSelection {
            devices: selected,
            direct_routing: direct,
            patterns_matched_nothing,
        }
    }

    /// Addresses NodePort (and wildcard HostPort) frontends are created for: the global
    /// addresses of the selected devices in device-name order, or the node's Kubernetes
    /// addresses when no device is known.
    pub fn node_port_addrs(&self, selection: &DeviceSelection, family: IpFamily) -> Vec<IpAddr> {
        let mut addrs: Vec<IpAddr> = if self.devices.is_empty() {
            self.k8s_addresses.iter().map(|(_, ip)| *ip).collect()
        } else {
            selection
                .devices
                .iter()
                .filter_map(|name| self.devices.iter().find(|d| &d.name == name))
                .flat_map(|d| d.addrs.iter().copied())
                .collect()
        };
        addrs.retain(|ip| IpFamily::of(*ip) == family && is_global(*ip));
        let mut seen = std::collections::BTreeSet::new();
        addrs.retain(|ip| seen.insert(*ip));
        addrs
    }

    fn k8s_type_of(&self, ip: IpAddr) -> Option<K8sAddressType> {
        self.k8s_addresses
            .iter()
            .find(|(_, a)| *a == ip)
            .map(|(kind, _)| *kind)
    }
}

/// Not loopback, unspecified or IPv6 link-local: an address other hosts can reach.
fn is_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_unspecified() && !v4.is_link_local(),
        IpAddr::V6(v6) => {
            !v6.is_loopback() && !v6.is_unspecified() && (v6.segments()[0] & 0xffc0) != 0xfe80
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> NodeContext {
        NodeContext {
            name: "apoc".into(),
            zone: None,
            devices: vec![
                NodeDevice {
                    name: "eth1".into(),
                    addrs: vec!["172.16.0.29".parse().unwrap()],
                },
                NodeDevice {
                    name: "eth0".into(),
                    addrs: vec![
                        "192.168.178.29".parse().unwrap(),
                        "fe80::1".parse().unwrap(),
                    ],
                },
                NodeDevice {
                    name: "docker0".into(),
                    addrs: vec!["172.17.0.1".parse().unwrap()],
                },
            ],
            k8s_addresses: vec![(
                K8sAddressType::InternalIP,
                "192.168.178.29".parse().unwrap(),
            )],
        }
    }

    fn pats(p: &[&str]) -> Vec<DevicePattern> {
        p.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn internal_ip_device_routes_directly_among_several() {
        let sel = ctx().select_devices(&pats(&["eth+"]), None);
        assert_eq!(sel.devices, ["eth0", "eth1"]);
        assert_eq!(sel.direct_routing.as_deref(), Some("eth0"));
    }

    #[test]
    fn auto_detection_takes_devices_with_kubernetes_addresses() {
        let sel = ctx().select_devices(&[], None);
        assert_eq!(sel.devices, ["eth0"]);
        assert_eq!(sel.direct_routing.as_deref(), Some("eth0"));
    }

    #[test]
    fn patterns_matching_nothing_fall_back_to_auto_detection() {
        let sel = ctx().select_devices(&pats(&["ens+"]), None);
        assert_eq!(sel.devices, ["eth0"]);
        assert!(sel.patterns_matched_nothing);
        assert!(
            !ctx()
                .select_devices(&pats(&["eth+"]), None)
                .patterns_matched_nothing
        );
    }

    #[test]
    fn explicit_direct_routing_device_is_added_to_the_list() {
        let sel = ctx().select_devices(&pats(&["eth0"]), Some(&"eth+".parse().unwrap()));
        assert_eq!(sel.direct_routing.as_deref(), Some("eth0"));
        let sel = ctx().select_devices(&pats(&["eth0"]), Some(&"eth1".parse().unwrap()));
        assert_eq!(sel.devices, ["eth0", "eth1"]);
    }

    #[test]
    fn node_port_addrs_skip_link_local_and_other_families() {
        let c = ctx();
        let sel = c.select_devices(&pats(&["eth+"]), None);
        let v4: Vec<String> = c
            .node_port_addrs(&sel, IpFamily::V4)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            v4,
            ["192.168.178.29", "172.16.0.29"],
            "device order: eth0, eth1"
        );
        assert!(c.node_port_addrs(&sel, IpFamily::V6).is_empty());
    }
}
