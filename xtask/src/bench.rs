//! `cargo xtask bench NAME`: runs a benchmark in release mode and prints its report.

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};

use crate::cmd::{cargo, step};

/// Options of `cargo xtask bench`.
#[derive(Debug, Args)]
pub struct Options {
    /// Which benchmark.
    #[arg(value_enum)]
    pub name: Bench,
}

/// The benchmarks there are.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Bench {
    /// Maglev table build time and peak memory, against the textbook M×N-matrix build.
    Maglev,
    /// How many entries of other backends move when one backend goes or comes.
    MaglevDisruption,
    /// Connect + first byte + close through a ClusterIP (socket-LB), straight to the backend
    /// and through kube-proxy-style iptables DNAT, for 1, 1 000 and 10 000 services. Root.
    SocketLb,
    /// The NodePort programs' cost per packet at XDP and tc (SNAT hit, reply, miss) against
    /// an empty program, for 1 and 10 000 services (`BPF_PROG_TEST_RUN`). Root.
    Nodeport,
}

/// Runs the benchmark.
pub fn run(options: Options) -> Result<()> {
    let target = match options.name {
        Bench::Maglev => "maglev",
        Bench::MaglevDisruption => "maglev_disruption",
        Bench::SocketLb => "socket_lb",
        Bench::Nodeport => "nodeport",
    };
    if matches!(options.name, Bench::Nodeport) && !nix::unistd::geteuid().is_root() {
        bail!(
            "bench nodeport needs root: it builds a network namespace, a bpffs and BPF \
             programs of its own; run `cargo xtask bench nodeport` as root"
        );
    }
    if matches!(options.name, Bench::SocketLb) {
        if !nix::unistd::geteuid().is_root() {
            bail!(
                "bench socket-lb needs root: it builds network namespaces, cgroups, a bpffs, BPF \
                 programs and iptables rules (all of its own); run `cargo xtask bench socket-lb` \
                 as root"
            );
        }
        crate::deps::ensure()?;
        // The agent, lbctl and netsim's helpers run beside the bench binary, in release too.
        let mut build = cargo();
        build.args([
            "build",
            "--release",
            "--package",
            "lb",
            "--package",
            "netsim",
            "--bins",
        ]);
        step("build release binaries", build)?;
    }
    let mut cmd = cargo();
    cmd.args(["bench", "--package", "lb", "--bench", target]);
    step(&format!("bench {target}"), cmd)?;
    Ok(())
}
