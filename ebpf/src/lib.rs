//! The load balancer's eBPF datapath.
//!
//! The programs are C under `src/bpf/`, built by clang in `build.rs`; map layouts are defined
//! once in `include/lb_types.h` and mirrored here as `#[repr(C)]` structs, which a test checks
//! against the BTF of the built object, field by field.

pub mod maps;

/// An object file's bytes, aligned so that ELF parsing can read it in place.
#[repr(C, align(8))]
struct Aligned<Bytes: ?Sized> {
    bytes: Bytes,
}

static SOCK_LB: &Aligned<[u8]> = &Aligned {
    bytes: *include_bytes!(concat!(env!("OUT_DIR"), "/sock_lb.o")),
};

/// The socket-level load balancer: cgroup `connect`, `sendmsg`, `recvmsg`, `getpeername` and
/// `bind` programs for IPv4 and IPv6, a `sock_release` program, and the maps they share.
pub fn sock_lb_object() -> &'static [u8] {
    &SOCK_LB.bytes
}

static SOCK_LB_ATOMICS: &Aligned<[u8]> = &Aligned {
    bytes: *include_bytes!(concat!(env!("OUT_DIR"), "/sock_lb_atomics.o")),
};

/// [`sock_lb_object`] built for kernels with BPF atomic compare-and-exchange (Linux 5.12): the
/// same programs and maps, whose connect keeps a connected socket's translation in the slot
/// array `lb_sock_conn_slots_v1` when it can (`cfg_sock_conn_slots` slots in use). Older
/// kernels refuse its instructions, even unreached, so they load [`sock_lb_object`].
pub fn sock_lb_atomics_object() -> &'static [u8] {
    &SOCK_LB_ATOMICS.bytes
}

static NETNS_PROBE: &Aligned<[u8]> = &Aligned {
    bytes: *include_bytes!(concat!(env!("OUT_DIR"), "/netns_probe.o")),
};

/// A one-shot cgroup `connect4` hook that records the network namespace cookie of a connect to
/// a probe address (`cfg_probe_ip4`, `cfg_probe_port`) in the map [`NETNS_PROBE_MAP`]: how an
/// agent learns its own namespace's cookie on kernels without `SO_NETNS_COOKIE`.
pub fn netns_probe_object() -> &'static [u8] {
    &NETNS_PROBE.bytes
}

/// The program of [`netns_probe_object`].
pub const NETNS_PROBE_PROGRAM: &str = "lb_netns_probe_connect4";
/// Its map: one `u64` cookie at index 0.
pub const NETNS_PROBE_MAP: &str = "lb_netns_probe";

/// Names of the programs in [`sock_lb_object`], with the cgroup hook each attaches to.
pub const SOCK_LB_PROGRAMS: &[(&str, &str)] = &[
    ("lb_sock4_connect", "connect4"),
    ("lb_sock4_sendmsg", "sendmsg4"),
    ("lb_sock4_recvmsg", "recvmsg4"),
    ("lb_sock4_getpeername", "getpeername4"),
    ("lb_sock4_bind", "bind4"),
    ("lb_sock6_connect", "connect6"),
    ("lb_sock6_sendmsg", "sendmsg6"),
    ("lb_sock6_recvmsg", "recvmsg6"),
    ("lb_sock6_getpeername", "getpeername6"),
    ("lb_sock6_bind", "bind6"),
];

/// The `cgroup/sock_release` program of [`sock_lb_object`] (a `BPF_PROG_TYPE_CGROUP_SOCK`, not a
/// sock_addr hook): it forgets a closing socket's reverse-translation entry.
pub const SOCK_LB_RELEASE_PROGRAM: (&str, &str) = ("lb_sock_release", "sock_release");

static NODEPORT: &Aligned<[u8]> = &Aligned {
    bytes: *include_bytes!(concat!(env!("OUT_DIR"), "/nodeport.o")),
};

/// The packet datapath: tc programs for NodePort, LoadBalancer and externalIPs frontends on
/// the NodePort devices, with connection tracking and SNAT, over the maps shared with
/// [`sock_lb_object`] and those of `lb_pkt_maps.h`.
pub fn nodeport_object() -> &'static [u8] {
    &NODEPORT.bytes
}

/// The tc programs of [`nodeport_object`]: on every NodePort device's ingress, and its egress
/// (the replies of local backends).
pub const NODEPORT_INGRESS_PROGRAM: &str = "lb_nodeport_ingress";
/// See [`NODEPORT_INGRESS_PROGRAM`].
pub const NODEPORT_EGRESS_PROGRAM: &str = "lb_nodeport_egress";
/// The tc program of [`nodeport_object`] on the ingress of pods' host-side interfaces with
/// `socketLB.hostNamespaceOnly` (their egress runs [`NODEPORT_EGRESS_PROGRAM`]).
pub const POD_INGRESS_PROGRAM: &str = "lb_pod_ingress";

static NODEPORT_XDP: &Aligned<[u8]> = &Aligned {
    bytes: *include_bytes!(concat!(env!("OUT_DIR"), "/nodeport_xdp.o")),
};

/// The packet datapath's ingress at XDP (`loadBalancer.acceleration`): the same source as
/// [`nodeport_object`]'s ingress program, compiled for XDP, over the same pinned maps. What it
/// passes on carries a [`maps::LbXfer`] in its metadata for the tc ingress program.
pub fn nodeport_xdp_object() -> &'static [u8] {
    &NODEPORT_XDP.bytes
}

/// The XDP program of [`nodeport_xdp_object`].
pub const NODEPORT_XDP_PROGRAM: &str = "lb_nodeport_xdp";

static EMPTY: &Aligned<[u8]> = &Aligned {
    bytes: *include_bytes!(concat!(env!("OUT_DIR"), "/empty.o")),
};

/// Programs that do nothing ([`EMPTY_XDP_PROGRAM`], [`EMPTY_TC_PROGRAM`],
/// [`EMPTY_SOCK_PROGRAMS`], [`EMPTY_SOCK_RELEASE_PROGRAM`]): the floors the NodePort and
/// socket-LB benches measure the real programs against.
pub fn empty_object() -> &'static [u8] {
    &EMPTY.bytes
}

/// The XDP program of [`empty_object`] (returns `XDP_PASS`).
pub const EMPTY_XDP_PROGRAM: &str = "lb_empty_xdp";
/// The tc program of [`empty_object`] (returns `TC_ACT_OK`).
pub const EMPTY_TC_PROGRAM: &str = "lb_empty_tc";
/// The cgroup sock_addr programs of [`empty_object`] (each lets the call go on unchanged), on
/// the same hooks as [`SOCK_LB_PROGRAMS`]: the socket-LB bench's floor.
pub const EMPTY_SOCK_PROGRAMS: &[(&str, &str)] = &[
    ("lb_empty_connect4", "connect4"),
    ("lb_empty_sendmsg4", "sendmsg4"),
    ("lb_empty_recvmsg4", "recvmsg4"),
    ("lb_empty_getpeername4", "getpeername4"),
    ("lb_empty_bind4", "bind4"),
    ("lb_empty_connect6", "connect6"),
    ("lb_empty_sendmsg6", "sendmsg6"),
    ("lb_empty_recvmsg6", "recvmsg6"),
    ("lb_empty_getpeername6", "getpeername6"),
    ("lb_empty_bind6", "bind6"),
];
/// The `cgroup/sock_release` program of [`empty_object`], as [`SOCK_LB_RELEASE_PROGRAM`]'s
/// floor.
pub const EMPTY_SOCK_RELEASE_PROGRAM: &str = "lb_empty_sock_release";
