//! [`MemoryMaps`]: service maps held in memory, for tests and benches that run the reconciler
//! without a kernel: what it writes is applied to a [`MapContents`] of a given capacity; and
//! [`NoSockets`], a UDP socket sweeper for reconcilers that have none to destroy.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

use super::{DatapathMaps, UdpSocketSweeper};
use crate::agent::udp_destroy::SweepScope;
use crate::datapath::{
    ApplyReport, DatapathError, DeviceAddrs, LocalAddrsReport, MapContents, MapDelta,
    RemovedBackends,
};

/// Maps that apply what they are given, of `capacity` entries each; no local addresses,
/// devices or translated sockets are kept.
#[derive(Clone, Debug, Default)]
pub struct MemoryMaps {
    /// What the maps hold.
    pub contents: MapContents,
    /// Entries per map (`bpf.lbMapMax`).
    pub capacity: usize,
}

impl DatapathMaps for MemoryMaps {
    fn read_services(&mut self) -> Result<MapContents, DatapathError> {
        Ok(self.contents.clone())
    }
    fn apply_services(
        &mut self,
        _have: &MapContents,
        delta: &MapDelta,
    ) -> Result<ApplyReport, DatapathError> {
        delta.apply_to(&mut self.contents);
        Ok(delta.report())
    }
    fn service_capacity(&mut self) -> Result<usize, DatapathError> {
        Ok(self.capacity)
    }
    fn set_local_addresses(&mut self, _: &[IpAddr]) -> Result<LocalAddrsReport, DatapathError> {
        Ok(LocalAddrsReport::default())
    }
    fn set_devices(&mut self, _: &[DeviceAddrs]) -> Result<usize, DatapathError> {
        Ok(0)
    }
    fn translated_sockets(&mut self) -> Result<HashSet<(u64, SocketAddr)>, DatapathError> {
        Ok(HashSet::new())
    }
    fn forget_translated(&mut self, _: &[(u64, SocketAddr)]) -> Result<(), DatapathError> {
        Ok(())
    }
}

/// A UDP socket sweeper with nothing to sweep, for tests and benches whose services are TCP
/// or that run without sockets.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoSockets;

impl UdpSocketSweeper for NoSockets {
    fn sweep(
        &mut self,
        _: SweepScope,
        _: &RemovedBackends,
        _: &HashSet<(u64, SocketAddr)>,
    ) -> Result<Vec<(u64, SocketAddr)>, String> {
        Ok(Vec::new())
    }
}
