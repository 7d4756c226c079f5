//! Running the tools the tasks are made of, with a banner and a timing per step.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
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

/// Totals of libtest's `test result:` lines.
#[derive(Clone, Copy, Debug, Default)]
pub struct TestCounts {
    /// Tests that passed.
    pub passed: u64,
    /// Tests that failed.
    pub failed: u64,
    /// Tests that were ignored.
    pub ignored: u64,
}

impl TestCounts {
    /// Adds the counts of one `test result: ok. 3 passed; 0 failed; 1 ignored; …` line.
    fn add_line(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(['.', ';']) {
            let mut words = part.split_whitespace();
            if let (Some(n), Some(what)) = (words.next(), words.next()) {
                let Ok(n) = n.parse::<u64>() else { continue };
                match what {
                    "passed" => self.passed += n,
                    "failed" => self.failed += n,
                    "ignored" => self.ignored += n,
                    _ => {}
                }
            }
        }
    }

    /// Adds `other`.
    pub fn add(&mut self, other: TestCounts) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.ignored += other.ignored;
    }
}

/// Like [`step`] for `cargo test`: echoes the output and totals its `test result:` lines.
pub fn test_step(name: &str, mut cmd: Command) -> Result<(Duration, TestCounts)> {
    eprintln!("\n==> {name}: {}", describe(&cmd));
    let started = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("{name}: cannot start {}", describe(&cmd)))?;
    let mut counts = TestCounts::default();
    let stdout = child.stdout.take().expect("stdout is piped");
    for line in BufReader::new(stdout).lines() {
        let line = line.with_context(|| format!("{name}: reading the output"))?;
        println!("{line}");
        counts.add_line(&line);
    }
    let status = child
        .wait()
        .with_context(|| format!("{name}: waiting for it"))?;
    let took = started.elapsed();
    if !status.success() {
        bail!(
            "{name} failed ({status}) after {:.1} s with {} passed, {} failed: {}",
            took.as_secs_f64(),
            counts.passed,
            counts.failed,
            describe(&cmd)
        );
    }
    eprintln!("==> {name}: ok in {:.1} s", took.as_secs_f64());
    Ok((took, counts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_libtest_result_lines() {
        let mut c = TestCounts::default();
        c.add_line("test result: ok. 64 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.02s");
        c.add_line(
            "test result: FAILED. 9 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out",
        );
        c.add_line("running 3 tests");
        assert_eq!((c.passed, c.failed, c.ignored), (73, 1, 2));
    }
}
