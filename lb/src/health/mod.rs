//! The kube-proxy-replacement health server (`kubeProxyReplacementHealthzBindAddr`): `/healthz`
//! and `/livez` answered as kube-proxy's `healthzBindAddress` server answers them, so load
//! balancers' health checks and kubelet probes written for kube-proxy work unchanged.
//!
//! [`HealthState`] is the pure logic the agent loop feeds (a change queued, the maps updated,
//! this node's eligibility); [`Health`] shares it with the server under a [`Clock`];
//! [`respond`] turns a request's path into the answer; [`HealthServer`] serves it over HTTP.
//!
//! `nodePort.enableHealthCheck`: [`ServiceHealthServers`] serves each `externalTrafficPolicy:
//! Local` Service's `healthCheckNodePort` as kube-proxy does, [`service_answer`] being its
//! answer from this node's ready endpoints of the service and the same [`Health`].

mod node;
mod response;
mod server;
mod service_check;
mod service_servers;
mod state;

pub use node::node_eligible;
pub use response::{respond, Answer, Endpoint};
pub(crate) use server::{serve_on_thread, Responder};
pub use server::{HealthServer, HealthServerError};
pub use service_check::service_answer;
pub use service_servers::{ServiceHealthServers, ServicePortError};
pub use state::{Clock, Health, HealthState, SystemClock, HEALTH_TIMEOUT};
