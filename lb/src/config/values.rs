//! The agent's options as a typed tree, with the same names, nesting and defaults as the
//! documents' Helm values.
//!
//! This is what the user wrote, after defaults; [`super::AgentConfig`] is what it means
//! (switches implied by `kubeProxyReplacement`, parsed ranges and seeds, checked combinations).

use serde::{Deserialize, Serialize};

use super::helm::{bool_or_string, devices_list};

/// Every option, as in a Helm values file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Values {
    /// Replace kube-proxy entirely: implies `socketLB.enabled`, `nodePort.enabled`,
    /// `externalIPs.enabled` and `hostPort.enabled`, and refuses to start on kernels that lack
    /// what they need.
    #[serde(deserialize_with = "bool_or_string")]
    pub kube_proxy_replacement: bool,
    /// Socket-level load balancing (cgroup hooks).
    #[serde(rename = "socketLB")]
    pub socket_lb: SocketLb,
    /// NodePort handling.
    pub node_port: NodePort,
    /// Services' `externalIPs`.
    #[serde(rename = "externalIPs")]
    pub external_ips: Toggle,
    /// Containers' `hostPort`.
    pub host_port: Toggle,
    /// North-south load balancing.
    pub load_balancer: LoadBalancer,
    /// Maglev table parameters.
    pub maglev: Maglev,
    /// `native` (direct routing) or `tunnel`.
    pub routing_mode: RoutingMode,
    /// Encapsulation used in tunnel routing (and by DSR with Geneve dispatch).
    pub tunnel_protocol: TunnelProtocol,
    /// Devices to serve NodePort on: names or `prefix+` wildcards; empty means auto-detect.
    #[serde(deserialize_with = "devices_list")]
    pub devices: Vec<String>,
    /// BPF map and pinning options.
    pub bpf: Bpf,
    /// Datapath feature switches.
    pub config: FeatureConfig,
    /// Kubernetes client options.
    pub k8s: K8s,
    /// API server address to use when no kube-proxy provides the `kubernetes` ClusterIP.
    pub k8s_service_host: Option<String>,
    /// API server port.
    pub k8s_service_port: Option<u16>,
    /// `IP:PORT` for the kube-proxy-replacement `/healthz` server; unset disables it.
    pub kube_proxy_replacement_healthz_bind_addr: Option<String>,
    /// cgroup v2 mount used to attach the socket hooks.
    pub cgroup: Cgroup,
    /// Protocols the socket hooks handle (from the 1.6 "host-reachable services" guide).
    pub host_services: HostServices,
    /// IPv4 support.
    pub ipv4: Toggle,
    /// IPv6 support.
    pub ipv6: Toggle,
    /// Keep terminating-but-serving endpoints for existing connections (graceful termination).
    #[serde(deserialize_with = "bool_or_string")]
    pub enable_k8s_terminating_endpoint: bool,
    /// Neighbour entries for the other nodes' next hops (the documents' "Neighbor Discovery").
    #[serde(rename = "l2NeighDiscovery")]
    pub l2_neigh_discovery: L2NeighDiscovery,
    /// The Prometheus metrics endpoint (`/metrics`).
    pub prometheus: Prometheus,
}

impl Default for Values {
    fn default() -> Self {
        Values {
            kube_proxy_replacement: false,
            socket_lb: SocketLb::default(),
            node_port: NodePort::default(),
            external_ips: Toggle::unset(),
            host_port: Toggle::unset(),
            load_balancer: LoadBalancer::default(),
            maglev: Maglev::default(),
            routing_mode: RoutingMode::Tunnel,
            tunnel_protocol: TunnelProtocol::Vxlan,
            devices: Vec::new(),
            bpf: Bpf::default(),
            config: FeatureConfig::default(),
            k8s: K8s::default(),
            k8s_service_host: None,
            k8s_service_port: None,
            kube_proxy_replacement_healthz_bind_addr: None,
            cgroup: Cgroup::default(),
            host_services: HostServices::default(),
            ipv4: Toggle::on(),
            ipv6: Toggle::off(),
            enable_k8s_terminating_endpoint: true,
            l2_neigh_discovery: L2NeighDiscovery::default(),
            prometheus: Prometheus::default(),
        }
    }
}

/// A component switch; `None` leaves it to `kubeProxyReplacement` (or to its own default).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Toggle {
    /// Whether the component is on; unset follows `kubeProxyReplacement`.
    #[serde(deserialize_with = "super::helm::opt_bool_or_string")]
    pub enabled: Option<bool>,
}

impl Toggle {
    fn unset() -> Self {
        Toggle { enabled: None }
    }
    fn on() -> Self {
        Toggle {
            enabled: Some(true),
        }
    }
    fn off() -> Self {
        Toggle {
            enabled: Some(false),
        }
    }
}

/// `socketLB.*`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct SocketLb {
    /// Socket-level load balancing; unset follows `kubeProxyReplacement`.
    #[serde(deserialize_with = "super::helm::opt_bool_or_string")]
    pub enabled: Option<bool>,
    /// Only translate sockets in the host network namespace; pods fall back to tc.
    #[serde(deserialize_with = "bool_or_string")]
    pub host_namespace_only: bool,
}

/// `nodePort.*`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct NodePort {
    /// NodePort handling; unset follows `kubeProxyReplacement`.
    #[serde(deserialize_with = "super::helm::opt_bool_or_string")]
    pub enabled: Option<bool>,
    /// The NodePort range as `LOW,HIGH` (Helm form) or `LOW-HIGH`.
    pub range: String,
    /// Refuse `bind(2)` to NodePort service ports in the host namespace.
    #[serde(deserialize_with = "bool_or_string")]
    pub bind_protection: bool,
    /// Add the NodePort range to `ip_local_reserved_ports` when it overlaps the ephemeral range.
    #[serde(deserialize_with = "bool_or_string")]
    pub auto_protect_port_ranges: bool,
    /// The device used between nodes (name or `prefix+` wildcard); unset picks one.
    pub direct_routing_device: Option<String>,
    /// Serve the NodePort health check server.
    #[serde(deserialize_with = "bool_or_string")]
    pub enable_health_check: bool,
}

impl Default for NodePort {
    fn default() -> Self {
        NodePort {
            enabled: None,
            range: "30000,32767".to_owned(),
            bind_protection: true,
            auto_protect_port_ranges: true,
            direct_routing_device: None,
            enable_health_check: true,
        }
    }
}

/// `loadBalancer.*`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct LoadBalancer {
    /// How node-external traffic reaches remote backends.
    pub mode: LbMode,
    /// How DSR carries the service address to the backend.
    pub dsr_dispatch: DsrDispatch,
    /// Backend selection for north-south traffic.
    pub algorithm: Algorithm,
    /// XDP acceleration of NodePort/LoadBalancer/externalIPs.
    pub acceleration: Acceleration,
    /// Honour EndpointSlice topology hints (topology-aware routing, traffic distribution).
    #[serde(deserialize_with = "bool_or_string")]
    pub service_topology: bool,
}

/// `loadBalancer.mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LbMode {
    /// Forward with source NAT; replies come back through this node.
    #[default]
    Snat,
    /// Direct server return: backends reply to the client directly.
    Dsr,
    /// DSR for TCP, SNAT for UDP.
    Hybrid,
}

/// `loadBalancer.dsrDispatch`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DsrDispatch {
    /// IPv4 option / IPv6 destination option carrying the service address.
    #[default]
    Opt,
    /// Geneve encapsulation with the service address in a Geneve option.
    Geneve,
}

/// `loadBalancer.algorithm`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    /// Uniformly random backend per new flow.
    #[default]
    Random,
    /// Maglev consistent hashing of the 5-tuple.
    Maglev,
}

/// `loadBalancer.acceleration`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Acceleration {
    /// No XDP.
    #[default]
    Disabled,
    /// Native XDP on every NodePort device; fail if a driver lacks it.
    Native,
    /// Native XDP where the driver supports it.
    BestEffort,
}

/// `maglev.*`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Maglev {
    /// Entries per service table (M): one of the listed primes.
    pub table_size: u32,
    /// Base64 of 12 random bytes, the same on every node; unset uses the built-in seed.
    pub hash_seed: Option<String>,
}

impl Default for Maglev {
    fn default() -> Self {
        Maglev {
            table_size: crate::maglev::DEFAULT_TABLE_SIZE,
            hash_seed: None,
        }
    }
}

/// `routingMode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoutingMode {
    /// Direct routing between nodes.
    Native,
    /// Encapsulation between nodes.
    Tunnel,
}

/// `tunnelProtocol`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TunnelProtocol {
    /// VXLAN.
    Vxlan,
    /// Geneve.
    Geneve,
}

/// `bpf.*`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Bpf {
    /// Entries in the service, backend and affinity maps.
    pub lb_map_max: u32,
    /// Allow access to ClusterIP services from outside the cluster.
    #[serde(rename = "lbExternalClusterIP", deserialize_with = "bool_or_string")]
    pub lb_external_cluster_ip: bool,
    /// Turn off the CVE-2020-8554 externalIPs mitigation.
    #[serde(
        rename = "disableExternalIPMitigation",
        deserialize_with = "bool_or_string"
    )]
    pub disable_external_ip_mitigation: bool,
    /// The bpffs mount under which this agent pins its maps (one per node when several agents
    /// share a kernel).
    pub root: String,
    /// Mount a bpffs at `root` when none is mounted there.
    pub auto_mount: BpfAutoMount,
}

/// `bpf.autoMount.*`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct BpfAutoMount {
    /// Whether to mount bpffs when missing. Off in a pod, where a mount of the agent's own
    /// would vanish with the pod and take the pinned maps with it (the DaemonSet mounts it on
    /// the host before the agent starts).
    #[serde(deserialize_with = "bool_or_string")]
    pub enabled: bool,
}

impl Default for BpfAutoMount {
    fn default() -> Self {
        BpfAutoMount { enabled: true }
    }
}

/// Default `bpf.lbMapMax`.
pub const DEFAULT_LB_MAP_MAX: u32 = 65536;

impl Default for Bpf {
    fn default() -> Self {
        Bpf {
            lb_map_max: DEFAULT_LB_MAP_MAX,
            lb_external_cluster_ip: false,
            disable_external_ip_mitigation: false,
            root: "/sys/fs/bpf".to_owned(),
            auto_mount: BpfAutoMount::default(),
        }
    }
}

/// `config.*`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct FeatureConfig {
    /// Session affinity; unset means on with kube-proxy replacement, off without it.
    #[serde(deserialize_with = "super::helm::opt_bool_or_string")]
    pub session_affinity: Option<bool>,
    /// Enforce `loadBalancerSourceRanges`.
    #[serde(deserialize_with = "bool_or_string")]
    pub svc_source_range_check: bool,
}

impl Default for FeatureConfig {
    fn default() -> Self {
        FeatureConfig {
            session_affinity: None,
            svc_source_range_check: true,
        }
    }
}

/// `k8s.*`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct K8s {
    /// Manage only services whose `service.kubernetes.io/service-proxy-name` label equals this;
    /// empty manages only services without the label.
    pub service_proxy_name: String,
}

/// `cgroup.*`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Cgroup {
    /// Mount cgroup v2 at `hostRoot` when it is not mounted there.
    pub auto_mount: CgroupAutoMount,
    /// Where cgroup v2 is (or is to be) mounted; the socket hooks attach to its root.
    pub host_root: String,
}

/// `cgroup.autoMount.*`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct CgroupAutoMount {
    /// Whether to mount cgroup v2 when missing.
    #[serde(deserialize_with = "bool_or_string")]
    pub enabled: bool,
}

impl Default for CgroupAutoMount {
    fn default() -> Self {
        CgroupAutoMount { enabled: true }
    }
}

impl Default for Cgroup {
    fn default() -> Self {
        Cgroup {
            auto_mount: CgroupAutoMount::default(),
            host_root: "/run/lb-agent/cgroupv2".to_owned(),
        }
    }
}

/// `hostServices.*`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct HostServices {
    /// Comma-separated protocols the socket hooks translate: `tcp`, `udp` or `tcp,udp`.
    pub protocols: String,
}

impl Default for HostServices {
    fn default() -> Self {
        HostServices {
            protocols: "tcp,udp".to_owned(),
        }
    }
}

/// `l2NeighDiscovery.*`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct L2NeighDiscovery {
    /// Keep neighbour entries for the other nodes' next hops; unset follows NodePort handling
    /// (the documents do it "when kube-proxy replacement is enabled").
    #[serde(deserialize_with = "super::helm::opt_bool_or_string")]
    pub enabled: Option<bool>,
    /// How often the agent asks the kernel to re-resolve the entries where the kernel cannot
    /// keep them fresh itself (no managed neighbours, before Linux 5.16): a duration such as
    /// `30s`, `1m` or `1m30s`.
    pub refresh_period: String,
}

impl Default for L2NeighDiscovery {
    fn default() -> Self {
        L2NeighDiscovery {
            enabled: None,
            refresh_period: "30s".to_owned(),
        }
    }
}

/// Cilium's agent metrics port, `prometheus.port`'s default.
pub const DEFAULT_PROMETHEUS_PORT: u16 = 9962;

/// `prometheus.*`: the agent's metrics, as Cilium's chart names them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Prometheus {
    /// Serve `GET /metrics` (Prometheus/OpenMetrics text) on every address of the node.
    #[serde(deserialize_with = "bool_or_string")]
    pub enabled: bool,
    /// The TCP port of `/metrics`.
    pub port: u16,
}

impl Default for Prometheus {
    fn default() -> Self {
        Prometheus {
            enabled: false,
            port: DEFAULT_PROMETHEUS_PORT,
        }
    }
}
