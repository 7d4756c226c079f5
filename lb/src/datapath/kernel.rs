//! Reading and writing the load balancer's maps in the kernel, as [`MapContents`].

use std::borrow::{Borrow, BorrowMut};
use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::path::Path;

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{HashMap, IterableMap, Map, MapData};
use aya::Pod;
use ebpf::maps::{
    scope, LbAffinityMatchKey, LbKey, LbService, LbSrcRange, LbSrcRangeKey, LB_AFFINITY_MATCH,
    LB_BACKENDS, LB_REVERSE_NAT, LB_SERVICES, LB_SOURCE_RANGES,
};

use super::delta::Changes;
use super::{DatapathError, MapContents, MapDelta};

/// What an apply changed, per map.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Entries written (new or changed).
    pub written: usize,
    /// Entries deleted because nothing wants them any more.
    pub deleted: usize,
}

impl ApplyReport {
    /// What applying `want` over `have` writes and deletes.
    pub fn between(have: &MapContents, want: &MapContents) -> Self {
        fn count<K: Ord, V: PartialEq>(
            have: &BTreeMap<K, V>,
            want: &BTreeMap<K, V>,
        ) -> (usize, usize) {
            let written = want.iter().filter(|(k, v)| have.get(k) != Some(v)).count();
            let deleted = have.keys().filter(|k| !want.contains_key(k)).count();
            (written, deleted)
        }
        let counts = [
            count(&have.services, &want.services),
            count(&have.backends, &want.backends),
            count(&have.reverse_nat, &want.reverse_nat),
            count(&have.affinity_match, &want.affinity_match),
            count(&have.source_ranges, &want.source_ranges),
            count(&have.maglev, &want.maglev),
        ];
        ApplyReport {
            written: counts.iter().map(|c| c.0).sum(),
            deleted: counts.iter().map(|c| c.1).sum(),
        }
    }
}

/// When [`ServiceMaps::apply_with`] hands over to the Maglev tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyPhase {
    /// Nothing written yet.
    BeforeWrites,
    /// Every entry written, none deleted yet.
    Written,
}

/// Handles on the maps the agent keeps to describe services.
#[derive(Debug)]
pub struct ServiceMaps<T> {
    services: HashMap<T, ebpf::maps::LbKey, ebpf::maps::LbService>,
    backends: HashMap<T, u32, ebpf::maps::LbBackend>,
    reverse_nat: HashMap<T, u16, ebpf::maps::LbReverseNat>,
    affinity_match: HashMap<T, LbAffinityMatchKey, u8>,
    source_ranges: LpmTrie<T, LbSrcRange, u8>,
}

impl ServiceMaps<MapData> {
    /// Opens the maps pinned in `pin_dir`, without loading any program (for `lbctl`).
    pub fn open_pinned(pin_dir: &Path) -> Result<Self, DatapathError> {
        fn open<K: Pod, V: Pod>(
            dir: &Path,
            name: &'static str,
        ) -> Result<HashMap<MapData, K, V>, DatapathError> {
            let data = MapData::from_pin(dir.join(name))
                .map_err(|source| DatapathError::Map { map: name, source })?;
            HashMap::try_from(Map::HashMap(data))
                .map_err(|source| DatapathError::Map { map: name, source })
        }
        let ranges = MapData::from_pin(pin_dir.join(LB_SOURCE_RANGES)).map_err(|source| {
            DatapathError::Map {
                map: LB_SOURCE_RANGES,
                source,
            }
        })?;
        Ok(ServiceMaps {
            services: open(pin_dir, LB_SERVICES)?,
            backends: open(pin_dir, LB_BACKENDS)?,
            reverse_nat: open(pin_dir, LB_REVERSE_NAT)?,
            affinity_match: open(pin_dir, LB_AFFINITY_MATCH)?,
            source_ranges: LpmTrie::try_from(Map::LpmTrie(ranges)).map_err(|source| {
                DatapathError::Map {
                    map: LB_SOURCE_RANGES,
                    source,
                }
            })?,
        })
    }
}

impl<T: Borrow<MapData>> ServiceMaps<T> {
    /// Wraps already opened maps.
    pub fn new(
        services: HashMap<T, ebpf::maps::LbKey, ebpf::maps::LbService>,
        backends: HashMap<T, u32, ebpf::maps::LbBackend>,
        reverse_nat: HashMap<T, u16, ebpf::maps::LbReverseNat>,
        affinity_match: HashMap<T, LbAffinityMatchKey, u8>,
        source_ranges: LpmTrie<T, LbSrcRange, u8>,
    ) -> Self {
        ServiceMaps {
            services,
            backends,
            reverse_nat,
            affinity_match,
            source_ranges,
        }
    }

    /// Everything in the maps.
    pub fn read(&self) -> Result<MapContents, DatapathError> {
        Ok(MapContents {
            services: read(&self.services, LB_SERVICES)?,
            backends: read(&self.backends, LB_BACKENDS)?,
            reverse_nat: read(&self.reverse_nat, LB_REVERSE_NAT)?,
            affinity_match: read(&self.affinity_match, LB_AFFINITY_MATCH)?,
            source_ranges: self
                .source_ranges
                .iter()
                .map(|item| {
                    item.map(|(k, v)| (LbSrcRangeKey::from_parts(k.prefix_len(), k.data()), v))
                })
                .collect::<Result<_, _>>()
                .map_err(|source| DatapathError::Map {
                    map: LB_SOURCE_RANGES,
                    source,
                })?,
            // The packet programs' map, not one of these: see `NodePortLb::maglev_tables`.
            maglev: BTreeMap::new(),
        })
    }
}

impl<T: BorrowMut<MapData>> ServiceMaps<T> {
    /// Makes the maps hold exactly `want`, in an order in which a lookup running meanwhile
    /// never follows a reference to an entry that is not there yet: backends, then backend
    /// slots, then services' slot-0 entries (see [`service_write_order`]) and reverse NAT,
    /// then affinity matches; deletions in the opposite order (affinity matches first, so no
    /// pinned client is sent to a backend on its way out).
    pub fn apply(&mut self, want: &MapContents) -> Result<ApplyReport, DatapathError> {
        self.apply_with(want, |_, _| Ok(ApplyReport::default()))
    }

    /// [`ServiceMaps::apply`], calling `tables` twice with what the maps hold: with
    /// [`ApplyPhase::BeforeWrites`] before anything is written, and with
    /// [`ApplyPhase::Written`] once every entry is written and before any is deleted. The
    /// Maglev tables are applied there, so a table never names a backend that is not written
    /// yet or already deleted, and a table of a frontend id another frontend takes over is gone
    /// before that frontend's head is written.
    pub fn apply_with(
        &mut self,
        want: &MapContents,
        tables: impl FnMut(ApplyPhase, &MapContents) -> Result<ApplyReport, DatapathError>,
    ) -> Result<ApplyReport, DatapathError> {
        let have = self.read()?;
        self.apply_over(&have, want, tables)
    }

    /// [`ServiceMaps::apply_with`] when what the maps hold is known already (`have`): reading
    /// 10 000 services' entries back takes two system calls each, longer than the writes of a
    /// single change.
    pub fn apply_over(
        &mut self,
        have: &MapContents,
        want: &MapContents,
        mut tables: impl FnMut(ApplyPhase, &MapContents) -> Result<ApplyReport, DatapathError>,
    ) -> Result<ApplyReport, DatapathError> {
        self.apply_delta(have, &MapDelta::between(have, want), |phase, have, _| {
            tables(phase, have)
        })
    }

    /// Applies `delta` to maps holding `have`, in an order in which a lookup running
    /// meanwhile never follows a reference to an entry that is not there (see
    /// [`ServiceMaps::apply`]), calling `tables` before the writes and between the writes and
    /// the deletions (see [`ServiceMaps::apply_with`]). Only the delta's entries are touched.
    pub fn apply_delta(
        &mut self,
        have: &MapContents,
        delta: &MapDelta,
        mut tables: impl FnMut(
            ApplyPhase,
            &MapContents,
            &MapDelta,
        ) -> Result<ApplyReport, DatapathError>,
    ) -> Result<ApplyReport, DatapathError> {
        let mut report = tables(ApplyPhase::BeforeWrites, have, delta)?;
        // A frontend's source ranges before the head that asks for them, so no allowed client
        // is turned away in between.
        let failed = |source| DatapathError::Map {
            map: LB_SOURCE_RANGES,
            source,
        };
        for (key, _) in MapDelta::writes(&delta.source_ranges) {
            self.source_ranges
                .insert(&Key::new(key.prefixlen, key.data()), 0, 0)
                .map_err(failed)?;
            report.written += 1;
        }
        report.written += write(
            &mut self.backends,
            LB_BACKENDS,
            MapDelta::writes(&delta.backends),
        )?;
        report.written += write(
            &mut self.services,
            LB_SERVICES,
            service_write_order(&delta.services),
        )?;
        report.written += write(
            &mut self.reverse_nat,
            LB_REVERSE_NAT,
            MapDelta::writes(&delta.reverse_nat),
        )?;
        report.written += write(
            &mut self.affinity_match,
            LB_AFFINITY_MATCH,
            MapDelta::writes(&delta.affinity_match),
        )?;
        let applied = tables(ApplyPhase::Written, have, delta)?;
        report.written += applied.written;
        report.deleted += applied.deleted;
        // Deletions: affinity matches and service heads first, then their slots, then what
        // nothing refers to.
        report.deleted += delete(
            &mut self.affinity_match,
            LB_AFFINITY_MATCH,
            MapDelta::deletions(&delta.affinity_match),
        )?;
        let (gone_slots, gone_heads): (Vec<_>, Vec<_>) =
            MapDelta::deletions(&delta.services).partition(|k| k.backend_slot != 0);
        report.deleted += delete(&mut self.services, LB_SERVICES, gone_heads)?;
        report.deleted += delete(&mut self.services, LB_SERVICES, gone_slots)?;
        report.deleted += delete(
            &mut self.reverse_nat,
            LB_REVERSE_NAT,
            MapDelta::deletions(&delta.reverse_nat),
        )?;
        report.deleted += delete(
            &mut self.backends,
            LB_BACKENDS,
            MapDelta::deletions(&delta.backends),
        )?;
        for key in MapDelta::deletions(&delta.source_ranges) {
            match self
                .source_ranges
                .remove(&Key::new(key.prefixlen, key.data()))
            {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => report.deleted += 1,
                Err(source) => return Err(failed(source)),
            }
        }
        Ok(report)
    }
}

fn read<T: Borrow<MapData>, K: Pod + Ord, V: Pod>(
    map: &HashMap<T, K, V>,
    name: &'static str,
) -> Result<BTreeMap<K, V>, DatapathError> {
    map.iter()
        .collect::<Result<_, _>>()
        .map_err(|source| DatapathError::Map { map: name, source })
}

/// The order in which the entries of `lb_services_v1` are written: backend slots, then the
/// slot-0 entries of internal-scope frontends, then those of external-scope ones. An external
/// head flagged `LB_SVC_TWO_SCOPES` sends every lookup on to its internal twin, so the twin must
/// be there first, or a lookup in between finds no service and the connection goes
/// untranslated (key order alone would write the external head first).
pub fn service_write_order(
    changes: &Changes<LbKey, LbService>,
) -> impl Iterator<Item = (&LbKey, &LbService)> {
    let writes = move || MapDelta::writes(changes);
    let slots = writes().filter(|(k, _)| k.backend_slot != 0);
    let head_of = move |s: u8| writes().filter(move |(k, _)| k.backend_slot == 0 && k.scope == s);
    slots.chain(head_of(scope::INT)).chain(head_of(scope::EXT))
}

/// Writes `entries` to `map` in order: in batches where the kernel takes them, one by one
/// for the rest (whose error, if any, is the one reported).
fn write<'a, T: BorrowMut<MapData>, K: Pod + 'a, V: Pod + 'a>(
    map: &mut HashMap<T, K, V>,
    name: &'static str,
    entries: impl IntoIterator<Item = (&'a K, &'a V)>,
) -> Result<usize, DatapathError> {
    let (keys, values): (Vec<K>, Vec<V>) = entries.into_iter().map(|(k, v)| (*k, *v)).unzip();
    let batched = super::batch::update(IterableMap::map(map).fd().as_fd(), &keys, &values);
    for (k, v) in keys[batched..].iter().zip(&values[batched..]) {
        map.insert(k, v, 0)
            .map_err(|source| DatapathError::Map { map: name, source })?;
    }
    Ok(keys.len())
}

fn delete<'a, T: BorrowMut<MapData>, K: Pod + 'a, V: Pod>(
    map: &mut HashMap<T, K, V>,
    name: &'static str,
    keys: impl IntoIterator<Item = &'a K>,
) -> Result<usize, DatapathError> {
    let mut deleted = 0;
    for k in keys {
        map.remove(k)
            .map_err(|source| DatapathError::Map { map: name, source })?;
        deleted += 1;
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        Backend, DesiredState, Frontend, L3n4Addr, LbService as ModelService, Scope, ServiceName,
        ServicePolicies, ServiceType,
    };

    fn nodeport(scope: Scope, backend: &str) -> ModelService {
        ModelService {
            frontend: Frontend {
                addr: "0.0.0.0:30080".parse().unwrap(),
                kind: ServiceType::NodePort,
                scope,
            },
            name: ServiceName {
                namespace: "default".into(),
                name: "web".into(),
            },
            port_name: String::new(),
            no_local_backends: false,
            backends: vec![Backend::active(backend.parse::<L3n4Addr>().unwrap())],
            policies: ServicePolicies::default(),
        }
    }

    #[test]
    fn an_internal_twin_is_written_before_the_external_head_that_points_to_it() {
        let mut desired = DesiredState::new();
        for svc in [
            nodeport(Scope::External, "10.0.0.1:80"),
            nodeport(Scope::Internal, "10.0.0.2:80"),
        ] {
            desired.insert(svc).map_err(|_| "duplicate").unwrap();
        }
        let want = MapContents::build(&desired, &MapContents::default()).unwrap();
        let delta = MapDelta::between(&MapContents::default(), &want);
        let order: Vec<(u16, u8)> = service_write_order(&delta.services)
            .map(|(k, _)| (k.backend_slot, k.scope))
            .collect();
        assert_eq!(order.len(), want.services.len(), "every entry once");
        let at = |slot, s| order.iter().position(|&e| e == (slot, s)).unwrap();
        assert!(at(0, scope::INT) < at(0, scope::EXT), "{order:?}");
        assert!(at(1, scope::INT) < at(0, scope::INT), "slots before heads");
        assert!(at(1, scope::EXT) < at(0, scope::EXT), "slots before heads");
        // Key order alone would have put the external head first.
        let by_key: Vec<u8> = want
            .services
            .keys()
            .filter(|k| k.backend_slot == 0)
            .map(|k| k.scope)
            .collect();
        assert_eq!(by_key, [scope::EXT, scope::INT]);
    }
}
