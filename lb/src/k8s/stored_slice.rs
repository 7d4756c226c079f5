//! [`StoredSlice`]: an EndpointSlice as the agent keeps it between watch events.
//!
//! The API type spends 352 bytes on each endpoint before its strings (a pod reference of seven
//! optional strings, a hostname, a deprecated topology map, a list of addresses of which only
//! the first is used), and the vector holding them grows by doubling while it is read; its
//! labels and annotations are maps of which a single entry takes a 550-byte node. At 10 000
//! Services of 10 endpoints that was a third of the agent's heap. This form keeps what
//! translation and the metrics read, the first address parsed when it is one, in 40 bytes an
//! endpoint; an invalid value is kept as written so translation can still name it. Both sources (the API server and manifest files) store slices in this form.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::discovery::v1::{EndpointConditions, EndpointPort, EndpointSlice};

use super::stored_meta::StoredMeta;
use super::SERVICE_NAME_LABEL;
use crate::exact::map_exact;
use crate::metrics::LAST_CHANGE_TRIGGER_TIME;
use crate::model::Placement;

/// An EndpointSlice (discovery.k8s.io/v1) with the fields the agent reads.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StoredSlice {
    /// Name, namespace and deletion time; its labels and annotations are not kept (the two
    /// that are read are the fields below: a map of one entry takes a 550-byte node).
    pub metadata: StoredMeta,
    /// The `kubernetes.io/service-name` label: the Service the slice belongs to.
    pub service_name: Option<Box<str>>,
    /// The `endpoints.kubernetes.io/last-change-trigger-time` annotation, as written: when the
    /// change this version of the slice carries was triggered (for the programming latency).
    pub trigger_time: Option<Box<str>>,
    /// `addressType`: `IPv4`, `IPv6` or `FQDN`, as written.
    pub address_type: String,
    /// `ports`.
    pub ports: Vec<EndpointPort>,
    /// `endpoints`.
    pub endpoints: Vec<StoredEndpoint>,
}

/// One endpoint of a [`StoredSlice`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StoredEndpoint {
    /// `addresses[0]`, the one address consumers use; `None` when the list is empty.
    pub address: Option<EndpointAddress>,
    /// `conditions`; a missing field reads as all three unset.
    pub conditions: EndpointConditions,
    /// `nodeName` and `hints.forZones[].name`, when either is set: shared with the
    /// backends translation makes of this endpoint.
    pub placement: Option<Arc<Placement>>,
}

/// An endpoint's address: parsed when it is an IP address written the way Rust writes it
/// back, else the text as the API server gave it (so an error can quote it exactly).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum EndpointAddress {
    /// A valid address.
    Ip(IpAddr),
    /// Anything else, verbatim.
    Text(Box<str>),
}

impl EndpointAddress {
    /// Parses `text`, keeping it verbatim unless it round-trips.
    pub fn new(text: String) -> Self {
        match text.parse::<IpAddr>() {
            Ok(ip) if ip.to_string() == text => EndpointAddress::Ip(ip),
            _ => EndpointAddress::Text(text.into_boxed_str()),
        }
    }
}

impl fmt::Display for EndpointAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndpointAddress::Ip(ip) => ip.fmt(f),
            EndpointAddress::Text(text) => f.write_str(text),
        }
    }
}

impl From<EndpointSlice> for StoredSlice {
    fn from(slice: EndpointSlice) -> Self {
        // Endpoints on one node with the same hints have the same placement: held once per
        // slice.
        let mut placements: HashMap<Placement, Arc<Placement>> = HashMap::new();
        let mut share = |placement: Placement| {
            let shared = placements.get(&placement).cloned();
            shared.or_else(|| {
                let new = placement.clone().shared()?;
                placements.insert(placement, Arc::clone(&new));
                Some(new)
            })
        };
        let EndpointSlice {
            metadata,
            address_type,
            endpoints,
            ports,
        } = slice;
        let take = |map: Option<BTreeMap<String, String>>, key: &str| {
            map.and_then(|mut m| m.remove(key))
                .map(String::into_boxed_str)
        };
        StoredSlice {
            service_name: take(metadata.labels, SERVICE_NAME_LABEL),
            trigger_time: take(metadata.annotations, LAST_CHANGE_TRIGGER_TIME),
            metadata: StoredMeta {
                name: metadata.name,
                namespace: metadata.namespace,
                deletion_timestamp: metadata.deletion_timestamp,
            },
            address_type,
            ports: {
                let mut ports = ports.unwrap_or_default();
                ports.shrink_to_fit();
                ports
            },
            endpoints: map_exact(endpoints, |ep| StoredEndpoint {
                address: ep.addresses.into_iter().next().map(EndpointAddress::new),
                conditions: ep.conditions.unwrap_or_default(),
                placement: share(Placement {
                    node_name: ep.node_name.map(String::into_boxed_str),
                    hint_zones: ep
                        .hints
                        .into_iter()
                        .flat_map(|h| h.for_zones.into_iter().flatten())
                        .map(|z| z.name.into_boxed_str())
                        .collect(),
                }),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stored(value: serde_json::Value) -> StoredSlice {
        serde_json::from_value::<EndpointSlice>(value)
            .unwrap()
            .into()
    }

    #[test]
    fn keeps_the_first_address_conditions_placement_and_hints() {
        let slice = stored(json!({
            "metadata": {"name": "web-1", "namespace": "default", "resourceVersion": "7",
                         "labels": {"kubernetes.io/service-name": "web",
                                    "endpointslice.kubernetes.io/managed-by": "controller"},
                         "annotations": {"endpoints.kubernetes.io/last-change-trigger-time":
                                             "2026-12-03T12:00:00Z", "other": "x"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["10.0.0.1", "10.0.0.9"], "nodeName": "n1", "zone": "z1",
                 "conditions": {"ready": false, "serving": true, "terminating": true},
                 "hints": {"forZones": [{"name": "z1"}, {"name": "z2"}]},
                 "targetRef": {"kind": "Pod", "name": "web-abc"}},
                {"addresses": []},
            ]
        }));
        assert_eq!(
            slice.metadata,
            StoredMeta {
                name: Some("web-1".into()),
                namespace: Some("default".into()),
                deletion_timestamp: None,
            }
        );
        assert_eq!(slice.service_name.as_deref(), Some("web"));
        assert_eq!(slice.trigger_time.as_deref(), Some("2026-12-03T12:00:00Z"));
        assert_eq!(slice.address_type, "IPv4");
        assert_eq!(slice.ports[0].port, Some(8080));
        let first = &slice.endpoints[0];
        assert_eq!(
            first.address,
            Some(EndpointAddress::Ip("10.0.0.1".parse().unwrap()))
        );
        assert_eq!(first.conditions.terminating, Some(true));
        assert_eq!(first.conditions.serving, Some(true));
        assert_eq!(
            first.placement.as_deref(),
            Some(&Placement {
                node_name: Some("n1".into()),
                hint_zones: ["z1".into(), "z2".into()].into(),
            })
        );
        assert_eq!(slice.endpoints[1], StoredEndpoint::default());
        // Endpoints placed alike share one placement.
        let again = stored(json!({
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.0.1"], "nodeName": "n1"},
                          {"addresses": ["10.0.0.2"], "nodeName": "n1"},
                          {"addresses": ["10.0.0.3"], "nodeName": "n2"},
                          {"addresses": ["10.0.0.4"]}]
        }));
        let placements: Vec<_> = again
            .endpoints
            .iter()
            .map(|e| e.placement.as_ref())
            .collect();
        assert!(Arc::ptr_eq(placements[0].unwrap(), placements[1].unwrap()));
        assert_eq!(placements[2].unwrap().node_name.as_deref(), Some("n2"));
        assert_eq!(placements[3], None);
        // Held for as long as the slice is: no spare room.
        assert_eq!(slice.endpoints.capacity(), slice.endpoints.len());
    }

    #[test]
    fn an_address_that_does_not_round_trip_is_kept_as_written() {
        for text in ["10.0.0.01", "not-an-ip", "2001:DB8::1", " 10.0.0.1"] {
            let address = EndpointAddress::new(text.to_owned());
            assert_eq!(address, EndpointAddress::Text(text.into()), "{text}");
            assert_eq!(address.to_string(), text);
        }
        let v6 = EndpointAddress::new("2001:db8::1".to_owned());
        assert!(matches!(v6, EndpointAddress::Ip(IpAddr::V6(_))));
        assert_eq!(v6.to_string(), "2001:db8::1");
    }

    #[test]
    fn an_endpoint_takes_a_fraction_of_the_api_type() {
        use k8s_openapi::api::discovery::v1::Endpoint;
        assert!(
            std::mem::size_of::<StoredEndpoint>() * 3 < std::mem::size_of::<Endpoint>(),
            "{} vs {}",
            std::mem::size_of::<StoredEndpoint>(),
            std::mem::size_of::<Endpoint>()
        );
    }
}
