//! The demo's requests: HTTP to the service's ClusterIP, to `127.0.0.1:NODEPORT` and to the
//! node's address `:NODEPORT` from the first node's host namespace, to the ClusterIP from a
//! client pod, and to every node's `:NODEPORT` from the host outside the cluster (through the
//! nodes' tc programs); each several times, one line per request naming the backend that answered, then
//! a summary per target. A target passes when every request was answered, by every backend
//! between them, and the client's `getpeername` gave the address it asked for (the socket
//! hooks' reverse translation).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use anyhow::Result;
use netsim::{ClientMode, Place};

use super::cluster::Cluster;
use super::spec::DemoSpec;
use super::{interrupt, progress};

/// Where requests go from, and to.
#[derive(Debug, Clone)]
pub struct Target {
    /// What the address is, e.g. `ClusterIP`, `NodePort on loopback`.
    pub what: &'static str,
    /// The node or pod the requests come from.
    pub from: Place,
    /// The address asked for.
    pub addr: SocketAddr,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} → {} ({})", self.from.name(), self.addr, self.what)
    }
}

/// What one target's requests gave.
#[derive(Debug)]
pub struct Outcome {
    pub target: Target,
    /// Requests answered, by backend.
    pub answered_by: BTreeMap<String, u32>,
    /// Failed requests, one line each.
    pub failures: Vec<String>,
}

impl Outcome {
    /// Why the target did not pass, if it did not.
    pub fn problem(&self, backends: &[String]) -> Option<String> {
        let missing: Vec<&str> = backends
            .iter()
            .filter(|b| !self.answered_by.contains_key(b.as_str()))
            .map(String::as_str)
            .collect();
        let mut why = Vec::new();
        if !self.failures.is_empty() {
            why.push(format!(
                "{} request(s) failed (first: {})",
                self.failures.len(),
                self.failures[0]
            ));
        }
        if !missing.is_empty() {
            why.push(format!("never answered by {}", missing.join(", ")));
        }
        (!why.is_empty()).then(|| format!("{}: {}", self.target, why.join("; ")))
    }
}

/// The targets of the demo's requests.
pub fn targets(spec: &DemoSpec, cluster: &Cluster) -> Result<Vec<Target>> {
    let node_def = spec.first_node();
    let node = cluster
        .topology()
        .node(&node_def.name)
        .map(|n| n.place().clone())
        .ok_or_else(|| anyhow::anyhow!("node {} is in the topology", node_def.name))?;
    let client = spec
        .client_pod()
        .and_then(|p| cluster.pod(&p.name))
        .map(|p| p.place().clone())
        .ok_or_else(|| anyhow::anyhow!("the client pod is in the topology"))?;
    let service = &spec.service;
    let cluster_ip = SocketAddr::new(service.cluster_ip.into(), service.port);
    Ok([
        Target {
            what: "ClusterIP",
            from: node.clone(),
            addr: cluster_ip,
        },
        Target {
            what: "NodePort on loopback",
            from: node.clone(),
            addr: SocketAddr::new([127, 0, 0, 1].into(), service.node_port),
        },
        Target {
            what: "NodePort on the node's address",
            from: node,
            addr: SocketAddr::new(node_def.address.into(), service.node_port),
        },
        Target {
            what: "ClusterIP from a pod",
            from: client,
            addr: cluster_ip,
        },
    ]
    .into_iter()
    .chain(spec.nodes.iter().map(|n| Target {
        what: "NodePort from outside the cluster",
        from: cluster.outside().clone(),
        addr: SocketAddr::new(n.address.into(), service.node_port),
    }))
    .collect())
}

/// Sends `count` HTTP requests to `target` from its place, printing one line per request.
pub fn run(target: Target, count: u32) -> Result<Outcome> {
    interrupt::check()?;
    progress(&format!("{count} requests {target}"));
    let replies = target.from.client(ClientMode::Http, target.addr, count)?;
    let mut outcome = Outcome {
        target,
        answered_by: BTreeMap::new(),
        failures: Vec::new(),
    };
    for (i, reply) in replies.iter().enumerate() {
        let n = i + 1;
        let failure = match (&reply.error, reply.identity(), reply.peer) {
            (Some(error), _, _) => Some(error.clone()),
            (None, None, _) => Some(format!("an answer without a pod name: {reply:?}")),
            (None, Some(_), peer) if peer != Some(outcome.target.addr) => Some(format!(
                "getpeername gave {peer:?}, not the address asked for"
            )),
            (None, Some(pod), _) => {
                let seen = reply
                    .seen_by_server()
                    .map_or_else(|| "?".to_owned(), |a| a.to_string());
                println!("  #{n:<3} {pod:<12} (it saw the client as {seen})");
                *outcome.answered_by.entry(pod.to_owned()).or_default() += 1;
                None
            }
        };
        if let Some(failure) = failure {
            println!("  #{n:<3} FAILED: {failure}");
            outcome.failures.push(failure);
        }
    }
    Ok(outcome)
}

/// Prints one summary line per target; returns the problems.
pub fn summarise(outcomes: &[Outcome], backends: &[String]) -> Vec<String> {
    println!("\nsummary:");
    let mut problems = Vec::new();
    let width = outcomes
        .iter()
        .map(|o| o.target.to_string().chars().count())
        .max()
        .unwrap_or(0);
    for outcome in outcomes {
        let total: u32 = outcome.answered_by.values().sum::<u32>() + outcome.failures.len() as u32;
        let by: Vec<String> = outcome
            .answered_by
            .iter()
            .map(|(pod, n)| format!("{pod} ×{n}"))
            .collect();
        let problem = outcome.problem(backends);
        println!(
            "  {:<4} {:<width$}  {}/{total} answered: {}",
            if problem.is_some() { "FAIL" } else { "ok" },
            outcome.target.to_string(),
            total - outcome.failures.len() as u32,
            if by.is_empty() {
                "-".to_owned()
            } else {
                by.join(", ")
            }
        );
        problems.extend(problem);
    }
    problems
}
