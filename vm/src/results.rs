//! The guest's results: the JSON records the scenario binary wrote (`scenarios::report`), which
//! init prints between [`marker::RESULTS_BEGIN`] and [`marker::RESULTS_END`] on the console.

use std::fmt;

use anyhow::{bail, Result};
use serde::Deserialize;

use crate::initramfs::marker;

/// How one scenario ended on one kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Every step did what it expects.
    Passed,
    /// A step differed or the setup failed.
    Failed,
    /// A feature probe failed on this kernel.
    Unsupported,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Passed => "passed",
            Outcome::Failed => "failed",
            Outcome::Unsupported => "unsupported",
        })
    }
}

/// One record of the report.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct ScenarioResult {
    /// The scenario's name.
    pub scenario: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Why it failed or is unsupported.
    #[serde(default)]
    pub detail: String,
}

/// The records between the markers, sorted by scenario; an error when the guest never printed
/// a complete report (it hung, panicked or the suite crashed), or a record does not parse.
pub fn parse(lines: &[String]) -> Result<Vec<ScenarioResult>> {
    let Some(begin) = lines.iter().position(|l| l.trim() == marker::RESULTS_BEGIN) else {
        bail!(
            "the guest printed no results (no {} line)",
            marker::RESULTS_BEGIN
        );
    };
    let Some(len) = lines[begin + 1..]
        .iter()
        .position(|l| l.trim() == marker::RESULTS_END)
    else {
        bail!(
            "the guest's results end early (no {} line)",
            marker::RESULTS_END
        );
    };
    let mut results = Vec::new();
    for line in &lines[begin + 1..begin + 1 + len] {
        // Kernel messages can land between the records; records are whole lines of JSON.
        let line = line.trim();
        if !line.starts_with('{') {
            continue;
        }
        let record: ScenarioResult = serde_json::from_str(line)
            .map_err(|e| anyhow::anyhow!("a result line does not parse ({e}): {line}"))?;
        results.push(record);
    }
    results.sort_by(|a, b| a.scenario.cmp(&b.scenario));
    Ok(results)
}

/// The exit status the suite reported, if it got that far.
pub fn suite_exit(lines: &[String]) -> Option<i32> {
    lines.iter().find_map(|l| {
        l.trim()
            .strip_prefix(marker::TESTS_EXIT)
            .and_then(|s| s.trim().parse().ok())
    })
}

/// Totals: passed, failed, unsupported.
pub fn totals(results: &[ScenarioResult]) -> (usize, usize, usize) {
    let count = |o| results.iter().filter(|r| r.outcome == o).count();
    (
        count(Outcome::Passed),
        count(Outcome::Failed),
        count(Outcome::Unsupported),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_owned).collect()
    }

    #[test]
    fn records_between_markers_with_kernel_noise() {
        let console = lines(
            "test kernel::a ... ok\nLB-VM-TESTS-EXIT 101\nLB-VM-RESULTS-BEGIN\n\
             {\"scenario\":\"b\",\"outcome\":\"failed\",\"detail\":\"step 1\"}\n\
             [   12.3] random: crng init done\n\
             {\"scenario\":\"a\",\"outcome\":\"unsupported\",\"detail\":\"so-netns-cookie\"}\n\
             LB-VM-RESULTS-END\n",
        );
        let r = parse(&console).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].scenario, "a");
        assert_eq!(r[0].outcome, Outcome::Unsupported);
        assert_eq!(r[1].detail, "step 1");
        assert_eq!(suite_exit(&console), Some(101));
        assert_eq!(totals(&r), (0, 1, 1));
    }

    #[test]
    fn a_guest_that_stopped_early_is_an_error() {
        let err = parse(&lines("LB-VM-BOOTED 1.0\n")).unwrap_err().to_string();
        assert!(err.contains("no results"), "{err}");
        let err = parse(&lines("LB-VM-RESULTS-BEGIN\n{}\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("end early"), "{err}");
    }
}
