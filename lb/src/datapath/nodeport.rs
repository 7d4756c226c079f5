//! The packet datapath's loader: the tc NodePort programs (`lb_nodeport_ingress` /
//! `lb_nodeport_egress`) and, with XDP acceleration, `lb_nodeport_xdp`, with their load-time
//! settings, over the maps the socket programs pinned (the shared ones, adopted by name) and
//! the packet maps of `lb_pkt_maps.h`, pinned beside them. Attaching them to devices is
//! [`super::tc_attach`]'s and [`super::xdp_attach`]'s job.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use aya::maps::{HashMap, Map, MapData};
use aya::programs::{SchedClassifier, Xdp};
use aya::{Ebpf, EbpfLoader};
use ebpf::maps::{
    LbAddr, LbCtEntry, LbCtKey, LbDevice, LB_CT, LB_DEVICES, LB_MAGLEV, SOCK_LB_SIZED_MAPS,
};
use ebpf::{
    NODEPORT_EGRESS_PROGRAM, NODEPORT_INGRESS_PROGRAM, NODEPORT_XDP_PROGRAM, POD_INGRESS_PROGRAM,
};

use super::maglev_map::{create_pinned, maglev_value_len, MaglevMap};
use super::migrate::Migration;
use super::sock_lb::program;
use super::{ApplyReport, DatapathError};

/// The clock the packet programs count conntrack seconds by on this kernel (`lb_ct_now` in
/// `lb_ct.h`): the calibrated tick where there is one (one load per packet), else the coarse
/// clock helper (Linux 5.11), else `bpf_ktime_get_ns`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketClock {
    /// `cfg_jiffies_hz`: the calibrated tick's rate, 0 when there is none.
    jiffies_hz: u32,
    /// `cfg_jiffies_at_zero`: jiffies at CLOCK_MONOTONIC 0.
    jiffies_at_zero: u64,
    /// `cfg_coarse_clock`: `bpf_ktime_get_coarse_ns` exists.
    coarse_clock: u8,
}

impl PacketClock {
    /// What this kernel offers (probed and calibrated once per process).
    pub fn of_this_kernel() -> PacketClock {
        let tick = crate::host::features::jiffies_clock();
        PacketClock {
            jiffies_hz: tick.map_or(0, |t| t.hz),
            jiffies_at_zero: tick.map_or(0, |t| t.at_zero),
            coarse_clock: u8::from(crate::host::features::coarse_clock()),
        }
    }

    /// Sets the clock's `cfg_*` globals on a loader of a packet object.
    pub fn set_globals<'a>(&'a self, loader: &mut EbpfLoader<'a>) {
        loader
            .override_global("cfg_jiffies_hz", &self.jiffies_hz, true)
            .override_global("cfg_jiffies_at_zero", &self.jiffies_at_zero, true)
            .override_global("cfg_coarse_clock", &self.coarse_clock, true);
    }

    /// How the programs read it, for the agent's log.
    pub fn describe(&self) -> String {
        match (self.jiffies_hz, self.coarse_clock) {
            (0, 0) => "bpf_ktime_get_ns".to_string(),
            (0, _) => "bpf_ktime_get_coarse_ns".to_string(),
            (hz, _) => format!("the kernel tick ({hz} Hz)"),
        }
    }
}

/// Load-time settings of the NodePort programs (the object's `cfg_*` globals).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodePortConfig {
    /// Entries of each sized map (`bpf.lbMapMax`), as the socket programs size the shared ones.
    pub map_max: u32,
    /// The first source port SNAT gives a flow forwarded to another node.
    pub snat_port_min: u16,
    /// The last one.
    pub snat_port_max: u16,
    /// Seeds the flow hash that picks a backend, the same on every node (derived from
    /// `maglev.hashSeed`), so a flow entering any node picks the same backend.
    pub flow_seed: u32,
    /// Serve ClusterIP services to traffic entering the devices (`bpf.lbExternalClusterIP`).
    pub external_clusterip: bool,
    /// Load the XDP program too (`loadBalancer.acceleration` is not `disabled`).
    pub xdp: bool,
    /// Leave a pod's packets to an externalIP that is not the node's untranslated
    /// (`!bpf.disableExternalIPMitigation`; the pod programs of `socketLB.hostNamespaceOnly`).
    pub external_ip_mitigation: bool,
    /// `Some(maglev.tableSize)` with `loadBalancer.algorithm=maglev`: new flows take their
    /// backend from the frontend's Maglev table (`lb_maglev_v1`) of this many entries.
    pub maglev_m: Option<u32>,
}

/// A NodePort device as the programs see it: its ifindex and the node's addresses on it (the
/// SNAT source of flows forwarded through it).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeviceAddrs {
    /// The interface name.
    pub name: String,
    /// Its ifindex in the node's namespace.
    pub ifindex: u32,
    /// Its first global IPv4 address.
    pub addr4: Option<Ipv4Addr>,
    /// Its first global IPv6 address.
    pub addr6: Option<Ipv6Addr>,
}

impl DeviceAddrs {
    /// The `lb_devices_v1` value: the addresses, zero for a family the device lacks.
    pub fn map_value(&self) -> LbDevice {
        LbDevice {
            addr4: self
                .addr4
                .map(|a| LbAddr::from(std::net::IpAddr::V4(a)))
                .unwrap_or_default(),
            addr6: self
                .addr6
                .map(|a| LbAddr::from(std::net::IpAddr::V6(a)))
                .unwrap_or_default(),
            flags: 0,
        }
    }
}

/// The loaded NodePort programs.
#[derive(Debug)]
pub struct NodePortLb {
    pub(super) ebpf: Ebpf,
    /// The XDP object, when loaded ([`NodePortConfig::xdp`]).
    pub(super) xdp: Option<Ebpf>,
    pub(super) pin_dir: PathBuf,
    /// `maglev.tableSize` when the programs use Maglev tables.
    maglev_m: Option<u32>,
    /// The tables last written to `lb_maglev_v1`, so a reconciliation does not read every
    /// table back to find the few that changed; `None` until known.
    maglev_written: Option<BTreeMap<u16, Vec<u32>>>,
    /// Packet maps being replaced by ones of the configured size (`bpf.lbMapMax` changed):
    /// filled by [`NodePortLb::attach`] and finished there once the old programs are
    /// detached, put back by [`NodePortLb::abandon`].
    pub(super) migration: Option<Migration>,
    /// The generation of this agent's tcx links (set by [`NodePortLb::attach`]).
    pub(super) generation: u64,
    /// How [`NodePortLb::attach`] attached the programs.
    pub(super) mode: Option<super::TcMode>,
}

impl NodePortLb {
    /// Loads the programs with `config`; maps pinned in `pin_dir` are adopted (the socket
    /// programs load first and pin, or migrate, the shared ones), missing ones are created and
    /// pinned there. A pinned packet map of another size (`bpf.lbMapMax` changed) is replaced
    /// by a fresh one holding the same entries, as [`super::migrate`] does for the shared maps.
    pub fn load(config: NodePortConfig, pin_dir: &Path) -> Result<Self, DatapathError> {
        let maglev_len = maglev_value_len(config.maglev_m);
        let want = super::migrate::expected_packet_specs(config.map_max, maglev_len)?;
        let migration = Migration::prepare(pin_dir, &want, config.map_max)?;
        let loaded = create_pinned(pin_dir, config.map_max, maglev_len)
            .and_then(|()| Self::load_programs(config, pin_dir))
            .and_then(|ebpf| {
                // The XDP object adopts the pinned maps the tc object now uses.
                let xdp = if config.xdp {
                    Some(Self::load_xdp(config, pin_dir)?)
                } else {
                    None
                };
                Ok((ebpf, xdp))
            });
        match loaded {
            Ok((ebpf, xdp)) => Ok(NodePortLb {
                ebpf,
                xdp,
                maglev_m: config.maglev_m,
                maglev_written: None,
                pin_dir: pin_dir.to_owned(),
                migration: (!migration.is_empty()).then_some(migration),
                generation: 1,
                mode: None,
            }),
            Err(e) => {
                migration.restore();
                Err(e)
            }
        }
    }

    /// Gives up this load before attaching: packet maps a migration moved aside go back in
    /// place (the running programs keep using them), and the new ones are dropped.
    pub fn abandon(mut self) {
        if let Some(migration) = self.migration.take() {
            migration.restore();
        }
    }

    /// Loads `object` with `config`'s load-time settings over the maps pinned in `pin_dir`.
    fn load_object(
        config: NodePortConfig,
        pin_dir: &Path,
        object: &[u8],
    ) -> Result<Ebpf, DatapathError> {
        let external_clusterip = u8::from(config.external_clusterip);
        let external_ip_mitigation = u8::from(config.external_ip_mitigation);
        let maglev = u8::from(config.maglev_m.is_some());
        let maglev_m = maglev_value_len(config.maglev_m);
        let clock = PacketClock::of_this_kernel();
        let mut loader = EbpfLoader::new();
        loader
            .override_global("cfg_snat_port_min", &config.snat_port_min, true)
            .override_global("cfg_snat_port_max", &config.snat_port_max, true)
            .override_global("cfg_flow_seed", &config.flow_seed, true)
            .override_global("cfg_external_clusterip", &external_clusterip, true)
            .override_global("cfg_external_ip_mitigation", &external_ip_mitigation, true)
            .override_global("cfg_maglev", &maglev, true)
            .override_global("cfg_maglev_m", &maglev_m, true)
            .default_map_pin_directory(pin_dir);
        clock.set_globals(&mut loader);
        for map in SOCK_LB_SIZED_MAPS
            .into_iter()
            .chain(ebpf::maps::PKT_SIZED_MAPS)
        {
            loader.map_max_entries(map, config.map_max);
        }
        Ok(loader.load(object)?)
    }

    fn load_xdp(config: NodePortConfig, pin_dir: &Path) -> Result<Ebpf, DatapathError> {
        let mut ebpf = Self::load_object(config, pin_dir, ebpf::nodeport_xdp_object())?;
        program::<Xdp>(&mut ebpf, NODEPORT_XDP_PROGRAM)?
            .load()
            .map_err(|source| DatapathError::Program {
                program: NODEPORT_XDP_PROGRAM,
                source,
            })?;
        Ok(ebpf)
    }

    fn load_programs(config: NodePortConfig, pin_dir: &Path) -> Result<Ebpf, DatapathError> {
        let mut ebpf = Self::load_object(config, pin_dir, ebpf::nodeport_object())?;
        for name in [
            NODEPORT_INGRESS_PROGRAM,
            NODEPORT_EGRESS_PROGRAM,
            POD_INGRESS_PROGRAM,
        ] {
            program::<SchedClassifier>(&mut ebpf, name)?
                .load()
                .map_err(|source| DatapathError::Program {
                    program: name,
                    source,
                })?;
        }
        Ok(ebpf)
    }

    /// Makes `lb_devices_v1` hold exactly `devices` (by ifindex); returns how many entries
    /// were written or deleted.
    pub fn set_devices(&mut self, devices: &[DeviceAddrs]) -> Result<usize, DatapathError> {
        let failed = |source| DatapathError::Map {
            map: LB_DEVICES,
            source,
        };
        let mut map = self.hash_map::<u32, LbDevice>(LB_DEVICES)?;
        let have: Vec<u32> = map.keys().collect::<Result<_, _>>().map_err(failed)?;
        let mut changed = 0;
        for ifindex in have
            .iter()
            .filter(|i| !devices.iter().any(|d| d.ifindex == **i))
        {
            map.remove(ifindex).map_err(failed)?;
            changed += 1;
        }
        for device in devices {
            let value = device.map_value();
            if map.get(&device.ifindex, 0).ok() != Some(value) {
                map.insert(device.ifindex, value, 0).map_err(failed)?;
                changed += 1;
            }
        }
        Ok(changed)
    }

    /// The Maglev tables by rev_nat_index.
    pub fn maglev_tables(&mut self) -> Result<BTreeMap<u16, Vec<u32>>, DatapathError> {
        self.maglev_map(|map| map.read())
    }

    /// Makes `lb_maglev_v1` hold exactly `want`, writing only tables that changed (compared
    /// with what this loader last wrote; read from the map the first time, and after a failed
    /// write). Past the map's capacity the frontends with the highest ids get no table (a
    /// warning says how many): their flows use the slot hash.
    pub fn apply_maglev(
        &mut self,
        want: &BTreeMap<u16, Vec<u32>>,
    ) -> Result<ApplyReport, DatapathError> {
        let cached = self.maglev_written.take();
        let result = self.maglev_map(|map| {
            let have = match cached {
                Some(have) => have,
                None => map.read()?,
            };
            if want.len() > map.capacity() {
                tracing::warn!(
                    tables = want.len(),
                    capacity = map.capacity(),
                    "more Maglev tables than lb_maglev_v1 holds: the frontends with the highest \
                     ids balance by the flow hash over their slots instead (a smaller \
                     maglev.tableSize fits more)"
                );
            }
            let fits: BTreeMap<u16, Vec<u32>> = want
                .iter()
                .take(map.capacity())
                .map(|(k, v)| (*k, v.clone()))
                .collect();
            let report = map.apply(&have, &fits)?;
            Ok((report, fits))
        });
        let (report, written) = result?;
        self.maglev_written = Some(written);
        Ok(report)
    }

    /// Deletes, before the service maps change, the tables of the frontend ids in
    /// `reassigned`, which a delta gives to another frontend (or to none): the new frontend's
    /// head may be written before its own table, and must not find the old one meanwhile (it
    /// falls back to the slot hash instead).
    pub fn drop_tables(
        &mut self,
        reassigned: &std::collections::BTreeSet<u16>,
    ) -> Result<ApplyReport, DatapathError> {
        if reassigned.is_empty() {
            return Ok(ApplyReport::default());
        }
        let current = match self.maglev_written.take() {
            Some(tables) => tables,
            None => self.maglev_tables()?,
        };
        let unchanged = !current.keys().any(|id| reassigned.contains(id));
        if unchanged {
            self.maglev_written = Some(current);
            return Ok(ApplyReport::default());
        }
        let keep: BTreeMap<u16, Vec<u32>> = current
            .iter()
            .filter(|(id, _)| !reassigned.contains(id))
            .map(|(id, t)| (*id, t.clone()))
            .collect();
        self.maglev_written = Some(current);
        self.apply_maglev(&keep)
    }

    fn maglev_map<T>(
        &mut self,
        f: impl FnOnce(&MaglevMap<'_>) -> Result<T, DatapathError>,
    ) -> Result<T, DatapathError> {
        let len = maglev_value_len(self.maglev_m);
        match self.ebpf.map(LB_MAGLEV) {
            Some(Map::HashMap(data)) => {
                let capacity = data
                    .info()
                    .map_err(|source| DatapathError::Map {
                        map: LB_MAGLEV,
                        source,
                    })?
                    .max_entries();
                f(&MaglevMap::new(data, len, capacity))
            }
            _ => Err(DatapathError::Missing {
                kind: "map",
                name: LB_MAGLEV,
            }),
        }
    }

    /// Every `lb_devices_v1` entry.
    pub fn devices(&mut self) -> Result<Vec<(u32, LbDevice)>, DatapathError> {
        let map = self.hash_map::<u32, LbDevice>(LB_DEVICES)?;
        map.iter()
            .collect::<Result<_, _>>()
            .map_err(|source| DatapathError::Map {
                map: LB_DEVICES,
                source,
            })
    }

    /// The conntrack map, `lb_ct_v2`.
    pub fn conntrack(
        &mut self,
    ) -> Result<HashMap<&mut MapData, LbCtKey, LbCtEntry>, DatapathError> {
        self.hash_map(LB_CT)
    }

    fn hash_map<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &'static str,
    ) -> Result<HashMap<&mut MapData, K, V>, DatapathError> {
        super::sock_lb::hash_map(&mut self.ebpf, name)
    }
}

#[cfg(test)]
mod tests {
    /// The loader parses the object before the kernel sees it: a section name aya does not
    /// know (`SEC("tc")` in aya 0.14) refuses every start with NodePort on, root or not.
    #[test]
    fn the_nodeport_object_parses_with_both_programs_as_classifiers() {
        let obj = aya_obj::Object::parse(ebpf::nodeport_object()).expect("nodeport.o parses");
        for name in [
            ebpf::NODEPORT_INGRESS_PROGRAM,
            ebpf::NODEPORT_EGRESS_PROGRAM,
        ] {
            let prog = obj
                .programs
                .get(name)
                .unwrap_or_else(|| panic!("{name} missing"));
            assert!(
                matches!(prog.section, aya_obj::ProgramSection::SchedClassifier),
                "{name}: {:?}",
                prog.section
            );
        }
    }

    #[test]
    fn the_xdp_object_parses_with_its_program_as_xdp() {
        let obj = aya_obj::Object::parse(ebpf::nodeport_xdp_object()).expect("nodeport_xdp.o");
        let prog = obj
            .programs
            .get(ebpf::NODEPORT_XDP_PROGRAM)
            .expect("lb_nodeport_xdp");
        assert!(
            matches!(prog.section, aya_obj::ProgramSection::Xdp { .. }),
            "{:?}",
            prog.section
        );
    }
}
