//! The socket-level load balancer: loading the cgroup sock_addr programs with their load-time
//! configuration, attaching them to a cgroup, and writing services into their maps.

use std::fs::File;
use std::net::SocketAddrV4;
use std::path::Path;

use aya::maps::{HashMap, MapData};
use aya::programs::{CgroupAttachMode, CgroupSockAddr};
use aya::{Ebpf, EbpfLoader};
use ebpf::maps::{
    svc_flags, Lb4Backend, Lb4Key, Lb4ReverseNat, LbService, LB4_BACKENDS, LB4_REVERSE_NAT,
    LB4_REVERSE_SK, LB4_SERVICES, SCOPE_EXT,
};

use super::DatapathError;
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

/// A backend as written to the maps: its id and address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackendEntry {
    /// The backend id (key of the backends map).
    pub id: u32,
    /// Its address.
    pub addr: SocketAddrV4,
}

impl SockLb {
    /// Loads the programs and creates the maps, sized and configured from `config`.
    pub fn load(config: SockLbConfig) -> Result<Self, DatapathError> {
        let tcp = u8::from(config.protocols.tcp);
        let udp = u8::from(config.protocols.udp);
        let mut loader = EbpfLoader::new();
        loader
            .override_global("cfg_enable_tcp", &tcp, true)
            .override_global("cfg_enable_udp", &udp, true);
        for map in [LB4_SERVICES, LB4_BACKENDS, LB4_REVERSE_NAT, LB4_REVERSE_SK] {
            loader.map_max_entries(map, config.map_max);
        }
        let mut ebpf = loader.load(ebpf::sock_lb_object())?;
        for (name, _) in ebpf::SOCK_LB_PROGRAMS {
            let program: &mut CgroupSockAddr = program(&mut ebpf, name)?;
            program.load().map_err(|source| DatapathError::Program {
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
            let program: &mut CgroupSockAddr = program(&mut self.ebpf, name)?;
            // With BPF links (kernel >= 5.7) several programs coexist on a cgroup whatever the
            // mode, and the kernel refuses the multi flag on link creation; older kernels
            // attach exclusively.
            program
                .attach(&dir, CgroupAttachMode::Single)
                .map_err(|source| DatapathError::Program {
                    program: name,
                    source,
                })?;
        }
        Ok(())
    }

    /// Writes an IPv4 ClusterIP-style service: the backends, one slot per backend, the service
    /// entry and its reverse NAT entry. `rev_nat_index` identifies the frontend.
    pub fn upsert_service_v4(
        &mut self,
        frontend: SocketAddrV4,
        proto: u8,
        rev_nat_index: u16,
        backends: &[BackendEntry],
    ) -> Result<(), DatapathError> {
        let count = u16::try_from(backends.len()).map_err(|_| DatapathError::TooManyBackends {
            frontend: frontend.to_string(),
            count: backends.len(),
            max: usize::from(u16::MAX),
        })?;
        let mut backend_map: HashMap<&mut MapData, u32, Lb4Backend> = self.map(LB4_BACKENDS)?;
        for b in backends {
            insert(
                &mut backend_map,
                LB4_BACKENDS,
                b.id,
                Lb4Backend::new(*b.addr.ip(), b.addr.port(), proto),
            )?;
        }
        let mut services: HashMap<&mut MapData, Lb4Key, LbService> = self.map(LB4_SERVICES)?;
        let key = |slot| Lb4Key::new(*frontend.ip(), frontend.port(), proto, SCOPE_EXT, slot);
        for (slot, b) in (1..).zip(backends) {
            let entry = LbService {
                backend_id: b.id,
                rev_nat_index,
                ..LbService::default()
            };
            insert(&mut services, LB4_SERVICES, key(slot), entry)?;
        }
        // The service entry last: a lookup never sees a count without its slots.
        let service = LbService {
            count,
            rev_nat_index,
            flags: svc_flags::CLUSTER_IP,
            ..LbService::default()
        };
        insert(&mut services, LB4_SERVICES, key(0), service)?;
        let mut reverse: HashMap<&mut MapData, u16, Lb4ReverseNat> = self.map(LB4_REVERSE_NAT)?;
        insert(
            &mut reverse,
            LB4_REVERSE_NAT,
            rev_nat_index,
            Lb4ReverseNat::new(*frontend.ip(), frontend.port()),
        )
    }

    fn map<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &'static str,
    ) -> Result<HashMap<&mut MapData, K, V>, DatapathError> {
        let map = self
            .ebpf
            .map_mut(name)
            .ok_or(DatapathError::Missing { kind: "map", name })?;
        HashMap::try_from(map).map_err(|source| DatapathError::Map { map: name, source })
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

fn insert<K: aya::Pod, V: aya::Pod>(
    map: &mut HashMap<&mut MapData, K, V>,
    name: &'static str,
    key: K,
    value: V,
) -> Result<(), DatapathError> {
    map.insert(key, value, 0)
        .map_err(|source| DatapathError::Map { map: name, source })
}
