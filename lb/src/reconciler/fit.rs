//! What to leave out when the desired services do not fit the maps (`bpf.lbMapMax` entries
//! each). A whole Kubernetes service is programmed or left out, never some of its frontends,
//! and the services the maps already hold go first, so a service added to a full node is the
//! one refused while everything that worked keeps working.
//!
//! The count is of the maps' contents while an update is applied: new entries are written
//! before old ones are deleted (so a lookup never misses), and both must fit at once. A service
//! refused because of entries about to be deleted fits on the next pass.

use std::collections::{BTreeMap, BTreeSet};

use ebpf::maps::{
    LB_AFFINITY_MATCH, LB_BACKENDS, LB_MAGLEV, LB_REVERSE_NAT, LB_SERVICES, LB_SOURCE_RANGES,
};

use crate::datapath::MapContents;
use crate::model::{DesiredState, ServiceName};

/// A service left out because a map had no room for its entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotProgrammed {
    /// The service.
    pub service: ServiceName,
    /// The first map that had no room.
    pub map: &'static str,
    /// That map's size (`bpf.lbMapMax`).
    pub capacity: usize,
}

impl std::fmt::Display for NotProgrammed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "service {} not programmed: map {} is full ({} entries, bpf.lbMapMax); the services \
             already programmed keep working; raise bpf.lbMapMax to program it",
            self.service, self.map, self.capacity
        )
    }
}

/// The keys one frontend (or a set of them) occupies, map by map.
#[derive(Default)]
struct Entries {
    services: BTreeSet<ebpf::maps::LbKey>,
    backends: BTreeSet<u32>,
    reverse_nat: BTreeSet<u16>,
    affinity_match: BTreeSet<ebpf::maps::LbAffinityMatchKey>,
    source_ranges: BTreeSet<ebpf::maps::LbSrcRangeKey>,
    maglev: BTreeSet<u16>,
}

impl Entries {
    /// Every key of `contents`.
    fn of(contents: &MapContents) -> Self {
        Entries {
            services: contents.services.keys().copied().collect(),
            backends: contents.backends.keys().copied().collect(),
            reverse_nat: contents.reverse_nat.keys().copied().collect(),
            affinity_match: contents.affinity_match.keys().copied().collect(),
            source_ranges: contents.source_ranges.keys().copied().collect(),
            maglev: contents.maglev.keys().copied().collect(),
        }
    }

    /// The first map in which adding `more` would pass `capacity`, or `None` (then `more` is
    /// added).
    fn add_if_room(&mut self, more: Entries, capacity: usize) -> Option<&'static str> {
        fn grown<T: Ord>(have: &BTreeSet<T>, more: &BTreeSet<T>) -> usize {
            have.len() + more.iter().filter(|k| !have.contains(k)).count()
        }
        let sizes = [
            (LB_SERVICES, grown(&self.services, &more.services)),
            (LB_BACKENDS, grown(&self.backends, &more.backends)),
            (LB_REVERSE_NAT, grown(&self.reverse_nat, &more.reverse_nat)),
            (
                LB_AFFINITY_MATCH,
                grown(&self.affinity_match, &more.affinity_match),
            ),
            (
                LB_SOURCE_RANGES,
                grown(&self.source_ranges, &more.source_ranges),
            ),
            (LB_MAGLEV, grown(&self.maglev, &more.maglev)),
        ];
        if let Some((map, _)) = sizes.iter().find(|(_, n)| *n > capacity) {
            return Some(map);
        }
        self.services.extend(more.services);
        self.backends.extend(more.backends);
        self.reverse_nat.extend(more.reverse_nat);
        self.affinity_match.extend(more.affinity_match);
        self.source_ranges.extend(more.source_ranges);
        self.maglev.extend(more.maglev);
        None
    }
}

/// `None` when `want` (laid out from `desired` over `current`) fits maps of `capacity` entries
/// alongside `current`; otherwise the part of `desired` that fits, and the services left out.
pub(super) fn fit(
    desired: &DesiredState,
    current: &MapContents,
    want: &MapContents,
    capacity: usize,
) -> Option<(DesiredState, Vec<NotProgrammed>)> {
    if fits_whole(current, want, capacity) {
        return None;
    }
    let mut occupied = Entries::of(current);
    let per_service = entries_by_service(desired, want);
    let programmed: BTreeSet<&ServiceName> = {
        let frontends: BTreeSet<_> = current
            .frontends()
            .into_iter()
            .map(|f| f.frontend)
            .collect();
        desired
            .services()
            .filter(|s| frontends.contains(&s.frontend))
            .map(|s| &s.name)
            .collect()
    };
    // Programmed services first, then the others, each group by name.
    let mut order: Vec<&ServiceName> = per_service.keys().copied().collect();
    order.sort_by_key(|name| (!programmed.contains(name), *name));
    let mut per_service = per_service;
    let mut left_out = Vec::new();
    for name in order {
        let entries = per_service.remove(name).unwrap_or_default();
        if let Some(map) = occupied.add_if_room(entries, capacity) {
            left_out.push(NotProgrammed {
                service: name.clone(),
                map,
                capacity,
            });
        }
    }
    let refused: BTreeSet<&ServiceName> = left_out.iter().map(|n| &n.service).collect();
    let mut fitting = DesiredState::new();
    for s in desired.services().filter(|s| !refused.contains(&s.name)) {
        // Frontends are unique in `desired`, so they are in `fitting`.
        let _ = fitting.insert(s.clone());
    }
    Some((fitting, left_out))
}

/// Whether every map holds `current`'s keys and `want`'s together within `capacity`: the
/// common case, counted without building the key sets the search for what to leave out needs
/// (220 000 keys at 10 000 services).
fn fits_whole(current: &MapContents, want: &MapContents, capacity: usize) -> bool {
    fn together<K: Ord, V, W>(have: &BTreeMap<K, V>, more: &BTreeMap<K, W>) -> usize {
        have.len() + more.keys().filter(|k| !have.contains_key(k)).count()
    }
    [
        together(&current.services, &want.services),
        together(&current.backends, &want.backends),
        together(&current.reverse_nat, &want.reverse_nat),
        together(&current.affinity_match, &want.affinity_match),
        together(&current.source_ranges, &want.source_ranges),
        together(&current.maglev, &want.maglev),
    ]
    .iter()
    .all(|&n| n <= capacity)
}

/// The keys each service's frontends take in `want`.
fn entries_by_service<'a>(
    desired: &'a DesiredState,
    want: &MapContents,
) -> BTreeMap<&'a ServiceName, Entries> {
    let names: BTreeMap<_, &ServiceName> =
        desired.services().map(|s| (s.frontend, &s.name)).collect();
    let mut out: BTreeMap<&ServiceName, Entries> = BTreeMap::new();
    let mut by_id: BTreeMap<u16, &ServiceName> = BTreeMap::new();
    for f in want.frontends() {
        let Some(&name) = names.get(&f.frontend) else {
            continue;
        };
        by_id.insert(f.id, name);
        let e = out.entry(name).or_default();
        e.reverse_nat.insert(f.id);
        e.backends.extend(f.backends.iter().map(|(id, _, _)| *id));
    }
    // A slot belongs to the frontend whose head entry (slot 0) has the same key otherwise.
    let heads: BTreeMap<ebpf::maps::LbKey, u16> = want
        .services
        .iter()
        .filter(|(k, _)| k.backend_slot == 0)
        .map(|(k, v)| (*k, v.rev_nat_index))
        .collect();
    for key in want.services.keys() {
        let head = ebpf::maps::LbKey {
            backend_slot: 0,
            ..*key
        };
        if let Some(name) = heads.get(&head).and_then(|id| by_id.get(id)) {
            out.entry(name).or_default().services.insert(*key);
        }
    }
    for key in want.affinity_match.keys() {
        if let Some(name) = by_id.get(&key.rev_nat_index) {
            out.entry(name).or_default().affinity_match.insert(*key);
        }
    }
    for key in want.source_ranges.keys() {
        if let Some(name) = by_id.get(&key.rev_nat_index) {
            out.entry(name).or_default().source_ranges.insert(*key);
        }
    }
    for id in want.maglev.keys() {
        if let Some(name) = by_id.get(id) {
            out.entry(name).or_default().maglev.insert(*id);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Backend, Frontend, LbService, Scope, ServicePolicies, ServiceType};

    /// Service `name`'s frontend at `frontend` (TCP) with active backends at `backends`.
    fn frontend(name: &str, frontend: &str, backends: &[&str]) -> LbService {
        LbService {
            frontend: Frontend {
                addr: frontend.parse().unwrap(),
                kind: ServiceType::ClusterIP,
                scope: Scope::External,
            },
            name: ServiceName {
                namespace: "ns".into(),
                name: name.into(),
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

    fn state(services: &[LbService]) -> DesiredState {
        let mut s = DesiredState::new();
        for svc in services {
            s.insert(svc.clone()).unwrap();
        }
        s
    }

    fn names(state: &DesiredState) -> Vec<String> {
        let mut out: Vec<String> = state.services().map(|s| s.frontend.to_string()).collect();
        out.dedup();
        out
    }

    /// `desired` laid out over `current` and fitted to `capacity`.
    fn fitted(
        desired: &DesiredState,
        current: &MapContents,
        capacity: usize,
    ) -> Option<(DesiredState, Vec<NotProgrammed>)> {
        let want = MapContents::build(desired, current).unwrap();
        fit(desired, current, &want, capacity)
    }

    #[test]
    fn what_fits_is_left_alone() {
        // Two frontends with one backend each: 4 service entries, 2 backends, 2 reverse NAT.
        let desired = state(&[
            frontend("a", "10.96.0.1:80", &["10.0.0.1:80"]),
            frontend("b", "10.96.0.2:80", &["10.0.0.2:80"]),
        ]);
        assert!(fitted(&desired, &MapContents::default(), 4).is_none());
    }

    #[test]
    fn a_new_service_is_refused_and_the_programmed_ones_stay() {
        let before = state(&[
            frontend("b", "10.96.0.2:80", &["10.0.0.2:80"]),
            frontend("c", "10.96.0.3:80", &["10.0.0.3:80"]),
        ]);
        let current = MapContents::build(&before, &MapContents::default()).unwrap();
        // "a" sorts first by name, but "b" and "c" are programmed: "a" is the one refused.
        let desired = state(&[
            frontend("a", "10.96.0.1:80", &["10.0.0.1:80"]),
            frontend("b", "10.96.0.2:80", &["10.0.0.2:80"]),
            frontend("c", "10.96.0.3:80", &["10.0.0.3:80"]),
        ]);
        let (fitting, refused) = fitted(&desired, &current, 4).expect("does not fit");
        assert_eq!(names(&fitting), ["10.96.0.2:80", "10.96.0.3:80"]);
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].service.name, "a");
        assert_eq!(refused[0].map, LB_SERVICES);
        let message = refused[0].to_string();
        assert!(
            message.contains("ns/a") && message.contains("bpf.lbMapMax"),
            "{message}"
        );
    }

    #[test]
    fn a_service_is_programmed_whole_or_not_at_all() {
        // "a" has two frontends (6 service entries), "b" one (2): with room for 6, "a" alone
        // would fit, but "a" and "b" would not; "b" is programmed, "a" refused whole.
        let current = MapContents::build(
            &state(&[frontend("b", "10.96.0.2:80", &["10.0.0.2:80"])]),
            &MapContents::default(),
        )
        .unwrap();
        let desired = state(&[
            frontend("a", "10.96.0.1:80", &["10.0.0.1:80", "10.0.0.4:80"]),
            frontend("a", "10.96.0.1:443", &["10.0.0.1:443"]),
            frontend("b", "10.96.0.2:80", &["10.0.0.2:80"]),
        ]);
        let (fitting, refused) = fitted(&desired, &current, 6).expect("does not fit");
        assert_eq!(names(&fitting), ["10.96.0.2:80"]);
        assert_eq!(
            refused
                .iter()
                .map(|r| r.service.name.as_str())
                .collect::<Vec<_>>(),
            ["a"]
        );
    }

    #[test]
    fn entries_about_to_be_deleted_still_count() {
        // "old" is going away, but its entries are deleted only after "new"'s are written:
        // both do not fit in 2 at once, so "new" waits for the next pass.
        let current = MapContents::build(
            &state(&[frontend("old", "10.96.0.9:80", &["10.0.0.9:80"])]),
            &MapContents::default(),
        )
        .unwrap();
        let desired = state(&[frontend("new", "10.96.0.1:80", &["10.0.0.1:80"])]);
        let (fitting, refused) = fitted(&desired, &current, 2).expect("does not fit");
        assert!(fitting.is_empty());
        assert_eq!(refused[0].service.name, "new");
        let after_the_deletion = MapContents::default();
        assert!(fitted(&desired, &after_the_deletion, 2).is_none());
    }
}
