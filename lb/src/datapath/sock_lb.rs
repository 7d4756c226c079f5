//! The socket-level load balancer: loading the cgroup sock_addr programs with their load-time
//! configuration and their maps pinned in the agent's bpffs directory, and attaching them to a
//! cgroup.

use std::fs::File;
use std::path::Path;

use aya::maps::{HashMap, MapData};
use aya::programs::{CgroupAttachMode, CgroupSockAddr};
use aya::{Ebpf, EbpfLoader};
use ebpf::maps::{LB_BACKENDS, LB_REVERSE_NAT, LB_SERVICES, SOCK_LB_MAPS};

use super::{DatapathError, ServiceMaps};
use crate::config::Protocols;

/// Load-time configuration of the socket programs.
#[derive(Clone, Copy, Debug)]
pub struct SockLbConfig {
    /// Which protocols to translate (`hostServices.protocols`).
    pub protocols: Protocols,
    /// Entries of each map (`bpf.lbMapMax`).
    pub map_max: u32,
}

/// The loaded socket-level load balancer.
#[derive(Debug)]
pub struct SockLb {
    ebpf: Ebpf,
}

impl SockLb {
    /// Loads the programs. Maps already pinned in `pin_dir` (by an earlier agent) are reused
    /// with their contents; missing ones are created and pinned there.
    pub fn load(config: SockLbConfig, pin_dir: &Path) -> Result<Self, DatapathError> {
        let tcp = u8::from(config.protocols.tcp);
        let udp = u8::from(config.protocols.udp);
        let mut loader = EbpfLoader::new();
        loader
            .override_global("cfg_enable_tcp", &tcp, true)
            .override_global("cfg_enable_udp", &udp, true)
            .default_map_pin_directory(pin_dir);
        for map in SOCK_LB_MAPS {
            loader.map_max_entries(map, config.map_max);
        }
        let mut ebpf = loader.load(ebpf::sock_lb_object())?;
        for (name, _) in ebpf::SOCK_LB_PROGRAMS {
            program(&mut ebpf, name)?
                .load()
                .map_err(|source| DatapathError::Program {
                    program: name,
                    source,
                })?;
        }
        Ok(SockLb { ebpf })
    }

    /// Attaches every hook to the cgroup at `cgroup` (a cgroup v2 directory); processes in it
    /// and below are load-balanced. The links live as long as `self`.
    pub fn attach(&mut self, cgroup: &Path) -> Result<(), DatapathError> {
        let dir = File::open(cgroup).map_err(|source| DatapathError::Cgroup {
            path: cgroup.to_owned(),
            source,
        })?;
        for (name, _) in ebpf::SOCK_LB_PROGRAMS {
            // With BPF links (kernel >= 5.7) several programs coexist on a cgroup whatever the
            // mode, and the kernel refuses the multi flag on link creation; older kernels
            // attach exclusively.
            program(&mut self.ebpf, name)?
                .attach(&dir, CgroupAttachMode::Single)
                .map_err(|source| DatapathError::Program {
                    program: name,
                    source,
                })?;
        }
        Ok(())
    }

    /// The service maps, for reading and applying [`super::MapContents`].
    pub fn service_maps(&mut self) -> Result<ServiceMaps<&mut MapData>, DatapathError> {
        let (mut services, mut backends, mut reverse_nat) = (None, None, None);
        for (name, map) in self.ebpf.maps_mut() {
            match name {
                LB_SERVICES => services = Some(map),
                LB_BACKENDS => backends = Some(map),
                LB_REVERSE_NAT => reverse_nat = Some(map),
                _ => {}
            }
        }
        let missing = |name| DatapathError::Missing { kind: "map", name };
        let typed = |name| move |source| DatapathError::Map { map: name, source };
        Ok(ServiceMaps::new(
            HashMap::try_from(services.ok_or(missing(LB_SERVICES))?).map_err(typed(LB_SERVICES))?,
            HashMap::try_from(backends.ok_or(missing(LB_BACKENDS))?).map_err(typed(LB_BACKENDS))?,
            HashMap::try_from(reverse_nat.ok_or(missing(LB_REVERSE_NAT))?)
                .map_err(typed(LB_REVERSE_NAT))?,
        ))
    }
}

fn program<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut CgroupSockAddr, DatapathError> {
    ebpf.program_mut(name)
        .ok_or(DatapathError::Missing {
            kind: "program",
            name,
        })?
        .try_into()
        .map_err(|source| DatapathError::Program {
            program: name,
            source,
        })
}
