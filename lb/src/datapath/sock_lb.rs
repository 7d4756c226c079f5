//! The socket-level load balancer: loading the cgroup sock_addr programs with their load-time
//! configuration and their maps pinned in the agent's bpffs directory, and attaching them to a
//! cgroup through BPF links pinned beside the maps, so they stay attached after the agent
//! exits and the next agent (or `lbctl cleanup`) finds them.

use std::fs::File;
use std::path::{Path, PathBuf};

use aya::maps::{HashMap, MapData};
use aya::programs::links::FdLink;
use aya::programs::{CgroupAttachMode, CgroupSock, CgroupSockAddr};
use aya::{Ebpf, EbpfLoader};
use ebpf::maps::{
    LbAddr, LbLocalAddr, LbSockKey, LbSockValue, LB_AFFINITY_MATCH, LB_BACKENDS, LB_LOCAL_ADDRS,
    LB_REVERSE_NAT, LB_REVERSE_SK, LB_SERVICES, SOCK_LB_SIZED_MAPS,
};

use super::{DatapathError, ServiceMaps};
use crate::config::Protocols;

/// The directory, under the pin directory, of the pinned program links.
pub const LINKS_DIR: &str = "links";
/// Separates a link's program name from its generation (bpffs refuses `.` in names).
const GENERATION_SEPARATOR: char = '-';

/// Load-time configuration of the socket programs.
#[derive(Clone, Copy, Debug)]
pub struct SockLbConfig {
    /// Which protocols to translate (`hostServices.protocols`).
    pub protocols: Protocols,
    /// Entries of each map (`bpf.lbMapMax`).
    pub map_max: u32,
    /// Translate only sockets of the host namespace (`socketLB.hostNamespaceOnly`).
    pub host_namespace_only: bool,
    /// Refuse binds to NodePort ports in the host namespace (`nodePort.bindProtection`).
    pub bind_protection: bool,
    /// The host namespace's cookie; 0 for the initial namespace.
    pub host_netns_cookie: u64,
    /// Translate an externalIPs frontend only when its address is this node's (the
    /// CVE-2020-8554 mitigation; off with `bpf.disableExternalIPMitigation`).
    pub external_ip_mitigation: bool,
}

/// The loaded socket-level load balancer.
#[derive(Debug)]
pub struct SockLb {
    ebpf: Ebpf,
    pin_dir: PathBuf,
}

impl SockLb {
    /// Loads the programs. Maps already pinned in `pin_dir` (by an earlier agent) are reused
    /// with their contents; missing ones are created and pinned there.
    pub fn load(config: SockLbConfig, pin_dir: &Path) -> Result<Self, DatapathError> {
        let tcp = u8::from(config.protocols.tcp);
        let udp = u8::from(config.protocols.udp);
        let host_ns_only = u8::from(config.host_namespace_only);
        let bind_protection = u8::from(config.bind_protection);
        let external_ip_mitigation = u8::from(config.external_ip_mitigation);
        let mut loader = EbpfLoader::new();
        loader
            .override_global("cfg_enable_tcp", &tcp, true)
            .override_global("cfg_enable_udp", &udp, true)
            .override_global("cfg_host_ns_only", &host_ns_only, true)
            .override_global("cfg_bind_protection", &bind_protection, true)
            .override_global("cfg_host_netns_cookie", &config.host_netns_cookie, true)
            .override_global("cfg_external_ip_mitigation", &external_ip_mitigation, true)
            .default_map_pin_directory(pin_dir);
        for map in SOCK_LB_SIZED_MAPS {
            loader.map_max_entries(map, config.map_max);
        }
        let mut ebpf = loader.load(ebpf::sock_lb_object())?;
        for (name, _) in ebpf::SOCK_LB_PROGRAMS {
            program::<CgroupSockAddr>(&mut ebpf, name)?
                .load()
                .map_err(|source| DatapathError::Program {
                    program: name,
                    source,
                })?;
        }
        let (release, _) = ebpf::SOCK_LB_RELEASE_PROGRAM;
        program::<CgroupSock>(&mut ebpf, release)?
            .load()
            .map_err(|source| DatapathError::Program {
                program: release,
                source,
            })?;
        Ok(SockLb {
            ebpf,
            pin_dir: pin_dir.to_owned(),
        })
    }

    /// Attaches every hook to the cgroup at `cgroup` (a cgroup v2 directory); processes in it
    /// and below are load-balanced. Each link is pinned as `links/<program>-<generation>`,
    /// one generation above what is pinned already; once all are attached, the older
    /// generations (an earlier agent's programs) are unpinned, which detaches them. Between
    /// the two steps both run, and the old ones find nothing left to translate.
    pub fn attach(&mut self, cgroup: &Path) -> Result<Vec<PathBuf>, DatapathError> {
        let dir = File::open(cgroup).map_err(|source| DatapathError::Cgroup {
            path: cgroup.to_owned(),
            source,
        })?;
        let links_dir = self.pin_dir.join(LINKS_DIR);
        std::fs::create_dir_all(&links_dir).map_err(DatapathError::pin(&links_dir))?;
        let old = pinned_links(&links_dir)?;
        let generation = old.iter().map(|(_, g)| g + 1).max().unwrap_or(1);
        let mut pinned = Vec::new();
        let pin = |name: &str, link: FdLink| -> Result<PathBuf, DatapathError> {
            let path = links_dir.join(format!("{name}{GENERATION_SEPARATOR}{generation}"));
            link.pin(&path).map_err(|e| DatapathError::Pin {
                path: path.clone(),
                detail: format!("{e}{}", super::error::source_chain(&e)),
            })?;
            Ok(path)
        };
        // With BPF links (kernel >= 5.7) several programs coexist on a cgroup whatever the
        // mode, and the kernel refuses the multi flag on link creation.
        for (name, _) in ebpf::SOCK_LB_PROGRAMS {
            let failed = |source| DatapathError::Program {
                program: name,
                source,
            };
            let prog: &mut CgroupSockAddr = program(&mut self.ebpf, name)?;
            let id = prog
                .attach(&dir, CgroupAttachMode::Single)
                .map_err(failed)?;
            let link = FdLink::try_from(prog.take_link(id).map_err(failed)?)
                .map_err(|e| no_link(name, &e))?;
            pinned.push(pin(name, link)?);
        }
        let (name, _) = ebpf::SOCK_LB_RELEASE_PROGRAM;
        let failed = |source| DatapathError::Program {
            program: name,
            source,
        };
        let prog: &mut CgroupSock = program(&mut self.ebpf, name)?;
        let id = prog
            .attach(&dir, CgroupAttachMode::Single)
            .map_err(failed)?;
        let link =
            FdLink::try_from(prog.take_link(id).map_err(failed)?).map_err(|e| no_link(name, &e))?;
        pinned.push(pin(name, link)?);
        for (path, _) in old {
            std::fs::remove_file(&path).map_err(DatapathError::pin(&path))?;
        }
        Ok(pinned)
    }

    /// The service maps, for reading and applying [`super::MapContents`].
    pub fn service_maps(&mut self) -> Result<ServiceMaps<&mut MapData>, DatapathError> {
        let (mut services, mut backends, mut reverse_nat, mut affinity_match) =
            (None, None, None, None);
        for (name, map) in self.ebpf.maps_mut() {
            match name {
                LB_SERVICES => services = Some(map),
                LB_BACKENDS => backends = Some(map),
                LB_REVERSE_NAT => reverse_nat = Some(map),
                LB_AFFINITY_MATCH => affinity_match = Some(map),
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
            HashMap::try_from(affinity_match.ok_or(missing(LB_AFFINITY_MATCH))?)
                .map_err(typed(LB_AFFINITY_MATCH))?,
        ))
    }

    /// `(socket cookie, backend)` of every socket the hooks translated and still remember (the
    /// keys of `lb_reverse_sk_v1`), backends in canonical form.
    pub fn translated_sockets(
        &mut self,
    ) -> Result<std::collections::HashSet<(u64, std::net::SocketAddr)>, DatapathError> {
        let failed = |source| DatapathError::Map {
            map: LB_REVERSE_SK,
            source,
        };
        self.reverse_map()?
            .keys()
            .map(|key| {
                let key = key.map_err(failed)?;
                let backend = std::net::SocketAddr::new(
                    std::net::IpAddr::from(key.address),
                    u16::from_be(key.port),
                );
                Ok((key.cookie, super::canonical(backend)))
            })
            .collect()
    }

    /// Deletes the reverse entries of these `(socket cookie, backend)` pairs (sockets the agent
    /// destroyed); entries already gone are fine.
    pub fn forget_translated(
        &mut self,
        sockets: &[(u64, std::net::SocketAddr)],
    ) -> Result<(), DatapathError> {
        let failed = |source| DatapathError::Map {
            map: LB_REVERSE_SK,
            source,
        };
        let mut map = self.reverse_map()?;
        for (cookie, backend) in sockets {
            let key = LbSockKey {
                cookie: *cookie,
                address: LbAddr::from(super::canonical(*backend).ip()),
                port: backend.port().to_be(),
                pad: [0; 6],
            };
            match map.remove(&key) {
                Err(aya::maps::MapError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(nix::libc::ENOENT) => {}
                other => other.map_err(failed)?,
            }
        }
        Ok(())
    }

    /// `lb_reverse_sk_v1`: (socket cookie, backend) -> the frontend the socket asked for.
    fn reverse_map(
        &mut self,
    ) -> Result<HashMap<&mut MapData, LbSockKey, LbSockValue>, DatapathError> {
        let map = self
            .ebpf
            .map_mut(LB_REVERSE_SK)
            .ok_or(DatapathError::Missing {
                kind: "map",
                name: LB_REVERSE_SK,
            })?;
        HashMap::try_from(map).map_err(|source| DatapathError::Map {
            map: LB_REVERSE_SK,
            source,
        })
    }

    /// Makes `lb_local_addrs` hold exactly `addrs`. Returns how many entries changed.
    pub fn set_local_addresses(
        &mut self,
        addrs: &[std::net::IpAddr],
    ) -> Result<usize, DatapathError> {
        let failed = |source| DatapathError::Map {
            map: LB_LOCAL_ADDRS,
            source,
        };
        let map = self
            .ebpf
            .map_mut(LB_LOCAL_ADDRS)
            .ok_or(DatapathError::Missing {
                kind: "map",
                name: LB_LOCAL_ADDRS,
            })?;
        let mut map: HashMap<_, LbAddr, LbLocalAddr> = HashMap::try_from(map).map_err(failed)?;
        let want: std::collections::BTreeSet<LbAddr> =
            addrs.iter().map(|&ip| LbAddr::from(ip)).collect();
        let have: Vec<LbAddr> = map.keys().collect::<Result<_, _>>().map_err(failed)?;
        let mut changed = 0;
        for addr in have.iter().filter(|a| !want.contains(a)) {
            map.remove(addr).map_err(failed)?;
            changed += 1;
        }
        for addr in want.iter().filter(|a| !have.contains(a)) {
            map.insert(addr, LbLocalAddr::default(), 0)
                .map_err(failed)?;
            changed += 1;
        }
        Ok(changed)
    }
}

/// The pinned links in `links_dir` with their generation.
pub fn pinned_links(links_dir: &Path) -> Result<Vec<(PathBuf, u64)>, DatapathError> {
    let entries = match std::fs::read_dir(links_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(DatapathError::pin(links_dir)(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let path = entry.map_err(DatapathError::pin(links_dir))?.path();
        let generation = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.rsplit_once(GENERATION_SEPARATOR))
            .and_then(|(_, g)| g.parse().ok())
            .unwrap_or(0);
        out.push((path, generation));
    }
    Ok(out)
}

/// The program was attached without a BPF link, which pinning needs.
fn no_link(name: &'static str, e: &dyn std::fmt::Display) -> DatapathError {
    DatapathError::Unsupported {
        what: format!("a BPF link for program {name} ({e})"),
        needs: "cgroup BPF links, Linux 5.7",
    }
}

/// The program `name` of the object, as the program type `P` it must be.
pub(super) fn program<'a, P>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut P, DatapathError>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
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
