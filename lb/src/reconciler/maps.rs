//! [`DatapathMaps`]: the small interface the reconciler writes through. The kernel's pinned
//! maps ([`crate::datapath::SockLb`]) and the simulator ([`crate::datapath::sim::SockSim`])
//! both implement it, so a `sim` scenario runs exactly the reconciler `lb-agent` runs.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

use crate::datapath::{
    ApplyReport, DatapathError, DeviceAddrs, LocalAddrsReport, MapContents, MapDelta,
};

/// The load balancer's maps as the reconciler sees them.
pub trait DatapathMaps {
    /// Every entry of the service, backend and reverse NAT maps.
    fn read_services(&mut self) -> Result<MapContents, DatapathError>;

    /// Applies `delta` to the service, backend and reverse NAT maps (and the Maglev tables
    /// when it has them), in an order in which a lookup running meanwhile never follows a
    /// reference to a missing entry. `have` is what they hold now (as
    /// [`DatapathMaps::read_services`] returned it, or that with the last deltas applied), so
    /// they are not read again; only the delta's entries are touched.
    fn apply_services(
        &mut self,
        have: &MapContents,
        delta: &MapDelta,
    ) -> Result<ApplyReport, DatapathError>;

    /// How many entries each service map holds at most (`bpf.lbMapMax`: the service, backend,
    /// reverse NAT, affinity-match, source-range and Maglev maps are all that size).
    fn service_capacity(&mut self) -> Result<usize, DatapathError>;

    /// Makes the local-address map hold `addrs` (as many as fit); says what changed and what
    /// did not fit.
    fn set_local_addresses(&mut self, addrs: &[IpAddr]) -> Result<LocalAddrsReport, DatapathError>;

    /// Makes the NodePort device map (`lb_devices_v1`) hold exactly `devices`: the devices
    /// the packet programs are attached to, with the node's addresses on them (the SNAT
    /// source of a flow forwarded through one). Returns how many entries changed.
    fn set_devices(&mut self, devices: &[DeviceAddrs]) -> Result<usize, DatapathError>;

    /// `(socket cookie, backend)` of every connected UDP socket the hooks translated (and of
    /// unconnected sends) that they still remember, backends in canonical form (IPv4 never
    /// IPv4-mapped).
    fn translated_sockets(&mut self) -> Result<HashSet<(u64, SocketAddr)>, DatapathError>;

    /// Forgets the translation of these sockets (ones the agent destroyed, which their
    /// applications may keep open for long); entries already gone are fine.
    fn forget_translated(&mut self, sockets: &[(u64, SocketAddr)]) -> Result<(), DatapathError>;
}

/// Destroys the connected UDP sockets still pointing at backends a reconciliation removed:
/// sock_diag on the kernel, the held sockets of a node in the simulator.
pub trait UdpSocketSweeper {
    /// Destroys the connected UDP sockets whose `(cookie, peer)` is in `translated` and whose
    /// peer is in `removed`, within `scope`; returns `(cookie, peer)` of each destroyed one.
    fn sweep(
        &mut self,
        scope: crate::agent::udp_destroy::SweepScope,
        removed: &crate::datapath::RemovedBackends,
        translated: &HashSet<(u64, SocketAddr)>,
    ) -> Result<Vec<(u64, SocketAddr)>, String>;
}
