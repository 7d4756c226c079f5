//! After a reconciliation removed backends: destroy the connected UDP sockets still pointing
//! at them, in the agent's namespace and in every pod namespace of its cgroup subtree, so the
//! applications notice (`ECONNABORTED`) and reconnect to a live backend.
//!
//! TCP is left alone: a TCP connection to a deleted backend fails by itself (reset or
//! time-out), and one to a terminating backend must go on.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use tracing::{info, warn};

use crate::config::AgentConfig;
use crate::datapath::{canonical, RemovedBackends};
use crate::host::pod_netns::{namespaces_in_cgroup, NetnsHandle};
use crate::host::sock_diag::{SockDiag, SockDiagError};
use crate::host::HostError;

/// Where the sweep looks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SweepScope {
    /// The agent's namespace and every namespace of a process in the cgroup subtree.
    AllNamespaces,
    /// Only the agent's (host) namespace: `socketLB.hostNamespaceOnly`, where pods' sockets are
    /// not translated by the socket hooks and so never pointed at a backend through them.
    HostOnly,
}

impl SweepScope {
    /// Where an agent with `config` sweeps, on a kernel that supports it: nowhere when the
    /// socket hooks do not translate UDP (no socket was ever pointed at a backend by them).
    pub fn for_config(config: &AgentConfig) -> Option<SweepScope> {
        if !(config.socket_lb() && config.protocols().udp) {
            None
        } else if config.values().socket_lb.host_namespace_only {
            Some(SweepScope::HostOnly)
        } else {
            Some(SweepScope::AllNamespaces)
        }
    }
}

/// One destroyed socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destroyed {
    /// The namespace file it was found through.
    pub netns: PathBuf,
    /// Its local address.
    pub local: SocketAddr,
    /// The removed backend it was connected to.
    pub peer: SocketAddr,
    /// Its socket cookie.
    pub cookie: u64,
}

/// Destroys the connected UDP sockets whose peer is in `removed` and that the socket hooks
/// pointed there (their `(cookie, backend)` is in `translated`, the reverse map's keys): a
/// socket an application connected to a pod's address itself is its own business. Returns
/// what it destroyed. A namespace that cannot be swept is reported as a warning and the
/// others are still swept.
pub fn sweep(
    cgroup_root: &Path,
    scope: SweepScope,
    removed: &RemovedBackends,
    translated: &HashSet<(u64, SocketAddr)>,
) -> Result<Vec<Destroyed>, HostError> {
    let mut namespaces = namespaces_in_cgroup(cgroup_root)?;
    if scope == SweepScope::HostOnly {
        namespaces.truncate(1);
    }
    let mut destroyed = Vec::new();
    for ns in &namespaces {
        match sweep_one(ns, removed, translated) {
            Ok(found) => destroyed.extend(found),
            Err(e) => warn!(netns = %ns.path.display(), "connected UDP sockets not swept: {e}"),
        }
    }
    for d in &destroyed {
        info!(netns = %d.netns.display(), local = %d.local, backend = %d.peer,
            "destroyed a connected UDP socket to a removed backend");
    }
    Ok(destroyed)
}

fn sweep_one(
    ns: &NetnsHandle,
    removed: &RemovedBackends,
    translated: &HashSet<(u64, SocketAddr)>,
) -> Result<Vec<Destroyed>, String> {
    ns.run(|| -> Result<Vec<Destroyed>, SockDiagError> {
        let mut diag = SockDiag::open()?;
        let mut out = Vec::new();
        for socket in diag.connected_udp()? {
            let peer = canonical(socket.peer());
            if !removed.contains(peer) || !translated.contains(&(socket.cookie(), peer)) {
                continue;
            }
            match diag.destroy(&socket) {
                Ok(()) => out.push(Destroyed {
                    netns: ns.path.clone(),
                    local: socket.local(),
                    peer: socket.peer(),
                    cookie: socket.cookie(),
                }),
                // Closed between the dump and the destroy.
                Err(e) if e.errno() == Some(nix::libc::ENOENT) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    })
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())
}

/// The kernel's sweep, through sock_diag in the namespaces of a cgroup subtree.
#[derive(Clone, Debug)]
pub struct KernelSweeper {
    /// The cgroup whose processes' namespaces are swept (the agent's `cgroup.hostRoot`).
    pub cgroup_root: PathBuf,
}

impl crate::reconciler::UdpSocketSweeper for KernelSweeper {
    fn sweep(
        &mut self,
        scope: SweepScope,
        removed: &RemovedBackends,
        translated: &HashSet<(u64, SocketAddr)>,
    ) -> Result<Vec<(u64, SocketAddr)>, String> {
        sweep(&self.cgroup_root, scope, removed, translated)
            .map(|destroyed| destroyed.iter().map(|d| (d.cookie, d.peer)).collect())
            .map_err(|e| e.to_string())
    }
}
