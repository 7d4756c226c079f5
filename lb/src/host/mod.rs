//! What the agent needs from the node it runs on: the bpffs and cgroup v2 mounts, its network
//! namespace's cookie, the node's own addresses, the reserved local port range, and the
//! pods' namespaces and UDP sockets (for destroying sockets connected to removed backends), the
//! neighbour entries for the other nodes' next hops, and the kernel tick the packet programs
//! count seconds by.

mod addrs;
pub mod cgroup_query;
mod error;
pub mod features;
pub mod free_memory;
pub mod jiffies;
mod links;
mod mounts;
pub mod neigh;
mod netns;
mod pod_links;
pub mod pod_netns;
mod ports;
mod route;
mod rtnl;
pub mod sock_diag;

pub use addrs::{local_addresses, local_devices, node_addresses};
pub use error::HostError;
pub use links::{host_devices, HostDevice};
pub use mounts::{ensure_bpffs, ensure_cgroup2, find_mount};
pub(crate) use netns::socket_u64_option;
pub use netns::{in_initial_netns, own_netns_cookie, NetnsIdentity};
pub use pod_links::{pod_interfaces, PodInterface};
pub use ports::{
    protect_port_range, unprotect_port_range, PortRangeProtection, ProcSysctls, Sysctls,
    LOCAL_PORT_RANGE, RESERVED_PORTS,
};
pub use route::HostFib;
