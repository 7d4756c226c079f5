//! Prometheus metrics (`prometheus.enabled`, `prometheus.port`): what the operators of
//! kube-proxy and Cilium read, under the `lb_` prefix.
//!
//! [`Metrics`] holds them and is fed by the agent's loop; [`TerminatingEndpoints`] and
//! [`ProgrammingLatency`] are the pure logic of the two metrics computed from the
//! EndpointSlices' changes; [`buckets`] are kube-proxy's histogram buckets; [`MetricsServer`]
//! serves `GET /metrics` in the OpenMetrics text format.

pub mod buckets;
mod desired_counts;
mod programming;
mod registry;
mod server;
mod slice_changes;
mod terminating;

pub use programming::{trigger_time, ProgrammingLatency, LAST_CHANGE_TRIGGER_TIME};
pub use registry::{ErrorKind, Metrics, PREFIX};
pub use server::{MetricsServer, MetricsServerError};
pub use slice_changes::{SeenSlices, SliceChanges};
pub use terminating::TerminatingEndpoints;
