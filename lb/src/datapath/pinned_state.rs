//! The packet datapath's state as its pinned maps hold it, read without loading a program:
//! what `lbctl explain` runs the simulator over.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use aya::maps::{HashMap, Map, MapData};
use aya::Pod;
use ebpf::maps::{
    LbAddr, LbCtEntry, LbCtKey, LbDevice, LbLocalAddr, LB_CT, LB_DEVICES, LB_LOCAL_ADDRS, LB_MAGLEV,
};

use super::maglev_map::{maglev_max_entries, maglev_value_len, MaglevMap};
use super::{DatapathError, MapContents, ServiceMaps};

/// The pinned maps' contents.
#[derive(Debug, Clone, Default)]
pub struct PinnedState {
    /// Services, backends, reverse NAT, source ranges and (with Maglev) the tables.
    pub maps: MapContents,
    /// The node's addresses (`lb_local_addrs`).
    pub local_addrs: Vec<IpAddr>,
    /// The NodePort devices (`lb_devices`).
    pub devices: BTreeMap<u32, LbDevice>,
    /// Conntrack (`lb_ct`).
    pub conntrack: BTreeMap<LbCtKey, LbCtEntry>,
}

fn read_hash<K: Pod + Ord, V: Pod>(
    pin_dir: &Path,
    name: &'static str,
) -> Result<BTreeMap<K, V>, DatapathError> {
    let failed = |source| DatapathError::Map { map: name, source };
    let data = MapData::from_pin(pin_dir.join(name)).map_err(failed)?;
    let map: HashMap<MapData, K, V> = HashMap::try_from(Map::HashMap(data)).map_err(failed)?;
    map.iter().collect::<Result<_, _>>().map_err(failed)
}

impl PinnedState {
    /// Reads the maps pinned in `pin_dir`; `maglev_m` is the table length the agent created
    /// `lb_maglev_v1` with (`None` without Maglev), `map_max` its `bpf.lbMapMax`.
    pub fn read(
        pin_dir: &Path,
        maglev_m: Option<u32>,
        map_max: u32,
    ) -> Result<PinnedState, DatapathError> {
        let mut maps = ServiceMaps::open_pinned(pin_dir)?.read()?;
        if maglev_m.is_some() {
            let data = MapData::from_pin(pin_dir.join(LB_MAGLEV)).map_err(|source| {
                DatapathError::Map {
                    map: LB_MAGLEV,
                    source,
                }
            })?;
            let len = maglev_value_len(maglev_m);
            maps.maglev = MaglevMap::new(&data, len, maglev_max_entries(map_max, len)).read()?;
        }
        let local: BTreeMap<LbAddr, LbLocalAddr> = read_hash(pin_dir, LB_LOCAL_ADDRS)?;
        Ok(PinnedState {
            maps,
            local_addrs: local.keys().map(|&a| IpAddr::from(a)).collect(),
            devices: read_hash(pin_dir, LB_DEVICES)?,
            conntrack: read_hash(pin_dir, LB_CT)?,
        })
    }
}
