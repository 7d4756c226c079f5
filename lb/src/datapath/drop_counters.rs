//! The packet programs' drop counters (`lb_counters_v1`, one slot per reason and CPU): their
//! names and meanings, and their sums as the pinned map holds them — what `lbctl status
//! --verbose` reports to operators and `lbctl explain` names when the simulator drops a packet.

use std::path::Path;

use aya::maps::{Map, MapData, PerCpuArray};
use ebpf::maps::{counter, LB_COUNTERS};
use serde::{Deserialize, Serialize};

use super::DatapathError;

/// A stable name for each counter (`snake_case`, as a metric label would carry it), and what
/// it means for the packet that was dropped.
pub fn describe(index: u8) -> (&'static str, &'static str) {
    match index {
        counter::NO_BACKEND => ("no_backend", "the service has no endpoints"),
        counter::SNAT_EXHAUSTED => (
            "snat_exhausted",
            "no SNAT port was free (the range is exhausted)",
        ),
        counter::NO_DEVICE_ADDR => (
            "no_device_addr",
            "the device towards the backend has no address of the family",
        ),
        counter::FIB_FAILED => ("fib_failed", "no route to forward it on"),
        counter::TTL_EXCEEDED => ("ttl_exceeded", "its TTL ran out"),
        counter::CT_FULL => ("ct_full", "the conntrack table could not take the flow"),
        counter::NO_LOCAL_BACKEND => (
            "no_local_backend",
            "the traffic policy is Local and no endpoint runs on this node",
        ),
        counter::SOURCE_RANGE => (
            "source_range",
            "the client is outside the service's loadBalancerSourceRanges",
        ),
        _ => ("unknown", "an unknown reason"),
    }
}

/// How many packets the programs dropped for one reason since the map was created.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DropCount {
    /// The counter's name ([`describe`]).
    pub reason: String,
    /// Packets dropped, summed over CPUs.
    pub packets: u64,
}

/// The counters pinned in `pin_dir`, summed over CPUs, in index order.
pub fn read_drop_counters(pin_dir: &Path) -> Result<[u64; counter::MAX as usize], DatapathError> {
    let failed = |source| DatapathError::Map {
        map: LB_COUNTERS,
        source,
    };
    let data = MapData::from_pin(pin_dir.join(LB_COUNTERS)).map_err(failed)?;
    let map: PerCpuArray<MapData, u64> =
        PerCpuArray::try_from(Map::PerCpuArray(data)).map_err(failed)?;
    let mut sums = [0u64; counter::MAX as usize];
    for (index, sum) in sums.iter_mut().enumerate() {
        let per_cpu = map.get(&(index as u32), 0).map_err(failed)?;
        *sum = per_cpu.iter().copied().sum();
    }
    Ok(sums)
}

/// The counters that are not zero, named.
pub fn nonzero_drops(sums: &[u64]) -> Vec<DropCount> {
    sums.iter()
        .enumerate()
        .filter(|(_, &n)| n > 0)
        .map(|(i, &packets)| DropCount {
            reason: describe(i as u8).0.to_owned(),
            packets,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_has_its_own_name() {
        let names: std::collections::BTreeSet<_> =
            (0..counter::MAX).map(|i| describe(i).0).collect();
        assert_eq!(names.len(), usize::from(counter::MAX));
        assert!(!names.contains("unknown"));
    }

    #[test]
    fn only_counters_that_counted_are_listed() {
        let mut sums = [0u64; counter::MAX as usize];
        sums[usize::from(counter::SNAT_EXHAUSTED)] = 3;
        assert_eq!(
            nonzero_drops(&sums),
            vec![DropCount {
                reason: "snat_exhausted".into(),
                packets: 3
            }]
        );
    }
}
