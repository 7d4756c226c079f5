//! What the store keeps of an object from the API server: the fields translation reads, and
//! nothing else. `managedFields` and annotations (translation reads none; the metrics read one
//! of an EndpointSlice's) are often the larger part of a Service or EndpointSlice, with the
//! endpoints' pod references; a Node's image list and a Pod's containers' environment, mounts
//! and probes are larger still. Dropping them keeps the agent small at 10 000 services.

use k8s_openapi::api::core::v1::{Container, ContainerPort, Node, NodeStatus, Pod, PodSpec};
use k8s_openapi::api::core::v1::{PodStatus, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::source::Object;

/// The metadata translation and the store read: name, namespace, labels and deletion. The
/// resource version is not among them, so an update that changed only what is dropped (a
/// Node's status beyond its addresses, `managedFields`, an annotation) compares equal to the
/// object held and translates nothing again.
fn slim_meta(meta: &mut ObjectMeta) {
    *meta = ObjectMeta {
        name: meta.name.take(),
        namespace: meta.namespace.take(),
        labels: meta.labels.take(),
        deletion_timestamp: meta.deletion_timestamp.take(),
        ..ObjectMeta::default()
    };
}

/// A Service as the store keeps it: in the agent's own compact form
/// ([`crate::k8s::StoredService`]: the fields translation reads, the two labels it reads as
/// fields, no selector, `managedFields` or annotations).
pub fn service(svc: Service) -> Option<Object> {
    Some(Object::Service(std::sync::Arc::new(svc.into())))
}

/// An EndpointSlice as the store keeps it: in the agent's own compact form
/// ([`crate::k8s::StoredSlice`]: no pod references, hostnames or deprecated topology; of its
/// labels and annotations only the Service's name and the last change's trigger time, from
/// which the network-programming latency is measured as kube-proxy does).
pub fn endpoint_slice(slice: EndpointSlice) -> Option<Object> {
    Some(Object::EndpointSlice(std::sync::Arc::new(slice.into())))
}

/// A Node as the store keeps it: metadata (labels for the zone), spec (taints for
/// eligibility) and its addresses.
pub fn node(mut node: Node) -> Option<Object> {
    slim_meta(&mut node.metadata);
    node.status = node.status.map(|s| NodeStatus {
        addresses: s.addresses,
        ..NodeStatus::default()
    });
    Some(Object::Node(std::sync::Arc::new(node)))
}

/// A Pod as the store keeps it, or `None` when no container declares a hostPort: only those
/// pods are translated (into HostPort frontends).
pub fn pod(pod: Pod) -> Option<Object> {
    let Pod {
        mut metadata,
        spec,
        status,
    } = pod;
    let spec = spec?;
    let containers: Vec<Container> = spec
        .containers
        .into_iter()
        .filter_map(|c| {
            let ports: Vec<ContainerPort> = c
                .ports
                .into_iter()
                .flatten()
                .filter(|p| p.host_port.is_some_and(|hp| hp != 0))
                .collect();
            (!ports.is_empty()).then(|| Container {
                name: c.name,
                ports: Some(ports),
                ..Container::default()
            })
        })
        .collect();
    if containers.is_empty() {
        return None;
    }
    slim_meta(&mut metadata);
    metadata.labels = None;
    Some(Object::Pod(std::sync::Arc::new(Pod {
        metadata,
        spec: Some(PodSpec {
            containers,
            node_name: spec.node_name,
            host_network: spec.host_network,
            ..PodSpec::default()
        }),
        status: status.map(|s| PodStatus {
            phase: s.phase,
            pod_ip: s.pod_ip,
            pod_ips: s.pod_ips,
            ..PodStatus::default()
        }),
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::{EndpointAddress, StoredEndpoint};
    use k8s_openapi::api::discovery::v1::EndpointConditions;
    use serde_json::json;

    fn pod_with(ports: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "default",
                         "annotations": {"a": "b"}, "managedFields": [{"manager": "kubelet"}]},
            "spec": {"nodeName": "node-a", "containers": [
                {"name": "app", "image": "nginx", "env": [{"name": "X", "value": "1"}],
                 "ports": ports}]},
            "status": {"phase": "Running", "podIP": "10.1.0.5",
                       "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap()
    }

    #[test]
    fn a_slice_keeps_only_its_service_label_and_trigger_time_annotation() {
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "s-1", "namespace": "default", "resourceVersion": "42",
                         "uid": "0f6c5a4e-0000-4000-8000-000000000001", "generation": 3,
                         "creationTimestamp": "2026-12-03T11:00:00Z",
                         "labels": {"kubernetes.io/service-name": "web",
                                    "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"},
                         "annotations": {"a": "b",
                                         "endpoints.kubernetes.io/last-change-trigger-time":
                                             "2026-12-03T12:00:00Z"}},
            "addressType": "IPv4", "endpoints": []
        }))
        .unwrap();
        let Some(Object::EndpointSlice(kept)) = endpoint_slice(slice) else {
            panic!("a slice is kept");
        };
        assert_eq!(kept.service_name.as_deref(), Some("web"));
        assert_eq!(kept.trigger_time.as_deref(), Some("2026-12-03T12:00:00Z"));
        assert_eq!(
            kept.metadata,
            crate::k8s::StoredMeta {
                name: Some("s-1".into()),
                namespace: Some("default".into()),
                deletion_timestamp: None,
            }
        );
    }

    #[test]
    fn a_slice_endpoint_keeps_what_translation_reads_and_drops_its_pod_reference() {
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "s-1", "namespace": "default"},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.0.1"],
                           "conditions": {"ready": true, "serving": true, "terminating": false},
                           "nodeName": "node-a", "zone": "z1", "hostname": "web-0",
                           "hints": {"forZones": [{"name": "z1"}]},
                           "deprecatedTopology": {"kubernetes.io/hostname": "node-a"},
                           "targetRef": {"kind": "Pod", "namespace": "default", "name": "web-0",
                                         "uid": "0f6c5a4e-0000-4000-8000-000000000000"}}]
        }))
        .unwrap();
        let Some(Object::EndpointSlice(kept)) = endpoint_slice(slice) else {
            panic!("a slice is kept");
        };
        assert_eq!(
            kept.endpoints,
            [StoredEndpoint {
                address: Some(EndpointAddress::Ip("10.0.0.1".parse().unwrap())),
                conditions: EndpointConditions {
                    ready: Some(true),
                    serving: Some(true),
                    terminating: Some(false),
                },
                placement: Some(std::sync::Arc::new(crate::model::Placement {
                    node_name: Some("node-a".into()),
                    hint_zones: ["z1".into()].into(),
                })),
            }]
        );
    }

    #[test]
    fn a_pod_without_a_host_port_is_not_kept() {
        assert_eq!(pod(pod_with(json!([{"containerPort": 80}]))), None);
        assert_eq!(pod(pod_with(json!(null))), None);
        assert_eq!(
            pod(pod_with(json!([{"containerPort": 80, "hostPort": 0}]))),
            None
        );
    }

    #[test]
    fn a_host_port_pod_keeps_what_translation_reads_and_nothing_more() {
        let Some(Object::Pod(kept)) = pod(pod_with(json!([
            {"containerPort": 80, "hostPort": 8080, "name": "web"},
            {"containerPort": 9090}
        ]))) else {
            panic!("a hostPort pod is kept");
        };
        let kept = serde_json::to_value(&*kept).unwrap();
        assert_eq!(
            kept,
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "p", "namespace": "default"},
                "spec": {"nodeName": "node-a", "containers": [
                    {"name": "app", "ports": [
                        {"containerPort": 80, "hostPort": 8080, "name": "web"}]}]},
                "status": {"phase": "Running", "podIP": "10.1.0.5"}
            })
        );
    }

    #[test]
    fn services_lose_managed_fields_annotations_and_unread_labels() {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default",
                         "labels": {"service.kubernetes.io/headless": "", "app": "web"},
                         "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
                         "managedFields": [{"manager": "kubectl"}]},
            "spec": {"clusterIP": "10.0.0.1", "selector": {"app": "web"}}
        }))
        .unwrap();
        let Some(Object::Service(kept)) = service(svc) else {
            panic!("services are kept");
        };
        assert!(kept.headless, "the headless label is read into a field");
        assert_eq!(kept.metadata.name.as_deref(), Some("web"));
        assert_eq!(kept.metadata.namespace.as_deref(), Some("default"));
    }
}
