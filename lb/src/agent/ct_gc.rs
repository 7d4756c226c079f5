//! Conntrack garbage collection: every [`CT_GC_INTERVAL`] the agent deletes the `lb_ct_v2`
//! entries that are stale by the datapath contract's rule, [`crate::datapath::ct_gc`] (the one
//! the simulator applies to its table): an entry past its `expires` goes, with its twin, unless
//! the twin is still alive.

use std::collections::BTreeMap;
use std::time::Duration;

use ebpf::maps::{LbCtEntry, LbCtKey, LB_CT};

use crate::datapath::{ct_gc::expired_keys, DatapathError, NodePortLb};

/// How often stale conntrack entries are deleted. The shortest lifetime is 10 s (a closing
/// TCP flow), so an entry outlives its flow by at most this much (the LRU map evicts under
/// pressure anyway).
pub const CT_GC_INTERVAL: Duration = Duration::from_secs(30);

/// The CLOCK_MONOTONIC second the programs' `bpf_ktime_get_ns() / 1e9` reads now.
pub fn monotonic_now() -> u32 {
    let mut t = nix::libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec for the duration of the call; CLOCK_MONOTONIC always exists.
    unsafe { nix::libc::clock_gettime(nix::libc::CLOCK_MONOTONIC, &mut t) };
    u32::try_from(t.tv_sec).unwrap_or(u32::MAX)
}

/// Deletes the stale entries of the conntrack map at `now`; returns how many went (one deleted
/// meanwhile by the LRU or the programs counts as gone).
pub fn collect(nodeport: &mut NodePortLb, now: u32) -> Result<usize, DatapathError> {
    let failed = |source| DatapathError::Map { map: LB_CT, source };
    let mut ct = nodeport.conntrack()?;
    // An entry can vanish between the key walk and its read (LRU eviction): skip it.
    let entries: BTreeMap<LbCtKey, LbCtEntry> = ct.iter().filter_map(Result::ok).collect();
    let mut deleted = 0;
    for key in expired_keys(&entries, now) {
        match ct.remove(&key) {
            Ok(()) => deleted += 1,
            Err(aya::maps::MapError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(nix::libc::ENOENT) => {}
            Err(e) => return Err(failed(e)),
        }
    }
    Ok(deleted)
}
