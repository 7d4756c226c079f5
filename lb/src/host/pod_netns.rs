//! The network namespaces of the node's pods, found through the agent's cgroup subtree.
//!
//! The socket hooks are attached at `cgroup.hostRoot`, so the processes they serve are exactly
//! the processes in that subtree. Their network namespaces are read from `/proc/PID/ns/net`
//! (every `cgroup.procs` file of the subtree, recursively), deduplicated by the namespace's
//! inode, and kept open, so a namespace can be entered even if the process that led to it has
//! exited since. This needs no container runtime and no `/var/run/netns` convention; the cost is
//! one `/proc` lookup per process in the subtree. A pod with no process in the subtree (none
//! started yet) has no socket to care about.
//!
//! Code runs inside a namespace on a scoped thread that `setns`es into it, so the agent's own
//! threads never change namespace.

use std::collections::BTreeSet;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::sched::{setns, CloneFlags};

use super::HostError;

/// An open network namespace file.
#[derive(Debug)]
pub struct NetnsHandle {
    /// How it was found, for messages: `/proc/PID/ns/net` or `/proc/thread-self/ns/net`.
    pub path: PathBuf,
    file: File,
}

impl NetnsHandle {
    /// Runs `f` on a scoped thread inside this namespace; a panic in `f` is resumed here.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, HostError> {
        std::thread::scope(|s| {
            s.spawn(|| {
                setns(&self.file, CloneFlags::CLONE_NEWNET).map_err(|e| HostError::Unexpected {
                    what: format!("setns(CLONE_NEWNET) into {}", self.path.display()),
                    detail: e.to_string(),
                })?;
                Ok(f())
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }
}

/// The calling thread's namespace first, then each other namespace of a process in the cgroup
/// subtree at `root`, once each. Processes that exit while this runs are skipped.
pub fn namespaces_in_cgroup(root: &Path) -> Result<Vec<NetnsHandle>, HostError> {
    let own = Path::new("/proc/thread-self/ns/net");
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    let mut add = |path: PathBuf, required: bool| -> Result<(), HostError> {
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if !required => {
                // The process exited, or is a kernel thread without a namespace file.
                tracing::debug!(path = %path.display(), "skipped: {e}");
                return Ok(());
            }
            Err(e) => return Err(HostError::io(&path)(e)),
        };
        let meta = file.metadata().map_err(HostError::io(&path))?;
        if seen.insert((meta.dev(), meta.ino())) {
            out.push(NetnsHandle { path, file });
        }
        Ok(())
    };
    add(own.to_owned(), true)?;
    for pid in pids_in_subtree(root)? {
        add(PathBuf::from(format!("/proc/{pid}/ns/net")), false)?;
    }
    Ok(out)
}

/// Every pid in `cgroup.procs` of `root` and of its descendants.
fn pids_in_subtree(root: &Path) -> Result<BTreeSet<u32>, HostError> {
    let mut pids = BTreeSet::new();
    let mut dirs = vec![root.to_owned()];
    while let Some(dir) = dirs.pop() {
        let procs = dir.join("cgroup.procs");
        match std::fs::read_to_string(&procs) {
            Ok(text) => pids.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok())),
            // A cgroup removed while we walk.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && dir != root => continue,
            Err(e) => return Err(HostError::io(&procs)(e)),
        }
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && dir != root => continue,
            Err(e) => return Err(HostError::io(&dir)(e)),
        };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                dirs.push(entry.path());
            }
        }
    }
    Ok(pids)
}
