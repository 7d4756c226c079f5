//! One node's `lb-agent`, running continuously inside the node (its network namespace and
//! cgroup) and following its manifest directory, with its own bpffs and state directory; and
//! `lbctl` run against that state. Stopping it (also on drop) ends the agent, runs
//! `lbctl cleanup` and unmounts its bpffs.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use netsim::{Node, Place, Process};

/// How long an agent may take to start or to program what it was given.
pub const AGENT_DEADLINE: Duration = Duration::from_secs(30);
/// How long one `lbctl` run may take.
const LBCTL_DEADLINE: Duration = Duration::from_secs(10);
/// How long an agent may take to exit after SIGTERM before it is killed.
const STOP_DEADLINE: Duration = Duration::from_secs(5);

/// A running agent and what it installed.
#[derive(Debug)]
pub struct NodeAgent {
    node: String,
    place: Place,
    process: Option<Process>,
    manifests: PathBuf,
    bpf_root: PathBuf,
    state_dir: PathBuf,
    log: PathBuf,
    stopped: bool,
}

impl NodeAgent {
    /// Starts `lb-agent` inside `node`, with its files under `scratch`: the manifest directory
    /// `manifests-<node>` (created, holding `initial` copies), `bpf-<node>`, `state-<node>`
    /// and the log `lb-agent-<node>.log`.
    pub fn start(node: &Node, values: &Path, initial: &[PathBuf], scratch: &Path) -> Result<Self> {
        let name = node.name().to_owned();
        let manifests = scratch.join(format!("manifests-{name}"));
        std::fs::create_dir_all(&manifests)
            .with_context(|| format!("creating {}", manifests.display()))?;
        let mut agent = NodeAgent {
            place: node.place().clone(),
            process: None,
            bpf_root: scratch.join(format!("bpf-{name}")),
            state_dir: scratch.join(format!("state-{name}")),
            log: scratch.join(format!("lb-agent-{name}.log")),
            manifests,
            node: name,
            stopped: false,
        };
        for file in initial {
            agent.apply(file)?;
        }
        let log = File::create(&agent.log)
            .with_context(|| format!("creating {}", agent.log.display()))?;
        let mut cmd = Command::new(netsim::binary_path("lb-agent")?);
        cmd.arg("--values")
            .arg(values)
            .arg("--manifests")
            .arg(&agent.manifests)
            .arg("--node")
            .arg(&agent.node)
            .arg("--state-dir")
            .arg(&agent.state_dir)
            .arg("--set")
            .arg(format!("bpf.root={}", agent.bpf_root.display()))
            .arg("--set")
            .arg(format!(
                "cgroup.hostRoot={}",
                agent.place.cgroup_path().display()
            ))
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("duplicating the log file")?)
            .stderr(log)
            // Its own process group: Ctrl-C in the terminal reaches the demo only, which stops
            // the agents itself, in order.
            .process_group(0);
        agent.process = Some(agent.place.spawn(cmd)?);
        Ok(agent)
    }

    /// The node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The agent's state directory (for `lbctl --state-dir`).
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// Copies `file` into the agent's manifest directory in one rename, so the watching agent
    /// never reads half of it: the demo's `kubectl apply`.
    pub fn apply(&self, file: &Path) -> Result<()> {
        let name = file.file_name().context("a manifest file has a name")?;
        let tmp = self.manifests.join(".apply.tmp");
        std::fs::copy(file, &tmp)
            .with_context(|| format!("copying {} to {}", file.display(), tmp.display()))?;
        std::fs::rename(&tmp, self.manifests.join(name))
            .with_context(|| format!("renaming {} into place", tmp.display()))?;
        Ok(())
    }

    /// Runs `lbctl ARGS --state-dir DIR` inside the node and returns its output.
    pub fn lbctl(&self, args: &[&str]) -> Result<Output> {
        let mut cmd = Command::new(netsim::binary_path("lbctl")?);
        cmd.args(args)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Ok(self.place.spawn(cmd)?.output(LBCTL_DEADLINE)?)
    }

    /// Polls `lbctl service list` until `ready` holds for its output (and it exited 0), at
    /// most [`AGENT_DEADLINE`]; fails with the agent's log if the agent exits or time runs out.
    pub fn wait_for(&mut self, what: &str, ready: impl Fn(&str) -> bool) -> Result<Duration> {
        let started = Instant::now();
        loop {
            super::interrupt::check()?;
            if let Some(status) = self.exited()? {
                bail!(
                    "lb-agent on {} exited ({status}) before {what}:\n{}",
                    self.node,
                    self.log_tail()
                );
            }
            let output = self.lbctl(&["service", "list"])?;
            let stdout = String::from_utf8_lossy(&output.stdout);
            if output.status.success() && ready(&stdout) {
                return Ok(started.elapsed());
            }
            if started.elapsed() > AGENT_DEADLINE {
                let last = format!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
                bail!(
                    "lb-agent on {} did not reach \"{what}\" within {} s; last `lbctl service \
                     list`:\n{last}\nagent log:\n{}",
                    self.node,
                    AGENT_DEADLINE.as_secs(),
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn exited(&mut self) -> Result<Option<std::process::ExitStatus>> {
        match &mut self.process {
            Some(p) => p
                .child_mut()
                .try_wait()
                .with_context(|| format!("waiting for lb-agent on {}", self.node)),
            None => Ok(None),
        }
    }

    /// The last lines of the agent's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Stops the agent (SIGTERM, killed after [`STOP_DEADLINE`]), runs `lbctl cleanup` and
    /// unmounts the bpffs. Runs once; later calls (and drop) do nothing.
    pub fn stop(&mut self) -> Result<()> {
        if std::mem::replace(&mut self.stopped, true) {
            return Ok(());
        }
        let mut problems = Vec::new();
        if let Some(mut process) = self.process.take() {
            let pid = nix::unistd::Pid::from_raw(process.pid() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            if process.wait_timeout(STOP_DEADLINE).is_err() {
                problems.push(format!(
                    "lb-agent did not exit within {} s of SIGTERM; killed",
                    STOP_DEADLINE.as_secs()
                ));
            }
            // Dropping the process kills it if it still runs, and reaps it.
        }
        if self.state_dir.join("agent.json").exists() {
            match self.lbctl(&["cleanup"]) {
                Ok(out) if out.status.success() => {}
                Ok(out) => problems.push(format!(
                    "lbctl cleanup exited with {}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                )),
                Err(e) => problems.push(format!("lbctl cleanup: {e:#}")),
            }
        }
        if is_mount_point(&self.bpf_root) {
            if let Err(e) = nix::mount::umount2(&self.bpf_root, nix::mount::MntFlags::MNT_DETACH) {
                problems.push(format!("umount {}: {e}", self.bpf_root.display()));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            bail!("cleaning up node {}: {}", self.node, problems.join("; "))
        }
    }
}

/// Whether `path` is a mount point (its device differs from its parent's).
fn is_mount_point(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(me), Some(Ok(parent))) = (
        std::fs::metadata(path),
        path.parent().map(std::fs::metadata),
    ) else {
        return false;
    };
    me.dev() != parent.dev()
}

impl Drop for NodeAgent {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("demo: warning: {e:#}");
        }
    }
}
