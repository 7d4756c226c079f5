//! [`StoredService`]: a Service as the agent keeps it, with only the fields translation reads.
//!
//! k8s-openapi's `Service` is 824 bytes before its strings, and an API server fills in a dozen
//! of them (`ipFamilies`, `ipFamilyPolicy`, `sessionAffinity`, `internalTrafficPolicy`, each
//! port's protocol ...), one allocation each. The store keeps every Service for as long as it
//! exists, so at 10 000 Services that was 12.7 MiB of the agent's heap. Here the values the
//! API defines (`ClusterIP`, `TCP`, `Cluster`, ...) are shared static text and the rest is
//! boxed to its length; values are kept as written, so translation still refuses a bad one
//! quoting it exactly.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort};
use serde::Deserialize;

use super::service::{HEADLESS_LABEL, SERVICE_PROXY_NAME_LABEL};
use super::stored_meta::StoredMeta;

/// Text of a field: the API's own values shared, anything else owned.
pub type Text = Cow<'static, str>;

/// Values the API defines for the fields kept, and the port names most Services use.
const KNOWN: &[&str] = &[
    "ClusterIP",
    "NodePort",
    "LoadBalancer",
    "ExternalName",
    "None",
    "ClientIP",
    "Cluster",
    "Local",
    "TCP",
    "UDP",
    "SCTP",
    "http",
    "https",
    "dns",
    "dns-tcp",
    "metrics",
    "grpc",
];

/// `value` as [`Text`]: borrowed from [`KNOWN`] when it is one of those.
pub fn text(value: String) -> Text {
    match KNOWN.iter().find(|k| **k == value) {
        Some(known) => Cow::Borrowed(known),
        None => Cow::Owned(value),
    }
}

/// A Service (v1) with the fields the agent reads. It deserializes from a Service's JSON or
/// YAML, through k8s-openapi's type.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(from = "Service")]
pub struct StoredService {
    /// Name, namespace and deletion time; its labels are not kept (the two that are read are
    /// the fields below: a map of one entry takes a 550-byte node).
    pub metadata: StoredMeta,
    /// The `service.kubernetes.io/service-proxy-name` label.
    pub proxy_name: Option<Box<str>>,
    /// Whether it carries the `service.kubernetes.io/headless` label (any value).
    pub headless: bool,
    /// `spec`; `None` when the object has none.
    pub spec: Option<StoredServiceSpec>,
    /// `status.loadBalancer.ingress[].ip` in order, `None` for an entry with only a hostname.
    pub lb_ingress_ips: Box<[Option<Box<str>>]>,
}

/// The fields of a Service's spec that translation reads; an empty list stands for a missing
/// one, which translation treats alike.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StoredServiceSpec {
    /// `type`.
    pub type_: Option<Text>,
    /// `clusterIP`.
    pub cluster_ip: Option<Text>,
    /// `clusterIPs`.
    pub cluster_ips: Box<[Box<str>]>,
    /// `ports`.
    pub ports: Box<[StoredServicePort]>,
    /// `externalIPs`.
    pub external_ips: Box<[Box<str>]>,
    /// `loadBalancerSourceRanges`.
    pub load_balancer_source_ranges: Box<[Box<str>]>,
    /// `externalTrafficPolicy`.
    pub external_traffic_policy: Option<Text>,
    /// `internalTrafficPolicy`.
    pub internal_traffic_policy: Option<Text>,
    /// `sessionAffinity`.
    pub session_affinity: Option<Text>,
    /// `sessionAffinityConfig.clientIP.timeoutSeconds`.
    pub affinity_timeout_seconds: Option<i32>,
    /// `healthCheckNodePort`.
    pub health_check_node_port: Option<i32>,
}

/// One of `spec.ports`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StoredServicePort {
    /// `name`.
    pub name: Option<Text>,
    /// `protocol`.
    pub protocol: Option<Text>,
    /// `port`.
    pub port: i32,
    /// `nodePort`.
    pub node_port: Option<i32>,
}

impl From<Service> for StoredService {
    fn from(svc: Service) -> Self {
        let Service {
            metadata,
            spec,
            status,
        } = svc;
        let labels = metadata.labels.unwrap_or_default();
        let lb_ingress_ips = status
            .and_then(|s| s.load_balancer)
            .and_then(|lb| lb.ingress)
            .unwrap_or_default()
            .into_iter()
            .map(|ingress| ingress.ip.map(String::into_boxed_str))
            .collect();
        StoredService {
            metadata: StoredMeta {
                name: metadata.name,
                namespace: metadata.namespace,
                deletion_timestamp: metadata.deletion_timestamp,
            },
            proxy_name: label(&labels, SERVICE_PROXY_NAME_LABEL),
            headless: labels.contains_key(HEADLESS_LABEL),
            spec: spec.map(|spec| StoredServiceSpec {
                type_: spec.type_.map(text),
                cluster_ip: spec.cluster_ip.map(text),
                cluster_ips: boxed(spec.cluster_ips),
                ports: spec
                    .ports
                    .unwrap_or_default()
                    .into_iter()
                    .map(StoredServicePort::from)
                    .collect(),
                external_ips: boxed(spec.external_ips),
                load_balancer_source_ranges: boxed(spec.load_balancer_source_ranges),
                external_traffic_policy: spec.external_traffic_policy.map(text),
                internal_traffic_policy: spec.internal_traffic_policy.map(text),
                session_affinity: spec.session_affinity.map(text),
                affinity_timeout_seconds: spec
                    .session_affinity_config
                    .and_then(|c| c.client_ip)
                    .and_then(|c| c.timeout_seconds),
                health_check_node_port: spec.health_check_node_port,
            }),
            lb_ingress_ips,
        }
    }
}

impl From<ServicePort> for StoredServicePort {
    fn from(port: ServicePort) -> Self {
        StoredServicePort {
            name: port.name.map(text),
            protocol: port.protocol.map(text),
            port: port.port,
            node_port: port.node_port,
        }
    }
}

fn label(labels: &BTreeMap<String, String>, key: &str) -> Option<Box<str>> {
    labels.get(key).map(|v| v.as_str().into())
}

/// A list of strings boxed to its length, each boxed to its own.
fn boxed(list: Option<Vec<String>>) -> Box<[Box<str>]> {
    list.unwrap_or_default()
        .into_iter()
        .map(String::into_boxed_str)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(value: serde_json::Value) -> StoredService {
        serde_json::from_value::<Service>(value).unwrap().into()
    }

    #[test]
    fn what_translation_reads_is_kept_as_written() {
        let svc = service(json!({
            "metadata": {
                "name": "web", "namespace": "shop",
                "labels": { "app": "web", SERVICE_PROXY_NAME_LABEL: "other" },
                "managedFields": [{ "manager": "kubectl" }],
            },
            "spec": {
                "type": "LoadBalancer", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
                "ports": [{ "name": "web-port", "port": 80, "protocol": "TCP", "nodePort": 30080 }],
                "externalIPs": ["192.0.2.1"], "loadBalancerSourceRanges": ["10.0.0.0/8"],
                "externalTrafficPolicy": "Loca1", "sessionAffinity": "ClientIP",
                "sessionAffinityConfig": { "clientIP": { "timeoutSeconds": 60 } },
                "healthCheckNodePort": 32000,
            },
            "status": { "loadBalancer": { "ingress": [{ "hostname": "lb.example" }, { "ip": "198.51.100.7" }] } },
        }));
        assert_eq!(svc.metadata.name.as_deref(), Some("web"));
        assert_eq!(svc.metadata.namespace.as_deref(), Some("shop"));
        assert_eq!(svc.proxy_name.as_deref(), Some("other"));
        assert!(!svc.headless);
        let spec = svc.spec.unwrap();
        assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
        assert_eq!(&*spec.cluster_ips, [Box::from("10.96.0.10")]);
        assert_eq!(
            &*spec.ports,
            [StoredServicePort {
                name: Some("web-port".into()),
                protocol: Some("TCP".into()),
                port: 80,
                node_port: Some(30080),
            }]
        );
        assert_eq!(&*spec.external_ips, [Box::from("192.0.2.1")]);
        assert_eq!(
            &*spec.load_balancer_source_ranges,
            [Box::from("10.0.0.0/8")]
        );
        assert_eq!(
            spec.external_traffic_policy.as_deref(),
            Some("Loca1"),
            "a misspelt value is kept for the error to quote"
        );
        assert_eq!(spec.session_affinity.as_deref(), Some("ClientIP"));
        assert_eq!(spec.affinity_timeout_seconds, Some(60));
        assert_eq!(spec.health_check_node_port, Some(32000));
        assert_eq!(
            &*svc.lb_ingress_ips,
            [None, Some(Box::from("198.51.100.7"))],
            "a hostname-only entry keeps its place"
        );
    }

    #[test]
    fn the_apis_own_values_take_no_allocation() {
        assert!(matches!(text("ClusterIP".to_owned()), Cow::Borrowed(_)));
        assert!(matches!(text("TCP".to_owned()), Cow::Borrowed(_)));
        assert!(matches!(text("tcp".to_owned()), Cow::Owned(ref s) if s == "tcp"));
    }

    #[test]
    fn the_headless_label_counts_whatever_its_value() {
        let svc = service(json!({ "metadata": { "name": "a", "labels": { HEADLESS_LABEL: "" } } }));
        assert!(svc.headless);
        assert_eq!(svc.spec, None);
    }
}
