//! Containers' `hostPort` mappings on this node into HostPort frontends.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Pod;

use super::error::{ErrorSink, ObjectRef, TranslateError};
use super::fields::{self, ParsedProtocol};
use super::translate::LocalNode;
use super::TranslateOptions;
use crate::model::{
    Backend, Frontend, IpFamily, L3n4Addr, LbService, Placement, ServiceName, ServicePolicies,
    ServiceType,
};

/// The HostPort frontends of `pod`, if it runs on this node and has an IP.
pub fn translate_pod(
    pod: &Pod,
    node: &LocalNode,
    opts: &TranslateOptions,
    warnings: &mut Vec<String>,
) -> Result<Vec<LbService>, Vec<TranslateError>> {
    let object = ObjectRef::new("Pod", &pod.metadata);
    let Some(spec) = &pod.spec else {
        return Ok(Vec::new());
    };
    if spec.node_name.as_deref() != Some(node.name.as_str()) {
        return Ok(Vec::new());
    }
    if spec.host_network == Some(true) {
        // A host-network pod binds its ports on the node itself: there is nothing to map.
        return Ok(Vec::new());
    }
    let status = pod.status.as_ref();
    if matches!(
        status.and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    ) {
        return Ok(Vec::new());
    }
    let mut sink = ErrorSink::new(object.clone());
    let pod_ips: Vec<IpAddr> = match status {
        Some(s) if s.pod_ips.as_ref().is_some_and(|ips| !ips.is_empty()) => s
            .pod_ips
            .iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, p)| fields::ip(&mut sink, &format!("status.podIPs[{i}].ip"), &p.ip))
            .collect(),
        Some(s) => s
            .pod_ip
            .iter()
            .filter_map(|ip| fields::ip(&mut sink, "status.podIP", ip))
            .collect(),
        None => Vec::new(),
    };
    let name = ServiceName {
        namespace: object.namespace.clone(),
        name: object.name.clone(),
    };
    let mut out = Vec::new();
    for (c, container) in spec.containers.iter().enumerate() {
        for (p, cp) in container.ports.iter().flatten().enumerate() {
            let Some(raw_host_port) = cp.host_port.filter(|hp| *hp != 0) else {
                continue;
            };
            let at = format!("spec.containers[{c}].ports[{p}]");
            let host_port = fields::port(&mut sink, &format!("{at}.hostPort"), raw_host_port);
            let container_port =
                fields::port(&mut sink, &format!("{at}.containerPort"), cp.container_port);
            let protocol =
                fields::protocol(&mut sink, &format!("{at}.protocol"), cp.protocol.as_deref());
            let host_ip = match cp.host_ip.as_deref() {
                None | Some("") => None,
                Some(raw) => match fields::ip(&mut sink, &format!("{at}.hostIP"), raw) {
                    Some(ip) => Some(ip),
                    None => continue,
                },
            };
            let (Some(host_port), Some(container_port), Some(ParsedProtocol::Supported(protocol))) =
                (host_port, container_port, protocol)
            else {
                continue;
            };
            if opts.node_port_range.contains(host_port) {
                warnings.push(format!(
                    "{object}: {at}.hostPort {host_port} lies in the NodePort range {}; the hostPort \
                     is ignored to avoid collisions",
                    opts.node_port_range
                ));
                continue;
            }
            if host_ip.is_some_and(|ip| ip.is_loopback()) {
                warnings.push(format!(
                    "{object}: {at}.hostIP is a loopback address, which is not supported for \
                     hostPort; the hostPort is ignored"
                ));
                continue;
            }
            for pod_ip in &pod_ips {
                let family = IpFamily::of(*pod_ip);
                if !family_enabled(family, opts) {
                    continue;
                }
                let frontend_ips: Vec<IpAddr> = match host_ip {
                    Some(ip) if !ip.is_unspecified() => {
                        if IpFamily::of(ip) != family {
                            continue;
                        }
                        vec![ip]
                    }
                    // No hostIP, or 0.0.0.0: every NodePort address, plus the wildcard that also
                    // answers on loopback.
                    _ => std::iter::once(family.unspecified())
                        .chain(node.node_port_addrs(family).iter().copied())
                        .collect(),
                };
                let mut backend = Backend::active(L3n4Addr::new(*pod_ip, container_port, protocol));
                backend.placement = Placement {
                    node_name: Some(node.name.as_str().into()),
                    hint_zones: Box::default(),
                }
                .shared();
                for ip in frontend_ips {
                    out.push(LbService {
                        frontend: Frontend::external(
                            L3n4Addr::new(ip, host_port, protocol),
                            ServiceType::HostPort,
                        ),
                        name: name.clone(),
                        port_name: cp.name.clone().unwrap_or_default(),
                        no_local_backends: false,
                        backends: vec![backend.clone()],
                        policies: ServicePolicies::default(),
                    });
                }
            }
        }
    }
    if sink.is_clean() {
        Ok(out)
    } else {
        Err(sink.into_errors())
    }
}

fn family_enabled(family: IpFamily, opts: &TranslateOptions) -> bool {
    match family {
        IpFamily::V4 => opts.ipv4,
        IpFamily::V6 => opts.ipv6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::{DeviceSelection, NodeContext, NodeDevice};
    use serde_json::json;

    fn node() -> LocalNode {
        let ctx = NodeContext {
            name: "n1".into(),
            devices: vec![NodeDevice {
                name: "eth0".into(),
                addrs: vec!["192.168.1.10".parse().unwrap()],
            }],
            ..NodeContext::default()
        };
        let selection = DeviceSelection {
            devices: vec!["eth0".into()],
            direct_routing: Some("eth0".into()),
            patterns_matched_nothing: false,
        };
        LocalNode::new(&ctx, &selection)
    }

    fn pod(ports: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": ports}]},
            "status": {"phase": "Running", "podIP": "10.244.0.9"}
        }))
        .unwrap()
    }

    fn frontends(p: &Pod) -> (Vec<String>, Vec<String>) {
        let mut warnings = Vec::new();
        let services =
            translate_pod(p, &node(), &TranslateOptions::default(), &mut warnings).unwrap();
        (
            services
                .iter()
                .map(|s| format!("{} => {}", s.frontend, s.backends[0].addr))
                .collect(),
            warnings,
        )
    }

    #[test]
    fn no_host_ip_means_every_node_address_and_the_wildcard() {
        let (fe, _) = frontends(&pod(json!([{"containerPort": 80, "hostPort": 8080}])));
        assert_eq!(
            fe,
            [
                "0.0.0.0:8080 => 10.244.0.9:80",
                "192.168.1.10:8080 => 10.244.0.9:80"
            ]
        );
        let (same, _) = frontends(&pod(
            json!([{"containerPort": 80, "hostPort": 8080, "hostIP": "0.0.0.0"}]),
        ));
        assert_eq!(same, fe, "hostIP 0.0.0.0 behaves as no hostIP");
    }

    #[test]
    fn a_host_ip_exposes_only_that_address() {
        let (fe, _) = frontends(&pod(
            json!([{"containerPort": 53, "hostPort": 5353, "hostIP": "192.168.1.10", "protocol": "UDP"}]),
        ));
        assert_eq!(fe, ["192.168.1.10:5353 => 10.244.0.9:53"]);
    }

    #[test]
    fn loopback_host_ip_and_node_port_range_are_ignored_with_warnings() {
        let (fe, warnings) = frontends(&pod(json!([
            {"containerPort": 80, "hostPort": 8080, "hostIP": "127.0.0.1"},
            {"containerPort": 81, "hostPort": 31000}
        ])));
        assert!(fe.is_empty());
        assert_eq!(warnings.len(), 2);
        assert!(warnings[0].contains("loopback"), "{}", warnings[0]);
        assert!(
            warnings[1].contains("31000") && warnings[1].contains("30000-32767"),
            "{}",
            warnings[1]
        );
    }

    #[test]
    fn pods_elsewhere_or_finished_expose_nothing() {
        let mut p = pod(json!([{"containerPort": 80, "hostPort": 8080}]));
        p.spec.as_mut().unwrap().node_name = Some("n2".into());
        assert!(frontends(&p).0.is_empty());
        let mut p = pod(json!([{"containerPort": 80, "hostPort": 8080}]));
        p.status.as_mut().unwrap().phase = Some("Succeeded".into());
        assert!(frontends(&p).0.is_empty());
        let mut p = pod(json!([{"containerPort": 80, "hostPort": 80}]));
        p.spec.as_mut().unwrap().host_network = Some(true);
        assert!(
            frontends(&p).0.is_empty(),
            "host-network pods bind on the node themselves"
        );
    }

    #[test]
    fn a_bad_host_port_names_the_field() {
        let p = pod(json!([{"containerPort": 80, "hostPort": 70000}]));
        let errors =
            translate_pod(&p, &node(), &TranslateOptions::default(), &mut Vec::new()).unwrap_err();
        assert_eq!(errors[0].to_string(), "Pod ns/p: spec.containers[0].ports[0].hostPort: 70000: expected a port from 1 to 65535");
    }
}
