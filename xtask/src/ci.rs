//! `cargo xtask ci`: everything CI checks, in the order that fails fastest.
//!
//! Tiers (see DESIGN.md): unit + property tests, the offline CLI tests, the simulator tier (every
//! scenario on `sim`), and the kernel tier (privileged socket-LB tests, netsim's tests and every
//! scenario on `kernel`; ignored without root, failing under `CI=true`) run in the test step.
//! The VM tier (`vm_test::run_ci`) then boots the `ci = true` kernels of `ci/kernels.toml`
//! and runs the scenarios' kernel backend in each; it needs root (it installs qemu and fetches
//! kernels into the cache): without root it is reported as not run, and under `CI=true` that
//! fails. After the tests, `cargo xtask demo --check` runs (root only). Before the test step,
//! `cargo xtask apiserver` builds (or finds cached) the API server the end-to-end tests use.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::apiserver;
use crate::cmd::{cargo, step, test_step, TestCounts};
use crate::deps;
use crate::vm_test;

/// Options of `cargo xtask ci`.
#[derive(Debug, Args)]
pub struct Options {
    /// Skip `cargo fmt --check` and clippy (for a quick test run while developing).
    #[arg(long)]
    pub tests_only: bool,
}

/// Runs the CI steps.
pub fn run(options: Options) -> Result<()> {
    deps::ensure()?;
    let mut timings: Vec<(&str, Duration)> = Vec::new();
    if !options.tests_only {
        let mut fmt = cargo();
        fmt.args(["fmt", "--all", "--", "--check"]);
        timings.push(("fmt", step("fmt", fmt)?));
        let mut clippy = cargo();
        clippy.args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]);
        timings.push(("clippy", step("clippy", clippy)?));
    }
    // The end-to-end tests (`tests/`, package e2e) run against the test API server; a clean
    // clone fetches and builds it here, later runs find it in the cache.
    let started = std::time::Instant::now();
    apiserver::ensure(false).context("building the test API server")?;
    timings.push(("test API server (build/cache)", started.elapsed()));
    let mut counts = TestCounts::default();
    let mut tests = cargo();
    // Benches are harness-less binaries that measure; they run under `cargo xtask bench`.
    tests.args([
        "test",
        "--workspace",
        "--lib",
        "--bins",
        "--tests",
        "--examples",
    ]);
    tests.env("INSTA_UPDATE", "no"); // a snapshot that differs fails; it is never rewritten here
    let (took, ran) = test_step("tests", tests)?;
    timings.push(("unit + property + CLI tests", took));
    counts.add(ran);
    // Cargo cannot mix --doc with other target selections.
    let mut doctests = cargo();
    doctests.args(["test", "--workspace", "--doc"]);
    let (took, ran) = test_step("doc tests", doctests)?;
    timings.push(("doc tests", took));
    counts.add(ran);
    let demo = demo_step()?;
    if let Some(took) = demo {
        timings.push(("demo --check", took));
    }

    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let vm_tier = if nix::unistd::geteuid().is_root() {
        let started = std::time::Instant::now();
        let runs = vm_test::run_ci()?;
        timings.push(("vm tier (kernel matrix)", started.elapsed()));
        for run in &runs {
            let (passed, failed, unsupported) = vm::results::totals(&run.results);
            counts.add(TestCounts {
                passed: passed as u64,
                failed: failed as u64,
                ignored: unsupported as u64,
            });
        }
        let labels: Vec<String> = runs
            .iter()
            .map(|r| {
                format!(
                    "{} (boot {:.1} s, scenarios {:.1} s)",
                    r.label,
                    r.boot_time.unwrap_or_default().as_secs_f64(),
                    r.test_time.unwrap_or_default().as_secs_f64()
                )
            })
            .collect();
        format!("ran: {}", labels.join(", "))
    } else if ci {
        anyhow::bail!("vm tier: CI=true but not root, so the VM tier cannot run");
    } else {
        "NOT RUN: needs root (installs qemu, fetches kernels); run as root".to_owned()
    };

    eprintln!("\n==> summary");
    for (name, took) in &timings {
        eprintln!("    {name:<28} ok   {:>6.1} s", took.as_secs_f64());
    }
    for (tier, why) in [
        (
            "simulator",
            "in the test step: scenarios/tests/scenarios.rs, sim::*",
        ),
        (
            "kernel (privileged)",
            "in the test step: lb/tests/{privileged,sock_diag,agent_watch,agent_churn,agent_restart,deploy_capabilities,differential,differential_pkt,fixtures_pkt,tc_attach,neighbours}.rs, netsim/tests, scenarios kernel::*",
        ),
        (
            "end-to-end (API server)",
            "in the test step: tests/tests/{apiserver,agent}.rs (kubectl against the test API server; lb-agent on netsim nodes watching it, privileged)",
        ),
        ("vm (kernel matrix)", vm_tier.as_str()),
    ] {
        eprintln!("    {tier:<28} --   {why}");
    }
    if demo.is_none() {
        eprintln!("    {:<28} --   not run: needs root", "demo --check");
    }
    // The closing line, totalled over every test binary.
    println!(
        "ci: {} passed, {} failed, {} skipped",
        counts.passed, counts.failed, counts.ignored
    );
    Ok(())
}

/// `cargo xtask demo --check`, the README's main command, after the tests: the two-node
/// topology with traffic through it, failing CI when any target is not answered by both
/// backends. It needs root: without it the step is reported as not run, and under `CI=true`
/// it fails, as the privileged test tiers do. Returns its time, or `None` when not run.
fn demo_step() -> Result<Option<Duration>> {
    if !nix::unistd::geteuid().is_root() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            bail!("demo --check cannot run under CI=true: not running as root");
        }
        eprintln!("\n*** demo --check NOT RUN: not running as root ***");
        return Ok(None);
    }
    let exe = std::env::current_exe().context("finding the xtask executable")?;
    let mut demo = std::process::Command::new(exe);
    demo.args(["demo", "--check"]);
    Ok(Some(step("demo --check", demo)?))
}
