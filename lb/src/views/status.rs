//! `lbctl status`: the KubeProxyReplacement line and, with `--verbose`, its details block, laid
//! out as the documents show them.

use serde::{Deserialize, Serialize};

use crate::config::{Acceleration, AgentConfig, Algorithm, DsrDispatch, LbMode};
use crate::k8s::DeviceSelection;

/// Width of the label column in the details block (after the two-space indent).
const LABEL_WIDTH: usize = 23;
/// Width of the label column of the `Services:` list.
const SERVICE_LABEL_WIDTH: usize = 18;

/// The kube-proxy replacement's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KprStatus {
    /// `kubeProxyReplacement`.
    pub status: bool,
    /// Socket LB on.
    pub socket_lb: bool,
    /// Protocols the socket hooks translate.
    pub protocols: String,
    /// Whether connected UDP sockets to deleted backends are destroyed (`Enabled`, or
    /// `Disabled (why)`): known only to a running agent, which probes the kernel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp_socket_destroy: Option<String>,
    /// What runs degraded on this kernel, and how (the agent's probes at start-up).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub degraded: Vec<crate::host::features::Degradation>,
    /// The node addresses in `lb_local_addrs` after the agent's last pass (where NodePort
    /// and HostPort answer from the node): known only to a running agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_addresses: Option<LocalAddressCount>,
    /// NodePort devices.
    pub devices: Vec<String>,
    /// The direct-routing device.
    pub direct_routing_device: Option<String>,
    /// `SNAT`, `DSR` or `Hybrid`.
    pub mode: String,
    /// DSR dispatch, when DSR is in use.
    pub dsr_dispatch: Option<String>,
    /// `Random` or `Maglev`.
    pub backend_selection: String,
    /// Maglev table size, when Maglev is in use.
    pub maglev_table_size: Option<u32>,
    /// Session affinity on.
    pub session_affinity: bool,
    /// Graceful termination on.
    pub graceful_termination: bool,
    /// NAT46/64 on.
    pub nat46x64: bool,
    /// `Disabled`, `Native` or `Best-Effort`.
    pub xdp_acceleration: String,
    /// How each NodePort device meets the XDP program: known only to a running agent, which
    /// attached it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub xdp_devices: Vec<crate::datapath::XdpDevice>,
    /// The SNAT source ports of forwarded NodePort flows, when the packet programs run: known
    /// only to a running agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snat_ports: Option<String>,
    /// Packets the packet programs dropped, per reason, where any were: read from the pinned
    /// counters when `lbctl status` runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drops: Vec<crate::datapath::DropCount>,
    /// Service types handled.
    pub services: ServiceTypes,
}

/// How many of the node's addresses the agent programmed, of how many it found: the count a
/// metrics endpoint can export; `status --verbose` shows it when some did not fit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalAddressCount {
    /// Addresses in the map.
    pub programmed: usize,
    /// Addresses found on the node (`docker*` devices left out).
    pub found: usize,
    /// What the map holds (`bpf.lbMapMax`).
    pub capacity: u32,
}

impl LocalAddressCount {
    /// Addresses that did not fit.
    pub fn left_out(&self) -> usize {
        self.found.saturating_sub(self.programmed)
    }
}

/// Which service types are handled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceTypes {
    /// ClusterIP (always).
    pub cluster_ip: bool,
    /// NodePort.
    pub node_port: bool,
    /// The NodePort range, `30000-32767`.
    pub node_port_range: String,
    /// LoadBalancer (with NodePort).
    pub load_balancer: bool,
    /// externalIPs.
    #[serde(rename = "externalIPs")]
    pub external_ips: bool,
    /// HostPort.
    pub host_port: bool,
}

impl KprStatus {
    /// The status for `config` on a node with the given device selection. Without devices
    /// (offline, nothing detected) the configured `devices` patterns are shown.
    pub fn new(config: &AgentConfig, selection: &DeviceSelection) -> Self {
        let lb = &config.values().load_balancer;
        let (devices, direct_routing_device) = if selection.devices.is_empty() {
            (
                config.devices().iter().map(ToString::to_string).collect(),
                config.direct_routing_device().map(ToString::to_string),
            )
        } else {
            (selection.devices.clone(), selection.direct_routing.clone())
        };
        KprStatus {
            status: config.kube_proxy_replacement(),
            socket_lb: config.socket_lb(),
            protocols: config.protocols().to_string(),
            udp_socket_destroy: None,
            degraded: Vec::new(),
            local_addresses: None,
            devices,
            direct_routing_device,
            mode: match lb.mode {
                LbMode::Snat => "SNAT",
                LbMode::Dsr => "DSR",
                LbMode::Hybrid => "Hybrid",
            }
            .to_owned(),
            dsr_dispatch: config.uses_dsr().then(|| {
                match lb.dsr_dispatch {
                    DsrDispatch::Opt => "IP Option/Extension",
                    DsrDispatch::Geneve => "Geneve",
                }
                .to_owned()
            }),
            backend_selection: match lb.algorithm {
                Algorithm::Random => "Random",
                Algorithm::Maglev => "Maglev",
            }
            .to_owned(),
            maglev_table_size: (lb.algorithm == Algorithm::Maglev)
                .then_some(config.values().maglev.table_size),
            session_affinity: config.session_affinity(),
            graceful_termination: config.graceful_termination(),
            nat46x64: config.nat46x64(),
            xdp_acceleration: match lb.acceleration {
                Acceleration::Disabled => "Disabled",
                Acceleration::Native => "Native",
                Acceleration::BestEffort => "Best-Effort",
            }
            .to_owned(),
            xdp_devices: Vec::new(),
            snat_ports: None,
            drops: Vec::new(),
            services: ServiceTypes {
                cluster_ip: true,
                node_port: config.node_port(),
                node_port_range: config.node_port_range().to_string(),
                load_balancer: config.node_port(),
                external_ips: config.external_ips(),
                host_port: config.host_port(),
            },
        }
    }

    /// `eth0 (Direct Routing), eth1`.
    pub fn devices_line(&self) -> String {
        self.devices
            .iter()
            .map(|d| {
                if self.direct_routing_device.as_deref() == Some(d.as_str()) {
                    format!("{d} (Direct Routing)")
                } else {
                    d.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `KubeProxyReplacement:   True\t[eth0 (Direct Routing), eth1]`.
    pub fn render_short(&self) -> String {
        format!(
            "KubeProxyReplacement:   {}\t[{}]\n",
            title_bool(self.status),
            self.devices_line()
        )
    }

    /// The short line, then the `KubeProxyReplacement Details:` block.
    pub fn render_verbose(&self) -> String {
        let mut out = self.render_short();
        out.push_str("KubeProxyReplacement Details:\n");
        // An empty label continues the line above (a list under one label).
        let mut line = |label: &str, value: String| {
            let label = if label.is_empty() {
                String::new()
            } else {
                format!("{label}:")
            };
            out.push_str(&format!("  {label:<width$}{value}\n", width = LABEL_WIDTH));
        };
        line("Status", title_bool(self.status).to_owned());
        line("Socket LB", enabled(self.socket_lb).to_owned());
        line("Protocols", self.protocols.clone());
        if let Some(destroy) = &self.udp_socket_destroy {
            line("UDP Socket Destroy", destroy.clone());
        }
        for (i, d) in self.degraded.iter().enumerate() {
            let label = if i == 0 { "Degraded" } else { "" };
            line(label, format!("{}: {}", d.feature, d.effect));
        }
        line("Devices", self.devices_line());
        // Shown only when some did not fit, so the block reads as the documents' otherwise.
        if let Some(count) = self.local_addresses.filter(|c| c.left_out() > 0) {
            line(
                "Node Addresses",
                format!(
                    "{} of {} programmed, {} left out (map full at {}: raise bpf.lbMapMax)",
                    count.programmed,
                    count.found,
                    count.left_out(),
                    count.capacity
                ),
            );
        }
        line("Mode", self.mode.clone());
        if let Some(dispatch) = &self.dsr_dispatch {
            line("  DSR Dispatch Mode", dispatch.clone());
        }
        line(
            "Backend Selection",
            match self.maglev_table_size {
                Some(m) => format!("{} (Table Size: {m})", self.backend_selection),
                None => self.backend_selection.clone(),
            },
        );
        line(
            "Session Affinity",
            enabled(self.session_affinity).to_owned(),
        );
        line(
            "Graceful Termination",
            enabled(self.graceful_termination).to_owned(),
        );
        line("NAT46/64 Support", enabled(self.nat46x64).to_owned());
        line("XDP Acceleration", self.xdp_acceleration.clone());
        for d in &self.xdp_devices {
            line(
                "",
                match &d.state {
                    crate::datapath::XdpState::Native => format!("{}: Native", d.device),
                    crate::datapath::XdpState::Skipped { reason } => {
                        format!("{}: tc only ({reason})", d.device)
                    }
                },
            );
        }
        // Shown only when packets were dropped, so the block reads as the documents' otherwise.
        for (i, d) in self.drops.iter().enumerate() {
            let label = if i == 0 { "Packet Drops" } else { "" };
            line(label, self.drop_line(d));
        }
        out.push_str("  Services:\n");
        let s = &self.services;
        let node_port = if s.node_port {
            format!("Enabled (Range: {})", s.node_port_range)
        } else {
            "Disabled".to_owned()
        };
        for (label, value) in [
            ("ClusterIP", enabled(s.cluster_ip).to_owned()),
            ("NodePort", node_port),
            ("LoadBalancer", enabled(s.load_balancer).to_owned()),
            ("externalIPs", enabled(s.external_ips).to_owned()),
            ("HostPort", enabled(s.host_port).to_owned()),
        ] {
            out.push_str(&format!(
                "  {:<width$}{value}\n",
                format!("- {label}:"),
                width = SERVICE_LABEL_WIDTH
            ));
        }
        out
    }
}

impl KprStatus {
    /// One drop counter as `status --verbose` lists it: count, name, and what it means here.
    fn drop_line(&self, d: &crate::datapath::DropCount) -> String {
        let meaning = (0..ebpf::maps::counter::MAX)
            .map(crate::datapath::describe_drop)
            .find(|(name, _)| *name == d.reason)
            .map_or("", |(_, meaning)| meaning);
        match (&self.snat_ports, d.reason.as_str()) {
            (Some(ports), "snat_exhausted") => format!(
                "{} {}: new flows found no free SNAT port in {ports} (a nodePort.range ending \
                 above 60999 leaves fewer)",
                d.packets, d.reason
            ),
            _ => format!("{} {}: {meaning}", d.packets, d.reason),
        }
    }
}

fn title_bool(b: bool) -> &'static str {
    if b {
        "True"
    } else {
        "False"
    }
}

fn enabled(b: bool) -> &'static str {
    if b {
        "Enabled"
    } else {
        "Disabled"
    }
}
