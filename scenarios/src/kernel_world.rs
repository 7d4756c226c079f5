//! The `kernel` backend: the scenario's topology built with netsim (a network namespace and a
//! cgroup subtree per node, pods behind veths), identity servers in the pods, and the real
//! `lb-agent` run inside each node with its own bpffs and state directory. Clients are real
//! processes in the node's or pod's namespace and cgroup, so the node's socket hooks see them.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use lb::agent::AgentRecord;
use lb::datapath::ServiceMaps;
use netsim::{
    ClientMode, HeldClient, IdentityServer, NodeSpec, Place, PodSpec, Proto, Reply, Topology,
};

use crate::files::ScenarioFiles;
use crate::spec::{
    Bind, Connect, HeldTransport, Open, Reroute, Scenario, Segment, Serve, Transport,
};
use crate::trace_monitor::MonitorProcess;
use crate::world::{Answer, CallError, NodeViews, Traced, World};

/// Set in a child process that binds a socket for a `bind` step: `ADDR PROTO [v6only]`.
const BIND_CHILD: &str = "LB_SCENARIO_BIND";

/// How long an agent may take to program a node: a deadline, not a wait. Generous, because
/// the VM tier emulates its CPU: verifying and attaching the tc programs there takes seconds.
const AGENT_DEADLINE: Duration = Duration::from_secs(120);

/// Whether this process is a child started for a `bind` step.
pub fn is_child() -> bool {
    std::env::var_os(BIND_CHILD).is_some()
}

/// The child's work: bind, print `ok` or the errno, exit.
pub fn run_child() {
    let spec = std::env::var(BIND_CHILD).unwrap_or_default();
    let mut words = spec.split(' ');
    let addr = words.next().unwrap_or_default();
    let tcp = words.next() != Some("udp");
    let v6only = words.next() == Some("v6only");
    let addr: SocketAddr = match addr.parse() {
        Ok(a) => a,
        Err(e) => {
            println!("bad address {addr}: {e}");
            return;
        }
    };
    match bind_socket(addr, tcp, v6only) {
        Ok(()) => println!("ok"),
        Err(e) => println!("errno {}", e as i32),
    }
}

/// A socket of the address's family binds `addr`, with `IPV6_V6ONLY` set first when asked.
/// The cgroup bind hooks run in bind(2) itself, so nothing after it (a TCP listen) matters.
fn bind_socket(addr: SocketAddr, tcp: bool, v6only: bool) -> nix::Result<()> {
    use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrStorage};

    let family = if addr.is_ipv6() {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    let kind = if tcp {
        SockType::Stream
    } else {
        SockType::Datagram
    };
    let fd = socket::socket(family, kind, SockFlag::SOCK_CLOEXEC, None)?;
    if tcp {
        // As std's TcpListener::bind, which this child used before.
        socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    }
    if v6only {
        socket::setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    }
    socket::bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrStorage::from(addr),
    )
}

/// A node's agent: where it pins and records.
struct NodeAgent {
    bpf_root: PathBuf,
    state_dir: PathBuf,
}

/// The kernel world of one scenario. Fields drop in order: held sockets' clients, servers,
/// then the agents' cleanup, then the topology (which kills what runs in it and removes
/// namespaces and cgroups).
pub struct KernelWorld {
    held: BTreeMap<String, HeldClient>,
    servers: Vec<IdentityServer>,
    agents: BTreeMap<String, NodeAgent>,
    places: BTreeMap<String, Place>,
    /// The node each node or pod is on.
    node_of: BTreeMap<String, String>,
    files: ScenarioFiles,
    topology: Topology,
    /// Kernel features the agents treat as missing (the scenario's `assume_missing`).
    assume_missing: Vec<String>,
}

impl std::fmt::Debug for KernelWorld {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelWorld")
            .field("topology", &self.topology.prefix())
            .finish_non_exhaustive()
    }
}

impl KernelWorld {
    /// Builds the topology, starts the servers and programs every node.
    pub fn new(scenario: &Scenario) -> Result<Self> {
        let files = ScenarioFiles::create(scenario, "kernel")?;
        let mut topology = Topology::new()?;
        let mut places = BTreeMap::new();
        let mut serves: Vec<(Place, Vec<IpAddr>, Serve, String)> = Vec::new();
        let mut agents = BTreeMap::new();
        let mut node_of = BTreeMap::new();
        for spec in &scenario.topology.nodes {
            node_of.insert(spec.name.clone(), spec.name.clone());
            let mut node_spec = NodeSpec::new(&spec.name).eth0(host_net(spec.address, 24)?);
            if let Some(v6) = spec.address6 {
                node_spec = node_spec.eth0(host_net(v6, 64)?);
            }
            for cidr in &spec.pod_cidrs {
                node_spec = node_spec.pod_cidr(*cidr);
            }
            if let Some(mtu) = spec.mtu {
                node_spec = node_spec.mtu(mtu);
            }
            if let Some(eth1) = spec.eth1 {
                node_spec = node_spec.eth1(host_net(eth1, 24)?);
            }
            let node = topology.add_node(node_spec)?;
            for (key, value) in &spec.sysctls {
                let path = sysctl_path(key);
                node.place()
                    .in_netns(|| std::fs::write(&path, value))?
                    .with_context(|| format!("{} on {}", path.display(), spec.name))?;
            }
            places.insert(spec.name.clone(), node.place().clone());
            let addrs = [Some(spec.address), spec.address6, spec.eth1]
                .into_iter()
                .flatten();
            serves.push((
                node.place().clone(),
                addrs.collect(),
                spec.serve.clone(),
                spec.name.clone(),
            ));
            for pod_spec in &spec.pods {
                let IpAddr::V4(v4) = pod_spec.address else {
                    bail!("pod {}: address must be IPv4", pod_spec.name);
                };
                let mut p = PodSpec::new(&pod_spec.name, v4);
                if let Some(IpAddr::V6(v6)) = pod_spec.address6 {
                    p = p.ipv6(v6);
                }
                if let Some(mtu) = pod_spec.mtu {
                    p = p.mtu(mtu);
                }
                let pod = topology.add_pod(&node, p)?;
                places.insert(pod_spec.name.clone(), pod.place().clone());
                node_of.insert(pod_spec.name.clone(), spec.name.clone());
                let addrs = [Some(pod_spec.address), pod_spec.address6];
                serves.push((
                    pod.place().clone(),
                    addrs.into_iter().flatten().collect(),
                    pod_spec.serve.clone(),
                    pod_spec.name.clone(),
                ));
            }
            agents.insert(
                spec.name.clone(),
                NodeAgent {
                    bpf_root: files.path(&format!("bpf-{}", spec.name)),
                    state_dir: files.path(&format!("state-{}", spec.name)),
                },
            );
        }
        // Hosts outside the cluster: on the segment, with neither an agent nor pods.
        for spec in &scenario.topology.externals {
            let on_segment = |node_spec: NodeSpec, net| match spec.segment {
                Segment::First => node_spec.eth0(net),
                Segment::Second => node_spec.eth1(net),
            };
            let mut node_spec = on_segment(NodeSpec::new(&spec.name), host_net(spec.address, 24)?);
            if let Some(v6) = spec.address6 {
                node_spec = on_segment(node_spec, host_net(v6, 64)?);
            }
            let host = topology.add_node(node_spec)?;
            for route in &spec.routes {
                topology.add_route(host.place(), route.to, route.via)?;
            }
            places.insert(spec.name.clone(), host.place().clone());
            node_of.insert(spec.name.clone(), spec.name.clone());
        }
        let mut servers = Vec::new();
        for (place, mut addrs, serve, identity) in serves {
            // A place's servers also answer on its loopback, as the simulator has it: a
            // process there that connects to loopback reaches its own servers.
            let loopback: Vec<IpAddr> = [
                addrs
                    .iter()
                    .any(IpAddr::is_ipv4)
                    .then_some(IpAddr::from([127, 0, 0, 1])),
                addrs
                    .iter()
                    .any(IpAddr::is_ipv6)
                    .then_some(IpAddr::from(std::net::Ipv6Addr::LOCALHOST)),
            ]
            .into_iter()
            .flatten()
            .collect();
            addrs.extend(loopback);
            for ip in addrs {
                for &port in &serve.tcp {
                    servers.push(place.server(Proto::Tcp, SocketAddr::new(ip, port), &identity)?);
                }
                for &port in &serve.udp {
                    servers.push(place.server(Proto::Udp, SocketAddr::new(ip, port), &identity)?);
                }
            }
        }
        let mut world = KernelWorld {
            held: BTreeMap::new(),
            servers,
            agents,
            places,
            node_of,
            files,
            topology,
            assume_missing: scenario.assume_missing.clone(),
        };
        world.set_objects(&crate::runner::initial_objects(scenario))?;
        Ok(world)
    }

    fn place(&self, name: &str) -> Result<&Place> {
        self.places
            .get(name)
            .with_context(|| format!("no node or pod named {name}"))
    }

    /// Runs `lb-agent --once` inside the node: it programs the node and exits, leaving the
    /// programs attached and the maps pinned, as a restarted agent would find them.
    fn run_agent(&self, node: &str) -> Result<()> {
        let agent = &self.agents[node];
        let mut cmd = Command::new(netsim::binary_path("lb-agent")?);
        cmd.arg("--values")
            .arg(self.files.values())
            .arg("--set")
            .arg(format!("bpf.root={}", agent.bpf_root.display()))
            .arg("--set")
            .arg(format!(
                "cgroup.hostRoot={}",
                self.place(node)?.cgroup_path().display()
            ))
            .arg("--manifests")
            .arg(self.files.manifests(node))
            .arg("--node")
            .arg(node)
            .arg("--state-dir")
            .arg(&agent.state_dir)
            .arg("--once")
            .env(
                lb::agent::degrade::ASSUME_MISSING_ENV,
                self.assume_missing.join(","),
            )
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let output = self.place(node)?.spawn(cmd)?.output(AGENT_DEADLINE)?;
        if !output.status.success() {
            bail!(
                "lb-agent on {node} exited with {}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    /// Removes every node's agent with `lbctl cleanup`, as an operator going back to
    /// kube-proxy would, and checks that nothing it pinned is left.
    pub fn finish(mut self) -> Result<()> {
        let agents = std::mem::take(&mut self.agents);
        let mut failures = Vec::new();
        for (node, agent) in &agents {
            if let Err(e) = remove_agent(agent) {
                failures.push(format!("{node}: {e:#}"));
            }
        }
        if !failures.is_empty() {
            bail!("cleanup: {}", failures.join("; "));
        }
        Ok(())
    }
}

/// `lbctl cleanup` for a node (when its agent ran), then its bpffs unmounted.
fn remove_agent(agent: &NodeAgent) -> Result<()> {
    let result = if agent.state_dir.join("agent.json").exists() {
        lbctl_cleanup(agent)
    } else {
        Ok(())
    };
    if agent.bpf_root.exists() {
        let _ = nix::mount::umount2(&agent.bpf_root, nix::mount::MntFlags::MNT_DETACH);
    }
    result
}

/// The externally learned neighbour entries of the calling thread's namespace (the agent's),
/// `IP dev DEVICE`, sorted; one the kernel has not resolved says so.
fn agents_neighbours() -> Result<Vec<String>> {
    let devices = lb::host::host_devices()?;
    let mut out: Vec<String> = lb::host::neigh::dump_neighbours()?
        .into_iter()
        .filter(|e| e.ext_learned)
        .map(|e| {
            let device = devices
                .iter()
                .find(|d| d.ifindex == e.ifindex)
                .map_or_else(|| format!("ifindex {}", e.ifindex), |d| d.name.clone());
            let state = if e.resolved() {
                String::new()
            } else {
                format!(" (unresolved: {})", e.state)
            };
            format!("{} dev {device}{state}", e.ip)
        })
        .collect();
    out.sort();
    Ok(out)
}

fn lbctl_cleanup(agent: &NodeAgent) -> Result<()> {
    let output = Command::new(netsim::binary_path("lbctl")?)
        .arg("cleanup")
        .arg("--state-dir")
        .arg(&agent.state_dir)
        .stdin(Stdio::null())
        .output()?;
    if !output.status.success() {
        bail!(
            "lbctl cleanup exited with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let pin_dir = agent.bpf_root.join(lb::agent::PIN_SUBDIR);
    if pin_dir.exists() {
        let left: Vec<String> = std::fs::read_dir(&pin_dir)?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        bail!(
            "lbctl cleanup left {} with {left:?} in it",
            pin_dir.display()
        );
    }
    Ok(())
}

impl Drop for KernelWorld {
    fn drop(&mut self) {
        // A scenario that failed half-way still removes its agents; `finish` already took
        // them otherwise.
        self.held.clear();
        self.servers.clear();
        for (node, agent) in &self.agents {
            if let Err(e) = remove_agent(agent) {
                eprintln!("warning: removing the agent of {node}: {e:#}");
            }
        }
    }
}

/// `net.ipv4.x` as `/proc/sys/net/ipv4/x`; read or written from a thread inside a namespace,
/// it is that namespace's value.
fn sysctl_path(key: &str) -> PathBuf {
    PathBuf::from("/proc/sys").join(key.replace('.', "/"))
}

fn host_net(ip: IpAddr, prefix: u8) -> Result<ipnet::IpNet> {
    Ok(ipnet::IpNet::new(ip, prefix)?)
}

fn mode(transport: Transport) -> ClientMode {
    match transport {
        Transport::Tcp => ClientMode::Tcp,
        Transport::UdpConnected => ClientMode::UdpConnected,
        Transport::UdpUnconnected => ClientMode::UdpUnconnected,
    }
}

fn call_error(errno: Option<i32>, error: &str) -> CallError {
    match errno {
        Some(n) => CallError::from_errno(nix::errno::Errno::from_raw(n)),
        None => CallError::Other(error.to_owned()),
    }
}

/// What the application saw in one exchange, from the client's reply.
fn answer(reply: &Reply) -> Result<Result<Answer, CallError>> {
    if let Some(error) = &reply.error {
        return Ok(Err(call_error(reply.errno, error)));
    }
    let answered_by = reply
        .identity()
        .with_context(|| format!("an answer without identity: {reply:?}"))?
        .to_owned();
    let peer_name = reply
        .peer
        .with_context(|| format!("no peer address: {reply:?}"))?;
    let seen_source = reply
        .seen_by_server()
        .with_context(|| format!("the answer has no source address: {reply:?}"))?
        .ip();
    Ok(Ok(Answer {
        answered_by,
        peer_name,
        seen_source: seen_source.to_canonical(),
    }))
}

impl World for KernelWorld {
    fn connect_traced(&mut self, call: &Connect) -> Result<(Result<Answer, CallError>, Traced)> {
        let node = self
            .node_of
            .get(&call.from)
            .with_context(|| format!("no node or pod named {}", call.from))?;
        let caller_cgroup = std::fs::metadata(self.place(&call.from)?.cgroup_path())
            .context("the caller's cgroup")?
            .ino();
        let agent = self
            .agents
            .get(node)
            .with_context(|| format!("{} runs no agent to trace", call.from))?;
        let monitor = MonitorProcess::start(&agent.state_dir)?;
        let result = self.connect(call)?;
        let events = monitor.stop()?;
        Ok((
            result,
            Traced {
                caller_cgroup,
                events,
            },
        ))
    }

    fn connect(&mut self, call: &Connect) -> Result<Result<Answer, CallError>> {
        // One call per invocation keeps each socket's netns cookie the place's, as the
        // simulator models it; `times` is handled by the runner.
        let reply = self.place(&call.from)?.client_once_from(
            mode(call.transport),
            call.to,
            call.source_ports.first().copied(),
        )?;
        answer(&reply)
    }

    fn open(&mut self, open: &Open) -> Result<Result<Answer, CallError>> {
        // A process of its own in the place's namespace and cgroup, holding the socket.
        let (client, reply) = self
            .place(&open.from)?
            .hold(mode(open.transport.into()), open.to)?;
        // A failed TCP connect leaves nothing open (the client has exited); a UDP socket is
        // connected whatever its first exchange gave.
        if reply.error.is_none() || open.transport == HeldTransport::UdpConnected {
            self.held.insert(open.id.clone(), client);
        }
        answer(&reply)
    }

    fn send(&mut self, id: &str) -> Result<Result<Answer, CallError>> {
        let client = self
            .held
            .get_mut(id)
            .with_context(|| format!("no socket {id} is open (did its open fail?)"))?;
        answer(&client.send()?)
    }

    fn close(&mut self, id: &str) -> Result<()> {
        let client = self
            .held
            .remove(id)
            .with_context(|| format!("no socket {id} is open (did its open fail?)"))?;
        Ok(client.close()?)
    }

    fn bind(&mut self, bind: &Bind) -> Result<Result<(), CallError>> {
        let proto = if bind.transport == Transport::Tcp {
            "tcp"
        } else {
            "udp"
        };
        let v6only = if bind.v6only { " v6only" } else { "" };
        let mut cmd = netsim::self_command(BIND_CHILD, &format!("{} {proto}{v6only}", bind.addr))?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let output = self
            .place(&bind.on)?
            .spawn(cmd)?
            .output(Duration::from_secs(10))?;
        let text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        match text.strip_prefix("errno ") {
            None if text == "ok" => Ok(Ok(())),
            Some(n) => {
                let errno: i32 = n.parse().context("bind child's errno")?;
                Ok(Err(call_error(
                    Some(errno),
                    &format!("bind: errno {errno}"),
                )))
            }
            None => bail!(
                "bind child said {text:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            ),
        }
    }

    fn set_objects(&mut self, objects: &[serde_yaml::Value]) -> Result<()> {
        let nodes: Vec<String> = self.agents.keys().cloned().collect();
        for node in nodes {
            self.files.write_objects(&node, objects)?;
            self.run_agent(&node)?;
        }
        Ok(())
    }

    fn reroute(&mut self, reroute: &Reroute) -> Result<()> {
        let place = self
            .places
            .get(&reroute.on)
            .with_context(|| format!("reroute: no external host named {}", reroute.on))?;
        Ok(self
            .topology
            .replace_route(place, reroute.to, reroute.via)?)
    }

    fn restart_agent(&mut self, node: &str) -> Result<()> {
        self.run_agent(node)
    }

    fn wait(&mut self, duration: Duration) -> Result<()> {
        // A scenario step that lets a timeout expire: the time passing is the point.
        std::thread::sleep(duration);
        Ok(())
    }

    fn path_mtu(&mut self, probe: &crate::spec::PmtuProbe) -> Result<u32> {
        let seen = self.place(&probe.from)?.path_mtu(probe.to, probe.size)?;
        match (seen.mtu, seen.error) {
            (Some(mtu), None) => Ok(mtu),
            (_, error) => bail!("path MTU probe from {}: {error:?}", probe.from),
        }
    }

    fn sysctl(&mut self, node: &str, key: &str) -> Result<String> {
        let path = sysctl_path(key);
        self.place(node)?
            .in_netns(|| std::fs::read_to_string(&path))?
            .with_context(|| format!("{} on {node}", path.display()))
    }

    fn views(&mut self, node: &str) -> Result<NodeViews> {
        let agent = self
            .agents
            .get(node)
            .with_context(|| format!("no node named {node}"))?;
        let lbctl = |args: &[&str]| -> Result<String> {
            let output = Command::new(netsim::binary_path("lbctl")?)
                .args(args)
                .arg("--state-dir")
                .arg(&agent.state_dir)
                .output()?;
            if !output.status.success() {
                bail!(
                    "lbctl {} on {node} exited with {}: {}",
                    args.join(" "),
                    output.status,
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            Ok(String::from_utf8(output.stdout)?)
        };
        Ok(NodeViews {
            service_list: lbctl(&["service", "list"])?,
            status: lbctl(&["status", "--verbose"])?,
        })
    }

    fn drops(&mut self, node: &str) -> Result<Vec<String>> {
        let agent = self
            .agents
            .get(node)
            .with_context(|| format!("no node named {node}"))?;
        let record = AgentRecord::read(&agent.state_dir)?;
        ensure!(record.nodeport.is_some(), "{node} runs no packet programs");
        let sums = lb::datapath::read_drop_counters(&record.pin_dir)?;
        Ok(lb::datapath::nonzero_drops(&sums)
            .into_iter()
            .map(|d| d.reason)
            .collect())
    }

    fn neighbours(&mut self, node: &str, want: &[String]) -> Result<Vec<String>> {
        let place = self.place(node)?;
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            let have = place.in_netns(agents_neighbours)??;
            if have == want || std::time::Instant::now() > deadline {
                return Ok(have);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn frontends(&mut self, node: &str) -> Result<Vec<String>> {
        let agent = self
            .agents
            .get(node)
            .with_context(|| format!("no node named {node}"))?;
        let record = AgentRecord::read(&agent.state_dir)?;
        let contents = ServiceMaps::open_pinned(&record.pin_dir)?.read()?;
        Ok(contents
            .frontends()
            .iter()
            .map(|f| f.frontend.to_string())
            .collect())
    }
}
