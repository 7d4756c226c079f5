//! A pass that costs what changed: [`Programmed`] remembers the desired state the maps were
//! last made to hold, with the ids it handed out and who uses each backend, so the next pass
//! lays out only the frontends that differ (by pointer first: translation hands unchanged
//! frontends on shared) and turns them into a [`MapDelta`] of their own entries.
//!
//! The result is the one the whole layout ([`MapContents::build`] over what the maps hold)
//! gives: the same ids kept, the smallest free ids handed out in the desired state's order, a
//! backend shared by several frontends in the state that serves most. Whatever this cannot do
//! exactly (the maps too full for the change, a layout error, a state it did not lay out
//! itself) it declines, and the reconciler lays everything out as before.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use ebpf::maps::LbBackend;

use crate::datapath::codec::state_byte;
use crate::datapath::{
    head_key, lay_out_frontend, slot_order, Changes, MapContents, MapDelta, RemovedBackends,
};
use crate::model::{
    BackendState, DesiredState, Frontend, L3n4Addr, L4Protocol, LbService, Scope, ServiceName,
};

/// One backend address: its id, and how many frontends place it in a slot as active and as
/// terminating (the states that are placed; see [`slot_order`]).
#[derive(Clone, Debug, Default)]
struct BackendUse {
    /// Its id; `None` only while a pass is handing out new ones.
    id: Option<u32>,
    /// Frontends placing it as active, and as terminating.
    users: [u32; 2],
}

impl BackendUse {
    fn slot(state: BackendState) -> usize {
        usize::from(!state.takes_new_connections())
    }

    /// The state its entry carries: the one that serves most among its users.
    fn state(&self) -> BackendState {
        if self.users[0] > 0 {
            BackendState::Active
        } else {
            BackendState::Terminating
        }
    }

    fn unused(&self) -> bool {
        self.users == [0, 0]
    }
}

/// The smallest free ids, as the whole layout's allocator hands them out.
#[derive(Clone, Debug, Default)]
struct FreeIds {
    /// Free ids below `next`.
    free: BTreeSet<u32>,
    /// One above the highest id in use.
    next: u32,
}

impl FreeIds {
    fn of(used: impl IntoIterator<Item = u32>) -> Self {
        let used: BTreeSet<u32> = used.into_iter().collect();
        let next = used.last().map_or(1, |&max| max + 1);
        FreeIds {
            free: (1..next).filter(|id| !used.contains(id)).collect(),
            next,
        }
    }

    fn take(&mut self) -> u32 {
        match self.free.pop_first() {
            Some(id) => id,
            None => {
                self.next += 1;
                self.next - 1
            }
        }
    }

    fn give_back(&mut self, id: u32) {
        self.free.insert(id);
    }
}

/// What one incremental pass changes.
#[derive(Debug, Default)]
pub(super) struct Step {
    /// The entries to write and delete.
    pub delta: MapDelta,
    /// Frontend ids whose frontend is gone.
    pub unnamed: Vec<u16>,
    /// Frontend ids (new or kept) with the service now behind them.
    pub named: Vec<(u16, ServiceName)>,
    /// The UDP backends no frontend uses any more.
    pub removed_udp: RemovedBackends,
}

/// The desired state the maps were last made to hold, with its ids and backend users.
#[derive(Clone, Debug)]
pub(super) struct Programmed {
    desired: DesiredState,
    backends: HashMap<L3n4Addr, BackendUse>,
    frontend_ids: FreeIds,
    backend_ids: FreeIds,
}

impl Programmed {
    /// After a whole layout: `held` is exactly `desired` laid out (nothing left out for
    /// room). `None` when `held` does not name an id for something `desired` places.
    pub fn new(desired: &DesiredState, held: &MapContents) -> Option<Self> {
        let ids: HashMap<L3n4Addr, u32> = held
            .backends
            .iter()
            .filter_map(|(id, b)| Some((crate::datapath::backend_addr(b)?, *id)))
            .collect();
        let mut backends: HashMap<L3n4Addr, BackendUse> = HashMap::new();
        for svc in desired.services() {
            for b in slot_order(svc) {
                let used = backends.entry(b.addr).or_default();
                used.users[BackendUse::slot(b.state)] += 1;
                used.id = Some(*ids.get(&b.addr)?);
            }
        }
        Some(Programmed {
            desired: desired.clone(),
            backends,
            frontend_ids: FreeIds::of(
                held.services
                    .iter()
                    .filter(|(k, _)| k.backend_slot == 0)
                    .map(|(_, v)| u32::from(v.rev_nat_index)),
            ),
            backend_ids: FreeIds::of(held.backends.keys().copied()),
        })
    }

    /// What makes maps holding `held` (this state laid out) hold `desired`, within `capacity`
    /// entries per map; `None` when the whole layout must do it. Either way `self` is spent:
    /// after `None` the caller lays everything out and starts a new one.
    pub fn step(
        &mut self,
        desired: &DesiredState,
        held: &MapContents,
        capacity: usize,
    ) -> Option<Step> {
        let (changed, gone) = self.changes(desired);
        if changed.is_empty() && gone.is_empty() {
            // Equal, if not the same allocations: kept as it is, the next pass compares by
            // pointer with what the translation keeps handing on.
            return Some(Step::default());
        }
        // What goes: the entries of the old version of every changed or removed frontend.
        let mut old = MapContents::default();
        let mut step = Step::default();
        let mut touched: BTreeSet<L3n4Addr> = BTreeSet::new();
        let olds = changed
            .iter()
            .filter_map(|&i| {
                let frontend = desired.shared_services().nth(i)?.frontend;
                self.desired.get_shared(&frontend)
            })
            .chain(&gone)
            .cloned()
            .collect::<Vec<Arc<LbService>>>();
        for svc in &olds {
            let id = held.services.get(&head_key(svc))?.rev_nat_index;
            let backends = &self.backends;
            let mut id_of = |b: &crate::model::Backend| -> u32 {
                backends.get(&b.addr).and_then(|u| u.id).unwrap_or(0)
            };
            lay_out_frontend(svc, id, false, &mut id_of, &mut old).ok()?;
            for b in slot_order(svc) {
                let used = self.backends.get_mut(&b.addr)?;
                let n = &mut used.users[BackendUse::slot(b.state)];
                *n = n.checked_sub(1)?;
                touched.insert(b.addr);
            }
        }
        for svc in &gone {
            let id = held.services.get(&head_key(svc))?.rev_nat_index;
            step.unnamed.push(id);
            self.frontend_ids.give_back(u32::from(id));
        }
        // What comes: users first, so a backend moving between frontends keeps its id.
        for &i in &changed {
            for b in slot_order(desired.shared_services().nth(i)?) {
                self.backends.entry(b.addr).or_default().users[BackendUse::slot(b.state)] += 1;
                touched.insert(b.addr);
            }
        }
        // Then what nothing uses any more, whose ids the new backends may take.
        let mut gone_backends: Vec<(u32, LbBackend)> = Vec::new();
        for addr in &touched {
            if let Some(used) = self.backends.get(addr).filter(|u| u.unused()) {
                let id = used.id?;
                gone_backends.push((id, *held.backends.get(&id)?));
                self.backend_ids.give_back(id);
                self.backends.remove(addr);
            }
        }
        // New ids, in the desired state's order, as the whole layout hands them out.
        let mut new = MapContents::default();
        for &i in &changed {
            let svc = desired.shared_services().nth(i)?.clone();
            let id = match held.services.get(&head_key(&svc)) {
                Some(head) => head.rev_nat_index,
                None => u16::try_from(self.frontend_ids.take()).ok()?,
            };
            for b in slot_order(&svc) {
                let used = self.backends.get_mut(&b.addr)?;
                if used.id.is_none() {
                    used.id = Some(self.backend_ids.take());
                }
            }
            let two_scopes = svc.frontend.scope == Scope::External
                && desired
                    .get(&Frontend {
                        scope: Scope::Internal,
                        ..svc.frontend
                    })
                    .is_some_and(|twin| twin.frontend.kind == svc.frontend.kind);
            let backends = &self.backends;
            let mut id_of = |b: &crate::model::Backend| -> u32 {
                backends.get(&b.addr).and_then(|u| u.id).unwrap_or(0)
            };
            lay_out_frontend(&svc, id, two_scopes, &mut id_of, &mut new).ok()?;
            step.named.push((id, svc.name.clone()));
        }
        step.delta = MapDelta {
            services: changes(&old.services, &new.services, &held.services),
            backends: BTreeMap::new(),
            reverse_nat: changes(&old.reverse_nat, &new.reverse_nat, &held.reverse_nat),
            affinity_match: changes(
                &old.affinity_match,
                &new.affinity_match,
                &held.affinity_match,
            ),
            source_ranges: changes(&old.source_ranges, &new.source_ranges, &held.source_ranges),
            maglev: None,
        };
        for (id, _) in &gone_backends {
            step.delta.backends.insert(*id, None);
        }
        for addr in &touched {
            let Some(used) = self.backends.get(addr) else {
                continue;
            };
            let id = used.id?;
            let entry = LbBackend::new(
                addr.ip,
                addr.port,
                addr.protocol.number(),
                state_byte(used.state()),
            );
            if held.backends.get(&id) != Some(&entry) {
                step.delta.backends.insert(id, Some(entry));
            }
        }
        if !fits(&step.delta, held, capacity) {
            return None;
        }
        step.removed_udp =
            RemovedBackends::of(gone_backends.iter().map(|(_, b)| b), L4Protocol::Udp);
        self.desired = desired.clone();
        Some(step)
    }

    /// Positions in `desired` of the frontends that are new or differ from the last state
    /// (and of the external frontends whose internal twin came, went or changed), and the
    /// last state's frontends that `desired` no longer has.
    fn changes(&self, desired: &DesiredState) -> (BTreeSet<usize>, Vec<Arc<LbService>>) {
        let last: Vec<&Arc<LbService>> = self.desired.shared_services().collect();
        // The same allocation at the same position is the same frontend unchanged: most of
        // them, when translation hands unchanged ones on. Only the others are looked up.
        let mut kept = vec![false; last.len()];
        let mut changed = BTreeSet::new();
        let mut twins: Vec<Frontend> = Vec::new();
        for (i, svc) in desired.shared_services().enumerate() {
            if last.get(i).is_some_and(|old| Arc::ptr_eq(old, svc)) {
                kept[i] = true;
                continue;
            }
            let old = self.desired.get_shared(&svc.frontend);
            if let Some(at) = self.desired.position(&svc.frontend) {
                kept[at] = true;
            }
            if old.is_some_and(|old| Arc::ptr_eq(old, svc) || old == svc) {
                continue;
            }
            changed.insert(i);
            if svc.frontend.scope == Scope::Internal {
                twins.push(svc.frontend);
            }
            if let Some(old) = old.filter(|old| old.frontend.scope == Scope::Internal) {
                twins.push(old.frontend);
            }
        }
        let gone: Vec<Arc<LbService>> = last
            .iter()
            .zip(&kept)
            .filter(|(_, &kept)| !kept)
            .map(|(old, _)| Arc::clone(old))
            .collect();
        twins.extend(
            gone.iter()
                .filter(|s| s.frontend.scope == Scope::Internal)
                .map(|s| s.frontend),
        );
        for twin in twins {
            let external = Frontend {
                scope: Scope::External,
                ..twin
            };
            changed.extend(desired.position(&external));
        }
        (changed, gone)
    }
}

/// Deletions of `old`'s keys and writes of `new`'s entries, leaving out what `held` already
/// has that way.
fn changes<K: Ord + Copy, V: PartialEq + Copy>(
    old: &BTreeMap<K, V>,
    new: &BTreeMap<K, V>,
    held: &BTreeMap<K, V>,
) -> Changes<K, V> {
    let mut out: Changes<K, V> = old.keys().map(|k| (*k, None)).collect();
    out.extend(new.iter().map(|(k, v)| (*k, Some(*v))));
    out.retain(|k, v| match v {
        Some(v) => held.get(k) != Some(v),
        None => held.contains_key(k),
    });
    out
}

/// Whether every map holds its entries and the delta's new ones at once (new entries are
/// written before old ones are deleted) within `capacity`.
fn fits(delta: &MapDelta, held: &MapContents, capacity: usize) -> bool {
    fn peak<K: Ord, V>(changes: &Changes<K, V>, held: &BTreeMap<K, V>) -> usize {
        held.len()
            + changes
                .iter()
                .filter(|(k, v)| v.is_some() && !held.contains_key(k))
                .count()
    }
    [
        peak(&delta.services, &held.services),
        peak(&delta.backends, &held.backends),
        peak(&delta.reverse_nat, &held.reverse_nat),
        peak(&delta.affinity_match, &held.affinity_match),
        peak(&delta.source_ranges, &held.source_ranges),
    ]
    .iter()
    .all(|&n| n <= capacity)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::net::SocketAddr;

    use proptest::prelude::*;

    use super::*;
    use crate::agent::udp_destroy::SweepScope;
    use crate::datapath::ApplyReport;
    use crate::model::{Backend, ServicePolicies, ServiceType};
    use crate::reconciler::{MemoryMaps, Reconciler, UdpSocketSweeper};

    /// Records the UDP backends each pass removed.
    #[derive(Default)]
    struct Removed(Vec<SocketAddr>);

    impl UdpSocketSweeper for Removed {
        fn sweep(
            &mut self,
            _: SweepScope,
            removed: &RemovedBackends,
            _: &HashSet<(u64, SocketAddr)>,
        ) -> Result<Vec<(u64, SocketAddr)>, String> {
            self.0.extend(removed.iter());
            Ok(Vec::new())
        }
    }

    /// One frontend drawn from a small space, so that frontends share backends, twins meet,
    /// ids are freed and taken again.
    fn service() -> impl Strategy<Value = LbService> {
        (
            (0u8..3, 0u16..2, any::<bool>(), any::<bool>(), 0usize..3),
            proptest::collection::vec((1u8..7, any::<bool>(), any::<bool>()), 0..5),
            (any::<bool>(), any::<bool>(), any::<bool>(), 0usize..3),
        )
            .prop_map(|(f, backends, p)| {
                let (host, port, udp, internal, kind) = f;
                let protocol = if udp { "udp" } else { "tcp" };
                let addr = |ip: String, port: u16| -> L3n4Addr {
                    format!("{ip}:{port}/{protocol}").parse().unwrap()
                };
                let kind = [
                    ServiceType::ClusterIP,
                    ServiceType::NodePort,
                    ServiceType::LoadBalancer,
                ][kind];
                LbService {
                    frontend: Frontend {
                        addr: addr(format!("10.96.0.{host}"), 80 + port),
                        kind,
                        scope: if internal {
                            Scope::Internal
                        } else {
                            Scope::External
                        },
                    },
                    name: ServiceName {
                        namespace: "default".into(),
                        name: ["a", "b", "c"][p.3].into(),
                    },
                    port_name: String::new(),
                    backends: backends
                        .into_iter()
                        .map(|(host, terminating, other_port)| Backend {
                            state: if terminating {
                                BackendState::Terminating
                            } else {
                                BackendState::Active
                            },
                            ..Backend::active(addr(
                                format!("10.0.0.{host}"),
                                8080 + u16::from(other_port),
                            ))
                        })
                        .collect(),
                    policies: ServicePolicies {
                        session_affinity_timeout_secs: p.0.then_some(10),
                        source_ranges: if p.1 {
                            vec!["192.0.2.0/24".parse().unwrap()]
                        } else {
                            Vec::new()
                        },
                        ..ServicePolicies::default()
                    },
                    no_local_backends: p.2,
                }
            })
    }

    fn state(services: Vec<LbService>) -> DesiredState {
        let mut state = DesiredState::new();
        for s in services {
            let _ = state.insert(s);
        }
        state
    }

    /// Two reconcilers over two sets of maps: one laying everything out at every pass, the
    /// other stepping from what it programmed.
    fn both_ways(states: &[DesiredState], capacity: usize) -> usize {
        let (mut whole, mut stepping) = (
            Reconciler::new(Some(SweepScope::AllNamespaces)),
            Reconciler::new(Some(SweepScope::AllNamespaces)),
        );
        let new_maps = || MemoryMaps {
            contents: MapContents::default(),
            capacity,
        };
        let (mut whole_maps, mut stepping_maps) = (new_maps(), new_maps());
        let mut steps = 0;
        for (pass, desired) in states.iter().enumerate() {
            let (mut whole_removed, mut stepping_removed) =
                (Removed::default(), Removed::default());
            whole.reread_maps();
            let a = whole
                .reconcile(desired, &[], &[], &mut whole_maps, &mut whole_removed)
                .unwrap();
            let b = stepping
                .reconcile(desired, &[], &[], &mut stepping_maps, &mut stepping_removed)
                .unwrap();
            steps += usize::from(stepping.stepped());
            assert_eq!(
                stepping_maps.contents, whole_maps.contents,
                "pass {pass}: the maps differ"
            );
            assert_eq!(a, b, "pass {pass}: the reports differ");
            assert_eq!(
                stepping.service_names(),
                whole.service_names(),
                "pass {pass}"
            );
            assert_eq!(
                stepping_removed.0, whole_removed.0,
                "pass {pass}: UDP removed"
            );
            assert_listing_is_each_frontends_own(desired, &stepping_maps.contents, pass);
        }
        steps
    }

    /// Every frontend the maps list shows its backends in slot order with the states its own
    /// service gives them, even where frontends share a backend in different states (the
    /// backend entry holds one state for all of them).
    fn assert_listing_is_each_frontends_own(
        desired: &DesiredState,
        maps: &MapContents,
        pass: usize,
    ) {
        for listed in maps.frontends() {
            let svc = desired
                .get(&listed.frontend)
                .unwrap_or_else(|| panic!("pass {pass}: {} listed, not desired", listed.frontend));
            let want: Vec<(L3n4Addr, BackendState)> =
                slot_order(svc).iter().map(|b| (b.addr, b.state)).collect();
            let got: Vec<(L3n4Addr, BackendState)> = listed
                .backends
                .iter()
                .map(|&(_, addr, state)| (addr, state))
                .collect();
            assert_eq!(
                got, want,
                "pass {pass}: the backends listed under {}",
                listed.frontend
            );
        }
    }

    /// A first state, then states that each differ from the one before by a few frontends
    /// added, replaced or removed (most frontends carry over, as in a cluster).
    fn evolving() -> impl Strategy<Value = Vec<DesiredState>> {
        (
            proptest::collection::vec(service(), 0..10),
            proptest::collection::vec(
                proptest::collection::vec((0usize..12, proptest::option::of(service())), 1..4),
                1..10,
            ),
        )
            .prop_map(|(first, edits)| {
                let mut services = first;
                let mut states = vec![state(services.clone())];
                for edit in edits {
                    for (at, with) in edit {
                        match with {
                            Some(s) if at >= services.len() => services.push(s),
                            Some(s) => services[at] = s,
                            None if at < services.len() => {
                                services.remove(at);
                            }
                            None => {}
                        }
                    }
                    states.push(state(services.clone()));
                }
                states
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        #[test]
        fn stepping_from_what_was_programmed_gives_the_whole_layout(states in evolving()) {
            let steps = both_ways(&states, 1 << 16);
            prop_assert_eq!(steps, states.len() - 1, "every pass after the first stepped");
        }

        #[test]
        fn with_maps_too_small_for_everything_both_leave_out_the_same(states in evolving()) {
            both_ways(&states, 12);
        }
    }

    #[test]
    fn a_single_change_is_stepped_and_touches_its_own_entries_only() {
        let services: Vec<LbService> = (0..50u8)
            .map(|i| LbService {
                frontend: Frontend::external(
                    format!("10.96.1.{i}:80/tcp").parse().unwrap(),
                    ServiceType::ClusterIP,
                ),
                name: ServiceName {
                    namespace: "default".into(),
                    name: format!("s{i}"),
                },
                port_name: String::new(),
                backends: (1..=3u8)
                    .map(|b| Backend::active(format!("10.1.{i}.{b}:8080/tcp").parse().unwrap()))
                    .collect(),
                policies: ServicePolicies::default(),
                no_local_backends: false,
            })
            .collect();
        let mut changed = services.clone();
        changed[7].backends.pop();
        let states = [state(services.clone()), state(changed), state(services)];
        assert_eq!(both_ways(&states, 1 << 16), 2, "both later passes stepped");
        let mut reconciler = Reconciler::new(None);
        let mut maps = MemoryMaps {
            contents: MapContents::default(),
            capacity: 1 << 16,
        };
        reconciler
            .reconcile(&states[0], &[], &[], &mut maps, &mut Removed::default())
            .unwrap();
        let report = reconciler
            .reconcile(&states[1], &[], &[], &mut maps, &mut Removed::default())
            .unwrap();
        // The head's count, the last slot and the backend nobody else uses.
        assert_eq!(
            report.maps,
            ApplyReport {
                written: 1,
                deleted: 2
            }
        );
    }
}
