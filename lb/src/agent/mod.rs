//! The running agent: prepares the node (mounts, namespace identity, reserved ports), loads and
//! attaches the socket programs with pinned maps and links, and keeps the maps equal to the
//! desired state; after a reconciliation that removed backends it destroys the connected UDP
//! sockets still pointing at them ([`udp_destroy`]). Sources of desired state (a manifest directory today, the API server later)
//! call [`Agent::reconcile`].

mod cleanup;
mod error;
mod lock;
mod record;
mod source;
pub mod udp_destroy;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

pub use cleanup::{cleanup, CleanupReport};
pub use error::AgentError;
pub use lock::{AgentLock, Holder, LOCK_FILE};
pub use record::{AgentRecord, DEFAULT_STATE_DIR};
pub use source::ManifestSource;

use crate::config::AgentConfig;
use crate::datapath::{
    ApplyReport, ListedFrontend, MapContents, RemovedBackends, SockLb, SockLbConfig,
};
use crate::host::sock_diag::{self, Support};
use crate::host::{self, NetnsIdentity, PortRangeProtection};
use crate::model::{DesiredState, L4Protocol, ServiceName};
use crate::views::KprStatus;
use udp_destroy::SweepScope;

/// The directory under `bpf.root` where this agent pins its maps and links.
pub const PIN_SUBDIR: &str = "lb";

/// The service each listed frontend id belongs to, as the agent records it for `lbctl
/// service list` (the maps hold ids and addresses, not names).
pub fn service_names(
    desired: &DesiredState,
    listed: &[ListedFrontend],
) -> BTreeMap<u16, ServiceName> {
    let names: HashMap<_, _> = desired.services().map(|s| (s.frontend, &s.name)).collect();
    listed
        .iter()
        .filter_map(|f| Some((f.id, (*names.get(&f.frontend)?).clone())))
        .collect()
}

/// A started agent.
#[derive(Debug)]
pub struct Agent {
    sock_lb: SockLb,
    record: AgentRecord,
    state_dir: PathBuf,
    /// Where connected UDP sockets to removed backends are destroyed; `None` when UDP is not
    /// translated or the kernel cannot destroy sockets.
    udp_sweep: Option<SweepScope>,
}

/// What one reconciliation did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Map entries written and deleted.
    pub maps: ApplyReport,
    /// Frontends now programmed.
    pub frontends: usize,
    /// Local-address entries changed.
    pub local_addrs_changed: usize,
    /// Connected UDP sockets to removed backends that were destroyed.
    pub udp_sockets_destroyed: usize,
}

impl Agent {
    /// Prepares the node and attaches the datapath. Maps pinned by an earlier agent are
    /// adopted with their contents, so traffic keeps flowing while this one starts.
    pub fn start(
        config: &AgentConfig,
        mut status: KprStatus,
        state_dir: &Path,
    ) -> Result<Agent, AgentError> {
        let values = config.values();
        check_features(config)?;
        host::ensure_bpffs(config.bpf_root())?;
        let cgroup = host::ensure_cgroup2(&config.cgroup_root(), values.cgroup.auto_mount.enabled)?;
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
        let mut sock_lb = SockLb::load(
            SockLbConfig {
                protocols: config.protocols(),
                map_max: values.bpf.lb_map_max,
                host_namespace_only: values.socket_lb.host_namespace_only,
                bind_protection: values.node_port.bind_protection && config.node_port(),
                host_netns_cookie: netns.cookie_for_bpf(),
                external_ip_mitigation: !values.bpf.disable_external_ip_mitigation,
            },
            &pin_dir,
        )?;
        let links = sock_lb.attach(&cgroup)?;
        let previous = AgentRecord::read(state_dir).ok();
        let mut reserved_ports = previous.and_then(|r| r.reserved_ports);
        if config.node_port() && values.node_port.auto_protect_port_ranges {
            let range = config.node_port_range();
            if host::protect_port_range(range)? == PortRangeProtection::Appended {
                reserved_ports = Some(range);
            }
        }
        let udp_sweep = SweepScope::for_config(config).filter(|_| {
            let support = sock_diag::probe();
            if let Support::Unavailable(why) = &support {
                tracing::warn!(
                    "connected UDP sockets to deleted backends will not be destroyed: {why} \
                     (needs CONFIG_INET_DIAG, CONFIG_INET_UDP_DIAG and CONFIG_INET_DIAG_DESTROY)"
                );
            }
            status.udp_socket_destroy = Some(support.describe());
            support == Support::Available
        });
        let record = AgentRecord {
            pin_dir,
            cgroup,
            links,
            reserved_ports,
            status,
            services: Default::default(),
        };
        record.write(state_dir)?;
        Ok(Agent {
            sock_lb,
            record,
            state_dir: state_dir.to_owned(),
            udp_sweep,
        })
    }

    /// Makes the maps hold exactly `desired` (and the node's current addresses), keeping the
    /// ids of what did not change; entries nothing wants are deleted.
    pub fn reconcile(&mut self, desired: &DesiredState) -> Result<ReconcileReport, AgentError> {
        let local_addrs_changed = self
            .sock_lb
            .set_local_addresses(&host::local_addresses()?)?;
        let mut maps = self.sock_lb.service_maps()?;
        let current = maps.read()?;
        let want =
            MapContents::build(desired, &current).map_err(crate::datapath::DatapathError::from)?;
        let report = maps.apply(&want)?;
        let listed = want.frontends();
        self.record.services = service_names(desired, &listed);
        self.record.write(&self.state_dir)?;
        let removed = RemovedBackends::between(&current, &want, L4Protocol::Udp);
        // The maps are already right; a failed sweep is worth a warning, not a failed
        // reconciliation (the next removal sweeps again).
        let udp_sockets_destroyed = match self.udp_sweep {
            Some(scope) if !removed.is_empty() => {
                let translated = self.sock_lb.translated_sockets()?;
                match udp_destroy::sweep(&self.record.cgroup, scope, &removed, &translated) {
                    Ok(destroyed) => {
                        // The destroy disconnected them, so their sock_release cannot find
                        // the reverse entries any more: forget them here.
                        let forgotten: Vec<(u64, std::net::SocketAddr)> =
                            destroyed.iter().map(|d| (d.cookie, d.peer)).collect();
                        self.sock_lb.forget_translated(&forgotten)?;
                        destroyed.len()
                    }
                    Err(e) => {
                        tracing::warn!(
                            "connected UDP sockets to removed backends not destroyed: {e}"
                        );
                        0
                    }
                }
            }
            _ => 0,
        };
        Ok(ReconcileReport {
            maps: report,
            frontends: listed.len(),
            local_addrs_changed,
            udp_sockets_destroyed,
        })
    }

    /// What this agent recorded for `lbctl`.
    pub fn record(&self) -> &AgentRecord {
        &self.record
    }
}

/// Refuses to start when the kernel lacks a feature the datapath needs, naming it, rather than
/// failing half-way through loading or running with hooks missing.
fn check_features(config: &AgentConfig) -> Result<(), AgentError> {
    host::features::raise_memlock_limit();
    let wanted = host::features::required_by_agent();
    match host::features::missing(&wanted).into_iter().next() {
        None => Ok(()),
        Some(missing) => Err(AgentError::MissingFeature {
            option: if config.kube_proxy_replacement() {
                "kubeProxyReplacement=true"
            } else {
                "the socket datapath"
            },
            missing,
        }),
    }
}
