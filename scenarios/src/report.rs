//! A machine-readable record of a run: one JSON object per line per `kernel` scenario, appended
//! to the file named by `LB_SCENARIO_REPORT` when it is set. The VM runner reads it back from
//! the guest (`vm::results` parses the same format).
//!
//! ```json
//! {"scenario":"getpeername","outcome":"unsupported","detail":"so-netns-cookie (Linux 5.14): …"}
//! ```
//!
//! With `LB_SCENARIO_CONSOLE` set (the VM guest's init sets it), each scenario is also announced
//! on stdout as it starts (`LB-SCENARIO-START name`) and its record printed as it ends
//! (`LB-SCENARIO-RESULT {json}`), so a guest killed at its deadline has shown what finished and
//! what was running.
//!
//! Before the first scenario the suite also prints what the agent's probes found on this kernel
//! (`LB-KERNEL-FEATURES {json}`, a [`KernelFeatures`]): every feature, present or the kernel's
//! answer, how an agent learns its namespace's cookie, and what the default options would run
//! degraded. The VM runner shows it beside the results, so the matrix says why a kernel works.

use std::io::Write;

use serde::Serialize;

/// The environment variable naming the report file.
pub const REPORT_ENV: &str = "LB_SCENARIO_REPORT";

/// The environment variable that turns on the console lines.
pub const CONSOLE_ENV: &str = "LB_SCENARIO_CONSOLE";

/// The console line's prefix for a scenario that starts; its name follows after a space.
pub const CONSOLE_START: &str = "LB-SCENARIO-START";

/// The console line's prefix for a scenario's record; the JSON follows after a space.
pub const CONSOLE_RESULT: &str = "LB-SCENARIO-RESULT";

/// The console line's prefix for the kernel's features; the JSON follows after a space.
pub const CONSOLE_FEATURES: &str = "LB-KERNEL-FEATURES";

/// How one scenario ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Every step did what it expects.
    Passed,
    /// A step differed or the setup failed; the detail says which.
    Failed,
    /// The kernel lacks a feature the scenario needs; the detail names it.
    Unsupported,
}

/// One line of the report.
#[derive(Clone, Debug, Serialize)]
pub struct Record<'a> {
    /// The scenario's name (its file stem).
    pub scenario: &'a str,
    /// How it ended.
    pub outcome: Outcome,
    /// Why it failed or is unsupported; empty when it passed.
    pub detail: &'a str,
}

/// What runs degraded without a feature, as the agent's plan says (re-exported for the VM
/// runner, which reads these records back).
pub use lb::host::features::Degradation;

/// What the agent's probes found on the running kernel, printed once per run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KernelFeatures {
    /// Every feature the agent probes, in probe order.
    pub features: Vec<FeatureAnswer>,
    /// How an agent outside the initial network namespace learns its namespace's cookie:
    /// `SO_NETNS_COOKIE`, `bpf-probe` (a one-shot `connect4` hook reading
    /// `bpf_get_netns_cookie`, `lb::datapath::netns_probe`) or `none`.
    pub netns_cookie: String,
    /// The options the degradations below are for.
    pub options: String,
    /// What the agent runs degraded with those options here (`lb::agent::degrade::plan`).
    pub degraded: Vec<Degradation>,
    /// Why the agent refuses those options here, when it does.
    pub refused: Option<String>,
    /// The features `LB_ASSUME_MISSING_FEATURES` made the probes treat as missing, if any.
    pub assumed_missing: String,
}

/// One probed feature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FeatureAnswer {
    /// Its name (`cgroup-getpeername`).
    pub name: String,
    /// The mainline kernel that brought it.
    pub since: String,
    /// Whether this kernel has it.
    pub present: bool,
    /// The kernel's answer when it does not; empty when present.
    pub answer: String,
}

/// The console line of `features`, newline included.
pub fn features_line(features: &KernelFeatures) -> String {
    let json = serde_json::to_string(features).expect("a feature record serialises");
    format!("{CONSOLE_FEATURES} {json}\n")
}

/// Prints `features` on the console, when asked to.
pub fn kernel_features(features: &KernelFeatures) {
    if std::env::var_os(CONSOLE_ENV).is_some() {
        console(&features_line(features));
    }
}

/// Says on the console that the `kernel` scenario `name` starts, when asked to.
pub fn started(name: &str) {
    if std::env::var_os(CONSOLE_ENV).is_some() {
        console(&format!("{CONSOLE_START} {name}\n"));
    }
}

/// The console line of `record`, newline included.
pub fn console_line(record: &Record<'_>) -> String {
    let json = serde_json::to_string(record).expect("a record serialises");
    format!("{CONSOLE_RESULT} {json}\n")
}

/// One write of a whole line on stdout under its lock: tests run on several threads, and the
/// runner's own lines must not split it.
fn console(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes()).and_then(|()| out.flush());
}

/// Appends `record` to the report file, if one was asked for, and prints it on the console when
/// asked to. A report that cannot be written is said on stderr: the VM runner then sees the
/// scenario missing and reports that.
pub fn write(record: &Record<'_>) {
    if std::env::var_os(CONSOLE_ENV).is_some() {
        console(&console_line(record));
    }
    let Some(path) = std::env::var_os(REPORT_ENV) else {
        return;
    };
    let mut line = serde_json::to_string(record).expect("a record serialises");
    line.push('\n');
    // One write of the whole line to a file opened for appending: tests run on several threads,
    // and a line written in pieces could interleave with another.
    let result = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = result {
        eprintln!(
            "scenarios: cannot append to {}: {e}",
            path.to_string_lossy()
        );
    }
}
