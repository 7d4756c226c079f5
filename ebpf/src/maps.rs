//! Rust mirrors of the map keys and values in `include/lb_types.h`, with the map names.
//!
//! Addresses are 16 bytes, IPv4 as IPv4-mapped IPv6; ports are kept in network byte order, as
//! the kernel reads them. Constructors take host values. `tests/layout.rs` compares every struct
//! here with the object's BTF.

use std::net::{IpAddr, Ipv6Addr};

/// Services map: [`LbKey`] -> [`LbService`].
pub const LB_SERVICES: &str = "lb_services_v1";
/// Backends map: `u32` backend id -> [`LbBackend`].
pub const LB_BACKENDS: &str = "lb_backends_v1";
/// Reverse NAT map: `u16` rev_nat_index -> [`LbReverseNat`].
pub const LB_REVERSE_NAT: &str = "lb_reverse_nat_v1";
/// Unconnected sends' translations: [`LbSockKey`] -> [`LbSockValue`].
pub const LB_REVERSE_SK: &str = "lb_reverse_sk_v1";
/// Connected sockets' translations: `u64` socket cookie -> [`LbSockConn`] (per-CPU LRU).
pub const LB_SOCK_CONN: &str = "lb_sock_conn_v1";
/// Connected sockets' translations in slots indexed by socket cookie, in front of
/// [`LB_SOCK_CONN`]: `u32` slot -> [`LbSockConnSlot`] (an array of [`SOCK_CONN_SLOTS`], used
/// only by [`crate::sock_lb_atomics_object`]'s programs).
pub const LB_SOCK_CONN_SLOTS: &str = "lb_sock_conn_slots_v1";
/// The entries of [`LB_SOCK_CONN_SLOTS`] (`LB_SOCK_CONN_SLOTS`), a power of two.
pub const SOCK_CONN_SLOTS: u32 = 65536;
/// The bit of [`LbSockConnSlot::cookie`] set while a connect writes the slot
/// (`LB_SOCK_SLOT_CLAIMED`).
pub const SOCK_SLOT_CLAIMED: u64 = 1 << 63;
/// How many [`LB_SOCK_CONN`] entries each group of socket cookies may have (`u32` counters), so
/// that sockets never translated skip the lookup there.
pub const LB_SOCK_CONN_HINT: &str = "lb_sock_conn_hint_v1";
/// Session affinity: a client's netns cookie and a frontend → the backend it used last.
pub const LB_AFFINITY: &str = "lb_affinity_v1";
/// Session affinity's active backends: [`LbAffinityMatchKey`] -> `u8` (zero).
pub const LB_AFFINITY_MATCH: &str = "lb_affinity_match_v1";
/// The node's own addresses, where wildcard NodePort and HostPort frontends answer.
pub const LB_LOCAL_ADDRS: &str = "lb_local_addrs_v1";
/// `loadBalancerSourceRanges` (LPM trie): [`LbSrcRangeKey`] -> `u8` (zero).
pub const LB_SOURCE_RANGES: &str = "lb_source_ranges_v1";
/// Index 0: a bit per monitor slot that listens to trace events (`LB_MONITOR_SLOTS`).
pub const LB_MONITOR: &str = "lb_monitor_v2";
/// How many monitors can listen at once (`LB_MONITOR_SLOTS`).
pub const MONITOR_SLOTS: usize = 8;
/// The perf event arrays of trace-sock events, one per monitor slot.
pub const LB_EVENTS_SLOTS: [&str; MONITOR_SLOTS] = [
    "lb_events_s0_v2",
    "lb_events_s1_v2",
    "lb_events_s2_v2",
    "lb_events_s3_v2",
    "lb_events_s4_v2",
    "lb_events_s5_v2",
    "lb_events_s6_v2",
    "lb_events_s7_v2",
];
/// The maps sized by `bpf.lbMapMax` (the node-address map too: a node's addresses grow with
/// its services where kube-proxy's IPVS device holds one per service address).
pub const SOCK_LB_SIZED_MAPS: [&str; 9] = [
    LB_SERVICES,
    LB_BACKENDS,
    LB_REVERSE_NAT,
    LB_REVERSE_SK,
    LB_SOCK_CONN,
    LB_AFFINITY,
    LB_LOCAL_ADDRS,
    LB_AFFINITY_MATCH,
    LB_SOURCE_RANGES,
];
/// Every map of the socket-level programs, all pinned by name in the agent's bpffs directory.
pub const SOCK_LB_MAPS: [&str; 20] = [
    LB_SOURCE_RANGES,
    LB_SERVICES,
    LB_BACKENDS,
    LB_REVERSE_NAT,
    LB_REVERSE_SK,
    LB_SOCK_CONN,
    LB_SOCK_CONN_SLOTS,
    LB_SOCK_CONN_HINT,
    LB_AFFINITY,
    LB_AFFINITY_MATCH,
    LB_LOCAL_ADDRS,
    LB_MONITOR,
    LB_EVENTS_SLOTS[0],
    LB_EVENTS_SLOTS[1],
    LB_EVENTS_SLOTS[2],
    LB_EVENTS_SLOTS[3],
    LB_EVENTS_SLOTS[4],
    LB_EVENTS_SLOTS[5],
    LB_EVENTS_SLOTS[6],
    LB_EVENTS_SLOTS[7],
];
/// Connection tracking and NAT of the packet programs: [`LbCtKey`] -> [`LbCtEntry`] (LRU).
pub const LB_CT: &str = "lb_ct_v2";
/// [`LB_CT`]'s first version, whose value had no next hop ([`LbCtEntryV1`]): an agent finding
/// it pinned copies its flows into [`LB_CT`] and unpins it.
pub const LB_CT_V1: &str = "lb_ct_v1";
/// The NodePort devices: `u32` ifindex -> [`LbDevice`].
pub const LB_DEVICES: &str = "lb_devices_v1";
/// Maglev lookup tables of the packet programs: `u32` rev_nat_index -> `[u32; M]` backend ids,
/// M = `maglev.tableSize` (the value's size is set when the agent creates the map).
pub const LB_MAGLEV: &str = "lb_maglev_v1";
/// The value length (backend ids) `lb_maglev_v1` declares in the object
/// (`LB_MAGLEV_PLACEHOLDER_M`); the agent creates the map with its own.
pub const MAGLEV_PLACEHOLDER_M: u32 = 251;
/// Drop counters of the packet programs: per-CPU `u64` per [`counter`] index.
pub const LB_COUNTERS: &str = "lb_counters_v1";
/// How many NodePort devices fit [`LB_DEVICES`] (`LB_DEVICES_MAX`).
pub const DEVICES_MAX: u32 = 256;
/// The maps only the packet programs define (`lb_pkt_maps.h`), pinned beside the shared ones.
pub const PKT_MAPS: [&str; 4] = [LB_CT, LB_DEVICES, LB_MAGLEV, LB_COUNTERS];
/// The packet programs' maps sized by `bpf.lbMapMax`.
pub const PKT_SIZED_MAPS: [&str; 2] = [LB_CT, LB_MAGLEV];

/// Maps earlier versions pinned that no program uses any more: a new agent unpins them once
/// its programs are attached (the single ring buffer and on/off switch of trace events, the
/// socket-local storage that held each connected socket's reverse-map key).
pub const RETIRED_MAPS: [&str; 3] = ["lb_monitor_v1", "lb_events_v1", "lb_sk_reverse_key_v1"];

/// `enum lb_scope`: the scope of a frontend ([`LbKey::scope`]).
pub mod scope {
    /// `LB_SCOPE_EXT`: traffic from outside the cluster, or all traffic.
    pub const EXT: u8 = 0;
    /// `LB_SCOPE_INT`: traffic from inside the cluster, when the policies differ.
    pub const INT: u8 = 1;
}

/// `enum lb_svc_flags2`: bits of [`LbService::flags2`].
pub mod svc_flags2 {
    /// `LB_SVC2_SOURCE_RANGES`: external clients must match one of the frontend's
    /// [`super::LB_SOURCE_RANGES`] entries.
    pub const SOURCE_RANGES: u8 = 1 << 0;
}

/// `enum lb_backend_state`: [`LbBackend::state`].
pub mod backend_state {
    /// `LB_BACKEND_ACTIVE`: takes new connections.
    pub const ACTIVE: u8 = 0;
    /// `LB_BACKEND_TERMINATING`: kept for existing flows, never chosen.
    pub const TERMINATING: u8 = 1;
    /// `LB_BACKEND_QUARANTINED`: failed health checks.
    pub const QUARANTINED: u8 = 2;
    /// `LB_BACKEND_MAINTENANCE`: taken out by the operator.
    pub const MAINTENANCE: u8 = 3;
}

/// `enum lb_svc_flags`: bits of [`LbService::flags`].
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
    /// Traffic policy `Local` and no endpoint on this node, though others have some: the
    /// packet programs drop its traffic instead of rejecting it.
    pub const NO_LOCAL_BACKEND: u8 = 1 << 7;
}

/// `union lb_addr`: an IPv6 address, or an IPv4 address mapped into IPv6.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LbAddr {
    /// Network order.
    pub bytes: [u8; 16],
}

impl From<IpAddr> for LbAddr {
    fn from(ip: IpAddr) -> Self {
        let v6 = match ip {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        };
        LbAddr { bytes: v6.octets() }
    }
}

impl From<LbAddr> for IpAddr {
    /// IPv4-mapped addresses come back as IPv4.
    fn from(a: LbAddr) -> IpAddr {
        Ipv6Addr::from(a.bytes).to_canonical()
    }
}

/// `struct lb_key`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LbKey {
    /// Frontend address.
    pub address: LbAddr,
    /// Frontend port, network order.
    pub dport: u16,
    /// 0 for the service, 1.. for backend slots.
    pub backend_slot: u16,
    /// IP protocol number.
    pub proto: u8,
    /// [`scope::EXT`] or [`scope::INT`].
    pub scope: u8,
    /// Zero.
    pub pad: [u8; 2],
}

impl LbKey {
    /// The key of a frontend's slot.
    pub fn new(address: IpAddr, port: u16, proto: u8, scope: u8, backend_slot: u16) -> Self {
        LbKey {
            address: address.into(),
            dport: port.to_be(),
            backend_slot,
            proto,
            scope,
            pad: [0; 2],
        }
    }

    /// The frontend port in host order.
    pub fn port(&self) -> u16 {
        u16::from_be(self.dport)
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
    /// The frontend's reverse NAT id (the service id).
    pub rev_nat_index: u16,
    /// [`svc_flags`] bits.
    pub flags: u8,
    /// Slot 0: [`svc_flags2`] bits.
    pub flags2: u8,
    /// Slot 0: affinity timeout in seconds, 0 without affinity.
    pub affinity_timeout: u32,
}

/// `struct lb_backend`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LbBackend {
    /// Backend address.
    pub address: LbAddr,
    /// Backend port, network order.
    pub port: u16,
    /// IP protocol number.
    pub proto: u8,
    /// A [`backend_state`] value.
    pub state: u8,
}

impl LbBackend {
    /// A backend in `state`.
    pub fn new(address: IpAddr, port: u16, proto: u8, state: u8) -> Self {
        LbBackend {
            address: address.into(),
            port: port.to_be(),
            proto,
            state,
        }
    }
}

/// `struct lb_reverse_nat`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LbReverseNat {
    /// Frontend address.
    pub address: LbAddr,
    /// Frontend port, network order.
    pub port: u16,
    /// Zero.
    pub pad: u16,
}

impl LbReverseNat {
    /// The entry for a frontend.
    pub fn new(address: IpAddr, port: u16) -> Self {
        LbReverseNat {
            address: address.into(),
            port: port.to_be(),
            pad: 0,
        }
    }
}

/// `struct lb_sock_key`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LbSockKey {
    /// Socket cookie.
    pub cookie: u64,
    /// Backend address.
    pub address: LbAddr,
    /// Backend port, network order.
    pub port: u16,
    /// Zero.
    pub pad: [u8; 6],
}

/// `struct lb_sock_value`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LbSockValue {
    /// Frontend address.
    pub address: LbAddr,
    /// Frontend port, network order.
    pub port: u16,
    /// Frontend reverse NAT id.
    pub rev_nat_index: u16,
}

/// `struct lb_sock_conn`: a connected socket's translation ([`LB_SOCK_CONN`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LbSockConn {
    /// Backend address.
    pub backend: LbAddr,
    /// Backend port, network order.
    pub backend_port: u16,
    /// Always zero.
    pub pad: [u8; 2],
    /// The frontend the socket asked for.
    pub orig: LbSockValue,
}

/// `struct lb_sock_conn_slot`: a slot of [`LB_SOCK_CONN_SLOTS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LbSockConnSlot {
    /// The socket holding the slot; 0 when free, with [`SOCK_SLOT_CLAIMED`] while written.
    pub cookie: u64,
    /// Its translation, valid while `cookie` is the socket's.
    pub conn: LbSockConn,
}

impl LbSockConnSlot {
    /// The slot a socket with this cookie uses when `slots` (a power of two) are in use.
    pub fn index(cookie: u64, slots: u32) -> u32 {
        (cookie & u64::from(slots.saturating_sub(1))) as u32
    }

    /// The socket's cookie and translation, when the slot holds a published one.
    pub fn held(&self) -> Option<(u64, LbSockConn)> {
        (self.cookie != 0 && self.cookie & SOCK_SLOT_CLAIMED == 0)
            .then_some((self.cookie, self.conn))
    }
}

/// Key of `lb_affinity_v1`: a client (netns cookie) and a frontend id.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LbAffinityKey {
    pub client_cookie: u64,
    pub rev_nat_index: u16,
    pub pad: [u8; 6],
}

/// Value of `lb_affinity_v1`: the backend and its last use (CLOCK_MONOTONIC ns).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LbAffinityValue {
    pub backend_id: u32,
    pub pad: u32,
    pub last_used_ns: u64,
}

/// Key of `lb_affinity_match_v1`: an active backend of a frontend with session affinity.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LbAffinityMatchKey {
    /// `lb_backends_v1` key.
    pub backend_id: u32,
    /// The frontend's id.
    pub rev_nat_index: u16,
    /// Zero.
    pub pad: u16,
}

impl LbAffinityMatchKey {
    /// The entry of `backend_id` for frontend `rev_nat_index`.
    pub fn new(backend_id: u32, rev_nat_index: u16) -> Self {
        LbAffinityMatchKey {
            backend_id,
            rev_nat_index,
            pad: 0,
        }
    }
}

/// `struct lb_src_range_key`: a frontend and a client CIDR, the key of [`LB_SOURCE_RANGES`]
/// (an LPM trie: `prefixlen` counts the bits of what follows it).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LbSrcRangeKey {
    /// 32 (frontend id and padding) + the CIDR's length as an IPv6-form prefix.
    pub prefixlen: u32,
    /// The frontend's id.
    pub rev_nat_index: u16,
    /// Zero.
    pub pad: u16,
    /// The CIDR's network address (IPv4 mapped).
    pub address: LbAddr,
}

/// What follows `prefixlen` in an [`LbSrcRangeKey`]: the data of aya's `lpm_trie::Key`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LbSrcRange {
    /// The frontend's id.
    pub rev_nat_index: u16,
    /// Zero.
    pub pad: u16,
    /// The CIDR's network address (IPv4 mapped).
    pub address: LbAddr,
}

impl LbSrcRangeKey {
    /// The entry allowing `cidr` (truncated to its network) to frontend `rev_nat_index`.
    pub fn new(rev_nat_index: u16, cidr: IpAddr, prefix: u8) -> Self {
        let v6_prefix = match cidr {
            IpAddr::V4(_) => 96 + u32::from(prefix.min(32)),
            IpAddr::V6(_) => u32::from(prefix.min(128)),
        };
        let mut address = LbAddr::from(cidr);
        for bit in v6_prefix..128 {
            address.bytes[(bit / 8) as usize] &= !(0x80u8 >> (bit % 8));
        }
        LbSrcRangeKey {
            prefixlen: 32 + v6_prefix,
            rev_nat_index,
            pad: 0,
            address,
        }
    }

    /// The data part, as aya's LPM trie key holds it.
    pub fn data(&self) -> LbSrcRange {
        LbSrcRange {
            rev_nat_index: self.rev_nat_index,
            pad: self.pad,
            address: self.address,
        }
    }

    /// The key of `prefixlen` and `data`.
    pub fn from_parts(prefixlen: u32, data: LbSrcRange) -> Self {
        LbSrcRangeKey {
            prefixlen,
            rev_nat_index: data.rev_nat_index,
            pad: data.pad,
            address: data.address,
        }
    }

    /// Whether `client` falls in this CIDR of frontend `rev_nat_index` (what the trie
    /// answers for a lookup with the full prefix length).
    pub fn matches(&self, rev_nat_index: u16, client: LbAddr) -> bool {
        if rev_nat_index != self.rev_nat_index {
            return false;
        }
        let bits = self.prefixlen.saturating_sub(32).min(128);
        (0..bits).all(|bit| {
            let (byte, mask) = ((bit / 8) as usize, 0x80u8 >> (bit % 8));
            client.bytes[byte] & mask == self.address.bytes[byte] & mask
        })
    }
}

/// Value of `lb_local_addrs_v1` (keyed by [`LbAddr`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LbLocalAddr {
    pub flags: u8,
}

/// `enum lb_ct_flags`: bits of [`LbCtEntry::flags`].
pub mod ct_flags {
    /// `LB_CT_REPLY`: the entry translates a flow's replies.
    pub const REPLY: u8 = 1 << 0;
    /// `LB_CT_SNAT`: the backend is on another node; the flow is source-NATed and forwarded.
    pub const SNAT: u8 = 1 << 1;
    /// `LB_CT_CLOSING`: a TCP FIN or RST was seen.
    pub const CLOSING: u8 = 1 << 2;
}

/// `enum lb_counter`: indexes of [`LB_COUNTERS`].
pub mod counter {
    /// `LB_CNT_NO_BACKEND`: a service without active backends.
    pub const NO_BACKEND: u8 = 0;
    /// `LB_CNT_SNAT_EXHAUSTED`: no free SNAT port.
    pub const SNAT_EXHAUSTED: u8 = 1;
    /// `LB_CNT_NO_DEVICE_ADDR`: the egress device has no address of the family.
    pub const NO_DEVICE_ADDR: u8 = 2;
    /// `LB_CNT_FIB_FAILED`: no route to the backend or the client.
    pub const FIB_FAILED: u8 = 3;
    /// `LB_CNT_TTL_EXCEEDED`: the TTL or hop limit ran out.
    pub const TTL_EXCEEDED: u8 = 4;
    /// `LB_CNT_CT_FULL`: a conntrack entry could not be written.
    pub const CT_FULL: u8 = 5;
    /// `LB_CNT_NO_LOCAL_BACKEND`: traffic policy `Local` and no endpoint on this node.
    pub const NO_LOCAL_BACKEND: u8 = 6;
    /// `LB_CNT_SOURCE_RANGE`: a client outside `loadBalancerSourceRanges`.
    pub const SOURCE_RANGE: u8 = 7;
    /// `LB_CNT_MAX`: how many counters there are.
    pub const MAX: u8 = 8;
}

/// `struct lb_xfer`: what the XDP program leaves in a frame's metadata for the tc ingress
/// program of the same device (8 bytes before the frame).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LbXfer {
    /// [`xfer::MAGIC`] | an [`xfer`] action, host order.
    pub magic: u32,
    /// [`xfer::REDIRECT_NEIGH`]: the device to leave through.
    pub ifindex: u32,
}

impl LbXfer {
    /// The metadata bytes as XDP writes them (native order).
    pub fn to_bytes(self) -> [u8; 8] {
        let mut out = [0u8; 8];
        out[..4].copy_from_slice(&self.magic.to_ne_bytes());
        out[4..].copy_from_slice(&self.ifindex.to_ne_bytes());
        out
    }
}

/// `enum lb_xfer_action` and the magic of [`LbXfer`].
pub mod xfer {
    /// `LB_XFER_MAGIC`: "LB" in the high half.
    pub const MAGIC: u32 = 0x4c42_0000;
    /// `LB_XFER_DONE`: XDP decided (and translated); tc passes the frame.
    pub const DONE: u32 = 1;
    /// `LB_XFER_REDIRECT_NEIGH`: translated; tc sends it out of the ifindex, resolving the
    /// neighbour.
    pub const REDIRECT_NEIGH: u32 = 2;
    /// `LB_XFER_REJECT`: tc answers it with an ICMP unreachable.
    pub const REJECT: u32 = 3;
}

/// `struct lb_ct_key`: a packet's tuple as it arrives.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LbCtKey {
    /// Source address.
    pub saddr: LbAddr,
    /// Destination address.
    pub daddr: LbAddr,
    /// Source port, network order.
    pub sport: u16,
    /// Destination port, network order.
    pub dport: u16,
    /// IP protocol number.
    pub proto: u8,
    /// Zero.
    pub pad: [u8; 3],
}

/// `struct lb_ct_entry`: the tuple a packet with the key's tuple leaves with.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LbCtEntry {
    /// New source address.
    pub saddr: LbAddr,
    /// New destination address.
    pub daddr: LbAddr,
    /// New source port, network order.
    pub sport: u16,
    /// New destination port, network order.
    pub dport: u16,
    /// The frontend's id.
    pub rev_nat_index: u16,
    /// [`ct_flags`] bits.
    pub flags: u8,
    /// Zero.
    pub pad: u8,
    /// The backend chosen.
    pub backend_id: u32,
    /// CLOCK_MONOTONIC second after which the entry is stale.
    pub expires: u32,
    /// [`ct_flags::SNAT`]: the next hop the flow's packets were last forwarded by.
    pub hop: LbCtHop,
}

/// `struct lb_ct_hop`: what the FIB answered for a forwarded flow's rewritten tuple, and when.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LbCtHop {
    /// The device the packets leave by; 0: no answer kept.
    pub ifindex: u32,
    /// CLOCK_MONOTONIC second of the answer: it serves for that second only.
    pub checked: u32,
    /// That device's MAC address.
    pub smac: [u8; 6],
    /// The next hop's.
    pub dmac: [u8; 6],
}

/// `struct lb_ct_entry` of [`LB_CT_V1`]: [`LbCtEntry`] without the next hop.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LbCtEntryV1 {
    /// New source address.
    pub saddr: LbAddr,
    /// New destination address.
    pub daddr: LbAddr,
    /// New source port, network order.
    pub sport: u16,
    /// New destination port, network order.
    pub dport: u16,
    /// The frontend's id.
    pub rev_nat_index: u16,
    /// [`ct_flags`] bits.
    pub flags: u8,
    /// Zero.
    pub pad: u8,
    /// The backend chosen.
    pub backend_id: u32,
    /// CLOCK_MONOTONIC second after which the entry is stale.
    pub expires: u32,
}

impl From<LbCtEntryV1> for LbCtEntry {
    /// The same flow, with no next hop kept: its next packet asks the FIB.
    fn from(v1: LbCtEntryV1) -> LbCtEntry {
        LbCtEntry {
            saddr: v1.saddr,
            daddr: v1.daddr,
            sport: v1.sport,
            dport: v1.dport,
            rev_nat_index: v1.rev_nat_index,
            flags: v1.flags,
            pad: v1.pad,
            backend_id: v1.backend_id,
            expires: v1.expires,
            hop: LbCtHop::default(),
        }
    }
}

impl LbCtEntry {
    /// The key of this entry's twin: its rewritten tuple, reversed.
    pub fn twin_key(&self, proto: u8) -> LbCtKey {
        LbCtKey {
            saddr: self.daddr,
            daddr: self.saddr,
            sport: self.dport,
            dport: self.sport,
            proto,
            pad: [0; 3],
        }
    }
}

/// `struct lb_device`: a NodePort device's node addresses ([`LB_DEVICES`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LbDevice {
    /// IPv4 address (mapped), zero without one.
    pub addr4: LbAddr,
    /// IPv6 address, zero without one.
    pub addr6: LbAddr,
    /// Zero.
    pub flags: u32,
}

/// `enum lb_trace_kind`: kinds of [`LbTraceSock`] events, as `lbctl monitor` names them.
pub mod trace_kind {
    /// `LB_TRACE_PRE_XLATE_FWD`: connect/sendmsg, before translation.
    pub const PRE_XLATE_FWD: u8 = 1;
    /// `LB_TRACE_POST_XLATE_FWD`: connect/sendmsg, after translation.
    pub const POST_XLATE_FWD: u8 = 2;
    /// `LB_TRACE_PRE_XLATE_REV`: recvmsg/getpeername, before translation.
    pub const PRE_XLATE_REV: u8 = 3;
    /// `LB_TRACE_POST_XLATE_REV`: recvmsg/getpeername, after translation.
    pub const POST_XLATE_REV: u8 = 4;
}

/// Every C enum of `lb_types.h` with its constants as Rust has them: `(enum, [(constant,
/// value)])`. `tests/layout.rs` checks that the object's BTF has exactly these.
pub const C_ENUMS: &[(&str, &[(&str, u8)])] = &[
    (
        "lb_scope",
        &[("LB_SCOPE_EXT", scope::EXT), ("LB_SCOPE_INT", scope::INT)],
    ),
    (
        "lb_svc_flags",
        &[
            ("LB_SVC_CLUSTER_IP", svc_flags::CLUSTER_IP),
            ("LB_SVC_NODE_PORT", svc_flags::NODE_PORT),
            ("LB_SVC_EXTERNAL_IP", svc_flags::EXTERNAL_IP),
            ("LB_SVC_LOADBALANCER", svc_flags::LOADBALANCER),
            ("LB_SVC_HOST_PORT", svc_flags::HOST_PORT),
            ("LB_SVC_TWO_SCOPES", svc_flags::TWO_SCOPES),
            ("LB_SVC_AFFINITY", svc_flags::AFFINITY),
            ("LB_SVC_NO_LOCAL_BACKEND", svc_flags::NO_LOCAL_BACKEND),
        ],
    ),
    (
        "lb_svc_flags2",
        &[("LB_SVC2_SOURCE_RANGES", svc_flags2::SOURCE_RANGES)],
    ),
    (
        "lb_backend_state",
        &[
            ("LB_BACKEND_ACTIVE", backend_state::ACTIVE),
            ("LB_BACKEND_TERMINATING", backend_state::TERMINATING),
            ("LB_BACKEND_QUARANTINED", backend_state::QUARANTINED),
            ("LB_BACKEND_MAINTENANCE", backend_state::MAINTENANCE),
        ],
    ),
    (
        "lb_ct_flags",
        &[
            ("LB_CT_REPLY", ct_flags::REPLY),
            ("LB_CT_SNAT", ct_flags::SNAT),
            ("LB_CT_CLOSING", ct_flags::CLOSING),
        ],
    ),
    (
        "lb_counter",
        &[
            ("LB_CNT_NO_BACKEND", counter::NO_BACKEND),
            ("LB_CNT_SNAT_EXHAUSTED", counter::SNAT_EXHAUSTED),
            ("LB_CNT_NO_DEVICE_ADDR", counter::NO_DEVICE_ADDR),
            ("LB_CNT_FIB_FAILED", counter::FIB_FAILED),
            ("LB_CNT_TTL_EXCEEDED", counter::TTL_EXCEEDED),
            ("LB_CNT_CT_FULL", counter::CT_FULL),
            ("LB_CNT_NO_LOCAL_BACKEND", counter::NO_LOCAL_BACKEND),
            ("LB_CNT_SOURCE_RANGE", counter::SOURCE_RANGE),
            ("LB_CNT_MAX", counter::MAX),
        ],
    ),
    (
        "lb_trace_kind",
        &[
            ("LB_TRACE_PRE_XLATE_FWD", trace_kind::PRE_XLATE_FWD),
            ("LB_TRACE_POST_XLATE_FWD", trace_kind::POST_XLATE_FWD),
            ("LB_TRACE_PRE_XLATE_REV", trace_kind::PRE_XLATE_REV),
            ("LB_TRACE_POST_XLATE_REV", trace_kind::POST_XLATE_REV),
        ],
    ),
];

/// One trace-sock event, as a monitor slot's `lb_events_s<n>_v2` carries it inside an
/// [`LbTraceRecord`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LbTraceSock {
    pub cgroup_id: u64,
    pub sock_cookie: u64,
    pub address: LbAddr,
    pub port: u16,
    pub kind: u8,
    pub proto: u8,
    pub cpu: u32,
}

/// `struct lb_trace_record`: what a monitor receives, the event and when it happened.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LbTraceRecord {
    /// The event.
    pub event: LbTraceSock,
    /// `bpf_ktime_get_ns()` when the hook ran: orders events read from per-CPU buffers.
    pub ktime_ns: u64,
}

// SAFETY: every type is #[repr(C)], made only of integers and byte arrays with explicit
// padding fields, so any bit pattern is valid and there are no uninitialised bytes.
unsafe impl aya::Pod for LbKey {}
// SAFETY: as above.
unsafe impl aya::Pod for LbService {}
// SAFETY: as above.
unsafe impl aya::Pod for LbBackend {}
// SAFETY: as above.
unsafe impl aya::Pod for LbReverseNat {}
// SAFETY: as above.
unsafe impl aya::Pod for LbSockKey {}
// SAFETY: as above.
unsafe impl aya::Pod for LbSockValue {}
// SAFETY: as above.
unsafe impl aya::Pod for LbSockConn {}
// SAFETY: as above (a u64 then a 40-byte, 4-aligned struct: no padding).
unsafe impl aya::Pod for LbSockConnSlot {}
// SAFETY: as above.
unsafe impl aya::Pod for LbAddr {}
// SAFETY: as above.
unsafe impl aya::Pod for LbAffinityKey {}
// SAFETY: as above.
unsafe impl aya::Pod for LbAffinityValue {}
// SAFETY: as above.
unsafe impl aya::Pod for LbLocalAddr {}
// SAFETY: as above.
unsafe impl aya::Pod for LbAffinityMatchKey {}
// SAFETY: as above.
unsafe impl aya::Pod for LbTraceSock {}
// SAFETY: as above.
unsafe impl aya::Pod for LbTraceRecord {}
// SAFETY: as above.
unsafe impl aya::Pod for LbCtKey {}
// SAFETY: as above.
unsafe impl aya::Pod for LbCtEntry {}
// SAFETY: as above.
unsafe impl aya::Pod for LbCtEntryV1 {}
// SAFETY: as above.
unsafe impl aya::Pod for LbDevice {}
// SAFETY: as above.
unsafe impl aya::Pod for LbSrcRange {}
// SAFETY: as above.
unsafe impl aya::Pod for LbSrcRangeKey {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_addresses_are_mapped_and_come_back_as_ipv4() {
        let v4: IpAddr = "10.96.0.10".parse().unwrap();
        let a = LbAddr::from(v4);
        assert_eq!(&a.bytes[10..], &[0xff, 0xff, 10, 96, 0, 10]);
        assert_eq!(IpAddr::from(a), v4);
        let v6: IpAddr = "fd00::10".parse().unwrap();
        assert_eq!(IpAddr::from(LbAddr::from(v6)), v6);
    }

    #[test]
    fn source_range_keys_cover_their_cidr_only() {
        let v4 = LbSrcRangeKey::new(7, "10.1.2.3".parse().unwrap(), 16);
        // The prefix counts the id and padding (32) and the mapped IPv4 prefix (96 + 16).
        assert_eq!(v4.prefixlen, 32 + 96 + 16);
        assert_eq!(
            IpAddr::from(v4.address),
            "10.1.0.0".parse::<IpAddr>().unwrap()
        );
        let addr = |s: &str| LbAddr::from(s.parse::<IpAddr>().unwrap());
        assert!(v4.matches(7, addr("10.1.200.9")));
        assert!(!v4.matches(7, addr("10.2.0.1")));
        assert!(
            !v4.matches(8, addr("10.1.200.9")),
            "another frontend's range"
        );
        assert!(
            !v4.matches(7, addr("::a01:0203")),
            "an IPv6 address is not mapped IPv4"
        );
        let v6 = LbSrcRangeKey::new(7, "2001:db8::1".parse().unwrap(), 32);
        assert!(v6.matches(7, addr("2001:db8:ffff::5")));
        assert!(!v6.matches(7, addr("2001:db9::5")));
        let all = LbSrcRangeKey::new(7, "0.0.0.0".parse().unwrap(), 0);
        assert!(all.matches(7, addr("192.0.2.1")));
        assert!(
            !all.matches(7, addr("2001:db8::1")),
            "0.0.0.0/0 is IPv4 only"
        );
    }

    #[test]
    fn ports_are_stored_in_network_order() {
        let key = LbKey::new("10.0.0.1".parse().unwrap(), 0x1f90, 6, scope::EXT, 0);
        assert_eq!(key.dport.to_ne_bytes(), [0x1f, 0x90]);
        assert_eq!(key.port(), 0x1f90);
    }
}
