//! The `sim` backend: every node's agent translates the objects in-process and lays out its
//! maps with the same code as the real agent; socket calls run through the simulator of the
//! socket hooks; the world around (who owns which address, who listens) is modelled here.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use lb::agent::udp_destroy::SweepScope;
use lb::datapath::sim::{HeldSocket, SimConfig, SockCall, SockSim};
use lb::datapath::{MapContents, RemovedBackends};
use lb::host::sock_diag::Support;
use lb::k8s::NodeDevice;
use lb::model::L4Protocol;
use lb::model::ServiceName;
use lb::offline::{self, DeviceArg, OfflineInputs};
use lb::views::{KprStatus, ServiceList, TraceSockEvent};

use crate::files::ScenarioFiles;
use crate::spec::{Bind, Connect, Open, Scenario, Serve, Transport};
use crate::world::{Answer, CallError, NodeViews, Traced, World};

const LOCAL_PORT_RANGE: &str = "net.ipv4.ip_local_port_range";
const RESERVED_PORTS: &str = "net.ipv4.ip_local_reserved_ports";

/// A fresh network namespace's values of the sysctls the agent uses.
fn default_sysctls() -> BTreeMap<String, String> {
    [
        (LOCAL_PORT_RANGE.to_owned(), "32768\t60999".to_owned()),
        (RESERVED_PORTS.to_owned(), String::new()),
    ]
    .into_iter()
    .collect()
}

/// The initial network namespace's cookie in the model (no scenario process lives there).
const INITIAL_NETNS: u64 = 1;

struct SimNode {
    name: String,
    netns: u64,
    addresses: Vec<IpAddr>,
    serve: Serve,
    /// The sysctls the agent reads and writes.
    sysctls: BTreeMap<String, String>,
    /// Routed to from the other nodes.
    pod_cidrs: Vec<ipnet::IpNet>,
    /// The node's datapath, once its agent has loaded it.
    sim: Option<SockSim>,
    maps: MapContents,
    /// What its agent records for `lbctl`: service names by frontend id, and its status.
    names: BTreeMap<u16, ServiceName>,
    status: Option<KprStatus>,
}

/// A socket a scenario holds open, on the node whose hooks translated it.
struct SimHeld {
    node: usize,
    from: String,
    transport: Transport,
    socket: HeldSocket,
}

struct SimPod {
    node: usize,
    netns: u64,
    addresses: Vec<IpAddr>,
    serve: Serve,
}

/// The simulated world of one scenario.
pub struct SimWorld {
    files: ScenarioFiles,
    nodes: Vec<SimNode>,
    pods: BTreeMap<String, SimPod>,
    held: BTreeMap<String, SimHeld>,
    next_socket: u64,
}

impl std::fmt::Debug for SimWorld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimWorld").finish_non_exhaustive()
    }
}

impl SimWorld {
    /// Builds the world and programs every node with the scenario's objects.
    pub fn new(scenario: &Scenario) -> Result<Self> {
        let files = ScenarioFiles::create(scenario, "sim")?;
        let mut nodes = Vec::new();
        let mut pods = BTreeMap::new();
        let mut netns = INITIAL_NETNS;
        for (i, spec) in scenario.topology.nodes.iter().enumerate() {
            netns += 1;
            let addresses: Vec<IpAddr> = [Some(spec.address), spec.address6]
                .into_iter()
                .flatten()
                .collect();
            nodes.push(SimNode {
                name: spec.name.clone(),
                netns,
                addresses,
                serve: spec.serve.clone(),
                sysctls: default_sysctls()
                    .into_iter()
                    .chain(spec.sysctls.clone())
                    .collect(),
                pod_cidrs: spec.pod_cidrs.clone(),
                sim: None,
                maps: MapContents::default(),
                names: BTreeMap::new(),
                status: None,
            });
            for pod in &spec.pods {
                netns += 1;
                pods.insert(
                    pod.name.clone(),
                    SimPod {
                        node: i,
                        netns,
                        addresses: [Some(pod.address), pod.address6]
                            .into_iter()
                            .flatten()
                            .collect(),
                        serve: pod.serve.clone(),
                    },
                );
            }
        }
        let mut world = SimWorld {
            files,
            nodes,
            pods,
            held: BTreeMap::new(),
            next_socket: 1,
        };
        world.set_objects(&crate::runner::initial_objects(scenario))?;
        Ok(world)
    }

    /// Re-runs a node's agent: translate, lay out the maps keeping the ids in place, and load
    /// the programs with the node's options.
    fn program(&mut self, index: usize) -> Result<()> {
        let node = &self.nodes[index];
        let view = offline::render(&OfflineInputs {
            values: Some(self.files.values()),
            sets: Vec::new(),
            manifests: Some(self.files.manifests(&node.name)),
            node: Some(node.name.clone()),
            devices: vec![DeviceArg(NodeDevice {
                name: "eth0".to_owned(),
                addrs: node.addresses.clone(),
            })],
        })
        .with_context(|| format!("agent on {}", node.name))?;
        if view.has_errors() {
            bail!("agent on {}: {}", node.name, view.problems().join("; "));
        }
        let config = &view.config;
        let maps = MapContents::build(&view.translation.state, &node.maps)?;
        let values = config.values();
        let sim_config = SimConfig {
            protocols: config.protocols(),
            host_namespace_only: values.socket_lb.host_namespace_only,
            bind_protection: values.node_port.bind_protection && config.node_port(),
            host_netns_cookie: node.netns,
            external_ip_mitigation: !values.bpf.disable_external_ip_mitigation,
            initial_netns_cookie: INITIAL_NETNS,
        };
        // The agent's sweep after the reconciliation (the kernel's support is assumed): the
        // held UDP sockets of this node's namespaces connected to a removed backend.
        if let Some(scope) = SweepScope::for_config(config) {
            let removed = RemovedBackends::between(&node.maps, &maps, L4Protocol::Udp);
            let host_netns = node.netns;
            for held in self.held.values_mut().filter(|h| h.node == index) {
                if scope == SweepScope::AllNamespaces
                    || held.socket.call().netns_cookie == host_netns
                {
                    held.socket.sweep(&removed);
                }
            }
        }
        let node = &mut self.nodes[index];
        if config.node_port() && values.node_port.auto_protect_port_ranges {
            let (_, reserved) = lb::host::port_range_protection(
                config.node_port_range(),
                &node.sysctls[LOCAL_PORT_RANGE],
                &node.sysctls[RESERVED_PORTS],
            )?;
            if let Some(reserved) = reserved {
                node.sysctls.insert(RESERVED_PORTS.to_owned(), reserved);
            }
        }
        // A restarted agent finds the programs and maps in place (with their reverse and
        // affinity state) and rewrites the service maps.
        let sim = node
            .sim
            .get_or_insert_with(|| SockSim::new(sim_config, MapContents::default()));
        sim.set_maps(maps.clone());
        sim.set_local_addresses(&node.addresses);
        node.names = lb::agent::service_names(&view.translation.state, &maps.frontends());
        // The agent computes its status once, when it starts.
        node.status.get_or_insert_with(|| {
            let mut status = KprStatus::new(&view.config, &view.selection);
            // The simulator models a kernel that can destroy sockets, as the agent reports it.
            if SweepScope::for_config(&view.config).is_some() {
                status.udp_socket_destroy = Some(Support::Available.describe());
            }
            status
        });
        node.maps = maps;
        Ok(())
    }

    /// The node index and netns cookie of a node or pod name.
    fn endpoint(&self, name: &str) -> Result<(usize, u64)> {
        if let Some(i) = self.nodes.iter().position(|n| n.name == name) {
            return Ok((i, self.nodes[i].netns));
        }
        match self.pods.get(name) {
            Some(pod) => Ok((pod.node, pod.netns)),
            None => bail!("no node or pod named {name}"),
        }
    }

    /// Who listens at `addr` for `transport`, seen from `from` (loopback is `from` itself).
    fn listener(
        &self,
        from: &str,
        addr: SocketAddr,
        transport: Transport,
    ) -> Option<Option<String>> {
        let serves = |serve: &Serve| {
            let ports = if transport == Transport::Tcp {
                &serve.tcp
            } else {
                &serve.udp
            };
            ports.contains(&addr.port())
        };
        if addr.ip().is_loopback() {
            let serve = match self.nodes.iter().find(|n| n.name == from) {
                Some(node) => &node.serve,
                None => &self.pods.get(from)?.serve,
            };
            return Some(serves(serve).then(|| from.to_owned()));
        }
        if let Some(node) = self.nodes.iter().find(|n| n.addresses.contains(&addr.ip())) {
            return Some(serves(&node.serve).then(|| node.name.clone()));
        }
        let (name, pod) = self
            .pods
            .iter()
            .find(|(_, p)| p.addresses.contains(&addr.ip()))?;
        // A pod on another node is reached only through a route to that node's pod CIDRs.
        let (caller_node, _) = self.endpoint(from).ok()?;
        if pod.node != caller_node
            && !self.nodes[pod.node]
                .pod_cidrs
                .iter()
                .any(|cidr| cidr.contains(&addr.ip()))
        {
            return None;
        }
        Some(serves(&pod.serve).then(|| name.clone()))
    }

    fn call(&mut self, from: &str, transport: Transport) -> Result<(usize, SockCall)> {
        let (node, netns) = self.endpoint(from)?;
        self.next_socket += 1;
        Ok((
            node,
            SockCall {
                netns_cookie: netns,
                socket_cookie: self.next_socket,
                cgroup_id: cgroup_id(netns),
                protocol: if transport == Transport::Tcp {
                    L4Protocol::Tcp
                } else {
                    L4Protocol::Udp
                },
            },
        ))
    }

    /// What an exchange from `from` with whoever listens at `dst` gives the application.
    fn answer(
        &self,
        from: &str,
        dst: SocketAddr,
        transport: Transport,
        peer_name: SocketAddr,
    ) -> Result<Answer, CallError> {
        match self.listener(from, dst, transport) {
            None => Err(CallError::Unreachable),
            // An unconnected UDP socket is not told of the ICMP port unreachable: its
            // recvfrom times out.
            Some(None) if transport == Transport::UdpUnconnected => Err(CallError::TimedOut),
            Some(None) => Err(CallError::Refused),
            Some(Some(answered_by)) => Ok(Answer {
                answered_by,
                peer_name,
            }),
        }
    }

    fn sim(&mut self, node: usize) -> Result<&mut SockSim> {
        self.nodes[node].sim.as_mut().context("node not programmed")
    }

    /// An exchange on the held socket `id`.
    fn exchange(&mut self, id: &str) -> Result<Result<Answer, CallError>> {
        let held = self
            .held
            .get_mut(id)
            .with_context(|| format!("no socket {id} is open (did its open fail?)"))?;
        let dst = match held.socket.exchange() {
            Ok(dst) => dst,
            Err(errno) => return Ok(Err(CallError::from_errno(errno))),
        };
        let (node, from, transport) = (held.node, held.from.clone(), held.transport);
        let socket = held.socket.clone();
        let peer_name = match socket.peer_name(self.sim(node)?) {
            Ok(p) => p,
            Err(errno) => return Ok(Err(CallError::from_errno(errno))),
        };
        Ok(self.answer(&from, dst, transport, peer_name))
    }
}

/// Every node and pod has a cgroup of its own in the model, numbered after its namespace.
fn cgroup_id(netns: u64) -> u64 {
    1000 + netns
}

impl World for SimWorld {
    fn connect_traced(&mut self, call: &Connect) -> Result<(Result<Answer, CallError>, Traced)> {
        let (node, netns) = self.endpoint(&call.from)?;
        self.sim(node)?.set_monitor(true);
        let result = self.connect(call);
        let sim = self.sim(node)?;
        let events = sim.take_events();
        sim.set_monitor(false);
        Ok((
            result?,
            Traced {
                caller_cgroup: cgroup_id(netns),
                events: events.iter().filter_map(TraceSockEvent::decode).collect(),
            },
        ))
    }

    fn connect(&mut self, call: &Connect) -> Result<Result<Answer, CallError>> {
        let (node, sock) = self.call(&call.from, call.transport)?;
        let sim = self.sim(node)?;
        let dst = sim.connect(&sock, call.to);
        let peer_name = sim.peer_name(&sock, dst);
        Ok(self.answer(&call.from, dst, call.transport, peer_name))
    }

    fn open(&mut self, open: &Open) -> Result<Result<Answer, CallError>> {
        let transport = Transport::from(open.transport);
        let (node, sock) = self.call(&open.from, transport)?;
        let socket = HeldSocket::connect(self.sim(node)?, sock, open.to);
        let dst = socket
            .destination()
            .context("a freshly connected socket has a destination")?;
        if transport == Transport::Tcp {
            // connect() itself fails when nobody accepts, and nothing stays open.
            if let Err(e) = self.answer(&open.from, dst, transport, dst) {
                return Ok(Err(e));
            }
        }
        self.held.insert(
            open.id.clone(),
            SimHeld {
                node,
                from: open.from.clone(),
                transport,
                socket,
            },
        );
        self.exchange(&open.id)
    }

    fn send(&mut self, id: &str) -> Result<Result<Answer, CallError>> {
        self.exchange(id)
    }

    fn close(&mut self, id: &str) -> Result<()> {
        self.held
            .remove(id)
            .map(drop)
            .with_context(|| format!("no socket {id} is open (did its open fail?)"))
    }

    fn bind(&mut self, bind: &Bind) -> Result<Result<(), CallError>> {
        let (node, sock) = self.call(&bind.on, bind.transport)?;
        Ok(self.nodes[node]
            .sim
            .as_ref()
            .context("node not programmed")?
            .bind(&sock, bind.addr)
            .map_err(CallError::from_errno))
    }

    fn set_objects(&mut self, objects: &[serde_yaml::Value]) -> Result<()> {
        for i in 0..self.nodes.len() {
            self.files.write_objects(&self.nodes[i].name, objects)?;
            self.program(i)?;
        }
        Ok(())
    }

    fn restart_agent(&mut self, node: &str) -> Result<()> {
        let (index, _) = self.endpoint(node)?;
        self.program(index)
    }

    fn wait(&mut self, duration: Duration) -> Result<()> {
        for sim in self.nodes.iter_mut().filter_map(|n| n.sim.as_mut()) {
            sim.advance_clock(duration);
        }
        Ok(())
    }

    fn sysctl(&mut self, node: &str, key: &str) -> Result<String> {
        let (index, _) = self.endpoint(node)?;
        self.nodes[index]
            .sysctls
            .get(key)
            .cloned()
            .with_context(|| format!("the simulator does not model sysctl {key}"))
    }

    fn views(&mut self, node: &str) -> Result<NodeViews> {
        let (index, _) = self.endpoint(node)?;
        let node = &self.nodes[index];
        Ok(NodeViews {
            service_list: ServiceList::from_listed(&node.maps.frontends(), &node.names).render(),
            status: node
                .status
                .as_ref()
                .context("node not programmed")?
                .render_verbose(),
        })
    }

    fn frontends(&mut self, node: &str) -> Result<Vec<String>> {
        let (index, _) = self.endpoint(node)?;
        Ok(self.nodes[index]
            .maps
            .frontends()
            .iter()
            .map(|f| f.frontend.to_string())
            .collect())
    }
}
