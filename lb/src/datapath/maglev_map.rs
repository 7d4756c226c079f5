//! `lb_maglev_v1`, the packet programs' Maglev tables: `u32` rev_nat_index -> `[u32; M]`
//! backend ids, M = `maglev.tableSize`.
//!
//! The value's length is only known when the agent starts, so the agent creates and pins the map
//! itself before loading the programs (which then adopt it by name) and reads and writes it
//! with the raw `bpf(2)` element commands, whose buffers take a length at run time; aya's typed
//! maps want it at compile time. One update replaces a whole table, so a lookup sees the old
//! table or the new one, never a mix. Why one hash rather than Cilium's hash of 1-entry arrays:
//! the same atomic per-service replace with one lookup instead of two and one map to pin,
//! migrate and read back.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;

use aya::maps::{MapData, MapError};
use aya::sys::SyscallError;
use ebpf::maps::LB_MAGLEV;

use super::{ApplyReport, DatapathError};

/// The value length (backend ids) of `lb_maglev_v1` for these settings: `maglev.tableSize`
/// with Maglev; 1 otherwise, so a node balancing at random keeps no large buffers (the map
/// stays empty, and switching the algorithm replaces it, see [`super::migrate`]).
pub fn maglev_value_len(maglev_m: Option<u32>) -> u32 {
    maglev_m.unwrap_or(1)
}

/// How many tables `lb_maglev_v1` holds: `bpf.lbMapMax`, but no more than Linux before 5.11
/// lets a hash map have. Those kernels refuse (E2BIG) a map whose buckets plus `max_entries`
/// full-size elements come to 4 GiB or more, even without preallocation; at the default
/// table size that is still about 65 000 tables, at the largest (131071) about 8 000.
pub fn maglev_max_entries(map_max: u32, len: u32) -> u32 {
    // The kernel's element: a header (under 64 bytes), the key and the value, 8-byte aligned.
    let elem = 64 + 8 + (u64::from(len) * 4).next_multiple_of(8);
    let buckets = u64::from(map_max).next_power_of_two() * 16;
    let limit = u64::from(u32::MAX) - 4096 - buckets;
    u32::try_from((limit / elem).min(u64::from(map_max))).unwrap_or(map_max)
}

/// Creates `lb_maglev_v1` in `pin_dir` with tables of `len` backend ids and room for
/// [`maglev_max_entries`] of them,
/// unless a map is pinned there already (a resize moved any of another shape aside first).
pub fn create_pinned(pin_dir: &Path, map_max: u32, len: u32) -> Result<(), DatapathError> {
    let path = pin_dir.join(LB_MAGLEV);
    if path.exists() {
        return Ok(());
    }
    let object =
        aya_obj::Object::parse(ebpf::nodeport_object()).map_err(|e| DatapathError::Object {
            detail: e.to_string(),
        })?;
    let mut def = object
        .maps
        .get(LB_MAGLEV)
        .cloned()
        .ok_or(DatapathError::Missing {
            kind: "map",
            name: LB_MAGLEV,
        })?;
    def.set_value_size(len * 4);
    def.set_max_entries(maglev_max_entries(map_max, len));
    let map = MapData::create(def, LB_MAGLEV, None).map_err(|source| DatapathError::Map {
        map: LB_MAGLEV,
        source,
    })?;
    map.pin(&path).map_err(|e| DatapathError::Pin {
        path: path.clone(),
        detail: e.to_string(),
    })
}

/// `lb_maglev_v1` as the agent reads and writes it.
#[derive(Debug)]
pub struct MaglevMap<'a> {
    fd: BorrowedFd<'a>,
    len: usize,
    capacity: usize,
}

/// The `bpf_attr` of the element commands.
#[repr(C)]
struct ElemAttr {
    map_fd: u32,
    pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

const BPF_MAP_LOOKUP_ELEM: i64 = 1;
const BPF_MAP_UPDATE_ELEM: i64 = 2;
const BPF_MAP_DELETE_ELEM: i64 = 3;
const BPF_MAP_GET_NEXT_KEY: i64 = 4;

impl<'a> MaglevMap<'a> {
    /// The map behind `data`, whose tables are `len` ids long and which holds `capacity`.
    pub fn new(data: &'a MapData, len: u32, capacity: u32) -> Self {
        MaglevMap {
            fd: data.fd().as_fd(),
            len: len as usize,
            capacity: capacity as usize,
        }
    }

    fn call(&self, cmd: i64, key: *const u32, value: u64) -> Result<(), std::io::Error> {
        let attr = ElemAttr {
            map_fd: self.fd.as_raw_fd() as u32,
            pad: 0,
            key: key as u64,
            value,
            flags: 0,
        };
        // SAFETY: the attr points at a key of 4 bytes and a value buffer of the map's value
        // size (or a 4-byte next key), both alive for the call.
        let rc = unsafe {
            nix::libc::syscall(
                nix::libc::SYS_bpf,
                cmd,
                &attr as *const ElemAttr,
                std::mem::size_of::<ElemAttr>(),
            )
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    fn failed(call: &'static str, io_error: std::io::Error) -> DatapathError {
        DatapathError::Map {
            map: LB_MAGLEV,
            source: MapError::SyscallError(SyscallError { call, io_error }),
        }
    }

    /// Every table, by rev_nat_index.
    pub fn read(&self) -> Result<BTreeMap<u16, Vec<u32>>, DatapathError> {
        let mut keys = Vec::new();
        let mut next: u32 = 0;
        let mut cur: Option<u32> = None;
        loop {
            let key_ptr = cur.as_ref().map_or(std::ptr::null(), |k| k as *const u32);
            match self.call(BPF_MAP_GET_NEXT_KEY, key_ptr, &mut next as *mut u32 as u64) {
                Ok(()) => {
                    keys.push(next);
                    cur = Some(next);
                }
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOENT) => break,
                Err(e) => return Err(Self::failed("bpf_map_get_next_key", e)),
            }
        }
        let mut out = BTreeMap::new();
        for key in keys {
            let mut table = vec![0u32; self.len];
            match self.call(BPF_MAP_LOOKUP_ELEM, &key, table.as_mut_ptr() as u64) {
                Ok(()) => {
                    // Keys beyond u16 are no rev_nat_index: nothing this agent wrote.
                    if let Ok(index) = u16::try_from(key) {
                        out.insert(index, table);
                    }
                }
                // Deleted while we read.
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOENT) => {}
                Err(e) => return Err(Self::failed("bpf_map_lookup_elem", e)),
            }
        }
        Ok(out)
    }

    /// How many tables the map holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Makes the map, holding `have`, hold exactly `want`: tables whose content differs are
    /// replaced (one update each), those nothing wants deleted, the rest left alone. A table
    /// of another length than the map's is refused; `want` must fit [`MaglevMap::capacity`].
    pub fn apply(
        &self,
        have: &BTreeMap<u16, Vec<u32>>,
        want: &BTreeMap<u16, Vec<u32>>,
    ) -> Result<ApplyReport, DatapathError> {
        let mut report = ApplyReport::default();
        for (&index, table) in want {
            if have.get(&index) == Some(table) {
                continue;
            }
            if table.len() != self.len {
                return Err(Self::failed(
                    "bpf_map_update_elem",
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidInput,
                        format!(
                            "a table of {} entries for a map of {}-entry tables",
                            table.len(),
                            self.len
                        ),
                    ),
                ));
            }
            let key = u32::from(index);
            self.call(BPF_MAP_UPDATE_ELEM, &key, table.as_ptr() as u64)
                .map_err(|e| Self::failed("bpf_map_update_elem", e))?;
            report.written += 1;
        }
        for index in have.keys().filter(|k| !want.contains_key(k)) {
            let key = u32::from(*index);
            match self.call(BPF_MAP_DELETE_ELEM, &key, 0) {
                Ok(()) => report.deleted += 1,
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOENT) => {}
                Err(e) => return Err(Self::failed("bpf_map_delete_elem", e)),
            }
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Linux 5.10 refused the default (16381 entries, 65536 tables: 4.3 GB of elements) with
    /// E2BIG; the capacity keeps every size under its 4 GiB check.
    #[test]
    fn the_capacity_stays_under_the_old_kernels_4_gib_cost_check() {
        for &len in crate::maglev::TABLE_SIZES.iter() {
            for map_max in [1024, 65536, 512 * 1024] {
                let entries = maglev_max_entries(map_max, len);
                let cost = u64::from(entries) * (48 + 8 + u64::from(len) * 4)
                    + u64::from(map_max).next_power_of_two() * 16;
                assert!(cost < u64::from(u32::MAX) - 4096, "{len} x {entries}");
                assert!(entries <= map_max);
            }
        }
        assert_eq!(
            maglev_max_entries(65536, 251),
            65536,
            "small tables: lbMapMax"
        );
        assert!(maglev_max_entries(65536, 16381) > 60_000);
        assert!(maglev_max_entries(65536, 131071) > 8_000);
    }
}
