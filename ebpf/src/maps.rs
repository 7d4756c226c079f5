//! Rust mirrors of the map keys and values in `include/lb_types.h`, with the map names.
//!
//! Addresses and ports are kept in network byte order, as the kernel reads them; constructors
//! take host values. `tests/layout.rs` compares every struct here with the object's BTF.

use std::net::Ipv4Addr;

/// Services map: [`Lb4Key`] -> [`LbService`].
pub const LB4_SERVICES: &str = "lb4_services_v1";
/// Backends map: `u32` backend id -> [`Lb4Backend`].
pub const LB4_BACKENDS: &str = "lb4_backends_v1";
/// Reverse NAT map: `u16` rev_nat_index -> [`Lb4ReverseNat`].
pub const LB4_REVERSE_NAT: &str = "lb4_reverse_nat_v1";
/// Socket reverse map: [`Lb4SockKey`] -> [`Lb4SockValue`].
pub const LB4_REVERSE_SK: &str = "lb4_reverse_sk_v1";

/// `LB_SCOPE_EXT`: traffic from outside the cluster, or all traffic.
pub const SCOPE_EXT: u8 = 0;
/// `LB_SCOPE_INT`: traffic from inside the cluster, when the policies differ.
pub const SCOPE_INT: u8 = 1;

/// `lb_service.flags` bits.
pub mod svc_flags {
    /// A ClusterIP frontend.
    pub const CLUSTER_IP: u8 = 1 << 0;
    /// A NodePort frontend.
    pub const NODE_PORT: u8 = 1 << 1;
    /// An externalIPs frontend.
    pub const EXTERNAL_IP: u8 = 1 << 2;
    /// A LoadBalancer ingress frontend.
    pub const LOADBALANCER: u8 = 1 << 3;
    /// A HostPort frontend.
    pub const HOST_PORT: u8 = 1 << 4;
    /// An internal-scope twin exists.
    pub const TWO_SCOPES: u8 = 1 << 5;
    /// Session affinity.
    pub const AFFINITY: u8 = 1 << 6;
}

/// `struct lb4_key`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Lb4Key {
    /// Frontend address, network order.
    pub address: [u8; 4],
    /// Frontend port, network order.
    pub dport: u16,
    /// 0 for the service, 1.. for backend slots.
    pub backend_slot: u16,
    /// IP protocol number.
    pub proto: u8,
    /// [`SCOPE_EXT`] or [`SCOPE_INT`].
    pub scope: u8,
    /// Zero.
    pub pad: [u8; 2],
}

impl Lb4Key {
    /// The key of a frontend's slot.
    pub fn new(address: Ipv4Addr, port: u16, proto: u8, scope: u8, backend_slot: u16) -> Self {
        Lb4Key {
            address: address.octets(),
            dport: port.to_be(),
            backend_slot,
            proto,
            scope,
            pad: [0; 2],
        }
    }
}

/// `struct lb_service`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LbService {
    /// Slot > 0: the backend in this slot.
    pub backend_id: u32,
    /// Slot 0: active backend slots.
    pub count: u16,
    /// Slot 0: terminating backend slots after the active ones.
    pub qcount: u16,
    /// The frontend's reverse NAT id.
    pub rev_nat_index: u16,
    /// [`svc_flags`] bits.
    pub flags: u8,
    /// Zero.
    pub pad: u8,
    /// Slot 0: affinity timeout in seconds, 0 without affinity.
    pub affinity_timeout: u32,
}

/// `struct lb4_backend`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lb4Backend {
    /// Backend address, network order.
    pub address: [u8; 4],
    /// Backend port, network order.
    pub port: u16,
    /// IP protocol number.
    pub proto: u8,
    /// 0 active, 1 terminating, 2 quarantined, 3 maintenance.
    pub state: u8,
}

impl Lb4Backend {
    /// An active backend.
    pub fn new(address: Ipv4Addr, port: u16, proto: u8) -> Self {
        Lb4Backend {
            address: address.octets(),
            port: port.to_be(),
            proto,
            state: 0,
        }
    }
}

/// `struct lb4_reverse_nat`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lb4ReverseNat {
    /// Frontend address, network order.
    pub address: [u8; 4],
    /// Frontend port, network order.
    pub port: u16,
    /// Zero.
    pub pad: u16,
}

impl Lb4ReverseNat {
    /// The entry for a frontend.
    pub fn new(address: Ipv4Addr, port: u16) -> Self {
        Lb4ReverseNat {
            address: address.octets(),
            port: port.to_be(),
            pad: 0,
        }
    }
}

/// `struct lb4_sock_key`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Lb4SockKey {
    /// Socket cookie.
    pub cookie: u64,
    /// Backend address, network order.
    pub address: [u8; 4],
    /// Backend port, network order.
    pub port: u16,
    /// Zero.
    pub pad: u16,
}

/// `struct lb4_sock_value`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lb4SockValue {
    /// Frontend address, network order.
    pub address: [u8; 4],
    /// Frontend port, network order.
    pub port: u16,
    /// Frontend reverse NAT id.
    pub rev_nat_index: u16,
}

// SAFETY: every type is #[repr(C)], made only of integers and byte arrays with explicit
// padding fields, so any bit pattern is valid and there are no uninitialised bytes.
unsafe impl aya::Pod for Lb4Key {}
// SAFETY: as above.
unsafe impl aya::Pod for LbService {}
// SAFETY: as above.
unsafe impl aya::Pod for Lb4Backend {}
// SAFETY: as above.
unsafe impl aya::Pod for Lb4ReverseNat {}
// SAFETY: as above.
unsafe impl aya::Pod for Lb4SockKey {}
// SAFETY: as above.
unsafe impl aya::Pod for Lb4SockValue {}
