//! The kernel's maps behind [`DatapathMaps`]: the pinned maps of the loaded socket programs
//! and, when NodePort is handled at tc, those of the packet programs.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

use super::DatapathMaps;
use crate::datapath::{
    ApplyPhase, ApplyReport, DatapathError, DeviceAddrs, LocalAddrsReport, MapContents, MapDelta,
    NodePortLb, SockLb,
};

/// A node's loaded programs, whose maps the reconciler writes.
#[derive(Debug)]
pub struct KernelMaps<'a> {
    /// The socket programs (the service maps, shared with the packet programs).
    pub sock_lb: &'a mut SockLb,
    /// The packet programs, when loaded (`nodePort.enabled`).
    pub nodeport: Option<&'a mut NodePortLb>,
}

impl DatapathMaps for KernelMaps<'_> {
    /// The Maglev tables are not read here: nothing is laid out from them, and
    /// `NodePortLb::apply_maglev` compares with what it last wrote.
    fn read_services(&mut self) -> Result<MapContents, DatapathError> {
        self.sock_lb.service_maps()?.read()
    }

    /// The Maglev tables of frontend ids that change hands go first; the others are written
    /// once every backend they name is, and deleted before any backend is (see
    /// `ServiceMaps::apply_with`).
    fn apply_services(
        &mut self,
        have: &MapContents,
        delta: &MapDelta,
    ) -> Result<ApplyReport, DatapathError> {
        let mut nodeport = self.nodeport.as_deref_mut();
        self.sock_lb
            .service_maps()?
            .apply_delta(have, delta, |phase, have, delta| {
                match (phase, nodeport.as_deref_mut()) {
                    (_, None) => Ok(ApplyReport::default()),
                    (ApplyPhase::BeforeWrites, Some(nodeport)) => {
                        nodeport.drop_tables(&delta.reassigned_ids(have))
                    }
                    (ApplyPhase::Written, Some(nodeport)) => match &delta.maglev {
                        Some(tables) => nodeport.apply_maglev(tables),
                        None => Ok(ApplyReport::default()),
                    },
                }
            })
    }

    fn service_capacity(&mut self) -> Result<usize, DatapathError> {
        self.sock_lb.service_capacity()
    }

    fn set_local_addresses(&mut self, addrs: &[IpAddr]) -> Result<LocalAddrsReport, DatapathError> {
        self.sock_lb.set_local_addresses(addrs)
    }

    /// Without the packet programs nothing reads the device map, and it is not loaded.
    fn set_devices(&mut self, devices: &[DeviceAddrs]) -> Result<usize, DatapathError> {
        match self.nodeport.as_deref_mut() {
            Some(nodeport) => nodeport.set_devices(devices),
            None => Ok(0),
        }
    }

    fn translated_sockets(&mut self) -> Result<HashSet<(u64, SocketAddr)>, DatapathError> {
        self.sock_lb.translated_sockets()
    }

    fn forget_translated(&mut self, sockets: &[(u64, SocketAddr)]) -> Result<(), DatapathError> {
        self.sock_lb.forget_translated(sockets)
    }
}
