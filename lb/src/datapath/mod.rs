//! The kernel side: loading the eBPF programs, attaching them, and keeping their maps equal
//! to the desired state.

mod batch;
pub mod codec;
mod contents;
pub mod ct_gc;
mod delta;
mod drop_counters;
mod error;
mod hooks;
mod kernel;
mod link_detach;
mod maglev_map;
mod maglev_tables;
mod map_usage;
mod migrate;
mod monitor;
mod netns_probe;
mod nodeport;
mod pin_paths;
mod pinned_state;
mod removed;
pub mod sim;
mod sock_lb;
mod tc_attach;
mod tc_netlink;
mod xdp_attach;

pub(crate) use contents::{backend_addr, head_key, lay_out_frontend, slot_order};
pub use contents::{LayoutError, ListedFrontend, MapContents};
pub use delta::{Changes, MapDelta};
pub use drop_counters::{describe as describe_drop, nonzero_drops, read_drop_counters, DropCount};
pub(crate) use error::source_chain;
pub use error::DatapathError;
pub use hooks::SocketHooks;
pub use kernel::{ApplyPhase, ApplyReport, ServiceMaps};
pub use link_detach::{detach_and_unpin, Unpinned};
pub use maglev_tables::MaglevSettings;
pub use map_usage::{map_usage, snat_ports_in_use, MapUsage};
pub use migrate::{
    expected_packet_specs, expected_specs, remove_migration_leftovers, MapSpec, MIGRATE_DIR,
    PREDECESSORS,
};
pub use monitor::{reclaim_monitor_slots, remove_monitor_dirs, TraceMonitor, MONITOR_DIR};
pub use netns_probe::netns_cookie_through_bpf;
pub use nodeport::{DeviceAddrs, NodePortConfig, NodePortLb, PacketClock};
pub use pinned_state::PinnedState;
pub use removed::{canonical, reverse_key, reverse_key_of, reverse_key_socket, RemovedBackends};
pub use sock_lb::{pinned_links, LocalAddrsReport, SockLb, SockLbConfig, LINKS_DIR};
pub use tc_attach::{
    current_netns_inode, is_tc_link, remove_tc_attachments, tc_links, TcAttachment, TcDirection,
    TcMode, TcRecord, NETLINK_HANDLE, NETLINK_PRIORITY,
};
pub use xdp_attach::{
    detach_xdp, is_xdp_link, refusal, xdp_link_path, Refusal, XdpDevice, XdpPolicy, XdpState,
    REASON_MTU, VETH_XDP_MAX_MTU,
};
