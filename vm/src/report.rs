//! The tables a run prints and writes: one kernel's scenarios, and the kernel × scenario
//! matrix as text, Markdown and a self-contained HTML page.

use std::collections::BTreeSet;
use std::fmt::Write;
use std::time::Duration;

use crate::results::{Outcome, ScenarioResult};

/// Everything known about one kernel's run.
#[derive(Clone, Debug, Default)]
pub struct KernelRun {
    /// The `--kernel` label.
    pub label: String,
    /// The package or file booted.
    pub source: String,
    /// Which launcher booted it and with which accelerator.
    pub launcher: String,
    /// The per-scenario results.
    pub results: Vec<ScenarioResult>,
    /// Why the run as a whole failed (no boot, no report), with the console's tail.
    pub error: Option<String>,
    /// Differences from `ci/kernels.toml`.
    pub mismatches: Vec<String>,
    /// qemu start to init ready.
    pub boot_time: Option<Duration>,
    /// The suite's run time in the guest.
    pub test_time: Option<Duration>,
    /// Everything for this kernel: fetch, initramfs, boot, run.
    pub wall_time: Duration,
}

impl KernelRun {
    /// Whether this kernel counts as failed: a run error, a failed scenario or a mismatch.
    pub fn failed(&self) -> bool {
        self.error.is_some()
            || !self.mismatches.is_empty()
            || self.results.iter().any(|r| r.outcome == Outcome::Failed)
    }
}

fn secs(d: Option<Duration>) -> String {
    d.map(|d| format!("{:.1} s", d.as_secs_f64()))
        .unwrap_or_else(|| "-".to_owned())
}

fn cell(outcome: Option<Outcome>) -> &'static str {
    match outcome {
        Some(Outcome::Passed) => "passed",
        Some(Outcome::Failed) => "FAILED",
        Some(Outcome::Unsupported) => "unsupported",
        None => "-",
    }
}

/// One kernel's table: scenario, outcome, detail.
pub fn kernel_table(run: &KernelRun) -> String {
    let width = run
        .results
        .iter()
        .map(|r| r.scenario.len())
        .max()
        .unwrap_or(8)
        .max(8);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "kernel {} ({}), launcher {}; boot {}, scenarios {}, total {}",
        run.label,
        run.source,
        run.launcher,
        secs(run.boot_time),
        secs(run.test_time),
        secs(Some(run.wall_time))
    );
    let _ = writeln!(out, "  {:<width$}  {:<11}  detail", "scenario", "outcome");
    for r in &run.results {
        let detail = r.detail.lines().next().unwrap_or_default();
        let _ = writeln!(
            out,
            "  {:<width$}  {:<11}  {detail}",
            r.scenario,
            cell(Some(r.outcome))
        );
    }
    if let Some(e) = &run.error {
        let _ = writeln!(out, "  run failed: {e}");
    }
    for m in &run.mismatches {
        let _ = writeln!(out, "  expectation: {m}");
    }
    out
}

/// The closing line over `runs`: `N passed, N failed, N unsupported`. A kernel whose run failed
/// as a whole, and a result that contradicts `ci/kernels.toml`, count as failed.
pub fn closing_line(runs: &[KernelRun]) -> String {
    let (mut passed, mut failed, mut unsupported) = (0, 0, 0);
    for run in runs {
        let (p, f, u) = crate::results::totals(&run.results);
        passed += p;
        failed += f + run.mismatches.len() + usize::from(run.error.is_some());
        unsupported += u;
    }
    format!("{passed} passed, {failed} failed, {unsupported} unsupported")
}

fn scenarios(runs: &[KernelRun]) -> Vec<String> {
    let set: BTreeSet<&str> = runs
        .iter()
        .flat_map(|r| r.results.iter().map(|s| s.scenario.as_str()))
        .collect();
    set.into_iter().map(str::to_owned).collect()
}

fn outcome<'a>(run: &'a KernelRun, scenario: &str) -> Option<&'a ScenarioResult> {
    run.results.iter().find(|r| r.scenario == scenario)
}

/// The kernel × scenario table as text.
pub fn matrix_text(runs: &[KernelRun]) -> String {
    let names = scenarios(runs);
    let width = names.iter().map(String::len).max().unwrap_or(8).max(8);
    let mut out = String::new();
    let _ = write!(out, "{:<width$}", "scenario");
    for r in runs {
        let _ = write!(out, "  {:<11}", r.label);
    }
    out.push('\n');
    for name in &names {
        let _ = write!(out, "{name:<width$}");
        for r in runs {
            let _ = write!(out, "  {:<11}", cell(outcome(r, name).map(|o| o.outcome)));
        }
        out.push('\n');
    }
    let _ = write!(out, "{:<width$}", "(boot)");
    for r in runs {
        let _ = write!(out, "  {:<11}", secs(r.boot_time));
    }
    out.push('\n');
    out
}

/// The matrix as Markdown, with the details of what did not pass below it.
pub fn matrix_markdown(runs: &[KernelRun]) -> String {
    let names = scenarios(runs);
    let mut out = String::from("# Scenario matrix\n\n| scenario |");
    for r in runs {
        let _ = write!(out, " {} |", r.label);
    }
    out.push_str("\n|---|");
    for _ in runs {
        out.push_str("---|");
    }
    out.push('\n');
    for name in &names {
        let _ = write!(out, "| {name} |");
        for r in runs {
            let _ = write!(out, " {} |", cell(outcome(r, name).map(|o| o.outcome)));
        }
        out.push('\n');
    }
    out.push_str("\n| kernel | package | launcher | boot | scenarios |\n|---|---|---|---|---|\n");
    for r in runs {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            r.label,
            r.source,
            r.launcher,
            secs(r.boot_time),
            secs(r.test_time)
        );
    }
    out.push_str("\n## Details\n\n");
    for r in runs {
        for (outcome, detail, names) in not_passed(r) {
            let _ = writeln!(
                out,
                "- {} on {}: {outcome} — {}",
                names.join(", "),
                r.label,
                detail.replace('\n', " ")
            );
        }
        if let Some(e) = &r.error {
            let _ = writeln!(out, "- {}: run failed: {}", r.label, e.replace('\n', " "));
        }
        for m in &r.mismatches {
            let _ = writeln!(out, "- expectation: {m}");
        }
    }
    out.push_str(&format!("\n{}\n", closing_line(runs)));
    out
}

/// The results of `run` that did not pass, grouped by outcome and detail: (outcome, detail,
/// scenarios), so thirteen scenarios unsupported for one reason make one line.
fn not_passed(run: &KernelRun) -> Vec<(Outcome, &str, Vec<&str>)> {
    let mut groups: Vec<(Outcome, &str, Vec<&str>)> = Vec::new();
    for s in run.results.iter().filter(|s| s.outcome != Outcome::Passed) {
        match groups
            .iter_mut()
            .find(|(o, d, _)| *o == s.outcome && *d == s.detail)
        {
            Some(group) => group.2.push(&s.scenario),
            None => groups.push((s.outcome, &s.detail, vec![&s.scenario])),
        }
    }
    groups
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The matrix as one HTML page with its styles inline; each cell's detail is its tooltip.
pub fn matrix_html(runs: &[KernelRun]) -> String {
    let names = scenarios(runs);
    let mut out = String::from(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>lb scenario matrix</title><style>\
         body{font-family:system-ui,sans-serif;margin:2em;color:#222}\
         table{border-collapse:collapse;margin:1em 0}\
         th,td{border:1px solid #ccc;padding:.3em .8em;text-align:left}\
         th{background:#f3f3f3}td.passed{background:#d9f2d9}\
         td.failed{background:#f7c6c6;font-weight:bold}td.unsupported{background:#fff1c2}\
         td.none{color:#999}code{font-size:90%}\
         </style></head><body>\n<h1>Scenario matrix</h1>\n<table>\n<tr><th>scenario</th>",
    );
    for r in runs {
        let _ = write!(out, "<th>{}</th>", escape(&r.label));
    }
    out.push_str("</tr>\n");
    for name in &names {
        let _ = write!(out, "<tr><td><code>{}</code></td>", escape(name));
        for r in runs {
            match outcome(r, name) {
                Some(s) => {
                    let _ = write!(
                        out,
                        "<td class=\"{}\" title=\"{}\">{}</td>",
                        s.outcome,
                        escape(&s.detail),
                        s.outcome
                    );
                }
                None => out.push_str("<td class=\"none\">-</td>"),
            }
        }
        out.push_str("</tr>\n");
    }
    out.push_str(
        "</table>\n<h2>Kernels</h2>\n<table>\n<tr><th>kernel</th><th>package</th>\
         <th>launcher</th><th>boot</th><th>scenarios</th></tr>\n",
    );
    for r in runs {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&r.label),
            escape(&r.source),
            escape(&r.launcher),
            secs(r.boot_time),
            secs(r.test_time)
        );
    }
    out.push_str("</table>\n<h2>Details</h2>\n<ul>\n");
    for r in runs {
        for (outcome, detail, names) in not_passed(r) {
            let _ = writeln!(
                out,
                "<li><code>{}</code> on {}: {outcome} — {}</li>",
                escape(&names.join(", ")),
                escape(&r.label),
                escape(detail)
            );
        }
        if let Some(e) = &r.error {
            let _ = writeln!(
                out,
                "<li>{}: run failed: <pre>{}</pre></li>",
                escape(&r.label),
                escape(e)
            );
        }
        for m in &r.mismatches {
            let _ = writeln!(out, "<li>expectation: {}</li>", escape(m));
        }
    }
    let _ = writeln!(
        out,
        "</ul>\n<p><strong>{}</strong></p>\n</body></html>",
        closing_line(runs)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(label: &str, results: &[(&str, Outcome, &str)]) -> KernelRun {
        KernelRun {
            label: label.into(),
            results: results
                .iter()
                .map(|(s, o, d)| ScenarioResult {
                    scenario: (*s).into(),
                    outcome: *o,
                    detail: (*d).into(),
                })
                .collect(),
            ..KernelRun::default()
        }
    }

    #[test]
    fn the_closing_line_counts_run_errors_and_mismatches_as_failures() {
        let mut a = run(
            "6.1",
            &[("x", Outcome::Passed, ""), ("y", Outcome::Failed, "step 2")],
        );
        let b = run("5.10", &[("x", Outcome::Unsupported, "so-netns-cookie")]);
        a.mismatches.push("z".into());
        let mut c = run("sid", &[]);
        c.error = Some("timed out".into());
        assert_eq!(
            closing_line(&[a, b, c]),
            "1 passed, 3 failed, 1 unsupported"
        );
    }

    #[test]
    fn the_html_page_escapes_details_and_colours_cells() {
        let html = matrix_html(&[run("6.1", &[("x", Outcome::Failed, "expected <a> & b")])]);
        assert!(html.contains("expected &lt;a&gt; &amp; b"));
        assert!(html.contains("<td class=\"failed\""));
        assert!(html.starts_with("<!doctype html>") && html.trim_end().ends_with("</html>"));
    }
}
