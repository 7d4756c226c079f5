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

/// Packages of the VM runner (`cargo xtask vm-test`), with what needs each.
pub const VM_PACKAGES: &[(&str, &str)] = &[
    (
        "qemu-system-x86",
        "qemu-system-x86_64 boots the guest kernels",
    ),
    (
        "busybox-static",
        "the guest's init and tools, a static binary packed into the initramfs",
    ),
    (
        "debian-archive-keyring",
        "Debian's archive keys, which the fetched kernel packages are checked against",
    ),
    (
        "xz-utils",
        "decompresses Debian 6.x kernels' .ko.xz modules",
    ),
    ("zstd", "decompresses .ko.zst modules"),
    (
        "binutils",
        "objcopy strips debug information from the binaries packed into the guest",
    ),
];

/// Makes sure every package in [`PACKAGES`] is installed.
pub fn ensure() -> Result<()> {
    ensure_packages(PACKAGES)
}

/// Makes sure every package in `packages` is installed.
pub fn ensure_packages(packages: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .map(|(name, _)| *name)
        .filter(|name| !installed(name))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    for (name, why) in packages.iter().filter(|(n, _)| missing.contains(n)) {
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
