//! `cargo xtask demo [--check]`: the documents' nginx example on a two-node topology.
//!
//! Builds the binaries, creates the nodes and pods of `xtask/demo/manifests` with netsim (one
//! backend pod serving HTTP on each node), starts `lb-agent` on each node, applies the nginx
//! Service and EndpointSlice, sends requests from the node and from a pod to the ClusterIP and
//! the NodePort and from a host outside the cluster to each node's NodePort, and prints `lbctl service list` and `lbctl status`. Interactively it then keeps
//! the topology up, printing how to poke it, until Ctrl-C; with `--check` it ends there and
//! fails when a target was not answered by every backend. Everything it made is removed on the
//! way out, also after an error or Ctrl-C.

mod agent;
mod cluster;
mod interrupt;
mod spec;
mod traffic;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::cmd::{cargo, step, workspace_root};
use crate::deps;
use cluster::Cluster;
use spec::DemoSpec;

/// Options of `cargo xtask demo`.
#[derive(Debug, Args)]
pub struct Options {
    /// Run non-interactively: show the traffic, clean up, and exit non-zero when any target
    /// was not answered by every backend.
    #[arg(long)]
    pub check: bool,
    /// Requests per target (with two backends chosen at random, 20 requests all land on one
    /// of them once in 2^19 runs).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub requests: u32,
}

/// Prints a progress line.
fn progress(line: &str) {
    println!("demo: {line}");
}

/// `a, b, c` of displayable items.
fn join<T: std::fmt::Display>(items: impl Iterator<Item = T>) -> String {
    items.map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
}

/// The demo's YAML: `xtask/demo`.
fn demo_dir() -> PathBuf {
    workspace_root().join("xtask").join("demo")
}

/// Runs the demo.
pub fn run(options: Options) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "cargo xtask demo needs root: it creates network namespaces, cgroups and bpffs \
             mounts and attaches eBPF programs. Run it as root (e.g. `sudo -E cargo xtask demo`)"
        );
    }
    deps::ensure()?;
    interrupt::install()?;
    progress("building lb-agent, lbctl, netsim-server and netsim-client…");
    let mut build = cargo();
    build.args(["build", "--quiet", "-p", "lb", "-p", "netsim", "--bins"]);
    step("build", build)?;
    let spec = spec::load(&demo_dir())?;
    let cluster = Cluster::up(&spec)?;
    show(&spec, cluster, &options)
}

/// Everything after the agents are up; the cluster is taken down before this returns.
fn show(spec: &DemoSpec, mut cluster: Cluster, options: &Options) -> Result<()> {
    let service = &spec.service;
    let frontends = |node: &str| {
        let node_ip = spec
            .nodes
            .iter()
            .find(|n| n.name == node)
            .map(|n| n.address);
        let mut want = vec![
            format!("{}:{}", service.cluster_ip, service.port),
            format!("0.0.0.0:{}", service.node_port),
        ];
        want.extend(node_ip.map(|ip| format!("{ip}:{}", service.node_port)));
        want
    };
    let backends: Vec<String> = spec
        .pods
        .iter()
        .filter(|p| service.backends.contains(&p.name))
        .map(|p| p.ip.to_string())
        .collect();
    cluster.apply(&spec.service_file, frontends, &backends)?;
    let mut outcomes = Vec::new();
    for target in traffic::targets(spec, &cluster)? {
        outcomes.push(traffic::run(target, options.requests)?);
    }
    let problems = traffic::summarise(&outcomes, &service.backends);
    let node = &spec.first_node().name;
    let agent = cluster
        .agent(node)
        .with_context(|| format!("an agent runs on {node}"))?;
    for args in [&["service", "list"][..], &["status", "--verbose"][..]] {
        println!(
            "\n$ lbctl {} --state-dir {}   # on {node}",
            args.join(" "),
            agent.state_dir().display()
        );
        let out = agent.lbctl(args)?;
        print!("{}", String::from_utf8_lossy(&out.stdout));
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        if !out.status.success() {
            bail!(
                "lbctl {} on {node} exited with {}",
                args.join(" "),
                out.status
            );
        }
    }
    println!();
    if !options.check {
        print_how_to_poke(spec, &cluster);
        while !interrupt::requested() {
            std::thread::sleep(Duration::from_millis(200));
        }
        println!();
    }
    cluster.down()?;
    if !problems.is_empty() {
        bail!(
            "demo: {} target(s) failed:\n  {}",
            problems.len(),
            problems.join("\n  ")
        );
    }
    progress(&format!(
        "ok: every target of service {} answered by {}",
        service.name,
        join(service.backends.iter())
    ));
    Ok(())
}

/// The commands that reach the topology by hand. A process must be in the node's cgroup (not
/// only its network namespace) for the socket hooks to see it, so the command joins both.
fn print_how_to_poke(spec: &DemoSpec, cluster: &Cluster) {
    let node = spec.first_node();
    let service = &spec.service;
    let enter = |netns: &std::path::Path, cgroup: &std::path::Path, cmd: &str| {
        format!(
            "sh -c 'echo $$ > {}/cgroup.procs && exec nsenter --net={} {cmd}'",
            cgroup.display(),
            netns.display()
        )
    };
    println!("The topology stays up until Ctrl-C. Try, as root in another terminal:");
    if let Some(n) = cluster.topology().node(&node.name) {
        for url in [
            format!("http://{}:{}/", service.cluster_ip, service.port),
            format!("http://127.0.0.1:{}/", service.node_port),
            format!("http://{}:{}/", node.address, service.node_port),
        ] {
            println!(
                "  # from {}'s host namespace\n  {}",
                node.name,
                enter(n.netns_path(), n.cgroup_path(), &format!("curl -s {url}"))
            );
        }
    }
    if let Some(pod) = spec.client_pod().and_then(|p| cluster.pod(&p.name)) {
        println!(
            "  # from pod {}\n  {}",
            pod.name(),
            enter(
                pod.netns_path(),
                pod.cgroup_path(),
                &format!("curl -s http://{}:{}/", service.cluster_ip, service.port)
            )
        );
    }
    let outside = cluster.outside();
    for n in &spec.nodes {
        println!(
            "  # from the host outside the cluster, through {}\n  nsenter --net={} curl -s http://{}:{}/",
            n.name,
            outside.netns_path().display(),
            n.address,
            service.node_port
        );
    }
    if let (Some(agent), Ok(lbctl)) = (cluster.agent(&node.name), netsim::binary_path("lbctl")) {
        let state = agent.state_dir().display();
        println!(
            "  # what {}'s agent programmed, and each translation as it happens",
            node.name
        );
        println!("  {} service list --state-dir {state}", lbctl.display());
        println!(
            "  {} monitor -t trace-sock --state-dir {state}",
            lbctl.display()
        );
    }
}
