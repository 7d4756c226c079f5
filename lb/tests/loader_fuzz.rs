//! Fuzzing the manifest and values loaders with what a user could put in a file: every real
//! YAML file of the repository truncated at every byte, arbitrary bytes, mutated manifests,
//! deep nesting and alias bombs.
//!
//! What a user sees is checked: reading returns, every error names the broken file, a file's
//! reading ends at its first syntax error (at most one such error per file, and it is the
//! file's last: the loader never loops on it), and the other files' objects are all there.
//! Bounded time is checked by running each case on a child thread with a generous deadline
//! (a hang fails, a slow machine does not); bounded memory by the process's peak resident set
//! (`VmHWM`) after the nastiest inputs, far below what an unbounded expansion reaches.
//!
//! By default each file is cut at about 300 evenly spread offsets as a manifest and 100 as a
//! values file (every offset of the small ones); `LB_FUZZ_FULL=1` cuts every file at every
//! byte (about 55 000 manifest and 10 000 values cases, under two minutes in a debug build).

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use lb::config::{load_values, ConfigError};
use lb::k8s::manifests::{self, ManifestError, Manifests};
use proptest::prelude::*;

/// Far above any case's real cost (microseconds to milliseconds), far below a hang.
const DEADLINE: Duration = Duration::from_secs(30);

/// Peak resident memory the whole test process may reach: an alias bomb without a budget
/// needs tens of GiB, a depth bomb without a bound a stack overflow.
const PEAK_RSS_LIMIT_KIB: u64 = 1024 * 1024;

/// Runs `f` on a child thread and fails if it does not finish by [`DEADLINE`]; a panic in
/// `f` fails too, naming the case.
fn within_deadline<T: Send + 'static>(case: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::Builder::new()
        .stack_size(8 << 20)
        .spawn(move || {
            let _ = tx.send(f());
        })
        .expect("spawn a case thread");
    match rx.recv_timeout(DEADLINE) {
        Ok(value) => {
            handle.join().expect("case thread");
            value
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("{case}: no answer within {DEADLINE:?} (hang or unbounded work)")
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{case}: the loader panicked"),
    }
}

/// The process's peak resident set so far, in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

fn assert_peak_rss_bounded(after: &str) {
    let peak = peak_rss_kib();
    assert!(
        peak < PEAK_RSS_LIMIT_KIB,
        "peak resident set {peak} KiB after {after}, limit {PEAK_RSS_LIMIT_KIB} KiB"
    );
}

/// Where to cut a file of `len` bytes: every offset with `LB_FUZZ_FULL=1`, else about
/// `samples` evenly spread ones.
fn cut_offsets(len: usize, samples: usize) -> Vec<usize> {
    let full = std::env::var("LB_FUZZ_FULL").is_ok_and(|v| v == "1");
    let stride = if full { 1 } else { (len / samples).max(1) };
    let mut offsets: Vec<usize> = (0..=len).step_by(stride).collect();
    if offsets.last() != Some(&len) {
        offsets.push(len);
    }
    offsets
}

/// Every YAML file in the repository (manifests, values, scenarios, CI), with its bytes.
fn real_yaml_files() -> Vec<(PathBuf, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut out = Vec::new();
    let mut dirs = vec![root.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                if !matches!(
                    name.as_str(),
                    "target" | ".git" | "snapshots" | "node_modules"
                ) {
                    dirs.push(path);
                }
            } else if name.ends_with(".yaml") || name.ends_with(".yml") {
                out.push((path.clone(), std::fs::read(&path).unwrap()));
            }
        }
    }
    out.sort();
    assert!(out.len() >= 20, "found only {} YAML files", out.len());
    out
}

/// Checks what a user sees of one file's reading: every error names the file, and reading
/// stopped at the first syntax (or read) error, which is the file's last error.
fn check_one_file(case: &str, file: &Path, m: &Manifests) {
    for err in &m.errors {
        assert_eq!(err.path(), file, "{case}: error names another input: {err}");
        assert!(
            err.to_string().contains(&file.display().to_string()),
            "{case}: message does not name the file: {err}"
        );
    }
    let fatal: Vec<usize> = (0..m.errors.len())
        .filter(|&i| {
            matches!(
                m.errors[i],
                ManifestError::Syntax { .. } | ManifestError::Read { .. }
            )
        })
        .collect();
    assert!(
        fatal.len() <= 1,
        "{case}: {} syntax errors for one file",
        fatal.len()
    );
    if let Some(&i) = fatal.first() {
        assert_eq!(
            i + 1,
            m.errors.len(),
            "{case}: reading went on after a syntax error"
        );
        assert_eq!(m.incomplete, [file.to_owned()], "{case}");
    }
}

/// Reads `text` as the manifest file `name` on a deadline and checks it.
fn check_text(case: &str, name: &str, text: String) -> Manifests {
    let file = PathBuf::from(name);
    let path = file.clone();
    let m = within_deadline(case, move || {
        let mut m = Manifests::default();
        manifests::load_text(&path, &text, &mut m);
        m
    });
    check_one_file(case, &file, &m);
    m
}

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let path = std::env::temp_dir().join(format!("lb-fuzz-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Scratch(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const GOOD: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: NAME, namespace: default}\n\
                    spec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}\n";

/// Loads a directory holding `bytes` as `b-fuzz.yaml` between two good files, and checks
/// that both good Services are there and every error is about the fuzzed file.
fn check_in_dir(dir: &Scratch, case: &str, bytes: &[u8]) {
    std::fs::write(dir.0.join("a-good.yaml"), GOOD.replace("NAME", "before")).unwrap();
    std::fs::write(dir.0.join("c-good.yaml"), GOOD.replace("NAME", "after")).unwrap();
    let fuzzed = dir.0.join("b-fuzz.yaml");
    std::fs::write(&fuzzed, bytes).unwrap();
    let path = dir.0.clone();
    let m = within_deadline(case, move || {
        manifests::load_dir(&path).expect("dir readable")
    });
    check_one_file(case, &fuzzed, &m);
    let names: Vec<&str> = m
        .objects
        .services
        .iter()
        .filter_map(|s| s.metadata.name.as_deref())
        .collect();
    assert!(
        names.contains(&"before") && names.contains(&"after"),
        "{case}: the good files' Services are missing: {names:?}"
    );
}

/// Loads `bytes` as a values file (in a directory of its own) on a deadline: the result is
/// values, or errors that each name the file (unreadable, not YAML, not a mapping) or the
/// option they are about.
fn check_values(dir: &Scratch, case: &str, bytes: &[u8]) {
    let file = dir.0.join("values.yaml");
    std::fs::write(&file, bytes).unwrap();
    let path = file.clone();
    let result = within_deadline(case, move || load_values(Some(&path), &[]));
    let Err(errors) = result else { return };
    assert!(!errors.0.is_empty(), "{case}: an empty error list");
    for err in &errors.0 {
        let text = err.to_string();
        match err {
            ConfigError::ReadFile { path, .. }
            | ConfigError::ParseFile { path, .. }
            | ConfigError::NotAMapping { path, .. } => {
                assert_eq!(path, &file, "{case}");
                assert!(text.contains(&file.display().to_string()), "{case}: {text}");
            }
            ConfigError::UnknownKey { key, .. } | ConfigError::InvalidValue { key, .. } => {
                assert!(text.contains(key.as_str()), "{case}: {text}")
            }
            other => panic!("{case}: unexpected error kind for a values file: {other}"),
        }
    }
}

#[test]
fn every_real_yaml_file_truncated_at_every_byte() {
    let start = Instant::now();
    let mut cases = 0usize;
    let mut syntax_errors = 0usize;
    for (path, bytes) in real_yaml_files() {
        let Ok(text) = std::str::from_utf8(&bytes) else {
            continue;
        };
        for end in cut_offsets(text.len(), 300) {
            if !text.is_char_boundary(end) {
                continue;
            }
            let case = format!("{} cut at byte {end}", path.display());
            let m = check_text(&case, "cut.yaml", text[..end].to_owned());
            syntax_errors += usize::from(!m.incomplete.is_empty());
            cases += 1;
        }
    }
    eprintln!(
        "manifests: {cases} truncations ({syntax_errors} with a syntax error) in {:?}",
        start.elapsed()
    );
    assert!(
        syntax_errors > 0,
        "truncation never produced a syntax error"
    );
}

#[test]
fn values_files_truncated_at_every_byte() {
    let dir = Scratch::new("values-cut");
    let start = Instant::now();
    let mut cases = 0usize;
    for (path, bytes) in real_yaml_files() {
        if !path.ends_with("values.yaml") && !path.to_string_lossy().contains("/manifests/") {
            continue;
        }
        for end in cut_offsets(bytes.len(), 100) {
            let case = format!("values {} cut at byte {end}", path.display());
            check_values(&dir, &case, &bytes[..end]);
            cases += 1;
        }
    }
    eprintln!("values: {cases} truncations in {:?}", start.elapsed());
}

#[test]
fn deep_nesting_and_alias_bombs_are_errors_in_bounded_time_and_memory() {
    let long = "x".repeat(100_000);
    let mut bombs: Vec<(&str, String)> = vec![
        ("1M open flow sequences", "[".repeat(1_000_000)),
        (
            "100k closed flow sequences",
            format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)),
        ),
        ("100k open flow mappings", "{a: ".repeat(100_000)),
        ("100k block sequences on a line", "- ".repeat(100_000)),
        (
            "2000 indented mappings",
            (0..2000)
                .map(|i| format!("{}k:\n", " ".repeat(i)))
                .collect(),
        ),
    ];
    // Big but ordinary: a 1 MB line, a 100 000-item flow list (must read, quickly).
    let ordinary = [
        (
            "1 MB plain scalar",
            format!("a: {}\n", "y".repeat(1_000_000)),
        ),
        (
            "100k-item flow list",
            format!("a: [{}x]\n", "x, ".repeat(100_000)),
        ),
    ];
    for (name, text) in ordinary {
        let start = Instant::now();
        let m = check_text(name, "big.yaml", text);
        assert!(
            m.errors
                .iter()
                .all(|e| !matches!(e, ManifestError::Syntax { .. })),
            "{name}: {:?}",
            m.errors
        );
        eprintln!("{name}: {:?}", start.elapsed());
    }
    // The classic billion laughs: nine levels of ten references.
    let mut laughs = String::from("a0: &a0 [lol]\n");
    for level in 1..10 {
        let refs = vec![format!("*a{}", level - 1); 10].join(", ");
        laughs.push_str(&format!("a{level}: &a{level} [{refs}]\n"));
    }
    bombs.push(("billion laughs", laughs));
    // Quadratic: one anchor of 10 000 scalars referenced 10 000 times (50 kB of text).
    bombs.push((
        "quadratic aliases",
        format!(
            "a: &a [{}x]\nb: [{}*a]\n",
            "x,".repeat(10_000),
            "*a,".repeat(10_000)
        ),
    ));
    // One 100 kB string referenced 10 000 times (1 GB of copies).
    bombs.push((
        "long string aliases",
        format!("a: &a {long}\nb: [{}*a]\n", "*a,".repeat(10_000)),
    ));
    let dir = Scratch::new("bombs");
    let values_dir = Scratch::new("bombs-values");
    for (name, text) in bombs {
        let start = Instant::now();
        let m = check_text(name, "bomb.yaml", text.clone());
        assert_eq!(
            m.incomplete.len(),
            1,
            "{name}: expected the file to end in an error: {:?}",
            m.errors
        );
        check_in_dir(&dir, name, text.as_bytes());
        check_values(&values_dir, name, text.as_bytes());
        assert_peak_rss_bounded(name);
        eprintln!(
            "{name} ({} bytes): {:?} for three readings, peak RSS {} KiB",
            text.len(),
            start.elapsed(),
            peak_rss_kib()
        );
    }
}

/// A real manifest with a few bytes replaced by YAML's punctuation.
fn mutated_manifest() -> impl Strategy<Value = Vec<u8>> {
    let files: Vec<Vec<u8>> = real_yaml_files().into_iter().map(|(_, b)| b).collect();
    let punctuation = b"[]{}:-,&*!|>'\"#?%@` \n\t\\".to_vec();
    (
        0..files.len(),
        prop::collection::vec((any::<prop::sample::Index>(), 0..punctuation.len()), 1..8),
    )
        .prop_map(move |(file, edits)| {
            let mut bytes = files[file].clone();
            for (at, with) in edits {
                let i = at.index(bytes.len());
                bytes[i] = punctuation[with];
            }
            bytes
        })
}

/// Text over YAML's alphabet, where the parser's states are reached far more often than by
/// random bytes.
fn yamlish() -> impl Strategy<Value = Vec<u8>> {
    "[a-z0-9:\\-\\[\\]{},&*!|>'\"#?%@` \n\t.]{0,400}".prop_map(String::into_bytes)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_bytes_in_a_directory(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let (dir, values) = (Scratch::new("bytes"), Scratch::new("bytes-values"));
        check_in_dir(&dir, &format!("bytes {bytes:?}"), &bytes);
        check_values(&values, &format!("values bytes {bytes:?}"), &bytes);
    }

    #[test]
    fn yaml_alphabet_in_a_directory(bytes in yamlish()) {
        let (dir, values) = (Scratch::new("yamlish"), Scratch::new("yamlish-values"));
        let case = format!("text {:?}", String::from_utf8_lossy(&bytes));
        check_in_dir(&dir, &case, &bytes);
        check_values(&values, &case, &bytes);
    }

    #[test]
    fn mutated_real_manifests(bytes in mutated_manifest()) {
        let text = String::from_utf8_lossy(&bytes).into_owned();
        check_text(&format!("mutated {text:?}"), "mutated.yaml", text);
    }
}

#[test]
fn the_process_stayed_within_its_memory_bound() {
    assert_peak_rss_bounded("this binary's cases so far");
}
