//! The agent's record of what it installed, written to its state directory: where its maps and
//! links are pinned, which cgroup it attached to, what it reserved, its status block and the
//! names of the services behind each frontend id, and the neighbour entries it pushed. `lbctl` reads it to find the pinned maps,
//! and `lbctl cleanup` to remove exactly what the agent added.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::AgentError;
use crate::config::PortRange;
use crate::model::ServiceName;
use crate::views::KprStatus;

/// Where an agent keeps its record unless told otherwise (`--state-dir`).
pub const DEFAULT_STATE_DIR: &str = "/run/lb-agent";
const RECORD_FILE: &str = "agent.json";

/// What the agent installed on this node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentRecord {
    /// The bpffs directory of its maps and links.
    pub pin_dir: PathBuf,
    /// The cgroup its socket hooks are attached to.
    pub cgroup: PathBuf,
    /// The pinned links of its programs.
    pub links: Vec<PathBuf>,
    /// The NodePort range it appended to `ip_local_reserved_ports`, if it did.
    pub reserved_ports: Option<PortRange>,
    /// Its KubeProxyReplacement status.
    pub status: KprStatus,
    /// The Service (or Pod) behind each frontend id.
    pub services: BTreeMap<u16, ServiceName>,
    /// The NodePort programs on the devices: tcx links (pinned under `links/`), or netlink
    /// filters and the clsact qdiscs the agent added (which have no pins to find them by).
    #[serde(default)]
    pub tc: crate::datapath::TcRecord,
    /// The NodePort programs' load-time settings (for `lbctl explain`), when loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodeport: Option<crate::datapath::NodePortConfig>,
    /// The neighbour entries it pushed for the other nodes' next hops.
    #[serde(
        default,
        skip_serializing_if = "super::neighbours::NeighbourEntries::is_empty"
    )]
    pub neighbours: super::neighbours::NeighbourEntries,
}

impl AgentRecord {
    /// The record file in `state_dir`.
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join(RECORD_FILE)
    }

    /// Reads the record an agent wrote in `state_dir`.
    pub fn read(state_dir: &Path) -> Result<AgentRecord, AgentError> {
        let path = Self::path(state_dir);
        let text = std::fs::read_to_string(&path).map_err(|e| AgentError::State {
            path: path.clone(),
            detail: if e.kind() == std::io::ErrorKind::NotFound {
                "no agent record here: is lb-agent running on this node with this --state-dir?"
                    .to_owned()
            } else {
                e.to_string()
            },
        })?;
        serde_json::from_str(&text).map_err(|e| AgentError::State {
            path,
            detail: e.to_string(),
        })
    }

    /// Writes the record atomically (a reader never sees half of it).
    pub fn write(&self, state_dir: &Path) -> Result<(), AgentError> {
        std::fs::create_dir_all(state_dir).map_err(AgentError::io(state_dir))?;
        let path = Self::path(state_dir);
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self).map_err(|e| AgentError::State {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        std::fs::write(&tmp, text).map_err(AgentError::io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(AgentError::io(&path))
    }
}
