//! `lbctl cleanup`: removing everything an agent installed, so the node can go back to
//! kube-proxy. Each pinned link is detached before its pin goes, so its program is off the
//! hook when cleanup reports it; unpinning a map frees it once no program uses it.

use std::path::{Path, PathBuf};

use super::{AgentError, AgentRecord};
use crate::datapath::LINKS_DIR;

/// What was removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CleanupReport {
    /// Pinned links removed (each detached a program): the socket hooks' and the NodePort
    /// programs' tcx links.
    pub links: Vec<PathBuf>,
    /// The NodePort programs' netlink filters and the clsact qdiscs the agent added, each
    /// removed (or found gone), one line each.
    pub tc: Vec<String>,
    /// Pinned maps removed.
    pub maps: Vec<PathBuf>,
    /// The neighbour entries the agent pushed, each deleted (or left, saying why).
    pub neighbours: Vec<String>,
    /// The reserved port range removed from `ip_local_reserved_ports`.
    pub reserved_ports: Option<String>,
    /// The agent's record and pin directory.
    pub other: Vec<PathBuf>,
}

impl CleanupReport {
    /// One line per thing removed, for the user.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for l in &self.links {
            out.push(format!("detached and unpinned link {}", l.display()));
        }
        out.extend(self.tc.iter().cloned());
        for m in &self.maps {
            out.push(format!("unpinned map {}", m.display()));
        }
        out.extend(self.neighbours.iter().cloned());
        if let Some(r) = &self.reserved_ports {
            out.push(format!("removed {r} from net.ipv4.ip_local_reserved_ports"));
        }
        for o in &self.other {
            out.push(format!("removed {}", o.display()));
        }
        out
    }
}

/// Removes what the agent recorded in `state_dir`, and anything else in its pin directory.
pub fn cleanup(state_dir: &Path) -> Result<CleanupReport, AgentError> {
    let record = AgentRecord::read(state_dir)?;
    let mut report = CleanupReport {
        tc: crate::datapath::remove_tc_attachments(&record.tc)?,
        ..CleanupReport::default()
    };
    let links_dir = record.pin_dir.join(LINKS_DIR);
    for (path, _) in crate::datapath::pinned_links(&links_dir)? {
        if crate::datapath::detach_and_unpin(&path)? == crate::datapath::Unpinned::Removed {
            report.links.push(path);
        }
    }
    remove_dir(&links_dir, &mut report.other)?;
    report
        .other
        .extend(crate::datapath::remove_monitor_dirs(&record.pin_dir)?);
    report
        .maps
        .extend(crate::datapath::remove_migration_leftovers(
            &record.pin_dir,
        )?);
    for name in ebpf::maps::SOCK_LB_MAPS
        .into_iter()
        .chain(ebpf::maps::PKT_MAPS)
        .chain(ebpf::maps::RETIRED_MAPS)
        .chain(crate::datapath::PREDECESSORS.map(|(old, _)| old))
    {
        let path = record.pin_dir.join(name);
        if path.exists() {
            remove_file(&path)?;
            report.maps.push(path);
        }
    }
    remove_dir(&record.pin_dir, &mut report.other)?;
    report.neighbours = super::neighbours::remove(&record.neighbours)?;
    if let Some(range) = record.reserved_ports {
        if crate::host::unprotect_port_range(range, &mut crate::host::ProcSysctls)? {
            report.reserved_ports = Some(format!("{}-{}", range.low, range.high));
        }
    }
    let file = AgentRecord::path(state_dir);
    remove_file(&file)?;
    report.other.push(file);
    Ok(report)
}

fn remove_file(path: &Path) -> Result<(), AgentError> {
    std::fs::remove_file(path).map_err(AgentError::io(path))
}

/// Removes an empty directory; a directory with files we do not know stays, and is reported
/// by the error.
fn remove_dir(path: &Path, removed: &mut Vec<PathBuf>) -> Result<(), AgentError> {
    match std::fs::remove_dir(path) {
        Ok(()) => {
            removed.push(path.to_owned());
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(AgentError::io(path)(e)),
    }
}
