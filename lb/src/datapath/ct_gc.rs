//! The garbage-collection rule of the packet programs' conntrack map (`lb_ct_v2`): which
//! entries the agent deletes. The programs only ever refresh an entry's `expires`; deleting is
//! userspace's job, and the simulator applies the same rule to its table.

use std::collections::{BTreeMap, BTreeSet};

use ebpf::maps::{LbCtEntry, LbCtKey};

/// The keys to delete at `now` (CLOCK_MONOTONIC seconds): every entry whose `expires` is
/// before `now`, unless its twin (the other direction of the flow,
/// [`LbCtEntry::twin_key`]) is still alive. A flow's two entries thus go together, and an
/// entry whose twin was lost (LRU eviction, a crash between two writes) goes alone.
pub fn expired_keys(entries: &BTreeMap<LbCtKey, LbCtEntry>, now: u32) -> BTreeSet<LbCtKey> {
    let expired = |e: &LbCtEntry| e.expires < now;
    entries
        .iter()
        .filter(|(key, entry)| {
            expired(entry) && entries.get(&entry.twin_key(key.proto)).is_none_or(expired)
        })
        .map(|(key, _)| *key)
        .collect()
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use ebpf::maps::{ct_flags, LbAddr};

    use super::*;

    fn ip(s: &str) -> LbAddr {
        LbAddr::from(s.parse::<IpAddr>().unwrap())
    }

    /// A flow 10.0.0.1:40000 -> 192.0.2.1:30080 balanced to 10.0.1.5:8080: its forward and
    /// reply entries, expiring at the given seconds.
    fn flow(client_port: u16, fwd_expires: u32, reply_expires: u32) -> [(LbCtKey, LbCtEntry); 2] {
        let key = |s, d, sp: u16, dp: u16| LbCtKey {
            saddr: ip(s),
            daddr: ip(d),
            sport: sp.to_be(),
            dport: dp.to_be(),
            proto: 6,
            pad: [0; 3],
        };
        let entry = |s, d, sp: u16, dp: u16, flags, expires| LbCtEntry {
            saddr: ip(s),
            daddr: ip(d),
            sport: sp.to_be(),
            dport: dp.to_be(),
            rev_nat_index: 1,
            flags,
            pad: 0,
            backend_id: 1,
            expires,
            hop: Default::default(),
        };
        [
            (
                key("10.0.0.1", "192.0.2.1", client_port, 30080),
                entry("10.0.0.1", "10.0.1.5", client_port, 8080, 0, fwd_expires),
            ),
            (
                key("10.0.1.5", "10.0.0.1", 8080, client_port),
                entry(
                    "192.0.2.1",
                    "10.0.0.1",
                    30080,
                    client_port,
                    ct_flags::REPLY,
                    reply_expires,
                ),
            ),
        ]
    }

    #[test]
    fn a_flow_whose_entries_both_expired_is_deleted_whole() {
        let table: BTreeMap<_, _> = flow(40000, 99, 50).into_iter().collect();
        assert_eq!(expired_keys(&table, 100), table.keys().copied().collect());
    }

    #[test]
    fn an_expired_entry_stays_while_its_twin_is_alive() {
        // The client keeps sending, the backend is silent: the reply entry is stale, but the
        // flow is not, and its replies must still be translated when they come.
        let table: BTreeMap<_, _> = flow(40000, 200, 50).into_iter().collect();
        assert!(expired_keys(&table, 100).is_empty());
    }

    #[test]
    fn an_expired_entry_without_its_twin_is_deleted() {
        let [fwd, reply] = flow(40000, 200, 50);
        let table: BTreeMap<_, _> = [reply].into_iter().collect();
        assert_eq!(expired_keys(&table, 100), [reply.0].into_iter().collect());
        let table: BTreeMap<_, _> = [fwd].into_iter().collect();
        assert!(expired_keys(&table, 100).is_empty(), "alive, twin or not");
    }

    #[test]
    fn an_entry_expiring_this_second_is_still_alive() {
        let table: BTreeMap<_, _> = flow(40000, 100, 100).into_iter().collect();
        assert!(expired_keys(&table, 100).is_empty());
        assert_eq!(expired_keys(&table, 101).len(), 2);
    }

    #[test]
    fn other_flows_are_left_alone() {
        let mut table: BTreeMap<_, _> = flow(40000, 10, 10).into_iter().collect();
        table.extend(flow(40001, 500, 500));
        let gone = expired_keys(&table, 100);
        assert_eq!(gone.len(), 2);
        assert!(gone
            .iter()
            .all(|k| k.sport == 40000u16.to_be() || k.dport == 40000u16.to_be()));
    }
}
