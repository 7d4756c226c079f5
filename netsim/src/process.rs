//! Child processes started inside a namespace and a cgroup, killed and reaped on drop.
//!
//! cgroup BPF hooks see a socket call by the cgroup of the calling process, and a thread cannot
//! join an ordinary (non-threaded) cgroup by itself: whatever must be seen by a node's hooks runs
//! as a child process that joins the cgroup between fork and exec, together with the namespace.

use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// A child process; on drop it is killed (SIGKILL) and reaped.
#[derive(Debug)]
pub struct Process {
    child: Child,
    program: String,
    place: String,
}

/// Starts `cmd` inside the network namespace pinned at `netns` and the cgroup directory `cgroup`.
///
/// Both are joined in the child between fork and exec (`setns` on the open namespace file and
/// `write("0")` to the open `cgroup.procs`), so the program's first instruction already runs
/// there.
pub(crate) fn spawn_in(
    place: &str,
    netns: &Path,
    cgroup: &Path,
    mut cmd: Command,
) -> Result<Process> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let ns_file = File::open(netns).map_err(|e| Error::io("open netns file", netns, e))?;
    let procs_path = cgroup.join("cgroup.procs");
    let procs = File::options()
        .write(true)
        .open(&procs_path)
        .map_err(|e| Error::io("open", &procs_path, e))?;
    let (ns_fd, procs_fd) = (ns_file.as_raw_fd(), procs.as_raw_fd());
    // SAFETY: the closure only makes async-signal-safe system calls (setns, write) on file
    // descriptors that stay open in the parent until spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            if libc::write(procs_fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::setns(ns_fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|source| Error::Process {
        program: program.clone(),
        place: place.to_owned(),
        op: "spawn (with setns and cgroup.procs in pre_exec)",
        source,
    })?;
    Ok(Process {
        child,
        program,
        place: place.to_owned(),
    })
}

/// A command that re-runs the current executable with `var=role` in its environment: the
/// pattern tests use to run part of themselves as a child inside a node (the child's `main`
/// checks the variable first).
pub fn self_command(var: &str, role: &str) -> Result<Command> {
    let exe = std::env::current_exe()
        .map_err(|e| Error::io("find the current executable", PathBuf::new(), e))?;
    let mut cmd = Command::new(exe);
    cmd.env(var, role);
    Ok(cmd)
}

impl Process {
    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The underlying child, e.g. to take its stdin or stdout.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    fn err(&self, op: &'static str) -> impl FnOnce(std::io::Error) -> Error + '_ {
        move |source| Error::Process {
            program: self.program.clone(),
            place: self.place.clone(),
            op,
            source,
        }
    }

    /// Waits for the child to exit, at most `timeout`; on time-out the child is left running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().map_err(self.err("wait"))? {
                return Ok(status);
            }
            if start.elapsed() > timeout {
                return Err(Error::Timeout {
                    what: format!("{} in {} to exit", self.program, self.place),
                    waited: timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Reads the child's piped stdout and stderr to their end and waits for it to exit, at most
    /// `timeout` in all (the child is killed on drop if it is still running).
    pub fn output(mut self, timeout: Duration) -> Result<Output> {
        let readers = [
            self.child.stdout.take().map(|mut s| {
                std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    s.read_to_end(&mut buf).map(|_| buf)
                })
            }),
            self.child.stderr.take().map(|mut s| {
                std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    s.read_to_end(&mut buf).map(|_| buf)
                })
            }),
        ];
        let status = self.wait_timeout(timeout)?;
        let [stdout, stderr] = readers.map(|reader| {
            reader
                .map(|r| r.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .transpose()
                .map(Option::unwrap_or_default)
        });
        Ok(Output {
            status,
            stdout: stdout.map_err(self.err("read stdout"))?,
            stderr: stderr.map_err(self.err("read stderr"))?,
        })
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // Kill fails only if the child was already reaped, which is fine.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
