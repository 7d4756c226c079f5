//! [`MapDelta`]: the entries one reconciliation writes and deletes, map by map. The kernel
//! applies it in an order no lookup can trip over (see `ServiceMaps::apply_delta`), the
//! simulator applies it to its own maps, and the reconciler applies it to what it remembers
//! the maps hold. A single change at 10 000 services is a delta of a few entries; working from
//! the delta rather than from both maps' whole contents is what keeps its cost to its own size.

use std::collections::{BTreeMap, BTreeSet};

use ebpf::maps::{LbAffinityMatchKey, LbBackend, LbKey, LbReverseNat, LbService, LbSrcRangeKey};

use super::{ApplyReport, MapContents};

/// Per key: `Some(value)` to write, `None` to delete.
pub type Changes<K, V> = BTreeMap<K, Option<V>>;

/// What turns one [`MapContents`] into another.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MapDelta {
    /// `lb_services_v1`.
    pub services: Changes<LbKey, LbService>,
    /// `lb_backends_v1`.
    pub backends: Changes<u32, LbBackend>,
    /// `lb_reverse_nat_v1`.
    pub reverse_nat: Changes<u16, LbReverseNat>,
    /// `lb_affinity_match_v1`.
    pub affinity_match: Changes<LbAffinityMatchKey, u8>,
    /// `lb_source_ranges_v1`.
    pub source_ranges: Changes<LbSrcRangeKey, u8>,
    /// Every Maglev table wanted (the packet programs compare with what they last wrote),
    /// when this pass laid the tables out; `None` leaves them as they are.
    pub maglev: Option<BTreeMap<u16, Vec<u32>>>,
}

impl MapDelta {
    /// What makes `have` into `want` (every table of `want.maglev` included).
    pub fn between(have: &MapContents, want: &MapContents) -> Self {
        MapDelta {
            services: diff(&have.services, &want.services),
            backends: diff(&have.backends, &want.backends),
            reverse_nat: diff(&have.reverse_nat, &want.reverse_nat),
            affinity_match: diff(&have.affinity_match, &want.affinity_match),
            source_ranges: diff(&have.source_ranges, &want.source_ranges),
            maglev: Some(want.maglev.clone()),
        }
    }

    /// Whether the service maps stay as they are (the Maglev tables aside).
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
            && self.backends.is_empty()
            && self.reverse_nat.is_empty()
            && self.affinity_match.is_empty()
            && self.source_ranges.is_empty()
    }

    /// Applies the delta to `contents` (the Maglev tables too, when it has them).
    pub fn apply_to(&self, contents: &mut MapContents) {
        apply(&mut contents.services, &self.services);
        apply(&mut contents.backends, &self.backends);
        apply(&mut contents.reverse_nat, &self.reverse_nat);
        apply(&mut contents.affinity_match, &self.affinity_match);
        apply(&mut contents.source_ranges, &self.source_ranges);
        if let Some(tables) = &self.maglev {
            contents.maglev = tables.clone();
        }
    }

    /// How many entries of the service maps it writes and deletes (the Maglev tables are
    /// counted by whoever compares them).
    pub fn report(&self) -> ApplyReport {
        fn count<K, V>(changes: &Changes<K, V>) -> (usize, usize) {
            let written = changes.values().filter(|v| v.is_some()).count();
            (written, changes.len() - written)
        }
        let counts = [
            count(&self.services),
            count(&self.backends),
            count(&self.reverse_nat),
            count(&self.affinity_match),
            count(&self.source_ranges),
        ];
        ApplyReport {
            written: counts.iter().map(|c| c.0).sum(),
            deleted: counts.iter().map(|c| c.1).sum(),
        }
    }

    /// The frontend ids whose frontend changes, given what the maps hold (`have`): ids of
    /// heads (slot 0) deleted or moved to another id, and ids newly given to a head. A Maglev
    /// table under such an id belongs to another frontend (or none) after the delta.
    pub fn reassigned_ids(&self, have: &MapContents) -> BTreeSet<u16> {
        let mut ids = BTreeSet::new();
        for (key, change) in self.services.iter().filter(|(k, _)| k.backend_slot == 0) {
            let before = have.services.get(key).map(|s| s.rev_nat_index);
            let after = change.as_ref().map(|s| s.rev_nat_index);
            if before != after {
                ids.extend(before);
                ids.extend(after);
            }
        }
        ids
    }

    /// The writes of `map`, in key order.
    pub fn writes<K, V>(map: &Changes<K, V>) -> impl Iterator<Item = (&K, &V)> {
        map.iter().filter_map(|(k, v)| Some((k, v.as_ref()?)))
    }

    /// The deletions of `map`, in key order.
    pub fn deletions<K, V>(map: &Changes<K, V>) -> impl Iterator<Item = &K> {
        map.iter().filter(|(_, v)| v.is_none()).map(|(k, _)| k)
    }
}

fn diff<K: Ord + Copy, V: PartialEq + Clone>(
    have: &BTreeMap<K, V>,
    want: &BTreeMap<K, V>,
) -> Changes<K, V> {
    let writes = want
        .iter()
        .filter(|(k, v)| have.get(k) != Some(v))
        .map(|(k, v)| (*k, Some(v.clone())));
    let deletions = have
        .keys()
        .filter(|k| !want.contains_key(k))
        .map(|k| (*k, None));
    writes.chain(deletions).collect()
}

fn apply<K: Ord + Copy, V: Clone>(map: &mut BTreeMap<K, V>, changes: &Changes<K, V>) {
    for (k, v) in changes {
        match v {
            Some(v) => {
                map.insert(*k, v.clone());
            }
            None => {
                map.remove(k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contents(services: &[(u16, u16)]) -> MapContents {
        // (port, rev_nat_index) heads of 10.96.0.1:port.
        let mut c = MapContents::default();
        for &(port, id) in services {
            c.services.insert(
                LbKey::new("10.96.0.1".parse().unwrap(), port, 6, 0, 0),
                LbService {
                    rev_nat_index: id,
                    ..LbService::default()
                },
            );
            c.reverse_nat
                .insert(id, LbReverseNat::new("10.96.0.1".parse().unwrap(), port));
        }
        c
    }

    #[test]
    fn a_delta_between_two_contents_turns_the_one_into_the_other() {
        let have = contents(&[(80, 1), (81, 2)]);
        let want = contents(&[(81, 2), (82, 3)]);
        let delta = MapDelta::between(&have, &want);
        let mut applied = have.clone();
        delta.apply_to(&mut applied);
        assert_eq!(applied, want);
        assert_eq!(
            delta.report(),
            ApplyReport {
                written: 2,
                deleted: 2
            },
            "the head and reverse entry of :82 written, those of :80 deleted, :81 untouched"
        );
        assert!(MapDelta::between(&want, &want).is_empty());
    }

    #[test]
    fn ids_whose_frontend_changes_are_reassigned_and_others_are_not() {
        let have = contents(&[(80, 1), (81, 2)]);
        // :80 goes, :82 takes its id 1; :81 keeps 2.
        let want = contents(&[(81, 2), (82, 1)]);
        let delta = MapDelta::between(&have, &want);
        assert_eq!(delta.reassigned_ids(&have), BTreeSet::from([1]));
    }
}
