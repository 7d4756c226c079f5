//! The tables a run prints and writes: one kernel's scenarios, and the kernel × scenario
//! matrix as text, Markdown and a self-contained HTML page.

use std::collections::BTreeSet;
use std::fmt::Write;
use std::time::Duration;

use crate::results::{KernelFeatures, Outcome, ScenarioResult};

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
    /// What the agent's probes found on the kernel, when the guest said.
    pub features: Option<KernelFeatures>,
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
    out.push_str(&features_text(run.features.as_ref()));
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

/// One kernel's features as the per-kernel table shows them: every probe, how the namespace
/// cookie is learned, and what the default options run degraded.
fn features_text(features: Option<&KernelFeatures>) -> String {
    let Some(f) = features else {
        return "  kernel features: not reported by the guest\n".to_owned();
    };
    let width = f.features.iter().map(|a| a.name.len()).max().unwrap_or(7);
    let mut out = String::from("  kernel features (the agent's probes):\n");
    for a in &f.features {
        let state = if a.present {
            "present".to_owned()
        } else {
            format!("MISSING: {}", a.answer)
        };
        let _ = writeln!(out, "    {:<width$}  {:<5}  {state}", a.name, a.since);
    }
    let _ = writeln!(out, "  netns cookie: {}", f.netns_cookie_text());
    if !f.assumed_missing.is_empty() {
        let _ = writeln!(
            out,
            "  assumed missing (LB_ASSUME_MISSING_FEATURES): {}",
            f.assumed_missing
        );
    }
    match (&f.refused, f.degraded.is_empty()) {
        (Some(why), _) => {
            let _ = writeln!(out, "  {}: refused: {why}", f.options);
        }
        (None, true) => {
            let _ = writeln!(out, "  {}: nothing degraded", f.options);
        }
        (None, false) => {
            let _ = writeln!(out, "  {}: degraded", f.options);
            for d in &f.degraded {
                let _ = writeln!(out, "    {}: {}", d.feature, d.effect);
            }
        }
    }
    out
}

/// One kernel's answer for one feature: present, and the kernel's answer when it is not.
type FeatureCell<'a> = Option<(bool, &'a str)>;

/// The feature × kernel rows of the matrix: each feature any kernel reported, in probe order,
/// with its `since` and each kernel's answer (`None`: the kernel did not report it).
fn feature_rows(runs: &[KernelRun]) -> Vec<(&str, &str, Vec<FeatureCell<'_>>)> {
    let mut names: Vec<(&str, &str)> = Vec::new();
    for f in runs.iter().filter_map(|r| r.features.as_ref()) {
        for a in &f.features {
            if !names.iter().any(|(n, _)| *n == a.name) {
                names.push((&a.name, &a.since));
            }
        }
    }
    names
        .into_iter()
        .map(|(name, since)| {
            let cells = runs
                .iter()
                .map(|r| {
                    let a = r
                        .features
                        .as_ref()?
                        .features
                        .iter()
                        .find(|a| a.name == name)?;
                    Some((a.present, a.answer.as_str()))
                })
                .collect();
            (name, since, cells)
        })
        .collect()
}

fn feature_cell(answer: FeatureCell<'_>) -> &'static str {
    match answer {
        Some((true, _)) => "yes",
        Some((false, _)) => "MISSING",
        None => "-",
    }
}

/// What a kernel runs degraded, in one cell.
fn degraded_cell(run: &KernelRun) -> String {
    match &run.features {
        None => "-".to_owned(),
        Some(f) if f.refused.is_some() => "refused".to_owned(),
        Some(f) if f.degraded.is_empty() => "nothing".to_owned(),
        Some(f) => f
            .degraded
            .iter()
            .map(|d| d.feature.split(' ').next().unwrap_or_default())
            .collect::<Vec<_>>()
            .join(", "),
    }
}

fn netns_cell(run: &KernelRun) -> &str {
    match run.features.as_ref().map(|f| f.netns_cookie.as_str()) {
        Some("SO_NETNS_COOKIE") => "SO_NETNS_COOKIE",
        Some("bpf-probe") => "BPF probe",
        Some(_) => "none",
        None => "-",
    }
}

/// The options the kernels' degradations are for (the guests all use the same).
fn record_options(runs: &[KernelRun]) -> &str {
    runs.iter()
        .find_map(|r| r.features.as_ref().map(|f| f.options.as_str()))
        .unwrap_or("default options")
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
    let features = feature_rows(runs);
    let width = names
        .iter()
        .map(String::len)
        .chain(features.iter().map(|(n, _, _)| n.len() + 2))
        .max()
        .unwrap_or(8)
        .max(14);
    let mut out = String::new();
    let _ = write!(out, "{:<width$}", "scenario");
    for r in runs {
        let _ = write!(out, "  {:<15}", r.label);
    }
    out.push('\n');
    for name in &names {
        let _ = write!(out, "{name:<width$}");
        for r in runs {
            let _ = write!(out, "  {:<15}", cell(outcome(r, name).map(|o| o.outcome)));
        }
        out.push('\n');
    }
    let _ = write!(out, "{:<width$}", "(boot)");
    for r in runs {
        let _ = write!(out, "  {:<15}", secs(r.boot_time));
    }
    out.push('\n');
    for (name, _, cells) in features {
        let _ = write!(out, "{:<width$}", format!("[{name}]"));
        for c in cells {
            let _ = write!(out, "  {:<15}", feature_cell(c));
        }
        out.push('\n');
    }
    if runs.iter().any(|r| r.features.is_some()) {
        let _ = write!(out, "{:<width$}", "[netns cookie]");
        for r in runs {
            let _ = write!(out, "  {:<15}", netns_cell(r));
        }
        out.push('\n');
    }
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
    out.push_str(&features_markdown(runs));
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

/// The feature × kernel table in Markdown, with the kernels' answers and the degradations'
/// effects below it.
fn features_markdown(runs: &[KernelRun]) -> String {
    let mut out = String::from(
        "\n## Kernel features\n\nWhat the agent's probes found on each kernel, how an agent in a \
         node's network namespace learns its cookie, and what it runs degraded with ",
    );
    let _ = writeln!(out, "`{}`.\n", record_options(runs));
    out.push_str("| feature | since |");
    for r in runs {
        let _ = write!(out, " {} |", r.label);
    }
    out.push_str("\n|---|---|");
    for _ in runs {
        out.push_str("---|");
    }
    out.push('\n');
    for (name, since, cells) in feature_rows(runs) {
        let _ = write!(out, "| {name} | {since} |");
        for c in cells {
            match c {
                Some((false, _)) => out.push_str(" **missing** |"),
                c => {
                    let _ = write!(out, " {} |", feature_cell(c));
                }
            }
        }
        out.push('\n');
    }
    out.push_str("| netns cookie | |");
    for r in runs {
        let _ = write!(out, " {} |", netns_cell(r));
    }
    out.push_str("\n| degraded | |");
    for r in runs {
        let _ = write!(out, " {} |", degraded_cell(r));
    }
    out.push_str("\n\n");
    for r in runs {
        let Some(f) = &r.features else {
            let _ = writeln!(out, "- {}: the guest reported no features", r.label);
            continue;
        };
        for a in f.missing() {
            let _ = writeln!(
                out,
                "- {} lacks {} (Linux {}): {}",
                r.label,
                a.name,
                a.since,
                a.answer.replace('\n', " ")
            );
        }
        for d in &f.degraded {
            let _ = writeln!(out, "- {} degraded: {}: {}", r.label, d.feature, d.effect);
        }
        if let Some(why) = &f.refused {
            let _ = writeln!(out, "- {} refuses {}: {}", r.label, f.options, why);
        }
    }
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
    out.push_str("</table>\n");
    out.push_str(&features_html(runs));
    out.push_str("<h2>Details</h2>\n<ul>\n");
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

/// The feature × kernel table in HTML: a missing feature's cell carries the kernel's answer as
/// its tooltip, and the list below spells out answers and degradations.
fn features_html(runs: &[KernelRun]) -> String {
    let mut out = String::from("<h2>Kernel features</h2>\n");
    let _ = writeln!(
        out,
        "<p>What the agent's probes found on each kernel, how an agent in a node's network \
         namespace learns its cookie, and what it runs degraded with <code>{}</code>.</p>",
        escape(record_options(runs))
    );
    out.push_str("<table>\n<tr><th>feature</th><th>since</th>");
    for r in runs {
        let _ = write!(out, "<th>{}</th>", escape(&r.label));
    }
    out.push_str("</tr>\n");
    for (name, since, cells) in feature_rows(runs) {
        let _ = write!(
            out,
            "<tr><td><code>{}</code></td><td>{}</td>",
            escape(name),
            escape(since)
        );
        for c in cells {
            match c {
                Some((true, _)) => out.push_str("<td class=\"passed\">yes</td>"),
                Some((false, answer)) => {
                    let _ = write!(
                        out,
                        "<td class=\"unsupported\" title=\"{}\">missing</td>",
                        escape(answer)
                    );
                }
                None => out.push_str("<td class=\"none\">-</td>"),
            }
        }
        out.push_str("</tr>\n");
    }
    out.push_str("<tr><td>netns cookie</td><td></td>");
    for r in runs {
        let _ = write!(out, "<td>{}</td>", escape(netns_cell(r)));
    }
    out.push_str("</tr>\n<tr><td>degraded</td><td></td>");
    for r in runs {
        let _ = write!(out, "<td>{}</td>", escape(&degraded_cell(r)));
    }
    out.push_str("</tr>\n</table>\n<ul>\n");
    for r in runs {
        let label = escape(&r.label);
        let Some(f) = &r.features else {
            let _ = writeln!(out, "<li>{label}: the guest reported no features</li>");
            continue;
        };
        for a in f.missing() {
            let _ = writeln!(
                out,
                "<li>{label} lacks <code>{}</code> (Linux {}): {}</li>",
                escape(&a.name),
                escape(&a.since),
                escape(&a.answer)
            );
        }
        for d in &f.degraded {
            let _ = writeln!(
                out,
                "<li>{label} degraded: {}: {}</li>",
                escape(&d.feature),
                escape(&d.effect)
            );
        }
        if let Some(why) = &f.refused {
            let _ = writeln!(
                out,
                "<li>{label} refuses <code>{}</code>: {}</li>",
                escape(&f.options),
                escape(why)
            );
        }
    }
    out.push_str("</ul>\n");
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

    use crate::results::{Degradation, FeatureAnswer};

    fn answer(name: &str, since: &str, missing: Option<&str>) -> FeatureAnswer {
        FeatureAnswer {
            name: name.into(),
            since: since.into(),
            present: missing.is_none(),
            answer: missing.unwrap_or_default().into(),
        }
    }

    /// The agent's eight probes, with `missing` answered by the kernel.
    fn features(missing: &[(&str, &str)]) -> Vec<FeatureAnswer> {
        [
            ("cgroup-connect", "4.17"),
            ("cgroup-sendmsg", "4.18"),
            ("cgroup-recvmsg", "5.2"),
            ("cgroup-getpeername", "5.8"),
            ("cgroup-bind", "4.17"),
            ("netns-cookie-helper", "5.7"),
            ("cgroup-sock-release", "5.9"),
            ("so-netns-cookie", "5.14"),
        ]
        .into_iter()
        .map(|(n, s)| {
            let m = missing.iter().find(|(m, _)| *m == n).map(|(_, a)| *a);
            answer(n, s, m)
        })
        .collect()
    }

    /// 5.10 (no SO_NETNS_COOKIE: the BPF probe), 6.1 told to do without getpeername, and a
    /// kernel whose guest never reported.
    fn three_kernels() -> Vec<KernelRun> {
        let mut k510 = run("5.10", &[("getpeername", Outcome::Passed, "")]);
        k510.source = "linux-image-5.10.0-32-cloud-amd64".into();
        k510.features = Some(KernelFeatures {
            features: features(&[(
                "so-netns-cookie",
                "getsockopt(SO_NETNS_COOKIE): Protocol not available (os error 92)",
            )]),
            netns_cookie: "bpf-probe".into(),
            options: "kubeProxyReplacement=true".into(),
            ..KernelFeatures::default()
        });
        let mut k61 = run("6.1", &[("getpeername", Outcome::Passed, "")]);
        k61.features = Some(KernelFeatures {
            features: features(&[(
                "cgroup-getpeername",
                "assumed missing (LB_ASSUME_MISSING_FEATURES)",
            )]),
            netns_cookie: "SO_NETNS_COOKIE".into(),
            options: "kubeProxyReplacement=true".into(),
            degraded: vec![Degradation {
                feature: "cgroup-getpeername (Linux 5.8)".into(),
                effect: "getpeername() shows the backend's address instead of the service's".into(),
            }],
            refused: None,
            assumed_missing: "cgroup-getpeername".into(),
        });
        let mut sid = run("sid", &[]);
        sid.error = Some("the guest printed no results".into());
        vec![k510, k61, sid]
    }

    #[test]
    fn the_kernel_table_lists_every_probe_the_cookie_path_and_the_degradations() {
        let runs = three_kernels();
        let table = kernel_table(&runs[0]);
        assert!(
            table.contains("so-netns-cookie      5.14   MISSING: getsockopt"),
            "{table}"
        );
        assert!(table.contains("netns cookie: BPF probe"), "{table}");
        insta::assert_snapshot!("kernel_table_5_10", table);
        insta::assert_snapshot!("kernel_table_6_1_degraded", kernel_table(&runs[1]));
        insta::assert_snapshot!("kernel_table_unreported", kernel_table(&runs[2]));
    }

    #[test]
    fn the_matrix_pages_show_features_beside_the_results() {
        let runs = three_kernels();
        let md = matrix_markdown(&runs);
        assert!(
            md.contains("| so-netns-cookie | 5.14 | **missing** | yes | - |"),
            "{md}"
        );
        assert!(
            md.contains("| netns cookie | | BPF probe | SO_NETNS_COOKIE | - |"),
            "{md}"
        );
        assert!(
            md.contains("| degraded | | nothing | cgroup-getpeername | - |"),
            "{md}"
        );
        insta::assert_snapshot!("matrix_markdown", md);
        insta::assert_snapshot!("matrix_text", matrix_text(&runs));
        let html = matrix_html(&runs);
        assert!(html.contains(
            "<td class=\"unsupported\" title=\"getsockopt(SO_NETNS_COOKIE): Protocol not \
             available (os error 92)\">missing</td>"
        ));
        insta::assert_snapshot!("matrix_html", html);
    }

    #[test]
    fn the_html_page_escapes_details_and_colours_cells() {
        let html = matrix_html(&[run("6.1", &[("x", Outcome::Failed, "expected <a> & b")])]);
        assert!(html.contains("expected &lt;a&gt; &amp; b"));
        assert!(html.contains("<td class=\"failed\""));
        assert!(html.starts_with("<!doctype html>") && html.trim_end().ends_with("</html>"));
    }
}
