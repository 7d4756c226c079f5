//! The kernel's maps behind [`DatapathMaps`]: the pinned maps of the loaded socket programs.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

use super::DatapathMaps;
use crate::datapath::{ApplyReport, DatapathError, LocalAddrsReport, MapContents, SockLb};

impl DatapathMaps for SockLb {
    fn read_services(&mut self) -> Result<MapContents, DatapathError> {
        self.service_maps()?.read()
    }

    fn apply_services(&mut self, want: &MapContents) -> Result<ApplyReport, DatapathError> {
        self.service_maps()?.apply(want)
    }

    fn set_local_addresses(&mut self, addrs: &[IpAddr]) -> Result<LocalAddrsReport, DatapathError> {
        SockLb::set_local_addresses(self, addrs)
    }

    fn translated_sockets(&mut self) -> Result<HashSet<(u64, SocketAddr)>, DatapathError> {
        SockLb::translated_sockets(self)
    }

    fn forget_translated(&mut self, sockets: &[(u64, SocketAddr)]) -> Result<(), DatapathError> {
        SockLb::forget_translated(self, sockets)
    }
}
