//! [`Topology`]: owns every namespace and cgroup it creates and removes them on drop; hands out
//! [`Node`] and [`Pod`] handles.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use ipnet::IpNet;

use crate::cgroup::{cgroup2_mount, CgroupDir};
use crate::error::{Error, Result};
use crate::link;
use crate::netns::NetNs;
use crate::place::Place;
use crate::spec::{check_name, NodeSpec, PodSpec, MAX_NODE_NAME, MAX_POD_NAME};

/// Where the namespace files of every topology live, one directory per topology.
pub const RUN_ROOT: &str = "/run/netsim";

/// A set of nodes, pods and links, all removed when it is dropped (also while a test panics).
///
/// Each topology has a unique prefix (pid, a counter and clock bits), naming its directory under
/// [`RUN_ROOT`] and its cgroup `netsim-<prefix>` under the cgroup2 mount, so tests in parallel
/// never share anything.
///
/// Drop order: pods, then nodes, then the fabric, then the topology's own cgroup and directory.
/// For each, the processes in its cgroup are killed first, then the cgroup is removed, then the
/// namespace file is unmounted (the kernel deletes the namespace and its devices once nothing
/// uses it). Servers and captures running on threads hold their namespace until they are
/// dropped; declare them after the topology so they drop first.
#[derive(Debug)]
pub struct Topology {
    prefix: String,
    pods: Vec<PodEntry>,
    nodes: Vec<NodeEntry>,
    fabric: Option<Fabric>,
    cgroup: CgroupDir,
    run_dir: RunDir,
}

/// A node: a network namespace with loopback up and forwarding on, and a cgroup subtree.
#[derive(Debug, Clone)]
pub struct Node {
    place: Place,
    segments: [Vec<IpNet>; 2],
    pod_cidrs: Vec<IpNet>,
}

/// A pod inside a node: a namespace behind a veth, and a cgroup child of the node's.
#[derive(Debug, Clone)]
pub struct Pod {
    place: Place,
    node: String,
    node_veth: String,
    ipv4: Ipv4Addr,
    ipv6: Option<Ipv6Addr>,
}

// Fields drop in declaration order: the cgroup (and its processes) before the namespace.
#[derive(Debug)]
struct NodeEntry {
    node: Node,
    _cgroup: CgroupDir,
    _netns: NetNs,
}

#[derive(Debug)]
struct PodEntry {
    pod: Pod,
    _cgroup: CgroupDir,
    _netns: NetNs,
}

/// The private namespace holding the bridges of the segments.
#[derive(Debug)]
struct Fabric {
    netns: NetNs,
    segments: Vec<usize>,
}

/// The topology's directory under [`RUN_ROOT`]; removed on drop, after the files in it.
#[derive(Debug)]
struct RunDir(PathBuf);

impl Drop for RunDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir(&self.0) {
            eprintln!("netsim: cannot remove {}: {e}", self.0.display());
        }
    }
}

impl Deref for Node {
    type Target = Place;
    fn deref(&self) -> &Place {
        &self.place
    }
}

impl Deref for Pod {
    type Target = Place;
    fn deref(&self) -> &Place {
        &self.place
    }
}

/// Why topologies cannot be built here, if they cannot: not root, or no cgroup v2.
pub fn why_unavailable() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not running as root (namespaces, cgroups and mounts need it)".into());
    }
    if cgroup2_mount().is_none() {
        return Some("no cgroup v2 mount in /proc/self/mountinfo".into());
    }
    None
}

fn unique_prefix() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!(
        "{}-{}-{:04x}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        clock & 0xffff
    )
}

impl Topology {
    /// An empty topology: its run directory and cgroup, nothing else yet.
    ///
    /// Fails with [`Error::Unprivileged`] when not root or without cgroup v2.
    pub fn new() -> Result<Topology> {
        if let Some(why) = why_unavailable() {
            return Err(Error::Unprivileged { why });
        }
        let cgroup_root = cgroup2_mount().ok_or_else(|| Error::Unprivileged {
            why: "no cgroup v2 mount".into(),
        })?;
        crate::reclaim::reclaim_dead(Path::new(RUN_ROOT), &cgroup_root);
        let prefix = unique_prefix();
        let run_dir = Path::new(RUN_ROOT).join(&prefix);
        std::fs::create_dir_all(&run_dir).map_err(|e| Error::io("create", &run_dir, e))?;
        let run_dir = RunDir(run_dir);
        let cgroup = CgroupDir::create(cgroup_root.join(format!("netsim-{prefix}")))?;
        Ok(Topology {
            prefix,
            pods: Vec::new(),
            nodes: Vec::new(),
            fabric: None,
            cgroup,
            run_dir,
        })
    }

    /// The prefix naming this topology's directory and cgroup.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The directory holding the namespace files (`/run/netsim/<prefix>`).
    pub fn run_dir(&self) -> &Path {
        &self.run_dir.0
    }

    /// The topology's cgroup; each node's cgroup is a child of it.
    pub fn cgroup_path(&self) -> &Path {
        self.cgroup.path()
    }

    /// The nodes, in the order they were added.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().map(|e| &e.node)
    }

    /// The pods, in the order they were added.
    pub fn pods(&self) -> impl Iterator<Item = &Pod> {
        self.pods.iter().map(|e| &e.pod)
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes().find(|n| n.name() == name)
    }

    /// The fabric namespace (where the segments' bridges `br0`, `br1` and the nodes' ports
    /// `s0-<node>` live), once a node has joined a segment. Its cgroup is the topology's.
    pub fn fabric(&self) -> Option<Place> {
        self.fabric
            .as_ref()
            .map(|f| Place::new(f.netns.name(), f.netns.path(), self.cgroup.path()))
    }

    /// Makes the fabric's end of `node`'s link on `segment` (`s<segment>-<node>`) a sink that
    /// drops every frame the node sends there (`sink`), or the pass-through end it was
    /// (`!sink`): a bench that measures what a node forwards can take everything past the node
    /// off its CPU. The node's device still counts what it sent (a veth counts the frames its
    /// peer's XDP program took). Only for nodes built without a jumbo MTU, whose fabric end runs
    /// XDP.
    pub fn set_fabric_sink(&self, node: &str, segment: usize, sink: bool) -> Result<()> {
        let fabric = self.fabric.as_ref().ok_or_else(|| Error::Topology {
            what: "no fabric yet: no node has joined a segment",
            name: node.to_owned(),
        })?;
        let program = if sink {
            crate::xdp::load_drop_program()?
        } else {
            crate::xdp::load_pass_program()?
        };
        let fd = std::os::fd::AsRawFd::as_raw_fd(&program);
        let port = format!("s{segment}-{node}");
        crate::netlink::with_netlink(fabric.netns.name(), fabric.netns.path(), |nl| async move {
            nl.set_xdp(&port, fd).await
        })
    }

    fn check_new_name(&self, name: &str) -> Result<()> {
        if self.nodes().any(|n| n.name() == name) || self.pods().any(|p| p.name() == name) {
            return Err(Error::Topology {
                what: "name already used in this topology",
                name: name.to_owned(),
            });
        }
        Ok(())
    }

    /// Creates the fabric namespace and the bridge of `segment` if they do not exist yet.
    fn ensure_segment(&mut self, segment: usize) -> Result<&Fabric> {
        if self.fabric.is_none() {
            let netns = NetNs::create("fabric", self.run_dir().join("fabric"))?;
            link::set_up_namespace(netns.name(), netns.path(), false)?;
            self.fabric = Some(Fabric {
                netns,
                segments: Vec::new(),
            });
        }
        let fabric = self.fabric.as_mut().expect("created above");
        if !fabric.segments.contains(&segment) {
            link::add_segment((fabric.netns.name(), fabric.netns.path()), segment)?;
            fabric.segments.push(segment);
        }
        Ok(fabric)
    }

    /// Creates a node: its namespace and cgroup, its devices on the segments its spec names, and
    /// routes between its pod CIDRs and every other node's.
    pub fn add_node(&mut self, spec: NodeSpec) -> Result<Node> {
        check_name(&spec.name, MAX_NODE_NAME)?;
        self.check_new_name(&spec.name)?;
        let netns = NetNs::create(&spec.name, self.run_dir().join(&spec.name))?;
        link::set_up_namespace(netns.name(), netns.path(), true)?;
        let cgroup = CgroupDir::create(self.cgroup.path().join(&spec.name))?;
        for (segment, addrs) in spec.segments.iter().enumerate() {
            if addrs.is_empty() {
                continue;
            }
            let fabric = self.ensure_segment(segment)?;
            link::connect_node(
                (fabric.netns.name(), fabric.netns.path()),
                (netns.name(), netns.path()),
                segment,
                addrs,
                spec.mtu,
            )?;
        }
        let node = Node {
            place: Place::new(&spec.name, netns.path(), cgroup.path()),
            segments: spec.segments,
            pod_cidrs: spec.pod_cidrs,
        };
        for other in self.nodes() {
            route_pod_cidrs(other, &node)?;
            route_pod_cidrs(&node, other)?;
        }
        self.nodes.push(NodeEntry {
            node: node.clone(),
            _cgroup: cgroup,
            _netns: netns,
        });
        Ok(node)
    }

    /// Creates a pod inside `node`: its namespace behind a veth, its cgroup under the node's.
    pub fn add_pod(&mut self, node: &Node, spec: PodSpec) -> Result<Pod> {
        check_name(&spec.name, MAX_POD_NAME)?;
        self.check_new_name(&spec.name)?;
        if self.node(node.name()).is_none() {
            return Err(Error::Topology {
                what: "no such node in this topology",
                name: node.name().to_owned(),
            });
        }
        let netns = NetNs::create(&spec.name, self.run_dir().join(&spec.name))?;
        link::set_up_namespace(netns.name(), netns.path(), false)?;
        let cgroup = CgroupDir::create(node.cgroup_path().join(&spec.name))?;
        let node_veth = link::connect_pod(
            (node.name(), node.netns_path()),
            (netns.name(), netns.path()),
            spec.ipv4,
            spec.ipv6,
            spec.mtu,
        )?;
        let pod = Pod {
            place: Place::new(&spec.name, netns.path(), cgroup.path()),
            node: node.name().to_owned(),
            node_veth,
            ipv4: spec.ipv4,
            ipv6: spec.ipv6,
        };
        self.pods.push(PodEntry {
            pod: pod.clone(),
            _cgroup: cgroup,
            _netns: netns,
        });
        Ok(pod)
    }

    /// Adds a route in `node` (or any place of this topology) to `dest` via `via`.
    pub fn add_route(&self, place: &Place, dest: IpNet, via: IpAddr) -> Result<()> {
        link::add_route((place.name(), place.netns_path()), dest, via)
    }

    /// In `place`, points the route to `dest` at `via` instead (`ip route replace`).
    pub fn replace_route(&self, place: &Place, dest: IpNet, via: IpAddr) -> Result<()> {
        link::replace_route((place.name(), place.netns_path()), dest, via)
    }
}

/// In `from`, routes each pod CIDR of `to` via `to`'s address on a segment both are on.
fn route_pod_cidrs(from: &Node, to: &Node) -> Result<()> {
    for cidr in &to.pod_cidrs {
        let via = (0..2)
            .filter(|&s| !from.segments[s].is_empty())
            .flat_map(|s| to.segments[s].iter())
            .find(|a| a.addr().is_ipv4() == cidr.addr().is_ipv4());
        if let Some(via) = via {
            link::add_route((from.name(), from.netns_path()), *cidr, via.addr())?;
        }
    }
    Ok(())
}

impl Node {
    /// The addresses of `eth<segment>` (empty if the node is not on that segment).
    pub fn addresses(&self, segment: usize) -> &[IpNet] {
        self.segments.get(segment).map_or(&[], Vec::as_slice)
    }

    /// The node's first IPv4 address on `eth0`.
    pub fn ipv4(&self) -> Option<Ipv4Addr> {
        self.segments[0].iter().find_map(|a| match a.addr() {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        })
    }

    /// The node's first IPv6 address on `eth0`.
    pub fn ipv6(&self) -> Option<Ipv6Addr> {
        self.segments[0].iter().find_map(|a| match a.addr() {
            IpAddr::V6(v6) => Some(v6),
            IpAddr::V4(_) => None,
        })
    }

    /// The pod CIDRs routed to this node.
    pub fn pod_cidrs(&self) -> &[IpNet] {
        &self.pod_cidrs
    }

    /// The place (namespace and cgroup) of this node.
    pub fn place(&self) -> &Place {
        &self.place
    }
}

impl Pod {
    /// The pod's IPv4 address.
    pub fn ipv4(&self) -> Ipv4Addr {
        self.ipv4
    }

    /// The pod's IPv6 address, if it has one.
    pub fn ipv6(&self) -> Option<Ipv6Addr> {
        self.ipv6
    }

    /// The name of the node the pod is in.
    pub fn node_name(&self) -> &str {
        &self.node
    }

    /// The node-side end of the pod's veth (`v-<pod>`, in the node's namespace).
    pub fn node_veth(&self) -> &str {
        &self.node_veth
    }

    /// The place (namespace and cgroup) of this pod.
    pub fn place(&self) -> &Place {
        &self.place
    }
}
