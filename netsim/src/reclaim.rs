//! Reclaiming what topologies of dead processes left behind. A topology removes its namespaces,
//! cgroups and run directory when dropped, but a process killed by a signal (a test run stopped
//! with Ctrl-C or `kill`) never drops it. Its names carry its pid (`/run/netsim/<pid>-…`,
//! `<cgroup2>/netsim-<pid>-…`), so a new topology removes those of pids that no longer exist.
//! A live process's topologies are never touched; a pid reused by another process keeps its
//! leftovers until that one exits too.

use std::path::Path;

use crate::cgroup::kill_and_wait;

/// The pid a topology prefix (`<pid>-<n>-<hex>`) names.
pub(crate) fn prefix_pid(prefix: &str) -> Option<i32> {
    prefix.split('-').next()?.parse().ok()
}

/// Whether a process with this pid exists (a permission error means it does).
fn alive(pid: i32) -> bool {
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

/// Removes the run directories under `run_root` and the `netsim-*` cgroups under
/// `cgroup_root` of processes that are gone. Best effort: what cannot be removed stays, with
/// a line on stderr.
pub(crate) fn reclaim_dead(run_root: &Path, cgroup_root: &Path) {
    for dir in dead_entries(run_root, "") {
        reclaim_run_dir(&dir);
    }
    for cgroup in dead_entries(cgroup_root, "netsim-") {
        reclaim_cgroup(&cgroup);
    }
}

/// The entries of `dir` named `<prefix><pid>-…` whose pid is gone.
fn dead_entries(dir: &Path, prefix: &str) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.strip_prefix(prefix)
                .filter(|rest| rest.contains('-'))
                .and_then(prefix_pid)
                .is_some_and(|pid| pid > 0 && !alive(pid))
        })
        .map(|e| e.path())
        .collect()
}

/// Unmounts the namespace files in a dead topology's run directory and removes it.
fn reclaim_run_dir(dir: &Path) {
    if let Ok(files) = std::fs::read_dir(dir) {
        for file in files.filter_map(Result::ok) {
            let path = file.path();
            let _ = nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH);
            let _ = std::fs::remove_file(&path);
        }
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => eprintln!(
            "netsim: removed {} of a process that is gone",
            dir.display()
        ),
        Err(e) => eprintln!("netsim: cannot remove {}: {e}", dir.display()),
    }
}

/// Kills what still runs in a dead topology's cgroup and removes it, children first.
fn reclaim_cgroup(cgroup: &Path) {
    if let Ok(children) = std::fs::read_dir(cgroup) {
        for child in children.filter_map(Result::ok) {
            if child.file_type().is_ok_and(|t| t.is_dir()) {
                reclaim_cgroup(&child.path());
            }
        }
    }
    if let Err(e) = kill_and_wait(cgroup, std::time::Duration::from_secs(5)) {
        eprintln!("netsim: {e}");
    }
    if let Err(e) = std::fs::remove_dir(cgroup) {
        eprintln!("netsim: cannot remove cgroup {}: {e}", cgroup.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_names_its_pid() {
        assert_eq!(prefix_pid("5229-14-5d58"), Some(5229));
        assert_eq!(prefix_pid("lb-test"), None);
    }

    #[test]
    fn this_process_is_alive_and_a_reaped_child_is_not() {
        assert!(alive(std::process::id() as i32));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        child.wait().unwrap();
        assert!(!alive(pid));
    }
}
