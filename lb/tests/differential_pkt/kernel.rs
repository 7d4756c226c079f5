//! The packet programs on the host kernel for the packet tests (the differential test and the
//! fixtures): one copy of the objects with given settings, pinned in a directory of the test's
//! bpffs, its maps filled from a [`MapContents`], and single packets run through each program
//! with `BPF_PROG_TEST_RUN`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{HashMap, MapData, PerCpuArray};
use aya::programs::{SchedClassifier, TestRun, TestRunOptions, Xdp};
use aya::{Ebpf, EbpfLoader, Pod};
use ebpf::maps::{
    counter, LbAddr, LbBackend, LbCtEntry, LbCtKey, LbDevice, LbKey, LbLocalAddr, LbReverseNat,
    LbService, LbSrcRange,
};
use lb::datapath::sim::PktConfig;
use lb::datapath::MapContents;

/// The Maglev table length the packet tests use (the smallest `maglev.tableSize`).
pub const MAGLEV_M: u32 = 251;
/// `lb_ct_v2`'s size here: far above what a test creates, so the LRU never evicts.
const CT_SIZE: u32 = 4096;
/// Offsets of `ingress_ifindex` and `ifindex` in `struct __sk_buff`.
const SKB_INGRESS_IFINDEX: usize = 36;
const SKB_IFINDEX: usize = 40;
/// Offsets in `struct xdp_md` of `data_end` and `ingress_ifindex`; its size.
const XDP_MD_DATA_END: usize = 4;
const XDP_MD_INGRESS_IFINDEX: usize = 12;
const XDP_MD_SIZE: usize = 24;

/// Which program a packet meets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// `lb_nodeport_ingress` on a NodePort device.
    Ingress,
    /// `lb_nodeport_egress` (NodePort devices and pod interfaces).
    Egress,
    /// `lb_pod_ingress` on a pod interface.
    PodIngress,
    /// `lb_nodeport_xdp` on a NodePort device.
    Xdp,
}

/// One copy of the objects, pinned in its own directory (removed on drop).
pub struct Loaded {
    ebpf: Ebpf,
    /// The XDP object over the same maps, when loaded.
    xdp: Option<Ebpf>,
    dir: PathBuf,
    ct: HashMap<MapData, LbCtKey, LbCtEntry>,
    counters: PerCpuArray<MapData, u64>,
}

impl Drop for Loaded {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn take_hash<K: Pod, V: Pod>(
    ebpf: &mut Ebpf,
    name: &str,
) -> Result<HashMap<MapData, K, V>, String> {
    let map = ebpf.take_map(name).ok_or(format!("no map {name}"))?;
    HashMap::try_from(map).map_err(|e| format!("{name}: {e}"))
}

fn insert_all<K: Pod + Ord, V: Pod>(
    ebpf: &mut Ebpf,
    name: &str,
    entries: &BTreeMap<K, V>,
) -> Result<(), String> {
    let mut map: HashMap<MapData, K, V> = take_hash(ebpf, name)?;
    for (k, v) in entries {
        map.insert(k, v, 0).map_err(|e| format!("{name}: {e}"))?;
    }
    Ok(())
}

/// Loads the tc object (and, with `xdp`, the XDP one) with `config` into `dir` (created), and
/// fills its maps: `maps`, the node's `local_addrs`, the NodePort `devices`.
pub fn load(
    config: &PktConfig,
    xdp: bool,
    maps: &MapContents,
    local_addrs: &[std::net::IpAddr],
    devices: &[(u32, LbDevice)],
    dir: &Path,
) -> Result<Loaded, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let external_clusterip = u8::from(config.external_clusterip);
    let external_ip_mitigation = u8::from(config.external_ip_mitigation);
    let maglev = u8::from(config.maglev_m.is_some());
    // The clock the agent gives the programs on this kernel, whose seconds the model's
    // `expires` must match.
    let clock = lb::datapath::PacketClock::of_this_kernel();
    let mut loader = EbpfLoader::new();
    loader
        .override_global("cfg_snat_port_min", &config.snat_port_min, true)
        .override_global("cfg_snat_port_max", &config.snat_port_max, true)
        .override_global("cfg_flow_seed", &config.flow_seed, true)
        .override_global("cfg_external_clusterip", &external_clusterip, true)
        .override_global("cfg_external_ip_mitigation", &external_ip_mitigation, true)
        .override_global("cfg_maglev", &maglev, true)
        .override_global("cfg_maglev_m", &MAGLEV_M, true)
        .default_map_pin_directory(dir);
    clock.set_globals(&mut loader);
    for map in ebpf::maps::SOCK_LB_SIZED_MAPS {
        loader.map_max_entries(map, 1024);
    }
    loader.map_max_entries(ebpf::maps::LB_CT, CT_SIZE);
    let mut ebpf = loader
        .load(ebpf::nodeport_object())
        .map_err(|e| format!("loading nodeport.o: {e}"))?;
    // Loaded after the tc object has pinned the maps, so it adopts them.
    let xdp = if xdp {
        let mut xdp = loader
            .load(ebpf::nodeport_xdp_object())
            .map_err(|e| format!("loading nodeport_xdp.o: {e}"))?;
        let prog: &mut Xdp = xdp
            .program_mut(ebpf::NODEPORT_XDP_PROGRAM)
            .ok_or("no XDP program")?
            .try_into()
            .map_err(|e| format!("{}: {e}", ebpf::NODEPORT_XDP_PROGRAM))?;
        prog.load()
            .map_err(|e| format!("loading {}: {e:?}", ebpf::NODEPORT_XDP_PROGRAM))?;
        Some(xdp)
    } else {
        None
    };
    for name in [
        ebpf::NODEPORT_INGRESS_PROGRAM,
        ebpf::NODEPORT_EGRESS_PROGRAM,
        ebpf::POD_INGRESS_PROGRAM,
    ] {
        let prog: &mut SchedClassifier = ebpf
            .program_mut(name)
            .ok_or(format!("no program {name}"))?
            .try_into()
            .map_err(|e| format!("{name}: {e}"))?;
        prog.load().map_err(|e| format!("loading {name}: {e:?}"))?;
    }
    insert_all::<LbKey, LbService>(&mut ebpf, ebpf::maps::LB_SERVICES, &maps.services)?;
    insert_all::<u32, LbBackend>(&mut ebpf, ebpf::maps::LB_BACKENDS, &maps.backends)?;
    insert_all::<u16, LbReverseNat>(&mut ebpf, ebpf::maps::LB_REVERSE_NAT, &maps.reverse_nat)?;
    let local: BTreeMap<LbAddr, LbLocalAddr> = local_addrs
        .iter()
        .map(|&a| (LbAddr::from(a), LbLocalAddr::default()))
        .collect();
    insert_all(&mut ebpf, ebpf::maps::LB_LOCAL_ADDRS, &local)?;
    let devices: BTreeMap<u32, LbDevice> = devices.iter().copied().collect();
    insert_all(&mut ebpf, ebpf::maps::LB_DEVICES, &devices)?;
    let tables: BTreeMap<u32, [u32; MAGLEV_M as usize]> = maps
        .maglev
        .iter()
        .map(|(k, v)| {
            let table: [u32; MAGLEV_M as usize] = v
                .as_slice()
                .try_into()
                .map_err(|_| format!("a table of {} entries", v.len()))?;
            Ok((u32::from(*k), table))
        })
        .collect::<Result<_, String>>()?;
    insert_all(&mut ebpf, ebpf::maps::LB_MAGLEV, &tables)?;
    let ranges_map = ebpf
        .take_map(ebpf::maps::LB_SOURCE_RANGES)
        .ok_or("no source ranges map")?;
    let mut ranges: LpmTrie<MapData, LbSrcRange, u8> =
        LpmTrie::try_from(ranges_map).map_err(|e| format!("lb_source_ranges: {e}"))?;
    for key in maps.source_ranges.keys() {
        ranges
            .insert(&Key::new(key.prefixlen, key.data()), 0, 0)
            .map_err(|e| format!("lb_source_ranges: {e}"))?;
    }
    let ct = take_hash(&mut ebpf, ebpf::maps::LB_CT)?;
    let counters_map = ebpf
        .take_map(ebpf::maps::LB_COUNTERS)
        .ok_or("no counters map")?;
    let counters = PerCpuArray::try_from(counters_map).map_err(|e| format!("lb_counters: {e}"))?;
    Ok(Loaded {
        ebpf,
        xdp,
        dir: dir.to_owned(),
        ct,
        counters,
    })
}

impl Loaded {
    /// Whether the XDP program is loaded.
    pub fn has_xdp(&self) -> bool {
        self.xdp.is_some()
    }

    /// Runs one frame through `hook` on `ifindex`: the return code and the output (for XDP,
    /// its metadata followed by the frame, as a test run returns it).
    pub fn run(&self, hook: Hook, ifindex: u32, frame: &[u8]) -> Result<(i32, Vec<u8>), String> {
        let mut out = vec![0u8; 4096];
        let (name, result) = if hook == Hook::Xdp {
            let name = ebpf::NODEPORT_XDP_PROGRAM;
            let xdp = self.xdp.as_ref().ok_or("the XDP object is not loaded")?;
            let prog: &Xdp = xdp
                .program(name)
                .ok_or(format!("no program {name}"))?
                .try_into()
                .map_err(|e| format!("{name}: {e}"))?;
            let mut ctx = [0u8; XDP_MD_SIZE];
            ctx[XDP_MD_DATA_END..XDP_MD_DATA_END + 4]
                .copy_from_slice(&(frame.len() as u32).to_ne_bytes());
            ctx[XDP_MD_INGRESS_IFINDEX..XDP_MD_INGRESS_IFINDEX + 4]
                .copy_from_slice(&ifindex.to_ne_bytes());
            let result = prog.test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ctx_in: Some(&ctx),
                ..TestRunOptions::new()
            });
            (name, result)
        } else {
            let name = match hook {
                Hook::Egress => ebpf::NODEPORT_EGRESS_PROGRAM,
                Hook::PodIngress => ebpf::POD_INGRESS_PROGRAM,
                _ => ebpf::NODEPORT_INGRESS_PROGRAM,
            };
            let prog: &SchedClassifier = self
                .ebpf
                .program(name)
                .ok_or(format!("no program {name}"))?
                .try_into()
                .map_err(|e| format!("{name}: {e}"))?;
            let mut ctx = [0u8; SKB_IFINDEX + 4];
            if hook != Hook::Egress {
                ctx[SKB_INGRESS_IFINDEX..SKB_IFINDEX].copy_from_slice(&ifindex.to_ne_bytes());
            }
            ctx[SKB_IFINDEX..].copy_from_slice(&ifindex.to_ne_bytes());
            let result = prog.test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ctx_in: Some(&ctx),
                ..TestRunOptions::new()
            });
            (name, result)
        };
        let result = result.map_err(|e| format!("test run of {name}: {e:?}"))?;
        out.truncate(result.data_size_out as usize);
        Ok((result.return_value as i32, out))
    }

    /// The whole conntrack map.
    pub fn ct(&self) -> Result<BTreeMap<LbCtKey, LbCtEntry>, String> {
        self.ct
            .iter()
            .map(|r| r.map_err(|e| format!("reading lb_ct: {e}")))
            .collect()
    }

    /// The drop counters, summed over CPUs.
    pub fn counters(&self) -> Result<[u64; counter::MAX as usize], String> {
        let mut out = [0u64; counter::MAX as usize];
        for (i, c) in out.iter_mut().enumerate() {
            let values = self
                .counters
                .get(&(i as u32), 0)
                .map_err(|e| format!("reading lb_counters[{i}]: {e}"))?;
            *c = values.iter().sum();
        }
        Ok(out)
    }
}
