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
//!   # A socket held across steps: opened (connect and a first exchange), used, closed.
//!   - open: {id: c1, from: client, to: "10.104.239.135:80", transport: tcp}
//!     expect: {answered_by: [nginx-1, nginx-2]}
//!   - send: {id: c1}
//!     expect: {peer_name: "10.104.239.135:80"}
//!   - close: {id: c1}
//! ```

use std::collections::{BTreeMap, BTreeSet};
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
    /// Kernel features every agent treats as missing although the kernel has them (names of
    /// [`lb::host::features::Feature`], through the agent's `LB_ASSUME_MISSING_FEATURES`): the
    /// degraded modes of older kernels, shown on any kernel.
    #[serde(default)]
    pub assume_missing: Vec<String>,
}

/// The machines of a scenario.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// The nodes, each running an agent.
    pub nodes: Vec<NodeSpec>,
    /// Hosts outside the cluster on the nodes' segment: no agent, no Kubernetes Node; the
    /// clients of north-south traffic.
    #[serde(default)]
    pub externals: Vec<ExternalSpec>,
}

/// A host outside the cluster: a namespace with an `eth0` on the nodes' segment.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalSpec {
    /// Its name, as steps' `from` uses it.
    pub name: String,
    /// IPv4 address of its eth0.
    pub address: IpAddr,
    /// IPv6 address of its eth0.
    #[serde(default)]
    pub address6: Option<IpAddr>,
    /// The segment its one device is on: 0, the nodes' eth0 segment (the default), or 1, the
    /// segment of the nodes' `eth1` (there the device is named eth1, and `address` is on it).
    #[serde(default)]
    pub segment: Segment,
    /// Routes beyond the segment, as a router announcing LoadBalancer IPs would install:
    /// `{to: CIDR, via: ADDRESS}` with a node's address as the next hop.
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
}

/// One of the two segments netsim joins hosts with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "u8")]
pub enum Segment {
    /// The first: every node's eth0.
    #[default]
    First,
    /// The second: the eth1 of the nodes that have one.
    Second,
}

impl TryFrom<u8> for Segment {
    type Error = String;

    fn try_from(n: u8) -> Result<Segment, String> {
        match n {
            0 => Ok(Segment::First),
            1 => Ok(Segment::Second),
            _ => Err(format!(
                "segment {n}: accepted are 0 (the nodes' eth0) and 1 (their eth1)"
            )),
        }
    }
}

/// A route of an external host.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// The destination.
    pub to: ipnet::IpNet,
    /// The next hop, an address on the segment.
    pub via: IpAddr,
}

/// A changed route of an external host.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reroute {
    /// The external host.
    pub on: String,
    /// The destination, as in one of its `routes`.
    pub to: ipnet::IpNet,
    /// The new next hop, an address on the segment.
    pub via: IpAddr,
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
    /// The node's pod CIDRs: the other nodes route them via this node's eth0, so pods on
    /// different nodes reach each other as with a native-routing CNI.
    #[serde(default)]
    pub pod_cidrs: Vec<ipnet::IpNet>,
    /// Sysctls of the node's namespace set before its agent starts (`net.ipv4.…`).
    #[serde(default)]
    pub sysctls: BTreeMap<String, String>,
    /// Pods on this node.
    #[serde(default)]
    pub pods: Vec<PodSpec>,
    /// The MTU of its eth0 (and of the segment's end of its link), instead of 1500: above
    /// about 3500 a veth refuses native XDP.
    #[serde(default)]
    pub mtu: Option<u32>,
    /// IPv4 address of a second device, `eth1`, on the second segment (a /24 there): a node
    /// with two NodePort devices. Not a Kubernetes address of the Node.
    #[serde(default)]
    pub eth1: Option<IpAddr>,
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
    /// The MTU of its veth (both ends), instead of 1500: its node answers a larger packet it
    /// would forward to the pod with an ICMP fragmentation needed (packet too big).
    #[serde(default)]
    pub mtu: Option<u32>,
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
    /// Open a socket that stays open across steps, and make a first exchange on it.
    #[serde(default)]
    pub open: Option<Open>,
    /// One more exchange on a held socket.
    #[serde(default)]
    pub send: Option<SocketRef>,
    /// Close a held socket.
    #[serde(default)]
    pub close: Option<SocketRef>,
    /// Bind a socket.
    #[serde(default)]
    pub bind: Option<Bind>,
    /// Read a sysctl in a node's namespace.
    #[serde(default)]
    pub sysctl: Option<SysctlRead>,
    /// Probe the path MTU to a destination as an application doing path MTU discovery.
    #[serde(default)]
    pub pmtu: Option<PmtuProbe>,
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
    /// An external host's route now leads elsewhere, as when the router in front of the nodes
    /// moves a LoadBalancer IP's next hop to another node (a node failed, ECMP rehashed).
    #[serde(default)]
    pub reroute: Option<Reroute>,
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
    /// One call per port, in order, each from a fresh socket bound to that source port (UDP
    /// only, and not with `times`): the same flows again, e.g. through another node. The
    /// worlds get one call at a time, each with its one port here.
    #[serde(default)]
    pub source_ports: Vec<u16>,
}

fn one() -> usize {
    1
}

/// A path MTU probe: a connected UDP socket with `IP_MTU_DISCOVER` = `IP_PMTUDISC_DO` sends
/// datagrams of `size` bytes (IP packets, headers included) to `to` until a send fails with
/// `EMSGSIZE` or the client's deadline passes, then reads its `IP_MTU` (`IPV6_MTU`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PmtuProbe {
    /// An external host (the simulator models no other).
    pub from: String,
    /// The destination.
    pub to: SocketAddr,
    /// The IP packet size sent.
    pub size: usize,
}

/// Transport of a held socket: one that has a connection to keep.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HeldTransport {
    /// A TCP connection: the first exchange is the server's greeting, then a line each way.
    #[default]
    Tcp,
    /// A connected UDP socket: a datagram and its answer per exchange.
    UdpConnected,
}

impl From<HeldTransport> for Transport {
    fn from(t: HeldTransport) -> Transport {
        match t {
            HeldTransport::Tcp => Transport::Tcp,
            HeldTransport::UdpConnected => Transport::UdpConnected,
        }
    }
}

/// A socket opened now and used by later steps under its `id`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Open {
    /// The name later steps use for it.
    pub id: String,
    /// A node (its host namespace) or a pod.
    pub from: String,
    /// The address the application connects to.
    pub to: SocketAddr,
    /// `tcp` or `udp-connected`.
    #[serde(default)]
    pub transport: HeldTransport,
}

/// A held socket, by the `id` it was opened with.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SocketRef {
    /// The `open` step's id.
    pub id: String,
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
    /// Set `IPV6_V6ONLY` on the socket before binding (an IPv6 address only): it takes no
    /// IPv4 traffic.
    #[serde(default)]
    pub v6only: bool,
}

/// What a step must show. Unset fields are not checked.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Every answer came from one of these, and (with `times` > 1) each of them answered at
    /// least once.
    #[serde(default)]
    pub answered_by: Option<Vec<String>>,
    /// Who answered each call, in order (a connect's `source_ports` or its `times` calls):
    /// which backend each flow reached.
    #[serde(default)]
    pub answers: Option<Vec<String>>,
    /// Every answer came from the same one of these.
    #[serde(default)]
    pub sticky: Option<bool>,
    /// The address the application sees as its peer (getpeername, or recvfrom's source).
    #[serde(default)]
    pub peer_name: Option<SocketAddr>,
    /// The source address the answering server saw (the client's own address where it is
    /// preserved, a node's where the flow was source-NATed); the port is not checked.
    #[serde(default)]
    pub seen_source: Option<IpAddr>,
    /// Per backend, the source address it saw on every call it answered: where one call's
    /// source is preserved and another's is source-NATed depending on the backend chosen
    /// (externalTrafficPolicy=Cluster with a local and a remote backend). A call answered by a
    /// backend not named here fails the check.
    #[serde(default)]
    pub seen_sources: Option<BTreeMap<String, IpAddr>>,
    /// The call fails with this error: `EPERM`; `ECONNREFUSED` (refused: a reset, or ICMP port
    /// unreachable on a connected UDP socket); `timeout` (no answer before the deadline:
    /// ETIMEDOUT, EAGAIN from a receive timeout, a connect still in progress); `unreachable`
    /// (EHOSTUNREACH, ENETUNREACH: no route); another errno by name (`ECONNABORTED`,
    /// `EDESTADDRREQ`); or `none`.
    #[serde(default)]
    pub error: Option<String>,
    /// After a `pmtu` probe, the path MTU the socket reports.
    #[serde(default)]
    pub path_mtu: Option<u32>,
    /// The sysctl read has this value (surrounding whitespace ignored).
    #[serde(default)]
    pub value: Option<String>,
    /// `lbctl service list` on this node has these frontends (`ADDR:PORT[/i]` as listed).
    #[serde(default)]
    pub frontends: Option<BTreeMap<String, Vec<String>>>,
    /// The packet programs' drop counters that have counted on this node since it started
    /// (`lbctl status --verbose`'s `Packet Drops`, by name: `snat_exhausted`, `no_backend`, …),
    /// exactly these, in any order; an empty list says none.
    #[serde(default)]
    pub drops: Option<BTreeMap<String, Vec<String>>>,
    /// The neighbour entries this node's agent pushed for the other nodes' next hops
    /// (`IP dev DEVICE`, in any order), each externally learned and resolved by the kernel.
    #[serde(default)]
    pub neighbours: Option<BTreeMap<String, Vec<String>>>,
    /// With `lbctl monitor -t trace-sock` running on the caller's node during a `connect`
    /// (`times: 1`), the events of the caller's cgroup, in order; each must carry the call's
    /// protocol and one socket cookie.
    #[serde(default)]
    pub trace: Option<Vec<TraceExpect>>,
}

/// One expected trace-sock event.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceExpect {
    /// `pre-xlate-fwd`, `post-xlate-fwd`, `pre-xlate-rev` or `post-xlate-rev`.
    pub event: TraceKind,
    /// The address the event shows.
    pub dst: SocketAddr,
}

/// The trace-sock event kinds, named as `lbctl monitor` prints them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TraceKind {
    /// Before the forward translation (connect, sendmsg): the service address.
    PreXlateFwd,
    /// After it: the backend chosen.
    PostXlateFwd,
    /// Before the reverse translation (recvmsg, getpeername): the backend address.
    PreXlateRev,
    /// After it: the service address the application sees.
    PostXlateRev,
}

impl TraceKind {
    /// The name in monitor lines.
    pub fn name(self) -> &'static str {
        match self {
            TraceKind::PreXlateFwd => "pre-xlate-fwd",
            TraceKind::PostXlateFwd => "post-xlate-fwd",
            TraceKind::PreXlateRev => "pre-xlate-rev",
            TraceKind::PostXlateRev => "post-xlate-rev",
        }
    }
}

impl Scenario {
    /// Reads a scenario file; errors name the file and the place in it.
    pub fn load(path: &Path) -> anyhow::Result<Scenario> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let scenario: Scenario =
            serde_yaml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let mut open: BTreeSet<&str> = BTreeSet::new();
        for (i, step) in scenario.steps.iter().enumerate() {
            let at = || format!("{}: step {}", path.display(), i + 1);
            let actions = usize::from(step.connect.is_some())
                + usize::from(step.open.is_some())
                + usize::from(step.send.is_some())
                + usize::from(step.close.is_some())
                + usize::from(step.bind.is_some())
                + usize::from(step.sysctl.is_some())
                + usize::from(step.pmtu.is_some())
                + usize::from(!step.apply.is_empty() || !step.delete.is_empty())
                + usize::from(!step.restart_agent.is_empty())
                + usize::from(step.reroute.is_some())
                + usize::from(step.wait_seconds.is_some());
            if step.expect.trace.is_some() && step.connect.as_ref().is_none_or(|c| c.times != 1) {
                anyhow::bail!(
                    "{}: step {}: expect.trace goes with a connect of times: 1",
                    path.display(),
                    i + 1
                );
            }
            if let Some(c) = &step.connect {
                if !c.source_ports.is_empty() && (c.times != 1 || c.transport == Transport::Tcp) {
                    anyhow::bail!(
                        "{}: connect.source_ports: one UDP call per port (transport udp-connected \
                         or udp-unconnected), without times",
                        at()
                    );
                }
            }
            if let Some(name) = &step.expect.error {
                if let Some(why) = crate::world::CallError::unusable_name(name) {
                    anyhow::bail!("{}: expect.error: {why}", at());
                }
            }
            if actions > 1 {
                anyhow::bail!(
                    "{}: one action per step (connect, open, send, close, bind, sysctl, pmtu, apply/delete, restart_agent, reroute, wait_seconds)",
                    at()
                );
            }
            if let Some(o) = &step.open {
                if !open.insert(o.id.as_str()) {
                    anyhow::bail!("{}: open.id: socket {:?} is already open", at(), o.id);
                }
            }
            for (field, r) in [("send.id", &step.send), ("close.id", &step.close)] {
                let Some(r) = r else { continue };
                if !open.contains(r.id.as_str()) {
                    anyhow::bail!(
                        "{}: {field}: no socket {:?} is open here (open ones: {})",
                        at(),
                        r.id,
                        if open.is_empty() {
                            "none".to_owned()
                        } else {
                            open.iter().copied().collect::<Vec<_>>().join(", ")
                        }
                    );
                }
            }
            if let Some(r) = &step.close {
                open.remove(r.id.as_str());
            }
            if let Some(b) = step.bind.as_ref().filter(|b| b.v6only && b.addr.is_ipv4()) {
                anyhow::bail!(
                    "{}: bind.v6only: IPV6_V6ONLY is for an IPv6 address, not {}",
                    at(),
                    b.addr
                );
            }
        }
        for name in scenario.requires.iter().chain(&scenario.assume_missing) {
            if lb::host::features::Feature::from_name(name).is_none() {
                let known: Vec<&str> = lb::host::features::Feature::ALL
                    .iter()
                    .map(|f| f.name())
                    .collect();
                anyhow::bail!(
                    "{}: unknown feature {name:?} (in requires or assume_missing); known: {}",
                    path.display(),
                    known.join(", ")
                );
            }
        }
        Ok(scenario)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loads a scenario whose steps are `steps` (YAML), from a file of its own.
    fn load_steps(test: &str, steps: &str) -> anyhow::Result<Scenario> {
        let path = std::env::temp_dir().join(format!(
            "lb-scenario-spec-{test}-{}.yaml",
            std::process::id()
        ));
        let text = format!(
            "name: {test}\ndocument: x\ntopology: {{nodes: [{{name: n1, address: 192.168.56.11}}]}}\nsteps:\n{steps}"
        );
        std::fs::write(&path, text).unwrap();
        let result = Scenario::load(&path);
        std::fs::remove_file(&path).unwrap();
        result
    }

    const OPEN: &str =
        "  - open: {id: c1, from: n1, to: \"10.0.0.1:53\", transport: udp-connected}\n";

    #[test]
    fn v6only_goes_with_an_ipv6_bind_only() {
        let s = load_steps(
            "v6only",
            "  - bind: {on: n1, addr: \"[::]:31940\", v6only: true}\n  - bind: {on: n1, addr: \"[::]:31940\"}\n",
        )
        .unwrap();
        let v6only: Vec<bool> = s
            .steps
            .iter()
            .map(|st| st.bind.as_ref().unwrap().v6only)
            .collect();
        assert_eq!(v6only, [true, false]);
        let e = load_steps(
            "v6only-v4",
            "  - bind: {on: n1, addr: \"0.0.0.0:31940\", v6only: true}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains(
                "step 1: bind.v6only: IPV6_V6ONLY is for an IPv6 address, not 0.0.0.0:31940"
            ),
            "{e}"
        );
    }

    #[test]
    fn an_external_is_on_segment_0_or_1_and_a_node_may_have_an_eth1() {
        let load = |test: &str, topology: &str| {
            let path = std::env::temp_dir().join(format!(
                "lb-scenario-spec-{test}-{}.yaml",
                std::process::id()
            ));
            let text = format!("name: {test}\ndocument: x\ntopology: {topology}\nsteps: []\n");
            std::fs::write(&path, text).unwrap();
            let result = Scenario::load(&path);
            std::fs::remove_file(&path).unwrap();
            result
        };
        let s = load(
            "segments",
            "{nodes: [{name: n1, address: 192.168.56.11, eth1: 172.16.0.11}], externals: \
             [{name: a, address: 192.168.56.100}, {name: b, address: 172.16.0.100, segment: 1}]}",
        )
        .unwrap();
        assert_eq!(s.topology.nodes[0].eth1, Some([172, 16, 0, 11].into()));
        let segments: Vec<Segment> = s.topology.externals.iter().map(|e| e.segment).collect();
        assert_eq!(segments, [Segment::First, Segment::Second]);
        let e = load(
            "segment-2",
            "{nodes: [{name: n1, address: 192.168.56.11}], externals: \
             [{name: b, address: 172.16.0.100, segment: 2}]}",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("segment 2: accepted are 0 (the nodes' eth0) and 1 (their eth1)"),
            "{e}"
        );
    }

    #[test]
    fn held_sockets_open_send_and_close_by_id() {
        let s = load_steps(
            "ok",
            &format!("{OPEN}  - send: {{id: c1}}\n    expect: {{error: ECONNABORTED}}\n  - close: {{id: c1}}\n{OPEN}"),
        )
        .unwrap();
        assert_eq!(s.steps.len(), 4);
        assert_eq!(
            s.steps[0].open.as_ref().unwrap().transport,
            HeldTransport::UdpConnected
        );
    }

    #[test]
    fn a_send_to_an_unknown_or_closed_id_names_the_file_step_and_field() {
        let e = load_steps("unknown", &format!("{OPEN}  - send: {{id: c2}}\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("lb-scenario-spec-unknown"), "{e}");
        assert!(
            e.contains("step 2: send.id: no socket \"c2\" is open here (open ones: c1)"),
            "{e}"
        );
        let e = load_steps(
            "closed",
            &format!("{OPEN}  - close: {{id: c1}}\n  - close: {{id: c1}}\n"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("step 3: close.id: no socket \"c1\" is open here (open ones: none)"),
            "{e}"
        );
    }

    #[test]
    fn an_id_opened_twice_is_refused() {
        let e = load_steps("twice", &format!("{OPEN}{OPEN}"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("step 2: open.id: socket \"c1\" is already open"),
            "{e}"
        );
    }

    #[test]
    fn open_refuses_unknown_fields_and_unconnected_udp() {
        let e = load_steps(
            "field",
            "  - open: {id: c1, from: n1, to: \"10.0.0.1:53\", times: 2}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("unknown field `times`"), "{e}");
        let e = load_steps(
            "transport",
            "  - open: {id: c1, from: n1, to: \"10.0.0.1:53\", transport: udp-unconnected}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("udp-unconnected") && e.contains("`udp-connected`"),
            "{e}"
        );
    }

    #[test]
    fn an_error_the_runner_never_reports_is_refused_naming_the_kind_to_write() {
        for (name, kind) in [("ETIMEDOUT", "timeout"), ("EHOSTUNREACH", "unreachable")] {
            let e = load_steps(
                "error-kind",
                &format!("  - connect: {{from: n1, to: \"10.0.0.1:80\"}}\n    expect: {{error: {name}}}\n"),
            )
            .unwrap_err()
            .to_string();
            assert!(
                e.contains(&format!(
                    "step 1: expect.error: {name} is reported as `{kind}`"
                )),
                "{e}"
            );
        }
        let e = load_steps(
            "error-unknown",
            "  - connect: {from: n1, to: \"10.0.0.1:80\"}\n    expect: {error: refused}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("unknown error \"refused\"; accepted: EPERM"),
            "{e}"
        );
        for name in [
            "timeout",
            "unreachable",
            "ECONNREFUSED",
            "ECONNABORTED",
            "none",
        ] {
            load_steps(
                "error-ok",
                &format!("  - connect: {{from: n1, to: \"10.0.0.1:80\"}}\n    expect: {{error: {name}}}\n"),
            )
            .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        }
    }
}
