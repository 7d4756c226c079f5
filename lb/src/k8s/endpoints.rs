//! EndpointSlices into backends: conditions to backend states, ports matched by name.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::discovery::v1::EndpointConditions;

use super::stored_slice::{EndpointAddress, StoredSlice};

use super::error::{ErrorSink, ObjectRef, TranslateError};
use super::fields::{self, ParsedProtocol};
use super::TranslateOptions;
use crate::model::{
    Backend, BackendState, IpFamily, L3n4Addr, L4Protocol, Placement, ServiceName,
    DEFAULT_BACKEND_WEIGHT,
};

/// Label linking an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// One port an EndpointSlice's endpoints listen on.
#[derive(Clone, Debug)]
struct SlicePort {
    name: String,
    port: u16,
    protocol: L4Protocol,
}

/// One endpoint that may take traffic.
#[derive(Clone, Debug)]
struct SliceEndpoint {
    ip: IpAddr,
    state: BackendState,
    placement: Option<Arc<Placement>>,
}

/// A validated EndpointSlice.
#[derive(Clone, Debug)]
pub struct ParsedSlice {
    /// The service it belongs to.
    pub service: ServiceName,
    /// Its address family.
    pub family: IpFamily,
    ports: Vec<SlicePort>,
    endpoints: Vec<SliceEndpoint>,
}

/// Validates `slice`. `Ok(None)` for slices this load balancer does not use (FQDN).
pub fn parse_slice(
    slice: &StoredSlice,
    opts: &TranslateOptions,
) -> Result<Option<ParsedSlice>, Vec<TranslateError>> {
    let object = ObjectRef::new("EndpointSlice", &slice.metadata);
    let mut sink = ErrorSink::new(object.clone());
    if slice.metadata.name.is_none() {
        sink.missing("metadata.name", "every object needs a name");
    }
    let Some(service) = &slice.service_name else {
        sink.missing(
            format!("metadata.labels[{SERVICE_NAME_LABEL:?}]"),
            "the label names the Service this slice belongs to",
        );
        return Err(sink.into_errors());
    };
    let family = match slice.address_type.as_str() {
        "IPv4" => IpFamily::V4,
        "IPv6" => IpFamily::V6,
        "FQDN" => return Ok(None),
        other => {
            sink.invalid("addressType", other, "expected IPv4, IPv6 or FQDN");
            return Err(sink.into_errors());
        }
    };
    let mut ports = Vec::new();
    for (i, p) in slice.ports.iter().enumerate() {
        let proto = fields::protocol(
            &mut sink,
            &format!("ports[{i}].protocol"),
            p.protocol.as_deref(),
        );
        let Some(raw_port) = p.port else { continue }; // "all ports": nothing to translate to.
        let port = fields::port(&mut sink, &format!("ports[{i}].port"), raw_port);
        if let (Some(ParsedProtocol::Supported(protocol)), Some(port)) = (proto, port) {
            ports.push(SlicePort {
                name: p.name.clone().unwrap_or_default(),
                port,
                protocol,
            });
        }
    }
    let mut endpoints = Vec::new();
    for (i, ep) in slice.endpoints.iter().enumerate() {
        let Some(first) = &ep.address else {
            sink.missing(
                format!("endpoints[{i}].addresses"),
                "an endpoint needs an address",
            );
            continue;
        };
        let field = format!("endpoints[{i}].addresses[0]");
        let ip = match first {
            EndpointAddress::Ip(ip) => *ip,
            EndpointAddress::Text(text) => {
                let Some(ip) = fields::ip(&mut sink, &field, text) else {
                    continue;
                };
                ip
            }
        };
        if IpFamily::of(ip) != family {
            sink.invalid(
                field,
                first.to_string(),
                format!("addressType is {}", slice.address_type),
            );
            continue;
        }
        let Some(state) = endpoint_state(&ep.conditions, opts) else {
            continue;
        };
        endpoints.push(SliceEndpoint {
            ip,
            state,
            placement: ep.placement.clone(),
        });
    }
    if !sink.is_clean() {
        return Err(sink.into_errors());
    }
    Ok(Some(ParsedSlice {
        service: ServiceName {
            namespace: object.namespace,
            name: service.to_string(),
        },
        family,
        ports,
        endpoints,
    }))
}

/// Ready endpoints are active; terminating ones that still serve are kept for the connections
/// they have (graceful termination); the rest take no traffic at all. A missing `ready` means
/// ready and a missing `serving` means the same as `ready`, as the API defines.
fn endpoint_state(
    conditions: &EndpointConditions,
    opts: &TranslateOptions,
) -> Option<BackendState> {
    let ready = conditions.ready.unwrap_or(true);
    let serving = conditions.serving.unwrap_or(ready);
    let terminating = conditions.terminating.unwrap_or(false);
    if ready && !terminating {
        Some(BackendState::Active)
    } else if terminating && serving && opts.terminating_endpoints {
        Some(BackendState::Terminating)
    } else {
        None
    }
}

/// The addresses of the endpoints of `slices` on the node `node_name` that are ready, in the
/// families `families`: kube-proxy's `LocalReadyEndpoints`, which counts by address (a pod
/// listening on two ports of the service is one endpoint) over every port of the service, and
/// leaves terminating endpoints out even while they still serve, so a node left with only
/// terminating endpoints fails its health check and load balancers drain it. Endpoints are
/// counted through the slice's ports, as kube-proxy sees them, so a slice without a port adds
/// none.
pub fn local_ready_addresses(
    slices: &[&ParsedSlice],
    node_name: &str,
    families: &[IpFamily],
) -> BTreeSet<IpAddr> {
    if node_name.is_empty() {
        // The local node is unknown: no endpoint is known to be on it.
        return BTreeSet::new();
    }
    slices
        .iter()
        .filter(|s| families.contains(&s.family) && !s.ports.is_empty())
        .flat_map(|s| &s.endpoints)
        .filter(|ep| {
            ep.state == BackendState::Active
                && ep.placement.as_ref().and_then(|p| p.node_name.as_deref()) == Some(node_name)
        })
        .map(|ep| ep.ip)
        .collect()
}

/// The backends of `slices` for one service port and family, deduplicated by address (an
/// address listed twice keeps its most usable state).
pub fn backends_for(
    slices: &[&ParsedSlice],
    port_name: &str,
    protocol: L4Protocol,
    family: IpFamily,
) -> Vec<Backend> {
    let mut by_addr: BTreeMap<L3n4Addr, Backend> = BTreeMap::new();
    for slice in slices.iter().filter(|s| s.family == family) {
        for port in slice
            .ports
            .iter()
            .filter(|p| p.name == port_name && p.protocol == protocol)
        {
            for ep in &slice.endpoints {
                let backend = Backend {
                    addr: L3n4Addr::new(ep.ip, port.port, protocol),
                    state: ep.state,
                    weight: DEFAULT_BACKEND_WEIGHT,
                    placement: ep.placement.clone(),
                };
                by_addr
                    .entry(backend.addr)
                    .and_modify(|b| {
                        if backend.state < b.state {
                            *b = backend.clone();
                        }
                    })
                    .or_insert(backend);
            }
        }
    }
    by_addr.into_values().collect()
}
