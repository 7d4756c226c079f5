//! The running agent: prepares the node (mounts, namespace identity, reserved ports), loads and
//! attaches the socket programs with pinned maps and links, and keeps the maps equal to the
//! desired state. Sources of desired state (a manifest directory today, the API server later)
//! call [`Agent::reconcile`].

mod cleanup;
mod error;
mod record;
mod source;

use std::path::{Path, PathBuf};

pub use cleanup::{cleanup, CleanupReport};
pub use error::AgentError;
pub use record::{AgentRecord, DEFAULT_STATE_DIR};
pub use source::ManifestSource;

use crate::config::AgentConfig;
use crate::datapath::{ApplyReport, MapContents, SockLb, SockLbConfig};
use crate::host::{self, PortRangeProtection};
use crate::model::DesiredState;
use crate::views::KprStatus;

/// The directory under `bpf.root` where this agent pins its maps and links.
pub const PIN_SUBDIR: &str = "lb";

/// A started agent.
#[derive(Debug)]
pub struct Agent {
    sock_lb: SockLb,
    record: AgentRecord,
    state_dir: PathBuf,
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
}

impl Agent {
    /// Prepares the node and attaches the datapath. Maps pinned by an earlier agent are
    /// adopted with their contents, so traffic keeps flowing while this one starts.
    pub fn start(
        config: &AgentConfig,
        status: KprStatus,
        state_dir: &Path,
    ) -> Result<Agent, AgentError> {
        let values = config.values();
        check_features(config)?;
        host::ensure_bpffs(config.bpf_root())?;
        let cgroup = host::ensure_cgroup2(&config.cgroup_root(), values.cgroup.auto_mount.enabled)?;
        let netns = host::own_netns_cookie()?;
        let pin_dir = config.bpf_root().join(PIN_SUBDIR);
        std::fs::create_dir_all(&pin_dir).map_err(AgentError::io(&pin_dir))?;
        let mut sock_lb = SockLb::load(
            SockLbConfig {
                protocols: config.protocols(),
                map_max: values.bpf.lb_map_max,
                host_namespace_only: values.socket_lb.host_namespace_only,
                bind_protection: values.node_port.bind_protection && config.node_port(),
                host_netns_cookie: netns.cookie_for_bpf(),
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
        let names: std::collections::HashMap<_, _> =
            desired.services().map(|s| (s.frontend, &s.name)).collect();
        self.record.services = listed
            .iter()
            .filter_map(|f| Some((f.id, (*names.get(&f.frontend)?).clone())))
            .collect();
        self.record.write(&self.state_dir)?;
        Ok(ReconcileReport {
            maps: report,
            frontends: listed.len(),
            local_addrs_changed,
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
    let wanted = host::features::required_by_agent(host::in_initial_netns());
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
