//! The whole translation: cluster objects and the local node into the desired state, with
//! every bad object reported and left out while the others are programmed.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::endpoints::{parse_slice, ParsedSlice};
use super::error::{ObjectRef, TranslateError};
use super::health_check::HealthChecks;
use super::hostport::translate_pod;
use super::node::{DeviceSelection, NodeContext};
use super::service::{translate_service, ServiceOutcome};
use super::TranslateOptions;
use crate::model::{DesiredState, IpFamily, LbService, ServiceName};

/// The Kubernetes objects the agent watches.
#[derive(Clone, Debug, Default)]
pub struct ClusterObjects {
    /// Services.
    pub services: Vec<Service>,
    /// EndpointSlices.
    pub endpoint_slices: Vec<EndpointSlice>,
    /// Nodes.
    pub nodes: Vec<Node>,
    /// Pods (for hostPort).
    pub pods: Vec<Pod>,
}

/// The result of a translation.
#[derive(Clone, Debug, Default)]
pub struct Translation {
    /// What to program.
    pub state: DesiredState,
    /// Objects left out, and why.
    pub errors: Vec<TranslateError>,
    /// Things programmed differently from what the object asked, or skipped on purpose.
    pub warnings: Vec<String>,
    /// Objects that are not this agent's to program (headless, ExternalName, other proxies).
    pub ignored: Vec<String>,
    /// The `healthCheckNodePort` servers this node runs, with what they report.
    pub health_checks: HealthChecks,
}

/// The local node as translation uses it: name, zone and NodePort addresses per family.
#[derive(Clone, Debug)]
pub struct LocalNode {
    /// Node name.
    pub name: String,
    /// Zone.
    pub zone: Option<String>,
    v4: Vec<IpAddr>,
    v6: Vec<IpAddr>,
}

impl LocalNode {
    /// The view of `ctx` under a device selection.
    pub fn new(ctx: &NodeContext, selection: &DeviceSelection) -> Self {
        LocalNode {
            name: ctx.name.clone(),
            zone: ctx.zone.clone(),
            v4: ctx.node_port_addrs(selection, IpFamily::V4),
            v6: ctx.node_port_addrs(selection, IpFamily::V6),
        }
    }

    /// Addresses NodePort frontends are created for.
    pub fn node_port_addrs(&self, family: IpFamily) -> &[IpAddr] {
        match family {
            IpFamily::V4 => &self.v4,
            IpFamily::V6 => &self.v6,
        }
    }
}

/// Translates every object. Objects are taken in a fixed order, Services before Pods (a
/// Service's frontend outranks a hostPort) and by (namespace, name) within a kind, so when two
/// claim the same frontend the same one wins whatever order they arrived in.
pub fn translate(
    objects: &ClusterObjects,
    node: &LocalNode,
    opts: &TranslateOptions,
) -> Translation {
    let mut out = Translation::default();
    let mut slices: BTreeMap<ServiceName, Vec<ParsedSlice>> = BTreeMap::new();
    for slice in sorted(&objects.endpoint_slices, |s| &s.metadata) {
        match parse_slice(slice, opts) {
            Ok(Some(parsed)) => slices
                .entry(parsed.service.clone())
                .or_default()
                .push(parsed),
            Ok(None) => {}
            Err(errors) => out.errors.extend(errors),
        }
    }
    for svc in sorted(&objects.services, |s| &s.metadata) {
        let object = ObjectRef::new("Service", &svc.metadata);
        let key = ServiceName {
            namespace: object.namespace.clone(),
            name: object.name.clone(),
        };
        let own: Vec<&ParsedSlice> = slices
            .get(&key)
            .map(|v| v.iter().collect())
            .unwrap_or_default();
        match translate_service(svc, &own, node, opts, &mut out.warnings) {
            Ok(ServiceOutcome::Programmed(services, health_check)) => {
                if let Some(check) = health_check {
                    out.health_checks.insert(key, check);
                }
                insert_all(&mut out, object, services);
            }
            Ok(ServiceOutcome::Ignored(why)) => out.ignored.push(why),
            Err(errors) => out.errors.extend(errors),
        }
    }
    if opts.host_port {
        for pod in sorted(&objects.pods, |p| &p.metadata) {
            let object = ObjectRef::new("Pod", &pod.metadata);
            match translate_pod(pod, node, opts, &mut out.warnings) {
                Ok(services) => insert_all(&mut out, object, services),
                Err(errors) => out.errors.extend(errors),
            }
        }
    }
    out
}

fn sorted<T>(
    items: &[T],
    meta: impl Fn(&T) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> Vec<&T> {
    let mut v: Vec<&T> = items.iter().collect();
    // The same (namespace, name) the error messages show: a missing namespace is `default`.
    v.sort_by_key(|item| {
        let r = ObjectRef::new("", meta(item));
        (r.namespace, r.name)
    });
    v
}

/// Adds one object's frontends. A frontend whose address and scope another object already
/// serves is reported and skipped; the object's other frontends are programmed, as kube-proxy
/// does. The same frontend listed twice by one object (an IP given twice) is one frontend.
fn insert_all(out: &mut Translation, object: ObjectRef, services: Vec<LbService>) {
    let first_of_object = out.state.len();
    for s in services {
        let Some(at) = out.state.position(&s.frontend) else {
            let _ = out.state.insert(s);
            continue;
        };
        if at >= first_of_object {
            continue;
        }
        let holder = out.state.services().nth(at).expect("position is in range");
        out.errors.push(TranslateError {
            object: object.clone(),
            field: format!("{} frontend", s.frontend.kind),
            value: format!("{:?}", s.frontend.addr.display_with_protocol()),
            reason: format!(
                "already a {} frontend of {}; this frontend is not programmed",
                holder.frontend.kind, holder.name
            ),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::{DeviceSelection, NodeContext, HEADLESS_LABEL};
    use crate::source::{Change, ClusterStore, Object};
    use serde_json::json;

    fn service(labels: serde_json::Value) -> Object {
        Object::Service(Box::new(
            serde_json::from_value(json!({
                "metadata": {"name": "web", "namespace": "default", "labels": labels},
                "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}
            }))
            .unwrap(),
        ))
    }

    fn programmed(store: &ClusterStore) -> usize {
        let node = LocalNode::new(
            &NodeContext {
                name: "n1".into(),
                ..NodeContext::default()
            },
            &DeviceSelection {
                devices: vec![],
                direct_routing: None,
                patterns_matched_nothing: false,
            },
        );
        translate(&store.objects(), &node, &TranslateOptions::default())
            .state
            .services()
            .count()
    }

    #[test]
    fn adding_and_removing_the_headless_label_is_followed_live() {
        let mut store = ClusterStore::default();
        let upsert = |labels| Change::Upsert {
            origin: "api/Service".into(),
            object: service(labels),
        };
        store.apply(upsert(json!({"app": "web"})));
        assert_eq!(programmed(&store), 1);
        store.apply(upsert(json!({"app": "web", HEADLESS_LABEL: ""})));
        assert_eq!(programmed(&store), 0, "labelled headless: not programmed");
        store.apply(upsert(json!({"app": "web"})));
        assert_eq!(programmed(&store), 1, "label removed: programmed again");
    }
}
