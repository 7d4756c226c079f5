//! [`DesiredCounts`]: the `lb_services` and `lb_backends` gauges, the distinct services and
//! backend addresses of the desired state, kept up to date from the frontends that changed
//! since the last sync rather than counted again over all of them (100 000 backends at 10 000
//! services) after every change.

use std::collections::HashMap;
use std::hash::Hash;

use super::slice_changes::Seen;
use crate::model::{DesiredState, L3n4Addr, LbService, ServiceName};

/// How many frontends name each service, and how many frontends list each backend address.
#[derive(Debug, Default)]
pub struct DesiredCounts {
    seen: Seen<LbService>,
    services: HashMap<ServiceName, usize>,
    backends: HashMap<L3n4Addr, usize>,
}

impl DesiredCounts {
    /// Takes the desired state as it is now; returns its number of distinct services and of
    /// distinct backend addresses. Only frontends that are new allocations since the last
    /// call, and those gone, are looked into.
    pub fn update(&mut self, desired: &DesiredState) -> (usize, usize) {
        let changes = self.seen.look(desired.shared_services());
        for gone in &changes.disappeared {
            release(&mut self.services, &gone.name);
            for b in &gone.backends {
                release(&mut self.backends, &b.addr);
            }
        }
        for new in &changes.appeared {
            *self.services.entry(new.name.clone()).or_default() += 1;
            for b in &new.backends {
                *self.backends.entry(b.addr).or_default() += 1;
            }
        }
        (self.services.len(), self.backends.len())
    }
}

/// One fewer holder of `key`; gone with the last.
fn release<K: Eq + Hash>(counts: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = counts.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            counts.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::{Backend, Frontend, L4Protocol, ServiceType};

    fn frontend(service: &str, port: u16, backends: &[&str]) -> LbService {
        LbService {
            frontend: Frontend::external(
                L3n4Addr::new("10.96.0.10".parse().unwrap(), port, L4Protocol::Tcp),
                ServiceType::ClusterIP,
            ),
            name: ServiceName {
                namespace: "default".into(),
                name: service.into(),
            },
            port_name: String::new(),
            backends: backends
                .iter()
                .map(|b| Backend::active(L3n4Addr::new(b.parse().unwrap(), 8080, L4Protocol::Tcp)))
                .collect(),
            policies: Default::default(),
            no_local_backends: false,
        }
    }

    fn state(services: &[&Arc<LbService>]) -> DesiredState {
        let mut d = DesiredState::new();
        for s in services {
            d.insert_shared(Arc::clone(s)).unwrap();
        }
        d
    }

    #[test]
    fn counts_follow_frontends_added_changed_and_removed() {
        let a80 = Arc::new(frontend("a", 80, &["10.0.0.1", "10.0.0.2"]));
        let a81 = Arc::new(frontend("a", 81, &["10.0.0.2"]));
        let b90 = Arc::new(frontend("b", 90, &["10.0.0.3"]));
        let mut counts = DesiredCounts::default();
        assert_eq!(counts.update(&state(&[&a80, &a81, &b90])), (2, 3));
        assert_eq!(
            counts.update(&state(&[&a80, &a81, &b90])),
            (2, 3),
            "nothing new"
        );
        let b90_moved = Arc::new(frontend("b", 90, &["10.0.0.1"]));
        assert_eq!(
            counts.update(&state(&[&a80, &a81, &b90_moved])),
            (2, 2),
            "10.0.0.3 is gone, 10.0.0.1 still listed"
        );
        assert_eq!(counts.update(&state(&[&a81])), (1, 1));
        assert_eq!(counts.update(&DesiredState::new()), (0, 0));
    }
}
