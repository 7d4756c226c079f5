//! Services as the datapath sees them: one frontend, its backends and its policies.

use std::fmt;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{Backend, Frontend};

/// Default session affinity timeout: three hours, as Kubernetes and the documents specify.
pub const DEFAULT_AFFINITY_TIMEOUT_SECS: u32 = 3 * 60 * 60;

/// Longest session affinity timeout Kubernetes accepts (one day).
pub const MAX_AFFINITY_TIMEOUT_SECS: u32 = 24 * 60 * 60;

/// `namespace/name` of the Kubernetes object a frontend comes from.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServiceName {
    /// Namespace.
    pub namespace: String,
    /// Name of the Service (or of the Pod, for HostPort frontends).
    pub name: String,
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// `externalTrafficPolicy` / `internalTrafficPolicy`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub enum TrafficPolicy {
    /// Any backend in the cluster (the default).
    #[default]
    Cluster,
    /// Only backends on the node that received the traffic.
    Local,
}

/// Per-service policies that shape backend selection.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ServicePolicies {
    /// `spec.externalTrafficPolicy`.
    pub external_traffic_policy: TrafficPolicy,
    /// `spec.internalTrafficPolicy`.
    pub internal_traffic_policy: TrafficPolicy,
    /// `sessionAffinity: ClientIP` timeout in seconds; `None` without affinity.
    pub session_affinity_timeout_secs: Option<u32>,
    /// `spec.loadBalancerSourceRanges`: external clients allowed; empty allows all.
    pub source_ranges: Vec<IpNet>,
    /// The `service.kubernetes.io/service-proxy-name` label, if set.
    pub proxy_name: Option<String>,
    /// Whether backends were narrowed by topology hints for this node's zone.
    pub topology_aware: bool,
}

/// One frontend of a service with the backends it balances over.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LbService {
    /// Where the service is reached.
    pub frontend: Frontend,
    /// The Kubernetes object it comes from.
    pub name: ServiceName,
    /// The service port's name (empty for single-port services).
    pub port_name: String,
    /// The backends this frontend may use, after traffic policy and topology filtering.
    pub backends: Vec<Backend>,
    /// The service's policies.
    pub policies: ServicePolicies,
    /// The frontend's traffic policy is `Local` and none of the service's endpoints is on
    /// this node, though it has some elsewhere: its traffic is dropped here (kube-proxy's
    /// "has no local endpoints"), where a service without any endpoint is rejected.
    #[serde(default)]
    pub no_local_backends: bool,
}
