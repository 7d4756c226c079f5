//! The scenario file format: a topology, the agent's options, Kubernetes objects, and steps
//! each with the outcome a user would observe.
//!
//! ```yaml
//! name: clusterip-tcp
//! document: 001_9a906a2de79e9a63.txt   # the document section the scenario replays
//! topology:
//!   nodes:
//!     - name: node1
//!       address: 192.168.56.11
//!       pods:
//!         - {name: nginx-1, address: 10.217.0.107, serve: {tcp: [80]}}
//! values: {kubeProxyReplacement: true}
//! objects: [ ...Service, EndpointSlice and Pod YAML... ]
//! steps:
//!   - connect: {from: node1, to: "10.104.239.135:80", times: 20}
//!     expect: {answered_by: [nginx-1, nginx-2], peer_name: "10.104.239.135:80"}
//! ```

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use serde::Deserialize;

/// One scenario file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// The scenario's name (the file's stem).
    pub name: String,
    /// The document (and section) it replays.
    pub document: String,
    /// What it shows, in a sentence.
    #[serde(default)]
    pub description: String,
    /// Nodes, their pods and servers.
    pub topology: Topology,
    /// Agent options, with the documents' Helm value names; applied to every node.
    #[serde(default)]
    pub values: serde_yaml::Mapping,
    /// Kubernetes objects (Service, EndpointSlice, Pod); the runner adds a Node per node.
    #[serde(default)]
    pub objects: Vec<serde_yaml::Value>,
    /// What happens, in order.
    pub steps: Vec<Step>,
    /// Kernel features the scenario needs beyond what the agent itself needs (names of
    /// [`lb::host::features::Feature`]); on a kernel that lacks one the `kernel` backend reports
    /// the scenario unsupported instead of running it.
    #[serde(default)]
    pub requires: Vec<String>,
}

/// The machines of a scenario.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// The nodes, each running an agent.
    pub nodes: Vec<NodeSpec>,
}

/// A node: a host namespace with an `eth0` on the shared segment, running an agent.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    /// Node name (also the Kubernetes Node's name).
    pub name: String,
    /// IPv4 address of its eth0 (the InternalIP).
    pub address: IpAddr,
    /// IPv6 address of its eth0, for dual-stack scenarios.
    #[serde(default)]
    pub address6: Option<IpAddr>,
    /// Servers in the node's host namespace (host-network workloads).
    #[serde(default)]
    pub serve: Serve,
    /// Sysctls of the node's namespace set before its agent starts (`net.ipv4.…`).
    #[serde(default)]
    pub sysctls: BTreeMap<String, String>,
    /// Pods on this node.
    #[serde(default)]
    pub pods: Vec<PodSpec>,
}

/// A pod: a network namespace behind its node, in the node's cgroup subtree.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodSpec {
    /// Pod name; servers answer with it.
    pub name: String,
    /// IPv4 address.
    pub address: IpAddr,
    /// IPv6 address.
    #[serde(default)]
    pub address6: Option<IpAddr>,
    /// Servers it runs.
    #[serde(default)]
    pub serve: Serve,
}

/// Identity servers: each answers with its owner's name and the peer address it saw.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Serve {
    /// TCP ports.
    #[serde(default)]
    pub tcp: Vec<u16>,
    /// UDP ports.
    #[serde(default)]
    pub udp: Vec<u16>,
}

/// Transport of a client call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    /// A TCP connection.
    #[default]
    Tcp,
    /// A connected UDP socket: connect, send, recv.
    UdpConnected,
    /// An unconnected UDP socket: sendto, recvfrom.
    UdpUnconnected,
}

/// One step.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Open a connection (or send a datagram) and read the answer.
    #[serde(default)]
    pub connect: Option<Connect>,
    /// Bind a socket.
    #[serde(default)]
    pub bind: Option<Bind>,
    /// Read a sysctl in a node's namespace.
    #[serde(default)]
    pub sysctl: Option<SysctlRead>,
    /// Replace objects (matched by kind, namespace and name) or add them, then let the agents
    /// reconcile.
    #[serde(default)]
    pub apply: Vec<serde_yaml::Value>,
    /// Delete objects, `Kind/namespace/name`, then let the agents reconcile.
    #[serde(default)]
    pub delete: Vec<String>,
    /// Restart the agent of these nodes.
    #[serde(default)]
    pub restart_agent: Vec<String>,
    /// Let this much time pass (the simulator's clock; the kernel backend really waits).
    #[serde(default)]
    pub wait_seconds: Option<u64>,
    /// What must be observed.
    #[serde(default)]
    pub expect: Expect,
}

/// A client call.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Connect {
    /// A node (its host namespace) or a pod.
    pub from: String,
    /// The address the application uses.
    pub to: SocketAddr,
    /// TCP, or UDP connected or not.
    #[serde(default)]
    pub transport: Transport,
    /// How many times (each a fresh socket).
    #[serde(default = "one")]
    pub times: usize,
}

fn one() -> usize {
    1
}

/// A sysctl to read.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SysctlRead {
    /// The node.
    pub on: String,
    /// Its name, e.g. `net.ipv4.ip_local_reserved_ports`.
    pub key: String,
}

/// A bind.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bind {
    /// A node (its host namespace) or a pod.
    pub on: String,
    /// The local address.
    pub addr: SocketAddr,
    /// `tcp` or `udp`.
    #[serde(default)]
    pub transport: Transport,
}

/// What a step must show. Unset fields are not checked.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Every answer came from one of these, and (with `times` > 1) each of them answered at
    /// least once.
    #[serde(default)]
    pub answered_by: Option<Vec<String>>,
    /// Every answer came from the same one of these.
    #[serde(default)]
    pub sticky: Option<bool>,
    /// The address the application sees as its peer (getpeername, or recvfrom's source).
    #[serde(default)]
    pub peer_name: Option<SocketAddr>,
    /// The call fails with this error: `EPERM`, `ECONNREFUSED`, `unreachable`; or `none`.
    #[serde(default)]
    pub error: Option<String>,
    /// The sysctl read has this value (surrounding whitespace ignored).
    #[serde(default)]
    pub value: Option<String>,
    /// `lbctl service list` on this node has these frontends (`ADDR:PORT[/i]` as listed).
    #[serde(default)]
    pub frontends: Option<BTreeMap<String, Vec<String>>>,
}

impl Scenario {
    /// Reads a scenario file; errors name the file and the place in it.
    pub fn load(path: &Path) -> anyhow::Result<Scenario> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let scenario: Scenario =
            serde_yaml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        for (i, step) in scenario.steps.iter().enumerate() {
            let actions = usize::from(step.connect.is_some())
                + usize::from(step.bind.is_some())
                + usize::from(step.sysctl.is_some())
                + usize::from(!step.apply.is_empty() || !step.delete.is_empty())
                + usize::from(!step.restart_agent.is_empty())
                + usize::from(step.wait_seconds.is_some());
            if actions > 1 {
                anyhow::bail!(
                    "{}: step {}: one action per step (connect, bind, sysctl, apply/delete, restart_agent, wait_seconds)",
                    path.display(),
                    i + 1
                );
            }
        }
        for name in &scenario.requires {
            if lb::host::features::Feature::from_name(name).is_none() {
                let known: Vec<&str> = lb::host::features::Feature::ALL
                    .iter()
                    .map(|f| f.name())
                    .collect();
                anyhow::bail!(
                    "{}: requires: unknown feature {name:?}; known: {}",
                    path.display(),
                    known.join(", ")
                );
            }
        }
        Ok(scenario)
    }
}
