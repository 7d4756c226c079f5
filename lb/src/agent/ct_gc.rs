//! Conntrack garbage collection: every [`CT_GC_INTERVAL`] the agent deletes the `lb_ct_v1`
//! entries that are stale by the datapath contract's rule (an entry past its `expires` goes
//! together with its twin, when the twin is missing or past its own).
//!
//! The rule here, [`stale`], is a local copy of the contract's: the shared one
//! (`lb::datapath::ct_gc::stale`) is being written beside the simulator, and replaces this
//! copy once it lands.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use ebpf::maps::{LbCtEntry, LbCtKey, LB_CT};

use crate::datapath::{DatapathError, NodePortLb};

/// How often stale conntrack entries are deleted. The shortest lifetime is 10 s (a closing
/// TCP flow), so an entry outlives its flow by at most this much (the LRU map evicts under
/// pressure anyway).
pub const CT_GC_INTERVAL: Duration = Duration::from_secs(30);

/// The keys of `entries` to delete at `now` (CLOCK_MONOTONIC seconds): each entry with
/// `expires < now`, with its twin (the entry keyed by its rewritten tuple reversed), when the
/// twin is missing or expired too. An expired entry whose twin is alive stays: the flow is
/// alive in the other direction, whose next packet refreshes both.
pub fn stale(entries: &[(LbCtKey, LbCtEntry)], now: u32) -> Vec<LbCtKey> {
    let by_key: HashMap<&LbCtKey, &LbCtEntry> = entries.iter().map(|(k, e)| (k, e)).collect();
    let expired = |e: &LbCtEntry| e.expires < now;
    let mut out = BTreeSet::new();
    for (key, entry) in entries.iter().filter(|(_, e)| expired(e)) {
        let twin = entry.twin_key(key.proto);
        match by_key.get(&twin) {
            None => {
                out.insert(*key);
            }
            Some(t) if expired(t) => {
                out.insert(*key);
                out.insert(twin);
            }
            Some(_) => {}
        }
    }
    out.into_iter().collect()
}

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
    let entries: Vec<(LbCtKey, LbCtEntry)> = ct.iter().filter_map(Result::ok).collect();
    let mut deleted = 0;
    for key in stale(&entries, now) {
        match ct.remove(&key) {
            Ok(()) => deleted += 1,
            Err(aya::maps::MapError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(nix::libc::ENOENT) => {}
            Err(e) => return Err(failed(e)),
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ebpf::maps::{ct_flags, LbAddr};

    fn addr(s: &str) -> LbAddr {
        LbAddr::from(s.parse::<std::net::IpAddr>().unwrap())
    }

    /// A local flow: client 10.0.0.1:40000 -> frontend 192.168.1.1:30080 -> backend
    /// 10.1.0.5:80, forward and reply entries with these expiry seconds.
    fn flow(forward_expires: u32, reply_expires: u32) -> Vec<(LbCtKey, LbCtEntry)> {
        let key = |s: &str, d: &str, sp: u16, dp: u16| LbCtKey {
            saddr: addr(s),
            daddr: addr(d),
            sport: sp.to_be(),
            dport: dp.to_be(),
            proto: 6,
            pad: [0; 3],
        };
        let entry = |k: LbCtKey, flags, expires| LbCtEntry {
            saddr: k.saddr,
            daddr: k.daddr,
            sport: k.sport,
            dport: k.dport,
            flags,
            expires,
            ..LbCtEntry::default()
        };
        vec![
            (
                key("10.0.0.1", "192.168.1.1", 40000, 30080),
                entry(key("10.0.0.1", "10.1.0.5", 40000, 80), 0, forward_expires),
            ),
            (
                key("10.1.0.5", "10.0.0.1", 80, 40000),
                entry(
                    key("192.168.1.1", "10.0.0.1", 30080, 40000),
                    ct_flags::REPLY,
                    reply_expires,
                ),
            ),
        ]
    }

    #[test]
    fn an_expired_entry_goes_with_its_expired_twin_and_stays_while_the_twin_lives() {
        let both_expired = flow(100, 150);
        assert_eq!(stale(&both_expired, 200).len(), 2);
        let reply_alive = flow(100, 300);
        assert!(stale(&reply_alive, 200).is_empty());
        assert!(
            stale(&both_expired, 100).is_empty(),
            "expires is the last live second"
        );
    }

    #[test]
    fn an_expired_entry_without_a_twin_goes_alone() {
        let mut lone = flow(100, 300);
        lone.pop();
        assert_eq!(stale(&lone, 200), [lone[0].0]);
    }
}
