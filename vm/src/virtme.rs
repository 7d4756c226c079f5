//! virtme-ng as a launcher: the guest boots the kernel with the host's root file system mounted
//! read-only over 9p (virtme-ng's overlays make /etc, /tmp and the rest writable), and runs a
//! script from the host's disk.
//!
//! virtme-ng is installed from PyPI into a private venv under the cache (never system-wide),
//! pinned to [`VERSION`]. It needs a kernel that has 9p and virtio (built in, or as modules in the
//! modules directory, for virtme-ng's own initramfs to load), which Debian's generic flavour and
//! a developer's usual build have and Debian's cloud flavour does not (no 9p at all; its
//! virtiofs would need a `virtiofsd` that virtme-ng does not find here). virtme-ng runs
//! `depmod` on a kernel tree without `modules.dep` (Debian's packages ship none), and the guest
//! loads the scenarios' modules with `modprobe`, both from the host's `kmod`.
//!
//! The root is the host's own, so the suite runs at its host paths; its stripped binaries are
//! copied into the guest's memory first (the debug builds are 100 MB each, and every exec would
//! page them in over 9p).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::initramfs::marker;
use crate::launch::{Accel, Boot};

/// The virtme-ng release installed from PyPI.
pub const VERSION: &str = "1.42";

/// Kernel options virtme-ng's 9p root needs, each built in or a module.
pub const NEEDED_CONFIG: &[&str] = &[
    "CONFIG_VIRTIO_PCI",
    "CONFIG_NET_9P",
    "CONFIG_NET_9P_VIRTIO",
    "CONFIG_9P_FS",
    "CONFIG_OVERLAY_FS",
];

/// virtme-ng's venv under the cache, with its `vng`.
#[derive(Debug, Clone)]
pub struct Install {
    venv: PathBuf,
}

impl Install {
    /// The venv under `cache_root`, created and filled from PyPI when it is missing.
    pub fn ensure(cache_root: &Path) -> Result<Install> {
        let venv = cache_root.join("virtme-ng").join(VERSION).join("venv");
        let install = Install { venv };
        if install.vng().is_file() {
            return Ok(install);
        }
        eprintln!(
            "lb-vm: installing virtme-ng {VERSION} from PyPI into {}",
            install.venv.display()
        );
        let status = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&install.venv)
            .status()
            .context("cannot run python3 (Debian packages python3 and python3-venv)")?;
        if !status.success() {
            bail!(
                "python3 -m venv {} failed ({status}): is python3-venv installed?",
                install.venv.display()
            );
        }
        let status = Command::new(install.venv.join("bin/pip"))
            .args(["install", "--quiet", &format!("virtme-ng=={VERSION}")])
            .status()
            .context("cannot run the venv's pip")?;
        if !status.success() || !install.vng().is_file() {
            let _ = std::fs::remove_dir_all(&install.venv);
            bail!("pip install virtme-ng=={VERSION} failed ({status})");
        }
        Ok(install)
    }

    /// The `vng` program.
    pub fn vng(&self) -> PathBuf {
        self.venv.join("bin/vng")
    }

    /// `vng` booting `boot.kernel` with the 9p root and running `script` (a host file) as root,
    /// its console (kernel messages included: `--verbose`) on stdout. `vng` runs
    /// `virtme-run` from its own venv, so that comes first on `PATH`.
    pub fn command(&self, boot: &Boot, script: &Path) -> Command {
        let mut cmd = Command::new(self.vng());
        let path = std::env::var("PATH").unwrap_or_default();
        cmd.env(
            "PATH",
            format!("{}:{path}", self.venv.join("bin").display()),
        )
        .arg("--run")
        .arg(&boot.kernel)
        .args(["--force-9p", "--verbose"])
        .args(["--memory", &format!("{}M", boot.memory_mib)])
        .args(["--cpus", &boot.cpus.to_string()])
        .args(["--append", "panic=-1"]);
        if boot.accel == Accel::Tcg {
            cmd.arg("--disable-kvm");
        }
        cmd.arg("--exec").arg(format!("sh {}", script.display()));
        cmd
    }
}

/// Why virtme-ng cannot boot the kernel whose config text is `config`, if it cannot: the
/// [`NEEDED_CONFIG`] options it has neither built in nor as a module.
pub fn missing_config(config: &str) -> Vec<&'static str> {
    NEEDED_CONFIG
        .iter()
        .copied()
        .filter(|opt| {
            !config
                .lines()
                .any(|l| l == format!("{opt}=y") || l == format!("{opt}=m"))
        })
        .collect()
}

/// The kernel config beside an image: `/boot/config-REL` next to `/boot/vmlinuz-REL`, the
/// modules directory's `config`, or a build tree's `.config` (the image in
/// `arch/x86/boot/bzImage`).
pub fn find_config(image: &Path, modules: Option<&Path>) -> Option<PathBuf> {
    let mut candidates = Vec::new();
    if let (Some(dir), Some(name)) = (image.parent(), image.file_name()) {
        if let Some(release) = name.to_string_lossy().strip_prefix("vmlinuz-") {
            candidates.push(dir.join(format!("config-{release}")));
        }
        candidates.extend(dir.ancestors().take(4).map(|d| d.join(".config")));
    }
    if let Some(m) = modules {
        candidates.push(m.join("config"));
    }
    candidates.into_iter().find(|p| p.is_file())
}

/// What the guest runs: load the modules, say it booted, copy the stripped binaries into
/// memory, run the suite from there with its console lines on, print the whole report between
/// markers. virtme-ng powers the guest off when the script ends.
pub fn guest_script(
    modules: &[&str],
    binaries: &[PathBuf],
    test_binary: &str,
    args: &[String],
) -> String {
    let quote = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let args: Vec<String> = args.iter().map(|a| quote(a)).collect();
    format!(
        r#"#!/bin/sh
modprobe -a {modules} || echo "lb-vm: modprobe of some module failed"
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
mkdir -p /run/lb-vm/bin && cp {binaries} /run/lb-vm/bin/
echo "{booted} $(cut -d' ' -f1 /proc/uptime)"
cd /tmp
NETSIM_BIN_DIR=/run/lb-vm/bin CI=true LB_SCENARIO_REPORT=/run/lb-vm/report.jsonl LB_SCENARIO_CONSOLE=1 /run/lb-vm/bin/{test} {args} 2>&1
echo "{exit} $?"
echo "{begin}"
cat /run/lb-vm/report.jsonl 2>/dev/null
echo "{end}"
"#,
        modules = modules.join(" "),
        binaries = binaries
            .iter()
            .map(|b| quote(&b.to_string_lossy()))
            .collect::<Vec<_>>()
            .join(" "),
        booted = marker::BOOTED,
        test = quote(test_binary),
        args = args.join(" "),
        exit = marker::TESTS_EXIT,
        begin = marker::RESULTS_BEGIN,
        end = marker::RESULTS_END,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cloud_config_without_9p_is_refused_by_name_and_a_generic_one_is_not() {
        let generic = "CONFIG_VIRTIO_PCI=m\nCONFIG_NET_9P=m\nCONFIG_NET_9P_VIRTIO=m\n\
                       CONFIG_9P_FS=m\nCONFIG_OVERLAY_FS=m\n";
        assert!(missing_config(generic).is_empty());
        let cloud = "CONFIG_VIRTIO_PCI=y\n# CONFIG_NET_9P is not set\nCONFIG_OVERLAY_FS=m\n";
        assert_eq!(
            missing_config(cloud),
            ["CONFIG_NET_9P", "CONFIG_NET_9P_VIRTIO", "CONFIG_9P_FS"]
        );
    }

    #[test]
    fn the_config_is_found_beside_a_debian_image_and_in_a_build_tree() {
        let dir = std::env::temp_dir().join(format!("lb-vm-virtme-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let boot = dir.join("deb/boot");
        std::fs::create_dir_all(&boot).unwrap();
        std::fs::write(boot.join("vmlinuz-6.1.0-50-amd64"), "").unwrap();
        std::fs::write(boot.join("config-6.1.0-50-amd64"), "").unwrap();
        assert_eq!(
            find_config(&boot.join("vmlinuz-6.1.0-50-amd64"), None),
            Some(boot.join("config-6.1.0-50-amd64"))
        );
        let tree = dir.join("linux");
        std::fs::create_dir_all(tree.join("arch/x86/boot")).unwrap();
        std::fs::write(tree.join("arch/x86/boot/bzImage"), "").unwrap();
        std::fs::write(tree.join(".config"), "").unwrap();
        assert_eq!(
            find_config(&tree.join("arch/x86/boot/bzImage"), None),
            Some(tree.join(".config"))
        );
        assert_eq!(find_config(&dir.join("nowhere/bzImage"), None), None);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_guest_script_marks_boot_and_exit_and_runs_the_suite_from_memory() {
        let script = guest_script(
            &["veth", "bridge"],
            &[
                PathBuf::from("/work/target/vm/6.1/staging/scenarios-1234"),
                PathBuf::from("/work/target/vm/6.1/staging/lb-agent"),
            ],
            "scenarios-1234",
            &["kernel::getpeername".into()],
        );
        assert!(script.contains("modprobe -a veth bridge"), "{script}");
        assert!(script.contains(
            "cp '/work/target/vm/6.1/staging/scenarios-1234' '/work/target/vm/6.1/staging/lb-agent' /run/lb-vm/bin/"
        ));
        assert!(script.contains(
            "LB_SCENARIO_CONSOLE=1 /run/lb-vm/bin/'scenarios-1234' 'kernel::getpeername' 2>&1"
        ));
        for m in [
            marker::BOOTED,
            marker::TESTS_EXIT,
            marker::RESULTS_BEGIN,
            marker::RESULTS_END,
        ] {
            assert!(script.contains(m), "{m}");
        }
    }
}
