//! The Debian packages the build and the tests need, installed when missing.
//!
//! As root (as CI is) the missing ones are installed with apt-get; otherwise the exact command
//! is printed and the task stops, rather than failing later in a build script.

use std::process::Command;

use anyhow::{bail, Context, Result};

/// Packages, with what needs each.
const PACKAGES: &[(&str, &str)] = &[
    ("clang", "builds the eBPF programs (ebpf/build.rs)"),
    (
        "llvm",
        "llvm-objdump and llvm-strip for inspecting the eBPF objects",
    ),
    (
        "libbpf-dev",
        "bpf_helpers.h and the other libbpf headers the programs include",
    ),
    ("linux-libc-dev", "the kernel's UAPI headers (linux/bpf.h)"),
    (
        "iproute2",
        "`ip`, used by the privileged tests inside their namespaces",
    ),
    (
        "curl",
        "the commands `cargo xtask demo` prints for poking its topology by hand",
    ),
    (
        "iptables",
        "`iptables-nft-restore`, loading kube-proxy-style rules inside the socket-lb bench's \
         own namespace (`cargo xtask bench socket-lb`)",
    ),
];

/// Makes sure every package in [`PACKAGES`] is installed.
pub fn ensure() -> Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| !installed(name))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    for (name, why) in PACKAGES.iter().filter(|(n, _)| missing.contains(n)) {
        eprintln!("missing Debian package {name}: {why}");
    }
    let command = format!(
        "apt-get update && apt-get install -y --no-install-recommends {}",
        missing.join(" ")
    );
    if !nix::unistd::geteuid().is_root() {
        bail!("install the missing packages as root, then run again:\n    {command}");
    }
    eprintln!("==> installing {}", missing.join(" "));
    run(Command::new("apt-get").arg("update"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    if let Some(still) = missing.iter().find(|name| !installed(name)) {
        bail!("{still} is still not installed after: {command}");
    }
    Ok(())
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("install ok installed"))
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}
