//! `ci/kernels.toml`: the kernels of the matrix, which of them `cargo xtask ci` boots, and
//! which scenarios are expected unsupported on each. A result that differs from the
//! expectation in either direction (unsupported where it should run, or running where it
//! should be unsupported) is a failure, so the file stays the truth about what works where.
//!
//! ```toml
//! [[kernel]]
//! kernel = "5.10"
//! ci = true
//! unsupported_all = "cgroup-getpeername"   # every scenario, for this named feature
//!
//! [[kernel]]
//! kernel = "6.1"
//! ci = true
//! unsupported = []                      # or scenario names
//!
//! [[kernel]]
//! kernel = "6.1"
//! launcher = "virtme-ng"                # Debian's generic kernel, booted by virtme-ng
//! ```

use std::path::Path;

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::results::{Outcome, ScenarioResult};

/// The whole file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Matrix {
    /// The kernels, in the order the tables show them.
    pub kernel: Vec<MatrixKernel>,
}

/// One kernel of the matrix.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatrixKernel {
    /// The `--kernel` value.
    pub kernel: String,
    /// Whether `cargo xtask ci` boots it.
    #[serde(default)]
    pub ci: bool,
    /// Scenarios expected unsupported here.
    #[serde(default)]
    pub unsupported: Vec<String>,
    /// A feature this kernel lacks that every scenario needs: all are expected unsupported,
    /// naming it.
    #[serde(default)]
    pub unsupported_all: Option<String>,
    /// The launcher that boots it (`builtin` or `virtme-ng`); unset, `--launcher` decides.
    #[serde(default)]
    pub launcher: Option<crate::launch::Launcher>,
}

impl Matrix {
    /// Reads and checks the file.
    pub fn load(path: &Path) -> Result<Matrix> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let matrix: Matrix = toml::from_str(&text)
            .with_context(|| format!("{}: not a kernel matrix", path.display()))?;
        anyhow::ensure!(
            !matrix.kernel.is_empty(),
            "{}: no [[kernel]]",
            path.display()
        );
        Ok(matrix)
    }
}

impl MatrixKernel {
    /// Whether `scenario` is expected unsupported here.
    pub fn expects_unsupported(&self, scenario: &str) -> bool {
        self.unsupported_all.is_some() || self.unsupported.iter().any(|s| s == scenario)
    }

    /// Where `results` differ from the expectation, one sentence each.
    pub fn mismatches(&self, results: &[ScenarioResult]) -> Vec<String> {
        let mut out = Vec::new();
        for r in results {
            let expected = self.expects_unsupported(&r.scenario);
            match (expected, r.outcome) {
                (true, Outcome::Unsupported) => {
                    if let Some(feature) = &self.unsupported_all {
                        if !r.detail.starts_with(feature.as_str()) {
                            out.push(format!(
                                "{} on {}: unsupported for another reason than {feature}: {}",
                                r.scenario, self.kernel, r.detail
                            ));
                        }
                    }
                }
                (true, other) => out.push(format!(
                    "{} on {}: expected unsupported (ci/kernels.toml) but it {other}",
                    r.scenario, self.kernel
                )),
                (false, Outcome::Unsupported) => out.push(format!(
                    "{} on {}: unsupported ({}) but ci/kernels.toml expects it to run",
                    r.scenario, self.kernel, r.detail
                )),
                (false, _) => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(name: &str, outcome: Outcome, detail: &str) -> ScenarioResult {
        ScenarioResult {
            scenario: name.to_owned(),
            outcome,
            detail: detail.to_owned(),
        }
    }

    #[test]
    fn a_difference_in_either_direction_is_a_mismatch() {
        let k = MatrixKernel {
            kernel: "x".into(),
            ci: false,
            unsupported: vec!["old".into()],
            unsupported_all: None,
            launcher: None,
        };
        let results = [
            result("old", Outcome::Passed, ""),
            result("new", Outcome::Unsupported, "so-netns-cookie"),
            result("fine", Outcome::Passed, ""),
        ];
        let m = k.mismatches(&results);
        assert_eq!(m.len(), 2, "{m:?}");
        assert!(m[0].contains("expected unsupported"));
        assert!(m[1].contains("expects it to run"));
    }

    #[test]
    fn the_repositorys_matrix_loads_and_boots_one_ci_kernel_with_virtme_ng() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ci/kernels.toml");
        let m = Matrix::load(&path).unwrap();
        let virtme: Vec<&str> = m
            .kernel
            .iter()
            .filter(|k| k.ci && k.launcher == Some(crate::launch::Launcher::VirtmeNg))
            .map(|k| k.kernel.as_str())
            .collect();
        assert_eq!(virtme, ["6.1"]);
        let e = toml::from_str::<Matrix>("[[kernel]]\nkernel = \"6.1\"\nlauncher = \"vng\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("builtin") && e.contains("virtme-ng"), "{e}");
    }

    #[test]
    fn unsupported_all_names_the_feature() {
        let k = MatrixKernel {
            kernel: "5.10".into(),
            ci: true,
            unsupported: vec![],
            unsupported_all: Some("so-netns-cookie".into()),
            launcher: None,
        };
        assert!(k
            .mismatches(&[result(
                "a",
                Outcome::Unsupported,
                "so-netns-cookie (Linux 5.14): x"
            )])
            .is_empty());
        assert_eq!(
            k.mismatches(&[result(
                "a",
                Outcome::Unsupported,
                "cgroup-getpeername (Linux 5.8)"
            )])
            .len(),
            1
        );
    }

    #[test]
    fn the_project_matrix_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ci/kernels.toml");
        let m = Matrix::load(&path).unwrap();
        assert!(m.kernel.iter().filter(|k| k.ci).count() >= 2);
        for k in &m.kernel {
            crate::catalog::KernelChoice::parse(&k.kernel, None).unwrap();
        }
    }
}
