//! [`SockSim`]: the cgroup sock_addr hooks of `ebpf/src/bpf/sock_lb.c` with `lb_sock.h`'s
//! translation, as a value that holds the maps and the state the programs keep in the kernel
//! (the reverse-socket and affinity maps), driven by one method per hook.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ebpf::maps::{
    scope, trace_kind, LbAddr, LbAffinityKey, LbAffinityMatchKey, LbAffinityValue, LbBackend,
    LbKey, LbService, LbSockKey, LbSockValue, LbTraceSock,
};
use nix::errno::Errno;

use super::addr;
use super::chooser::{Chooser, SeededChooser};
use crate::config::Protocols;
use crate::datapath::codec::ServiceFlags;
use crate::datapath::{MapContents, SockLbConfig, SocketHooks};
use crate::model::L4Protocol;

const NSEC_PER_SEC: u64 = 1_000_000_000;

/// The programs' load-time configuration (their `cfg_*` globals), plus the one thing the kernel
/// knows and the simulator must be told: the initial network namespace's cookie.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimConfig {
    /// Which protocols are translated (`cfg_enable_tcp`, `cfg_enable_udp`).
    pub protocols: Protocols,
    /// Translate only sockets of the host namespace (`cfg_host_ns_only`).
    pub host_namespace_only: bool,
    /// Refuse binds to service ports in the host namespace (`cfg_bind_protection`).
    pub bind_protection: bool,
    /// The host namespace's cookie (`cfg_host_netns_cookie`); 0 means the initial namespace.
    pub host_netns_cookie: u64,
    /// Translate externalIPs only on this node's addresses (`cfg_external_ip_mitigation`).
    pub external_ip_mitigation: bool,
    /// Whether the programs get network namespace cookies (`cfg_netns_cookies`).
    pub netns_cookies: bool,
    /// Whether bind6 reads `IPV6_V6ONLY` (`cfg_sock_v6only`).
    pub sock_v6only: bool,
    /// The initial namespace's cookie, which the kernel answers for `bpf_get_netns_cookie(NULL)`
    /// and the programs use when `host_netns_cookie` is 0.
    pub initial_netns_cookie: u64,
    /// Entries of each service map (`bpf.lbMapMax`).
    pub map_max: u32,
}

impl SimConfig {
    /// The configuration the programs loaded with `config` run with.
    pub fn of(config: &SockLbConfig, initial_netns_cookie: u64) -> Self {
        SimConfig {
            protocols: config.protocols,
            host_namespace_only: config.host_namespace_only,
            bind_protection: config.bind_protection,
            host_netns_cookie: config.host_netns_cookie,
            netns_cookies: config.netns_cookies,
            sock_v6only: config.sock_v6only,
            external_ip_mitigation: config.external_ip_mitigation,
            initial_netns_cookie,
            map_max: config.map_max,
        }
    }
}

/// Who makes a socket call: what the programs read from the socket and the task, besides the
/// address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SockCall {
    /// The socket's network namespace cookie (`bpf_get_netns_cookie(ctx)`): the client, for
    /// session affinity, and the host-namespace test.
    pub netns_cookie: u64,
    /// The socket cookie (`bpf_get_socket_cookie`): reverse entries belong to one socket.
    pub socket_cookie: u64,
    /// The caller's cgroup v2 id, for trace events only.
    pub cgroup_id: u64,
    /// The socket's protocol.
    pub protocol: L4Protocol,
    /// Whether the socket has `IPV6_V6ONLY` (`skc_ipv6only`, read by bind6 through the socket
    /// casts): an IPv6 socket that takes no IPv4.
    pub v6only: bool,
}

/// The socket-level datapath in plain Rust: the same decisions as the kernel programs over the
/// same [`MapContents`].
///
/// Each call takes the socket address in the family of the hook that runs: an IPv4
/// [`SocketAddr`] is the IPv4 hook's context, an IPv6 one (IPv4-mapped included, as dual-stack
/// sockets pass them) the IPv6 hook's, and the answer comes back in the same family.
///
/// The state the programs keep in LRU maps (reverse-socket entries, affinity) is kept here
/// without a size limit: the kernel evicts the least recently used entries when a map is full,
/// which depends on its size and on per-CPU LRU lists, so the simulator matches the kernel only
/// while the maps are not full (`bpf.lbMapMax` is far above what a scenario creates). The
/// `sock_release` hook's deletion of what a closed socket's connect kept is not modelled either:
/// state keyed by a closed socket's cookie is never looked up again, so it only matters through
/// that same LRU pressure (the `reverse-nat-after-churn` scenario shows it on the kernel).
#[derive(Debug)]
pub struct SockSim {
    config: SimConfig,
    maps: MapContents,
    local_addrs: BTreeSet<LbAddr>,
    /// `lb_reverse_sk_v1`: unconnected sends' translations.
    reverse_sk: HashMap<LbSockKey, LbSockValue>,
    /// `lb_sock_conn_v1`: each connected socket's translation, by socket cookie.
    connected: HashMap<u64, SockConn>,
    affinity: BTreeMap<LbAffinityKey, LbAffinityValue>,
    /// `bpf_ktime_get_ns`: starts at 0 and moves only by [`SockSim::advance_clock`], where the
    /// kernel's clock moves by itself (so affinity expires only when a scenario says so).
    now_ns: u64,
    chooser: SeededChooser,
    monitor: bool,
    events: Vec<LbTraceSock>,
    /// The hooks attached to the node's cgroup: `None` with `socketLB.enabled=false`, when
    /// the programs see no socket call; fewer than all on a kernel that lacks some.
    attached: Option<SocketHooks>,
    /// `lb_devices_v1`: the NodePort devices by ifindex, as the reconciler set them, for the
    /// packet simulator.
    devices: BTreeMap<u32, crate::datapath::DeviceAddrs>,
}

/// `struct lb_sock_conn`: a connected socket's translation.
#[derive(Clone, Copy, Debug)]
struct SockConn {
    backend: LbAddr,
    backend_port: u16,
    orig: LbSockValue,
}

/// The `lb_reverse_sk_v1` key of this socket and backend.
fn index_key(call: &SockCall, backend: &LbAddr, port: u16) -> LbSockKey {
    LbSockKey {
        cookie: call.socket_cookie,
        address: *backend,
        port,
        pad: [0; 6],
    }
}

/// A frontend found by `lb_lookup_frontend`: the key it was found under (scope chosen, address
/// made wildcard when a local address reached a NodePort/HostPort) and its slot-0 entry.
#[derive(Clone, Copy, Debug)]
struct Found {
    key: LbKey,
    svc: LbService,
}

impl SockSim {
    /// A simulator with these maps, no local addresses besides loopback, empty reverse and
    /// affinity state, the clock at 0, monitoring off, and a chooser seeded with 0.
    pub fn new(config: SimConfig, maps: MapContents) -> Self {
        SockSim {
            config,
            maps,
            local_addrs: BTreeSet::new(),
            reverse_sk: HashMap::new(),
            connected: HashMap::new(),
            affinity: BTreeMap::new(),
            now_ns: 0,
            chooser: SeededChooser::new(0),
            monitor: false,
            events: Vec::new(),
            attached: Some(SocketHooks::ALL),
            devices: BTreeMap::new(),
        }
    }

    /// Attaches these hooks to the node's cgroup, or none (the agent attaches none with
    /// `socketLB.enabled=false`); the maps stay as they are.
    pub fn set_attached(&mut self, attached: Option<SocketHooks>) {
        self.attached = attached;
    }

    /// Replaces the chooser of [`SockSim::connect`] by one seeded with `seed`.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.chooser = SeededChooser::new(seed);
        self
    }

    /// The agent reconciled: the programs now read `maps`. Reverse-socket and affinity state
    /// stays, as it does in the kernel; the rules below decide whether it still applies.
    pub fn set_maps(&mut self, maps: MapContents) {
        self.maps = maps;
    }

    /// The maps the simulator reads.
    pub fn maps(&self) -> &MapContents {
        &self.maps
    }

    /// `lb_devices_v1`: the NodePort devices by ifindex, as the agent's reconciler set them.
    pub fn devices(&self) -> &BTreeMap<u32, crate::datapath::DeviceAddrs> {
        &self.devices
    }

    /// The agent updated `lb_local_addrs`: the node addresses where wildcard NodePort and
    /// HostPort frontends answer (loopback always does).
    pub fn set_local_addresses(&mut self, addrs: &[IpAddr]) {
        self.local_addrs = addrs.iter().map(|&ip| LbAddr::from(ip)).collect();
    }

    /// Moves the simulated `bpf_ktime_get_ns` forward (session affinity expires by it).
    pub fn advance_clock(&mut self, by: Duration) {
        let ns = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.now_ns = self.now_ns.saturating_add(ns);
    }

    /// Turns trace-sock events on or off (`lb_monitor_v1[0]`, which `lbctl monitor` sets).
    pub fn set_monitor(&mut self, on: bool) {
        self.monitor = on;
    }

    /// The trace-sock events recorded since the last call, oldest first, as the programs send
    /// them (`cpu` is always 0: the simulator has no CPUs). `lb::views::TraceSockEvent`
    /// decodes and renders them as `lbctl monitor` does.
    pub fn take_events(&mut self) -> Vec<LbTraceSock> {
        std::mem::take(&mut self.events)
    }

    /// connect4/6 (`sock_xlate_fwd`): where the socket really goes when it connects to `dst`.
    /// The translation is kept under the socket's cookie until it connects again. A fresh
    /// backend choice uses the simulator's seeded chooser.
    pub fn connect(&mut self, call: &SockCall, dst: SocketAddr) -> SocketAddr {
        self.forward(call, dst, None, true)
    }

    /// [`SockSim::connect`] with a fresh choice made by `chooser` (affinity, when it applies,
    /// still wins, as in the kernel).
    pub fn connect_with(
        &mut self,
        call: &SockCall,
        dst: SocketAddr,
        chooser: &mut dyn Chooser,
    ) -> SocketAddr {
        self.forward(call, dst, Some(chooser), true)
    }

    /// sendmsg4/6 (`sock_xlate_fwd`): where one datagram of an unconnected UDP socket (or one
    /// sent with an explicit destination) really goes. The translation is kept per destination.
    pub fn sendmsg(&mut self, call: &SockCall, dst: SocketAddr) -> SocketAddr {
        self.forward(call, dst, None, false)
    }

    /// [`SockSim::sendmsg`] with a fresh choice made by `chooser`.
    pub fn sendmsg_with(
        &mut self,
        call: &SockCall,
        dst: SocketAddr,
        chooser: &mut dyn Chooser,
    ) -> SocketAddr {
        self.forward(call, dst, Some(chooser), false)
    }

    /// The addresses a connect to `dst` may go to on a fresh (non-affinity) choice, one per
    /// active slot (an empty or dangling slot leaves `dst` as it is); `None` when the call is
    /// not translated at all (not a service, no active backend, protocol off, or another
    /// namespace under `host_namespace_only`). Changes nothing.
    pub fn candidates(&self, call: &SockCall, dst: SocketAddr) -> Option<BTreeSet<SocketAddr>> {
        let found = self.forward_frontend(call, dst)?;
        let slots = self.slot_outcomes(&found, dst);
        (!slots.is_empty()).then(|| slots.into_iter().map(|(_, _, a)| a).collect())
    }

    /// Where session affinity would send a connect to `dst` now, if it would; changes nothing
    /// (a connect refreshes the entry).
    pub fn affinity_target(&self, call: &SockCall, dst: SocketAddr) -> Option<SocketAddr> {
        let found = self.forward_frontend(call, dst)?;
        if found.svc.count == 0 || !ServiceFlags(found.svc.flags).affinity() {
            return None;
        }
        let backend_id = self.affinity_lookup(&found, call)?;
        let backend = self.maps.backends.get(&backend_id)?;
        Some(addr::store(dst, &backend.address, backend.port))
    }

    /// getpeername4/6: what `getpeername` shows for a connected socket whose real peer is
    /// `peer`; the backend itself on a kernel without the hook.
    pub fn getpeername(&mut self, call: &SockCall, peer: SocketAddr) -> SocketAddr {
        if !self.attached.is_some_and(|h| h.getpeername) {
            return peer;
        }
        self.peer_name(call, peer)
    }

    /// When the client's affinity entry for the frontend at `dst` was last used, on the clock
    /// of [`SockSim::advance_clock`], fresh or not, and the frontend's timeout (both in ns);
    /// `None` without an entry or affinity. Changes nothing.
    pub fn affinity_last_use(&self, call: &SockCall, dst: SocketAddr) -> Option<(u64, u64)> {
        let found = self.forward_frontend(call, dst)?;
        if !ServiceFlags(found.svc.flags).affinity() {
            return None;
        }
        let last = self
            .affinity
            .get(&affinity_key(&self.config, call, &found.svc))?;
        let timeout_ns = u64::from(found.svc.affinity_timeout) * NSEC_PER_SEC;
        Some((last.last_used_ns, timeout_ns))
    }

    /// recvmsg4/6 and getpeername4/6 (`sock_xlate_rev`): what the application is shown for a
    /// socket whose real peer (or datagram source) is `peer`.
    pub fn peer_name(&mut self, call: &SockCall, peer: SocketAddr) -> SocketAddr {
        if !self.translates(call) {
            return peer;
        }
        let (address, port) = addr::load(peer);
        // `sock_lookup_orig`: the connect's translation, else an unconnected send's.
        let conn = self
            .connected
            .get(&call.socket_cookie)
            .filter(|c| c.backend == address && c.backend_port == port)
            .map(|c| c.orig);
        let Some(orig) = conn.or_else(|| {
            self.reverse_sk
                .get(&index_key(call, &address, port))
                .copied()
        }) else {
            return peer;
        };
        self.trace(call, trace_kind::PRE_XLATE_REV, &address, port);
        // The service is gone, or its id now names another frontend: show the truth. A
        // wildcard frontend was reached through a local address, which is what the
        // application used.
        let shown = self
            .maps
            .reverse_nat
            .get(&orig.rev_nat_index)
            .is_some_and(|rev| {
                rev.port == orig.port
                    && (rev.address == orig.address || addr::is_wildcard(&rev.address))
            });
        if !shown {
            return peer;
        }
        self.trace(call, trace_kind::POST_XLATE_REV, &orig.address, orig.port);
        addr::store(peer, &orig.address, orig.port)
    }

    /// bind4/6 (`sock_bind_allowed`): `Err(EPERM)` when bind protection refuses `local`: in
    /// the host namespace, a port that a NodePort, LoadBalancer or externalIPs frontend serves
    /// on that address (a wildcard NodePort serves every local address); a bind to `::` also
    /// takes IPv4 on a dual-stack socket, so `0.0.0.0` is checked too, unless the socket has
    /// `IPV6_V6ONLY` and the programs can tell (`sock_is_v6only`). Port 0 is always allowed.
    /// `Ok` means the hook lets the bind through; the kernel may still refuse it for its own
    /// reasons (address not local, port in use).
    pub fn bind(&self, call: &SockCall, local: SocketAddr) -> Result<(), Errno> {
        let (address, port) = addr::load(local);
        if !self.attached.is_some_and(|h| h.bind)
            || !self.config.bind_protection
            || port == 0
            || !self.proto_enabled(call.protocol)
            || !self.in_host_ns(call)
        {
            return Ok(());
        }
        let proto = call.protocol.number();
        if self.port_is_service(proto, address, port) {
            return Err(Errno::EPERM);
        }
        if addr::is_wildcard(&address)
            && !addr::is_v4(&address)
            && !(self.config.sock_v6only && call.v6only)
            && self.port_is_service(proto, addr::v4_any(), port)
        {
            return Err(Errno::EPERM);
        }
        Ok(())
    }

    /// The connect and sendmsg hooks: `sock_xlate_fwd`, the hook's store, then
    /// `sock_xlate_fwd_done`, which remembers a connect's translation by socket cookie and a
    /// send's per destination; or, for a connect that is not translated, `sock_forget_conn`.
    fn forward(
        &mut self,
        call: &SockCall,
        dst: SocketAddr,
        chooser: Option<&mut dyn Chooser>,
        connect: bool,
    ) -> SocketAddr {
        let Some((to, backend, orig)) = self.translate(call, dst, chooser) else {
            if connect {
                // An earlier connect's translation no longer holds. (The programs look only
                // when the socket still has a destination, so a TCP socket whose translated
                // connect failed keeps it; the simulator has no socket state to tell, and no
                // scenario reconnects a failed socket.)
                self.connected.remove(&call.socket_cookie);
            }
            return dst;
        };
        if connect {
            // A reconnect overwrites what the last connect kept.
            let conn = SockConn {
                backend: backend.address,
                backend_port: backend.port,
                orig,
            };
            self.connected.insert(call.socket_cookie, conn);
        } else {
            self.reverse_sk
                .insert(index_key(call, &backend.address, backend.port), orig);
        }
        self.trace(
            call,
            trace_kind::POST_XLATE_FWD,
            &backend.address,
            backend.port,
        );
        to
    }

    /// `sock_xlate_fwd` and the hook's store: where `dst` goes, the backend and what the
    /// socket asked for; `None` when the call is left alone.
    fn translate(
        &mut self,
        call: &SockCall,
        dst: SocketAddr,
        chooser: Option<&mut dyn Chooser>,
    ) -> Option<(SocketAddr, LbBackend, LbSockValue)> {
        let found = self.forward_frontend(call, dst)?;
        let (dst_address, dst_port) = addr::load(dst);
        self.trace(call, trace_kind::PRE_XLATE_FWD, &dst_address, dst_port);
        // No backend: leave the address alone, the connection fails as it would.
        let backend = self.select_backend(call, &found, dst, chooser)?;
        // `sock_xlate_fwd_done` runs only once the hook has stored the destination.
        let to = addr::stored(dst, &backend.address, backend.port)?;
        let orig = LbSockValue {
            address: dst_address,
            port: dst_port,
            rev_nat_index: found.svc.rev_nat_index,
        };
        Some((to, backend, orig))
    }

    /// The frontend a forward translation of `dst` uses, if the call is translated at all.
    fn forward_frontend(&self, call: &SockCall, dst: SocketAddr) -> Option<Found> {
        if !self.translates(call) {
            return None;
        }
        let (address, port) = addr::load(dst);
        let loopback_is_node = self.loopback_is_node(call, &address);
        let found = self.lookup_frontend(
            frontend_key(address, port, call.protocol.number()),
            loopback_is_node,
        )?;
        // CVE-2020-8554: an externalIP that is not this node's keeps the address asked for.
        let foreign_external_ip = ServiceFlags(found.svc.flags).external_ip()
            && !self.is_node_local(&address, loopback_is_node);
        (!(self.config.external_ip_mitigation && foreign_external_ip)).then_some(found)
    }

    /// `lb_select_backend`: the affinity backend when there is a fresh one (and its entry is
    /// in the backends map), else a random active slot's (remembered for affinity). `None` when
    /// there is no active backend, or the chosen slot or backend entry is missing.
    fn select_backend(
        &mut self,
        call: &SockCall,
        found: &Found,
        dst: SocketAddr,
        chooser: Option<&mut dyn Chooser>,
    ) -> Option<LbBackend> {
        let svc = &found.svc;
        if svc.count == 0 {
            return None;
        }
        let affinity = ServiceFlags(svc.flags).affinity();
        let client = affinity_key(&self.config, call, svc);
        if affinity {
            let pinned = self
                .affinity_lookup(found, call)
                .and_then(|id| self.maps.backends.get(&id).copied());
            if let Some(backend) = pinned {
                // `lb_affinity_backend` refreshes the entry it reuses.
                if let Some(last) = self.affinity.get_mut(&client) {
                    last.last_used_ns = self.now_ns;
                }
                return Some(backend);
            }
        }
        let outcomes: Vec<SocketAddr> = self
            .slot_outcomes(found, dst)
            .into_iter()
            .map(|(_, _, a)| a)
            .collect();
        let index = match chooser {
            Some(c) => c.choose(&outcomes),
            None => self.chooser.choose(&outcomes),
        };
        let slot = u16::try_from(index % usize::from(svc.count)).ok()? + 1;
        let backend_id = self.slot_backend(&found.key, slot);
        if backend_id == 0 {
            return None;
        }
        if affinity {
            self.affinity.insert(
                client,
                LbAffinityValue {
                    backend_id,
                    pad: 0,
                    last_used_ns: self.now_ns,
                },
            );
        }
        self.maps.backends.get(&backend_id).copied()
    }

    /// `lb_affinity_backend` without the refresh: the client's backend id while the entry is
    /// fresh (last use plus the timeout not before now, a form without underflow) and the
    /// backend is still an active backend of the frontend (`lb_affinity_match`), whatever slot
    /// it holds now.
    fn affinity_lookup(&self, found: &Found, call: &SockCall) -> Option<u32> {
        let svc = &found.svc;
        let last = self.affinity.get(&affinity_key(&self.config, call, svc))?;
        let timeout_ns = u64::from(svc.affinity_timeout) * NSEC_PER_SEC;
        if last.last_used_ns.wrapping_add(timeout_ns) < self.now_ns {
            return None;
        }
        let matched = LbAffinityMatchKey::new(last.backend_id, svc.rev_nat_index);
        self.maps
            .affinity_match
            .contains_key(&matched)
            .then_some(last.backend_id)
    }

    /// Every active slot of `found` with its backend id and the address a connect to `dst`
    /// choosing it returns (`dst` itself when the slot or its backend is missing).
    fn slot_outcomes(&self, found: &Found, dst: SocketAddr) -> Vec<(u16, u32, SocketAddr)> {
        (1..=found.svc.count)
            .map(|slot| {
                let id = self.slot_backend(&found.key, slot);
                let to = match self.maps.backends.get(&id) {
                    Some(b) if id != 0 => addr::store(dst, &b.address, b.port),
                    _ => dst,
                };
                (slot, id, to)
            })
            .collect()
    }

    /// `lb_slot_backend`: the backend id in `key`'s slot, 0 when the slot is empty.
    fn slot_backend(&self, key: &LbKey, slot: u16) -> u32 {
        let slot_key = LbKey {
            backend_slot: slot,
            ..*key
        };
        self.maps
            .services
            .get(&slot_key)
            .map_or(0, |entry| entry.backend_id)
    }

    /// `lb_lookup_service`: the frontend at `key`, preferring the internal-scope twin (socket
    /// traffic comes from inside the cluster, so internalTrafficPolicy applies).
    fn lookup_service(&self, mut key: LbKey) -> Option<Found> {
        key.backend_slot = 0;
        key.scope = scope::EXT;
        let svc = *self.maps.services.get(&key)?;
        if !ServiceFlags(svc.flags).two_scopes() {
            return Some(Found { key, svc });
        }
        key.scope = scope::INT;
        let svc = *self.maps.services.get(&key)?;
        Some(Found { key, svc })
    }

    /// `lb_lookup_frontend`: the frontend at `key`, or, when its address is one of this node's
    /// ([`SockSim::is_node_local`]), the wildcard NodePort or HostPort frontend of its port.
    fn lookup_frontend(&self, key: LbKey, loopback_is_node: bool) -> Option<Found> {
        if let Some(found) = self.lookup_service(key) {
            return Some(found);
        }
        if !self.is_node_local(&key.address, loopback_is_node) {
            return None;
        }
        let wildcard = LbKey {
            address: addr::to_wildcard(&key.address),
            ..key
        };
        let found = self.lookup_service(wildcard)?;
        ServiceFlags(found.svc.flags)
            .answers_on_local_addresses()
            .then_some(found)
    }

    /// `sock_port_is_service`: a NodePort, LoadBalancer or externalIPs frontend owns
    /// `address:port` (HostPort ports belong to a pod, ClusterIPs are not on the node). Asked
    /// in the host namespace only, whose loopback is the node's.
    fn port_is_service(&self, proto: u8, address: LbAddr, port: u16) -> bool {
        self.lookup_frontend(frontend_key(address, port, proto), true)
            .is_some_and(|found| ServiceFlags(found.svc.flags).owns_node_port())
    }

    /// `lb_addr_is_node_local`: an address where the node's wildcard frontends answer: one in
    /// `lb_local_addrs`, or loopback when the caller's loopback is the node's.
    fn is_node_local(&self, address: &LbAddr, loopback_is_node: bool) -> bool {
        if addr::is_loopback(address) {
            loopback_is_node
        } else {
            self.local_addrs.contains(address)
        }
    }

    /// `sock_loopback_is_node`: `address` is loopback and the caller runs in the node's host
    /// namespace (a pod's loopback is the pod's own).
    fn loopback_is_node(&self, call: &SockCall, address: &LbAddr) -> bool {
        addr::is_loopback(address) && self.in_host_ns(call)
    }

    /// `sock_proto_enabled`.
    fn proto_enabled(&self, protocol: L4Protocol) -> bool {
        match protocol {
            L4Protocol::Tcp => self.config.protocols.tcp,
            L4Protocol::Udp => self.config.protocols.udp,
        }
    }

    /// `sock_in_host_ns`.
    fn in_host_ns(&self, call: &SockCall) -> bool {
        if !self.config.netns_cookies {
            return true;
        }
        let host = match self.config.host_netns_cookie {
            0 => self.config.initial_netns_cookie,
            cookie => cookie,
        };
        call.netns_cookie == host
    }

    /// The checks both translation directions start with.
    fn translates(&self, call: &SockCall) -> bool {
        self.attached.is_some()
            && self.proto_enabled(call.protocol)
            && (!self.config.host_namespace_only || self.in_host_ns(call))
    }

    /// `lb_emit_trace`.
    fn trace(&mut self, call: &SockCall, kind: u8, address: &LbAddr, port: u16) {
        if !self.monitor {
            return;
        }
        self.events.push(LbTraceSock {
            cgroup_id: call.cgroup_id,
            sock_cookie: call.socket_cookie,
            address: *address,
            port,
            kind,
            proto: call.protocol.number(),
            cpu: 0,
        });
    }
}

/// The slot-0 key of a frontend in the external scope.
fn frontend_key(address: LbAddr, port_be: u16, proto: u8) -> LbKey {
    LbKey {
        address,
        dport: port_be,
        backend_slot: 0,
        proto,
        scope: scope::EXT,
        pad: [0; 2],
    }
}

/// `lb_affinity_key`: the client's namespace and the frontend (of the scope in use).
fn affinity_key(config: &SimConfig, call: &SockCall, svc: &LbService) -> LbAffinityKey {
    LbAffinityKey {
        // `sock_affinity_client`: one client for all without namespace cookies.
        client_cookie: if config.netns_cookies {
            call.netns_cookie
        } else {
            0
        },
        rev_nat_index: svc.rev_nat_index,
        pad: [0; 6],
    }
}

/// What the agent's reconciler reads and writes, as it does in the kernel's maps.
impl crate::reconciler::DatapathMaps for SockSim {
    fn read_services(&mut self) -> Result<MapContents, crate::datapath::DatapathError> {
        Ok(self.maps.clone())
    }

    /// The simulator applies the delta to its own maps: `have` is what the reconciler believes
    /// they hold, and a scenario checks that belief by what the maps then answer.
    fn apply_services(
        &mut self,
        _have: &MapContents,
        delta: &crate::datapath::MapDelta,
    ) -> Result<crate::datapath::ApplyReport, crate::datapath::DatapathError> {
        let mut report = delta.report();
        if let Some(tables) = &delta.maglev {
            let have = &self.maps.maglev;
            report.written += tables
                .iter()
                .filter(|(k, t)| have.get(k) != Some(t))
                .count();
            report.deleted += have.keys().filter(|k| !tables.contains_key(k)).count();
        }
        delta.apply_to(&mut self.maps);
        Ok(report)
    }

    /// The simulator's maps are as large as the agent's options make the kernel's.
    fn service_capacity(&mut self) -> Result<usize, crate::datapath::DatapathError> {
        Ok(self.config.map_max as usize)
    }

    fn set_local_addresses(
        &mut self,
        addrs: &[IpAddr],
    ) -> Result<crate::datapath::LocalAddrsReport, crate::datapath::DatapathError> {
        // The simulator's map is never full.
        let want: BTreeSet<LbAddr> = addrs.iter().map(|&ip| LbAddr::from(ip)).collect();
        let changed = want.symmetric_difference(&self.local_addrs).count();
        let found = want.len();
        self.local_addrs = want;
        Ok(crate::datapath::LocalAddrsReport {
            changed,
            programmed: found,
            found,
            capacity: u32::MAX,
        })
    }

    fn set_devices(
        &mut self,
        devices: &[crate::datapath::DeviceAddrs],
    ) -> Result<usize, crate::datapath::DatapathError> {
        let want: BTreeMap<u32, crate::datapath::DeviceAddrs> =
            devices.iter().map(|d| (d.ifindex, d.clone())).collect();
        let changed = want
            .iter()
            .filter(|(i, d)| self.devices.get(i) != Some(d))
            .count()
            + self
                .devices
                .keys()
                .filter(|i| !want.contains_key(i))
                .count();
        self.devices = want;
        Ok(changed)
    }

    fn translated_sockets(
        &mut self,
    ) -> Result<std::collections::HashSet<(u64, SocketAddr)>, crate::datapath::DatapathError> {
        let connected = self.connected.iter().map(|(&cookie, c)| {
            crate::datapath::reverse_key_socket(&LbSockKey {
                cookie,
                address: c.backend,
                port: c.backend_port,
                pad: [0; 6],
            })
        });
        let sends = self
            .reverse_sk
            .keys()
            .map(crate::datapath::reverse_key_socket);
        Ok(connected.chain(sends).collect())
    }

    fn forget_translated(
        &mut self,
        sockets: &[(u64, SocketAddr)],
    ) -> Result<(), crate::datapath::DatapathError> {
        for &(cookie, backend) in sockets {
            let key = crate::datapath::reverse_key(cookie, backend);
            let connected_there = self
                .connected
                .get(&cookie)
                .is_some_and(|c| c.backend == key.address && c.backend_port == key.port);
            if connected_there {
                self.connected.remove(&cookie);
            }
            self.reverse_sk.remove(&key);
        }
        Ok(())
    }
}
