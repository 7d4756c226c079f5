//! The whole translation: cluster objects and the local node into the desired state, with
//! every bad object reported and left out while the others are programmed.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use super::stored_meta::Named;
use super::stored_service::StoredService;
use super::stored_slice::StoredSlice;
use k8s_openapi::api::core::v1::{Node, Pod};

use super::endpoints::{parse_slice, ParsedSlice};
use super::error::{ObjectRef, TranslateError};
use super::health_check::{HealthCheck, HealthChecks};
use super::hostport::translate_pod;
use super::node::{DeviceSelection, NodeContext};
use super::service::{translate_service, ServiceOutcome};
use super::TranslateOptions;
use crate::exact::map_exact;
use crate::model::{DesiredState, IpFamily, LbService, ServiceName};

/// The Kubernetes objects the agent watches, shared: a copy is a reference count each, and
/// the agent's store hands its own out ([`crate::source::ClusterStore::objects`]).
#[derive(Clone, Debug, Default)]
pub struct ClusterObjects {
    /// Services.
    pub services: Vec<Arc<StoredService>>,
    /// EndpointSlices.
    pub endpoint_slices: Vec<Arc<StoredSlice>>,
    /// Nodes.
    pub nodes: Vec<Arc<Node>>,
    /// Pods (for hostPort).
    pub pods: Vec<Arc<Pod>>,
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
#[derive(Clone, Debug, PartialEq, Eq)]
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

    /// The node `name` with no devices, so no NodePort addresses (tests and benches).
    pub fn without_devices(name: &str) -> Self {
        LocalNode {
            name: name.to_owned(),
            zone: None,
            v4: Vec::new(),
            v6: Vec::new(),
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
///
/// The agent translates through a [`super::TranslationCache`] instead, which gives the same
/// result and redoes only the Services that changed.
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
        let name = service_name(svc);
        let own: Vec<&ParsedSlice> = slices
            .get(&name)
            .map(|v| v.iter().collect())
            .unwrap_or_default();
        let result = translate_one(svc, name, &own, node, opts, |_| None);
        out.add_service(&result);
    }
    out.add_pods(&objects.pods, node, opts, |_| None);
    out
}

/// What one Service translated to, kept whole so that a cache can hand it on unchanged.
#[derive(Clone, Debug)]
pub(super) struct ServiceResult {
    /// The Service's namespace and name.
    pub name: ServiceName,
    /// What became of it.
    pub outcome: Outcome,
    /// The warnings its translation gave, whatever the outcome.
    pub warnings: Vec<String>,
}

/// What became of one Service.
#[derive(Clone, Debug)]
pub(super) enum Outcome {
    /// Its frontends and its health check.
    Programmed(Vec<Arc<LbService>>, Option<HealthCheck>),
    /// Not ours to program, and why.
    Ignored(String),
    /// Left out for these errors.
    Failed(Vec<TranslateError>),
}

/// The (namespace, name) of a Service, as its errors name it.
pub(super) fn service_name(svc: &StoredService) -> ServiceName {
    let object = ObjectRef::new("Service", &svc.metadata);
    ServiceName {
        namespace: object.namespace,
        name: object.name,
    }
}

/// Translates one Service, named `name`, with its EndpointSlices `own`. A frontend equal to
/// one `earlier` gives is that one, shared.
pub(super) fn translate_one(
    svc: &StoredService,
    name: ServiceName,
    own: &[&ParsedSlice],
    node: &LocalNode,
    opts: &TranslateOptions,
    earlier: impl Fn(&LbService) -> Option<Arc<LbService>>,
) -> ServiceResult {
    let mut warnings = Vec::new();
    let outcome = match translate_service(svc, own, node, opts, &mut warnings) {
        // Kept in the cache for as long as the Service is: exactly sized (`map_exact`).
        Ok(ServiceOutcome::Programmed(services, health_check)) => Outcome::Programmed(
            map_exact(services, |s| earlier(&s).unwrap_or_else(|| Arc::new(s))),
            health_check,
        ),
        Ok(ServiceOutcome::Ignored(why)) => Outcome::Ignored(why),
        Err(errors) => Outcome::Failed(errors),
    };
    ServiceResult {
        name,
        outcome,
        warnings,
    }
}

impl Translation {
    /// Adds one Service's result, after those of the Services before it.
    pub(super) fn add_service(&mut self, result: &ServiceResult) {
        self.warnings.extend(result.warnings.iter().cloned());
        match &result.outcome {
            Outcome::Programmed(services, health_check) => {
                if let Some(check) = health_check {
                    self.health_checks.insert(result.name.clone(), *check);
                }
                let object = || ObjectRef {
                    kind: "Service",
                    namespace: result.name.namespace.clone(),
                    name: result.name.name.clone(),
                };
                insert_all(self, object, services);
            }
            Outcome::Ignored(why) => self.ignored.push(why.clone()),
            Outcome::Failed(errors) => self.errors.extend(errors.iter().cloned()),
        }
    }

    /// Adds the hostPorts of `pods`, after every Service (when hostPort handling is on). A
    /// frontend equal to one `earlier` gives is that one, shared.
    pub(super) fn add_pods(
        &mut self,
        pods: &[Arc<Pod>],
        node: &LocalNode,
        opts: &TranslateOptions,
        earlier: impl Fn(&LbService) -> Option<Arc<LbService>>,
    ) {
        if !opts.host_port {
            return;
        }
        for pod in sorted(pods, |p| &p.metadata) {
            match translate_pod(pod, node, opts, &mut self.warnings) {
                Ok(services) => {
                    let services: Vec<Arc<LbService>> = services
                        .into_iter()
                        .map(|s| earlier(&s).unwrap_or_else(|| Arc::new(s)))
                        .collect();
                    insert_all(self, || ObjectRef::new("Pod", &pod.metadata), &services);
                }
                Err(errors) => self.errors.extend(errors),
            }
        }
    }
}

/// `items` in (namespace, name) order, the order of the names errors show (a missing namespace
/// is `default`); items with the same name keep their order.
pub(super) fn sorted<T, M: Named + ?Sized>(items: &[T], meta: impl Fn(&T) -> &M) -> Vec<&T> {
    let mut v: Vec<&T> = items.iter().collect();
    v.sort_by(|a, b| sort_key(meta(a)).cmp(&sort_key(meta(b))));
    v
}

/// [`ObjectRef::new`]'s namespace and name, borrowed.
pub(super) fn sort_key(meta: &(impl Named + ?Sized)) -> (&str, &str) {
    (
        meta.namespace().unwrap_or("default"),
        meta.name().unwrap_or("<unnamed>"),
    )
}

/// Adds one object's frontends. A frontend whose address and scope another object already
/// serves is reported and skipped; the object's other frontends are programmed, as kube-proxy
/// does. The same frontend listed twice by one object (an IP given twice) is one frontend.
fn insert_all(out: &mut Translation, object: impl Fn() -> ObjectRef, services: &[Arc<LbService>]) {
    let first_of_object = out.state.len();
    for s in services {
        // Free nearly always: one search, not two.
        if out.state.insert_shared(Arc::clone(s)).is_ok() {
            continue;
        }
        let at = out
            .state
            .position(&s.frontend)
            .expect("a frontend refused is held");
        if at >= first_of_object {
            continue;
        }
        let holder = out.state.services().nth(at).expect("position is in range");
        out.errors.push(TranslateError {
            object: object(),
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
    use crate::k8s::HEADLESS_LABEL;
    use crate::source::{Change, ClusterStore, Object};
    use serde_json::json;

    fn service(labels: serde_json::Value) -> Object {
        Object::Service(std::sync::Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": "web", "namespace": "default", "labels": labels},
                "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}
            }))
            .unwrap(),
        ))
    }

    fn programmed(store: &ClusterStore) -> usize {
        translate(
            &store.objects(),
            &local_node(),
            &TranslateOptions::default(),
        )
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

    fn local_node() -> LocalNode {
        LocalNode::without_devices("n1")
    }

    /// The Service `web` at 10.96.0.10:80, with session affinity or without.
    fn web(affinity: &str) -> Object {
        Object::Service(Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": "web", "namespace": "default"},
                "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80}],
                         "sessionAffinity": affinity}
            }))
            .unwrap(),
        ))
    }

    #[test]
    fn the_same_service_in_two_files_is_taken_from_the_first_file_by_name() {
        for (with_affinity, without) in [("a.yaml", "b.yaml"), ("z.yaml", "b.yaml")] {
            let mut store = ClusterStore::default();
            // Delivered in the other order than their names: the names decide.
            store.apply(Change::Replace {
                origin: without.into(),
                objects: vec![web("None")],
            });
            store.apply(Change::Replace {
                origin: with_affinity.into(),
                objects: vec![web("ClientIP")],
            });
            let expect_affinity = with_affinity < without;
            let plain = translate(
                &store.objects(),
                &local_node(),
                &TranslateOptions::default(),
            );
            let cached = super::super::TranslationCache::new().translate(
                &store.objects(),
                &local_node(),
                &TranslateOptions::default(),
            );
            for t in [&plain, &cached] {
                let programmed: Vec<&LbService> = t.state.services().collect();
                assert_eq!(programmed.len(), 1);
                assert_eq!(
                    programmed[0]
                        .policies
                        .session_affinity_timeout_secs
                        .is_some(),
                    expect_affinity,
                    "{with_affinity} with affinity, {without} without"
                );
                assert_eq!(t.errors.len(), 1, "{:?}", t.errors);
                assert!(
                    t.errors[0]
                        .reason
                        .contains("already a ClusterIP frontend of default/web"),
                    "{}",
                    t.errors[0]
                );
            }
        }
    }
}
