//! `cargo xtask bench NAME`: runs a benchmark in release mode and prints its report.

use anyhow::{bail, Context, Result};
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
    /// One agent pass in process at 10 000 services: each stage's cost for a single
    /// EndpointSlice change, against the whole translation; the heap each stage holds.
    AgentPass,
    /// Maglev table build time and peak memory, against the textbook M×N-matrix build.
    Maglev,
    /// How many entries of other backends move when one backend goes or comes.
    MaglevDisruption,
    /// Connect + first byte + close through a ClusterIP (socket-LB), straight to the backend
    /// and through kube-proxy-style iptables DNAT, for 1, 1 000 and 10 000 services. Root.
    SocketLb,
    /// The NodePort programs' cost per packet at XDP and tc (SNAT hit, reply, miss) against
    /// an empty program (`BPF_PROG_TEST_RUN`), then the end-to-end half (`nodeport-e2e`), for 1
    /// and 10 000 services. Root.
    Nodeport,
    /// NodePort packets/s and requests/s from an outside host to a backend on another node
    /// through XDP, tc, kube-proxy-style iptables and plain routing, 1 and 10 000 services.
    /// Root.
    NodeportE2e,
    /// Through the test API server: the time from a change's write to the maps holding it
    /// (p50/p99), the cold start of 10 000 services x 10 backends and lb-agent's peak RSS, for
    /// 10 and 10 000 services. Root; the test API server must be built (`cargo xtask apiserver`;
    /// the bench names it when it is not).
    ControlPlane,
}

/// Runs the benchmark.
pub fn run(options: Options) -> Result<()> {
    let targets: &[&str] = match options.name {
        Bench::AgentPass => &["agent_pass"],
        Bench::Maglev => &["maglev"],
        Bench::MaglevDisruption => &["maglev_disruption"],
        Bench::SocketLb => &["socket_lb"],
        Bench::Nodeport => &["nodeport", "nodeport_e2e"],
        Bench::NodeportE2e => &["nodeport_e2e"],
        Bench::ControlPlane => &["control_plane"],
    };
    if let Some(why) = needs_root(options.name) {
        if !nix::unistd::geteuid().is_root() {
            bail!("{why}");
        }
    }
    if targets
        .iter()
        .any(|t| matches!(*t, "socket_lb" | "nodeport_e2e" | "control_plane"))
    {
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
    if targets.contains(&"control_plane") {
        // It measures the agent through the test API server, built (or found cached) here.
        crate::apiserver::ensure(false).context("building the test API server")?;
    }
    for target in targets {
        // The control-plane bench lives with the API server's tests, in the e2e crate.
        let package = if *target == "control_plane" {
            "e2e"
        } else {
            "lb"
        };
        let mut cmd = cargo();
        cmd.args(["bench", "--package", package, "--bench", target]);
        step(&format!("bench {target}"), cmd)?;
    }
    Ok(())
}

/// Why `bench` needs root, for the benchmarks that do.
fn needs_root(bench: Bench) -> Option<&'static str> {
    match bench {
        Bench::AgentPass | Bench::Maglev | Bench::MaglevDisruption => None,
        Bench::SocketLb => Some(
            "bench socket-lb needs root: it builds network namespaces, cgroups, a bpffs, BPF \
             programs and iptables rules (all of its own); run `cargo xtask bench socket-lb` \
             as root",
        ),
        Bench::Nodeport => Some(
            "bench nodeport needs root: it builds network namespaces, bpffs, BPF programs and \
             iptables rules of its own; run `cargo xtask bench nodeport` as root",
        ),
        Bench::NodeportE2e => Some(
            "bench nodeport-e2e needs root: it builds network namespaces, BPF programs and \
             iptables rules of its own; run `cargo xtask bench nodeport-e2e` as root",
        ),
        Bench::ControlPlane => Some(
            "bench control-plane needs root: it builds a network namespace, a cgroup, a bpffs \
             and BPF programs of its own for lb-agent; run `cargo xtask bench control-plane` \
             as root",
        ),
    }
}
