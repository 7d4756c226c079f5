//! The service model: plain data with no I/O, shared by translation, the reconciler, the
//! simulator and `lbctl`.

mod addr;
mod backend;
mod desired;
mod frontend;
mod service;

pub use addr::{AddrParseError, IpFamily, L3n4Addr, L4Protocol, IDENTITY_LEN};
pub use backend::{Backend, BackendState, Placement, DEFAULT_BACKEND_WEIGHT};
pub use desired::DesiredState;
pub use frontend::{Frontend, Scope, ServiceType};
pub use service::{
    LbService, ServiceName, ServicePolicies, TrafficPolicy, DEFAULT_AFFINITY_TIMEOUT_SECS,
    MAX_AFFINITY_TIMEOUT_SECS,
};
