//! The bench's topology and what runs in it: one netsim node with three client pods and three
//! backend pods, the one-byte servers, a client process per client pod, the agent's files,
//! and the iptables rules.
//!
//! - `client-direct` has nothing between it and the backends: the limit.
//! - `client-sock`'s cgroup carries the socket-LB hooks (the agent's `cgroup.hostRoot`), and
//!   its namespace has no iptables rules.
//! - `client-empty`'s cgroup carries programs that do nothing on the same hooks: the kernel's
//!   hook machinery alone, the floor any socket-LB program pays.
//! - `ipt-N` has kube-proxy's rules for N services in its namespace's `nat` table, and no
//!   hooks. One pod per service count: through DNAT the client's initial sequence number and
//!   timestamp offset are derived from the ClusterIP, so a source port reused towards another
//!   ClusterIP lands on the backend's TIME_WAIT socket of an earlier connection out of order
//!   and stalls for a SYN retransmission or more. One ClusterIP per pod keeps that out of the
//!   measurement (socket-LB cannot have it: the socket sees the backend's address).
//!
//! All of them are pods of the same node behind identical veths, so the only difference between
//! the variants is the mechanism. Fields drop in order: the client processes, the servers,
//! the agent's pins and files, then the topology (which kills what is left in its cgroups and
//! removes the namespaces, with the iptables rules in them).

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::process::{ChildStdin, ChildStdout, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use lb::datapath::ServiceMaps;
use netsim::{NodeSpec, Place, PodSpec, Process, Topology};

use crate::agent_files::AgentFiles;
use crate::iptables;
use crate::services::{ServiceSet, BACKEND_PORT};
use crate::worker::{Measured, Servers};

/// Set in the client processes (`client`).
pub const ROLE_VAR: &str = "LB_BENCH_SOCKET_LB_ROLE";
/// The iptables backend: nf_tables, Debian's default (`iptables-legacy` also works here).
/// How long the agent may take to program a node.
const AGENT_DEADLINE: Duration = Duration::from_secs(600);
/// How long iptables-restore may take.
const IPTABLES_DEADLINE: Duration = Duration::from_secs(600);

const NODE: &str = "n1";
const NODE_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 56, 11);
const FIRST_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);

/// Which client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Client {
    /// No hooks, no rules.
    Direct,
    /// Under the socket-LB hooks.
    Sock,
    /// Under programs that do nothing, on the socket-LB hooks.
    EmptyHooks,
    /// Behind kube-proxy's iptables rules for the service count last programmed.
    Iptables,
}

/// A client process and its pipes.
struct Worker {
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    name: String,
    _process: Process,
}

impl Worker {
    fn start(place: &Place, name: impl Into<String>) -> Result<Worker> {
        let mut cmd = netsim::self_command(ROLE_VAR, "client")?;
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut process = place.spawn(cmd)?;
        let child = process.child_mut();
        let stdin = child.stdin.take().context("client stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("client stdout")?);
        Ok(Worker {
            stdin,
            stdout,
            name: name.into(),
            _process: process,
        })
    }

    fn measure(
        &mut self,
        targets: &[SocketAddrV4],
        count: u32,
        budget: Duration,
    ) -> Result<Measured> {
        let list: Vec<String> = targets.iter().map(ToString::to_string).collect();
        let list = list.join(",");
        writeln!(self.stdin, "{list} {count} {}", budget.as_millis())
            .and_then(|()| self.stdin.flush())
            .with_context(|| format!("sending a request to {}", self.name))?;
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .with_context(|| format!("reading {}'s answer", self.name))?;
        if line.is_empty() {
            bail!("{} exited", self.name);
        }
        Measured::from_line(line.trim_end())
            .map_err(|e| anyhow::anyhow!("{} connecting to {list}: {e}", self.name))
    }
}

/// The bench's world; see the module documentation.
pub struct World {
    direct: Worker,
    sock: Worker,
    empty: Worker,
    /// The empty programs, attached to `client-empty`'s cgroup while this lives.
    _empty_hooks: aya::Ebpf,
    /// Per service count: its pod and client.
    ipt: Vec<(u32, Place, Worker)>,
    /// The service count iptables was last programmed for.
    ipt_current: Option<u32>,
    _servers: Servers,
    files: AgentFiles,
    node: Place,
    sock_pod: Place,
    backends: Vec<Ipv4Addr>,
    _topology: Topology,
}

impl World {
    /// Builds the topology and starts servers and clients, with an iptables pod for each of
    /// `counts`.
    pub fn new(counts: &[u32]) -> Result<World> {
        let mut topology = Topology::new()?;
        let node = topology.add_node(
            NodeSpec::new(NODE)
                .eth0(ipnet::IpNet::new(NODE_IP.into(), 24)?)
                .pod_cidr("10.0.1.0/24".parse()?),
        )?;
        let pod = |topology: &mut Topology, name: &str, last: u8| {
            topology.add_pod(&node, PodSpec::new(name, Ipv4Addr::new(10, 0, 1, last)))
        };
        let direct_pod = pod(&mut topology, "client-direct", 2)?.place().clone();
        let sock_pod = pod(&mut topology, "client-sock", 3)?.place().clone();
        let empty_pod = pod(&mut topology, "client-empty", 4)?.place().clone();
        let empty_hooks = attach_empty_hooks(empty_pod.cgroup_path())?;
        let mut ipt = Vec::new();
        for (&count, last) in counts.iter().zip(20..) {
            let name = format!("ipt-{count}");
            let place = pod(&mut topology, &name, last)?.place().clone();
            let worker = Worker::start(&place, name)?;
            ipt.push((count, place, worker));
        }
        let mut listeners = Vec::new();
        let mut backends = Vec::new();
        for (i, last) in (1..=3u8).zip(11..) {
            let ip = Ipv4Addr::new(10, 0, 1, last);
            let place = pod(&mut topology, &format!("backend-{i}"), last)?
                .place()
                .clone();
            let addr = SocketAddrV4::new(ip, BACKEND_PORT);
            let listener = place
                .in_netns(|| TcpListener::bind(addr))?
                .with_context(|| format!("binding {addr} in backend-{i}"))?;
            listeners.push((listener, i));
            backends.push(ip);
        }
        let servers = Servers::start(listeners).context("starting the servers")?;
        Ok(World {
            direct: Worker::start(&direct_pod, "client-direct")?,
            sock: Worker::start(&sock_pod, "client-sock")?,
            empty: Worker::start(&empty_pod, "client-empty")?,
            _empty_hooks: empty_hooks,
            ipt,
            ipt_current: None,
            _servers: servers,
            files: AgentFiles::create("socket-lb", "kubeProxyReplacement: true\n")?,
            node: node.place().clone(),
            sock_pod,
            backends,
            _topology: topology,
        })
    }

    /// The backends' addresses with their port.
    pub fn backends(&self) -> Vec<SocketAddrV4> {
        self.backends
            .iter()
            .map(|&ip| SocketAddrV4::new(ip, BACKEND_PORT))
            .collect()
    }

    /// `count` services over this world's backends.
    pub fn service_set(&self, count: u32) -> ServiceSet {
        ServiceSet {
            count,
            first_ip: FIRST_SERVICE_IP,
            backends: self.backends.clone(),
            node: NODE.into(),
            node_ip: NODE_IP,
        }
    }

    /// Times `count` connections from `client`, each to one of `targets` at random.
    pub fn measure(
        &mut self,
        client: Client,
        targets: &[SocketAddrV4],
        count: u32,
        budget: Duration,
    ) -> Result<Measured> {
        match client {
            Client::Direct => &mut self.direct,
            Client::Sock => &mut self.sock,
            Client::EmptyHooks => &mut self.empty,
            Client::Iptables => {
                let current = self.ipt_current;
                &mut self
                    .ipt
                    .iter_mut()
                    .find(|(n, _, _)| Some(*n) == current)
                    .context("iptables was not programmed")?
                    .2
            }
        }
        .measure(targets, count, budget)
    }

    /// Writes `set` as the manifest directory and runs `lb-agent --once` in the node, its
    /// hooks on `client-sock`'s cgroup; checks the pinned maps hold the set's frontends.
    /// Returns how long the agent took.
    pub fn program_socket_lb(&self, set: &ServiceSet) -> Result<Duration> {
        self.files.write_manifests(&set.manifests())?;
        let started = Instant::now();
        self.files.run_once(
            &self.node,
            NODE,
            self.sock_pod.cgroup_path(),
            AGENT_DEADLINE,
        )?;
        let took = started.elapsed();
        let pin_dir = self.files.bpf_root().join(lb::agent::PIN_SUBDIR);
        let frontends = ServiceMaps::open_pinned(&pin_dir)?.read()?.frontends();
        if frontends.len() != set.count as usize {
            bail!(
                "lb-agent programmed {} frontends for {} services",
                frontends.len(),
                set.count
            );
        }
        Ok(took)
    }

    /// Loads kube-proxy's rules for `set` into the `nat` table of its pod `ipt-N` with one
    /// `iptables-restore`, and makes it the iptables client; returns the rule count and how
    /// long it took.
    pub fn program_iptables(&mut self, set: &ServiceSet) -> Result<(usize, Duration)> {
        let place = self
            .ipt
            .iter()
            .find(|(n, _, _)| *n == set.count)
            .map(|(_, p, _)| p.clone())
            .with_context(|| format!("no iptables pod for {} services", set.count))?;
        let started = Instant::now();
        let count = iptables::restore(&place, set.iptables_restore(), IPTABLES_DEADLINE)?;
        let took = started.elapsed();
        iptables::shorten_time_wait(&place)?;
        self.ipt_current = Some(set.count);
        Ok((count, took))
    }
}

/// Loads the programs that do nothing and attaches each to its hook on `cgroup`, the same
/// hooks the agent attaches to; they stay attached while the returned object lives.
fn attach_empty_hooks(cgroup: &std::path::Path) -> Result<aya::Ebpf> {
    use aya::programs::{CgroupAttachMode, CgroupSock, CgroupSockAddr};
    let mut ebpf = aya::EbpfLoader::new().load(ebpf::empty_object())?;
    let dir = std::fs::File::open(cgroup)
        .with_context(|| format!("opening cgroup {}", cgroup.display()))?;
    for (name, _) in ebpf::EMPTY_SOCK_PROGRAMS {
        let prog: &mut CgroupSockAddr = empty_program(&mut ebpf, name)?;
        prog.load()?;
        prog.attach(&dir, CgroupAttachMode::Single)
            .with_context(|| format!("attaching {name}"))?;
    }
    let name = ebpf::EMPTY_SOCK_RELEASE_PROGRAM;
    let prog: &mut CgroupSock = empty_program(&mut ebpf, name)?;
    prog.load()?;
    prog.attach(&dir, CgroupAttachMode::Single)
        .with_context(|| format!("attaching {name}"))?;
    Ok(ebpf)
}

/// The program `name` of the empty object, as the program type `P` its hook needs.
fn empty_program<'a, P>(ebpf: &'a mut aya::Ebpf, name: &str) -> Result<&'a mut P>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    Ok(ebpf
        .program_mut(name)
        .with_context(|| format!("no program {name}"))?
        .try_into()?)
}
