//! What `lbctl` prints: the service list, the kube-proxy replacement status and trace-sock
//! events, as text laid out like the documents' examples and as JSON.

mod cgroup_tree;
pub mod explain;
mod service_list;
mod status;
mod table;
mod trace_sock;

pub use cgroup_tree::{CgroupEntry, CgroupTree};
pub use explain::{explain, EntryPoint, Explanation, FlowSpec, NodeState};
pub use service_list::{BackendEntry, ServiceEntry, ServiceList};
pub use status::{KprStatus, LocalAddressCount, ServiceTypes};
pub use trace_sock::TraceSockEvent;
