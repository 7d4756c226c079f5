//! The agent's start-up decisions that do not depend on where it runs: the programs'
//! load-time settings, where UDP sockets are swept, the status block and the NodePort range's
//! protection. `lb-agent` applies them to the kernel and the `sim` scenarios to the
//! simulator, so both start the same way.

use super::degrade::SocketLbPlan;
use super::udp_destroy::SweepScope;
use crate::config::{AgentConfig, PortRange};
use crate::datapath::SockLbConfig;
use crate::host::sock_diag::Support;
use crate::host::{self, HostError, PortRangeProtection, Sysctls};
use crate::k8s::DeviceSelection;
use crate::views::KprStatus;

/// The socket programs' load-time settings for `config` as `plan` runs it on this kernel, in
/// the namespace whose cookie is `host_netns_cookie` (0: the initial one).
pub fn datapath_settings(
    config: &AgentConfig,
    plan: &SocketLbPlan,
    host_netns_cookie: u64,
) -> SockLbConfig {
    let values = config.values();
    SockLbConfig {
        protocols: plan.protocols,
        map_max: values.bpf.lb_map_max,
        host_namespace_only: values.socket_lb.host_namespace_only,
        bind_protection: values.node_port.bind_protection && config.node_port(),
        host_netns_cookie,
        external_ip_mitigation: !values.bpf.disable_external_ip_mitigation,
        netns_cookies: plan.netns_cookies,
        sock_v6only: plan.sock_v6only,
        conn_slots: if plan.bpf_atomics {
            ebpf::maps::SOCK_CONN_SLOTS
        } else {
            0
        },
    }
}

/// Whether the socket hooks are attached at all (`socketLB.enabled`). Without them the maps
/// are still programmed (for `lbctl` and, later, the tc programs), but no socket is
/// translated: the documented mode beside kube-proxy.
pub fn attaches_socket_hooks(config: &AgentConfig) -> bool {
    config.socket_lb()
}

/// Where connected UDP sockets to removed backends are destroyed, given the kernel's support
/// (nowhere when the plan translates no UDP).
pub fn udp_sweep_scope(
    config: &AgentConfig,
    plan: &SocketLbPlan,
    support: &Support,
) -> Option<SweepScope> {
    SweepScope::for_config(config).filter(|_| *support == Support::Available && plan.protocols.udp)
}

/// The status block an agent with `config` shows, running as `plan` says on a node with this
/// device selection and this support for destroying sockets.
pub fn start_status(
    config: &AgentConfig,
    plan: &SocketLbPlan,
    selection: &DeviceSelection,
    udp_destroy: &Support,
) -> KprStatus {
    let mut status = KprStatus::new(config, selection);
    status.protocols = plan.protocols.to_string();
    status.degraded.clone_from(&plan.degraded);
    if SweepScope::for_config(config).is_some() && plan.protocols.udp {
        status.udp_socket_destroy = Some(udp_destroy.describe());
    }
    if config.node_port() {
        status.snat_ports = Some(config.snat_port_range().to_string());
    }
    status
}

/// Reserves the NodePort range in the namespace's ephemeral ports when `config` asks for it
/// (`nodePort.autoProtectPortRanges`). Returns the range this agent is responsible for
/// removing again: the one it appended now, else `previously` (what an earlier agent recorded).
pub fn protect_ports(
    config: &AgentConfig,
    sysctls: &mut (impl Sysctls + ?Sized),
    previously: Option<PortRange>,
) -> Result<Option<PortRange>, HostError> {
    if !(config.node_port() && config.values().node_port.auto_protect_port_ranges) {
        return Ok(previously);
    }
    let range = config.node_port_range();
    Ok(match host::protect_port_range(range, sysctls)? {
        PortRangeProtection::Appended => Some(range),
        _ => previously,
    })
}
