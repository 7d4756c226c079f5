//! The guest's root file system, packed on the host into an uncompressed initramfs: busybox
//! (Debian's static build) for the init script, the scenario binaries at their host paths
//! (so the suite finds its helper binaries and scenario files where cargo put them) with debug
//! information stripped and their shared libraries beside them, and the kernel modules to load.
//!
//! The init script mounts proc, sys, devtmpfs, bpffs and cgroup2 (no tmpfs over /tmp or /run,
//! where the packed suite may live), loads the modules,
//! runs the suite with its JSON report on and each scenario's start and record printed on the
//! console as it goes, prints the whole report between markers on the console at the end and
//! powers the guest off.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::cpio::Cpio;

/// Busybox from Debian's `busybox-static`: a static binary, so the guest needs no library for
/// its init.
pub const BUSYBOX: &str = "/bin/busybox";

/// Console markers between which the guest's output is read.
pub mod marker {
    /// Init has mounted everything and loaded the modules.
    pub const BOOTED: &str = "LB-VM-BOOTED";
    /// The suite exited, with its status after a space.
    pub const TESTS_EXIT: &str = "LB-VM-TESTS-EXIT";
    /// The JSON report follows, one record a line.
    pub const RESULTS_BEGIN: &str = "LB-VM-RESULTS-BEGIN";
    /// The report is complete.
    pub const RESULTS_END: &str = "LB-VM-RESULTS-END";
    /// A scenario starts, its name after a space; printed by the suite itself
    /// (`scenarios::report::CONSOLE_START`) as it goes.
    pub const SCENARIO_START: &str = "LB-SCENARIO-START";
    /// A scenario ended, its JSON record after a space; printed by the suite itself
    /// (`scenarios::report::CONSOLE_RESULT`) as each scenario finishes.
    pub const SCENARIO_RESULT: &str = "LB-SCENARIO-RESULT";
    /// What the agent's probes found on the kernel, its JSON after a space; printed by the
    /// suite itself (`scenarios::report::CONSOLE_FEATURES`) before the first scenario.
    pub const KERNEL_FEATURES: &str = "LB-KERNEL-FEATURES";
}

/// What goes into the guest.
#[derive(Debug, Clone)]
pub struct Payload {
    /// The scenario test binary, run by init.
    pub test_binary: PathBuf,
    /// Its arguments (the libtest filter and options).
    pub test_args: Vec<String>,
    /// Other binaries the suite runs (lb-agent, lbctl, netsim's helpers), at their host paths.
    pub helpers: Vec<PathBuf>,
    /// Directories copied whole, at their host paths (the scenario files).
    pub data_dirs: Vec<PathBuf>,
    /// Modules in load order.
    pub modules: Vec<PathBuf>,
}

/// Writes the initramfs for `payload` to `out`; `staging` holds stripped copies of binaries.
pub fn build(payload: &Payload, staging: &Path, out: &Path) -> Result<()> {
    std::fs::create_dir_all(staging)?;
    let file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut cpio = Cpio::new(BufWriter::new(file));
    for dir in [
        "proc",
        "sys",
        "dev",
        "tmp",
        "run",
        "etc",
        "root",
        "lb-vm/modules",
    ] {
        cpio.dir(dir)?;
    }
    cpio.file("/etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n")?;
    cpio.file("/etc/group", 0o644, b"root:x:0:\n")?;
    let busybox = std::fs::read(BUSYBOX)
        .with_context(|| format!("{BUSYBOX} (Debian package busybox-static)"))?;
    cpio.file("/bin/busybox", 0o755, &busybox)?;
    cpio.symlink("/bin/sh", "busybox")?;

    let mut libraries = std::collections::BTreeSet::new();
    for binary in std::iter::once(&payload.test_binary).chain(&payload.helpers) {
        let stripped = strip(binary, staging)?;
        let data = std::fs::read(&stripped)?;
        cpio.file(&binary.to_string_lossy(), 0o755, &data)?;
        libraries.extend(shared_libraries(binary)?);
    }
    for lib in &libraries {
        let data = std::fs::read(lib).with_context(|| format!("reading {}", lib.display()))?;
        cpio.file(&lib.to_string_lossy(), 0o755, &data)?;
    }
    for dir in &payload.data_dirs {
        add_tree(&mut cpio, dir)?;
    }
    let mut insmods = String::new();
    for (i, module) in payload.modules.iter().enumerate() {
        let name = module.file_name().unwrap_or_default().to_string_lossy();
        let guest = format!("/lb-vm/modules/{i:02}-{name}");
        cpio.file(&guest, 0o644, &std::fs::read(module)?)?;
        insmods.push_str(&format!(
            "insmod {guest} || echo \"lb-vm: insmod {name} failed\"\n"
        ));
    }
    let args: Vec<String> = payload.test_args.iter().map(|a| shell_quote(a)).collect();
    let init = format!(
        r#"#!/bin/sh
/bin/busybox --install -s /bin
export PATH=/bin HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# The initramfs root is already writable memory: /tmp and /run stay as packed, since the
# suite may live under them (a checkout in /tmp).
mkdir -p /tmp /run
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup
{insmods}ip link set lo up
echo "{booted} $(cut -d' ' -f1 /proc/uptime)"
cd /tmp
CI=true LB_SCENARIO_REPORT=/tmp/report.jsonl LB_SCENARIO_CONSOLE=1 {binary} {args} 2>&1
echo "{exit} $?"
echo "{begin}"
cat /tmp/report.jsonl 2>/dev/null
echo "{end}"
poweroff -f
"#,
        booted = marker::BOOTED,
        binary = shell_quote(&payload.test_binary.to_string_lossy()),
        args = args.join(" "),
        exit = marker::TESTS_EXIT,
        begin = marker::RESULTS_BEGIN,
        end = marker::RESULTS_END,
    );
    cpio.file("/init", 0o755, init.as_bytes())?;
    cpio.finish()?;
    Ok(())
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A copy of `binary` without debug information (a tenth of the size), kept in `staging`
/// and reused while the binary is unchanged.
pub fn strip(binary: &Path, staging: &Path) -> Result<PathBuf> {
    let name = binary
        .file_name()
        .context("a binary path has a file name")?;
    let out = staging.join(name);
    let newer = |a: &Path, b: &Path| -> bool {
        match (std::fs::metadata(a), std::fs::metadata(b)) {
            (Ok(a), Ok(b)) => a.modified().ok() >= b.modified().ok(),
            _ => false,
        }
    };
    if newer(&out, binary) {
        return Ok(out);
    }
    let status = Command::new("objcopy")
        .arg("--strip-debug")
        .arg(binary)
        .arg(&out)
        .status()
        .context("cannot run objcopy (Debian package binutils)")?;
    if !status.success() {
        bail!(
            "objcopy --strip-debug {} failed: {status}",
            binary.display()
        );
    }
    Ok(out)
}

/// The shared libraries `ldd` lists for `binary`, the dynamic loader included.
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("cannot run ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        if text.contains("not a dynamic executable") {
            return Ok(Vec::new());
        }
        bail!(
            "ldd {}: {}",
            binary.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    Ok(libs)
}

fn add_tree<W: std::io::Write>(cpio: &mut Cpio<W>, dir: &Path) -> Result<()> {
    cpio.dir(&dir.to_string_lossy())?;
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            add_tree(cpio, &path)?;
        } else if path.is_file() {
            cpio.file(&path.to_string_lossy(), 0o644, &std::fs::read(&path)?)?;
        }
    }
    Ok(())
}
