//! The running agent: prepares the node (mounts, namespace identity, reserved ports), loads the
//! socket programs with pinned maps and attaches them through pinned links, and keeps the maps
//! equal to the desired state through the [`Reconciler`]. [`run`] is `lb-agent`'s loop: a
//! [`crate::source::Source`] fills the store, translation runs from it, the reconciler writes.

mod cleanup;
pub mod ct_gc;
pub mod degrade;
mod error;
mod lock;
pub mod neighbours;
pub mod nodeport;
mod options_watch;
mod record;
mod run;
pub mod setup;
mod translation_log;
pub mod udp_destroy;

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Node;

pub use cleanup::{cleanup, CleanupReport};
pub use error::AgentError;
pub use lock::{AgentLock, Holder, LOCK_FILE};
pub use record::{AgentRecord, DEFAULT_STATE_DIR};
pub use run::{run, RunOptions, RESYNC};

use crate::config::AgentConfig;
use crate::datapath::{
    is_tc_link, is_xdp_link, pinned_links, DeviceAddrs, NodePortLb, PacketClock, SockLb, TcMode,
    TcRecord, XdpState, LINKS_DIR,
};
use crate::host::features::Feature;
use crate::host::sock_diag;
use crate::host::{self, NetnsIdentity, ProcSysctls};
use crate::k8s::DeviceSelection;
use crate::model::DesiredState;
use crate::reconciler::{KernelMaps, ReconcileReport, Reconciler};
use udp_destroy::KernelSweeper;

/// The directory under `bpf.root` where this agent pins its maps and links.
pub const PIN_SUBDIR: &str = "lb";

/// A started agent.
#[derive(Debug)]
pub struct Agent {
    sock_lb: SockLb,
    /// The NodePort programs (with `nodePort.enabled`) and the devices they are attached to.
    nodeport: Option<(NodePortLb, Vec<DeviceAddrs>)>,
    reconciler: Reconciler,
    sweeper: KernelSweeper,
    record: AgentRecord,
    /// The record as last written: a pass that changed none of it writes nothing (at 10 000
    /// services the file is about 650 kB).
    written: AgentRecord,
    state_dir: PathBuf,
    /// Pods' service traffic is balanced at their interfaces ([`nodeport::balances_pods_at_tc`]),
    /// which each pass keeps up with.
    pods_at_tc: bool,
    /// The neighbour entries for the other nodes (with `l2NeighDiscovery.enabled` and the
    /// NodePort programs).
    neighbours: Option<neighbours::Neighbours>,
    /// The IP families the agent runs (IPv4, IPv6).
    families: (bool, bool),
    /// The services the last pass left out because the maps were full, each logged once.
    not_programmed: Vec<crate::reconciler::NotProgrammed>,
    /// How many of those the last pass refused for the first time.
    fresh_refusals: usize,
}

/// The datapath loaded, its maps pinned (or adopted), nothing attached yet: the part of the
/// start that does not need the node's device selection, which comes with the Node from the
/// source. [`run`] loads it while the lists arrive; [`LoadedDatapath::start`] attaches it.
#[derive(Debug)]
pub struct LoadedDatapath {
    features: degrade::KernelFeatures,
    plan: degrade::SocketLbPlan,
    cgroup: PathBuf,
    pin_dir: PathBuf,
    sock_lb: SockLb,
    /// The NodePort programs, with `nodePort.enabled`.
    nodeport_lb: Option<NodePortLb>,
}

impl Agent {
    /// Probes the kernel, prepares the mounts and loads the programs with their maps pinned;
    /// [`LoadedDatapath::start`] attaches them. Maps pinned by an earlier agent are adopted
    /// with their contents, so traffic keeps flowing while this one starts. What the kernel or
    /// the options refuse is refused before the programs load. Pinned maps of another size
    /// are moved aside for fresh ones (`datapath::migrate`): a load that fails, or is
    /// given up ([`LoadedDatapath::abandon`]), puts them back.
    pub fn load(config: &AgentConfig) -> Result<LoadedDatapath, AgentError> {
        host::features::raise_memlock_limit();
        let features = degrade::KernelFeatures::probe()?;
        let plan = degrade::plan(config, &features)?;
        for d in &plan.degraded {
            tracing::warn!(feature = %d.feature, "this kernel lacks a feature: {}", d.effect);
        }
        // Checked before anything changes: a device option naming no device refuses the start.
        if config.node_port() {
            nodeport::check_named_devices(config, &host::host_devices()?)?;
        }
        host::ensure_bpffs(config.bpf_root(), config.values().bpf.auto_mount.enabled)?;
        let cgroup = host::ensure_cgroup2(
            &config.cgroup_root(),
            config.values().cgroup.auto_mount.enabled,
        )?;
        // Without SO_NETNS_COOKIE (before 5.14) the kernel tells the cookie to a BPF hook;
        // "the initial namespace" (compared with PID 1's, which a PID namespace can fool) is
        // the last resort.
        let netns = match host::own_netns_cookie() {
            Ok(NetnsIdentity::Cookie(cookie)) => NetnsIdentity::Cookie(cookie),
            fallback => match crate::datapath::netns_cookie_through_bpf(&cgroup) {
                Ok(cookie) => {
                    tracing::info!(cookie, "learned this namespace's cookie through a BPF hook");
                    NetnsIdentity::Cookie(cookie)
                }
                Err(probe) => match fallback {
                    Ok(identity) => identity,
                    Err(_) => return Err(probe.into()),
                },
            },
        };
        let pin_dir = config.bpf_root().join(PIN_SUBDIR);
        std::fs::create_dir_all(&pin_dir).map_err(AgentError::io(&pin_dir))?;
        let settings = setup::datapath_settings(config, &plan, netns.cookie_for_bpf());
        if settings.conn_slots > 0 {
            tracing::info!(
                slots = settings.conn_slots,
                "connected sockets' translations in a slot array (the kernel has BPF atomics)"
            );
        } else {
            tracing::info!(
                "connected sockets' translations in a hash map only (no BPF atomics: Linux 5.12)"
            );
        }
        let sock_lb = SockLb::load_hooks(settings, plan.hooks, &pin_dir)?;
        let nodeport_lb = if config.node_port() {
            match NodePortLb::load(nodeport::nodeport_settings(config), &pin_dir) {
                Ok(lb) => Some(lb),
                Err(e) => {
                    sock_lb.abandon();
                    return Err(e.into());
                }
            }
        } else {
            None
        };
        Ok(LoadedDatapath {
            features,
            plan,
            cgroup,
            pin_dir,
            sock_lb,
            nodeport_lb,
        })
    }
}

impl LoadedDatapath {
    /// Gives up the loaded datapath before attaching it (the lists or the first translation
    /// failed): pinned maps moved aside for a resize go back in place, so the programs
    /// running from an earlier agent keep theirs and the next start finds the node as it was.
    pub fn abandon(self) {
        self.sock_lb.abandon();
        if let Some(lb) = self.nodeport_lb {
            lb.abandon();
        }
    }

    /// Attaches the loaded datapath, its NodePort programs to the devices of `selection`
    /// (unless `socketLB.enabled` is off), and records what it installed in `state_dir`.
    pub fn start(
        self,
        config: &AgentConfig,
        selection: &DeviceSelection,
        state_dir: &Path,
    ) -> Result<Agent, AgentError> {
        let LoadedDatapath {
            features,
            plan,
            cgroup,
            pin_dir,
            mut sock_lb,
            nodeport_lb,
        } = self;
        let nodeport_devices = match nodeport_lb {
            Some(lb) => {
                let chosen = host::host_devices()
                    .map_err(AgentError::from)
                    .and_then(|host| {
                        nodeport::choose_devices(config, selection, &host).map_err(Into::into)
                    });
                match chosen {
                    Ok(devices) => Some((lb, devices)),
                    Err(e) => {
                        sock_lb.abandon();
                        lb.abandon();
                        return Err(e);
                    }
                }
            }
            None => None,
        };
        let links = if setup::attaches_socket_hooks(config) {
            sock_lb.attach(&cgroup)?
        } else {
            detach_socket_hooks(&pin_dir)?;
            // Nothing attaches the socket programs, but the packet programs use the maps.
            sock_lb.finish_migration()?;
            tracing::info!(
                "socketLB.enabled is off: the socket hooks are not attached, services are \
                 programmed in the maps only"
            );
            Vec::new()
        };
        let previous = AgentRecord::read(state_dir).ok();
        let previous_tc = previous.as_ref().map(|r| r.tc.clone()).unwrap_or_default();
        let mut xdp_devices = Vec::new();
        let (nodeport, tc) = match nodeport_devices {
            Some((mut lb, devices)) => {
                tracing::info!(
                    clock = %PacketClock::of_this_kernel().describe(),
                    "packet programs count conntrack seconds by this clock"
                );
                let mode = if features.has(Feature::Tcx) {
                    TcMode::Tcx
                } else {
                    TcMode::Netlink
                };
                let pods = pod_interfaces(nodeport::balances_pods_at_tc(config), &devices)?;
                let tc = lb.attach(&devices, &pods, mode, &previous_tc)?;
                if !pods.is_empty() {
                    tracing::info!(
                        interfaces = pods.len(),
                        "pods' service traffic balanced at their interfaces (socketLB.hostNamespaceOnly)"
                    );
                }
                for d in &devices {
                    tracing::info!(device = %d.name, ifindex = d.ifindex, %mode, "NodePort programs attached");
                }
                // After tc, which serves every packet while a device's XDP program changes.
                xdp_devices = match nodeport::xdp_policy(config) {
                    Some(policy) => lb.attach_xdp(&devices, policy)?,
                    None => {
                        detach_xdp(&pin_dir)?;
                        Vec::new()
                    }
                };
                for d in &xdp_devices {
                    if d.state == XdpState::Native {
                        tracing::info!(device = %d.device, "NodePort XDP program attached (native)");
                    }
                }
                if devices.is_empty() {
                    tracing::warn!(
                        "no NodePort device found (none matches devices, holds a Kubernetes \
                         address or has the default route): NodePort is served to the node \
                         itself only"
                    );
                }
                (Some((lb, devices)), tc)
            }
            None => {
                detach_nodeport(&pin_dir, &previous_tc)?;
                (None, TcRecord::default())
            }
        };
        let reserved_ports = setup::protect_ports(
            config,
            &mut ProcSysctls,
            previous.as_ref().and_then(|r| r.reserved_ports),
        )?;
        let udp_support = match udp_destroy::SweepScope::for_config(config) {
            Some(_) => sock_diag::probe(),
            None => sock_diag::Support::Unavailable("UDP is not translated".to_owned()),
        };
        if let sock_diag::Support::Unavailable(why) = &udp_support {
            if udp_destroy::SweepScope::for_config(config).is_some() {
                tracing::warn!(
                    "connected UDP sockets to deleted backends will not be destroyed: {why} \
                     (needs CONFIG_INET_DIAG, CONFIG_INET_UDP_DIAG and CONFIG_INET_DIAG_DESTROY)"
                );
            }
        }
        let mut status = setup::start_status(config, &plan, selection, &udp_support);
        status.xdp_devices = xdp_devices;
        if let Some((_, devices)) = &nodeport {
            if !devices.is_empty() {
                status.devices = devices.iter().map(|d| d.name.clone()).collect();
            }
        }
        let previous_neighbours = previous
            .as_ref()
            .map(|r| r.neighbours.clone())
            .unwrap_or_default();
        // What the record keeps: the entries of this agent's, or an earlier agent's it could
        // not remove.
        let mut unremoved = neighbours::NeighbourEntries::default();
        let neighbours = if config.l2_neigh_discovery() && nodeport.is_some() {
            let upkeep = neighbours::Upkeep::choose(
                features.has(Feature::ManagedNeighbours),
                config.neigh_refresh_period(),
            );
            match upkeep {
                neighbours::Upkeep::Kernel => tracing::info!(
                    "neighbour entries for the other nodes: managed, the kernel keeps them resolved"
                ),
                neighbours::Upkeep::Agent(period) => tracing::info!(
                    ?period,
                    "neighbour entries for the other nodes: this kernel has no managed \
                     neighbours, the agent refreshes them every l2NeighDiscovery.refreshPeriod"
                ),
            }
            // Entries recorded in another namespace are not this agent's to adopt.
            let adopted =
                if previous_neighbours.netns_inode == crate::datapath::current_netns_inode() {
                    previous_neighbours.entries
                } else {
                    Vec::new()
                };
            Some(neighbours::Neighbours::new(upkeep, adopted))
        } else {
            // A failure here leaves entries the kernel resolves and nothing uses: not worth
            // refusing the start over; they stay recorded for `lbctl cleanup`.
            match neighbours::remove(&previous_neighbours) {
                Ok(lines) => {
                    for line in lines {
                        tracing::info!("neighbour discovery is off: {line}");
                    }
                }
                Err(e) => {
                    tracing::warn!(
                        "neighbour discovery is off, but an earlier agent's neighbour entries \
                         could not be removed (lbctl cleanup will try again): {e}"
                    );
                    unremoved = previous_neighbours;
                }
            }
            None
        };
        let record = AgentRecord {
            pin_dir,
            cgroup: cgroup.clone(),
            links,
            reserved_ports,
            status,
            services: Default::default(),
            tc,
            nodeport: nodeport
                .is_some()
                .then(|| nodeport::nodeport_settings(config)),
            neighbours: match &neighbours {
                Some(n) => neighbours::NeighbourEntries::here(n.kept()),
                None => unremoved,
            },
        };
        record.write(state_dir)?;
        Ok(Agent {
            sock_lb,
            nodeport,
            reconciler: Reconciler::new(setup::udp_sweep_scope(config, &plan, &udp_support))
                .with_maglev(nodeport::maglev_settings(config)),
            sweeper: KernelSweeper {
                cgroup_root: cgroup,
            },
            written: record.clone(),
            record,
            state_dir: state_dir.to_owned(),
            pods_at_tc: nodeport::balances_pods_at_tc(config),
            neighbours,
            families: (config.ipv4(), config.ipv6()),
            not_programmed: Vec::new(),
            fresh_refusals: 0,
        })
    }
}

impl Agent {
    /// Makes the next pass read the service maps back from the kernel (the periodic resync
    /// does, so what it finds there is put right; other passes trust what the last wrote).
    pub fn reread_maps(&mut self) {
        self.reconciler.reread_maps();
    }

    /// Makes the maps hold exactly `desired` (and the node's current addresses), keeping the
    /// ids of what did not change; entries nothing wants are deleted.
    pub fn reconcile(&mut self, desired: &DesiredState) -> Result<ReconcileReport, AgentError> {
        let addrs = host::local_addresses()?;
        let devices = match &mut self.nodeport {
            Some((_, attached)) => {
                refresh_addresses(attached)?;
                attached.clone()
            }
            None => Vec::new(),
        };
        if let Some((lb, attached)) = &mut self.nodeport {
            let pods = pod_interfaces(self.pods_at_tc, attached)?;
            let changed = lb.refresh_pods(&pods, &mut self.record.tc)?;
            if changed > 0 {
                tracing::info!(
                    changed,
                    "pod interfaces came or went: their programs follow"
                );
            }
        }
        let mut maps = KernelMaps {
            sock_lb: &mut self.sock_lb,
            nodeport: self.nodeport.as_mut().map(|(lb, _)| lb),
        };
        let report =
            self.reconciler
                .reconcile(desired, &addrs, &devices, &mut maps, &mut self.sweeper)?;
        let local = report.local_addrs;
        if let Some(warning) = local.warning() {
            // Once per change of the count, not at every resync.
            if self.record.status.local_addresses != Some(local.status()) {
                tracing::warn!("{warning}");
            }
        }
        self.record.status.local_addresses = Some(local.status());
        // Monitors killed since the last pass: their buffers are gone already, so a failure
        // here costs only the hooks' event building until the next pass.
        match crate::datapath::reclaim_monitor_slots(&self.record.pin_dir) {
            Ok(0) => {}
            Ok(gone) => tracing::info!(
                monitors = gone,
                "turned off tracing for monitors that are gone"
            ),
            Err(e) => tracing::warn!("cannot check for monitors that are gone: {e}"),
        }
        self.fresh_refusals = self.log_not_programmed(&report.not_programmed);
        if self.record.services != *self.reconciler.service_names() {
            self.record.services = self.reconciler.service_names().clone();
        }
        self.write_record()?;
        Ok(report)
    }

    /// Logs each service the maps have no room for once, when it is first left out, and says
    /// when one that was left out is programmed after all.
    /// Returns how many were left out for the first time.
    fn log_not_programmed(&mut self, now: &[crate::reconciler::NotProgrammed]) -> usize {
        let known = |list: &[crate::reconciler::NotProgrammed], name| {
            list.iter()
                .any(|n: &crate::reconciler::NotProgrammed| &n.service == name)
        };
        let mut fresh = 0;
        for refused in now {
            if !known(&self.not_programmed, &refused.service) {
                tracing::error!("{refused}");
                fresh += 1;
            }
        }
        for earlier in &self.not_programmed {
            if !known(now, &earlier.service) {
                tracing::info!(
                    service = %earlier.service,
                    "the maps have room again: service programmed"
                );
            }
        }
        self.not_programmed = now.to_vec();
        fresh
    }

    /// How many services the last [`Agent::reconcile`] left out for lack of room that the
    /// one before had not (each refusal counts once, not at every resync).
    pub fn fresh_refusals(&self) -> usize {
        self.fresh_refusals
    }

    /// Keeps a neighbour entry for the next hop towards every Node of `nodes` but `local` on
    /// each NodePort device, and none of the agent's others (nothing with neighbour discovery
    /// off).
    pub fn keep_neighbours<N: std::borrow::Borrow<Node>>(
        &mut self,
        nodes: &[N],
        local: &str,
    ) -> Result<(), AgentError> {
        let (Some(kept), Some((_, attached))) = (&mut self.neighbours, &self.nodeport) else {
            return Ok(());
        };
        let devices: Vec<neighbours::NeighDevice> = attached
            .iter()
            .map(|d| neighbours::NeighDevice {
                name: d.name.clone(),
                ifindex: d.ifindex,
            })
            .collect();
        let (ipv4, ipv6) = self.families;
        let peers = neighbours::peer_addresses(nodes, local, ipv4, ipv6);
        kept.sync(&peers, &devices)?;
        let now = neighbours::NeighbourEntries::here(kept.kept());
        if now != self.record.neighbours {
            self.record.neighbours = now;
            self.write_record()?;
        }
        Ok(())
    }

    /// Writes the record when it differs from what was last written.
    fn write_record(&mut self) -> Result<(), AgentError> {
        if self.record != self.written {
            self.record.write(&self.state_dir)?;
            self.written = self.record.clone();
        }
        Ok(())
    }

    /// Asks the kernel to re-resolve the neighbour entries when the agent's refresh is due
    /// (only where the kernel has no managed neighbours); returns how many were refreshed.
    pub fn refresh_neighbours(&mut self) -> usize {
        match &mut self.neighbours {
            Some(n) => n.refresh_if_due(std::time::Instant::now()),
            None => 0,
        }
    }

    /// What this agent recorded for `lbctl`.
    pub fn record(&self) -> &AgentRecord {
        &self.record
    }

    /// Deletes the stale conntrack entries ([`ct_gc`]); returns how many went (none without
    /// the NodePort programs).
    pub fn collect_conntrack(&mut self) -> Result<usize, AgentError> {
        match &mut self.nodeport {
            Some((lb, _)) => Ok(ct_gc::collect(lb, ct_gc::monotonic_now())?),
            None => Ok(0),
        }
    }
}

/// The pod interfaces to balance pods' traffic at (none unless
/// [`nodeport::balances_pods_at_tc`]), the NodePort devices left out.
fn pod_interfaces(
    pods_at_tc: bool,
    devices: &[DeviceAddrs],
) -> Result<Vec<host::PodInterface>, AgentError> {
    if !pods_at_tc {
        return Ok(Vec::new());
    }
    let names: Vec<String> = devices.iter().map(|d| d.name.clone()).collect();
    Ok(host::pod_interfaces(&names)?)
}

/// Updates the addresses of the attached devices (by ifindex) to what they hold now; a device
/// gone keeps its last addresses until the agent restarts.
fn refresh_addresses(attached: &mut [DeviceAddrs]) -> Result<(), AgentError> {
    let now = host::host_devices()?;
    for device in attached.iter_mut() {
        if let Some(h) = now.iter().find(|h| h.ifindex == device.ifindex) {
            *device = DeviceAddrs {
                name: device.name.clone(),
                ..nodeport::device_addrs(h)
            };
        }
    }
    Ok(())
}

/// Removes an earlier agent's NodePort programs from the devices (`nodePort.enabled` is off
/// now): its tcx links and its netlink filters and qdiscs.
fn detach_nodeport(pin_dir: &Path, previous: &TcRecord) -> Result<(), AgentError> {
    detach_xdp(pin_dir)?;
    for (path, _) in crate::datapath::tc_links(&pin_dir.join(LINKS_DIR))? {
        crate::datapath::detach_and_unpin(&path)?;
        tracing::info!(link = %path.display(), "detached an earlier agent's NodePort program");
    }
    for line in crate::datapath::remove_tc_attachments(previous)? {
        tracing::info!("{line}");
    }
    Ok(())
}

/// Detaches and unpins an earlier agent's NodePort XDP links (acceleration is off now).
fn detach_xdp(pin_dir: &Path) -> Result<(), AgentError> {
    for path in crate::datapath::detach_xdp(&pin_dir.join(LINKS_DIR))? {
        tracing::info!(link = %path.display(), "detached an earlier agent's NodePort XDP program");
    }
    Ok(())
}

/// Detaches and unpins the socket hooks' links an earlier agent left.
fn detach_socket_hooks(pin_dir: &Path) -> Result<(), AgentError> {
    for (path, _) in pinned_links(&pin_dir.join(LINKS_DIR))?
        .into_iter()
        .filter(|(path, _)| !is_tc_link(path) && !is_xdp_link(path))
    {
        crate::datapath::detach_and_unpin(&path)?;
        tracing::info!(link = %path.display(), "detached an earlier agent's socket hook");
    }
    Ok(())
}
