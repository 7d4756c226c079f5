//! The options translation depends on, taken from the agent's configuration.

use crate::config::{AgentConfig, PortRange};

/// What translation needs to know about the agent's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TranslateOptions {
    /// Program NodePort (and LoadBalancer) frontends.
    pub node_port: bool,
    /// Program externalIPs frontends.
    pub external_ips: bool,
    /// Program hostPort frontends.
    pub host_port: bool,
    /// The NodePort range (hostPorts inside it are refused).
    pub node_port_range: PortRange,
    /// `k8s.serviceProxyName`.
    pub service_proxy_name: String,
    /// Honour topology hints (`loadBalancer.serviceTopology`).
    pub service_topology: bool,
    /// Keep terminating-but-serving endpoints (graceful termination).
    pub terminating_endpoints: bool,
    /// Keep `sessionAffinity: ClientIP` (`config.sessionAffinity`).
    pub session_affinity: bool,
    /// Serve IPv4.
    pub ipv4: bool,
    /// Serve IPv6.
    pub ipv6: bool,
    /// Enforce `loadBalancerSourceRanges` (`config.svcSourceRangeCheck`).
    pub source_range_check: bool,
    /// Serve `healthCheckNodePort`s: NodePort handling on and `nodePort.enableHealthCheck`.
    pub health_check_node_ports: bool,
}

impl From<&AgentConfig> for TranslateOptions {
    fn from(c: &AgentConfig) -> Self {
        TranslateOptions {
            node_port: c.node_port(),
            external_ips: c.external_ips(),
            host_port: c.host_port(),
            node_port_range: c.node_port_range(),
            service_proxy_name: c.values().k8s.service_proxy_name.clone(),
            service_topology: c.values().load_balancer.service_topology,
            terminating_endpoints: c.graceful_termination(),
            session_affinity: c.session_affinity(),
            ipv4: c.ipv4(),
            ipv6: c.ipv6(),
            source_range_check: c.values().config.svc_source_range_check,
            health_check_node_ports: c.node_port() && c.values().node_port.enable_health_check,
        }
    }
}

impl Default for TranslateOptions {
    /// Full kube-proxy replacement, both families, default range.
    fn default() -> Self {
        TranslateOptions {
            node_port: true,
            external_ips: true,
            host_port: true,
            node_port_range: PortRange::DEFAULT,
            service_proxy_name: String::new(),
            service_topology: false,
            terminating_endpoints: true,
            session_affinity: true,
            ipv4: true,
            ipv6: true,
            source_range_check: true,
            health_check_node_ports: true,
        }
    }
}
