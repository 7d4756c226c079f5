//! The demo's cluster: the netsim topology built from the [`DemoSpec`], HTTP servers in the
//! backend pods, an agent on every node, and a host outside the cluster on the nodes'
//! segment. Taken down in order by [`Cluster::down`], or by
//! drop on an error path: servers, then agents (`lbctl cleanup`), then the topology (which kills
//! what still runs in its cgroups and removes namespaces and cgroups), then the scratch
//! directory.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use netsim::{IdentityServer, NodeSpec, Place, Pod, PodSpec, Proto, Topology};

use super::agent::NodeAgent;
use super::spec::DemoSpec;
use super::{interrupt, join, progress};

/// A scratch directory removed (with what is left in it) on drop.
#[derive(Debug)]
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            eprintln!("demo: warning: removing {}: {e}", self.0.display());
        }
    }
}

/// The host outside the cluster, on the nodes' segment: no agent, no Kubernetes object; the
/// client of the NodePort from outside. Its address's last byte on the nodes' /24.
pub const OUTSIDE: (&str, u8) = ("outside", 100);

/// Everything the demo built. Fields drop in declaration order (see the module docs).
#[derive(Debug)]
pub struct Cluster {
    servers: Vec<IdentityServer>,
    agents: Vec<NodeAgent>,
    pods: BTreeMap<String, Pod>,
    outside: Place,
    topology: Topology,
    scratch: Scratch,
}

impl Cluster {
    /// Builds the topology and the servers, and starts the agents with the initial manifests
    /// (Nodes, Pods); returns once every agent answers `lbctl`.
    pub fn up(spec: &DemoSpec) -> Result<Cluster> {
        progress("creating topology…");
        let scratch = std::env::temp_dir().join(format!("lb-demo-{}", std::process::id()));
        std::fs::create_dir_all(&scratch)
            .with_context(|| format!("creating {}", scratch.display()))?;
        let scratch = Scratch(scratch);
        let mut topology = Topology::new()?;
        let mut nodes = Vec::new();
        for def in &spec.nodes {
            let node = topology.add_node(
                NodeSpec::new(&def.name)
                    .eth0(ipnet::IpNet::V4(ipnet::Ipv4Net::new(def.address, 24)?))
                    .pod_cidr(ipnet::IpNet::V4(def.pod_cidr)),
            )?;
            progress(&format!(
                "  node {} (eth0 {}/24, pods {})",
                def.name, def.address, def.pod_cidr
            ));
            nodes.push(node);
        }
        let outside = outside_address(spec)?;
        let host = topology.add_node(
            NodeSpec::new(OUTSIDE.0).eth0(ipnet::IpNet::V4(ipnet::Ipv4Net::new(outside, 24)?)),
        )?;
        progress(&format!(
            "  host {} outside the cluster (eth0 {outside}/24, no agent)",
            OUTSIDE.0
        ));
        let mut pods = BTreeMap::new();
        let mut servers = Vec::new();
        for def in &spec.pods {
            let node = nodes
                .iter()
                .find(|n| n.name() == def.node)
                .context("pods name known nodes (checked when read)")?;
            let pod = topology.add_pod(node, PodSpec::new(&def.name, def.ip))?;
            for &port in &def.ports {
                let addr = SocketAddr::new(def.ip.into(), port);
                servers.push(pod.server(Proto::Http, addr, &def.name)?);
            }
            let serving = if def.ports.is_empty() {
                "client".to_owned()
            } else {
                format!("HTTP on :{}", join(def.ports.iter()))
            };
            progress(&format!(
                "  pod {} on {} ({}, {serving})",
                def.name, def.node, def.ip
            ));
            pods.insert(def.name.clone(), pod);
        }
        let mut cluster = Cluster {
            servers,
            agents: Vec::new(),
            pods,
            outside: host.place().clone(),
            topology,
            scratch,
        };
        for node in &nodes {
            interrupt::check()?;
            let started = Instant::now();
            let mut agent =
                NodeAgent::start(node, &spec.values, &spec.initial_files, &cluster.scratch.0)?;
            agent.wait_for("answering lbctl", |_| true)?;
            progress(&format!(
                "agent on {} ready ({:.1} s)",
                node.name(),
                started.elapsed().as_secs_f64()
            ));
            cluster.agents.push(agent);
        }
        Ok(cluster)
    }

    /// Applies `file` on every node and waits until each agent's `lbctl service list` shows
    /// the frontends `frontends(node)` and every address of `backends`.
    pub fn apply(
        &mut self,
        file: &Path,
        frontends: impl Fn(&str) -> Vec<String>,
        backends: &[String],
    ) -> Result<()> {
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        progress(&format!("applying {name} on every node…"));
        for agent in &self.agents {
            agent.apply(file)?;
        }
        for agent in &mut self.agents {
            let want = frontends(agent.node());
            let took = agent.wait_for(&format!("{name} programmed"), |out| {
                want.iter()
                    .chain(backends)
                    .all(|w| out.contains(w.as_str()))
            })?;
            progress(&format!(
                "agent on {} programmed {} ({:.1} s)",
                agent.node(),
                join(want.iter()),
                took.as_secs_f64()
            ));
        }
        Ok(())
    }

    /// The topology (for its nodes' namespace and cgroup paths).
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The host outside the cluster.
    pub fn outside(&self) -> &Place {
        &self.outside
    }

    /// The pod called `name`.
    pub fn pod(&self, name: &str) -> Option<&Pod> {
        self.pods.get(name)
    }

    /// The agent of `node`.
    pub fn agent(&self, node: &str) -> Option<&NodeAgent> {
        self.agents.iter().find(|a| a.node() == node)
    }

    /// Takes everything down in order, reporting what could not be cleaned up.
    pub fn down(mut self) -> Result<()> {
        progress("cleaning up: stopping agents, lbctl cleanup, removing the topology…");
        self.servers.clear();
        let mut problems = Vec::new();
        for agent in &mut self.agents {
            if let Err(e) = agent.stop() {
                problems.push(format!("{e:#}"));
            }
        }
        let prefix = self.topology.prefix().to_owned();
        drop(self);
        if !problems.is_empty() {
            anyhow::bail!("cleanup incomplete: {}", problems.join("; "));
        }
        progress(&format!("cleaned up (topology {prefix} removed)"));
        Ok(())
    }
}

/// The outside host's address: byte [`OUTSIDE`]`.1` of the first node's /24, which no node may
/// hold.
fn outside_address(spec: &DemoSpec) -> Result<Ipv4Addr> {
    let [a, b, c, _] = spec.first_node().address.octets();
    let address = Ipv4Addr::new(a, b, c, OUTSIDE.1);
    if let Some(node) = spec.nodes.iter().find(|n| n.address == address) {
        anyhow::bail!(
            "node {} has {address}, the address of the demo's host outside the cluster",
            node.name
        );
    }
    Ok(address)
}
