//! Frontends: the addresses a service is reached at, with their type and scope.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::L3n4Addr;

/// The kind of frontend, named as `lbctl service list` prints it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ServiceType {
    /// The service's cluster IP(s).
    ClusterIP,
    /// A node address (or the wildcard) and the service's node port.
    NodePort,
    /// An ingress IP from the service's `status.loadBalancer`.
    LoadBalancer,
    /// One of the service's `spec.externalIPs`.
    ExternalIPs,
    /// A container's `hostPort` on this node.
    HostPort,
}

impl fmt::Display for ServiceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ServiceType::ClusterIP => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
            ServiceType::ExternalIPs => "ExternalIPs",
            ServiceType::HostPort => "HostPort",
        })
    }
}

/// Which traffic a frontend serves.
///
/// A service whose external and internal traffic policies differ gets two frontends per
/// node-facing address: the external one (traffic from outside the cluster, backends chosen by
/// `externalTrafficPolicy`) and the internal one (traffic from pods and the host, chosen by
/// `internalTrafficPolicy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Traffic from outside the cluster (and all traffic when the policies agree).
    External,
    /// Traffic from inside the cluster, when the policies differ.
    Internal,
}

/// One address a service answers at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Frontend {
    /// The address, port and protocol.
    pub addr: L3n4Addr,
    /// The kind of frontend.
    #[serde(rename = "type")]
    pub kind: ServiceType,
    /// External or internal traffic.
    pub scope: Scope,
}

impl Frontend {
    /// A frontend serving external (or all) traffic.
    pub fn external(addr: L3n4Addr, kind: ServiceType) -> Self {
        Frontend {
            addr,
            kind,
            scope: Scope::External,
        }
    }

    /// Whether this is a wildcard frontend (`0.0.0.0` / `::`): it stands for every local address
    /// of the node, loopback included, for NodePort and HostPort.
    pub fn is_wildcard(&self) -> bool {
        self.addr.ip.is_unspecified()
    }
}

impl fmt::Display for Frontend {
    /// `10.0.0.1:80`, with `/i` appended for internal-scope frontends.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.addr)?;
        if self.scope == Scope::Internal {
            f.write_str("/i")?;
        }
        Ok(())
    }
}
