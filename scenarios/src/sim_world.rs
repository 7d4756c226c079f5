//! The `sim` backend: every node's agent translates the objects in-process and lays out its
//! maps with the same code as the real agent; socket calls run through the simulator of the
//! socket hooks; the world around (who owns which address, who listens) is modelled here.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use lb::agent::degrade::{self, KernelFeatures};
use lb::agent::setup;
use lb::agent::udp_destroy::SweepScope;
use lb::datapath::sim::{HeldSocket, PktConfig, PktSim, SimConfig, SockCall, SockSim};
use lb::datapath::{
    MapContents, RemovedBackends, XdpDevice, XdpPolicy, XdpState, REASON_MTU, VETH_XDP_MAX_MTU,
};
use lb::host::sock_diag::Support;
use lb::host::{HostError, Sysctls, LOCAL_PORT_RANGE, RESERVED_PORTS};
use lb::k8s::NodeDevice;
use lb::model::L4Protocol;
use lb::model::ServiceName;
use lb::reconciler::{Reconciler, UdpSocketSweeper};
use lb::source::{ClusterStore, ManifestDir, Source};
use lb::views::{KprStatus, ServiceList, TraceSockEvent};

use crate::files::ScenarioFiles;
use crate::sim_net::{self, Net, NetExternal, NetNode, NodePrograms, Receiver};
use crate::spec::{Bind, Connect, Open, Reroute, Scenario, Segment, Serve, Transport};
use crate::world::{Answer, CallError, NodeViews, Traced, World};

/// A fresh network namespace's values of the sysctls the agent uses.
fn default_sysctls() -> BTreeMap<String, String> {
    [
        (LOCAL_PORT_RANGE.to_owned(), "32768\t60999".to_owned()),
        (RESERVED_PORTS.to_owned(), String::new()),
    ]
    .into_iter()
    .collect()
}

/// A node's sysctls as the model keeps them.
struct ModelSysctls<'a>(&'a mut BTreeMap<String, String>);

impl Sysctls for ModelSysctls<'_> {
    fn read(&mut self, key: &str) -> Result<String, HostError> {
        self.0
            .get(key)
            .cloned()
            .ok_or_else(|| HostError::Unexpected {
                what: key.to_owned(),
                detail: "the simulator does not model this sysctl".to_owned(),
            })
    }

    fn write(&mut self, key: &str, value: &str) -> Result<(), HostError> {
        self.0.insert(key.to_owned(), value.to_owned());
        Ok(())
    }
}

/// The agent's UDP sweep over the sockets a scenario holds open on one node.
struct HeldSweeper<'a> {
    held: Vec<&'a mut HeldSocket>,
    host_netns: u64,
}

impl UdpSocketSweeper for HeldSweeper<'_> {
    fn sweep(
        &mut self,
        scope: SweepScope,
        removed: &RemovedBackends,
        translated: &std::collections::HashSet<(u64, SocketAddr)>,
    ) -> Result<Vec<(u64, SocketAddr)>, String> {
        Ok(self
            .held
            .iter_mut()
            .filter(|h| {
                scope == SweepScope::AllNamespaces || h.call().netns_cookie == self.host_netns
            })
            .filter_map(|h| h.sweep(removed, translated))
            .collect())
    }
}

/// The initial network namespace's cookie in the model (no scenario process lives there).
const INITIAL_NETNS: u64 = 1;

struct SimNode {
    name: String,
    netns: u64,
    /// Its addresses: eth0's, then eth1's.
    addresses: Vec<IpAddr>,
    /// Its eth1's addresses, when it has a second device.
    eth1: Vec<IpAddr>,
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
    /// The MTU of its eth0, when not 1500.
    mtu: Option<u32>,
    /// The neighbour entries its agent keeps for the other nodes (`IP dev DEVICE`, sorted).
    neighbours: Vec<String>,
}

/// A socket a scenario holds open, on the node whose hooks translated it.
impl SimNode {
    /// Its eth0's addresses.
    fn eth0_addresses(&self) -> Vec<IpAddr> {
        let on_eth0 = |a: &&IpAddr| !self.eth1.contains(a);
        self.addresses.iter().filter(on_eth0).copied().collect()
    }
}

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
    /// The topology as packets see it, for clients outside the cluster.
    net: Net,
    /// Each node's tc programs, once its agent has loaded them (`nodePort.enabled`), in the
    /// order of `nodes`. Like pinned maps, they outlive the agent.
    programs: Vec<Option<NodePrograms>>,
    /// The next source port of an external client's socket.
    next_client_port: u16,
    /// The simulated clock, in seconds, as the packet programs read it.
    now_secs: u32,
    held: BTreeMap<String, SimHeld>,
    next_socket: u64,
    /// Kernel features the agents treat as missing (the scenario's `assume_missing`).
    assume_missing: String,
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
            let addresses: Vec<IpAddr> = [Some(spec.address), spec.address6, spec.eth1]
                .into_iter()
                .flatten()
                .collect();
            nodes.push(SimNode {
                name: spec.name.clone(),
                netns,
                addresses,
                eth1: spec.eth1.into_iter().collect(),
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
                mtu: spec.mtu,
                neighbours: Vec::new(),
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
        let net = Net {
            nodes: scenario
                .topology
                .nodes
                .iter()
                .map(|n| NetNode {
                    name: n.name.clone(),
                    addresses: [Some(n.address), n.address6]
                        .into_iter()
                        .flatten()
                        .collect(),
                    eth1: n.eth1.into_iter().collect(),
                    pod_cidrs: n.pod_cidrs.clone(),
                    pods: n
                        .pods
                        .iter()
                        .map(|p| {
                            let addrs = [Some(p.address), p.address6].into_iter().flatten();
                            (p.name.clone(), addrs.collect())
                        })
                        .collect(),
                    pod_mtus: n
                        .pods
                        .iter()
                        .filter_map(|p| Some((p.name.clone(), p.mtu?)))
                        .collect(),
                })
                .collect(),
            externals: scenario
                .topology
                .externals
                .iter()
                .map(|e| NetExternal {
                    name: e.name.clone(),
                    routes: e.routes.iter().map(|r| (r.to, r.via)).collect(),
                    addresses: [Some(e.address), e.address6]
                        .into_iter()
                        .flatten()
                        .collect(),
                    segment: match e.segment {
                        Segment::First => 0,
                        Segment::Second => 1,
                    },
                })
                .collect(),
        };
        let mut world = SimWorld {
            files,
            programs: (0..nodes.len()).map(|_| None).collect(),
            nodes,
            pods,
            net,
            next_client_port: sim_net::FIRST_CLIENT_PORT,
            now_secs: 0,
            held: BTreeMap::new(),
            next_socket: 1,
            assume_missing: scenario.assume_missing.join(","),
        };
        world.set_objects(&crate::runner::initial_objects(scenario))?;
        Ok(world)
    }

    /// Runs a node's agent once, as the kernel backend runs `lb-agent --once`: options parsed,
    /// the manifest directory read into a fresh store and translated for the node, the
    /// agent's start-up decisions ([`lb::agent::setup`]) applied to the modelled node, and the
    /// agent's [`Reconciler`] run over the node's simulated maps. The simulator itself, like
    /// pinned maps, outlives the agent.
    fn program(&mut self, index: usize) -> Result<()> {
        let node = &self.nodes[index];
        let on_node = || format!("agent on {}", node.name);
        let config = lb::config::load(Some(&self.files.values()), &[])
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(on_node)?;
        let mut store = ClusterStore::default();
        let synced = ManifestDir::new(&self.files.manifests(&node.name))
            .and_then(|mut source| source.sync(&mut store))
            .with_context(on_node)?;
        // The node's devices as the agent finds them on a netsim node.
        let mut devices = vec![NodeDevice {
            name: "eth0".to_owned(),
            addrs: node.eth0_addresses(),
        }];
        if !node.eth1.is_empty() {
            devices.push(NodeDevice {
                name: "eth1".to_owned(),
                addrs: node.eth1.clone(),
            });
        }
        let translation =
            lb::k8s::translate_for_node(&config, &store.objects(), Some(&node.name), devices)
                .with_context(on_node)?;
        let problems: Vec<String> = synced
            .errors
            .iter()
            .map(ToString::to_string)
            .chain(
                translation
                    .translation
                    .errors
                    .iter()
                    .map(ToString::to_string),
            )
            .collect();
        if !problems.is_empty() {
            bail!("agent on {}: {}", node.name, problems.join("; "));
        }
        // The simulator models a kernel that can destroy sockets and has every feature but
        // those the scenario says to treat as missing, as the kernel backend's agents do.
        let udp_support = Support::Available;
        let features = KernelFeatures::complete()
            .assuming_missing(&self.assume_missing)
            .with_context(on_node)?;
        let plan = degrade::plan(&config, &features).with_context(on_node)?;
        let settings = setup::datapath_settings(&config, &plan, node.netns);
        let mut reconciler = Reconciler::new(setup::udp_sweep_scope(&config, &plan, &udp_support))
            .with_maglev(lb::agent::nodeport::maglev_settings(&config));
        let status = setup::start_status(&config, &plan, &translation.selection, &udp_support);
        let (host_netns, addresses) = (node.netns, node.addresses.clone());
        let nodeport_devices: Vec<_> = translation
            .selection
            .devices
            .iter()
            .map(|name| {
                let addrs = if name == "eth1" {
                    node.eth1.clone()
                } else {
                    node.eth0_addresses()
                };
                sim_net::device(name, &addrs)
            })
            .collect();
        let neighbours = modelled_neighbours(&config, &store, node);

        let node = &mut self.nodes[index];
        node.neighbours = neighbours;
        setup::protect_ports(&config, &mut ModelSysctls(&mut node.sysctls), None)?;
        let sim = node.sim.get_or_insert_with(|| {
            SockSim::new(SimConfig::of(&settings, INITIAL_NETNS), Default::default())
        });
        sim.set_attached(setup::attaches_socket_hooks(&config).then_some(plan.hooks));
        let mut sweeper = HeldSweeper {
            held: self
                .held
                .values_mut()
                .filter(|h| h.node == index)
                .map(|h| &mut h.socket)
                .collect(),
            host_netns,
        };
        // The selected NodePort devices, as the agent attaches to them on a netsim node.
        let devices = if config.node_port() {
            nodeport_devices
        } else {
            Vec::new()
        };
        reconciler.reconcile(
            &translation.translation.state,
            &addresses,
            &devices,
            sim,
            &mut sweeper,
        )?;
        node.names = reconciler.service_names().clone();
        node.maps = sim.maps().clone();
        let mut status = status;
        let xdp = match lb::agent::nodeport::xdp_policy(&config) {
            Some(policy) if config.node_port() => {
                // netsim gives all of a node's devices its MTU, so they take XDP alike.
                let state = device_xdp(node.mtu);
                if let (XdpPolicy::Native, XdpState::Skipped { reason }) = (policy, &state) {
                    bail!(
                        "agent on {}: device {} refuses native XDP: {reason} \
                         (loadBalancer.acceleration=native; best-effort leaves such devices \
                         to tc)",
                        node.name,
                        devices.first().map_or("eth0", |d| d.name.as_str())
                    );
                }
                status.xdp_devices = devices
                    .iter()
                    .map(|d| XdpDevice {
                        device: d.name.clone(),
                        state: state.clone(),
                    })
                    .collect();
                state == XdpState::Native
            }
            _ => false,
        };
        node.status = Some(status);
        if config.node_port() {
            let maps = node.maps.clone();
            let attached: Vec<u32> = sim.devices().keys().copied().collect();
            let devices = sim
                .devices()
                .iter()
                .map(|(&ifindex, d)| (ifindex, d.map_value()))
                .collect();
            let settings = PktConfig::from(&lb::agent::nodeport::nodeport_settings(&config));
            let fib = Box::new(self.net.fib(index));
            let now = self.now_secs;
            let pods = lb::agent::nodeport::balances_pods_at_tc(&config);
            let programs = self.programs[index].get_or_insert_with(|| {
                let mut pkt = PktSim::new(settings, MapContents::default(), fib);
                pkt.set_now(now);
                NodePrograms {
                    pkt,
                    xdp,
                    pods,
                    attached: Vec::new(),
                }
            });
            programs.xdp = xdp;
            programs.pods = pods;
            programs.attached = attached;
            programs.pkt.set_maps(maps);
            programs.pkt.set_local_addresses(&addresses);
            programs.pkt.set_devices(devices);
        } else {
            // An agent without NodePort handling removes an earlier agent's programs.
            self.programs[index] = None;
        }
        Ok(())
    }

    /// A call from a host outside the cluster: its first frame carried through the nodes'
    /// programs to whoever owns its destination then, and that one's answer carried back.
    fn connect_external(&mut self, call: &Connect) -> Result<Result<Answer, CallError>> {
        let client_ip = self
            .net
            .external_address(&call.from, call.to.ip())
            .with_context(|| format!("{} has no address of {}'s family", call.from, call.to))?;
        self.connect_by_packets(Receiver::External(call.from.clone()), client_ip, call)
    }

    /// A call carried as packets from `from` (an external host, or a pod whose interface runs
    /// the pod programs) at `client_ip`.
    fn connect_by_packets(
        &mut self,
        from: Receiver,
        client_ip: IpAddr,
        call: &Connect,
    ) -> Result<Result<Answer, CallError>> {
        let port = match call.source_ports.first() {
            Some(&port) => port,
            None => {
                let port = self.next_client_port;
                self.next_client_port = port.wrapping_add(1).max(sim_net::FIRST_CLIENT_PORT);
                port
            }
        };
        let client = SocketAddr::new(client_ip, port);
        let request = sim_net::request(client, call.to, call.transport);
        let Ok((receiver, delivered)) = self.net.carry(&mut self.programs, &from, request) else {
            return Ok(Err(CallError::TimedOut));
        };
        if receiver == from {
            // Answered on the way by a node: an ICMP error.
            let error = sim_net::client_reading(&delivered, client, call.to, call.transport)
                .err()
                .unwrap_or(CallError::TimedOut);
            return Ok(Err(error));
        }
        let name = receiver.name(&self.net).to_owned();
        let dst = lb::datapath::sim::packet_builder::FrameView::of(&delivered)
            .context("a delivered request is TCP or UDP")?;
        match self.listener(&name, dst.dst, call.transport) {
            Some(Some(_)) => {}
            // Nobody listens: a TCP reset or an ICMP port unreachable comes back.
            _ if call.transport == Transport::UdpUnconnected => {
                return Ok(Err(CallError::TimedOut))
            }
            _ => return Ok(Err(CallError::Refused)),
        }
        let answer = sim_net::answer(&delivered, call.transport)
            .context("a delivered request is TCP or UDP")?;
        let Ok((back_at, reply)) = self.net.carry(&mut self.programs, &receiver, answer) else {
            return Ok(Err(CallError::TimedOut));
        };
        if back_at != from {
            return Ok(Err(CallError::TimedOut));
        }
        Ok(
            sim_net::client_reading(&reply, client, call.to, call.transport).map(|()| Answer {
                answered_by: name,
                peer_name: call.to,
                seen_source: dst.src.ip(),
            }),
        )
    }

    /// A path MTU probe from a host outside the cluster: its datagram carried as a call's,
    /// and the ICMP error a pod's node answers a datagram too big for the pod with carried
    /// back. The probe's socket learns the error's MTU when the error reaches it about the
    /// datagram it sent; else the MTU stays its own link's (1500).
    fn probe_external(&mut self, probe: &crate::spec::PmtuProbe) -> Result<u32> {
        const LINK_MTU: u32 = 1500;
        let client_ip = self
            .net
            .external_address(&probe.from, probe.to.ip())
            .with_context(|| format!("{} has no address of {}'s family", probe.from, probe.to))?;
        let client = SocketAddr::new(client_ip, self.next_client_port);
        self.next_client_port = self
            .next_client_port
            .wrapping_add(1)
            .max(sim_net::FIRST_CLIENT_PORT);
        let headers = if probe.to.is_ipv6() { 48 } else { 28 };
        let payload = vec![0x5a; probe.size.saturating_sub(headers)];
        let frame = lb::datapath::sim::packet_builder::PacketBuilder::udp(client, probe.to)
            .payload(&payload)
            .build();
        let from = Receiver::External(probe.from.clone());
        let Ok((Receiver::Pod(pod), delivered)) = self.net.carry(&mut self.programs, &from, frame)
        else {
            return Ok(LINK_MTU);
        };
        let Some((node, error)) = self.net.too_big_for_pod(&pod, &delivered) else {
            return Ok(LINK_MTU);
        };
        let Ok((back_at, error)) = self.net.carry(&mut self.programs, &node, error) else {
            return Ok(LINK_MTU);
        };
        let Some(view) = lb::datapath::sim::packet_builder::IcmpErrorView::of(&error) else {
            return Ok(LINK_MTU);
        };
        let too_big = matches!((view.icmp_type, view.code), (3, 4) | (2, 0));
        if back_at != from || !too_big || view.quoted_src != client || view.quoted_dst != probe.to {
            return Ok(LINK_MTU);
        }
        // The MTU field: the second half of the ICMP header's second word (IPv4), or all of it.
        let icmp = 14 + if probe.to.is_ipv6() { 40 } else { 20 };
        let mtu = u32::from_be_bytes(error[icmp + 4..icmp + 8].try_into()?);
        Ok(mtu.min(LINK_MTU))
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

    /// The source address of a socket of `from` sending to `dst`: loopback to loopback,
    /// otherwise `from`'s own address of dst's family (a socket-level translation changes only
    /// the destination, so the server sees the caller itself).
    fn source_address(&self, from: &str, dst: IpAddr) -> IpAddr {
        if dst.is_loopback() {
            return dst;
        }
        let addresses = match self.nodes.iter().find(|n| n.name == from) {
            Some(node) => &node.addresses,
            None => &self.pods[from].addresses,
        };
        addresses
            .iter()
            .copied()
            .find(|a| a.is_ipv4() == dst.is_ipv4())
            .unwrap_or(dst)
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
                v6only: false,
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
            // Nowhere to go. A node has no route and its call fails at once; a pod's packets
            // go to its node, which has none: a TCP connect hears of it (host unreachable),
            // a UDP datagram is dropped there and the receive times out.
            None if transport != Transport::Tcp && self.pods.contains_key(from) => {
                Err(CallError::TimedOut)
            }
            None => Err(CallError::Unreachable),
            // An unconnected UDP socket is not told of the ICMP port unreachable: its
            // recvfrom times out.
            Some(None) if transport == Transport::UdpUnconnected => Err(CallError::TimedOut),
            Some(None) => Err(CallError::Refused),
            Some(Some(answered_by)) => Ok(Answer {
                answered_by,
                peer_name,
                seen_source: self.source_address(from, dst.ip()),
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
        if self.net.externals.iter().any(|e| e.name == call.from) {
            return self.connect_external(call);
        }
        // A pod whose traffic the socket hooks leave to the pod programs (hostNamespaceOnly);
        // what it sends to itself (loopback, its own address) never leaves it.
        if let Some(pod) = self.pods.get(&call.from) {
            let to_itself = call.to.ip().is_loopback() || pod.addresses.contains(&call.to.ip());
            let at_tc = !to_itself && self.programs[pod.node].as_ref().is_some_and(|p| p.pods);
            let client_ip = pod
                .addresses
                .iter()
                .copied()
                .find(|a| a.is_ipv4() == call.to.is_ipv4());
            if let (true, Some(client_ip), false) = (
                at_tc,
                client_ip,
                call.transport == Transport::UdpUnconnected,
            ) {
                return self.connect_by_packets(Receiver::Pod(call.from.clone()), client_ip, call);
            }
        }
        if !call.source_ports.is_empty() {
            bail!(
                "connect.source_ports: the simulator binds source ports for clients outside the \
                 cluster only, not {}",
                call.from
            );
        }
        let (node, sock) = self.call(&call.from, call.transport)?;
        let sim = self.sim(node)?;
        // An unconnected UDP socket's datagram goes through sendmsg; the peer as netsim's
        // client reads it is recvfrom's source (the recvmsg hook), getpeername otherwise.
        let (dst, peer_name) = if call.transport == Transport::UdpUnconnected {
            let dst = sim.sendmsg(&sock, call.to);
            (dst, sim.peer_name(&sock, dst))
        } else {
            let dst = sim.connect(&sock, call.to);
            (dst, sim.getpeername(&sock, dst))
        };
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
        let sock = SockCall {
            v6only: bind.v6only,
            ..sock
        };
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

    fn reroute(&mut self, reroute: &Reroute) -> Result<()> {
        let external = self
            .net
            .externals
            .iter_mut()
            .find(|e| e.name == reroute.on)
            .with_context(|| format!("reroute: no external host named {}", reroute.on))?;
        let route = external
            .routes
            .iter_mut()
            .find(|(to, _)| *to == reroute.to)
            .with_context(|| format!("reroute: {} has no route to {}", reroute.on, reroute.to))?;
        route.1 = reroute.via;
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
        // The packet programs' clock moves too, and each agent's conntrack GC runs.
        let secs = u32::try_from(duration.as_secs()).unwrap_or(u32::MAX);
        self.now_secs = self.now_secs.saturating_add(secs);
        for programs in self.programs.iter_mut().flatten() {
            programs.pkt.set_now(self.now_secs);
            programs.pkt.collect_garbage();
        }
        Ok(())
    }

    fn path_mtu(&mut self, probe: &crate::spec::PmtuProbe) -> Result<u32> {
        self.probe_external(probe)
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
        let mut status = node.status.clone().context("node not programmed")?;
        // What `lbctl status` reads from the pinned counters on a kernel node.
        if let Some(programs) = &self.programs[index] {
            status.drops = lb::datapath::nonzero_drops(&programs.pkt.counters());
        }
        Ok(NodeViews {
            service_list: ServiceList::from_listed(&node.maps.frontends(), &node.names).render(),
            status: status.render_verbose(),
        })
    }

    fn drops(&mut self, node: &str) -> Result<Vec<String>> {
        let (index, _) = self.endpoint(node)?;
        let programs = self.programs[index]
            .as_ref()
            .with_context(|| format!("{node} runs no packet programs"))?;
        Ok(lb::datapath::nonzero_drops(&programs.pkt.counters())
            .into_iter()
            .map(|d| d.reason)
            .collect())
    }

    fn neighbours(&mut self, node: &str, _want: &[String]) -> Result<Vec<String>> {
        let (index, _) = self.endpoint(node)?;
        Ok(self.nodes[index].neighbours.clone())
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

/// The neighbour entries `node`'s agent keeps ([`lb::agent::neighbours`]): every node of a
/// scenario is on eth0's segment, so another Node's address of a family eth0 has is its own
/// next hop there.
fn modelled_neighbours(
    config: &lb::config::AgentConfig,
    store: &ClusterStore,
    node: &SimNode,
) -> Vec<String> {
    use lb::agent::neighbours::{peer_addresses, wanted, NeighDevice};
    if !(config.node_port() && config.l2_neigh_discovery()) {
        return Vec::new();
    }
    let peers = peer_addresses(
        &store.shared_nodes(),
        &node.name,
        config.ipv4(),
        config.ipv6(),
    );
    let eth0 = [NeighDevice {
        name: "eth0".to_owned(),
        ifindex: 1,
    }];
    let on_link = |dst: IpAddr, _| {
        node.addresses
            .iter()
            .any(|a| a.is_ipv4() == dst.is_ipv4())
            .then_some(dst)
    };
    let mut out: Vec<String> = wanted(&peers, &eth0, on_link)
        .iter()
        .map(ToString::to_string)
        .collect();
    out.sort();
    out
}

/// How a netsim node's device takes the XDP program: natively, unless its MTU leaves a veth no
/// room for XDP's headroom, when the kernel refuses with ERANGE.
fn device_xdp(mtu: Option<u32>) -> XdpState {
    match mtu {
        Some(mtu) if mtu > VETH_XDP_MAX_MTU => XdpState::Skipped {
            reason: REASON_MTU.to_owned(),
        },
        _ => XdpState::Native,
    }
}
