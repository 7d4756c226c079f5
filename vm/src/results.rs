//! The guest's results: the JSON records the scenario binary wrote (`scenarios::report`).
//!
//! They reach the console twice. As the suite runs, each scenario prints
//! [`marker::SCENARIO_START`] when it starts and [`marker::SCENARIO_RESULT`] with its record when
//! it ends; [`Stream`] reads those line by line while the guest runs, so a guest killed at its
//! deadline still shows what finished and what was running. When the suite exits, init prints
//! the whole report between [`marker::RESULTS_BEGIN`] and [`marker::RESULTS_END`] ([`parse`]):
//! that copy is the one used when it is complete, since a kernel message printed in the middle
//! of a streamed line can cut it.
//!
//! Before the first scenario the suite prints [`marker::KERNEL_FEATURES`] with what the agent's
//! probes found on the kernel ([`KernelFeatures`]); [`Stream`] keeps it for the tables.

use std::fmt;
use std::time::Duration;

use anyhow::{bail, Result};
use serde::de::DeserializeOwned;
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

/// What the agent's probes found on one kernel (`scenarios::report::KernelFeatures`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct KernelFeatures {
    /// Every probed feature, in probe order.
    pub features: Vec<FeatureAnswer>,
    /// How an agent outside the initial network namespace learns its namespace's cookie:
    /// `SO_NETNS_COOKIE`, `bpf-probe` or `none`.
    pub netns_cookie: String,
    /// The options the degradations are for.
    pub options: String,
    /// What the agent runs degraded with those options.
    #[serde(default)]
    pub degraded: Vec<Degradation>,
    /// Why the agent refuses those options, when it does.
    #[serde(default)]
    pub refused: Option<String>,
    /// Features the run treated as missing (`LB_ASSUME_MISSING_FEATURES`), comma-separated.
    #[serde(default)]
    pub assumed_missing: String,
}

/// One probed feature.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct FeatureAnswer {
    /// Its name (`cgroup-getpeername`).
    pub name: String,
    /// The mainline kernel that brought it.
    pub since: String,
    /// Whether the kernel has it.
    pub present: bool,
    /// The kernel's answer when it does not.
    #[serde(default)]
    pub answer: String,
}

/// What runs differently without a feature.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Degradation {
    /// The feature and the kernel that brought it, `cgroup-getpeername (Linux 5.8)`.
    pub feature: String,
    /// What is different without it.
    pub effect: String,
}

impl KernelFeatures {
    /// The features the kernel lacks.
    pub fn missing(&self) -> impl Iterator<Item = &FeatureAnswer> {
        self.features.iter().filter(|f| !f.present)
    }

    /// How the namespace cookie is learned, in words.
    pub fn netns_cookie_text(&self) -> &'static str {
        match self.netns_cookie.as_str() {
            "SO_NETNS_COOKIE" => "SO_NETNS_COOKIE",
            "bpf-probe" => "BPF probe (one-shot connect4 hook, bpf_get_netns_cookie)",
            _ => "none: the agent cannot tell its namespace",
        }
    }
}

/// The records between the markers, sorted by scenario; an error when the guest never printed
/// a complete report (it hung, panicked or the suite crashed), or a record does not parse.
pub fn parse(lines: &[String]) -> Result<Vec<ScenarioResult>> {
    let Some(begin) = lines
        .iter()
        .position(|l| is_marker(l, marker::RESULTS_BEGIN))
    else {
        bail!(
            "the guest printed no results (no {} line)",
            marker::RESULTS_BEGIN
        );
    };
    let Some(len) = lines[begin + 1..]
        .iter()
        .position(|l| is_marker(l, marker::RESULTS_END))
    else {
        bail!(
            "the guest's results end early (no {} line)",
            marker::RESULTS_END
        );
    };
    let mut results = Vec::new();
    let mut report = lines[begin + 1..begin + 1 + len].iter().map(|l| l.trim());
    while let Some(line) = report.next() {
        // Kernel messages can land between the records; records are whole lines of JSON.
        if !line.starts_with('{') {
            continue;
        }
        let record = match first_json_value::<ScenarioResult>(line) {
            Ok(record) => record,
            // A kernel message printed in the middle of a record ends the console line; the
            // record's rest starts the next one.
            Err(e) => match kernel_message_start(line) {
                Some(cut) => {
                    let joined = format!("{}{}", &line[..cut], report.next().unwrap_or(""));
                    first_json_value(&joined).map_err(|e| {
                        anyhow::anyhow!("a result line does not parse ({e}): {joined}")
                    })?
                }
                None => bail!("a result line does not parse ({e}): {line}"),
            },
        };
        results.push(record);
    }
    results.sort_by(|a, b| a.scenario.cmp(&b.scenario));
    Ok(results)
}

/// The first JSON value of `line`: a kernel message can also land at the end of a record's
/// line (the serial console interleaves the guest's writes).
fn first_json_value<T: DeserializeOwned>(line: &str) -> serde_json::Result<T> {
    serde_json::Deserializer::from_str(line)
        .into_iter()
        .next()
        .unwrap_or_else(|| serde_json::from_str(line))
}

/// What one console line said about the suite's progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A scenario started.
    Started(String),
    /// A scenario ended, with how long after its start (when its start was seen).
    Finished(ScenarioResult, Option<Duration>),
    /// The kernel's features.
    Features(KernelFeatures),
    /// A result line that could not be read even with the line after it: a kernel message cut
    /// it. The scenario's name, when it could be read, and the text.
    Garbled(Option<String>, String),
}

/// The streamed results, read incrementally from console lines: which scenarios finished and
/// how, which started and have not finished.
#[derive(Clone, Debug, Default)]
pub struct Stream {
    /// Started and not finished, in start order, with when they started.
    running: Vec<(String, Duration)>,
    /// Finished, in the order they finished.
    finished: Vec<ScenarioResult>,
    /// The start of a result or features line cut by a kernel message, waiting for its rest
    /// on the next line.
    pending: Option<(Cut, String)>,
    /// What the probes found, once printed.
    features: Option<KernelFeatures>,
}

/// Which kind of line was cut.
#[derive(Clone, Copy, Debug)]
enum Cut {
    Result,
    Features,
}

impl Stream {
    /// Reads one console line seen `at` (time since the guest started).
    pub fn feed(&mut self, at: Duration, line: &str) -> Option<Event> {
        if let Some((cut, head)) = self.pending.take() {
            // The kernel message ended its own line; the record's rest is this line's start.
            let joined = format!("{head}{}", line.trim_end());
            return Some(
                self.complete(at, cut, &joined)
                    .unwrap_or_else(|| match cut {
                        Cut::Result => Event::Garbled(scenario_name(&joined), joined),
                        Cut::Features => Event::Garbled(None, joined),
                    }),
            );
        }
        for (prefix, cut) in [
            (marker::SCENARIO_RESULT, Cut::Result),
            (marker::KERNEL_FEATURES, Cut::Features),
        ] {
            let Some(i) = line.find(prefix) else {
                continue;
            };
            let json = line[i + prefix.len()..].trim_start();
            if let Some(event) = self.complete(at, cut, json) {
                return Some(event);
            }
            // A kernel message printed in the middle of the record ends this line: keep what
            // came before it and try again with the next line.
            if let Some(end) = kernel_message_start(json) {
                self.pending = Some((cut, json[..end].to_owned()));
                return None;
            }
            return Some(match cut {
                Cut::Result => Event::Garbled(scenario_name(json), json.to_owned()),
                Cut::Features => Event::Garbled(None, json.to_owned()),
            });
        }
        if let Some(i) = line.find(marker::SCENARIO_START) {
            let name = line[i + marker::SCENARIO_START.len()..]
                .split_whitespace()
                .next()?
                .to_owned();
            self.running.retain(|(n, _)| *n != name);
            self.running.push((name.clone(), at));
            return Some(Event::Started(name));
        }
        None
    }

    /// The event of a whole `cut` record at the start of `json`, if it parses.
    fn complete(&mut self, at: Duration, cut: Cut, json: &str) -> Option<Event> {
        match cut {
            Cut::Result => Some(self.finish(at, first_record(json)?)),
            Cut::Features => {
                let features: KernelFeatures = first_record(json)?;
                self.features = Some(features.clone());
                Some(Event::Features(features))
            }
        }
    }

    fn finish(&mut self, at: Duration, record: ScenarioResult) -> Event {
        let took = self
            .running
            .iter()
            .position(|(n, _)| *n == record.scenario)
            .map(|i| at.saturating_sub(self.running.remove(i).1));
        self.finished.retain(|r| r.scenario != record.scenario);
        self.finished.push(record.clone());
        Event::Finished(record, took)
    }

    /// The scenarios that finished, in the order they did.
    pub fn finished(&self) -> &[ScenarioResult] {
        &self.finished
    }

    /// What the agent's probes found on the kernel, if the suite printed it.
    pub fn features(&self) -> Option<&KernelFeatures> {
        self.features.as_ref()
    }

    /// The scenarios that started and did not finish, with when each started.
    pub fn running(&self) -> &[(String, Duration)] {
        &self.running
    }
}

/// The first JSON record at the start of `text`, whatever follows it on the line.
fn first_record<T: DeserializeOwned>(text: &str) -> Option<T> {
    serde_json::Deserializer::from_str(text)
        .into_iter::<T>()
        .next()?
        .ok()
}

/// Whether `line` is the `marker` line: alone, or followed by a kernel message the serial
/// console printed before the guest's newline (`LB-VM-RESULTS-BEGIN[  450.372172] br0: …`, as
/// a CI run gave it).
fn is_marker(line: &str, marker: &str) -> bool {
    line.trim()
        .strip_prefix(marker)
        .is_some_and(|rest| rest.is_empty() || kernel_message_start(rest) == Some(0))
}

/// Where a kernel message (`[   12.345678] …`) starts in `text`, if one does.
fn kernel_message_start(text: &str) -> Option<usize> {
    text.match_indices('[').map(|(i, _)| i).find(|&i| {
        let rest = text[i + 1..].trim_start_matches(' ');
        let Some(end) = rest.find(']') else {
            return false;
        };
        let stamp = &rest[..end];
        let (secs, frac) = stamp.split_once('.').unwrap_or(("", ""));
        !secs.is_empty()
            && !frac.is_empty()
            && secs.bytes().all(|b| b.is_ascii_digit())
            && frac.bytes().all(|b| b.is_ascii_digit())
    })
}

/// The scenario a cut record names, if its name survived.
fn scenario_name(text: &str) -> Option<String> {
    let rest = text.split_once("\"scenario\":\"")?.1;
    Some(rest.split_once('"')?.0.to_owned())
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
    fn a_kernel_message_at_the_end_of_a_record_line_is_left_out() {
        let console = lines(
            "LB-VM-RESULTS-BEGIN\n\
             {\"scenario\":\"a\",\"outcome\":\"passed\",\"detail\":\"\"}[  324.520304] device \
             s0-client left promiscuous mode\n\
             LB-VM-RESULTS-END\n",
        );
        let r = parse(&console).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].outcome, Outcome::Passed);
    }

    #[test]
    fn a_record_cut_by_a_kernel_message_is_joined_with_its_rest_on_the_next_line() {
        // As the serial console gave it in a CI run: the message ends the record's line.
        let console = lines(
            "LB-VM-RESULTS-BEGIN\n\
             {\"scenario\":\"a\",\"outcome\":\"passed\",\"d[  450.921003] device s0-client \
             left promiscuous mode\n\
             etail\":\"\"}\n\
             {\"scenario\":\"b\",\"outcome\":\"failed\",\"detail\":\"step 1\"}\n\
             LB-VM-RESULTS-END\n",
        );
        let r = parse(&console).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(
            (r[0].scenario.as_str(), r[0].outcome),
            ("a", Outcome::Passed)
        );
        assert_eq!(r[1].detail, "step 1");
    }

    #[test]
    fn a_marker_with_a_kernel_message_after_it_on_its_line_is_still_the_marker() {
        // As the serial console gave it in a CI run.
        let console = lines(
            "LB-VM-RESULTS-BEGIN[  450.372172] br0: port 1(s0-node1) entered disabled state\n\
             {\"scenario\":\"a\",\"outcome\":\"passed\",\"detail\":\"\"}\n\
             LB-VM-RESULTS-END[  450.465403] virtme-ng-init: script exited with code 0\n",
        );
        let r = parse(&console).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].scenario, "a");
        // Text that only starts like a marker is not one.
        assert!(parse(&lines("LB-VM-RESULTS-BEGINNING\nLB-VM-RESULTS-END\n")).is_err());
    }

    fn feed(stream: &mut Stream, console: &str) -> Vec<Event> {
        console
            .lines()
            .enumerate()
            .filter_map(|(i, l)| stream.feed(Duration::from_secs(i as u64), l))
            .collect()
    }

    const A_PASSED: &str = r#"{"scenario":"a","outcome":"passed","detail":""}"#;

    #[test]
    fn a_stream_cut_off_mid_suite_has_what_finished_and_what_was_running() {
        let mut stream = Stream::default();
        let events = feed(
            &mut stream,
            &format!(
                "LB-VM-BOOTED 3.1\nrunning 3 tests\nLB-SCENARIO-START a\nLB-SCENARIO-START b\n\
                 LB-SCENARIO-RESULT {A_PASSED}\ntest kernel::a ... ok\nLB-SCENARIO-START c\n\
                 LB-SCENARIO-RESULT {{\"scenario\":\"c\",\"outcome\":\"failed\",\"detail\":\"step 2\"}}\n\
                 LB-SCENARIO-RESULT {{\"scenario\":\"b\",\"outc"
            ),
        );
        assert_eq!(events[0], Event::Started("a".into()));
        assert!(matches!(
            &events[2],
            Event::Finished(r, Some(took)) if r.scenario == "a" && *took == Duration::from_secs(2)
        ));
        let finished: Vec<(&str, Outcome)> = stream
            .finished()
            .iter()
            .map(|r| (r.scenario.as_str(), r.outcome))
            .collect();
        assert_eq!(finished, [("a", Outcome::Passed), ("c", Outcome::Failed)]);
        // b's record was cut off where the guest was killed: it is still running.
        let running: Vec<&str> = stream.running().iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(running, ["b"]);
        assert_eq!(stream.running()[0].1, Duration::from_secs(3));
        assert!(matches!(events.last(), Some(Event::Garbled(Some(n), _)) if n == "b"));
    }

    #[test]
    fn records_are_read_through_kernel_messages_and_the_test_runners_lines() {
        let mut stream = Stream::default();
        feed(
            &mut stream,
            &format!(
                "LB-SCENARIO-START a\n[   12.345678] random: crng init done\n\
                 test kernel::x ... LB-SCENARIO-RESULT {A_PASSED}\nok\n\
                 LB-SCENARIO-START b\n\
                 LB-SCENARIO-RESULT {{\"scenario\":\"b\",\"outcome\":\"fa[   13.1] veth0: entered promiscuous mode\n\
                 iled\",\"detail\":\"step 1\"}}\n\
                 LB-SCENARIO-START c\n\
                 LB-SCENARIO-RESULT {{\"scenario\":\"c\",\"outcome\":\"passed\",\"detail\":\"\"}}[ 14.2] bpfilter: ok\n"
            ),
        );
        let finished: Vec<(&str, Outcome, &str)> = stream
            .finished()
            .iter()
            .map(|r| (r.scenario.as_str(), r.outcome, r.detail.as_str()))
            .collect();
        assert_eq!(
            finished,
            [
                ("a", Outcome::Passed, ""),
                ("b", Outcome::Failed, "step 1"),
                ("c", Outcome::Passed, "")
            ]
        );
        assert!(stream.running().is_empty());
    }

    #[test]
    fn a_record_cut_beyond_repair_is_reported_with_its_name() {
        let mut stream = Stream::default();
        let events = feed(
            &mut stream,
            "LB-SCENARIO-START a\nLB-SCENARIO-RESULT {\"scenario\":\"a\",\"outcome\":\"pa\u{0}\n",
        );
        assert!(
            matches!(events.last(), Some(Event::Garbled(Some(n), _)) if n == "a"),
            "{events:?}"
        );
        assert_eq!(stream.running().len(), 1);
    }

    #[test]
    fn the_suites_own_console_lines_are_what_the_stream_reads() {
        use scenarios::report;
        assert_eq!(report::CONSOLE_START, marker::SCENARIO_START);
        assert_eq!(report::CONSOLE_RESULT, marker::SCENARIO_RESULT);
        let line = report::console_line(&report::Record {
            scenario: "getpeername",
            outcome: report::Outcome::Unsupported,
            detail: "so-netns-cookie (Linux 5.14)\nsecond line",
        });
        let mut stream = Stream::default();
        stream.feed(Duration::ZERO, "LB-SCENARIO-START getpeername");
        let event = stream.feed(Duration::from_secs(4), line.trim_end());
        let want = ScenarioResult {
            scenario: "getpeername".into(),
            outcome: Outcome::Unsupported,
            detail: "so-netns-cookie (Linux 5.14)\nsecond line".into(),
        };
        assert_eq!(
            event,
            Some(Event::Finished(want, Some(Duration::from_secs(4))))
        );
    }

    #[test]
    fn the_suites_features_line_is_what_the_stream_reads() {
        use scenarios::report;
        let line = report::features_line(&report::KernelFeatures {
            features: vec![
                report::FeatureAnswer {
                    name: "cgroup-connect".into(),
                    since: "4.17".into(),
                    present: true,
                    answer: String::new(),
                },
                report::FeatureAnswer {
                    name: "so-netns-cookie".into(),
                    since: "5.14".into(),
                    present: false,
                    answer: "getsockopt(SO_NETNS_COOKIE): ENOPROTOOPT".into(),
                },
            ],
            netns_cookie: "bpf-probe".into(),
            options: "kubeProxyReplacement=true".into(),
            degraded: vec![lb_degradation()],
            refused: None,
            assumed_missing: String::new(),
        });
        assert!(line.starts_with(marker::KERNEL_FEATURES));
        let mut stream = Stream::default();
        let event = stream.feed(Duration::ZERO, line.trim_end());
        let want = KernelFeatures {
            features: vec![
                FeatureAnswer {
                    name: "cgroup-connect".into(),
                    since: "4.17".into(),
                    present: true,
                    answer: String::new(),
                },
                FeatureAnswer {
                    name: "so-netns-cookie".into(),
                    since: "5.14".into(),
                    present: false,
                    answer: "getsockopt(SO_NETNS_COOKIE): ENOPROTOOPT".into(),
                },
            ],
            netns_cookie: "bpf-probe".into(),
            options: "kubeProxyReplacement=true".into(),
            degraded: vec![Degradation {
                feature: "cgroup-getpeername (Linux 5.8)".into(),
                effect: "getpeername() shows the backend".into(),
            }],
            refused: None,
            assumed_missing: String::new(),
        };
        assert_eq!(event, Some(Event::Features(want.clone())));
        assert_eq!(stream.features(), Some(&want));
        let names: Vec<&str> = want.missing().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["so-netns-cookie"]);
    }

    fn lb_degradation() -> scenarios::report::Degradation {
        scenarios::report::Degradation {
            feature: "cgroup-getpeername (Linux 5.8)".into(),
            effect: "getpeername() shows the backend".into(),
        }
    }

    #[test]
    fn a_features_line_cut_by_a_kernel_message_is_joined_with_the_next() {
        let mut stream = Stream::default();
        let events = feed(
            &mut stream,
            "LB-KERNEL-FEATURES {\"features\":[{\"name\":\"cgroup-connect\",\"since\":\"4.17\",\"pres[   3.5] random: crng init done\n\
             ent\":true,\"answer\":\"\"}],\"netns_cookie\":\"SO_NETNS_COOKIE\",\"options\":\"k\",\"degraded\":[],\"refused\":null,\"assumed_missing\":\"\"}\n\
             LB-SCENARIO-START a\n",
        );
        assert!(matches!(&events[0], Event::Features(f) if f.features[0].present));
        assert_eq!(stream.features().unwrap().netns_cookie, "SO_NETNS_COOKIE");
        assert_eq!(events[1], Event::Started("a".into()));
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
