//! netsim: network topologies for privileged tests, scenarios and the demo.
//!
//! A [`Topology`] builds nodes (a network namespace and a cgroup v2 subtree each), pods inside
//! nodes (a namespace behind a veth, routed like a CNI does), and L2 segments between nodes (a
//! bridge in a private fabric namespace). Code runs inside a node or pod as a closure on a
//! thread ([`Place::in_netns`]) or as a child process in its namespace and cgroup
//! ([`Place::spawn`]). Identity servers, the `netsim-client` binary and packet capture let a
//! test see which backend answered, which address it saw, and what crossed a link.
//!
//! Everything is removed when the topology is dropped, also when a test panics.
//!
//! ```no_run
//! use netsim::{ClientMode, NodeSpec, PodSpec, Proto, Topology};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut topo = Topology::new()?;
//! let a = topo.add_node(NodeSpec::new("a").eth0("192.168.56.11/24".parse()?).pod_cidr("10.0.1.0/24".parse()?))?;
//! let b = topo.add_node(NodeSpec::new("b").eth0("192.168.56.12/24".parse()?).pod_cidr("10.0.2.0/24".parse()?))?;
//! let client = topo.add_pod(&a, PodSpec::new("client", "10.0.1.5".parse()?))?;
//! let backend = topo.add_pod(&b, PodSpec::new("backend", "10.0.2.7".parse()?))?;
//! let _server = backend.server(Proto::Tcp, "10.0.2.7:8080".parse()?, "backend-1")?;
//! let reply = client.client_once(ClientMode::Tcp, "10.0.2.7:8080".parse()?)?;
//! assert_eq!(reply.identity(), Some("backend-1"));
//! # Ok(()) }
//! ```

mod capture;
mod cgroup;
mod client;
mod error;
mod held;
mod link;
mod netlink;
mod netns;
mod place;
mod pmtu;
mod process;
mod reclaim;
mod server;
mod spec;
mod tier;
mod topology;
mod xdp;

pub use capture::{Capture, Frame};
pub use cgroup::cgroup2_mount;
pub use client::{binary_path, exchange, exchange_from, ClientMode, Reply};
pub use error::{Error, Result};
pub use held::{HeldClient, HeldSocket};
pub use link::{GATEWAY_MAC, GATEWAY_V4, GATEWAY_V6};
pub use place::{Place, CLIENT_TIMEOUT};
pub use pmtu::{path_mtu, PathMtu};
pub use process::{self_command, Process};
pub use server::{http_response, identity_line, BoundSocket, IdentityServer, Proto};
pub use spec::{NodeSpec, PodSpec};
pub use tier::Tier;
pub use topology::{why_unavailable, Node, Pod, Topology, RUN_ROOT};
