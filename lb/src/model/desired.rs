//! The desired state: every frontend the node should serve.

use std::collections::btree_map::{self, BTreeMap};

use serde::{Serialize, Serializer};

use super::{Frontend, LbService};

/// Every frontend the datapath should serve, keyed and ordered by frontend.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DesiredState {
    services: BTreeMap<Frontend, LbService>,
}

impl DesiredState {
    /// An empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `service`, or returns the service already holding its frontend.
    pub fn insert(&mut self, service: LbService) -> Result<(), &LbService> {
        match self.services.entry(service.frontend) {
            btree_map::Entry::Vacant(slot) => {
                slot.insert(service);
                Ok(())
            }
            btree_map::Entry::Occupied(taken) => Err(taken.into_mut()),
        }
    }

    /// The service at `frontend`.
    pub fn get(&self, frontend: &Frontend) -> Option<&LbService> {
        self.services.get(frontend)
    }

    /// All services in frontend order.
    pub fn services(&self) -> impl Iterator<Item = &LbService> {
        self.services.values()
    }

    /// Number of frontends.
    pub fn len(&self) -> usize {
        self.services.len()
    }

    /// Whether there is no frontend at all.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }
}

impl Serialize for DesiredState {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.services.values())
    }
}
