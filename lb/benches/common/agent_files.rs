//! An agent's scratch files for a bench that runs `lb-agent` on a netsim node: its values file,
//! manifest directory, bpffs and state directory under one temporary root. On drop the agent's
//! state is removed with `lbctl cleanup` and the root with everything under it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use netsim::Place;

/// The scratch files of one agent.
pub struct AgentFiles {
    root: PathBuf,
}

impl AgentFiles {
    /// A root of its own for `name` in this process, holding `values` as the values file.
    pub fn create(name: &str, values: &str) -> Result<AgentFiles> {
        let root = std::env::temp_dir().join(format!("lb-bench-{name}-{}", std::process::id()));
        std::fs::create_dir_all(root.join("manifests"))
            .with_context(|| format!("creating {}", root.display()))?;
        let files = AgentFiles { root };
        std::fs::write(files.values(), values)?;
        Ok(files)
    }

    /// The values file.
    pub fn values(&self) -> PathBuf {
        self.root.join("values.yaml")
    }
    /// The manifest directory the agent follows.
    pub fn manifests(&self) -> PathBuf {
        self.root.join("manifests")
    }
    /// The agent's bpffs (`bpf.root`).
    pub fn bpf_root(&self) -> PathBuf {
        self.root.join("bpf")
    }
    /// The agent's state directory, where `lbctl` finds it.
    pub fn state_dir(&self) -> PathBuf {
        self.root.join("state")
    }

    /// Writes `manifests` as the directory's one file, replacing it whole (a rename, so the
    /// agent never reads half of it).
    pub fn write_manifests(&self, manifests: &str) -> Result<()> {
        let tmp = self.root.join(".services.yaml.tmp");
        std::fs::write(&tmp, manifests)?;
        std::fs::rename(&tmp, self.manifests().join("services.yaml"))?;
        Ok(())
    }

    /// Runs `lb-agent --once` as `node_name` in `node`, its socket hooks on `cgroup`, waiting
    /// at most `deadline`; fails with the agent's stderr when it does.
    pub fn run_once(
        &self,
        node: &Place,
        node_name: &str,
        cgroup: &Path,
        deadline: Duration,
    ) -> Result<()> {
        let mut cmd = Command::new(netsim::binary_path("lb-agent")?);
        cmd.arg("--values")
            .arg(self.values())
            .arg("--set")
            .arg(format!("bpf.root={}", self.bpf_root().display()))
            .arg("--set")
            .arg(format!("cgroup.hostRoot={}", cgroup.display()))
            .arg("--manifests")
            .arg(self.manifests())
            .arg("--node")
            .arg(node_name)
            .arg("--state-dir")
            .arg(self.state_dir())
            .arg("--once")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let output = node.spawn(cmd)?.output(deadline)?;
        if !output.status.success() {
            bail!(
                "lb-agent in {} exited with {}: {}",
                node.name(),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }
}

impl Drop for AgentFiles {
    fn drop(&mut self) {
        if self.state_dir().join("agent.json").exists() {
            let ok = netsim::binary_path("lbctl").is_ok_and(|lbctl| {
                Command::new(lbctl)
                    .arg("cleanup")
                    .arg("--state-dir")
                    .arg(self.state_dir())
                    .stdout(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            });
            if !ok {
                eprintln!(
                    "warning: lbctl cleanup failed for {}",
                    self.state_dir().display()
                );
            }
        }
        let bpf = self.bpf_root();
        if bpf.exists() {
            let _ = nix::mount::umount2(&bpf, nix::mount::MntFlags::MNT_DETACH);
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
