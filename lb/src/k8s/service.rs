//! One Service into its frontends: cluster IPs, node ports, load-balancer ingress IPs and
//! external IPs, each with the backends its traffic policy allows.

use std::net::IpAddr;

use ipnet::IpNet;

use super::endpoints::{backends_for, ParsedSlice};
use super::error::{ErrorSink, ObjectRef, TranslateError};
use super::fields::{self, ParsedProtocol};
use super::health_check::{health_check_of, HealthCheck};
use super::stored_service::{StoredService, StoredServicePort, StoredServiceSpec};
use super::translate::LocalNode;
use super::TranslateOptions;
use crate::model::{
    Backend, BackendState, Frontend, IpFamily, L3n4Addr, L4Protocol, LbService, Scope, ServiceName,
    ServicePolicies, ServiceType, TrafficPolicy, DEFAULT_AFFINITY_TIMEOUT_SECS,
    MAX_AFFINITY_TIMEOUT_SECS,
};

/// Label that hands a Service to a named proxy instead of the default one.
pub const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";

/// Label that marks a Service as headless for proxies whatever its clusterIP: kube-proxy
/// selects Services with `!service.kubernetes.io/headless`, so one carrying it (any value) is
/// not programmed.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

/// What became of a Service.
#[derive(Debug)]
pub enum ServiceOutcome {
    /// Its frontends, and its health check server when it needs one.
    Programmed(Vec<LbService>, Option<HealthCheck>),
    /// Not ours to program: headless, ExternalName, or another proxy's.
    Ignored(String),
}

/// A Service's spec after validation.
struct ParsedService {
    name: ServiceName,
    kind: String,
    cluster_ips: Vec<IpAddr>,
    ports: Vec<ParsedPort>,
    external_ips: Vec<IpAddr>,
    lb_ingress: Vec<IpAddr>,
    policies: ServicePolicies,
    /// `spec.healthCheckNodePort`, when set to a port.
    health_check_node_port: Option<u16>,
}

struct ParsedPort {
    name: String,
    protocol: L4Protocol,
    port: u16,
    node_port: Option<u16>,
}

/// Translates `svc`; `slices` are the EndpointSlices labelled with its name.
pub fn translate_service(
    svc: &StoredService,
    slices: &[&ParsedSlice],
    node: &LocalNode,
    opts: &TranslateOptions,
    warnings: &mut Vec<String>,
) -> Result<ServiceOutcome, Vec<TranslateError>> {
    let object = ObjectRef::new("Service", &svc.metadata);
    // As kube-proxy and Cilium select: `!service-proxy-name` without a name of our own (the
    // label, whatever its value, empty too, hands the Service to another proxy), and
    // `service-proxy-name=NAME` with one.
    let proxy_name = svc.proxy_name.as_deref();
    let ours = match proxy_name {
        None => opts.service_proxy_name.is_empty(),
        Some(label) => !opts.service_proxy_name.is_empty() && label == opts.service_proxy_name,
    };
    if !ours {
        let name = &opts.service_proxy_name;
        return Ok(ServiceOutcome::Ignored(match proxy_name {
            None => format!("{object}: not labelled {SERVICE_PROXY_NAME_LABEL}={name:?}"),
            Some(label) if label == name => format!(
                "{object}: labelled {SERVICE_PROXY_NAME_LABEL}={label:?}, which hands it to \
                 another proxy whatever its value (this one has no service proxy name)"
            ),
            Some(label) => format!(
                "{object}: {SERVICE_PROXY_NAME_LABEL}={label:?} is not this proxy's name {name:?}"
            ),
        }));
    }
    if svc.headless {
        return Ok(ServiceOutcome::Ignored(format!(
            "{object}: labelled {HEADLESS_LABEL}"
        )));
    }
    let mut sink = ErrorSink::new(object.clone());
    if svc.metadata.name.is_none() {
        sink.missing("metadata.name", "every object needs a name");
    }
    let Some(spec) = &svc.spec else {
        sink.missing("spec", "a Service needs a spec");
        return Err(sink.into_errors());
    };
    let kind = spec.type_.as_deref().unwrap_or("ClusterIP").to_owned();
    if kind == "ExternalName" {
        return Ok(ServiceOutcome::Ignored(format!(
            "{object}: ExternalName services are resolved by DNS"
        )));
    }
    if spec.cluster_ip.as_deref() == Some("None") {
        return Ok(ServiceOutcome::Ignored(format!(
            "{object}: headless (clusterIP: None)"
        )));
    }
    if !["ClusterIP", "NodePort", "LoadBalancer"].contains(&kind.as_str()) {
        sink.invalid(
            "spec.type",
            &kind,
            "expected ClusterIP, NodePort, LoadBalancer or ExternalName",
        );
    }
    let parsed = parse_spec(
        svc,
        spec,
        svc.proxy_name.as_deref().map(str::to_owned),
        kind,
        &mut sink,
        warnings,
        opts,
    );
    if !sink.is_clean() {
        return Err(sink.into_errors());
    }
    for p in &parsed.ports {
        if let Some(np) = p.node_port.filter(|np| !opts.node_port_range.contains(*np)) {
            warnings.push(format!(
                "{object}: nodePort {np} lies outside nodePort.range {}; set nodePort.range to \
                 the API server's --service-node-port-range",
                opts.node_port_range
            ));
        }
    }
    let health_check = health_check_of(
        parsed.health_check_node_port,
        &parsed.kind,
        parsed.policies.external_traffic_policy,
        slices,
        node,
        opts,
    );
    Ok(ServiceOutcome::Programmed(
        frontends(&parsed, slices, node, opts),
        health_check,
    ))
}

fn parse_spec(
    svc: &StoredService,
    spec: &StoredServiceSpec,
    proxy_name: Option<String>,
    kind: String,
    sink: &mut ErrorSink,
    warnings: &mut Vec<String>,
    opts: &TranslateOptions,
) -> ParsedService {
    let object = sink.object().clone();
    let cluster_ips = match (&spec.cluster_ips, &spec.cluster_ip) {
        (ips, _) if !ips.is_empty() => ips
            .iter()
            .enumerate()
            .filter_map(|(i, ip)| fields::ip(sink, &format!("spec.clusterIPs[{i}]"), ip))
            .collect(),
        (_, Some(ip)) if !ip.is_empty() => {
            fields::ip(sink, "spec.clusterIP", ip).into_iter().collect()
        }
        _ => {
            sink.missing(
                "spec.clusterIP",
                "a non-headless Service needs a cluster IP (or clusterIP: None)",
            );
            Vec::new()
        }
    };
    let ports = parse_ports(&spec.ports, sink, warnings, &object);
    let external_ips = spec
        .external_ips
        .iter()
        .enumerate()
        .filter_map(|(i, ip)| fields::ip(sink, &format!("spec.externalIPs[{i}]"), ip))
        .collect();
    let lb_ingress = svc
        .lb_ingress_ips
        .iter()
        .enumerate()
        .filter_map(|(i, ip)| {
            let ip = ip.as_deref()?; // hostname-only ingress is for DNS, not for us.
            fields::ip(sink, &format!("status.loadBalancer.ingress[{i}].ip"), ip)
        })
        .collect();
    let source_ranges = spec
        .load_balancer_source_ranges
        .iter()
        .enumerate()
        .filter_map(|(i, cidr)| match cidr.trim().parse::<IpNet>() {
            Ok(net) => Some(net.trunc()),
            Err(_) => {
                sink.invalid(
                    format!("spec.loadBalancerSourceRanges[{i}]"),
                    cidr,
                    "expected a CIDR such as 10.0.0.0/8 or 2001:db8::/32",
                );
                None
            }
        })
        .collect();
    let policies = ServicePolicies {
        external_traffic_policy: traffic_policy(
            sink,
            "spec.externalTrafficPolicy",
            spec.external_traffic_policy.as_deref(),
        ),
        internal_traffic_policy: traffic_policy(
            sink,
            "spec.internalTrafficPolicy",
            spec.internal_traffic_policy.as_deref(),
        ),
        session_affinity_timeout_secs: affinity(sink, spec).filter(|_| opts.session_affinity),
        // With the check off the ranges are still parsed (and refused when malformed), but
        // nothing enforces them.
        source_ranges: if opts.source_range_check {
            source_ranges
        } else {
            Vec::new()
        },
        proxy_name,
        topology_aware: false,
    };
    let health_check_node_port = match spec.health_check_node_port {
        None | Some(0) => None,
        Some(raw) => {
            let port = u16::try_from(raw).ok();
            if port.is_none() {
                warnings.push(format!(
                    "{object}: spec.healthCheckNodePort {raw} is not a port (1 to 65535); no \
                     health check server is started for it"
                ));
            }
            port
        }
    };
    ParsedService {
        name: ServiceName {
            namespace: object.namespace.clone(),
            name: object.name.clone(),
        },
        health_check_node_port,
        kind,
        cluster_ips,
        ports,
        external_ips,
        lb_ingress,
        policies,
    }
}

fn parse_ports(
    ports: &[StoredServicePort],
    sink: &mut ErrorSink,
    warnings: &mut Vec<String>,
    object: &ObjectRef,
) -> Vec<ParsedPort> {
    if ports.is_empty() {
        sink.missing(
            "spec.ports",
            "a non-headless Service needs at least one port",
        );
    }
    let mut out = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        if ports.len() > 1 && p.name.as_deref().unwrap_or("").is_empty() {
            sink.missing(
                format!("spec.ports[{i}].name"),
                "every port of a multi-port Service needs a name",
            );
        }
        let protocol = fields::protocol(
            sink,
            &format!("spec.ports[{i}].protocol"),
            p.protocol.as_deref(),
        );
        let port = fields::port(sink, &format!("spec.ports[{i}].port"), p.port);
        let node_port = match p.node_port {
            None | Some(0) => None,
            Some(raw) => fields::port(sink, &format!("spec.ports[{i}].nodePort"), raw),
        };
        match (protocol, port) {
            (Some(ParsedProtocol::Supported(protocol)), Some(port)) => out.push(ParsedPort {
                name: p.name.as_deref().unwrap_or_default().to_owned(),
                protocol,
                port,
                node_port,
            }),
            (Some(ParsedProtocol::Unsupported(proto)), _) => warnings.push(format!(
                "{object}: spec.ports[{i}]: protocol {proto} is not supported (TCP and UDP are); \
                 the port is skipped"
            )),
            _ => {}
        }
    }
    out
}

fn traffic_policy(sink: &mut ErrorSink, field: &str, raw: Option<&str>) -> TrafficPolicy {
    match raw {
        None | Some("Cluster") => TrafficPolicy::Cluster,
        Some("Local") => TrafficPolicy::Local,
        Some(other) => {
            sink.invalid(field, other, "expected Cluster or Local");
            TrafficPolicy::Cluster
        }
    }
}

fn affinity(sink: &mut ErrorSink, spec: &StoredServiceSpec) -> Option<u32> {
    match spec.session_affinity.as_deref() {
        None | Some("None") => None,
        Some("ClientIP") => match spec.affinity_timeout_seconds {
            None => Some(DEFAULT_AFFINITY_TIMEOUT_SECS),
            Some(t) if t >= 1 && t as u32 <= MAX_AFFINITY_TIMEOUT_SECS => Some(t as u32),
            Some(t) => {
                sink.invalid(
                    "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                    t,
                    format!("expected 1 to {MAX_AFFINITY_TIMEOUT_SECS} seconds"),
                );
                None
            }
        },
        Some(other) => {
            sink.invalid("spec.sessionAffinity", other, "expected None or ClientIP");
            None
        }
    }
}

/// Backends narrowed by a traffic policy and, when enabled, by topology hints for this zone,
/// with kube-proxy's fallback (`CategorizeEndpoints`): a scope without a ready endpoint sends
/// new connections to its serving-terminating endpoints instead (a rolling update whose new
/// pods are not ready yet keeps being served). For `Local` the scope is this node's endpoints,
/// so remote ready endpoints do not stop the fallback to a local terminating one.
fn select_backends(
    all: &[Backend],
    policy: TrafficPolicy,
    node: &LocalNode,
    opts: &TranslateOptions,
) -> Selected {
    let (scoped, topology_aware) = match policy {
        TrafficPolicy::Local => (
            all.iter()
                .filter(|b| b.node_name() == Some(node.name.as_str()))
                .cloned()
                .collect(),
            false,
        ),
        TrafficPolicy::Cluster => match zone_backends(all, node, opts) {
            Some(for_zone) => (for_zone, true),
            None => (all.to_vec(), false),
        },
    };
    let backends = serving_terminating_fallback(scoped);
    let usable = |b: &Backend| b.state.takes_new_connections();
    let no_local_backends = policy == TrafficPolicy::Local
        && !backends.iter().any(usable)
        && serving_terminating_fallback(all.to_vec())
            .iter()
            .any(usable);
    Selected {
        backends,
        topology_aware,
        no_local_backends,
    }
}

/// The backends of one scope of a service port.
struct Selected {
    backends: Vec<Backend>,
    /// Narrowed by topology hints.
    topology_aware: bool,
    /// Narrowed by a `Local` policy to none, while other nodes have some.
    no_local_backends: bool,
}

/// The backends hinted for this node's zone, when topology hints apply: as kube-proxy, only
/// when every ready endpoint has hints and at least one ready endpoint is for this zone
/// (terminating endpoints do not take part in the decision).
fn zone_backends(
    all: &[Backend],
    node: &LocalNode,
    opts: &TranslateOptions,
) -> Option<Vec<Backend>> {
    let zone = node.zone.as_ref().filter(|_| opts.service_topology)?;
    let mut ready = all
        .iter()
        .filter(|b| b.state.takes_new_connections())
        .peekable();
    ready.peek()?;
    let mut any_for_zone = false;
    for b in ready {
        if !b.has_zone_hints() {
            return None;
        }
        any_for_zone |= b.hinted_for(zone);
    }
    any_for_zone.then(|| all.iter().filter(|b| b.hinted_for(zone)).cloned().collect())
}

/// With no backend that takes new connections, the serving-terminating ones do.
fn serving_terminating_fallback(mut backends: Vec<Backend>) -> Vec<Backend> {
    if !backends.iter().any(|b| b.state.takes_new_connections()) {
        for b in &mut backends {
            if b.state == BackendState::Terminating {
                b.state = BackendState::Active;
            }
        }
    }
    backends
}

fn frontends(
    svc: &ParsedService,
    slices: &[&ParsedSlice],
    node: &LocalNode,
    opts: &TranslateOptions,
) -> Vec<LbService> {
    let mut out = Vec::new();
    let families = [(IpFamily::V4, opts.ipv4), (IpFamily::V6, opts.ipv6)];
    for port in &svc.ports {
        // A Service serves the families of its cluster IPs (its ipFamilies), no others.
        let served = families
            .iter()
            .filter(|(f, on)| *on && svc.cluster_ips.iter().any(|ip| IpFamily::of(*ip) == *f))
            .map(|(f, _)| *f);
        for family in served {
            let all = backends_for(slices, &port.name, port.protocol, family);
            let etp = svc.policies.external_traffic_policy;
            let itp = svc.policies.internal_traffic_policy;
            let internal = select_backends(&all, itp, node, opts);
            let external = select_backends(&all, etp, node, opts);
            let make =
                |ip: IpAddr, port_no: u16, kind: ServiceType, scope: Scope, selected: &Selected| {
                    LbService {
                        frontend: Frontend {
                            addr: L3n4Addr::new(ip, port_no, port.protocol),
                            kind,
                            scope,
                        },
                        name: svc.name.clone(),
                        port_name: port.name.clone(),
                        backends: selected.backends.clone(),
                        policies: ServicePolicies {
                            topology_aware: selected.topology_aware,
                            ..svc.policies.clone()
                        },
                        no_local_backends: selected.no_local_backends,
                    }
                };
            let of_family = |ips: &[IpAddr]| -> Vec<IpAddr> {
                ips.iter()
                    .copied()
                    .filter(|ip| IpFamily::of(*ip) == family)
                    .collect()
            };
            for ip in of_family(&svc.cluster_ips) {
                out.push(make(
                    ip,
                    port.port,
                    ServiceType::ClusterIP,
                    Scope::External,
                    &internal,
                ));
            }
            // Node-facing frontends get an internal twin when the two policies disagree.
            let mut node_facing = |ip: IpAddr, port_no: u16, kind: ServiceType| {
                out.push(make(ip, port_no, kind, Scope::External, &external));
                if etp != itp {
                    out.push(make(ip, port_no, kind, Scope::Internal, &internal));
                }
            };
            let node_ports_open =
                opts.node_port && (svc.kind == "NodePort" || svc.kind == "LoadBalancer");
            if let Some(np) = port.node_port.filter(|_| node_ports_open) {
                node_facing(family.unspecified(), np, ServiceType::NodePort);
                for ip in node.node_port_addrs(family) {
                    node_facing(*ip, np, ServiceType::NodePort);
                }
            }
            if opts.node_port && svc.kind == "LoadBalancer" {
                for ip in of_family(&svc.lb_ingress) {
                    node_facing(ip, port.port, ServiceType::LoadBalancer);
                }
            }
            if opts.external_ips {
                for ip in of_family(&svc.external_ips) {
                    node_facing(ip, port.port, ServiceType::ExternalIPs);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::{DeviceSelection, NodeContext};
    use crate::model::Placement;
    use serde_json::json;

    fn node(zone: Option<&str>) -> LocalNode {
        let ctx = NodeContext {
            name: "n1".into(),
            zone: zone.map(str::to_owned),
            ..NodeContext::default()
        };
        LocalNode::new(
            &ctx,
            &DeviceSelection {
                devices: vec![],
                direct_routing: None,
                patterns_matched_nothing: false,
            },
        )
    }

    fn svc(extra_meta: serde_json::Value, extra_spec: serde_json::Value) -> StoredService {
        let mut v = json!({
            "metadata": {"name": "s", "namespace": "ns"},
            "spec": {"clusterIP": "10.96.0.1", "ports": [{"port": 80}]}
        });
        for (k, val) in extra_meta.as_object().unwrap() {
            v["metadata"][k] = val.clone();
        }
        for (k, val) in extra_spec.as_object().unwrap() {
            v["spec"][k] = val.clone();
        }
        serde_json::from_value::<k8s_openapi::api::core::v1::Service>(v)
            .unwrap()
            .into()
    }

    fn outcome(
        s: &StoredService,
        opts: &TranslateOptions,
    ) -> Result<ServiceOutcome, Vec<TranslateError>> {
        translate_service(s, &[], &node(None), opts, &mut Vec::new())
    }

    #[test]
    fn service_proxy_name_is_honoured_like_kube_proxy() {
        let labelled = svc(
            json!({"labels": {SERVICE_PROXY_NAME_LABEL: "lb"}}),
            json!({}),
        );
        let plain = svc(json!({}), json!({}));
        let default = TranslateOptions::default();
        let named = TranslateOptions {
            service_proxy_name: "lb".into(),
            ..TranslateOptions::default()
        };
        assert!(matches!(
            outcome(&labelled, &default),
            Ok(ServiceOutcome::Ignored(_))
        ));
        assert!(matches!(
            outcome(&plain, &default),
            Ok(ServiceOutcome::Programmed(..))
        ));
        assert!(matches!(
            outcome(&labelled, &named),
            Ok(ServiceOutcome::Programmed(..))
        ));
        let empty_label = svc(json!({"labels": {SERVICE_PROXY_NAME_LABEL: ""}}), json!({}));
        assert!(
            matches!(
                outcome(&empty_label, &default),
                Ok(ServiceOutcome::Ignored(_))
            ),
            "kube-proxy selects services without the label: an empty value is still the label"
        );
        assert!(matches!(
            outcome(&plain, &named),
            Ok(ServiceOutcome::Ignored(_))
        ));
        assert!(matches!(
            outcome(&plain, &named),
            Ok(ServiceOutcome::Ignored(_))
        ));
    }

    #[test]
    fn the_headless_label_keeps_a_service_out_whatever_its_value() {
        let opts = TranslateOptions::default();
        for value in ["", "true"] {
            let labelled = svc(json!({"labels": {HEADLESS_LABEL: value}}), json!({}));
            match outcome(&labelled, &opts) {
                Ok(ServiceOutcome::Ignored(why)) => assert!(why.contains(HEADLESS_LABEL), "{why}"),
                other => panic!("{value:?}: {other:?}"),
            }
        }
        let other_label = svc(json!({"labels": {"app": "web"}}), json!({}));
        assert!(matches!(
            outcome(&other_label, &opts),
            Ok(ServiceOutcome::Programmed(..))
        ));
    }

    #[test]
    fn session_affinity_defaults_to_three_hours_and_follows_the_switch() {
        let s = svc(json!({}), json!({"sessionAffinity": "ClientIP"}));
        let Ok(ServiceOutcome::Programmed(fe, _)) = outcome(&s, &TranslateOptions::default())
        else {
            panic!()
        };
        assert_eq!(fe[0].policies.session_affinity_timeout_secs, Some(10800));
        let off = TranslateOptions {
            session_affinity: false,
            ..TranslateOptions::default()
        };
        let Ok(ServiceOutcome::Programmed(fe, _)) = outcome(&s, &off) else {
            panic!()
        };
        assert_eq!(fe[0].policies.session_affinity_timeout_secs, None);
        let bad = svc(
            json!({}),
            json!({"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 0}}}),
        );
        let errors = outcome(&bad, &TranslateOptions::default()).unwrap_err();
        assert_eq!(
            errors[0].field,
            "spec.sessionAffinityConfig.clientIP.timeoutSeconds"
        );
    }

    #[test]
    fn sctp_ports_are_skipped_with_a_warning_not_an_error() {
        let s = svc(
            json!({}),
            json!({"ports": [{"name": "a", "port": 80}, {"name": "b", "port": 9, "protocol": "SCTP"}]}),
        );
        let mut warnings = Vec::new();
        let Ok(ServiceOutcome::Programmed(fe, _)) = translate_service(
            &s,
            &[],
            &node(None),
            &TranslateOptions::default(),
            &mut warnings,
        ) else {
            panic!()
        };
        assert_eq!(fe.len(), 1);
        assert!(warnings[0].contains("SCTP"), "{warnings:?}");
    }

    #[test]
    fn multi_port_services_need_named_ports() {
        let s = svc(json!({}), json!({"ports": [{"port": 80}, {"port": 81}]}));
        let errors = outcome(&s, &TranslateOptions::default()).unwrap_err();
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[0].field, "spec.ports[0].name");
    }

    fn at(ip: &str, node: &str, state: BackendState, zones: &[&str]) -> Backend {
        use crate::model::L3n4Addr;
        Backend {
            state,
            placement: Placement {
                node_name: Some(node.into()),
                hint_zones: zones.iter().map(|&z| z.into()).collect(),
            }
            .shared(),
            ..Backend::active(L3n4Addr::new(ip.parse().unwrap(), 80, L4Protocol::Tcp))
        }
    }

    /// `(last octet, state)` of what a policy selects.
    fn picked(
        all: &[Backend],
        policy: TrafficPolicy,
        zone: Option<&str>,
    ) -> Vec<(u8, BackendState)> {
        let opts = TranslateOptions {
            service_topology: true,
            ..TranslateOptions::default()
        };
        select_backends(all, policy, &node(zone), &opts)
            .backends
            .iter()
            .map(|b| match b.addr.ip {
                IpAddr::V4(v4) => (v4.octets()[3], b.state),
                IpAddr::V6(_) => unreachable!(),
            })
            .collect()
    }

    use BackendState::{Active, Terminating};

    #[test]
    fn without_ready_endpoints_the_serving_terminating_ones_take_new_connections() {
        let all = [
            at("10.0.0.1", "n1", Terminating, &[]),
            at("10.0.0.2", "n2", Terminating, &[]),
        ];
        for policy in [TrafficPolicy::Cluster, TrafficPolicy::Local] {
            let want: &[(u8, BackendState)] = match policy {
                TrafficPolicy::Cluster => &[(1, Active), (2, Active)],
                TrafficPolicy::Local => &[(1, Active)],
            };
            assert_eq!(picked(&all, policy, None), want, "{policy:?}");
        }
    }

    #[test]
    fn local_policy_without_local_endpoints_is_told_apart_from_a_service_without_any() {
        let opts = TranslateOptions::default();
        let no_local = |all: &[Backend], policy| {
            select_backends(all, policy, &node(None), &opts).no_local_backends
        };
        let elsewhere = [at("10.0.0.2", "n2", Active, &[])];
        // kube-proxy drops external traffic here ("has no local endpoints")...
        assert!(no_local(&elsewhere, TrafficPolicy::Local));
        // ...but rejects a service that has no endpoint anywhere, whatever its policy.
        assert!(!no_local(&[], TrafficPolicy::Local));
        assert!(!no_local(&elsewhere, TrafficPolicy::Cluster));
        // A serving-terminating endpoint elsewhere counts as one; a local one serves.
        assert!(no_local(
            &[at("10.0.0.2", "n2", Terminating, &[])],
            TrafficPolicy::Local
        ));
        assert!(!no_local(
            &[at("10.0.0.1", "n1", Terminating, &[])],
            TrafficPolicy::Local
        ));
    }

    #[test]
    fn a_ready_endpoint_in_scope_ends_the_fallback() {
        let all = [
            at("10.0.0.1", "n1", Terminating, &[]),
            at("10.0.0.2", "n2", Active, &[]),
        ];
        // Cluster: the remote ready one takes new connections, the terminating one keeps its
        // flows. Local: no ready endpoint on this node, so the local terminating one serves.
        assert_eq!(
            picked(&all, TrafficPolicy::Cluster, None),
            [(1, Terminating), (2, Active)]
        );
        assert_eq!(picked(&all, TrafficPolicy::Local, None), [(1, Active)]);
        let local_ready = [
            at("10.0.0.1", "n1", Terminating, &[]),
            at("10.0.0.3", "n1", Active, &[]),
        ];
        assert_eq!(
            picked(&local_ready, TrafficPolicy::Local, None),
            [(1, Terminating), (3, Active)]
        );
    }

    #[test]
    fn topology_is_decided_by_ready_endpoints_and_the_fallback_ignores_it() {
        // A terminating endpoint without hints does not turn topology off (kube-proxy looks at
        // ready endpoints only).
        let all = [
            at("10.0.0.1", "n2", Active, &["a"]),
            at("10.0.0.2", "n2", Active, &["b"]),
            at("10.0.0.3", "n2", Terminating, &[]),
        ];
        assert_eq!(
            picked(&all, TrafficPolicy::Cluster, Some("a")),
            [(1, Active)]
        );
        // Nothing ready anywhere: every serving-terminating endpoint, whatever its hints.
        let none_ready = [
            at("10.0.0.1", "n2", Terminating, &["a"]),
            at("10.0.0.2", "n2", Terminating, &["b"]),
        ];
        assert_eq!(
            picked(&none_ready, TrafficPolicy::Cluster, Some("a")),
            [(1, Active), (2, Active)]
        );
    }

    #[test]
    fn topology_hints_apply_only_when_every_endpoint_has_them() {
        use crate::model::{Backend, L3n4Addr, Placement};
        let backend = |ip: &str, zones: &[&str]| Backend {
            placement: Placement {
                hint_zones: zones.iter().map(|&z| z.into()).collect(),
                ..Placement::default()
            }
            .shared(),
            ..Backend::active(L3n4Addr::new(ip.parse().unwrap(), 80, L4Protocol::Tcp))
        };
        let opts = TranslateOptions {
            service_topology: true,
            ..TranslateOptions::default()
        };
        let n = node(Some("a"));
        let hinted = [backend("10.0.0.1", &["a"]), backend("10.0.0.2", &["b"])];
        let picked = select_backends(&hinted, TrafficPolicy::Cluster, &n, &opts);
        assert_eq!((picked.backends.len(), picked.topology_aware), (1, true));
        let partly = [backend("10.0.0.1", &["a"]), backend("10.0.0.2", &[])];
        assert_eq!(
            select_backends(&partly, TrafficPolicy::Cluster, &n, &opts)
                .backends
                .len(),
            2
        );
        let elsewhere = [backend("10.0.0.1", &["b"]), backend("10.0.0.2", &["c"])];
        assert_eq!(
            select_backends(&elsewhere, TrafficPolicy::Cluster, &n, &opts)
                .backends
                .len(),
            2
        );
        let off = TranslateOptions::default();
        assert_eq!(
            select_backends(&hinted, TrafficPolicy::Cluster, &n, &off)
                .backends
                .len(),
            2
        );
    }
}
