//! The socket-level load balancer: loading the cgroup sock_addr programs with their load-time
//! configuration and their maps pinned in the agent's bpffs directory, and attaching them to a
//! cgroup through BPF links pinned beside the maps, so they stay attached after the agent
//! exits and the next agent (or `lbctl cleanup`) finds them.

use std::fs::File;
use std::path::{Path, PathBuf};

use aya::maps::{HashMap, LpmTrie, MapData};
use aya::programs::links::FdLink;
use aya::programs::{CgroupAttachMode, CgroupSock, CgroupSockAddr};
use aya::{Ebpf, EbpfLoader};
use ebpf::maps::{
    LbAddr, LbLocalAddr, LbSockConn, LbSockConnSlot, LbSockKey, LbSockValue, LB_AFFINITY_MATCH,
    LB_BACKENDS, LB_LOCAL_ADDRS, LB_REVERSE_NAT, LB_REVERSE_SK, LB_SERVICES, LB_SOCK_CONN,
    LB_SOCK_CONN_SLOTS, LB_SOURCE_RANGES, SOCK_LB_SIZED_MAPS,
};

use super::migrate::Migration;
use super::{DatapathError, ServiceMaps, SocketHooks};
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
    /// The kernel gives these programs network namespace cookies (Linux 5.7); without them
    /// every socket counts as the host namespace's and affinity has one client.
    pub netns_cookies: bool,
    /// The kernel lets these programs cast their socket to a TCP/UDP IPv6 socket (Linux
    /// 5.10): bind6 lets a socket with `IPV6_V6ONLY` bind `[::]` on an IPv4 NodePort's port.
    /// Without it such a bind is refused as a dual-stack one.
    pub sock_v6only: bool,
    /// How many slots of `lb_sock_conn_slots_v1` connect keeps connected sockets'
    /// translations in (a power of two, at most [`ebpf::maps::SOCK_CONN_SLOTS`]; more are
    /// taken as that): the kernel has BPF atomics (Linux 5.12) and the programs built for them
    /// are loaded. 0: the programs without atomics, which keep them in `lb_sock_conn_v1`
    /// alone. The agent uses every slot; tests use fewer so that live sockets share one.
    pub conn_slots: u32,
}

/// The loaded socket-level load balancer.
#[derive(Debug)]
pub struct SockLb {
    ebpf: Ebpf,
    pin_dir: PathBuf,
    hooks: SocketHooks,
    /// How many slots of `lb_sock_conn_slots_v1` the programs use (0: none).
    conn_slots: u32,
    /// Pinned maps being replaced by ones of the configured size: filled and finished by
    /// [`SockLb::attach`] (or [`SockLb::finish_migration`]), put back by [`SockLb::abandon`].
    migration: Option<Migration>,
}

impl SockLb {
    /// Loads the programs. Maps already pinned in `pin_dir` (by an earlier agent) are reused
    /// with their contents when they match what this load would create; missing ones are
    /// created and pinned there. Pinned maps of another size or flags (`bpf.lbMapMax`
    /// changed) are replaced by fresh ones holding the same entries ([`super::migrate`]),
    /// copied and finished by [`SockLb::attach`]; a size too small for what they hold is
    /// refused.
    pub fn load(config: SockLbConfig, pin_dir: &Path) -> Result<Self, DatapathError> {
        Self::load_hooks(config, SocketHooks::ALL, pin_dir)
    }

    /// [`SockLb::load`] with only `hooks` loaded (and later attached): on a kernel that lacks
    /// an attach type its programs cannot even load.
    pub fn load_hooks(
        config: SockLbConfig,
        hooks: SocketHooks,
        pin_dir: &Path,
    ) -> Result<Self, DatapathError> {
        let want = super::migrate::expected_specs(config.map_max)?;
        let migration = Migration::prepare(pin_dir, &want, config.map_max)?;
        match Self::load_programs(config, hooks, pin_dir) {
            Ok(ebpf) => Ok(SockLb {
                ebpf,
                pin_dir: pin_dir.to_owned(),
                hooks,
                conn_slots: config.conn_slots.min(ebpf::maps::SOCK_CONN_SLOTS),
                migration: (!migration.is_empty()).then_some(migration),
            }),
            Err(e) => {
                migration.restore();
                Err(e)
            }
        }
    }

    fn load_programs(
        config: SockLbConfig,
        hooks: SocketHooks,
        pin_dir: &Path,
    ) -> Result<Ebpf, DatapathError> {
        let tcp = u8::from(config.protocols.tcp);
        let udp = u8::from(config.protocols.udp);
        let host_ns_only = u8::from(config.host_namespace_only);
        let bind_protection = u8::from(config.bind_protection);
        let external_ip_mitigation = u8::from(config.external_ip_mitigation);
        let netns_cookies = u8::from(config.netns_cookies);
        let sock_v6only = u8::from(config.sock_v6only);
        let conn_slots = config.conn_slots.min(ebpf::maps::SOCK_CONN_SLOTS);
        let mut loader = EbpfLoader::new();
        loader
            .override_global("cfg_enable_tcp", &tcp, true)
            .override_global("cfg_enable_udp", &udp, true)
            .override_global("cfg_host_ns_only", &host_ns_only, true)
            .override_global("cfg_bind_protection", &bind_protection, true)
            .override_global("cfg_host_netns_cookie", &config.host_netns_cookie, true)
            .override_global("cfg_external_ip_mitigation", &external_ip_mitigation, true)
            .override_global("cfg_netns_cookies", &netns_cookies, true)
            .override_global("cfg_sock_v6only", &sock_v6only, true)
            .default_map_pin_directory(pin_dir);
        for map in SOCK_LB_SIZED_MAPS {
            loader.map_max_entries(map, config.map_max);
        }
        let object = if conn_slots > 0 {
            loader.override_global("cfg_sock_conn_slots", &conn_slots, true);
            ebpf::sock_lb_atomics_object()
        } else {
            ebpf::sock_lb_object()
        };
        let mut ebpf = loader.load(object)?;
        for (name, _) in ebpf::SOCK_LB_PROGRAMS
            .iter()
            .filter(|(_, attach)| hooks.includes(attach))
        {
            program::<CgroupSockAddr>(&mut ebpf, name)?
                .load()
                .map_err(|source| DatapathError::Program {
                    program: name,
                    source,
                })?;
        }
        let (release, _) = ebpf::SOCK_LB_RELEASE_PROGRAM;
        if hooks.sock_release {
            program::<CgroupSock>(&mut ebpf, release)?
                .load()
                .map_err(|source| DatapathError::Program {
                    program: release,
                    source,
                })?;
        }
        Ok(ebpf)
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
        // The replaced maps' entries go into the new maps now, not at the load: the agent
        // loads while the lists arrive, and the old programs keep writing meanwhile. What
        // they write until they are detached follows in `finish`.
        if let Some(migration) = &self.migration {
            migration.copy_into(&mut self.ebpf)?;
        }
        let links_dir = self.pin_dir.join(LINKS_DIR);
        std::fs::create_dir_all(&links_dir).map_err(DatapathError::pin(&links_dir))?;
        // The NodePort programs' links live beside these and follow generations of their own.
        let old: Vec<_> = pinned_links(&links_dir)?
            .into_iter()
            .filter(|(path, _)| !super::tc_attach::is_tc_link(path))
            .collect();
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
        for (name, _) in ebpf::SOCK_LB_PROGRAMS
            .iter()
            .filter(|(_, attach)| self.hooks.includes(attach))
        {
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
        if self.hooks.sock_release {
            let failed = |source| DatapathError::Program {
                program: name,
                source,
            };
            let prog: &mut CgroupSock = program(&mut self.ebpf, name)?;
            let id = prog
                .attach(&dir, CgroupAttachMode::Single)
                .map_err(failed)?;
            let link = FdLink::try_from(prog.take_link(id).map_err(failed)?)
                .map_err(|e| no_link(name, &e))?;
            pinned.push(pin(name, link)?);
        }
        for (path, _) in old {
            super::detach_and_unpin(&path)?;
        }
        // Maps only the detached programs used (an earlier version's) go with them.
        for name in ebpf::maps::RETIRED_MAPS {
            let path = self.pin_dir.join(name);
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(DatapathError::pin(&path)(e))
                }
                _ => {}
            }
        }
        // The old programs are detached: what they wrote since the load moves over, and the
        // replaced maps go.
        if let Some(migration) = self.migration.take() {
            migration.finish(&mut self.ebpf)?;
        }
        Ok(pinned)
    }

    /// Finishes a migration without attaching (`socketLB.enabled` off: the packet programs
    /// use the shared maps): every entry of the replaced maps is copied and their pins go.
    pub fn finish_migration(&mut self) -> Result<(), DatapathError> {
        match self.migration.take() {
            Some(migration) => migration.finish(&mut self.ebpf),
            None => Ok(()),
        }
    }

    /// Gives up this load before attaching: maps a migration moved aside go back in place
    /// (the running programs keep using them), and the new ones are dropped.
    pub fn abandon(mut self) {
        if let Some(migration) = self.migration.take() {
            migration.restore();
        }
    }

    /// The service maps, for reading and applying [`super::MapContents`].
    pub fn service_maps(&mut self) -> Result<ServiceMaps<&mut MapData>, DatapathError> {
        let (mut services, mut backends, mut reverse_nat, mut affinity_match, mut ranges) =
            (None, None, None, None, None);
        for (name, map) in self.ebpf.maps_mut() {
            match name {
                LB_SERVICES => services = Some(map),
                LB_BACKENDS => backends = Some(map),
                LB_REVERSE_NAT => reverse_nat = Some(map),
                LB_AFFINITY_MATCH => affinity_match = Some(map),
                LB_SOURCE_RANGES => ranges = Some(map),
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
            LpmTrie::try_from(ranges.ok_or(missing(LB_SOURCE_RANGES))?)
                .map_err(typed(LB_SOURCE_RANGES))?,
        ))
    }

    /// `(socket cookie, backend)` of every socket the hooks translated and still remember:
    /// connected sockets (`lb_sock_conn_slots_v1` and `lb_sock_conn_v1`) and unconnected sends
    /// (the keys of `lb_reverse_sk_v1`), backends in canonical form. The slots are read one
    /// by one (65 536 lookups, tens of milliseconds): this runs only when UDP backends went.
    pub fn translated_sockets(
        &mut self,
    ) -> Result<std::collections::HashSet<(u64, std::net::SocketAddr)>, DatapathError> {
        let mut out = std::collections::HashSet::new();
        if self.conn_slots > 0 {
            for slot in self.slot_map()?.iter() {
                if let Some((cookie, conn)) = slot.map_err(failed(LB_SOCK_CONN_SLOTS))?.held() {
                    out.insert(super::reverse_key_socket(&super::reverse_key_of(
                        cookie, &conn,
                    )));
                }
            }
        }
        for entry in self.conn_map()?.iter() {
            let (cookie, conn) = entry.map_err(failed(LB_SOCK_CONN))?;
            out.insert(super::reverse_key_socket(&super::reverse_key_of(
                cookie, &conn,
            )));
        }
        for key in self.reverse_map()?.keys() {
            out.insert(super::reverse_key_socket(
                &key.map_err(failed(LB_REVERSE_SK))?,
            ));
        }
        Ok(out)
    }

    /// Deletes what the hooks remember of these `(socket cookie, backend)` pairs (sockets the
    /// agent destroyed); entries already gone are fine. A slot is cleared by a plain write,
    /// not the programs' compare-and-exchange: should the destroyed socket close and another
    /// claim the slot between this read and write, that socket's getpeername shows its
    /// backend (the translation stays right).
    pub fn forget_translated(
        &mut self,
        sockets: &[(u64, std::net::SocketAddr)],
    ) -> Result<(), DatapathError> {
        let gone = |r: Result<(), aya::maps::MapError>, map| match r {
            Err(aya::maps::MapError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(nix::libc::ENOENT) =>
            {
                Ok(())
            }
            other => other.map_err(failed(map)),
        };
        if self.conn_slots > 0 {
            let slots = self.conn_slots;
            let mut map = self.slot_map()?;
            for (cookie, backend) in sockets {
                let index = LbSockConnSlot::index(*cookie, slots);
                let slot = map.get(&index, 0).map_err(failed(LB_SOCK_CONN_SLOTS))?;
                let held_there = slot.held().is_some_and(|(held, conn)| {
                    held == *cookie
                        && super::reverse_key_of(held, &conn)
                            == super::reverse_key(*cookie, *backend)
                });
                if held_there {
                    map.set(index, LbSockConnSlot::default(), 0)
                        .map_err(failed(LB_SOCK_CONN_SLOTS))?;
                }
            }
        }
        let mut conns = self.conn_map()?;
        for (cookie, backend) in sockets {
            let key = super::reverse_key(*cookie, *backend);
            let connected_there = match conns.get(cookie, 0) {
                Ok(conn) => super::reverse_key_of(*cookie, &conn) == key,
                Err(_) => false,
            };
            if connected_there {
                gone(conns.remove(cookie), LB_SOCK_CONN)?;
            }
        }
        let mut sends = self.reverse_map()?;
        for (cookie, backend) in sockets {
            gone(
                sends.remove(&super::reverse_key(*cookie, *backend)),
                LB_REVERSE_SK,
            )?;
        }
        Ok(())
    }

    /// `lb_sock_conn_v1`: socket cookie -> where its connect went and what it asked for.
    fn conn_map(&mut self) -> Result<HashMap<&mut MapData, u64, LbSockConn>, DatapathError> {
        self.hash_map(LB_SOCK_CONN)
    }

    /// `lb_sock_conn_slots_v1`: slot -> the socket holding it and its translation.
    fn slot_map(
        &mut self,
    ) -> Result<aya::maps::Array<&mut MapData, LbSockConnSlot>, DatapathError> {
        let map = self
            .ebpf
            .map_mut(LB_SOCK_CONN_SLOTS)
            .ok_or(DatapathError::Missing {
                kind: "map",
                name: LB_SOCK_CONN_SLOTS,
            })?;
        aya::maps::Array::try_from(map).map_err(failed(LB_SOCK_CONN_SLOTS))
    }

    /// `lb_reverse_sk_v1`: (socket cookie, backend) -> the frontend an unconnected send asked
    /// for.
    fn reverse_map(
        &mut self,
    ) -> Result<HashMap<&mut MapData, LbSockKey, LbSockValue>, DatapathError> {
        self.hash_map(LB_REVERSE_SK)
    }

    fn hash_map<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &'static str,
    ) -> Result<HashMap<&mut MapData, K, V>, DatapathError> {
        hash_map(&mut self.ebpf, name)
    }

    /// How many entries the service map holds at most (`bpf.lbMapMax`; the other service
    /// maps are the same size).
    pub fn service_capacity(&self) -> Result<usize, DatapathError> {
        let failed = |source| DatapathError::Map {
            map: LB_SERVICES,
            source,
        };
        let map = self.ebpf.map(LB_SERVICES).ok_or(DatapathError::Missing {
            kind: "map",
            name: LB_SERVICES,
        })?;
        match map {
            aya::maps::Map::HashMap(data) => {
                Ok(data.info().map_err(failed)?.max_entries() as usize)
            }
            _ => Err(DatapathError::Missing {
                kind: "hash map",
                name: LB_SERVICES,
            }),
        }
    }

    /// Makes `lb_local_addrs` hold the node addresses `addrs`, in their order of priority: as
    /// many as the map holds (`bpf.lbMapMax`). Those beyond are left out and counted in the
    /// report rather than failing: NodePorts on the programmed addresses, loopback and every
    /// service keep working.
    pub fn set_local_addresses(
        &mut self,
        addrs: &[std::net::IpAddr],
    ) -> Result<LocalAddrsReport, DatapathError> {
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
        let capacity = match &*map {
            aya::maps::Map::HashMap(data) => data.info().map_err(failed)?.max_entries(),
            _ => 0, // the conversion below names the wrong type
        };
        let mut map: HashMap<_, LbAddr, LbLocalAddr> = HashMap::try_from(map).map_err(failed)?;
        let mut seen = std::collections::HashSet::new();
        let all: Vec<LbAddr> = addrs
            .iter()
            .map(|&ip| LbAddr::from(ip))
            .filter(|a| seen.insert(*a))
            .collect();
        let fit = usize::try_from(capacity).unwrap_or(usize::MAX);
        let want: std::collections::HashSet<LbAddr> = all.iter().take(fit).copied().collect();
        let have: Vec<LbAddr> = map.keys().collect::<Result<_, _>>().map_err(failed)?;
        let mut report = LocalAddrsReport {
            found: all.len(),
            capacity,
            ..LocalAddrsReport::default()
        };
        for addr in have.iter().filter(|a| !want.contains(a)) {
            map.remove(addr).map_err(failed)?;
            report.changed += 1;
        }
        let have: std::collections::HashSet<LbAddr> =
            have.into_iter().filter(|a| want.contains(a)).collect();
        report.programmed = have.len();
        for addr in all.iter().take(fit).filter(|a| !have.contains(a)) {
            match map.insert(addr, LbLocalAddr::default(), 0) {
                Ok(()) => {
                    report.changed += 1;
                    report.programmed += 1;
                }
                // Full after all (another writer): what fits is programmed, the rest counted.
                Err(aya::maps::MapError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(nix::libc::E2BIG) =>
                {
                    break
                }
                Err(e) => return Err(failed(e)),
            }
        }
        Ok(report)
    }
}

/// What [`SockLb::set_local_addresses`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LocalAddrsReport {
    /// Entries added or removed.
    pub changed: usize,
    /// Node addresses now in the map.
    pub programmed: usize,
    /// Node addresses found (distinct).
    pub found: usize,
    /// How many the map holds (`bpf.lbMapMax`).
    pub capacity: u32,
}

impl LocalAddrsReport {
    /// Node addresses that did not fit.
    pub fn left_out(&self) -> usize {
        self.found.saturating_sub(self.programmed)
    }

    /// The warning to log when addresses were left out, naming the map and the option.
    pub fn warning(&self) -> Option<String> {
        (self.left_out() > 0).then(|| {
            format!(
                "map {LB_LOCAL_ADDRS} is full: {} of the node's {} addresses are programmed and \
                 {} are left out (NodePort and HostPort from the node do not answer on them); \
                 raise bpf.lbMapMax (now {}) to at least {}",
                self.programmed,
                self.found,
                self.left_out(),
                self.capacity,
                self.found
            )
        })
    }

    /// The count `lbctl status` shows.
    pub fn status(&self) -> crate::views::LocalAddressCount {
        crate::views::LocalAddressCount {
            programmed: self.programmed,
            found: self.found,
            capacity: self.capacity,
        }
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

/// The (LRU) hash map `name` of a loaded object, typed.
pub(super) fn hash_map<'a, K: aya::Pod, V: aya::Pod>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<HashMap<&'a mut MapData, K, V>, DatapathError> {
    let map = ebpf
        .map_mut(name)
        .ok_or(DatapathError::Missing { kind: "map", name })?;
    HashMap::try_from(map).map_err(failed(name))
}

/// The error of an access to `map`.
fn failed(map: &'static str) -> impl Fn(aya::maps::MapError) -> DatapathError {
    move |source| DatapathError::Map { map, source }
}
