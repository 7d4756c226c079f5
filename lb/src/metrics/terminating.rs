//! [`TerminatingEndpoints`]: counts endpoints turning terminating, the documents'
//! `k8s_terminating_endpoints_events_total`, once per transition however often the same
//! EndpointSlices are seen again.

use std::collections::HashMap;
use std::sync::Arc;

use crate::k8s::{EndpointAddress, StoredSlice};

use super::slice_changes::SliceChanges;

/// A service's namespace and name. Endpoints are told apart by service, not slice, so an
/// endpoint moved to another slice of its service is still the same one.
type ServiceKey = (String, String);

/// Each service's EndpointSlices as last seen (shared with the store, not copied), from which
/// whether each endpoint was terminating is worked out for the services a change touches.
#[derive(Clone, Debug, Default)]
pub struct TerminatingEndpoints {
    slices: HashMap<ServiceKey, Vec<Arc<StoredSlice>>>,
}

impl TerminatingEndpoints {
    /// Takes the slices that changed since the last call and returns how many endpoints have
    /// turned terminating (`conditions.terminating: true`) with them. An endpoint seen for the
    /// first time is not a transition, so starting up (or a restart) counts none. The work is
    /// the changed slices' services', whatever the number of the others.
    pub fn observe(&mut self, changes: &SliceChanges) -> u64 {
        let mut touched: Vec<ServiceKey> = changes
            .appeared
            .iter()
            .chain(&changes.disappeared)
            .map(|s| service_of(s))
            .collect();
        touched.sort();
        touched.dedup();
        let was: Vec<HashMap<EndpointAddress, bool>> = touched
            .iter()
            .map(|key| owned(self.endpoints_of(key)))
            .collect();
        for gone in &changes.disappeared {
            let key = service_of(gone);
            if let Some(slices) = self.slices.get_mut(&key) {
                if let Some(at) = slices.iter().position(|s| Arc::ptr_eq(s, gone)) {
                    slices.swap_remove(at);
                }
                if slices.is_empty() {
                    self.slices.remove(&key);
                }
            }
        }
        for new in &changes.appeared {
            self.slices
                .entry(service_of(new))
                .or_default()
                .push(Arc::clone(new));
        }
        let mut turned = 0;
        for (key, was) in touched.iter().zip(&was) {
            turned += self
                .endpoints_of(key)
                .iter()
                .filter(|(address, terminating)| {
                    **terminating && was.get(**address) == Some(&false)
                })
                .count();
        }
        turned as u64
    }

    /// Whether each endpoint (by first address) of the service `key` is terminating in any of
    /// its slices.
    fn endpoints_of(&self, key: &ServiceKey) -> HashMap<&EndpointAddress, bool> {
        let mut out = HashMap::new();
        for slice in self.slices.get(key).into_iter().flatten() {
            for endpoint in &slice.endpoints {
                let Some(address) = &endpoint.address else {
                    continue;
                };
                let terminating = endpoint.conditions.terminating.unwrap_or(false);
                *out.entry(address).or_insert(false) |= terminating;
            }
        }
        out
    }
}

fn owned(endpoints: HashMap<&EndpointAddress, bool>) -> HashMap<EndpointAddress, bool> {
    endpoints.into_iter().map(|(a, t)| (a.clone(), t)).collect()
}

/// The slice's service: namespace and the service-name label (the slice's name without it).
pub(super) fn service_of(slice: &StoredSlice) -> ServiceKey {
    let namespace = slice.metadata.namespace.clone().unwrap_or_default();
    let service = slice
        .service_name
        .as_deref()
        .or(slice.metadata.name.as_deref())
        .unwrap_or_default()
        .to_owned();
    (namespace, service)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::slice_changes::SeenSlices;

    /// The counter fed the way the agent feeds it: all slices as they are now, of which the
    /// ones not seen before (here: every one, as each is a new allocation) are the changes.
    #[derive(Default)]
    struct Tracker {
        seen: SeenSlices,
        counter: TerminatingEndpoints,
    }

    impl Tracker {
        fn observe(&mut self, slices: &[StoredSlice]) -> u64 {
            let now: Vec<Arc<StoredSlice>> = slices.iter().cloned().map(Arc::new).collect();
            self.observe_shared(&now)
        }

        fn observe_shared(&mut self, slices: &[Arc<StoredSlice>]) -> u64 {
            let changes = self.seen.look(slices);
            self.counter.observe(&changes)
        }
    }

    /// One slice of service `svc` with these (address, terminating) endpoints.
    fn slice(name: &str, svc: &str, endpoints: &[(&str, bool)]) -> StoredSlice {
        let endpoints: String = endpoints
            .iter()
            .map(|(a, t)| {
                format!("  - {{addresses: [{a}], conditions: {{ready: {}, serving: true, terminating: {t}}}}}\n", !t)
            })
            .collect();
        serde_yaml::from_str(&format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: {name}, namespace: default, labels: {{kubernetes.io/service-name: {svc}}}}}\n\
             addressType: IPv4\nendpoints:\n{endpoints}"
        ))
        .map(|s: k8s_openapi::api::discovery::v1::EndpointSlice| s.into())
        .unwrap()
    }

    #[test]
    fn an_endpoint_turning_terminating_counts_once() {
        let mut t = Tracker::default();
        assert_eq!(
            t.observe(&[slice(
                "a-1",
                "a",
                &[("10.0.0.1", false), ("10.0.0.2", false)]
            )]),
            0
        );
        let turned = [slice(
            "a-1",
            "a",
            &[("10.0.0.1", true), ("10.0.0.2", false)],
        )];
        assert_eq!(t.observe(&turned), 1);
        assert_eq!(
            t.observe(&turned),
            0,
            "seen again (a resync): no new transition"
        );
        assert_eq!(t.observe(&turned), 0);
    }

    #[test]
    fn endpoints_already_terminating_when_first_seen_do_not_count() {
        let mut t = Tracker::default();
        assert_eq!(t.observe(&[slice("a-1", "a", &[("10.0.0.1", true)])]), 0);
        assert_eq!(t.observe(&[slice("a-1", "a", &[("10.0.0.1", true)])]), 0);
    }

    #[test]
    fn back_to_serving_and_terminating_again_is_a_second_transition() {
        let mut t = Tracker::default();
        t.observe(&[slice("a-1", "a", &[("10.0.0.1", false)])]);
        assert_eq!(t.observe(&[slice("a-1", "a", &[("10.0.0.1", true)])]), 1);
        assert_eq!(t.observe(&[slice("a-1", "a", &[("10.0.0.1", false)])]), 0);
        assert_eq!(t.observe(&[slice("a-1", "a", &[("10.0.0.1", true)])]), 1);
    }

    #[test]
    fn endpoints_are_told_apart_by_service_not_slice() {
        let mut t = Tracker::default();
        t.observe(&[
            slice("a-1", "a", &[("10.0.0.1", false)]),
            slice("b-1", "b", &[("10.0.0.1", false)]),
        ]);
        // The endpoint moved to another slice of its service as it turned terminating; the
        // same address in service b stays serving.
        let now = [
            slice("a-2", "a", &[("10.0.0.1", true)]),
            slice("b-1", "b", &[("10.0.0.1", false)]),
        ];
        assert_eq!(t.observe(&now), 1);
        assert_eq!(t.observe(&now), 0);
    }

    #[test]
    fn slices_seen_again_unchanged_are_no_change_and_a_changed_one_counts() {
        let mut t = Tracker::default();
        let a = Arc::new(slice("a-1", "a", &[("10.0.0.1", false)]));
        let b = Arc::new(slice("b-1", "b", &[("10.0.0.2", false)]));
        assert_eq!(t.observe_shared(&[Arc::clone(&a), Arc::clone(&b)]), 0);
        let b_turned = Arc::new(slice("b-1", "b", &[("10.0.0.2", true)]));
        assert_eq!(
            t.observe_shared(&[Arc::clone(&a), Arc::clone(&b_turned)]),
            1
        );
        assert_eq!(t.observe_shared(&[Arc::clone(&a), b_turned]), 0);
        assert_eq!(
            t.observe_shared(&[a]),
            0,
            "a service's slice deleted: nothing turned terminating"
        );
    }
}
