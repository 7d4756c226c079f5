//! [`TerminatingEndpoints`]: counts endpoints turning terminating, the documents'
//! `k8s_terminating_endpoints_events_total`, once per transition however often the same
//! EndpointSlices are seen again.

use std::collections::HashMap;

use k8s_openapi::api::discovery::v1::EndpointSlice;

/// An endpoint: its service's namespace and name and its first address. Keyed by service,
/// not slice, so an endpoint moved to another slice of its service is still the same one.
type EndpointKey = (String, String, String);

/// The label naming an EndpointSlice's service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Whether each endpoint was terminating when the EndpointSlices were last seen.
#[derive(Clone, Debug, Default)]
pub struct TerminatingEndpoints {
    known: HashMap<EndpointKey, bool>,
}

impl TerminatingEndpoints {
    /// Takes the EndpointSlices as they are now and returns how many endpoints have turned
    /// terminating (`conditions.terminating: true`) since the last call. An endpoint seen for
    /// the first time is not a transition, so starting up (or a restart) counts none.
    pub fn observe(&mut self, slices: &[EndpointSlice]) -> u64 {
        let mut now = HashMap::new();
        for slice in slices {
            let namespace = slice.metadata.namespace.clone().unwrap_or_default();
            let service = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
                .or(slice.metadata.name.as_ref())
                .cloned()
                .unwrap_or_default();
            for endpoint in &slice.endpoints {
                let Some(address) = endpoint.addresses.first() else {
                    continue;
                };
                let terminating = endpoint
                    .conditions
                    .as_ref()
                    .and_then(|c| c.terminating)
                    .unwrap_or(false);
                let key = (namespace.clone(), service.clone(), address.clone());
                *now.entry(key).or_insert(false) |= terminating;
            }
        }
        let turned = now
            .iter()
            .filter(|(key, terminating)| **terminating && self.known.get(*key) == Some(&false))
            .count();
        self.known = now;
        turned as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One slice of service `svc` with these (address, terminating) endpoints.
    fn slice(name: &str, svc: &str, endpoints: &[(&str, bool)]) -> EndpointSlice {
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
        .unwrap()
    }

    #[test]
    fn an_endpoint_turning_terminating_counts_once() {
        let mut t = TerminatingEndpoints::default();
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
        let mut t = TerminatingEndpoints::default();
        assert_eq!(t.observe(&[slice("a-1", "a", &[("10.0.0.1", true)])]), 0);
        assert_eq!(t.observe(&[slice("a-1", "a", &[("10.0.0.1", true)])]), 0);
    }

    #[test]
    fn back_to_serving_and_terminating_again_is_a_second_transition() {
        let mut t = TerminatingEndpoints::default();
        t.observe(&[slice("a-1", "a", &[("10.0.0.1", false)])]);
        assert_eq!(t.observe(&[slice("a-1", "a", &[("10.0.0.1", true)])]), 1);
        assert_eq!(t.observe(&[slice("a-1", "a", &[("10.0.0.1", false)])]), 0);
        assert_eq!(t.observe(&[slice("a-1", "a", &[("10.0.0.1", true)])]), 1);
    }

    #[test]
    fn endpoints_are_told_apart_by_service_not_slice() {
        let mut t = TerminatingEndpoints::default();
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
}
