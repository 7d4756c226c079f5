//! The kernel cache: each Debian kernel package downloaded once, extracted with `dpkg-deb -x`
//! and checked for what the scenarios need; later runs use it without the network.
//!
//! Layout: `<cache>/apt/<suite>/` (the private apt set-up), `<cache>/kernels/<suite>/current`
//! (naming the ready package directory; `current-generic` for the generic flavour) and `<cache>/kernels/<suite>/<package>_<version>/`
//! holding the `.deb`, the extracted `tree/` and a `ready` marker written last.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::apt::{self, AptRepo};
use crate::catalog::{KernelChoice, Suite};

/// The environment variable that overrides the cache directory.
pub const CACHE_ENV: &str = "LB_VM_CACHE";

/// Kernel options the scenarios need, built in or as modules: veth and bridges for netsim,
/// cgroup BPF and namespaces for the agent, UDP socket diagnostics for socket destroy.
pub const NEEDED_CONFIG: &[&str] = &[
    "CONFIG_BPF_SYSCALL",
    "CONFIG_CGROUP_BPF",
    "CONFIG_NET_NS",
    "CONFIG_VETH",
    "CONFIG_BRIDGE",
    "CONFIG_INET_DIAG",
    "CONFIG_INET_UDP_DIAG",
    "CONFIG_NET_SCH_INGRESS",
    "CONFIG_NET_CLS_BPF",
    "CONFIG_BLK_DEV_INITRD",
    "CONFIG_SERIAL_8250_CONSOLE",
];

/// Which of a Debian suite's kernel flavours to take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    /// The cloud one when it has what the scenarios need (small, boots fast), else the generic
    /// one: what the built-in launcher boots.
    Smallest,
    /// The generic one, which has 9p as modules: what virtme-ng boots.
    Generic,
}

impl Flavour {
    /// The flavours tried, in order.
    fn candidates(self) -> &'static [&'static str] {
        match self {
            Flavour::Smallest => &["cloud-amd64", "amd64"],
            Flavour::Generic => &["amd64"],
        }
    }

    /// The file under the suite's directory naming the ready package of this choice.
    fn current(self) -> &'static str {
        match self {
            Flavour::Smallest => "current",
            Flavour::Generic => "current-generic",
        }
    }
}

/// A kernel ready to boot.
#[derive(Clone, Debug)]
pub struct Kernel {
    /// What was asked for.
    pub choice: KernelChoice,
    /// Where it came from (`linux-image-6.1.0-50-cloud-amd64 6.1.176-1`, a path, `host`).
    pub source: String,
    /// The kernel image.
    pub image: PathBuf,
    /// Its modules directory (`lib/modules/<release>`), if it has modules.
    pub modules: Option<PathBuf>,
}

/// The cache directory: `override_dir`, else `$LB_VM_CACHE`, else `$XDG_CACHE_HOME/lb-vm`,
/// else `~/.cache/lb-vm`.
pub fn cache_root(override_dir: Option<&Path>) -> Result<PathBuf> {
    if let Some(dir) = override_dir {
        return Ok(dir.to_owned());
    }
    if let Some(dir) = std::env::var_os(CACHE_ENV).filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("lb-vm"));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .context("neither LB_VM_CACHE, XDG_CACHE_HOME nor HOME is set: pass --cache-dir")?;
    Ok(PathBuf::from(home).join(".cache/lb-vm"))
}

/// The kernel for `choice`: from the cache, fetched into it (`refresh` asks the archive for a
/// newer package even when one is cached), or the host's / the given files. `flavour` picks
/// among a Debian suite's kernels.
pub fn kernel(
    root: &Path,
    choice: &KernelChoice,
    refresh: bool,
    flavour: Flavour,
) -> Result<Kernel> {
    match choice {
        KernelChoice::Debian(suite) => debian_kernel(root, *suite, refresh, flavour),
        KernelChoice::Host => host_kernel(),
        KernelChoice::Path { image, modules } => Ok(Kernel {
            choice: choice.clone(),
            source: image.display().to_string(),
            image: image.clone(),
            modules: modules.clone(),
        }),
    }
}

fn host_kernel() -> Result<Kernel> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")?
        .trim()
        .to_owned();
    let image = PathBuf::from(format!("/boot/vmlinuz-{release}"));
    if !image.is_file() {
        bail!(
            "--kernel host: {} does not exist (the running kernel {release} has no image in \
             /boot); name a Debian kernel or a path instead",
            image.display()
        );
    }
    let modules = PathBuf::from(format!("/lib/modules/{release}"));
    Ok(Kernel {
        choice: KernelChoice::Host,
        source: format!("host {release}"),
        image,
        modules: modules.is_dir().then_some(modules),
    })
}

fn debian_kernel(root: &Path, suite: Suite, refresh: bool, flavour: Flavour) -> Result<Kernel> {
    let dir = root.join("kernels").join(suite.codename);
    let current = dir.join(flavour.current());
    if !refresh {
        if let Ok(name) = std::fs::read_to_string(&current) {
            let pkg_dir = dir.join(name.trim());
            if pkg_dir.join("ready").is_file() {
                return from_tree(suite, &pkg_dir, name.trim());
            }
        }
    }
    let mirror = apt::host_mirror()?;
    let repo = AptRepo::create(
        &root.join("apt").join(suite.codename),
        suite.codename,
        &mirror,
    )?;
    repo.update()?;
    let mut rejected = Vec::new();
    for flavour in flavour.candidates() {
        let meta = format!("linux-image-{flavour}");
        let (package, version) = repo.resolve(&meta)?;
        let name = format!("{package}_{version}");
        let pkg_dir = dir.join(&name);
        if !pkg_dir.join("ready").is_file() {
            let tree = pkg_dir.join("tree");
            if tree.exists() {
                std::fs::remove_dir_all(&tree)?;
            }
            // Newer suites split the image package: the kernel in linux-binary-*, the
            // modules in linux-modules-*, both dependencies of linux-image-*.
            let mut packages = vec![package.clone()];
            packages.extend(
                repo.depends(&package)?
                    .into_iter()
                    .filter(|d| d.starts_with("linux-binary-") || d.starts_with("linux-modules-")),
            );
            for p in &packages {
                let deb = repo.download(p, &pkg_dir)?;
                extract(&deb, &tree)?;
            }
            let missing = missing_config(&tree)?;
            if !missing.is_empty() {
                eprintln!(
                    "lb-vm: {package} lacks {}; trying the next flavour",
                    missing.join(", ")
                );
                rejected.push(format!("{package}: lacks {}", missing.join(", ")));
                continue;
            }
            std::fs::write(pkg_dir.join("ready"), "")?;
        }
        std::fs::write(&current, &name)?;
        return from_tree(suite, &pkg_dir, &name);
    }
    bail!(
        "no kernel of {} has what the scenarios need: {}",
        suite.codename,
        rejected.join("; ")
    )
}

/// `dpkg-deb -x DEB TREE`.
fn extract(deb: &Path, tree: &Path) -> Result<()> {
    let status = Command::new("dpkg-deb")
        .arg("-x")
        .arg(deb)
        .arg(tree)
        .status()
        .context("cannot run dpkg-deb")?;
    if !status.success() {
        bail!("dpkg-deb -x {} failed: {status}", deb.display());
    }
    Ok(())
}

/// The kernel image and its release (`6.1.0-50-cloud-amd64`) in an extracted tree: the
/// classic `/boot/vmlinuz-<release>`, or `/usr/lib/modules/<release>/vmlinuz` where newer
/// suites put it.
fn find_image(tree: &Path) -> Result<(PathBuf, String)> {
    if let Ok(dir) = std::fs::read_dir(tree.join("boot")) {
        for path in dir.filter_map(|e| e.ok().map(|e| e.path())) {
            let name = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if let Some(release) = name.strip_prefix("vmlinuz-") {
                return Ok((path.clone(), release.to_owned()));
            }
        }
    }
    for base in ["lib/modules", "usr/lib/modules"] {
        let Ok(dir) = std::fs::read_dir(tree.join(base)) else {
            continue;
        };
        for path in dir.filter_map(|e| e.ok().map(|e| e.path())) {
            if path.join("vmlinuz").is_file() {
                let release = path
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                return Ok((path.join("vmlinuz"), release));
            }
        }
    }
    bail!(
        "no kernel image in {} (looked for boot/vmlinuz-* and usr/lib/modules/*/vmlinuz)",
        tree.display()
    )
}

/// The kernel image and modules directory of an extracted package.
fn from_tree(suite: Suite, pkg_dir: &Path, name: &str) -> Result<Kernel> {
    let tree = pkg_dir.join("tree");
    let (image, release) = find_image(&tree)?;
    let modules = ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|d| tree.join(d).join(&release))
        .find(|d| d.join("kernel").is_dir());
    Ok(Kernel {
        choice: KernelChoice::Debian(suite),
        source: name.replacen('_', " ", 1),
        image,
        modules,
    })
}

/// The [`NEEDED_CONFIG`] options that the package's kernel config has neither built in nor as
/// a module. A package that ships no config (sid's split packages) is not checked, and the run
/// says so.
fn missing_config(tree: &Path) -> Result<Vec<String>> {
    let (_, release) = find_image(tree)?;
    let candidates = [
        tree.join("boot").join(format!("config-{release}")),
        tree.join("lib/modules").join(&release).join("config"),
        tree.join("usr/lib/modules").join(&release).join("config"),
    ];
    let Some(config) = candidates.iter().find(|p| p.is_file()) else {
        eprintln!("lb-vm: {release} ships no kernel config: its options are not checked");
        return Ok(Vec::new());
    };
    let text = std::fs::read_to_string(config)?;
    Ok(NEEDED_CONFIG
        .iter()
        .filter(|opt| {
            !text
                .lines()
                .any(|l| l == format!("{opt}=y") || l == format!("{opt}=m"))
        })
        .map(|s| (*s).to_owned())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, "").unwrap();
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lb-vm-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn finds_the_image_in_boot_and_in_the_split_layout() {
        let classic = scratch("classic");
        touch(&classic.join("tree/boot/vmlinuz-6.1.0-50-cloud-amd64"));
        touch(&classic.join("tree/lib/modules/6.1.0-50-cloud-amd64/kernel/x.ko"));
        let k = from_tree(crate::catalog::SUITES[1], &classic, "pkg_1").unwrap();
        assert!(k.image.ends_with("boot/vmlinuz-6.1.0-50-cloud-amd64"));
        assert!(k
            .modules
            .unwrap()
            .ends_with("lib/modules/6.1.0-50-cloud-amd64"));
        assert_eq!(k.source, "pkg 1");

        let split = scratch("split");
        touch(&split.join("tree/usr/lib/modules/7.2.13+deb14-cloud-amd64/vmlinuz"));
        touch(&split.join("tree/usr/lib/modules/7.2.13+deb14-cloud-amd64/kernel/x.ko"));
        let k = from_tree(crate::catalog::SUITES[3], &split, "pkg_2").unwrap();
        assert!(k
            .image
            .ends_with("usr/lib/modules/7.2.13+deb14-cloud-amd64/vmlinuz"));

        let empty = scratch("empty");
        std::fs::create_dir_all(empty.join("tree")).unwrap();
        let err = from_tree(crate::catalog::SUITES[0], &empty, "p_1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no kernel image"), "{err}");
        for d in [classic, split, empty] {
            let _ = std::fs::remove_dir_all(d);
        }
    }

    #[test]
    fn a_config_without_veth_is_rejected_by_name() {
        let dir = scratch("config");
        touch(&dir.join("boot/vmlinuz-5.10.0-32-amd64"));
        let mut config: String = NEEDED_CONFIG.iter().map(|o| format!("{o}=m\n")).collect();
        config = config.replace("CONFIG_VETH=m\n", "# CONFIG_VETH is not set\n");
        std::fs::write(dir.join("boot/config-5.10.0-32-amd64"), config).unwrap();
        assert_eq!(missing_config(&dir).unwrap(), ["CONFIG_VETH"]);
        let _ = std::fs::remove_dir_all(dir);
    }
}
