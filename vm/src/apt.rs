//! Debian's archive through apt's own tools, under a private configuration: its own state,
//! cache and sources list inside the runner's cache directory, so the host's apt setup is
//! neither read for packages nor changed. The mirror is the one the host's apt already uses
//! (read from `/etc/apt/sources.list.d/*.sources` or `/etc/apt/sources.list`); signatures are
//! checked against Debian's archive keyring, as apt does for the host.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Debian's archive keys (package `debian-archive-keyring`): every release's signing keys.
pub const ARCHIVE_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// A private apt set-up for one suite.
#[derive(Debug, Clone)]
pub struct AptRepo {
    root: PathBuf,
    suite: String,
}

impl AptRepo {
    /// Lays out `root` (state, cache, sources, an empty apt.conf.d) for `suite` from `mirror`.
    pub fn create(root: &Path, suite: &str, mirror: &str) -> Result<AptRepo> {
        if !Path::new(ARCHIVE_KEYRING).is_file() {
            bail!(
                "{ARCHIVE_KEYRING} is missing: it holds Debian's archive keys the kernels are \
                 checked against (Debian package debian-archive-keyring)"
            );
        }
        for dir in [
            "state/lists/partial",
            "cache/archives/partial",
            "etc/sources.list.d",
            "etc/apt.conf.d",
            "etc/preferences.d",
            "etc/trusted.gpg.d",
        ] {
            let path = root.join(dir);
            std::fs::create_dir_all(&path)
                .with_context(|| format!("creating {}", path.display()))?;
        }
        let status = root.join("state/status");
        if !status.exists() {
            std::fs::write(&status, "")?;
        }
        std::fs::write(
            root.join("etc/sources.list.d/lb-vm.sources"),
            format!(
                "Types: deb\nURIs: {mirror}\nSuites: {suite}\nComponents: main\n\
                 Signed-By: {ARCHIVE_KEYRING}\n"
            ),
        )?;
        let r = root.display();
        std::fs::write(
            root.join("apt.conf"),
            format!(
                "Dir::State \"{r}/state\";\nDir::State::status \"{r}/state/status\";\n\
                 Dir::Cache \"{r}/cache\";\nDir::Etc::SourceList \"/dev/null\";\n\
                 Dir::Etc::SourceParts \"{r}/etc/sources.list.d\";\n\
                 Dir::Etc::Parts \"{r}/etc/apt.conf.d\";\n\
                 Dir::Etc::Preferences \"/dev/null\";\n\
                 Dir::Etc::PreferencesParts \"{r}/etc/preferences.d\";\n\
                 Dir::Etc::TrustedParts \"{r}/etc/trusted.gpg.d\";\n\
                 APT::Architectures {{ \"amd64\"; }};\nAcquire::Languages \"none\";\n\
                 APT::Sandbox::User \"root\";\n{}",
                host_freshness_policy()
            ),
        )?;
        Ok(AptRepo {
            root: root.to_owned(),
            suite: suite.to_owned(),
        })
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("APT_CONFIG", self.root.join("apt.conf"));
        cmd
    }

    /// `apt-get update` for the suite; output (with progress) goes to the terminal.
    pub fn update(&self) -> Result<()> {
        eprintln!("lb-vm: apt-get update ({})", self.suite);
        let status = self
            .command("apt-get")
            .args(["-q", "update"])
            .status()
            .context("cannot run apt-get")?;
        if !status.success() {
            bail!("apt-get update for {} failed: {status}", self.suite);
        }
        Ok(())
    }

    /// The concrete kernel package (`linux-image-6.1.0-50-cloud-amd64`) and version that the
    /// metapackage `meta` (`linux-image-cloud-amd64`) depends on in this suite.
    pub fn resolve(&self, meta: &str) -> Result<(String, String)> {
        let out = self
            .command("apt-cache")
            .args(["show", meta])
            .output()
            .context("cannot run apt-cache")?;
        if !out.status.success() {
            bail!(
                "apt-cache show {meta} in {}: {}",
                self.suite,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let text = String::from_utf8_lossy(&out.stdout);
        // The first record is the candidate.
        let record = text.split("\n\n").next().unwrap_or_default();
        let depends = record
            .lines()
            .find_map(|l| l.strip_prefix("Depends: "))
            .with_context(|| format!("{meta} in {} has no Depends", self.suite))?;
        for dep in depends.split(',') {
            let mut words = dep.split_whitespace();
            let Some(name) = words.next() else { continue };
            if name.starts_with("linux-image-") && name != meta {
                let version = words
                    .collect::<String>()
                    .trim_matches(|c| c == '(' || c == ')' || c == '=')
                    .to_owned();
                return Ok((name.to_owned(), version));
            }
        }
        bail!(
            "{meta} in {}: no linux-image package among its Depends: {depends}",
            self.suite
        )
    }

    /// The package names in `package`'s `Depends` (alternatives included), without versions.
    pub fn depends(&self, package: &str) -> Result<Vec<String>> {
        let out = self
            .command("apt-cache")
            .args(["show", package])
            .output()
            .context("cannot run apt-cache")?;
        if !out.status.success() {
            bail!(
                "apt-cache show {package} in {}: {}",
                self.suite,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let record = text.split("\n\n").next().unwrap_or_default();
        Ok(record
            .lines()
            .find_map(|l| l.strip_prefix("Depends: "))
            .unwrap_or_default()
            .split([',', '|'])
            .filter_map(|d| d.split_whitespace().next())
            .map(str::to_owned)
            .collect())
    }

    /// `apt-get download PACKAGE` into `dir`, checked against the suite's signed index; returns
    /// the `.deb`.
    pub fn download(&self, package: &str, dir: &Path) -> Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        eprintln!("lb-vm: apt-get download {package} ({})", self.suite);
        let status = self
            .command("apt-get")
            .args(["download", package])
            .current_dir(dir)
            .status()
            .context("cannot run apt-get")?;
        if !status.success() {
            bail!("apt-get download {package} failed: {status}");
        }
        let prefix = format!("{package}_");
        std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
                    && p.extension().is_some_and(|e| e == "deb")
            })
            .with_context(|| {
                format!(
                    "apt-get download {package} left no .deb in {}",
                    dir.display()
                )
            })
    }
}

impl AptRepo {
    /// The names of `roots` and every package they depend on, recursively (`Depends` and
    /// `Pre-Depends` only; virtual packages left out), sorted.
    pub fn closure(&self, roots: &[&str]) -> Result<Vec<String>> {
        let out = self
            .command("apt-cache")
            .args([
                "depends",
                "--recurse",
                "--no-recommends",
                "--no-suggests",
                "--no-conflicts",
                "--no-breaks",
                "--no-replaces",
                "--no-enhances",
            ])
            .args(roots)
            .output()
            .context("cannot run apt-cache")?;
        if !out.status.success() {
            bail!(
                "apt-cache depends {} in {}: {}",
                roots.join(" "),
                self.suite,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with(' ') && !l.starts_with('<'))
            .map(|l| l.trim().to_owned())
            .filter(|l| !l.is_empty())
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// The candidate version of each of `packages`, in the same order.
    pub fn versions(&self, packages: &[String]) -> Result<Vec<(String, String)>> {
        let out = self
            .command("apt-cache")
            .args(["show", "--no-all-versions"])
            .args(packages)
            .output()
            .context("cannot run apt-cache")?;
        if !out.status.success() {
            bail!(
                "apt-cache show in {}: {}",
                self.suite,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let mut found = std::collections::BTreeMap::new();
        for record in text.split("\n\n") {
            let field = |name: &str| record.lines().find_map(|l| l.strip_prefix(name));
            if let (Some(p), Some(v)) = (field("Package: "), field("Version: ")) {
                found.entry(p.to_owned()).or_insert_with(|| v.to_owned());
            }
        }
        packages
            .iter()
            .map(|p| {
                let v = found
                    .get(p)
                    .with_context(|| format!("{p} has no version in {}", self.suite))?;
                Ok((p.clone(), v.clone()))
            })
            .collect()
    }

    /// `apt-get download` of every `package=version` in one run into `dir` (apt shows its
    /// progress), checked against the suite's signed index; returns the `.deb` files.
    pub fn download_all(&self, packages: &[(String, String)], dir: &Path) -> Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir)?;
        eprintln!(
            "lb-vm: apt-get download of {} packages ({})",
            packages.len(),
            self.suite
        );
        let status = self
            .command("apt-get")
            .args(["-q", "download"])
            .args(packages.iter().map(|(p, v)| format!("{p}={v}")))
            .current_dir(dir)
            .status()
            .context("cannot run apt-get")?;
        if !status.success() {
            bail!("apt-get download failed: {status}");
        }
        let mut debs: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "deb"))
            .collect();
        debs.sort();
        if debs.len() < packages.len() {
            bail!(
                "apt-get download left {} .deb files in {} for {} packages",
                debs.len(),
                dir.display(),
                packages.len()
            );
        }
        Ok(debs)
    }
}

/// The host apt's `Acquire::Check-Valid-Until` and `Acquire::Check-Date` settings, carried
/// over so the private set-up accepts the same mirror the host does (a mirror that serves a
/// snapshot of the archive has Release files past their Valid-Until date, and a host set up
/// for it turns that check off). Signatures are checked either way.
fn host_freshness_policy() -> String {
    let Ok(out) = Command::new("apt-config").arg("dump").output() else {
        return String::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| {
            l.starts_with("Acquire::Check-Valid-Until ") || l.starts_with("Acquire::Check-Date ")
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

/// The environment variable naming a Debian mirror to use instead of the host's (for hosts
/// whose apt points at another distribution's archive).
pub const MIRROR_ENV: &str = "LB_VM_DEBIAN_MIRROR";

/// The Debian mirror: `$LB_VM_DEBIAN_MIRROR` when set, else the one the host's apt uses: the
/// URI of the first `deb` source for a plain release suite (not `-security` or `-updates`),
/// from deb822 `.sources` files or the one-line `sources.list`.
pub fn host_mirror() -> Result<String> {
    if let Some(uri) = std::env::var_os(MIRROR_ENV).filter(|v| !v.is_empty()) {
        return Ok(uri.to_string_lossy().into_owned());
    }
    let mut texts = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut files: Vec<PathBuf> = dir
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "sources"))
            .collect();
        files.sort();
        for f in files {
            texts.push((true, std::fs::read_to_string(&f).unwrap_or_default()));
        }
    }
    if let Ok(text) = std::fs::read_to_string("/etc/apt/sources.list") {
        texts.push((false, text));
    }
    texts
        .iter()
        .find_map(|(deb822, text)| {
            if *deb822 {
                mirror_from_deb822(text)
            } else {
                mirror_from_one_line(text)
            }
        })
        .context(
            "no Debian mirror found in /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list \
             (a `deb` source for a release suite); the kernels are fetched from the mirror the \
             host's apt uses, or from $LB_VM_DEBIAN_MIRROR",
        )
}

fn is_release_suite(suite: &str) -> bool {
    !suite.contains('-') && !suite.contains('/')
}

fn mirror_from_deb822(text: &str) -> Option<String> {
    text.split("\n\n").find_map(|stanza| {
        let field = |name: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
        };
        let types = field("Types:")?;
        let suites = field("Suites:")?;
        let uri = field("URIs:")?;
        (types.split_whitespace().any(|t| t == "deb")
            && suites.split_whitespace().any(is_release_suite))
        .then(|| uri.split_whitespace().next().unwrap_or_default().to_owned())
        .filter(|u| !u.is_empty())
    })
}

fn mirror_from_one_line(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let line = line.trim();
        let rest = line.strip_prefix("deb ")?;
        let rest = if rest.trim_start().starts_with('[') {
            rest.split_once(']')?.1
        } else {
            rest
        };
        let mut words = rest.split_whitespace();
        let uri = words.next()?;
        let suite = words.next()?;
        is_release_suite(suite).then(|| uri.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_release_source_wins_over_security() {
        let text = "Types: deb\nURIs: http://security.example/debian-security\n\
                    Suites: bookworm-security\nComponents: main\n\n\
                    Types: deb\nURIs: http://mirror.example/debian\n\
                    Suites: bookworm bookworm-updates\nComponents: main\n";
        assert_eq!(
            mirror_from_deb822(text).as_deref(),
            Some("http://mirror.example/debian")
        );
    }

    #[test]
    fn one_line_sources_with_options() {
        let text = "# comment\ndeb [signed-by=/k.gpg] http://m.example/debian bookworm main\n";
        assert_eq!(
            mirror_from_one_line(text).as_deref(),
            Some("http://m.example/debian")
        );
        assert_eq!(
            mirror_from_one_line("deb-src http://x/ bookworm main"),
            None
        );
    }
}
