//! Containers' `hostPort` mappings on this node into HostPort frontends.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::Pod;

use super::error::{ErrorSink, ObjectRef, TranslateError};
use super::fields::{self, ParsedProtocol};
use super::translate::LocalNode;
use super::TranslateOptions;
use crate::model::{
    Backend, Frontend, IpFamily, L3n4Addr, LbService, ServiceName, ServicePolicies, ServiceType,
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
                    "{object}: {at}.hostIP {} is a loopback address, which is not supported for \
                     hostPort; the hostPort is ignored",
                    host_ip.unwrap_or(IpAddr::from([127, 0, 0, 1]))
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
                backend.node_name = Some(node.name.clone());
                backend.zone = node.zone.clone();
                for ip in frontend_ips {
                    out.push(LbService {
                        frontend: Frontend::external(
                            L3n4Addr::new(ip, host_port, protocol),
                            ServiceType::HostPort,
                        ),
                        name: name.clone(),
                        port_name: cp.name.clone().unwrap_or_default(),
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
