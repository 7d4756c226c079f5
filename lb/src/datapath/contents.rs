//! The contents of the load balancer's maps as plain data: what the reconciler writes, what
//! `lbctl` reads back, and what the simulator runs on.

use std::collections::{BTreeMap, BTreeSet};

use ebpf::maps::{
    svc_flags2, LbAffinityMatchKey, LbBackend, LbKey, LbReverseNat, LbService, LbSrcRangeKey,
};

use super::codec::{protocol_of, scope_byte, scope_of, state_byte, state_of, ServiceFlags};
use crate::model::{
    BackendState, DesiredState, L3n4Addr, LbService as ModelService, Scope, ServiceType,
};

/// Every entry of the services, backends, reverse NAT and affinity-match maps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MapContents {
    /// `lb_services_v1`.
    pub services: BTreeMap<LbKey, LbService>,
    /// `lb_backends_v1`.
    pub backends: BTreeMap<u32, LbBackend>,
    /// `lb_reverse_nat_v1`.
    pub reverse_nat: BTreeMap<u16, LbReverseNat>,
    /// `lb_affinity_match_v1`: every active backend of every frontend with session affinity
    /// (the value is a reserved zero).
    pub affinity_match: BTreeMap<LbAffinityMatchKey, u8>,
    /// `lb_source_ranges_v1`: the client CIDRs of every LoadBalancer frontend with
    /// `loadBalancerSourceRanges` (the value is a reserved zero).
    pub source_ranges: BTreeMap<LbSrcRangeKey, u8>,
    /// `lb_maglev_v1` (the packet programs' map): with `loadBalancer.algorithm=maglev`, the
    /// Maglev table of every externally served frontend with active backends, by its
    /// rev_nat_index, `maglev.tableSize` backend ids each (see [`MapContents::add_maglev_tables`]).
    pub maglev: BTreeMap<u16, Vec<u32>>,
}

/// Ids are small integers; 0 means "none" in the datapath.
const FIRST_ID: u32 = 1;

/// Why desired state could not be laid out in maps.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// More frontends than service ids (u16).
    #[error("{count} frontends do not fit the {max} service ids")]
    TooManyFrontends {
        /// Frontends wanted.
        count: usize,
        /// Ids there are.
        max: usize,
    },
    /// A frontend has more backends than slots.
    #[error("{frontend} has {count} backends; at most {max} fit a service")]
    TooManyBackends {
        /// The frontend.
        frontend: String,
        /// Backends given.
        count: usize,
        /// The limit.
        max: usize,
    },
}

/// The datapath's key fields of a frontend: address, port, protocol, scope.
type FrontendId = (LbAddrKey, u16, u8, u8);
type LbAddrKey = [u8; 16];

impl MapContents {
    /// Lays out `desired`, keeping the ids `current` already uses for the same frontends and
    /// backends, so that an agent restart or an update changes no id that still means the same
    /// thing (and the reverse entries of open sockets stay valid).
    pub fn build(desired: &DesiredState, current: &MapContents) -> Result<Self, LayoutError> {
        let mut out = MapContents::default();
        let mut frontend_ids = current.frontend_ids();
        let mut backend_ids = current.backend_ids();
        let wanted: BTreeSet<FrontendId> = desired.services().map(frontend_id).collect();
        frontend_ids.retain(|k, _| wanted.contains(k));
        let mut next_frontend = Allocator::new(frontend_ids.values().map(|&i| u32::from(i)));
        // Backends no frontend places in a slot get no entry, and give up their ids.
        let wanted_backends: BTreeSet<L3n4Addr> = desired
            .services()
            .flat_map(|s| slot_order(s).into_iter().map(|b| b.addr))
            .collect();
        backend_ids.retain(|addr, _| wanted_backends.contains(addr));
        let mut next_backend = Allocator::new(backend_ids.values().copied());
        let twins: BTreeSet<(L3n4Addr, ServiceType)> = desired
            .services()
            .filter(|s| s.frontend.scope == Scope::Internal)
            .map(|s| (s.frontend.addr, s.frontend.kind))
            .collect();

        for svc in desired.services() {
            let id = frontend_id(svc);
            let rev_nat_index = match frontend_ids.get(&id) {
                Some(&index) => index,
                None => {
                    let index = next_frontend.next();
                    let index =
                        u16::try_from(index).map_err(|_| LayoutError::TooManyFrontends {
                            count: desired.len(),
                            max: usize::from(u16::MAX),
                        })?;
                    frontend_ids.insert(id, index);
                    index
                }
            };
            let two_scopes = svc.frontend.scope == Scope::External
                && twins.contains(&(svc.frontend.addr, svc.frontend.kind));
            let mut backend_id = |b: &crate::model::Backend| {
                *backend_ids
                    .entry(b.addr)
                    .or_insert_with(|| next_backend.next())
            };
            lay_out_frontend(svc, rev_nat_index, two_scopes, &mut backend_id, &mut out)?;
        }
        out.compact();
        Ok(out)
    }

    /// Rebuilds the services and backends maps with full nodes. Filled in key order, as a
    /// layout fills them, a `BTreeMap` splits each full node in the middle and leaves it half
    /// empty; built from a sorted sequence it fills every node. The reconciler keeps the
    /// layout as what the maps hold: at 10 000 services x 10 backends, 13 MiB becomes 7.
    fn compact(&mut self) {
        self.services = std::mem::take(&mut self.services).into_iter().collect();
        self.backends = std::mem::take(&mut self.backends).into_iter().collect();
    }

    /// Service ids by frontend, from the slot-0 entries.
    fn frontend_ids(&self) -> BTreeMap<FrontendId, u16> {
        self.services
            .iter()
            .filter(|(k, _)| k.backend_slot == 0)
            .map(|(k, v)| {
                (
                    (k.address.bytes, k.dport, k.proto, k.scope),
                    v.rev_nat_index,
                )
            })
            .collect()
    }

    /// Backend ids by address.
    fn backend_ids(&self) -> BTreeMap<L3n4Addr, u32> {
        self.backends
            .iter()
            .filter_map(|(id, b)| Some((backend_addr(b)?, *id)))
            .collect()
    }

    /// The frontends as `lbctl service list` shows them: id, frontend, type, and the backends
    /// in slot order with their ids and states. A backend's state is the frontend's own: its
    /// slot says it, not the shared backend entry, which holds one state for every frontend
    /// placing that address (see `slot_state`).
    pub fn frontends(&self) -> Vec<ListedFrontend> {
        let mut out: Vec<ListedFrontend> = self
            .services
            .iter()
            .filter(|(k, _)| k.backend_slot == 0)
            .filter_map(|(k, v)| {
                let protocol = protocol_of(k.proto)?;
                let addr = L3n4Addr::new(k.address.into(), k.port(), protocol);
                let backends = (1..=v.count + v.qcount)
                    .filter_map(|slot| {
                        let slot_key = LbKey {
                            backend_slot: slot,
                            ..*k
                        };
                        let id = self.services.get(&slot_key)?.backend_id;
                        let b = self.backends.get(&id)?;
                        Some((id, backend_addr(b)?, slot_state(slot, v.count)))
                    })
                    .collect();
                Some(ListedFrontend {
                    id: v.rev_nat_index,
                    frontend: crate::model::Frontend {
                        addr,
                        kind: ServiceFlags(v.flags).kind(),
                        scope: scope_of(k.scope)?,
                    },
                    backends,
                })
            })
            .collect();
        out.sort_by_key(|f| f.id);
        out
    }
}

/// The state of the backend in `slot` (1-based) of a frontend whose head counts `count` active
/// slots, as that frontend treats it: slots 1..=count take new connections, the `qcount` after
/// them only carry the flows they already have. The backend entry's own state cannot say this:
/// one address shared by two frontends has one entry, holding the state that serves most
/// (active where any frontend has it active), while another frontend may have it terminating.
fn slot_state(slot: u16, count: u16) -> BackendState {
    if slot <= count {
        BackendState::Active
    } else {
        BackendState::Terminating
    }
}

/// A service's backends in slot order: the active ones, then the terminating ones (kept for
/// their flows only; backends in other states are not placed).
pub(crate) fn slot_order(svc: &ModelService) -> Vec<&crate::model::Backend> {
    let mut ordered: Vec<&crate::model::Backend> = svc
        .backends
        .iter()
        .filter(|b| b.state.takes_new_connections())
        .collect();
    ordered.extend(
        svc.backends
            .iter()
            .filter(|b| b.state == BackendState::Terminating),
    );
    ordered
}

/// Lays out one frontend into `out`: its head (slot 0) and slots, its backends, reverse NAT,
/// affinity matches and source ranges, under frontend id `rev_nat_index` and with each
/// backend's id from `backend_id` (called in slot order). `two_scopes`: an internal twin with
/// the same address and type exists. A backend another frontend placed already keeps the
/// state that serves most (active before terminating), whatever order the frontends come in.
pub(crate) fn lay_out_frontend(
    svc: &ModelService,
    rev_nat_index: u16,
    two_scopes: bool,
    backend_id: &mut dyn FnMut(&crate::model::Backend) -> u32,
    out: &mut MapContents,
) -> Result<(), LayoutError> {
    let ordered = slot_order(svc);
    let active = svc
        .backends
        .iter()
        .filter(|b| b.state.takes_new_connections())
        .count();
    let too_many = || LayoutError::TooManyBackends {
        frontend: svc.frontend.to_string(),
        count: ordered.len(),
        max: usize::from(u16::MAX) - 1,
    };
    let count = u16::try_from(active).map_err(|_| too_many())?;
    let qcount = u16::try_from(ordered.len() - active).map_err(|_| too_many())?;
    if ordered.len() >= usize::from(u16::MAX) {
        return Err(too_many());
    }
    let scope = scope_byte(svc.frontend.scope);
    let key = |slot| {
        LbKey::new(
            svc.frontend.addr.ip,
            svc.frontend.addr.port,
            svc.frontend.addr.protocol.number(),
            scope,
            slot,
        )
    };
    let affinity_timeout = svc.policies.session_affinity_timeout_secs.unwrap_or(0);
    for (slot, b) in (1..).zip(&ordered) {
        let id = backend_id(b);
        if affinity_timeout > 0 && slot <= count {
            out.affinity_match
                .insert(LbAffinityMatchKey::new(id, rev_nat_index), 0);
        }
        let entry = LbBackend::new(
            b.addr.ip,
            b.addr.port,
            b.addr.protocol.number(),
            state_byte(b.state),
        );
        match out.backends.get(&id).and_then(|e| state_of(e.state)) {
            Some(placed) if placed <= b.state => {}
            _ => {
                out.backends.insert(id, entry);
            }
        }
        out.services.insert(
            key(slot),
            LbService {
                backend_id: id,
                rev_nat_index,
                ..LbService::default()
            },
        );
    }
    let ServiceFlags(flags) = ServiceFlags::new(
        svc.frontend.kind,
        two_scopes,
        affinity_timeout > 0,
        svc.no_local_backends,
    );
    // loadBalancerSourceRanges restrict external traffic to a LoadBalancer frontend.
    let ranges = if svc.frontend.kind == ServiceType::LoadBalancer
        && svc.frontend.scope == Scope::External
    {
        svc.policies.source_ranges.as_slice()
    } else {
        &[]
    };
    for cidr in ranges {
        out.source_ranges.insert(
            LbSrcRangeKey::new(rev_nat_index, cidr.addr(), cidr.prefix_len()),
            0,
        );
    }
    out.services.insert(
        key(0),
        LbService {
            count,
            qcount,
            rev_nat_index,
            flags,
            flags2: if ranges.is_empty() {
                0
            } else {
                svc_flags2::SOURCE_RANGES
            },
            affinity_timeout,
            ..LbService::default()
        },
    );
    out.reverse_nat.insert(
        rev_nat_index,
        LbReverseNat::new(svc.frontend.addr.ip, svc.frontend.addr.port),
    );
    Ok(())
}

/// A frontend read back from the maps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListedFrontend {
    /// Its service id (rev_nat_index).
    pub id: u16,
    /// The frontend.
    pub frontend: crate::model::Frontend,
    /// `(backend id, address, state)` in slot order, the state as this frontend's slots place
    /// the backend (active or terminating).
    pub backends: Vec<(u32, L3n4Addr, BackendState)>,
}

/// Hands out the smallest ids not in use.
struct Allocator {
    used: BTreeSet<u32>,
    next: u32,
}

impl Allocator {
    fn new(used: impl IntoIterator<Item = u32>) -> Self {
        Allocator {
            used: used.into_iter().collect(),
            next: FIRST_ID,
        }
    }

    fn next(&mut self) -> u32 {
        while self.used.contains(&self.next) {
            self.next += 1;
        }
        self.used.insert(self.next);
        self.next
    }
}

/// The key of `svc`'s head entry (slot 0) in `lb_services_v1`.
pub(crate) fn head_key(svc: &ModelService) -> LbKey {
    LbKey::new(
        svc.frontend.addr.ip,
        svc.frontend.addr.port,
        svc.frontend.addr.protocol.number(),
        scope_byte(svc.frontend.scope),
        0,
    )
}

fn frontend_id(svc: &ModelService) -> FrontendId {
    let key = LbKey::new(
        svc.frontend.addr.ip,
        svc.frontend.addr.port,
        svc.frontend.addr.protocol.number(),
        scope_byte(svc.frontend.scope),
        0,
    );
    (key.address.bytes, key.dport, key.proto, key.scope)
}

/// The address of a backend entry (`None` for a protocol this build does not know).
pub(crate) fn backend_addr(b: &LbBackend) -> Option<L3n4Addr> {
    Some(L3n4Addr::new(
        b.address.into(),
        u16::from_be(b.port),
        protocol_of(b.proto)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Backend, Frontend, ServiceName, ServicePolicies};
    use ebpf::maps::{scope, svc_flags};

    fn backend(addr: &str, state: BackendState) -> Backend {
        Backend {
            state,
            ..Backend::active(addr.parse().unwrap())
        }
    }

    fn service(
        frontend: &str,
        kind: ServiceType,
        scope: Scope,
        backends: Vec<Backend>,
    ) -> ModelService {
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
            backends,
            policies: ServicePolicies::default(),
        }
    }

    fn state(services: Vec<ModelService>) -> DesiredState {
        let mut s = DesiredState::new();
        for svc in services {
            s.insert(svc).unwrap();
        }
        s
    }

    #[test]
    fn terminating_backends_follow_the_active_ones_and_are_not_counted() {
        let desired = state(vec![service(
            "10.96.0.1:80",
            ServiceType::ClusterIP,
            Scope::External,
            vec![
                backend("10.0.0.2:80", BackendState::Terminating),
                backend("10.0.0.1:80", BackendState::Active),
            ],
        )]);
        let c = MapContents::build(&desired, &MapContents::default()).unwrap();
        let listed = c.frontends();
        assert_eq!(listed.len(), 1);
        let head = c
            .services
            .iter()
            .find(|(k, _)| k.backend_slot == 0)
            .unwrap()
            .1;
        assert_eq!((head.count, head.qcount), (1, 1));
        let states: Vec<BackendState> = listed[0].backends.iter().map(|b| b.2).collect();
        assert_eq!(states, [BackendState::Active, BackendState::Terminating]);
    }

    #[test]
    fn twins_and_affinity_set_their_flags() {
        let mut ext = service(
            "0.0.0.0:30080",
            ServiceType::NodePort,
            Scope::External,
            vec![],
        );
        ext.policies.session_affinity_timeout_secs = Some(600);
        let int = service(
            "0.0.0.0:30080",
            ServiceType::NodePort,
            Scope::Internal,
            vec![],
        );
        let c = MapContents::build(&state(vec![ext, int]), &MapContents::default()).unwrap();
        let heads: Vec<(u8, &LbService)> = c
            .services
            .iter()
            .filter(|(k, _)| k.backend_slot == 0)
            .map(|(k, v)| (k.scope, v))
            .collect();
        let (_, e) = heads.iter().find(|(s, _)| *s == scope::EXT).unwrap();
        assert_eq!(
            e.flags,
            svc_flags::NODE_PORT | svc_flags::TWO_SCOPES | svc_flags::AFFINITY
        );
        assert_eq!(e.affinity_timeout, 600);
        let (_, i) = heads.iter().find(|(s, _)| *s == scope::INT).unwrap();
        assert_eq!(
            i.flags,
            svc_flags::NODE_PORT,
            "the twin itself is looked up, it does not redirect"
        );
    }

    #[test]
    fn source_ranges_restrict_loadbalancer_frontends_only() {
        let ranges: Vec<ipnet::IpNet> = vec!["192.0.2.0/24".parse().unwrap()];
        let with = |addr: &str, kind, scope| {
            let mut s = service(
                addr,
                kind,
                scope,
                vec![backend("10.0.0.1:80", BackendState::Active)],
            );
            s.policies.source_ranges = ranges.clone();
            s
        };
        let lb = with("10.0.10.1:80", ServiceType::LoadBalancer, Scope::External);
        let lb_twin = with("10.0.10.1:80", ServiceType::LoadBalancer, Scope::Internal);
        let node_port = with("0.0.0.0:30080", ServiceType::NodePort, Scope::External);
        let c = MapContents::build(
            &state(vec![lb, lb_twin, node_port]),
            &MapContents::default(),
        )
        .unwrap();
        let flagged: Vec<(u16, u8)> = c
            .services
            .iter()
            .filter(|(k, v)| k.backend_slot == 0 && v.flags2 & svc_flags2::SOURCE_RANGES != 0)
            .map(|(k, _)| (k.port(), k.scope))
            .collect();
        // The external LoadBalancer frontend only: in-cluster traffic (the twin) and NodePorts
        // are not restricted.
        assert_eq!(flagged, [(80, scope::EXT)]);
        let lb_id = c
            .services
            .iter()
            .find(|(k, _)| k.backend_slot == 0 && k.scope == scope::EXT && k.port() == 80)
            .map(|(_, v)| v.rev_nat_index)
            .unwrap();
        assert_eq!(
            c.source_ranges.keys().copied().collect::<Vec<_>>(),
            [LbSrcRangeKey::new(lb_id, "192.0.2.0".parse().unwrap(), 24)]
        );
    }

    #[test]
    fn affinity_match_holds_the_active_backends_of_frontends_with_affinity_only() {
        let mut sticky = service(
            "10.96.0.1:80",
            ServiceType::ClusterIP,
            Scope::External,
            vec![
                backend("10.0.0.1:80", BackendState::Active),
                backend("10.0.0.2:80", BackendState::Terminating),
            ],
        );
        sticky.policies.session_affinity_timeout_secs = Some(10);
        let plain = service(
            "10.96.0.2:80",
            ServiceType::ClusterIP,
            Scope::External,
            vec![backend("10.0.0.3:80", BackendState::Active)],
        );
        let c = MapContents::build(&state(vec![sticky, plain]), &MapContents::default()).unwrap();
        let listed = c.frontends();
        let (id, active) = (listed[0].id, listed[0].backends[0].0);
        assert_eq!(
            c.affinity_match.keys().copied().collect::<Vec<_>>(),
            [LbAffinityMatchKey::new(active, id)]
        );
    }

    #[test]
    fn ids_are_kept_for_what_stays_and_reused_only_when_free() {
        let a = service(
            "10.96.0.1:80",
            ServiceType::ClusterIP,
            Scope::External,
            vec![backend("10.0.0.1:80", BackendState::Active)],
        );
        let b = service(
            "10.96.0.2:80",
            ServiceType::ClusterIP,
            Scope::External,
            vec![backend("10.0.0.2:80", BackendState::Active)],
        );
        let first = MapContents::build(&state(vec![a.clone(), b.clone()]), &MapContents::default())
            .unwrap();
        // Without `a`, b keeps id 2 and backend 2; a new service takes the freed id 1.
        let c = service(
            "10.96.0.3:80",
            ServiceType::ClusterIP,
            Scope::External,
            vec![backend("10.0.0.3:80", BackendState::Active)],
        );
        let second = MapContents::build(&state(vec![c, b]), &first).unwrap();
        let ids: Vec<(u16, String)> = second
            .frontends()
            .iter()
            .map(|f| (f.id, f.frontend.to_string()))
            .collect();
        assert_eq!(
            ids,
            [
                (1, "10.96.0.3:80".to_owned()),
                (2, "10.96.0.2:80".to_owned())
            ]
        );
        let b_backend = &second.frontends()[1].backends[0];
        assert_eq!(b_backend.0, 2, "the backend id of 10.0.0.2 is kept");
    }

    #[test]
    fn what_is_listed_is_what_was_laid_out() {
        let desired = state(vec![
            service(
                "[fd00::1]:53",
                ServiceType::ClusterIP,
                Scope::External,
                vec![backend("[fd00::2]:5353", BackendState::Active)],
            ),
            service(
                "192.0.2.1:443",
                ServiceType::LoadBalancer,
                Scope::External,
                vec![backend("10.0.0.1:8443", BackendState::Active)],
            ),
            service(
                "203.0.113.1:80",
                ServiceType::ExternalIPs,
                Scope::External,
                vec![],
            ),
            service(
                "0.0.0.0:8080",
                ServiceType::HostPort,
                Scope::External,
                vec![backend("10.0.0.9:80", BackendState::Active)],
            ),
        ]);
        let c = MapContents::build(&desired, &MapContents::default()).unwrap();
        let listed: Vec<(Frontend, Vec<L3n4Addr>)> = c
            .frontends()
            .into_iter()
            .map(|f| (f.frontend, f.backends.iter().map(|b| b.1).collect()))
            .collect();
        let wanted: Vec<(Frontend, Vec<L3n4Addr>)> = desired
            .services()
            .map(|s| (s.frontend, s.backends.iter().map(|b| b.addr).collect()))
            .collect();
        assert_eq!(listed, wanted);
    }
}
