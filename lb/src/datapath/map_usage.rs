//! How full the agent's pinned maps are: entries in use and capacity of each hash-like map
//! under the pin directory, and the SNAT ports the NodePort conntrack holds. Read on demand
//! (a metrics scrape), from the pins alone, so any process that can read them can tell.

use std::collections::HashSet;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;

use aya::maps::{HashMap, MapData, MapType};
use ebpf::maps::{ct_flags, LbCtEntry, LbCtKey, LB_CT};

use super::DatapathError;

/// One map's use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapUsage {
    /// The map's pinned name (`lb_services_v1`).
    pub name: String,
    /// Entries it holds now.
    pub entries: u64,
    /// Entries it can hold (`max_entries`).
    pub capacity: u64,
}

/// The use of every hash, LRU hash and LPM trie map pinned directly under `pin_dir`, by name.
/// Arrays are left out: their entries always exist, so "in use" says nothing. A pin that is not
/// a map (a link, a directory) is skipped; a map that cannot be read is an error.
pub fn map_usage(pin_dir: &Path) -> Result<Vec<MapUsage>, DatapathError> {
    let entries = std::fs::read_dir(pin_dir).map_err(|e| DatapathError::Pin {
        path: pin_dir.to_owned(),
        detail: e.to_string(),
    })?;
    let mut usage = Vec::new();
    for entry in entries.flatten() {
        if !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let Ok(data) = MapData::from_pin(entry.path()) else {
            continue;
        };
        let Ok(info) = data.info() else { continue };
        let counted = matches!(
            info.map_type(),
            Ok(MapType::Hash
                | MapType::LruHash
                | MapType::PerCpuHash
                | MapType::LruPerCpuHash
                | MapType::LpmTrie)
        );
        if !counted {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let entries = count_keys(data.fd().as_fd(), info.key_size() as usize).map_err(|e| {
            DatapathError::Pin {
                path: entry.path(),
                detail: format!("cannot count its entries: {e}"),
            }
        })?;
        usage.push(MapUsage {
            name,
            entries,
            capacity: u64::from(info.max_entries()),
        });
    }
    usage.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(usage)
}

/// The SNAT source ports forwarded NodePort flows hold in the pinned conntrack map: distinct
/// (address, port, protocol) of its forward entries with the SNAT flag. `None` without the
/// NodePort programs (no conntrack map pinned).
pub fn snat_ports_in_use(pin_dir: &Path) -> Result<Option<u64>, DatapathError> {
    let path = pin_dir.join(LB_CT);
    if !path.exists() {
        return Ok(None);
    }
    let failed = |source| DatapathError::Map { map: LB_CT, source };
    let data = MapData::from_pin(&path).map_err(failed)?;
    let map = aya::maps::Map::HashMap(data);
    let ct: HashMap<&MapData, LbCtKey, LbCtEntry> = HashMap::try_from(&map).map_err(failed)?;
    let mut ports = HashSet::new();
    // An entry deleted while the walk passes it ends the walk early in the worst case: a
    // scrape undercounts, the next one is right.
    for (key, entry) in ct.iter().flatten() {
        if entry.flags & ct_flags::SNAT != 0 && entry.flags & ct_flags::REPLY == 0 {
            ports.insert((entry.saddr, entry.sport, key.proto));
        }
    }
    Ok(Some(ports.len() as u64))
}

/// The `bpf_attr` of `BPF_MAP_GET_NEXT_KEY`.
#[repr(C)]
struct NextKeyAttr {
    map_fd: u32,
    pad: u32,
    key: u64,
    next_key: u64,
}

const BPF_MAP_GET_NEXT_KEY: i64 = 4;

/// Keys in the map behind `fd`, whose keys are `key_size` bytes, walked with
/// `BPF_MAP_GET_NEXT_KEY` (whatever the key's type).
fn count_keys(fd: BorrowedFd<'_>, key_size: usize) -> std::io::Result<u64> {
    let mut key = vec![0u8; key_size];
    let mut next = vec![0u8; key_size];
    let mut count = 0u64;
    let mut first = true;
    loop {
        let attr = NextKeyAttr {
            map_fd: fd.as_raw_fd() as u32,
            pad: 0,
            // A null key asks for the first one.
            key: if first { 0 } else { key.as_ptr() as u64 },
            next_key: next.as_mut_ptr() as u64,
        };
        // SAFETY: the attr points at two buffers of the map's key size, both alive for the call.
        let rc = unsafe {
            nix::libc::syscall(
                nix::libc::SYS_bpf,
                BPF_MAP_GET_NEXT_KEY,
                &attr as *const NextKeyAttr,
                std::mem::size_of::<NextKeyAttr>(),
            )
        };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(nix::libc::ENOENT) => Ok(count),
                _ => Err(e),
            };
        }
        count += 1;
        first = false;
        std::mem::swap(&mut key, &mut next);
    }
}
