//! Builds the C programs under src/bpf with clang for the BPF target.
//!
//! One object per program file, written to OUT_DIR and embedded by src/lib.rs. A missing clang
//! is reported with the Debian packages that provide what the build needs.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The programs, as `src/bpf/<name>.c`.
const PROGRAMS: &[&str] = &[
    "sock_lb",
    "netns_probe",
    "nodeport",
    "nodeport_xdp",
    "empty",
];

fn main() {
    let root = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    let include = root.join("include");
    println!("cargo:rerun-if-changed={}", include.display());
    for entry in std::fs::read_dir(&include).expect("ebpf/include exists") {
        println!(
            "cargo:rerun-if-changed={}",
            entry.expect("readable").path().display()
        );
    }
    println!("cargo:rerun-if-env-changed=CLANG");
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_owned());
    for name in PROGRAMS {
        let source = root.join("src/bpf").join(format!("{name}.c"));
        println!("cargo:rerun-if-changed={}", source.display());
        compile(
            &clang,
            &source,
            &include,
            &out.join(format!("{name}.o")),
            &[],
        );
    }
    // The socket programs once more for kernels with BPF atomic compare-and-exchange (Linux
    // 5.12): a kernel without it refuses the object for the instructions alone, even where a
    // load-time setting would skip them, so the atomic path is a build of its own.
    let source = root.join("src/bpf/sock_lb.c");
    compile(
        &clang,
        &source,
        &include,
        &out.join("sock_lb_atomics.o"),
        &["-mcpu=v3", "-DLB_BPF_ATOMICS"],
    );
}

fn compile(clang: &str, source: &Path, include: &Path, object: &Path, extra: &[&str]) {
    let arch_include = format!("/usr/include/{}-linux-gnu", multiarch());
    let output = Command::new(clang)
        .args(["-target", "bpf", "-O2", "-g", "-Wall", "-Werror"])
        .args(extra)
        .arg("-I")
        .arg(include)
        .arg("-I")
        .arg(&arch_include)
        .arg("-c")
        .arg(source)
        .arg("-o")
        .arg(object)
        .output();
    match output {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => panic!(
            "\n\nbuilding the eBPF programs needs clang, which was not found ({clang}).\n\
             Install it with: apt-get install clang llvm libbpf-dev\n\
             (`cargo xtask ci` and `cargo xtask demo` do this themselves when run as root)\n\n"
        ),
        Err(err) => panic!("cannot run {clang}: {err}"),
        Ok(out) if !out.status.success() => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let hint = if stderr.contains("bpf/bpf_helpers.h") {
                "\nlibbpf's headers are missing: apt-get install libbpf-dev\n"
            } else if stderr.contains("asm/types.h") {
                "\nthe kernel's architecture headers are missing: apt-get install linux-libc-dev\n"
            } else {
                ""
            };
            panic!("clang failed on {}:\n{stderr}{hint}", source.display());
        }
        Ok(_) => {}
    }
}

/// Debian's multiarch name of the build host (the BPF target needs the host's asm headers).
fn multiarch() -> &'static str {
    match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("aarch64") => "aarch64",
        _ => "x86_64",
    }
}
