//! The `lb_services` and `lb_backends` gauges: the distinct services and backend addresses of
//! the last programmed desired state, counted when scraped.
//!
//! Counted at the scrape rather than kept up to date at every pass: an index kept beside the
//! desired state held a counter per backend address (100 000 at 10 000 services, 6.6 MiB,
//! the reconciler's own index again), where a scrape's count takes a few milliseconds every
//! few seconds and its set is freed at once. The state itself is shared (`Arc`) with the
//! reconciler, so holding it costs nothing.

use std::collections::HashSet;

use crate::model::DesiredState;

/// The number of distinct services and of distinct backend addresses among `desired`'s
/// frontends (a service with several ports or addresses, a backend behind several frontends,
/// count once).
pub fn count(desired: &DesiredState) -> (usize, usize) {
    let services: HashSet<_> = desired.services().map(|s| &s.name).collect();
    let backends: HashSet<_> = desired
        .services()
        .flat_map(|s| s.backends.iter().map(|b| &b.addr))
        .collect();
    (services.len(), backends.len())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::{
        Backend, Frontend, L3n4Addr, L4Protocol, LbService, ServiceName, ServiceType,
    };

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
    fn services_and_backend_addresses_count_once_however_many_frontends_name_them() {
        let a80 = Arc::new(frontend("a", 80, &["10.0.0.1", "10.0.0.2"]));
        let a81 = Arc::new(frontend("a", 81, &["10.0.0.2"]));
        let b90 = Arc::new(frontend("b", 90, &["10.0.0.3"]));
        assert_eq!(count(&state(&[&a80, &a81, &b90])), (2, 3));
        let b90_moved = Arc::new(frontend("b", 90, &["10.0.0.1"]));
        assert_eq!(
            count(&state(&[&a80, &a81, &b90_moved])),
            (2, 2),
            "10.0.0.3 is gone, 10.0.0.1 still listed"
        );
        assert_eq!(count(&state(&[&a81])), (1, 1));
        assert_eq!(count(&DesiredState::new()), (0, 0));
    }
}
