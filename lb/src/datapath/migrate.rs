//! Pinned maps that no longer match what this agent loads (`bpf.lbMapMax` changed, or a map's
//! flags did) are replaced without dropping traffic:
//!
//! 1. Before loading, each such map's pin moves to `<pin dir>/migrate/<name>`: the running
//!    programs keep using the map, and the name is free for a fresh one.
//! 2. The loader creates the fresh maps and pins them by name; every entry of the old maps is
//!    copied in before a new program is attached, so the new programs find every service,
//!    backend, node address, connected socket's translation, socket reverse entry and
//!    affinity.
//! 3. Once the new links are attached and the old ones detached (nothing writes the old maps
//!    any more), what the old programs wrote meanwhile (reverse entries of sockets connected
//!    in between, affinity) is copied too, never overwriting a newer entry, and the old pins
//!    are removed, which frees the old maps.
//!
//! The Maglev tables (`lb_maglev_v1`) are the exception: their value is `maglev.tableSize`
//! backend ids, so a changed table size (or algorithm) changes the layout. Such a map is moved
//! aside like the others but nothing is copied, on a resize either: the tables are derived
//! state, and the agent's first reconciliation writes every one of them again (until then the
//! programs fall back to the flow hash over the active slots).
//!
//! A map whose layout a new version changed gets a new name (`lb_ct_v1` became `lb_ct_v2`
//! when conntrack entries took their next hop): the old pin is its predecessor
//! ([`PREDECESSORS`]), moved aside and copied across like a resized map, each entry converted
//! to the new layout, and unpinned at the end.
//!
//! A change the new maps cannot hold (more entries than the new size, for maps that are not
//! LRU: an LRU map drops its oldest entries instead) or a layout change under the same name is
//! refused before anything is touched, naming the option and the way out. An agent that dies
//! between the steps leaves `migrate/<name>`; the next one resumes from it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aya::maps::{HashMap, LpmTrie, Map, MapData, MapError, MapType};
use aya::{Ebpf, Pod};
use ebpf::maps::{
    LbAddr, LbAffinityKey, LbAffinityMatchKey, LbAffinityValue, LbBackend, LbCtEntry, LbCtEntryV1,
    LbCtKey, LbDevice, LbKey, LbLocalAddr, LbReverseNat, LbService, LbSockConn, LbSockKey,
    LbSockValue, LbSrcRange, LB_AFFINITY, LB_AFFINITY_MATCH, LB_BACKENDS, LB_CT, LB_CT_V1,
    LB_DEVICES, LB_LOCAL_ADDRS, LB_MAGLEV, LB_REVERSE_NAT, LB_REVERSE_SK, LB_SERVICES,
    LB_SOCK_CONN, LB_SOURCE_RANGES, PKT_MAPS, PKT_SIZED_MAPS, SOCK_LB_MAPS, SOCK_LB_SIZED_MAPS,
};

use super::pin_paths::remove_if_present;
use super::DatapathError;

/// The bpffs directory, under the pin directory, of maps being replaced.
pub const MIGRATE_DIR: &str = "migrate";
/// `BPF_NOEXIST`: a copy never overwrites what the new map already holds.
const BPF_NOEXIST: u64 = 1;
/// Maps earlier versions pinned under another name, by the name of the map that took them
/// over in another layout: (old, new).
pub const PREDECESSORS: [(&str, &str); 1] = [(LB_CT_V1, LB_CT)];

/// What defines a map to the kernel: a pinned map is adopted only when all of it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapSpec {
    /// `BPF_MAP_TYPE_*`.
    pub map_type: u32,
    /// Key size in bytes.
    pub key_size: u32,
    /// Value size in bytes.
    pub value_size: u32,
    /// Capacity.
    pub max_entries: u32,
    /// `BPF_F_*` flags.
    pub flags: u32,
}

impl MapSpec {
    fn of(data: &MapData, name: &'static str) -> Result<Self, DatapathError> {
        let info = data
            .info()
            .map_err(|source| DatapathError::Map { map: name, source })?;
        Ok(MapSpec {
            map_type: info
                .map_type()
                .map_err(|source| DatapathError::Map { map: name, source })?
                as u32,
            key_size: info.key_size(),
            value_size: info.value_size(),
            max_entries: info.max_entries(),
            flags: info.map_flags(),
        })
    }

    /// Type and entry sizes: what a copy cannot bridge.
    fn layout(&self) -> (u32, u32, u32) {
        (self.map_type, self.key_size, self.value_size)
    }

    fn is_lru(&self) -> bool {
        self.map_type == MapType::LruHash as u32
    }
}

/// The maps of [`ebpf::sock_lb_object`] as this agent creates them with `map_max`
/// (`bpf.lbMapMax`): read from the object itself, so nothing here repeats the C definitions.
pub fn expected_specs(map_max: u32) -> Result<BTreeMap<&'static str, MapSpec>, DatapathError> {
    specs_of(
        ebpf::sock_lb_object(),
        &SOCK_LB_MAPS,
        &SOCK_LB_SIZED_MAPS,
        map_max,
    )
}

/// The maps only [`ebpf::nodeport_object`] defines (conntrack, devices, Maglev tables,
/// counters) as this agent creates them with `map_max` and Maglev tables of `maglev_len`
/// backend ids; the shared ones are the socket programs' to replace.
pub fn expected_packet_specs(
    map_max: u32,
    maglev_len: u32,
) -> Result<BTreeMap<&'static str, MapSpec>, DatapathError> {
    let mut specs = specs_of(ebpf::nodeport_object(), &PKT_MAPS, &PKT_SIZED_MAPS, map_max)?;
    if let Some(maglev) = specs.get_mut(LB_MAGLEV) {
        maglev.value_size = maglev_len * 4;
        maglev.max_entries = super::maglev_map::maglev_max_entries(map_max, maglev_len);
    }
    Ok(specs)
}

/// Whether a pinned map of another layout is replaced rather than refused: the Maglev tables,
/// rebuilt by the reconciler whatever their length.
fn rebuilt_not_copied(name: &str) -> bool {
    name == LB_MAGLEV
}

/// The maps `names` of `object`, those in `sized` with `map_max` entries.
fn specs_of(
    object: &[u8],
    names: &[&'static str],
    sized: &[&str],
    map_max: u32,
) -> Result<BTreeMap<&'static str, MapSpec>, DatapathError> {
    let object = aya_obj::Object::parse(object).map_err(|e| DatapathError::Object {
        detail: e.to_string(),
    })?;
    let cpus = aya::util::nr_cpus().map_err(|(path, e)| DatapathError::Pin {
        path: path.into(),
        detail: format!("reading the possible CPUs: {e}"),
    })?;
    let mut out = BTreeMap::new();
    for &name in names {
        let map = object
            .maps
            .get(name)
            .ok_or(DatapathError::Missing { kind: "map", name })?;
        let max_entries = if sized.contains(&name) {
            map_max
        } else if map.max_entries() == 0 && map.map_type() == MapType::PerfEventArray as u32 {
            u32::try_from(cpus).unwrap_or(u32::MAX) // as the loader sizes it
        } else {
            map.max_entries()
        };
        out.insert(
            name,
            MapSpec {
                map_type: map.map_type(),
                key_size: map.key_size(),
                value_size: map.value_size(),
                max_entries,
                flags: map.map_flags(),
            },
        );
    }
    Ok(out)
}

/// Maps being replaced, from before the load until the new programs are attached.
#[derive(Debug, Default)]
pub struct Migration {
    pin_dir: PathBuf,
    moved: Vec<Moved>,
}

#[derive(Debug)]
struct Moved {
    /// The pinned map's name.
    name: &'static str,
    /// The map that takes its entries: `name`, or its successor in a new layout.
    into: &'static str,
    /// The old map, still used by the attached programs.
    old: Map,
    /// Its pin under `migrate/`.
    aside: PathBuf,
    /// Whether this agent moved the pin (rather than finding it moved by one that died).
    moved_here: bool,
}

impl Migration {
    /// Compares the maps pinned in `pin_dir` with `want` (see [`expected_specs`]) and moves
    /// the pins of those that differ aside, so the load creates fresh ones. Refuses, changing
    /// nothing, what the new maps could not hold.
    pub fn prepare(
        pin_dir: &Path,
        want: &BTreeMap<&'static str, MapSpec>,
        map_max: u32,
    ) -> Result<Migration, DatapathError> {
        let aside_dir = pin_dir.join(MIGRATE_DIR);
        let mut migration = Migration {
            pin_dir: pin_dir.to_owned(),
            moved: Vec::new(),
        };
        for (&name, spec) in want {
            let pinned = pin_dir.join(name);
            let aside = aside_dir.join(name);
            let resumed = aside.exists();
            let source = if resumed { &aside } else { &pinned };
            if !source.exists() {
                continue;
            }
            let data = MapData::from_pin(source)
                .map_err(|source| DatapathError::Map { map: name, source })?;
            let have = MapSpec::of(&data, name)?;
            if have == *spec && !resumed {
                continue; // adopted as it is
            }
            if have.layout() != spec.layout() && !rebuilt_not_copied(name) {
                return Err(DatapathError::PinnedLayout {
                    map: name,
                    path: source.clone(),
                    detail: format!(
                        "type {}, key {} bytes, value {} bytes; this agent's: type {}, key {} \
                         bytes, value {} bytes",
                        have.map_type,
                        have.key_size,
                        have.value_size,
                        spec.map_type,
                        spec.key_size,
                        spec.value_size
                    ),
                });
            }
            if resumed && pinned.exists() {
                let fresh = MapData::from_pin(&pinned)
                    .map_err(|source| DatapathError::Map { map: name, source })?;
                if MapSpec::of(&fresh, name)? != *spec {
                    return Err(DatapathError::PinnedLayout {
                        map: name,
                        path: pinned,
                        detail: format!(
                            "an interrupted resize left {} beside it, and it has another size",
                            aside.display()
                        ),
                    });
                }
            }
            let old = typed(data, have.map_type);
            let entries = if rebuilt_not_copied(name) {
                0
            } else {
                count(name, &old)?
            };
            if !have.is_lru() && entries > spec.max_entries as usize {
                return Err(DatapathError::MapTooSmall {
                    map: name,
                    entries,
                    requested: map_max,
                    pinned: have.max_entries,
                });
            }
            migration.moved.push(Moved {
                name,
                into: name,
                old,
                aside,
                moved_here: !resumed,
            });
        }
        for (old_name, new_name) in PREDECESSORS {
            if !want.contains_key(new_name) {
                continue;
            }
            let aside = aside_dir.join(old_name);
            let resumed = aside.exists();
            let source = if resumed {
                aside.clone()
            } else {
                pin_dir.join(old_name)
            };
            if !source.exists() {
                continue;
            }
            let data = MapData::from_pin(&source).map_err(|source| DatapathError::Map {
                map: old_name,
                source,
            })?;
            let have = MapSpec::of(&data, old_name)?;
            migration.moved.push(Moved {
                name: old_name,
                into: new_name,
                old: typed(data, have.map_type),
                aside,
                moved_here: !resumed,
            });
        }
        for moved in migration.moved.iter().filter(|m| m.moved_here) {
            std::fs::create_dir_all(&aside_dir).map_err(DatapathError::pin(&aside_dir))?;
            let pinned = pin_dir.join(moved.name);
            std::fs::rename(&pinned, &moved.aside).map_err(DatapathError::pin(&pinned))?;
            if moved.into == moved.name {
                tracing::info!(
                    map = moved.name,
                    "replacing the pinned map: its size or flags differ from this agent's options"
                );
            } else {
                tracing::info!(
                    map = moved.name,
                    into = moved.into,
                    "taking over the pinned map of an earlier version in the new layout"
                );
            }
        }
        Ok(migration)
    }

    /// Puts the moved pins back (the load failed: the running programs keep their maps).
    pub fn restore(&self) {
        for moved in self.moved.iter().filter(|m| m.moved_here) {
            let pinned = self.pin_dir.join(moved.name);
            let _ = std::fs::remove_file(&pinned);
            let _ = std::fs::rename(&moved.aside, &pinned);
        }
        // Gone when empty; another migration's maps may still be aside.
        let _ = std::fs::remove_dir(self.pin_dir.join(MIGRATE_DIR));
    }

    /// Copies every entry of the old maps into the loaded object's new ones.
    pub fn copy_into(&self, ebpf: &mut Ebpf) -> Result<(), DatapathError> {
        for moved in &self.moved {
            let new = ebpf.map_mut(moved.into).ok_or(DatapathError::Missing {
                kind: "map",
                name: moved.into,
            })?;
            copy(moved.name, &moved.old, new)?;
        }
        Ok(())
    }

    /// After the new programs are attached and the old detached: copies what the old programs
    /// wrote since [`Migration::copy_into`], then removes the old pins (freeing the maps).
    pub fn finish(self, ebpf: &mut Ebpf) -> Result<(), DatapathError> {
        self.copy_into(ebpf)?;
        for moved in &self.moved {
            std::fs::remove_file(&moved.aside).map_err(DatapathError::pin(&moved.aside))?;
        }
        // The socket and the packet programs load before either attaches, so the other's
        // migration may still have maps aside: the last to finish removes the directory.
        let aside_dir = self.pin_dir.join(MIGRATE_DIR);
        match std::fs::remove_dir(&aside_dir) {
            Err(e)
                if !matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::DirectoryNotEmpty
                ) =>
            {
                Err(DatapathError::pin(&aside_dir)(e))
            }
            _ => Ok(()),
        }
    }

    /// Whether any map is being replaced.
    pub fn is_empty(&self) -> bool {
        self.moved.is_empty()
    }
}

/// `data` as the [`Map`] variant of its type (hash, LRU hash, array, perf event array).
fn typed(data: MapData, map_type: u32) -> Map {
    match map_type {
        t if t == MapType::LruHash as u32 => Map::LruHashMap(data),
        t if t == MapType::Array as u32 => Map::Array(data),
        t if t == MapType::PerfEventArray as u32 => Map::PerfEventArray(data),
        t if t == MapType::LpmTrie as u32 => Map::LpmTrie(data),
        t if t == MapType::PerCpuArray as u32 => Map::PerCpuArray(data),
        _ => Map::HashMap(data),
    }
}

/// Runs `$f::<K, V>` with the key and value types of the map `$name`; maps with nothing to
/// copy (the monitor switch, whose monitors re-register, and the per-monitor event arrays,
/// whose buffers belong to monitor processes) give the default.
macro_rules! by_types {
    ($name:expr, $f:ident($($arg:expr),*)) => {
        match $name {
            LB_SERVICES => $f::<LbKey, LbService>($name, $($arg),*),
            LB_BACKENDS => $f::<u32, LbBackend>($name, $($arg),*),
            LB_REVERSE_NAT => $f::<u16, LbReverseNat>($name, $($arg),*),
            LB_REVERSE_SK => $f::<LbSockKey, LbSockValue>($name, $($arg),*),
            LB_SOCK_CONN => $f::<u64, LbSockConn>($name, $($arg),*),
            LB_AFFINITY => $f::<LbAffinityKey, LbAffinityValue>($name, $($arg),*),
            LB_AFFINITY_MATCH => $f::<LbAffinityMatchKey, u8>($name, $($arg),*),
            LB_LOCAL_ADDRS => $f::<LbAddr, LbLocalAddr>($name, $($arg),*),
            LB_CT => $f::<LbCtKey, LbCtEntry>($name, $($arg),*),
            LB_DEVICES => $f::<u32, LbDevice>($name, $($arg),*),
            _ => Ok(Default::default()),
        }
    };
}

fn count(name: &'static str, map: &Map) -> Result<usize, DatapathError> {
    if name == LB_SOURCE_RANGES {
        return count_source_ranges(map);
    }
    by_types!(name, count_typed(map))
}

fn copy(name: &'static str, from: &Map, to: &mut Map) -> Result<(), DatapathError> {
    if name == LB_SOURCE_RANGES {
        return copy_source_ranges(from, to);
    }
    if name == LB_CT_V1 {
        return copy_converted::<LbCtKey, LbCtEntryV1, LbCtEntry>(name, from, to);
    }
    by_types!(name, copy_typed(from, to))
}

fn count_source_ranges(map: &Map) -> Result<usize, DatapathError> {
    let failed = |source| DatapathError::Map {
        map: LB_SOURCE_RANGES,
        source,
    };
    let map: LpmTrie<&MapData, LbSrcRange, u8> = LpmTrie::try_from(map).map_err(failed)?;
    Ok(map.keys().count())
}

/// The source ranges' LPM trie, which aya types apart from hash maps.
fn copy_source_ranges(from: &Map, to: &mut Map) -> Result<(), DatapathError> {
    let failed = |source| DatapathError::Map {
        map: LB_SOURCE_RANGES,
        source,
    };
    let from: LpmTrie<&MapData, LbSrcRange, u8> = LpmTrie::try_from(from).map_err(failed)?;
    let mut to: LpmTrie<&mut MapData, LbSrcRange, u8> = LpmTrie::try_from(to).map_err(failed)?;
    for item in from.iter() {
        let (key, value) = item.map_err(failed)?;
        to.insert(&key, value, 0).map_err(failed)?;
    }
    Ok(())
}

/// Whether a resize copies the map `name` (and counts it against the new size).
#[cfg(test)]
fn copied(name: &'static str) -> bool {
    fn typed<K: Pod, V: Pod>(_: &'static str) -> Result<bool, DatapathError> {
        Ok(size_of::<K>() + size_of::<V>() > 0)
    }
    if name == LB_SOURCE_RANGES {
        return true;
    }
    let known: Result<bool, DatapathError> = by_types!(name, typed());
    known.unwrap_or(false)
}

fn count_typed<K: Pod, V: Pod>(name: &'static str, map: &Map) -> Result<usize, DatapathError> {
    let failed = |source| DatapathError::Map { map: name, source };
    let map: HashMap<&MapData, K, V> = HashMap::try_from(map).map_err(failed)?;
    Ok(map.keys().count())
}

fn copy_typed<K: Pod, V: Pod>(
    name: &'static str,
    from: &Map,
    to: &mut Map,
) -> Result<(), DatapathError> {
    copy_converted::<K, V, V>(name, from, to)
}

/// Copies every entry of `from` (values `Old`) into `to` (values `New`), converted.
fn copy_converted<K: Pod, Old: Pod, New: Pod + From<Old>>(
    name: &'static str,
    from: &Map,
    to: &mut Map,
) -> Result<(), DatapathError> {
    let failed = |source| DatapathError::Map { map: name, source };
    let from: HashMap<&MapData, K, Old> = HashMap::try_from(from).map_err(failed)?;
    let mut to: HashMap<&mut MapData, K, New> = HashMap::try_from(to).map_err(failed)?;
    for item in from.iter() {
        let (key, value) = match item {
            Ok(entry) => entry,
            // Deleted while we read (a socket closed): nothing to copy.
            Err(MapError::KeyNotFound) => continue,
            Err(e) => return Err(failed(e)),
        };
        match to.insert(key, New::from(value), BPF_NOEXIST) {
            Ok(()) => {}
            Err(MapError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(nix::libc::EEXIST) => {}
            Err(e) => return Err(failed(e)),
        }
    }
    Ok(())
}

/// Removes the pins an interrupted resize left under `pin_dir` (for `lbctl cleanup`);
/// returns them.
pub fn remove_migration_leftovers(pin_dir: &Path) -> Result<Vec<PathBuf>, DatapathError> {
    let dir = pin_dir.join(MIGRATE_DIR);
    let mut removed = Vec::new();
    let predecessors = PREDECESSORS.into_iter().map(|(old, _)| old);
    for name in SOCK_LB_MAPS.into_iter().chain(PKT_MAPS).chain(predecessors) {
        remove_if_present(dir.join(name), |p| std::fs::remove_file(p), &mut removed)?;
    }
    remove_if_present(dir, |p| std::fs::remove_dir(p), &mut removed)?;
    Ok(removed)
}

#[cfg(test)]
mod copy_table_tests {
    use super::*;

    /// A map `bpf.lbMapMax` sizes is replaced on a resize: one the copy table does not name
    /// would come back empty (the connected sockets' map once did, and their getpeername showed
    /// the backend), and its entries would not be counted against the new size.
    #[test]
    fn every_map_a_resize_replaces_is_copied() {
        let missing: Vec<&str> = SOCK_LB_SIZED_MAPS
            .into_iter()
            .chain(PKT_SIZED_MAPS)
            .filter(|name| !copied(name) && !rebuilt_not_copied(name))
            .collect();
        assert!(missing.is_empty(), "not copied on a resize: {missing:?}");
    }

    /// Both builds of the socket programs pin the same maps in the same directory: an agent
    /// that loads the other build (another kernel's probe answer) must find them as its own.
    #[test]
    fn both_builds_of_the_socket_programs_define_the_same_maps() {
        let specs = |object| specs_of(object, &SOCK_LB_MAPS, &SOCK_LB_SIZED_MAPS, 1024).unwrap();
        assert_eq!(
            specs(ebpf::sock_lb_object()),
            specs(ebpf::sock_lb_atomics_object())
        );
    }
}
