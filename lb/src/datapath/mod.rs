//! The kernel side: loading the eBPF programs, attaching them, and writing their maps.

mod error;
mod sock_lb;

pub use error::DatapathError;
pub use sock_lb::{BackendEntry, SockLb, SockLbConfig};
