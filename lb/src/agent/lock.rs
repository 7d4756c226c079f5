//! One agent per node: an advisory lock (`flock`) on `lock` in the state directory, held for
//! the agent's life.
//!
//! A second `lb-agent` with the same state directory (a DaemonSet rolling update, a hand-started
//! agent) would otherwise reload the programs, replace the first one's links and write the same
//! pinned maps beside it. With the lock it says who holds it and waits until that agent exits,
//! then starts and adopts what the first one pinned. The kernel releases a `flock` when the
//! last descriptor of the open file goes, so an agent killed with SIGKILL or crashed never
//! leaves a stale lock behind; the pid written into the file is only for the message.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use super::AgentError;

/// The lock file's name in the state directory.
pub const LOCK_FILE: &str = "lock";

/// The held lock; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct AgentLock {
    path: PathBuf,
    _lock: Flock<File>,
}

/// What [`AgentLock::acquire`] found when another agent held the lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    /// The lock file.
    pub path: PathBuf,
    /// The pid the holder wrote into it, if it had yet.
    pub pid: Option<u32>,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pid = self
            .pid
            .map_or_else(|| "pid unknown".to_owned(), |p| format!("pid {p}"));
        write!(
            f,
            "another lb-agent ({pid}) holds {}; waiting for it to exit",
            self.path.display()
        )
    }
}

impl AgentLock {
    /// Takes the lock in `state_dir`, creating both if needed. When another agent holds it,
    /// logs who and blocks until it is released (SIGTERM or SIGINT still end the wait: the
    /// agent has no handlers installed yet).
    pub fn acquire(state_dir: &Path) -> Result<AgentLock, AgentError> {
        Self::acquire_with(state_dir, |holder| tracing::warn!("{holder}"))
    }

    /// [`AgentLock::acquire`], telling `waiting` (instead of the log) who holds the lock.
    pub fn acquire_with(
        state_dir: &Path,
        waiting: impl FnOnce(&Holder),
    ) -> Result<AgentLock, AgentError> {
        std::fs::create_dir_all(state_dir).map_err(AgentError::io(state_dir))?;
        let path = state_dir.join(LOCK_FILE);
        let open = || {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(AgentError::io(&path))
        };
        let failed = |e: nix::Error| AgentError::State {
            path: path.clone(),
            detail: format!("flock: {e}"),
        };
        let lock = match Flock::lock(open()?, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((mut file, nix::Error::EWOULDBLOCK)) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                waiting(&Holder {
                    path: path.clone(),
                    pid: text.trim().parse().ok(),
                });
                drop(file);
                loop {
                    match Flock::lock(open()?, FlockArg::LockExclusive) {
                        Ok(lock) => break lock,
                        Err((_, nix::Error::EINTR)) => continue,
                        Err((_, e)) => return Err(failed(e)),
                    }
                }
            }
            Err((_, e)) => return Err(failed(e)),
        };
        let mut lock = lock;
        let write_pid = |file: &mut File| -> std::io::Result<()> {
            file.set_len(0)?;
            file.rewind()?;
            writeln!(file, "{}", std::process::id())
        };
        write_pid(&mut lock).map_err(AgentError::io(&path))?;
        Ok(AgentLock { path, _lock: lock })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn a_second_holder_waits_for_the_first_and_is_told_its_pid() {
        let dir = std::env::temp_dir().join(format!("lb-agent-lock-{}", std::process::id()));
        let first = AgentLock::acquire(&dir).unwrap();
        let (told, holder) = mpsc::channel();
        let (done, acquired) = mpsc::channel();
        let waiter_dir = dir.clone();
        let waiter = std::thread::spawn(move || {
            let lock = AgentLock::acquire_with(&waiter_dir, |h| told.send(h.clone()).unwrap());
            done.send(()).unwrap();
            lock.unwrap()
        });
        let holder = holder.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(holder.pid, Some(std::process::id()));
        assert_eq!(
            holder.to_string(),
            format!(
                "another lb-agent (pid {}) holds {}; waiting for it to exit",
                std::process::id(),
                dir.join(LOCK_FILE).display()
            )
        );
        // The waiter told us it waits before blocking, and holds nothing while it does.
        assert!(acquired.try_recv().is_err(), "acquired beside the holder");
        drop(first);
        acquired.recv_timeout(Duration::from_secs(10)).unwrap();
        let second = waiter.join().unwrap();
        assert_eq!(
            std::fs::read_to_string(second.path()).unwrap().trim(),
            std::process::id().to_string()
        );
        drop(second);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
