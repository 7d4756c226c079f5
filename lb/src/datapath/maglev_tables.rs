//! The Maglev tables the packet programs read (`lb_maglev_v1`), laid out from the desired state
//! over the ids [`MapContents::build`] gave.
//!
//! The documents apply Maglev to external (north-south) traffic only: a table exists for every
//! frontend the packet programs serve to the outside (NodePort, LoadBalancer, externalIPs and
//! HostPort frontends, ClusterIPs with `bpf.lbExternalClusterIP`) in its external scope, with
//! active backends. It is [`crate::maglev::build_table`] over those backends' addresses and
//! weights, so every node with the same backends builds the same table of addresses; the
//! entries are this node's backend ids for them. Keyed by the frontend's rev_nat_index, which
//! the service entry the programs find carries and which is unique per frontend address, port,
//! protocol and scope.

use std::collections::BTreeMap;

use ebpf::maps::LbKey;

use super::codec::scope_byte;
use super::MapContents;
use crate::maglev::{build_table, HashSeed, MaglevBackend};
use crate::model::{DesiredState, LbService as ModelService, Scope, ServiceType};

/// What the tables are built with: the agent's `maglev.*` options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaglevSettings {
    /// `maglev.tableSize` (M): every table's length.
    pub table_size: u32,
    /// `maglev.hashSeed`, the same on every node.
    pub seed: HashSeed,
    /// `bpf.lbExternalClusterIP`: ClusterIP frontends are served to the outside, with tables.
    pub external_clusterip: bool,
}

impl MapContents {
    /// Sets [`MapContents::maglev`]: the table of every externally served frontend of
    /// `desired` that has active backends in these contents. A frontend whose table cannot be
    /// built (more backends than entries) gets none, with a warning: the programs fall back to
    /// the flow hash over its slots.
    pub fn add_maglev_tables(&mut self, desired: &DesiredState, settings: &MaglevSettings) {
        let mut tables = BTreeMap::new();
        for svc in desired.services().filter(|s| served_outside(s, settings)) {
            if let Some((index, table)) = self.maglev_table(svc, settings) {
                tables.insert(index, table);
            }
        }
        self.maglev = tables;
    }

    /// `(rev_nat_index, table)` of one frontend, `None` when it has no active backend.
    fn maglev_table(
        &self,
        svc: &ModelService,
        settings: &MaglevSettings,
    ) -> Option<(u16, Vec<u32>)> {
        let key = |slot| {
            LbKey::new(
                svc.frontend.addr.ip,
                svc.frontend.addr.port,
                svc.frontend.addr.protocol.number(),
                scope_byte(svc.frontend.scope),
                slot,
            )
        };
        let head = self.services.get(&key(0))?;
        if head.count == 0 {
            return None;
        }
        // The active backends, in the slot order `MapContents::build` laid them out in.
        let active = svc
            .backends
            .iter()
            .filter(|b| b.state.takes_new_connections());
        let mut ids = Vec::new();
        let mut backends = Vec::new();
        for (slot, b) in (1..=head.count).zip(active) {
            ids.push(self.services.get(&key(slot))?.backend_id);
            backends.push(MaglevBackend::new(b.addr, b.weight));
        }
        match build_table(settings.table_size, &settings.seed, &backends) {
            Ok(table) if !table.is_empty() => Some((
                head.rev_nat_index,
                table.iter().map(|&i| ids[i as usize]).collect(),
            )),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(frontend = %svc.frontend, "no Maglev table: {e}");
                None
            }
        }
    }
}

/// Whether the packet programs serve `svc` to traffic from outside the node
/// (`lb_serves_external`), in the scope they look up (the external one).
fn served_outside(svc: &ModelService, settings: &MaglevSettings) -> bool {
    svc.frontend.scope == Scope::External
        && match svc.frontend.kind {
            ServiceType::ClusterIP => settings.external_clusterip,
            _ => true,
        }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Backend, BackendState, Frontend, ServiceName, ServicePolicies};

    fn service(frontend: &str, kind: ServiceType, scope: Scope, backends: &[&str]) -> ModelService {
        ModelService {
            frontend: Frontend {
                addr: frontend.parse().unwrap(),
                kind,
                scope,
            },
            name: ServiceName {
                namespace: "ns".into(),
                name: "s".into(),
            },
            port_name: String::new(),
            no_local_backends: false,
            backends: backends
                .iter()
                .map(|b| Backend::active(b.parse().unwrap()))
                .collect(),
            policies: ServicePolicies::default(),
        }
    }

    fn settings() -> MaglevSettings {
        MaglevSettings {
            table_size: 251,
            seed: HashSeed::default(),
            external_clusterip: false,
        }
    }

    fn contents(services: Vec<ModelService>, settings: &MaglevSettings) -> MapContents {
        let mut desired = DesiredState::new();
        for s in services {
            desired.insert(s).unwrap();
        }
        let mut c = MapContents::build(&desired, &MapContents::default()).unwrap();
        c.add_maglev_tables(&desired, settings);
        c
    }

    /// Backend ids by address, to compare tables across nodes whose ids differ.
    fn addresses(c: &MapContents, table: &[u32]) -> Vec<std::net::IpAddr> {
        table
            .iter()
            .map(|id| std::net::IpAddr::from(c.backends[id].address))
            .collect()
    }

    #[test]
    fn externally_served_frontends_with_backends_get_a_table_of_m_backend_ids() {
        let c = contents(
            vec![
                service(
                    "0.0.0.0:30080",
                    ServiceType::NodePort,
                    Scope::External,
                    &["10.0.1.1:80", "10.0.2.1:80"],
                ),
                service(
                    "0.0.0.0:30080",
                    ServiceType::NodePort,
                    Scope::Internal,
                    &["10.0.1.1:80", "10.0.2.1:80"],
                ),
                service(
                    "10.96.0.1:80",
                    ServiceType::ClusterIP,
                    Scope::External,
                    &["10.0.1.1:80"],
                ),
                service("0.0.0.0:30081", ServiceType::NodePort, Scope::External, &[]),
            ],
            &settings(),
        );
        let nodeport = c
            .frontends()
            .into_iter()
            .find(|f| f.frontend.addr.port == 30080 && f.frontend.scope == Scope::External)
            .unwrap();
        assert_eq!(c.maglev.keys().copied().collect::<Vec<_>>(), [nodeport.id]);
        let table = &c.maglev[&nodeport.id];
        assert_eq!(table.len(), 251);
        let ids: std::collections::BTreeSet<u32> = table.iter().copied().collect();
        let backend_ids: std::collections::BTreeSet<u32> =
            nodeport.backends.iter().map(|b| b.0).collect();
        assert_eq!(ids, backend_ids, "every active backend, nothing else");
    }

    #[test]
    fn clusterips_get_tables_only_when_served_from_outside() {
        let mut s = settings();
        s.external_clusterip = true;
        let c = contents(
            vec![service(
                "10.96.0.1:80",
                ServiceType::ClusterIP,
                Scope::External,
                &["10.0.1.1:80"],
            )],
            &s,
        );
        assert_eq!(c.maglev.len(), 1);
    }

    #[test]
    fn nodes_with_other_ids_build_tables_of_the_same_addresses() {
        let svc = |backends: &[&str]| {
            service(
                "0.0.0.0:30080",
                ServiceType::NodePort,
                Scope::External,
                backends,
            )
        };
        // Node A learned the backends in one order, node B (with an unrelated service first,
        // so other ids) in the other.
        let a = contents(
            vec![svc(&["10.0.1.1:80", "10.0.2.1:80", "10.0.3.1:80"])],
            &settings(),
        );
        let b = contents(
            vec![
                service(
                    "0.0.0.0:30090",
                    ServiceType::NodePort,
                    Scope::External,
                    &["10.0.9.9:80"],
                ),
                svc(&["10.0.3.1:80", "10.0.1.1:80", "10.0.2.1:80"]),
            ],
            &settings(),
        );
        let table_of = |c: &MapContents| {
            let id = c
                .frontends()
                .into_iter()
                .find(|f| f.frontend.addr.port == 30080)
                .unwrap()
                .id;
            addresses(c, &c.maglev[&id])
        };
        assert_ne!(a.backends, b.backends, "the ids differ");
        assert_eq!(table_of(&a), table_of(&b));
    }

    #[test]
    fn terminating_backends_take_no_entries() {
        let mut svc = service(
            "0.0.0.0:30080",
            ServiceType::NodePort,
            Scope::External,
            &["10.0.1.1:80", "10.0.2.1:80"],
        );
        svc.backends[0].state = BackendState::Terminating;
        let c = contents(vec![svc], &settings());
        let table = c.maglev.values().next().unwrap();
        let ids: std::collections::BTreeSet<std::net::IpAddr> =
            addresses(&c, table).into_iter().collect();
        assert_eq!(ids.len(), 1);
        assert!(ids.contains(&"10.0.2.1".parse().unwrap()));
    }
}
