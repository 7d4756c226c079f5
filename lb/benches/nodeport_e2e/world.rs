//! The bench's topology and what is set up in it.
//!
//! ```text
//!   outside ── seg0 ──┬─ xdp-1 ─────┬── seg1 ── backend ─┬─ be-1
//!   .90.100           ├─ xdp-10000 ─┤          .91.50    └─ be-2
//!                     ├─ tc-1 …     ┤
//!                     ├─ ipt-1 …    ┤
//!                     └─ route ─────┘
//! ```
//!
//! One netsim topology: the outside host on segment 0 (192.168.90.0/24), the backend node on
//! segment 1 (192.168.91.0/24) with two backend pods (10.90.2.0/24), and between them one node
//! per measured path, each on both segments (`eth0`, `eth1`) and nothing else:
//!
//! - `xdp-N`, `tc-N`: `lb-agent --once` with N NodePort services, `devices={eth0,eth1}`,
//!   `loadBalancer.acceleration=native` or `disabled`;
//! - `ipt-N`: no agent; kube-proxy's `nat` rules for the same N services (`services.rs`);
//! - `route`: nothing but forwarding; the outside host routes the backend pods' CIDR through
//!   it, and the backend node routes the outside host back through it.
//!
//! Every path crosses the same devices and bridges (the fabric's ends run netsim's
//! pass-through XDP program and send complete checksums, README "XDP acceleration"), so what
//! differs is the middle node's work. Fields drop in order: the backends' threads, the agents'
//! pins and files (`lbctl cleanup`), then the topology with every namespace and its rules.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ipnet::IpNet;
use netsim::{NodeSpec, Place, PodSpec, Topology};

use crate::agent_files::AgentFiles;
use crate::iptables;
use crate::live::{self, Generator, Program};
use crate::services::{ServiceSet, BACKEND_PORT, NODE_PORT_RANGE};
use crate::traffic::Backends;

/// The iptables backend: nf_tables, Debian's default.
/// How long the agent, or iptables-restore, may take to program a node.
const PROGRAM_DEADLINE: Duration = Duration::from_secs(600);
/// The agent's `bpf.lbMapMax`: 10 000 services have 40 000 frontends (ClusterIP, and the node
/// port on each device's address and on any address), each an entry in `lb_services_v1` per
/// backend and one more; the default, 65 536, holds about 5 000 such services.
const MAP_MAX: u32 = 262_144;
const OUTSIDE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 90, 100);
const BACKEND_NODE: &str = "backend";
const BACKEND_NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 91, 50);
const BACKEND_POD_CIDR: &str = "10.90.2.0/24";
const BACKEND_IPS: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 90, 2, 5), Ipv4Addr::new(10, 90, 2, 6)];

/// What a middle node does with the traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Via {
    /// The agent's programs at XDP (and tc behind them).
    Xdp,
    /// The agent's programs at tc.
    Tc,
    /// kube-proxy's iptables rules.
    Iptables,
    /// Plain forwarding: the client addresses a backend directly.
    Routing,
}

impl Via {
    pub fn label(self) -> &'static str {
        match self {
            Via::Xdp => "XDP",
            Via::Tc => "tc",
            Via::Iptables => "iptables",
            Via::Routing => "routing (limit)",
        }
    }

    fn node_name(self, services: u32) -> String {
        match self {
            Via::Xdp => format!("xdp-{services}"),
            Via::Tc => format!("tc-{services}"),
            Via::Iptables => format!("ipt-{services}"),
            Via::Routing => "route".to_owned(),
        }
    }
}

/// A measured way through: a path and, but for routing, a service count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Variant {
    pub via: Via,
    /// Services programmed (0 for routing).
    pub services: u32,
}

/// One middle node.
struct Middle {
    variant: Variant,
    eth0: Ipv4Addr,
    /// The agent's files, for the agent's nodes.
    agent: Option<AgentFiles>,
    place: Place,
}

/// The bench's world; see the module documentation.
pub struct World {
    backends: Backends,
    middles: Vec<Middle>,
    outside: Place,
    backend_ips: Vec<Ipv4Addr>,
    topology: Topology,
}

impl World {
    /// Builds the topology with a middle node per variant and starts the backends (their
    /// threads pinned to `backend_cpu`).
    pub fn new(variants: &[Variant], backend_cpu: usize) -> Result<World> {
        let mut topology = Topology::new()?;
        let outside = topology
            .add_node(NodeSpec::new("outside").eth0(IpNet::new(OUTSIDE_IP.into(), 24)?))?
            .place()
            .clone();
        let backend = topology.add_node(
            NodeSpec::new(BACKEND_NODE)
                .eth1(IpNet::new(BACKEND_NODE_IP.into(), 24)?)
                .pod_cidr(BACKEND_POD_CIDR.parse()?),
        )?;
        let mut places = Vec::new();
        for (ip, k) in BACKEND_IPS.iter().zip(1..) {
            let pod = topology.add_pod(&backend, PodSpec::new(&format!("be-{k}"), *ip))?;
            places.push((pod.place().clone(), SocketAddrV4::new(*ip, BACKEND_PORT)));
        }
        let mut middles = Vec::new();
        for (&variant, last) in variants.iter().zip(11u8..) {
            let eth0 = Ipv4Addr::new(192, 168, 90, last);
            let eth1 = Ipv4Addr::new(192, 168, 91, last);
            let node = topology.add_node(
                NodeSpec::new(&variant.via.node_name(variant.services))
                    .eth0(IpNet::new(eth0.into(), 24)?)
                    .eth1(IpNet::new(eth1.into(), 24)?),
            )?;
            // Whatever source the node gives a forwarded packet, the backend node answers
            // through it.
            topology.add_route(backend.place(), IpNet::new(eth0.into(), 32)?, eth1.into())?;
            if variant.via == Via::Routing {
                topology.add_route(&outside, BACKEND_POD_CIDR.parse()?, eth0.into())?;
                topology.add_route(
                    backend.place(),
                    IpNet::new(OUTSIDE_IP.into(), 32)?,
                    eth1.into(),
                )?;
            }
            let agent = matches!(variant.via, Via::Xdp | Via::Tc)
                .then(|| agent_files(node.name(), variant.via == Via::Xdp))
                .transpose()?;
            middles.push(Middle {
                variant,
                eth0,
                agent,
                place: node.place().clone(),
            });
        }
        // The request loop's client closes first and so keeps the TIME_WAIT sockets: let it
        // reuse them, from the whole port range.
        iptables::set_sysctl(&outside, "net/ipv4/tcp_tw_reuse", "1")?;
        iptables::set_sysctl(&outside, "net/ipv4/ip_local_port_range", "1024 65000")?;
        let backends = Backends::start(&places, backend_cpu)?;
        Ok(World {
            backends,
            middles,
            outside,
            backend_ips: BACKEND_IPS.to_vec(),
            topology,
        })
    }

    /// The outside host, where the traffic starts.
    pub fn outside(&self) -> &Place {
        &self.outside
    }

    /// The backends' sinks and servers.
    pub fn backends(&self) -> &Backends {
        &self.backends
    }

    fn middle(&self, variant: Variant) -> Result<&Middle> {
        self.middles
            .iter()
            .find(|m| m.variant == variant)
            .with_context(|| format!("no node for {variant:?}"))
    }

    /// Makes the fabric's end of `variant`'s backend-side link (its `eth1`) drop every frame the
    /// node forwards there (`sink`), or pass them on to the backend node again (`!sink`): the
    /// live-frames measurement then costs the injecting CPU the middle node's work and no more
    /// (a veth delivers on the sending CPU, so the bridge, the backend node and the sockets
    /// would otherwise run there too). The node's `eth1` still counts what it forwarded.
    pub fn sink_backend_side(&self, variant: Variant, sink: bool) -> Result<()> {
        let middle = self.middle(variant)?;
        self.topology
            .set_fabric_sink(middle.place.name(), 1, sink)
            .with_context(|| format!("{variant:?}: the fabric's end of eth1 (sink {sink})"))
    }

    /// `count` services on `variant`'s node, over this world's backends.
    fn service_set(&self, middle: &Middle) -> ServiceSet {
        ServiceSet {
            count: middle.variant.services,
            backends: self.backend_ips.clone(),
            backend_node: (BACKEND_NODE.to_owned(), BACKEND_NODE_IP),
            lb_node: (middle.place.name().to_owned(), middle.eth0),
        }
    }

    /// Where the outside host sends to for `variant`: the measured service's node port on
    /// the node's `eth0`, or for routing each backend directly.
    pub fn targets(&self, variant: Variant) -> Result<Vec<SocketAddrV4>> {
        let middle = self.middle(variant)?;
        Ok(match variant.via {
            Via::Routing => self
                .backend_ips
                .iter()
                .map(|&ip| SocketAddrV4::new(ip, BACKEND_PORT))
                .collect(),
            _ => vec![SocketAddrV4::new(
                middle.eth0,
                self.service_set(middle).measured_node_port(),
            )],
        })
    }

    /// Programs `variant`'s node: runs the agent, or loads the iptables rules; nothing for
    /// routing. Returns what it did and how long it took.
    pub fn program(&self, variant: Variant) -> Result<(String, Duration)> {
        let middle = self.middle(variant)?;
        let set = self.service_set(middle);
        let started = Instant::now();
        let what = match (&middle.agent, variant.via) {
            (Some(files), _) => {
                run_agent(files, &middle.place, &set)?;
                format!("lb-agent --once programmed {} services", set.count)
            }
            (None, Via::Iptables) => {
                let rules = load_iptables(&middle.place, &set)?;
                format!("iptables-restore loaded {rules} rules")
            }
            (None, _) => "nothing to program".to_owned(),
        };
        Ok((what, started.elapsed()))
    }

    /// A live-frames generator for `variant`'s node: frames from the outside host to
    /// [`World::targets`], one flow per source port from `first_port`, injected on the node's
    /// `eth0` and counted leaving by its `eth1`. The XDP variant's frames meet the program the
    /// agent attached to `eth0`; every other variant's go to the stack (`XDP_PASS`).
    pub fn live_generator(
        &self,
        variant: Variant,
        first_port: u16,
        flows: u16,
    ) -> Result<Generator> {
        let middle = self.middle(variant)?;
        let program = match (&middle.agent, variant.via) {
            (Some(files), Via::Xdp) => Program::Attached(lb::datapath::xdp_link_path(
                &files
                    .bpf_root()
                    .join(lb::agent::PIN_SUBDIR)
                    .join(lb::datapath::LINKS_DIR),
                "eth0",
            )),
            _ => Program::Pass,
        };
        let outside = live::device(&self.outside, "eth0")?;
        let ingress = live::device(&middle.place, "eth0")?;
        Generator::new(
            &middle.place,
            program,
            (outside, OUTSIDE_IP),
            ingress,
            "eth1",
            &self.targets(variant)?,
            first_port,
            flows,
        )
    }

    /// The topology's prefix, for messages.
    pub fn prefix(&self) -> &str {
        self.topology.prefix()
    }
}

/// An agent's scratch files for `node`, with the values of the XDP or the tc variant.
fn agent_files(node: &str, xdp: bool) -> Result<AgentFiles> {
    let acceleration = if xdp { "native" } else { "disabled" };
    AgentFiles::create(
        &format!("nodeport-e2e-{node}"),
        &format!(
            "kubeProxyReplacement: true\ndevices: [eth0, eth1]\nbpf:\n  lbMapMax: {MAP_MAX}\n\
             nodePort:\n  range: \"{NODE_PORT_RANGE}\"\n\
             loadBalancer:\n  acceleration: {acceleration}\n"
        ),
    )
}

/// `lb-agent --once` in `node` with `set`, its socket hooks on the node's own cgroup.
fn run_agent(files: &AgentFiles, node: &Place, set: &ServiceSet) -> Result<()> {
    files.write_manifests(&set.manifests())?;
    files.run_once(node, node.name(), node.cgroup_path(), PROGRAM_DEADLINE)
}

/// Loads kube-proxy's rules for `set` into `node`'s `nat` table with one `iptables-restore`;
/// returns the rule count.
fn load_iptables(node: &Place, set: &ServiceSet) -> Result<usize> {
    let count = iptables::restore(node, set.iptables_restore(), PROGRAM_DEADLINE)?;
    iptables::shorten_time_wait(node)?;
    Ok(count)
}
