//! Backends: the endpoints a frontend's traffic is sent to.

use std::fmt;

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
    /// The node the endpoint runs on, if known (for traffic policy `Local`).
    pub node_name: Option<String>,
    /// The zone the endpoint runs in, if known.
    pub zone: Option<String>,
    /// Zones this endpoint is hinted for by topology-aware routing (`hints.forZones`).
    pub hint_zones: Vec<String>,
}

impl Backend {
    /// An active backend with the default weight and no placement information.
    pub fn active(addr: L3n4Addr) -> Self {
        Backend {
            addr,
            state: BackendState::Active,
            weight: DEFAULT_BACKEND_WEIGHT,
            node_name: None,
            zone: None,
            hint_zones: Vec::new(),
        }
    }
}
