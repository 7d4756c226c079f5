//! The kernels `--kernel` can name: a Debian release's kernel by its version (`5.10`, `6.1`,
//! `6.12`) or `sid`/`newest`, the host's own (`host`), or a kernel image on disk with its
//! modules directory.

use std::fmt;
use std::path::PathBuf;

use anyhow::{bail, Result};

/// A Debian suite and the kernel series it ships.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Suite {
    /// The suite's codename, as apt names it.
    pub codename: &'static str,
    /// The kernel series users name it by (`sid` for the newest).
    pub series: &'static str,
}

/// The Debian kernels the runner knows, oldest first.
pub const SUITES: &[Suite] = &[
    Suite {
        codename: "bullseye",
        series: "5.10",
    },
    Suite {
        codename: "bookworm",
        series: "6.1",
    },
    Suite {
        codename: "trixie",
        series: "6.12",
    },
    Suite {
        codename: "sid",
        series: "sid",
    },
];

/// A kernel to boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelChoice {
    /// The newest kernel of a Debian suite, fetched from the archive.
    Debian(Suite),
    /// The running host's kernel, from `/boot` and `/lib/modules`.
    Host,
    /// A kernel image the user built or downloaded, with its modules directory (the one holding
    /// `kernel/`, as `lib/modules/<release>` does), if it has modules.
    Path {
        /// The bzImage/vmlinuz.
        image: PathBuf,
        /// Its modules directory.
        modules: Option<PathBuf>,
    },
}

impl fmt::Display for KernelChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KernelChoice::Debian(s) => write!(f, "{} ({})", s.series, s.codename),
            KernelChoice::Host => f.write_str("host"),
            KernelChoice::Path { image, .. } => write!(f, "{}", image.display()),
        }
    }
}

impl KernelChoice {
    /// A short label for tables: the series, `host`, or the image's file name.
    pub fn label(&self) -> String {
        match self {
            KernelChoice::Debian(s) => s.series.to_owned(),
            KernelChoice::Host => "host".to_owned(),
            KernelChoice::Path { image, .. } => image
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| image.display().to_string()),
        }
    }

    /// Parses one `--kernel` value other than `all` (which names the matrix). `modules` is
    /// `--modules DIR`, used with a path.
    pub fn parse(value: &str, modules: Option<PathBuf>) -> Result<KernelChoice> {
        let value = value.trim();
        if value == "host" {
            return Ok(KernelChoice::Host);
        }
        let wanted = if value == "newest" { "sid" } else { value };
        if let Some(suite) = SUITES
            .iter()
            .find(|s| s.series == wanted || s.codename == wanted)
        {
            return Ok(KernelChoice::Debian(*suite));
        }
        if value.contains('/') || std::path::Path::new(value).is_file() {
            let image = PathBuf::from(value);
            if !image.is_file() {
                bail!("--kernel {value}: no such kernel image");
            }
            if let Some(dir) = &modules {
                if !dir.join("kernel").is_dir() {
                    bail!(
                        "--modules {}: not a modules directory (it has no kernel/ inside)",
                        dir.display()
                    );
                }
            }
            return Ok(KernelChoice::Path { image, modules });
        }
        let known: Vec<&str> = SUITES.iter().map(|s| s.series).collect();
        bail!(
            "--kernel {value}: not a known kernel; accepted: {}, newest, host, all, or a path to a \
             kernel image (with --modules DIR)",
            known.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_versions_codenames_and_newest() {
        assert_eq!(
            KernelChoice::parse("5.10", None).unwrap(),
            KernelChoice::Debian(SUITES[0])
        );
        assert_eq!(
            KernelChoice::parse("bookworm", None).unwrap(),
            KernelChoice::Debian(SUITES[1])
        );
        assert_eq!(
            KernelChoice::parse("newest", None).unwrap(),
            KernelChoice::Debian(SUITES[3])
        );
        assert_eq!(
            KernelChoice::parse("host", None).unwrap(),
            KernelChoice::Host
        );
    }

    #[test]
    fn an_unknown_kernel_names_what_is_accepted() {
        let err = KernelChoice::parse("4.19", None).unwrap_err().to_string();
        assert!(
            err.contains("4.19") && err.contains("5.10, 6.1, 6.12, sid"),
            "{err}"
        );
        let err = KernelChoice::parse("/nonexistent/vmlinuz", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no such kernel image"), "{err}");
    }
}
