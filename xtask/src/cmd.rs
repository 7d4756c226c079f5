//! Running the tools the tasks are made of, with a banner and a timing per step.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The workspace root (xtask's parent directory).
pub fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives inside the workspace")
        .to_owned()
}

/// `cargo` as the one running this task, so the same toolchain is used throughout.
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

/// Runs `cmd` as step `name`, printing a banner before and the time after; fails naming the
/// step.
pub fn step(name: &str, mut cmd: Command) -> Result<Duration> {
    eprintln!("\n==> {name}: {}", describe(&cmd));
    let started = Instant::now();
    let status = cmd
        .status()
        .with_context(|| format!("{name}: cannot start {}", describe(&cmd)))?;
    let took = started.elapsed();
    if !status.success() {
        bail!(
            "{name} failed ({status}) after {:.1} s: {}",
            took.as_secs_f64(),
            describe(&cmd)
        );
    }
    eprintln!("==> {name}: ok in {:.1} s", took.as_secs_f64());
    Ok(took)
}

fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program().to_string_lossy().into_owned())
        .chain(cmd.get_args().map(|a| a.to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ")
}
