//! Backends: the endpoints a frontend's traffic is sent to.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::L3n4Addr;

/// Weight given to backends that Kubernetes does not weigh (all of them, today).
pub const DEFAULT_BACKEND_WEIGHT: u16 = 100;

/// The lifecycle state of a backend, as `lbctl service list` prints it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendState {
    /// Ready: takes new connections.
    Active,
    /// Terminating but still serving: existing connections continue, new ones go elsewhere.
    Terminating,
    /// Failed a health check: takes no new connections until it recovers.
    Quarantined,
    /// Taken out by an operator: takes no new connections.
    Maintenance,
}

impl BackendState {
    /// Whether new connections may be sent to a backend in this state.
    pub fn takes_new_connections(self) -> bool {
        self == BackendState::Active
    }
}

impl fmt::Display for BackendState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendState::Active => "active",
            BackendState::Terminating => "terminating",
            BackendState::Quarantined => "quarantined",
            BackendState::Maintenance => "maintenance",
        })
    }
}

/// One endpoint of a service.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Backend {
    /// Where traffic is sent.
    pub addr: L3n4Addr,
    /// Lifecycle state.
    pub state: BackendState,
    /// Relative weight for weighted selection (Maglev); 0 takes no new traffic.
    pub weight: u16,
    /// Where the endpoint runs, when known: shared with the other backends made from the same
    /// endpoint (one per port of its service) and with the stored EndpointSlice, not copied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Arc<Placement>>,
}

/// Where an endpoint runs and which zones topology-aware routing hints it for. (Its own
/// `zone` is not kept: as in kube-proxy, only the hints and this node's zone decide.)
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Placement {
    /// The node the endpoint runs on, if known (for traffic policy `Local`).
    pub node_name: Option<Box<str>>,
    /// Zones this endpoint is hinted for by topology-aware routing (`hints.forZones`).
    #[serde(default)]
    pub hint_zones: Box<[Box<str>]>,
}

impl Placement {
    /// `Some` placement, or `None` when it says nothing.
    pub fn shared(self) -> Option<Arc<Placement>> {
        (self != Placement::default()).then(|| Arc::new(self))
    }
}

impl Backend {
    /// An active backend with the default weight and no placement information.
    pub fn active(addr: L3n4Addr) -> Self {
        Backend {
            addr,
            state: BackendState::Active,
            weight: DEFAULT_BACKEND_WEIGHT,
            placement: None,
        }
    }

    /// The node the endpoint runs on, if known.
    pub fn node_name(&self) -> Option<&str> {
        self.placement.as_ref()?.node_name.as_deref()
    }

    /// Whether topology-aware routing hints this endpoint for any zone.
    pub fn has_zone_hints(&self) -> bool {
        self.placement
            .as_ref()
            .is_some_and(|p| !p.hint_zones.is_empty())
    }

    /// Whether topology-aware routing hints this endpoint for `zone`.
    pub fn hinted_for(&self, zone: &str) -> bool {
        self.placement
            .as_ref()
            .is_some_and(|p| p.hint_zones.iter().any(|z| &**z == zone))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::L4Protocol;

    #[test]
    fn a_backend_reads_back_as_written_with_or_without_a_placement() {
        let bare = Backend::active(L3n4Addr::new(
            "10.0.0.1".parse().unwrap(),
            80,
            L4Protocol::Tcp,
        ));
        let placed = Backend {
            placement: Placement {
                node_name: Some("n1".into()),
                hint_zones: ["z1".into()].into(),
            }
            .shared(),
            ..bare.clone()
        };
        for backend in [bare, placed] {
            let json = serde_json::to_string(&backend).unwrap();
            let back: Backend = serde_json::from_str(&json).unwrap();
            assert_eq!(back, backend, "{json}");
        }
        assert_eq!(Placement::default().shared(), None);
    }
}
