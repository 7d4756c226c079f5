//! [`PktSim`]: the tc programs of `ebpf/src/bpf/nodeport.c` (`lb_nodeport_ingress`,
//! `lb_nodeport_egress`) over the same maps, as a value driven by one method per program. The
//! contract both follow is the header comment of `ebpf/include/lb_nodeport.h`, and the helpers
//! are those of `lb_pkt.h`, `lb_ct.h`, `lb_fib.h` and `lb_icmp.h`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ebpf::maps::{
    counter, ct_flags, scope, svc_flags, svc_flags2, LbAddr, LbBackend, LbCtEntry, LbCtHop,
    LbCtKey, LbDevice, LbKey, LbService,
};

use super::addr;
use super::ct::{self, CtTable};

mod pod;
use super::fib::{Fib, FibQuery, FibResult};
use super::icmp;
use super::jhash::flow_hash;
use super::packet::{self, Parsed};
use crate::datapath::ct_gc;
use crate::datapath::MapContents;

/// `TC_ACT_OK`, `TC_ACT_SHOT`, `TC_ACT_REDIRECT`.
const TC_ACT_OK: i32 = 0;
const TC_ACT_SHOT: i32 = 2;
const TC_ACT_REDIRECT: i32 = 7;
/// How many SNAT ports a new flow tries (`LB_SNAT_TRIES`).
pub const SNAT_TRIES: u32 = 32;

/// The programs' load-time settings (their `cfg_*` globals).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PktConfig {
    /// `cfg_snat_port_min`: the first port of the SNAT range.
    pub snat_port_min: u16,
    /// `cfg_snat_port_max`: its last port.
    pub snat_port_max: u16,
    /// `cfg_flow_seed`: the flow hash's seed.
    pub flow_seed: u32,
    /// `cfg_external_clusterip` (`bpf.lbExternalClusterIP`): ClusterIPs answer external
    /// traffic.
    pub external_clusterip: bool,
    /// `cfg_external_ip_mitigation` (`!bpf.disableExternalIPMitigation`): a pod's packet to an
    /// externalIP that is not the node's stays untranslated.
    pub external_ip_mitigation: bool,
    /// `cfg_maglev` and `cfg_maglev_m`: `Some(maglev.tableSize)` when new flows take their
    /// backend from the frontend's Maglev table ([`MapContents::maglev`]).
    pub maglev_m: Option<u32>,
}

impl From<&crate::datapath::NodePortConfig> for PktConfig {
    /// The settings the agent loads the programs with.
    fn from(config: &crate::datapath::NodePortConfig) -> Self {
        PktConfig {
            snat_port_min: config.snat_port_min,
            snat_port_max: config.snat_port_max,
            flow_seed: config.flow_seed,
            external_clusterip: config.external_clusterip,
            external_ip_mitigation: config.external_ip_mitigation,
            maglev_m: config.maglev_m,
        }
    }
}

impl Default for PktConfig {
    /// The programs' defaults.
    fn default() -> Self {
        PktConfig {
            snat_port_min: 61000,
            snat_port_max: 65535,
            flow_seed: 0,
            external_clusterip: false,
            external_ip_mitigation: true,
            maglev_m: None,
        }
    }
}

/// What a program did with a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// `TC_ACT_OK`: on to the kernel's stack (rewritten or not).
    Pass,
    /// `TC_ACT_SHOT`, counted in this `lb_counters` index ([`counter`]).
    Drop(u8),
    /// `TC_ACT_REDIRECT` out of `ifindex`: by `bpf_redirect` with the FIB's MACs written, or
    /// by `bpf_redirect_neigh` (`neigh`), which resolves the next hop itself.
    Redirect {
        /// Egress device.
        ifindex: u32,
        /// Through `bpf_redirect_neigh`.
        neigh: bool,
    },
}

impl Verdict {
    /// The program's return code.
    pub fn tc_action(self) -> i32 {
        match self {
            Verdict::Pass => TC_ACT_OK,
            Verdict::Drop(_) => TC_ACT_SHOT,
            Verdict::Redirect { .. } => TC_ACT_REDIRECT,
        }
    }
}

/// A packet's fate: the verdict and the frame as the program left it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PktOutcome {
    /// What the program returned.
    pub verdict: Verdict,
    /// The frame after the program (rewritten, or as it came).
    pub packet: Vec<u8>,
}

/// The tc NodePort datapath in plain Rust: the same decisions as `nodeport.c` over the same
/// maps, with the kernel's FIB given as a [`Fib`] and its clock as [`PktSim::set_now`].
///
/// Writes never fail here (the kernel's conntrack map is an LRU that evicts instead; the
/// simulator keeps every entry, so it matches the kernel while the map is not full).
#[derive(Debug)]
pub struct PktSim {
    config: PktConfig,
    maps: MapContents,
    local_addrs: BTreeSet<LbAddr>,
    devices: BTreeMap<u32, LbDevice>,
    ct: CtTable,
    counters: [u64; counter::MAX as usize],
    now: u32,
    fib: Box<dyn Fib + Send>,
}

/// A service frontend found for a packet: the key it was found under and its slot 0.
#[derive(Clone, Copy, Debug)]
struct Found {
    key: LbKey,
    svc: LbService,
}

impl PktSim {
    /// A simulator with these settings, maps and FIB; no local addresses, no devices, an empty
    /// conntrack table, counters at 0 and the clock at 0.
    pub fn new(config: PktConfig, maps: MapContents, fib: Box<dyn Fib + Send>) -> Self {
        PktSim {
            config,
            maps,
            local_addrs: BTreeSet::new(),
            devices: BTreeMap::new(),
            ct: CtTable::new(),
            counters: [0; counter::MAX as usize],
            now: 0,
            fib,
        }
    }

    /// The agent reconciled: the programs now read `maps`; conntrack stays.
    pub fn set_maps(&mut self, maps: MapContents) {
        self.maps = maps;
    }

    /// `lb_local_addrs_v1`: the node's addresses, where wildcard NodePort and HostPort
    /// frontends answer.
    pub fn set_local_addresses(&mut self, addrs: &[IpAddr]) {
        self.local_addrs = addrs.iter().map(|&ip| LbAddr::from(ip)).collect();
    }

    /// `lb_devices_v1`: the NodePort devices by ifindex.
    pub fn set_devices(&mut self, devices: BTreeMap<u32, LbDevice>) {
        self.devices = devices;
    }

    /// The FIB the programs ask from now on.
    pub fn set_fib(&mut self, fib: Box<dyn Fib + Send>) {
        self.fib = fib;
    }

    /// `bpf_ktime_get_ns() / 1e9`: the clock the programs read, in seconds.
    pub fn set_now(&mut self, now: u32) {
        self.now = now;
    }

    /// The clock, in seconds.
    pub fn now(&self) -> u32 {
        self.now
    }

    /// `lb_ct_v2`.
    pub fn ct(&self) -> &CtTable {
        &self.ct
    }

    /// A conntrack entry written from outside (as a test pre-claims a SNAT port).
    pub fn insert_ct(&mut self, key: LbCtKey, entry: LbCtEntry) {
        self.ct.insert(key, entry);
    }

    /// `lb_counters_v1`, summed over CPUs, by [`counter`] index.
    pub fn counters(&self) -> [u64; counter::MAX as usize] {
        self.counters
    }

    /// The agent's conntrack GC at the current clock ([`ct_gc::expired_keys`]); returns how
    /// many entries it deleted.
    pub fn collect_garbage(&mut self) -> usize {
        let gone = ct_gc::expired_keys(&self.ct, self.now);
        self.ct.retain(|k, _| !gone.contains(k));
        gone.len()
    }

    /// `lb_nodeport_ingress` (`lb_nodeport_from_device`): a frame entering NodePort device `ifindex`.
    pub fn ingress(&mut self, ifindex: u32, frame: &[u8]) -> PktOutcome {
        let mut pkt = frame.to_vec();
        let verdict = self.ingress_verdict(ifindex, &mut pkt);
        PktOutcome {
            verdict,
            packet: pkt,
        }
    }

    /// `lb_nodeport_egress` (`lb_nodeport_to_device`): a frame leaving NodePort device `ifindex`. Only the replies of
    /// local backends are translated (back to the address and port the client used).
    pub fn egress(&mut self, ifindex: u32, frame: &[u8]) -> PktOutcome {
        let mut pkt = frame.to_vec();
        if packet::parse(&pkt).is_none() {
            if let Some(verdict) = self.translate_icmp_error(ifindex, &mut pkt, true) {
                return PktOutcome {
                    verdict,
                    packet: pkt,
                };
            }
        }
        if let Some(p) = packet::parse(&pkt) {
            if self.ct.get(&p.key).is_some_and(is_local_reply) {
                if let Some(entry) = ct::refresh(&mut self.ct, &p.key, &p, self.now) {
                    packet::rewrite(&mut pkt, &p, &entry);
                }
            }
        }
        PktOutcome {
            verdict: Verdict::Pass,
            packet: pkt,
        }
    }

    /// `lb_nodeport_from_device`.
    fn ingress_verdict(&mut self, ifindex: u32, pkt: &mut Vec<u8>) -> Verdict {
        let Some(p) = packet::parse(pkt) else {
            return self
                .translate_icmp_error(ifindex, pkt, false)
                .unwrap_or(Verdict::Pass);
        };
        // A local reply's entry is egress's; at ingress it is a miss.
        if self.ct.get(&p.key).is_some_and(|e| !is_local_reply(e)) {
            let Some(entry) = ct::refresh(&mut self.ct, &p.key, &p, self.now) else {
                return Verdict::Pass;
            };
            packet::rewrite(pkt, &p, &entry);
            if entry.flags & ct_flags::SNAT != 0 {
                return self.forward_tracked(ifindex, pkt, &p.key, &entry);
            }
            return Verdict::Pass;
        }
        let Some(found) = self.lookup_frontend(&p.key) else {
            return Verdict::Pass;
        };
        if !self.serves_external(&found.svc) {
            return Verdict::Pass;
        }
        // `lb_source_allowed`: loadBalancerSourceRanges.
        if found.svc.flags2 & svc_flags2::SOURCE_RANGES != 0
            && !self
                .maps
                .source_ranges
                .keys()
                .any(|range| range.matches(found.svc.rev_nat_index, p.key.saddr))
        {
            return self.drop(counter::SOURCE_RANGE);
        }
        if found.svc.count == 0 {
            return self.no_backend(ifindex, pkt, &p, &found.svc);
        }
        let Some((backend_id, backend)) = self.select_backend(&found, &p.key) else {
            return self.drop(counter::NO_BACKEND);
        };
        let remote = match self.fib.lookup(&FibQuery {
            v6: p.v6,
            src: p.key.saddr,
            dst: backend.address,
            ifindex,
        }) {
            FibResult::Forward { ifindex, .. } | FibResult::NoNeigh { ifindex } => {
                self.devices.get(&ifindex).copied()
            }
            FibResult::Local | FibResult::Unreachable => None,
        };
        let flow = Flow {
            p,
            rev_nat_index: found.svc.rev_nat_index,
            backend_id,
            backend,
        };
        match remote {
            None => self.new_local(pkt, &flow),
            Some(device) => self.new_snat(ifindex, pkt, &flow, &device),
        }
    }

    /// `lb_new_flow`'s local half: a new flow to a backend on this node: its two entries, and the
    /// packet's destination rewritten; the kernel routes it on.
    fn new_local(&mut self, pkt: &mut [u8], flow: &Flow) -> Verdict {
        let p = &flow.p;
        let client = p.key.saddr;
        let (forward, reply_key, reply) = (
            LbCtEntry {
                saddr: client,
                daddr: flow.backend.address,
                sport: p.key.sport,
                dport: flow.backend.port,
                ..flow.entry(0)
            },
            LbCtKey {
                saddr: flow.backend.address,
                daddr: client,
                sport: flow.backend.port,
                dport: p.key.sport,
                proto: p.proto(),
                pad: [0; 3],
            },
            LbCtEntry {
                saddr: p.key.daddr,
                daddr: client,
                sport: p.key.dport,
                dport: p.key.sport,
                ..flow.entry(ct_flags::REPLY)
            },
        );
        self.ct.insert(reply_key, ct::stamp(reply, p, self.now));
        let forward = ct::stamp(forward, p, self.now);
        self.ct.insert(p.key, forward);
        packet::rewrite(pkt, p, &forward);
        Verdict::Pass
    }

    /// `lb_new_snat_flow`: a new flow to a backend behind NodePort device `device`: a SNAT
    /// port claimed for its replies, the forward entry, and the packet rewritten and forwarded.
    fn new_snat(
        &mut self,
        ifindex: u32,
        pkt: &mut [u8],
        flow: &Flow,
        device: &LbDevice,
    ) -> Verdict {
        let p = &flow.p;
        let snat_addr = if p.v6 { device.addr6 } else { device.addr4 };
        if snat_addr == LbAddr::default() {
            return self.drop(counter::NO_DEVICE_ADDR);
        }
        let (min, max) = (
            u32::from(self.config.snat_port_min),
            u32::from(self.config.snat_port_max),
        );
        let range = max.wrapping_sub(min).wrapping_add(1);
        let start = flow_hash(&p.key, self.config.flow_seed.wrapping_add(1)) % range.max(1);
        let reply = ct::stamp(
            LbCtEntry {
                saddr: p.key.daddr,
                daddr: p.key.saddr,
                sport: p.key.dport,
                dport: p.key.sport,
                ..flow.entry(ct_flags::REPLY | ct_flags::SNAT)
            },
            p,
            self.now,
        );
        let claimed = (0..SNAT_TRIES).find_map(|i| {
            let port = (min + (start + i) % range.max(1)) as u16;
            let key = LbCtKey {
                saddr: flow.backend.address,
                daddr: snat_addr,
                sport: flow.backend.port,
                dport: port.to_be(),
                proto: p.proto(),
                pad: [0; 3],
            };
            if self.ct.contains_key(&key) {
                return None;
            }
            self.ct.insert(key, reply);
            Some(port)
        });
        let Some(port) = claimed else {
            return self.drop(counter::SNAT_EXHAUSTED);
        };
        let forward = ct::stamp(
            LbCtEntry {
                saddr: snat_addr,
                daddr: flow.backend.address,
                sport: port.to_be(),
                dport: flow.backend.port,
                ..flow.entry(ct_flags::SNAT)
            },
            p,
            self.now,
        );
        self.ct.insert(p.key, forward);
        packet::rewrite(pkt, p, &forward);
        self.forward(ifindex, pkt)
    }

    /// The conntrack entry an ICMP error's quoted packet belongs to (see
    /// [`PktSim::translate_icmp_error`]), with the error parsed; `None` when the program
    /// leaves the frame alone.
    pub(super) fn icmp_error_entry(
        &self,
        pkt: &[u8],
        egress: bool,
    ) -> Option<(icmp::IcmpErr, LbCtEntry)> {
        let err = icmp::parse_error(pkt)?;
        let q = err.quoted;
        let key = LbCtKey {
            saddr: q.daddr,
            daddr: q.saddr,
            sport: q.dport,
            dport: q.sport,
            ..q
        };
        let entry = *self.ct.get(&key)?;
        if egress && !is_local_reply(&entry) {
            return None;
        }
        Some((err, entry))
    }

    /// `lb_icmp_err_translate`: an ICMP error about a packet of a tracked flow gets the tuple
    /// its original sender used, in its quote and its outer addresses, and is forwarded (SNAT)
    /// or passed as the flow's packets are; the entry is not refreshed. `None` for a frame left
    /// alone.
    fn translate_icmp_error(
        &mut self,
        ifindex: u32,
        pkt: &mut [u8],
        egress: bool,
    ) -> Option<Verdict> {
        let (err, e) = self.icmp_error_entry(pkt, egress)?;
        let inner = LbCtKey {
            saddr: e.daddr,
            daddr: e.saddr,
            sport: e.dport,
            dport: e.sport,
            ..err.quoted
        };
        // The host the packet went to answers for the address its sender used; a router on
        // the way keeps its own.
        let saddr = if err.saddr == err.quoted.daddr {
            inner.daddr
        } else {
            err.saddr
        };
        let to = icmp::ErrRewrite {
            inner,
            saddr,
            daddr: inner.saddr,
        };
        icmp::rewrite_error(pkt, &err, &to);
        if e.flags & ct_flags::SNAT == 0 {
            return Some(Verdict::Pass);
        }
        Some(self.route(ifindex, pkt, err.v6, 20, to.saddr, to.daddr))
    }

    /// `lb_forward`: a rewritten packet leaves by the FIB's answer: TTL checked and
    /// decremented, then redirected with the FIB's MACs, or to the neighbour subsystem when the
    /// next hop is not resolved.
    fn forward(&mut self, ifindex: u32, pkt: &mut [u8]) -> Verdict {
        // The rewritten tuple: a rewrite keeps every header where it was.
        let Some(p) = packet::parse(pkt) else {
            return Verdict::Pass;
        };
        self.route(ifindex, pkt, p.v6, p.l3_len, p.key.saddr, p.key.daddr)
    }

    /// [`PktSim::forward`] of any IP packet (IPv4 header of `l3_len` bytes) from `src` to
    /// `dst`.
    fn route(
        &mut self,
        ifindex: u32,
        pkt: &mut [u8],
        v6: bool,
        l3_len: usize,
        src: LbAddr,
        dst: LbAddr,
    ) -> Verdict {
        if !packet::decrement_ttl(pkt, v6, l3_len) {
            return self.drop(counter::TTL_EXCEEDED);
        }
        let answer = self.fib.lookup(&FibQuery {
            v6,
            src,
            dst,
            ifindex,
        });
        self.send(pkt, answer)
    }

    /// `lb_forward_tracked`: [`PktSim::forward`] for a packet of the tracked flow whose entry
    /// is at `key` (`to`, as it read it), by the next hop the entry keeps while it is of this
    /// second, else by the FIB's answer, kept in the entry when resolved (`lb_ct_next_hop`).
    fn forward_tracked(
        &mut self,
        ifindex: u32,
        pkt: &mut [u8],
        key: &LbCtKey,
        to: &LbCtEntry,
    ) -> Verdict {
        let Some(p) = packet::parse(pkt) else {
            return Verdict::Pass;
        };
        if !packet::decrement_ttl(pkt, p.v6, p.l3_len) {
            return self.drop(counter::TTL_EXCEEDED);
        }
        if to.hop.checked == self.now && to.hop.ifindex != 0 {
            let answer = FibResult::Forward {
                ifindex: to.hop.ifindex,
                smac: to.hop.smac,
                dmac: to.hop.dmac,
            };
            return self.send(pkt, answer);
        }
        let answer = self.fib.lookup(&FibQuery {
            v6: p.v6,
            src: p.key.saddr,
            dst: p.key.daddr,
            ifindex,
        });
        if let FibResult::Forward {
            ifindex,
            smac,
            dmac,
        } = answer
        {
            let hop = LbCtHop {
                ifindex,
                checked: self.now,
                smac,
                dmac,
            };
            if let Some(entry) = self.ct.get_mut(key) {
                entry.hop = hop;
            }
        }
        self.send(pkt, answer)
    }

    /// The end of `lb_forward`: out by the FIB's answer.
    fn send(&mut self, pkt: &mut [u8], answer: FibResult) -> Verdict {
        match answer {
            FibResult::Forward {
                ifindex,
                smac,
                dmac,
            } => {
                packet::set_macs(pkt, dmac, smac);
                Verdict::Redirect {
                    ifindex,
                    neigh: false,
                }
            }
            FibResult::NoNeigh { ifindex } => Verdict::Redirect {
                ifindex,
                neigh: true,
            },
            FibResult::Local | FibResult::Unreachable => self.drop(counter::FIB_FAILED),
        }
    }

    /// `lb_count` and `TC_ACT_SHOT`.
    fn drop(&mut self, why: u8) -> Verdict {
        self.counters[usize::from(why)] += 1;
        Verdict::Drop(why)
    }

    /// `lb_lookup_frontend(key, 0, 0)`: the external-scope frontend at the packet's destination,
    /// or, on one of the node's addresses (never loopback), the wildcard NodePort or HostPort
    /// frontend of its port.
    fn lookup_frontend(&self, key: &LbCtKey) -> Option<Found> {
        let svc_key = LbKey {
            address: key.daddr,
            dport: key.dport,
            backend_slot: 0,
            proto: key.proto,
            scope: scope::EXT,
            pad: [0; 2],
        };
        if let Some(svc) = self.maps.services.get(&svc_key) {
            return Some(Found {
                key: svc_key,
                svc: *svc,
            });
        }
        if addr::is_loopback(&key.daddr) || !self.local_addrs.contains(&key.daddr) {
            return None;
        }
        let wildcard = LbKey {
            address: addr::to_wildcard(&key.daddr),
            ..svc_key
        };
        let svc = self.maps.services.get(&wildcard)?;
        (svc.flags & (svc_flags::NODE_PORT | svc_flags::HOST_PORT) != 0).then_some(Found {
            key: wildcard,
            svc: *svc,
        })
    }

    /// `lb_serves_external`: NodePort, LoadBalancer, externalIPs and HostPort frontends
    /// serve traffic from outside; ClusterIPs only with `bpf.lbExternalClusterIP`.
    fn serves_external(&self, svc: &LbService) -> bool {
        let types = svc_flags::NODE_PORT
            | svc_flags::LOADBALANCER
            | svc_flags::EXTERNAL_IP
            | svc_flags::HOST_PORT;
        svc.flags & types != 0
            || (self.config.external_clusterip && svc.flags & svc_flags::CLUSTER_IP != 0)
    }

    /// `lb_flow_backend` with the hash `lb_flow_hash` gives, and the backend: with Maglev the
    /// entry `h % M` of the frontend's table; without, or without a table for it yet, the
    /// backend of the active slot `h % count + 1`.
    fn select_backend(&self, found: &Found, key: &LbCtKey) -> Option<(u32, LbBackend)> {
        let h = flow_hash(key, self.config.flow_seed);
        let from_table = self.config.maglev_m.and_then(|m| {
            let table = self.maps.maglev.get(&found.svc.rev_nat_index)?;
            table.get((h % m) as usize).copied()
        });
        let backend_id = match from_table {
            Some(id) => id,
            None => self.slot_backend_id(found, h)?,
        };
        let backend = self.maps.backends.get(&backend_id)?;
        Some((backend_id, *backend))
    }

    /// `lb_no_backend`, then the entry's `lb_reject`: a frontend without active backends. A
    /// Local traffic policy without local endpoints drops; a service without any endpoint
    /// answers with an ICMP port unreachable out of the device the packet came in on.
    fn no_backend(
        &mut self,
        ifindex: u32,
        pkt: &mut Vec<u8>,
        p: &Parsed,
        svc: &LbService,
    ) -> Verdict {
        if svc.flags & svc_flags::NO_LOCAL_BACKEND != 0 {
            return self.drop(counter::NO_LOCAL_BACKEND);
        }
        self.counters[usize::from(counter::NO_BACKEND)] += 1;
        match icmp::reject(pkt, p) {
            Some(reply) => {
                *pkt = reply;
                Verdict::Redirect {
                    ifindex,
                    neigh: false,
                }
            }
            None => Verdict::Drop(counter::NO_BACKEND),
        }
    }

    /// `lb_slot_backend(key, h % count + 1)`: the backend of the active slot the flow hash
    /// picks, whatever the algorithm (a pod's flows: Maglev is for north-south traffic only).
    fn select_slot_backend(&self, found: &Found, key: &LbCtKey) -> Option<(u32, LbBackend)> {
        let backend_id = self.slot_backend_id(found, flow_hash(key, self.config.flow_seed))?;
        let backend = self.maps.backends.get(&backend_id)?;
        Some((backend_id, *backend))
    }

    /// The backend id in the slot `h % count + 1` of `found`.
    fn slot_backend_id(&self, found: &Found, h: u32) -> Option<u32> {
        let slot = (h % u32::from(found.svc.count)) as u16 + 1;
        let slot_key = LbKey {
            backend_slot: slot,
            ..found.key
        };
        Some(self.maps.services.get(&slot_key)?.backend_id)
    }
}

/// A new flow's choices.
struct Flow {
    p: Parsed,
    rev_nat_index: u16,
    backend_id: u32,
    backend: LbBackend,
}

impl Flow {
    /// An entry of this flow with these flags; addresses, ports and expiry to be set.
    fn entry(&self, flags: u8) -> LbCtEntry {
        LbCtEntry {
            rev_nat_index: self.rev_nat_index,
            flags,
            backend_id: self.backend_id,
            ..LbCtEntry::default()
        }
    }
}

/// `lb_ct_is_local_reply`: the reply entry of a flow to a local backend (egress translates it).
fn is_local_reply(e: &LbCtEntry) -> bool {
    e.flags & ct_flags::REPLY != 0 && e.flags & ct_flags::SNAT == 0
}
