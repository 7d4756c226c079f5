//! What the options mean once defaults and implications are resolved, checked as a whole.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::types::{DevicePattern, Period, PortRange, Protocols};
use super::{
    Acceleration, ConfigError, ConfigErrors, DsrDispatch, LbMode, RoutingMode, TunnelProtocol,
    Values,
};
use crate::maglev::{HashSeed, TABLE_SIZES};

/// Largest `bpf.lbMapMax` accepted: the kernel caps hash maps well above this, but beyond it
/// memory per node grows past what any node has.
pub const MAX_LB_MAP_MAX: u32 = 1 << 24;

/// The lowest source port the NodePort programs give a flow they forward to a backend on another
/// node (SNAT): above Linux's default ephemeral range (`net.ipv4.ip_local_port_range`, 32768–60999),
/// so a forwarded flow never takes the 4-tuple of the node's own connection to the backend.
pub const SNAT_PORT_FLOOR: u16 = 61000;

/// The SNAT source ports for a NodePort range: from above both the NodePort range and
/// [`SNAT_PORT_FLOOR`] to 65535, as Cilium takes the ports above its NodePort range. They must
/// not be NodePorts (the node would take a reply for a service), so a NodePort range reaching
/// 65535 leaves none, and `None` says so.
pub fn snat_port_range(node_port_range: PortRange) -> Option<PortRange> {
    let low = node_port_range.high.checked_add(1)?.max(SNAT_PORT_FLOOR);
    Some(PortRange { low, high: 65535 })
}

/// The validated configuration the agent runs with.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    values: Values,
    node_port_range: PortRange,
    maglev_seed: HashSeed,
    devices: Vec<DevicePattern>,
    direct_routing_device: Option<DevicePattern>,
    healthz_bind_addr: Option<SocketAddr>,
    protocols: Protocols,
    neigh_refresh_period: Duration,
    warnings: Vec<String>,
}

impl AgentConfig {
    /// Checks `values` as a whole; every problem is reported.
    pub fn from_values(values: Values) -> Result<Self, ConfigErrors> {
        let mut errors = Vec::new();
        let node_port_range = parse_or(&mut errors, "nodePort.range", &values.node_port.range)
            .unwrap_or(PortRange::DEFAULT);
        let maglev_seed = match &values.maglev.hash_seed {
            None => HashSeed::default(),
            Some(s) => s
                .parse()
                .unwrap_or_else(|err: <HashSeed as std::str::FromStr>::Err| {
                    errors.push(ConfigError::invalid("maglev.hashSeed", s, err.reason()));
                    HashSeed::default()
                }),
        };
        if !TABLE_SIZES.contains(&values.maglev.table_size) {
            let sizes: Vec<String> = TABLE_SIZES.iter().map(u32::to_string).collect();
            errors.push(ConfigError::InvalidValue {
                key: "maglev.tableSize".into(),
                value: values.maglev.table_size.to_string(),
                expected: format!("expected one of the primes {}", sizes.join(", ")),
            });
        }
        let devices = values
            .devices
            .iter()
            .filter_map(|d| parse_or(&mut errors, "devices", d))
            .collect();
        let direct_routing_device = values
            .node_port
            .direct_routing_device
            .as_deref()
            .and_then(|d| parse_or(&mut errors, "nodePort.directRoutingDevice", d));
        let healthz_bind_addr = values
            .kube_proxy_replacement_healthz_bind_addr
            .as_deref()
            .filter(|s| !s.is_empty())
            .and_then(|s| {
                s.parse()
                    .map_err(|_| {
                        errors.push(ConfigError::invalid(
                            "kubeProxyReplacementHealthzBindAddr",
                            s,
                            "expected IP:PORT, e.g. 0.0.0.0:10256 or [::]:10256",
                        ))
                    })
                    .ok()
            });
        let protocols = parse_or(
            &mut errors,
            "hostServices.protocols",
            &values.host_services.protocols,
        )
        .unwrap_or(Protocols {
            tcp: true,
            udp: true,
        });
        let neigh_refresh_period = parse_or::<Period>(
            &mut errors,
            "l2NeighDiscovery.refreshPeriod",
            &values.l2_neigh_discovery.refresh_period,
        )
        .map_or(Duration::from_secs(30), |p| p.0);
        check_scalars(&values, &mut errors);
        let config = AgentConfig {
            values,
            node_port_range,
            maglev_seed,
            devices,
            direct_routing_device,
            healthz_bind_addr,
            protocols,
            neigh_refresh_period,
            warnings: Vec::new(),
        };
        config.check_combinations(&mut errors);
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        let warnings = config.collect_warnings();
        Ok(AgentConfig { warnings, ..config })
    }

    /// The options as given, after defaults.
    pub fn values(&self) -> &Values {
        &self.values
    }

    /// The options with every implied switch resolved, as `lb-agent --dry-run` prints them.
    pub fn effective_values(&self) -> Values {
        let mut v = self.values.clone();
        v.socket_lb.enabled = Some(self.socket_lb());
        v.node_port.enabled = Some(self.node_port());
        v.external_ips.enabled = Some(self.external_ips());
        v.host_port.enabled = Some(self.host_port());
        v.config.session_affinity = Some(self.session_affinity());
        v.l2_neigh_discovery.enabled = Some(self.l2_neigh_discovery());
        v.maglev.hash_seed = Some(self.maglev_seed.to_string());
        v.node_port.range = format!("{},{}", self.node_port_range.low, self.node_port_range.high);
        v
    }

    /// Warnings about legal but questionable combinations.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// `kubeProxyReplacement`.
    pub fn kube_proxy_replacement(&self) -> bool {
        self.values.kube_proxy_replacement
    }

    fn component(&self, explicit: Option<bool>) -> bool {
        explicit.unwrap_or(self.values.kube_proxy_replacement)
    }

    /// Socket-level load balancing.
    pub fn socket_lb(&self) -> bool {
        self.component(self.values.socket_lb.enabled)
    }

    /// NodePort (and with it LoadBalancer) handling.
    pub fn node_port(&self) -> bool {
        self.component(self.values.node_port.enabled)
    }

    /// externalIPs handling.
    pub fn external_ips(&self) -> bool {
        self.component(self.values.external_ips.enabled)
    }

    /// hostPort handling.
    pub fn host_port(&self) -> bool {
        self.component(self.values.host_port.enabled)
    }

    /// Session affinity: on by default with kube-proxy replacement, off without it.
    pub fn session_affinity(&self) -> bool {
        self.component(self.values.config.session_affinity)
    }

    /// Neighbour entries for the other nodes' next hops: on by default with the NodePort
    /// datapath (which forwards to them), which kube-proxy replacement turns on.
    pub fn l2_neigh_discovery(&self) -> bool {
        self.values
            .l2_neigh_discovery
            .enabled
            .unwrap_or_else(|| self.node_port())
    }

    /// How often the agent re-resolves the neighbour entries itself, where the kernel has no
    /// managed neighbours (`l2NeighDiscovery.refreshPeriod`).
    pub fn neigh_refresh_period(&self) -> Duration {
        self.neigh_refresh_period
    }

    /// Graceful termination of terminating endpoints.
    pub fn graceful_termination(&self) -> bool {
        self.values.enable_k8s_terminating_endpoint
    }

    /// NAT46/NAT64 for NodePort: needs both families and the NodePort datapath.
    pub fn nat46x64(&self) -> bool {
        self.ipv4() && self.ipv6() && self.node_port()
    }

    /// IPv4 enabled.
    pub fn ipv4(&self) -> bool {
        self.values.ipv4.enabled.unwrap_or(true)
    }

    /// IPv6 enabled.
    pub fn ipv6(&self) -> bool {
        self.values.ipv6.enabled.unwrap_or(false)
    }

    /// The NodePort range.
    pub fn node_port_range(&self) -> PortRange {
        self.node_port_range
    }

    /// The SNAT source ports of forwarded NodePort flows ([`snat_port_range`] of the configured
    /// NodePort range). With NodePort on, a range that leaves none is refused at start-up; with
    /// it off (nothing is forwarded) such a range gives the one port 65535.
    pub fn snat_port_range(&self) -> PortRange {
        snat_port_range(self.node_port_range).unwrap_or(PortRange {
            low: 65535,
            high: 65535,
        })
    }

    /// The Maglev seed.
    pub fn maglev_seed(&self) -> &HashSeed {
        &self.maglev_seed
    }

    /// The `devices` patterns; empty means auto-detection.
    pub fn devices(&self) -> &[DevicePattern] {
        &self.devices
    }

    /// `nodePort.directRoutingDevice`.
    pub fn direct_routing_device(&self) -> Option<&DevicePattern> {
        self.direct_routing_device.as_ref()
    }

    /// Address of the `/healthz` server, if enabled.
    pub fn healthz_bind_addr(&self) -> Option<SocketAddr> {
        self.healthz_bind_addr
    }

    /// The port of the `/metrics` server, when `prometheus.enabled` is on.
    pub fn prometheus_port(&self) -> Option<u16> {
        self.values
            .prometheus
            .enabled
            .then_some(self.values.prometheus.port)
    }

    /// Protocols the socket hooks translate.
    pub fn protocols(&self) -> Protocols {
        self.protocols
    }

    /// Where the agent pins its maps.
    pub fn bpf_root(&self) -> &Path {
        Path::new(&self.values.bpf.root)
    }

    /// Where the socket hooks attach.
    pub fn cgroup_root(&self) -> PathBuf {
        PathBuf::from(&self.values.cgroup.host_root)
    }

    /// Whether DSR is used for some traffic (`dsr` or `hybrid`).
    pub fn uses_dsr(&self) -> bool {
        matches!(self.values.load_balancer.mode, LbMode::Dsr | LbMode::Hybrid)
    }

    fn check_combinations(&self, errors: &mut Vec<ConfigError>) {
        let v = &self.values;
        let lb = &v.load_balancer;
        let mode = format!("loadBalancer.mode={}", enum_name(&lb.mode));
        if self.node_port() && snat_port_range(self.node_port_range).is_none() {
            errors.push(ConfigError::Conflict {
                options: format!("nodePort.range={}", self.node_port_range),
                reason: "NodePort traffic forwarded to another node leaves with a source port \
                         above the NodePort range (and at least 61000), and this range leaves \
                         none: end nodePort.range below 65535"
                    .to_owned(),
            });
        }
        if v.l2_neigh_discovery.enabled == Some(true) && !self.node_port() {
            errors.push(ConfigError::Conflict {
                options: "l2NeighDiscovery.enabled=true with NodePort handling off".into(),
                reason: "the neighbour entries serve the NodePort datapath's forwarding on its \
                         devices: set kubeProxyReplacement=true or nodePort.enabled=true"
                    .into(),
            });
        }
        if self.uses_dsr() && !self.node_port() {
            errors.push(ConfigError::Conflict {
                options: format!("{mode} with NodePort handling off"),
                reason: "DSR is a NodePort datapath mode: set kubeProxyReplacement=true or \
                         nodePort.enabled=true"
                    .into(),
            });
        }
        if self.uses_dsr()
            && lb.dsr_dispatch == DsrDispatch::Opt
            && v.routing_mode == RoutingMode::Tunnel
        {
            errors.push(ConfigError::Conflict {
                options: format!("{mode} with loadBalancer.dsrDispatch=opt and routingMode=tunnel"),
                reason: "DSR with the IP option / IPv6 extension header needs direct routing: set \
                         routingMode=native, or use loadBalancer.dsrDispatch=geneve with \
                         tunnelProtocol=geneve, or loadBalancer.mode=snat"
                    .into(),
            });
        }
        if self.uses_dsr()
            && lb.dsr_dispatch == DsrDispatch::Geneve
            && v.tunnel_protocol == TunnelProtocol::Vxlan
        {
            errors.push(ConfigError::Conflict {
                options: format!(
                    "{mode} with loadBalancer.dsrDispatch=geneve and tunnelProtocol=vxlan"
                ),
                reason:
                    "DSR with Geneve dispatch does not work with VXLAN: set tunnelProtocol=geneve"
                        .into(),
            });
        }
        if lb.acceleration != Acceleration::Disabled && !self.node_port() {
            errors.push(ConfigError::Conflict {
                options: format!(
                    "loadBalancer.acceleration={} with NodePort handling off",
                    enum_name(&lb.acceleration)
                ),
                reason: "XDP accelerates NodePort, LoadBalancer and externalIPs services: set \
                         kubeProxyReplacement=true or nodePort.enabled=true"
                    .into(),
            });
        }
        if !self.ipv4() && !self.ipv6() {
            errors.push(ConfigError::Conflict {
                options: "ipv4.enabled=false with ipv6.enabled=false".into(),
                reason: "at least one address family must be enabled".into(),
            });
        }
        if !v.cgroup.auto_mount.enabled && v.cgroup.host_root.is_empty() {
            errors.push(ConfigError::Conflict {
                options: "cgroup.autoMount.enabled=false with an empty cgroup.hostRoot".into(),
                reason: "set cgroup.hostRoot to where cgroup v2 is mounted, e.g. /sys/fs/cgroup"
                    .into(),
            });
        }
    }

    fn collect_warnings(&self) -> Vec<String> {
        let v = &self.values;
        let mut warnings = Vec::new();
        if !v.kube_proxy_replacement && self.node_port() && v.node_port.enable_health_check {
            warnings.push(
                "nodePort.enabled=true beside kube-proxy with nodePort.enableHealthCheck=true: \
                 kube-proxy serves the same health check port; set nodePort.enableHealthCheck=false"
                    .into(),
            );
        }
        if v.kube_proxy_replacement {
            let off: Vec<&str> = [
                ("socketLB.enabled", v.socket_lb.enabled),
                ("nodePort.enabled", v.node_port.enabled),
                ("externalIPs.enabled", v.external_ips.enabled),
                ("hostPort.enabled", v.host_port.enabled),
            ]
            .into_iter()
            .filter_map(|(key, set)| (set == Some(false)).then_some(key))
            .collect();
            if !off.is_empty() {
                warnings.push(format!(
                    "kubeProxyReplacement=true with {} set to false: kube-proxy's job is not fully \
                     done here, so keep kube-proxy for what is off",
                    off.join(", ")
                ));
            }
        }
        if v.socket_lb.host_namespace_only && !self.socket_lb() {
            warnings.push(
                "socketLB.hostNamespaceOnly=true has no effect while socket LB is off".into(),
            );
        } else if v.socket_lb.host_namespace_only && !self.node_port() {
            warnings.push(
                "socketLB.hostNamespaceOnly=true with NodePort handling off: pods' service \
                 traffic is balanced by the tc programs, which are not loaded, so pods reach no \
                 service"
                    .into(),
            );
        }
        if v.load_balancer.algorithm == super::Algorithm::Maglev && !self.node_port() {
            warnings.push(
                "loadBalancer.algorithm=maglev applies to north-south traffic only, and NodePort \
                 handling is off"
                    .into(),
            );
        }
        if v.maglev.hash_seed.is_none() && v.load_balancer.algorithm == super::Algorithm::Maglev {
            warnings.push(
                "maglev.hashSeed is not set: the built-in seed is used; set the same random seed \
                 on every node (head -c12 /dev/urandom | base64 -w0)"
                    .into(),
            );
        }
        warnings
    }
}

fn parse_or<T: std::str::FromStr<Err = &'static str>>(
    errors: &mut Vec<ConfigError>,
    key: &str,
    raw: &str,
) -> Option<T> {
    raw.parse()
        .map_err(|expected: &str| errors.push(ConfigError::invalid(key, raw, expected)))
        .ok()
}

fn check_scalars(v: &Values, errors: &mut Vec<ConfigError>) {
    if v.bpf.lb_map_max == 0 || v.bpf.lb_map_max > MAX_LB_MAP_MAX {
        errors.push(ConfigError::InvalidValue {
            key: "bpf.lbMapMax".into(),
            value: v.bpf.lb_map_max.to_string(),
            expected: format!("expected 1 to {MAX_LB_MAP_MAX} entries (default 65536)"),
        });
    }
    if v.k8s_service_port == Some(0) {
        errors.push(ConfigError::invalid(
            "k8sServicePort",
            0,
            "expected a port from 1 to 65535 (kubeadm's default is 6443)",
        ));
    }
    if v.prometheus.port == 0 {
        errors.push(ConfigError::invalid(
            "prometheus.port",
            0,
            "expected a port from 1 to 65535 (Cilium's default is 9962)",
        ));
    }
    if let Some(host) = &v.k8s_service_host {
        if host.is_empty() || host.contains(['/', ' ']) {
            errors.push(ConfigError::invalid(
                "k8sServiceHost",
                host,
                "expected the API server's IP address or host name",
            ));
        }
    }
    for (key, path) in [
        ("bpf.root", &v.bpf.root),
        ("cgroup.hostRoot", &v.cgroup.host_root),
    ] {
        if !path.is_empty() && !path.starts_with('/') {
            errors.push(ConfigError::invalid(key, path, "expected an absolute path"));
        }
    }
}

/// The YAML spelling of an enum value, as the user would write it.
fn enum_name<T: serde::Serialize>(value: &T) -> String {
    serde_yaml::to_string(value)
        .unwrap_or_default()
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::super::load;
    use super::*;

    fn config(sets: &[&str]) -> Result<AgentConfig, Vec<String>> {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        load(None, &sets).map_err(|e| e.0.iter().map(ToString::to_string).collect())
    }

    fn rejected(sets: &[&str], needles: &[&str]) {
        let errs = config(sets).expect_err("accepted");
        let all = errs.join("\n");
        for needle in needles {
            assert!(all.contains(needle), "{needle:?} not in:\n{all}");
        }
    }

    #[test]
    fn defaults_are_the_documents_defaults() {
        let c = config(&[]).unwrap();
        assert!(!c.kube_proxy_replacement());
        assert!(!c.socket_lb() && !c.node_port() && !c.external_ips() && !c.host_port());
        assert!(
            !c.session_affinity(),
            "affinity is off without kube-proxy replacement"
        );
        assert_eq!(c.node_port_range(), PortRange::DEFAULT);
        assert_eq!(c.values().maglev.table_size, 16381);
        assert_eq!(c.values().bpf.lb_map_max, 65536);
        assert_eq!(c.values().load_balancer.mode, LbMode::Snat);
        assert_eq!(c.protocols().to_string(), "TCP, UDP");
        assert!(
            c.values().node_port.bind_protection && c.values().node_port.auto_protect_port_ranges
        );
        assert!(c.values().config.svc_source_range_check);
        assert_eq!(c.healthz_bind_addr(), None);
        assert_eq!(c.prometheus_port(), None, "metrics are off by default");
        assert_eq!(c.values().prometheus.port, 9962);
    }

    #[test]
    fn prometheus_takes_a_port_and_names_it_when_bad() {
        let c = config(&["prometheus.enabled=true"]).unwrap();
        assert_eq!(c.prometheus_port(), Some(9962));
        let c = config(&["prometheus.enabled=true", "prometheus.port=19962"]).unwrap();
        assert_eq!(c.prometheus_port(), Some(19962));
        rejected(&["prometheus.port=0"], &["`prometheus.port`", "1 to 65535"]);
        rejected(
            &["prometheus.port=http"],
            &["`prometheus.port`", "1 to 65535", "9962"],
        );
        rejected(
            &["prometheus.port=70000"],
            &["`prometheus.port`", "1 to 65535"],
        );
        rejected(&["prometheus.enabled=maybe"], &["prometheus.enabled"]);
    }

    #[test]
    fn kube_proxy_replacement_implies_the_four_components() {
        let c = config(&["kubeProxyReplacement=true"]).unwrap();
        assert!(c.socket_lb() && c.node_port() && c.external_ips() && c.host_port());
        assert!(c.session_affinity());
        let c = config(&["kubeProxyReplacement=true", "hostPort.enabled=false"]).unwrap();
        assert!(
            !c.host_port() && c.node_port(),
            "an explicit switch overrides the implication"
        );
        assert!(
            c.warnings().iter().any(|w| w.contains("hostPort.enabled")),
            "{:?}",
            c.warnings()
        );
    }

    #[test]
    fn false_mode_enables_only_what_is_asked() {
        let c = config(&[
            "kubeProxyReplacement=false",
            "nodePort.enabled=true",
            "externalIPs.enabled=true",
        ])
        .unwrap();
        assert!(c.node_port() && c.external_ips() && !c.socket_lb() && !c.host_port());
        assert!(c
            .warnings()
            .iter()
            .any(|w| w.contains("nodePort.enableHealthCheck=false")));
    }

    #[test]
    fn neighbour_discovery_follows_node_port_and_its_period_must_be_a_duration() {
        let c = config(&["kubeProxyReplacement=true"]).unwrap();
        assert!(c.l2_neigh_discovery());
        assert_eq!(c.neigh_refresh_period(), Duration::from_secs(30));
        let c = config(&["kubeProxyReplacement=false"]).unwrap();
        assert!(!c.l2_neigh_discovery());
        let c = config(&[
            "kubeProxyReplacement=true",
            "l2NeighDiscovery.enabled=false",
            "l2NeighDiscovery.refreshPeriod=1m30s",
        ])
        .unwrap();
        assert!(!c.l2_neigh_discovery());
        assert_eq!(c.neigh_refresh_period(), Duration::from_secs(90));
        rejected(
            &["l2NeighDiscovery.enabled=true"],
            &["l2NeighDiscovery.enabled=true with NodePort handling off"],
        );
        rejected(
            &["l2NeighDiscovery.refreshPeriod=30sec"],
            &["`l2NeighDiscovery.refreshPeriod`", "\"30sec\"", "30s, 1m"],
        );
        rejected(
            &["l2NeighDiscovery.refreshPeriod=0s"],
            &["`l2NeighDiscovery.refreshPeriod`", "above zero"],
        );
    }

    #[test]
    fn table_size_must_be_a_listed_prime() {
        rejected(
            &["maglev.tableSize=16383"],
            &["`maglev.tableSize`", "16383", "16381", "131071"],
        );
        assert!(config(&["maglev.tableSize=65521"]).is_ok());
    }

    #[test]
    fn the_snat_ports_lie_above_the_node_port_range_and_the_ephemeral_ports() {
        let snat = |range: &str| {
            let mut v = Values {
                kube_proxy_replacement: true,
                ..Values::default()
            };
            v.node_port.range = range.into();
            AgentConfig::from_values(v).map(|c| c.snat_port_range().to_string())
        };
        assert_eq!(snat("30000,32767").unwrap(), "61000-65535");
        assert_eq!(snat("30000,61000").unwrap(), "61001-65535");
        assert_eq!(snat("30000,65529").unwrap(), "65530-65535");
        let err = snat("30000,65535").unwrap_err().to_string();
        assert!(
            err.contains("nodePort.range=30000-65535") && err.contains("below 65535"),
            "{err}"
        );
    }

    #[test]
    fn hash_seed_must_be_base64_of_twelve_bytes() {
        rejected(
            &["maglev.hashSeed=notbase64!"],
            &["`maglev.hashSeed`", "notbase64!", "12 bytes"],
        );
        rejected(
            &["maglev.hashSeed=AAAA"],
            &["`maglev.hashSeed`", "12 bytes"],
        );
        let c = config(&["maglev.hashSeed=JLfvgnHc2kaSUFaI"]).unwrap();
        assert_eq!(c.maglev_seed().to_string(), "JLfvgnHc2kaSUFaI");
    }

    #[test]
    fn port_range_must_be_well_formed() {
        rejected(
            &["nodePort.range=32767-30000"],
            &["`nodePort.range`", "32767-30000", "LOW,HIGH"],
        );
        rejected(&["nodePort.range=30000"], &["`nodePort.range`"]);
        let c = config(&[r"nodePort.range=10000\,32767"]).unwrap();
        assert_eq!(c.node_port_range().to_string(), "10000-32767");
    }

    #[test]
    fn dsr_with_ip_option_is_refused_in_tunnel_routing() {
        rejected(
            &[
                "kubeProxyReplacement=true",
                "loadBalancer.mode=dsr",
                "loadBalancer.dsrDispatch=opt",
            ],
            &[
                "loadBalancer.dsrDispatch=opt",
                "routingMode=tunnel",
                "routingMode=native",
            ],
        );
        rejected(
            &["kubeProxyReplacement=true", "loadBalancer.mode=hybrid"],
            &["routingMode=tunnel"],
        );
        assert!(config(&[
            "kubeProxyReplacement=true",
            "routingMode=native",
            "loadBalancer.mode=dsr"
        ])
        .is_ok());
    }

    #[test]
    fn geneve_dispatch_is_refused_with_vxlan() {
        rejected(
            &[
                "kubeProxyReplacement=true",
                "routingMode=native",
                "loadBalancer.mode=dsr",
                "loadBalancer.dsrDispatch=geneve",
            ],
            &["tunnelProtocol=vxlan", "tunnelProtocol=geneve"],
        );
        for routing in ["routingMode=native", "routingMode=tunnel"] {
            assert!(config(&[
                "kubeProxyReplacement=true",
                routing,
                "tunnelProtocol=geneve",
                "loadBalancer.mode=dsr",
                "loadBalancer.dsrDispatch=geneve"
            ])
            .is_ok());
        }
    }

    #[test]
    fn nodeport_features_need_nodeport_handling() {
        rejected(
            &["routingMode=native", "loadBalancer.mode=dsr"],
            &["nodePort.enabled=true"],
        );
        rejected(
            &["loadBalancer.acceleration=native"],
            &["loadBalancer.acceleration=native", "nodePort.enabled=true"],
        );
        assert!(config(&[
            "kubeProxyReplacement=true",
            "loadBalancer.acceleration=best-effort"
        ])
        .is_ok());
    }

    #[test]
    fn devices_accept_names_and_wildcards_only() {
        let c = config(&["devices={eth0,eth+}", "nodePort.directRoutingDevice=eth+"]).unwrap();
        assert_eq!(c.devices().len(), 2);
        rejected(&["devices={eth/0}"], &["`devices`", "eth/0", "eth+"]);
    }

    #[test]
    fn scalar_limits_name_the_accepted_range() {
        rejected(&["bpf.lbMapMax=0"], &["`bpf.lbMapMax`", "65536"]);
        rejected(
            &["hostServices.protocols=sctp"],
            &["`hostServices.protocols`", "tcp,udp"],
        );
        rejected(
            &["kubeProxyReplacementHealthzBindAddr=10256"],
            &["0.0.0.0:10256"],
        );
        rejected(&["ipv4.enabled=false"], &["at least one address family"]);
        rejected(&["bpf.root=relative/path"], &["`bpf.root`", "absolute"]);
        let c = config(&["kubeProxyReplacementHealthzBindAddr=[::]:10256"]).unwrap();
        assert_eq!(c.healthz_bind_addr().unwrap().port(), 10256);
    }

    #[test]
    fn effective_values_resolve_every_implied_switch() {
        let c = config(&["kubeProxyReplacement=true"]).unwrap();
        let v = c.effective_values();
        assert_eq!(v.socket_lb.enabled, Some(true));
        assert_eq!(v.config.session_affinity, Some(true));
        assert_eq!(v.maglev.hash_seed.as_deref(), Some("JLfvgnHc2kaSUFaI"));
    }
}
