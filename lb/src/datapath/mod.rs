//! The kernel side: loading the eBPF programs, attaching them, and keeping their maps equal
//! to the desired state.

pub mod codec;
mod contents;
mod error;
mod kernel;
mod monitor;
mod netns_probe;
mod removed;
pub mod sim;
mod sock_lb;

pub use contents::{LayoutError, ListedFrontend, MapContents};
pub use error::DatapathError;
pub use kernel::{ApplyReport, ServiceMaps};
pub use monitor::TraceMonitor;
pub use netns_probe::netns_cookie_through_bpf;
pub use removed::{canonical, RemovedBackends};
pub use sock_lb::{pinned_links, SockLb, SockLbConfig, LINKS_DIR};
