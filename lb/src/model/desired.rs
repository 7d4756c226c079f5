//! The desired state: every frontend the node should serve.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Serialize, Serializer};

use super::{Frontend, L3n4Addr, LbService, Scope};

/// What makes a frontend unique in the datapath: its address and scope. Two services cannot
/// share one, whatever their types.
type FrontendKey = (L3n4Addr, Scope);

fn key(frontend: &Frontend) -> FrontendKey {
    (frontend.addr, frontend.scope)
}

/// Every frontend the datapath should serve, unique by address and scope, in the order added.
///
/// Translation adds frontends in a fixed order (service, port, family, then cluster IP,
/// wildcard, node addresses in device order, ingress IPs, external IPs), so offline renderings
/// number them the way the documents' examples do.
///
/// Services are shared ([`Arc`]): a translation that reuses an unchanged service's frontends
/// from the last one hands the same allocation on, and the reconciler knows by the pointer,
/// without comparing backends, that the frontend did not change. The state itself is shared
/// until changed, so keeping the last one (the reconciler does, to compare) costs nothing, and
/// replacing one service in a copy copies a vector of pointers, not the index.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DesiredState {
    services: Arc<Vec<Arc<LbService>>>,
    index: Arc<BTreeMap<FrontendKey, usize>>,
}

impl DesiredState {
    /// An empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `service`, or returns the service already holding its address and scope.
    pub fn insert(&mut self, service: LbService) -> Result<(), &LbService> {
        self.insert_shared(Arc::new(service))
    }

    /// [`DesiredState::insert`] of a service shared with an earlier state.
    pub fn insert_shared(&mut self, service: Arc<LbService>) -> Result<(), &LbService> {
        if let Some(&at) = self.index.get(&key(&service.frontend)) {
            return Err(&*self.services[at]);
        }
        Arc::make_mut(&mut self.index).insert(key(&service.frontend), self.services.len());
        Arc::make_mut(&mut self.services).push(service);
        Ok(())
    }

    /// Puts `service` in the place of the service at its address and scope, and returns that
    /// one; `None` (and nothing changed) when there is none.
    pub fn replace_shared(&mut self, service: Arc<LbService>) -> Option<Arc<LbService>> {
        let at = *self.index.get(&key(&service.frontend))?;
        Some(std::mem::replace(
            &mut Arc::make_mut(&mut self.services)[at],
            service,
        ))
    }

    /// Whether `other` is this state unchanged: a copy of it that nothing was added to or
    /// replaced in since (a cheap test; equal states built apart are not the same).
    pub fn same_as(&self, other: &DesiredState) -> bool {
        Arc::ptr_eq(&self.services, &other.services)
    }

    /// The service at `frontend`'s address and scope (of whatever type).
    pub fn get(&self, frontend: &Frontend) -> Option<&LbService> {
        self.index
            .get(&key(frontend))
            .map(|&at| &*self.services[at])
    }

    /// The shared service at `frontend`'s address and scope.
    pub fn get_shared(&self, frontend: &Frontend) -> Option<&Arc<LbService>> {
        self.index.get(&key(frontend)).map(|&at| &self.services[at])
    }

    /// Where the service at `frontend`'s address and scope stands in the order added.
    pub fn position(&self, frontend: &Frontend) -> Option<usize> {
        self.index.get(&key(frontend)).copied()
    }

    /// All services in the order added.
    pub fn services(&self) -> impl Iterator<Item = &LbService> {
        self.services.iter().map(|s| &**s)
    }

    /// All services in the order added, shared.
    pub fn shared_services(&self) -> impl Iterator<Item = &Arc<LbService>> {
        self.services.iter()
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
        serializer.collect_seq(self.services())
    }
}
