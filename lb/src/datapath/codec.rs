//! The one place that converts between the bytes the maps hold and the model's types: scopes,
//! backend states, service-type flags, protocol numbers and trace-event kinds. The byte values
//! are the C enums of `ebpf/include/lb_types.h`, through their Rust mirrors in `ebpf::maps`
//! (which `ebpf/tests/layout.rs` checks against the object's BTF); nothing else in the crate
//! matches on them.

use ebpf::maps::{backend_state, scope, svc_flags, trace_kind};

use crate::model::{BackendState, L4Protocol, Scope, ServiceType};

/// `enum lb_scope` of a frontend scope.
pub fn scope_byte(s: Scope) -> u8 {
    match s {
        Scope::External => scope::EXT,
        Scope::Internal => scope::INT,
    }
}

/// The scope of an `enum lb_scope` byte; `None` for a value this build does not know.
pub fn scope_of(byte: u8) -> Option<Scope> {
    match byte {
        scope::EXT => Some(Scope::External),
        scope::INT => Some(Scope::Internal),
        _ => None,
    }
}

/// `enum lb_backend_state` of a backend state.
pub fn state_byte(state: BackendState) -> u8 {
    match state {
        BackendState::Active => backend_state::ACTIVE,
        BackendState::Terminating => backend_state::TERMINATING,
        BackendState::Quarantined => backend_state::QUARANTINED,
        BackendState::Maintenance => backend_state::MAINTENANCE,
    }
}

/// The backend state of an `enum lb_backend_state` byte; `None` for a value this build does not
/// know.
pub fn state_of(byte: u8) -> Option<BackendState> {
    match byte {
        backend_state::ACTIVE => Some(BackendState::Active),
        backend_state::TERMINATING => Some(BackendState::Terminating),
        backend_state::QUARANTINED => Some(BackendState::Quarantined),
        backend_state::MAINTENANCE => Some(BackendState::Maintenance),
        _ => None,
    }
}

/// The protocol of an IP protocol number in a map key; `None` for one the load balancer does not
/// serve.
pub fn protocol_of(number: u8) -> Option<L4Protocol> {
    [L4Protocol::Tcp, L4Protocol::Udp]
        .into_iter()
        .find(|p| p.number() == number)
}

/// The `lbctl monitor` name of an `enum lb_trace_kind` byte; `None` for a kind this build does
/// not know.
pub fn trace_kind_name(kind: u8) -> Option<&'static str> {
    match kind {
        trace_kind::PRE_XLATE_FWD => Some("pre-xlate-fwd"),
        trace_kind::POST_XLATE_FWD => Some("post-xlate-fwd"),
        trace_kind::PRE_XLATE_REV => Some("pre-xlate-rev"),
        trace_kind::POST_XLATE_REV => Some("post-xlate-rev"),
        _ => None,
    }
}

/// `lb_service.flags` (`enum lb_svc_flags` bits) as the questions the datapath asks of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceFlags(pub u8);

/// The type bits, in the order a read-back takes them (ClusterIP has its own bit, but a
/// frontend without any type bit reads back as ClusterIP too).
const TYPE_BITS: [(u8, ServiceType); 5] = [
    (svc_flags::NODE_PORT, ServiceType::NodePort),
    (svc_flags::EXTERNAL_IP, ServiceType::ExternalIPs),
    (svc_flags::LOADBALANCER, ServiceType::LoadBalancer),
    (svc_flags::HOST_PORT, ServiceType::HostPort),
    (svc_flags::CLUSTER_IP, ServiceType::ClusterIP),
];

impl ServiceFlags {
    /// The flags of a frontend of type `kind`, with the twin, affinity and no-local-backend
    /// bits as given.
    pub fn new(kind: ServiceType, two_scopes: bool, affinity: bool, no_local: bool) -> Self {
        let (bit, _) = TYPE_BITS
            .iter()
            .find(|(_, k)| *k == kind)
            .copied()
            .unwrap_or((svc_flags::CLUSTER_IP, ServiceType::ClusterIP));
        let mut flags = bit;
        if two_scopes {
            flags |= svc_flags::TWO_SCOPES;
        }
        if affinity {
            flags |= svc_flags::AFFINITY;
        }
        if no_local {
            flags |= svc_flags::NO_LOCAL_BACKEND;
        }
        ServiceFlags(flags)
    }

    /// The frontend's type.
    pub fn kind(self) -> ServiceType {
        TYPE_BITS
            .iter()
            .find(|(bit, _)| self.0 & bit != 0)
            .map_or(ServiceType::ClusterIP, |(_, kind)| *kind)
    }

    /// `LB_SVC_NO_LOCAL_BACKEND`: traffic policy `Local` and no endpoint on this node.
    pub fn no_local_backends(self) -> bool {
        self.0 & svc_flags::NO_LOCAL_BACKEND != 0
    }

    /// `LB_SVC_TWO_SCOPES`: an internal-scope twin exists.
    pub fn two_scopes(self) -> bool {
        self.0 & svc_flags::TWO_SCOPES != 0
    }

    /// `LB_SVC_AFFINITY`: sessionAffinity ClientIP.
    pub fn affinity(self) -> bool {
        self.0 & svc_flags::AFFINITY != 0
    }

    /// `LB_SVC_WILDCARD_TYPES`: NodePort and HostPort frontends, whose wildcard entry answers
    /// on the node's local addresses.
    pub fn answers_on_local_addresses(self) -> bool {
        self.0 & (svc_flags::NODE_PORT | svc_flags::HOST_PORT) != 0
    }

    /// `LB_SVC_NODE_OWNED_TYPES`: NodePort, LoadBalancer and externalIPs frontends, whose
    /// ports the load balancer owns on this node (bind protection).
    pub fn owns_node_port(self) -> bool {
        self.0 & (svc_flags::NODE_PORT | svc_flags::EXTERNAL_IP | svc_flags::LOADBALANCER) != 0
    }

    /// `LB_SVC_EXTERNAL_IP`.
    pub fn external_ip(self) -> bool {
        self.0 & svc_flags::EXTERNAL_IP != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_model_value_survives_the_round_trip_through_its_byte() {
        for s in [Scope::External, Scope::Internal] {
            assert_eq!(scope_of(scope_byte(s)), Some(s));
        }
        for st in [
            BackendState::Active,
            BackendState::Terminating,
            BackendState::Quarantined,
            BackendState::Maintenance,
        ] {
            assert_eq!(state_of(state_byte(st)), Some(st));
        }
        for p in [L4Protocol::Tcp, L4Protocol::Udp] {
            assert_eq!(protocol_of(p.number()), Some(p));
        }
        for kind in [
            ServiceType::ClusterIP,
            ServiceType::NodePort,
            ServiceType::LoadBalancer,
            ServiceType::ExternalIPs,
            ServiceType::HostPort,
        ] {
            for bits in 0..8u8 {
                let (twins, affinity, no_local) = (bits & 1 != 0, bits & 2 != 0, bits & 4 != 0);
                let f = ServiceFlags::new(kind, twins, affinity, no_local);
                assert_eq!(
                    (
                        f.kind(),
                        f.two_scopes(),
                        f.affinity(),
                        f.no_local_backends()
                    ),
                    (kind, twins, affinity, no_local)
                );
            }
        }
    }

    #[test]
    fn unknown_bytes_are_reported_as_unknown() {
        assert_eq!(scope_of(7), None);
        assert_eq!(state_of(9), None);
        assert_eq!(protocol_of(132), None);
        assert_eq!(trace_kind_name(0), None);
        assert_eq!(ServiceFlags(0).kind(), ServiceType::ClusterIP);
    }
}
