//! cgroup v2 directories: found through /proc/self/mountinfo, created per topology, node and
//! pod, and removed on drop after their processes are killed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How long a drop waits for killed processes to leave a cgroup before giving up on it.
const EMPTY_DEADLINE: Duration = Duration::from_secs(5);

/// Where the cgroup v2 hierarchy is mounted, read from /proc/self/mountinfo.
pub fn cgroup2_mount() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        let (pre, post) = line.split_once(" - ")?;
        let mount_point = pre.split_whitespace().nth(4)?;
        (post.split_whitespace().next() == Some("cgroup2")).then(|| PathBuf::from(mount_point))
    })
}

/// A cgroup directory we created; on drop its processes are killed and it is removed.
///
/// Children must be dropped first (a cgroup with children cannot be removed); the topology
/// keeps its guards in an order that does so.
#[derive(Debug)]
pub(crate) struct CgroupDir {
    path: PathBuf,
}

impl CgroupDir {
    pub(crate) fn create(path: PathBuf) -> Result<CgroupDir> {
        std::fs::create_dir(&path).map_err(|e| Error::io("create cgroup", &path, e))?;
        Ok(CgroupDir { path })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for CgroupDir {
    fn drop(&mut self) {
        if let Err(e) = kill_and_wait(&self.path, EMPTY_DEADLINE) {
            eprintln!("netsim: {e}");
        }
        if let Err(e) = std::fs::remove_dir(&self.path) {
            eprintln!("netsim: cannot remove cgroup {}: {e}", self.path.display());
        }
    }
}

/// Whether any process is in the cgroup or its descendants (`populated` in cgroup.events).
pub(crate) fn is_populated(cgroup: &Path) -> Result<bool> {
    let path = cgroup.join("cgroup.events");
    let events = std::fs::read_to_string(&path).map_err(|e| Error::io("read", &path, e))?;
    Ok(events.lines().any(|l| l == "populated 1"))
}

/// Kills every process in the cgroup's subtree and waits until it is empty.
///
/// Uses `cgroup.kill` (Linux 5.14+) and falls back to SIGKILL for each pid listed in
/// `cgroup.procs` of this cgroup (callers drop children first).
pub(crate) fn kill_and_wait(cgroup: &Path, deadline: Duration) -> Result<()> {
    let start = Instant::now();
    let kill_file = cgroup.join("cgroup.kill");
    let has_kill = kill_file.exists();
    loop {
        if !is_populated(cgroup)? {
            return Ok(());
        }
        if start.elapsed() > deadline {
            return Err(Error::Timeout {
                what: format!("cgroup {} to become empty", cgroup.display()),
                waited: deadline,
            });
        }
        if has_kill {
            std::fs::write(&kill_file, "1").map_err(|e| Error::io("write", &kill_file, e))?;
        } else {
            let procs = cgroup.join("cgroup.procs");
            let pids = std::fs::read_to_string(&procs).map_err(|e| Error::io("read", &procs, e))?;
            for pid in pids.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                // SAFETY: kill has no memory-safety preconditions.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        // Killed processes leave the cgroup asynchronously; check again shortly.
        std::thread::sleep(Duration::from_millis(10));
    }
}
