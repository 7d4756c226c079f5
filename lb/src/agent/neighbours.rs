//! Neighbour entries for the other nodes, as the documents' "Neighbor Discovery" section keeps
//! them: the NodePort programs forward with `bpf_fib_lookup`, which cannot resolve a next hop
//! itself, so the agent makes sure the kernel has an entry for the next hop towards every other
//! Node on every NodePort device (the direct-routing device among them) and keeps it resolved.
//!
//! On kernels with managed neighbours (5.16+) the entries are pushed as "managed extern_learn"
//! and the kernel keeps them resolved; before that as "extern_learn", and the agent asks the
//! kernel to re-resolve them every `l2NeighDiscovery.refreshPeriod`. The agent records the
//! entries it created, so a restarted agent adopts them and `lbctl cleanup` removes exactly
//! those; an entry someone else made permanent is never taken over.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use netlink_packet_route::neighbour::NeighbourState;
use serde::{Deserialize, Serialize};

use super::AgentError;
use crate::host::neigh::{self, NeighbourEntry};

/// An entry the agent keeps: the next hop `next_hop` on device `device` (`ifindex`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NeighbourRecord {
    /// The device's index when the entry was pushed.
    pub ifindex: u32,
    /// The device's name, for messages.
    pub device: String,
    /// The next hop's address.
    pub next_hop: IpAddr,
}

impl std::fmt::Display for NeighbourRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} dev {}", self.next_hop, self.device)
    }
}

/// The neighbour entries an agent pushed, and the network namespace they are in (the ifindexes
/// mean those devices only there).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NeighbourEntries {
    /// The entries.
    pub entries: Vec<NeighbourRecord>,
    /// The inode of the agent's network namespace (`/proc/self/ns/net`).
    pub netns_inode: u64,
}

impl NeighbourEntries {
    /// `entries`, pushed in the calling thread's namespace.
    pub fn here(entries: Vec<NeighbourRecord>) -> Self {
        NeighbourEntries {
            entries,
            netns_inode: crate::datapath::current_netns_inode(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// A device the entries are kept on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NeighDevice {
    /// Its name.
    pub name: String,
    /// Its index.
    pub ifindex: u32,
}

/// How the entries stay resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upkeep {
    /// Managed entries: the kernel re-resolves them itself.
    Kernel,
    /// The agent asks the kernel to re-resolve them every period.
    Agent(Duration),
}

impl Upkeep {
    /// Managed entries where the kernel has them, the agent's refresh every `period` otherwise.
    pub fn choose(kernel_has_managed: bool, period: Duration) -> Upkeep {
        if kernel_has_managed {
            Upkeep::Kernel
        } else {
            Upkeep::Agent(period)
        }
    }

    /// Whether the agent's refresh is due, the last one having been at `last`.
    pub fn refresh_due(self, last: Instant, now: Instant) -> bool {
        match self {
            Upkeep::Kernel => false,
            Upkeep::Agent(period) => now.saturating_duration_since(last) >= period,
        }
    }
}

/// The address of every other Node in each family the agent runs: its first InternalIP of the
/// family, else its first ExternalIP; `local` (the agent's own Node) is left out.
pub fn peer_addresses<N: std::borrow::Borrow<Node>>(
    nodes: &[N],
    local: &str,
    ipv4: bool,
    ipv6: bool,
) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for node in nodes {
        let node: &Node = node.borrow();
        if node.metadata.name.as_deref() == Some(local) {
            continue;
        }
        let addresses: Vec<(&str, IpAddr)> = node
            .status
            .iter()
            .flat_map(|s| s.addresses.iter().flatten())
            .filter_map(|a| Some((a.type_.as_str(), a.address.parse().ok()?)))
            .collect();
        for (wanted, v4) in [(ipv4, true), (ipv6, false)] {
            if !wanted {
                continue;
            }
            let pick = |kind: &str| {
                addresses
                    .iter()
                    .find(|(t, ip)| *t == kind && ip.is_ipv4() == v4)
                    .map(|(_, ip)| *ip)
            };
            out.extend(pick("InternalIP").or_else(|| pick("ExternalIP")));
        }
    }
    out
}

/// The entries wanted: for every peer address and device, the next hop `next_hop` gives
/// (none when the device has no route towards it); peers behind one next hop share its entry.
pub fn wanted(
    peers: &[IpAddr],
    devices: &[NeighDevice],
    next_hop: impl Fn(IpAddr, u32) -> Option<IpAddr>,
) -> BTreeSet<NeighbourRecord> {
    peers
        .iter()
        .flat_map(|&peer| devices.iter().map(move |d| (peer, d)))
        .filter_map(|(peer, d)| {
            Some(NeighbourRecord {
                ifindex: d.ifindex,
                device: d.name.clone(),
                next_hop: next_hop(peer, d.ifindex)?,
            })
        })
        .collect()
}

/// What one pass changes in the kernel's table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NeighPlan {
    /// Entries to push, each with whether the kernel holds it as externally learned already.
    pub push: Vec<(NeighbourRecord, bool)>,
    /// Entries of the agent's that are no longer wanted, to delete.
    pub delete: Vec<NeighbourRecord>,
    /// Wanted entries left alone because someone else made them permanent.
    pub foreign: Vec<NeighbourRecord>,
}

/// The kernel's entry for `r`, if any.
fn find<'a>(kernel: &'a [NeighbourEntry], r: &NeighbourRecord) -> Option<&'a NeighbourEntry> {
    kernel
        .iter()
        .find(|e| e.ifindex == r.ifindex && e.ip == r.next_hop)
}

/// Whether `e` is an entry the agent's pushes leave: externally learned (and managed where
/// the kernel keeps them).
fn pushed(e: &NeighbourEntry, upkeep: Upkeep) -> bool {
    e.ext_learned && (e.managed || matches!(upkeep, Upkeep::Agent(_)))
}

/// Compares the wanted entries with those the agent keeps (`kept`) and the kernel's table:
/// a wanted entry the kernel lacks in the form `upkeep` wants is pushed, unless someone made it
/// permanent (not externally learned); a kept entry no longer wanted is deleted while it is
/// still externally learned (someone else's entry by now otherwise).
pub fn plan(
    wanted: &BTreeSet<NeighbourRecord>,
    kept: &BTreeSet<NeighbourRecord>,
    kernel: &[NeighbourEntry],
    upkeep: Upkeep,
) -> NeighPlan {
    let mut out = NeighPlan::default();
    for r in wanted {
        match find(kernel, r) {
            Some(e) if pushed(e, upkeep) => {}
            Some(e) if e.state == NeighbourState::Permanent && !e.ext_learned => {
                out.foreign.push(r.clone())
            }
            found => out
                .push
                .push((r.clone(), found.is_some_and(|e| e.ext_learned))),
        }
    }
    for r in kept.difference(wanted) {
        if find(kernel, r).is_some_and(|e| e.ext_learned) {
            out.delete.push(r.clone());
        }
    }
    out
}

/// The agent's neighbour entries and how they are kept.
#[derive(Debug)]
pub struct Neighbours {
    upkeep: Upkeep,
    kept: BTreeSet<NeighbourRecord>,
    last_refresh: Instant,
}

impl Neighbours {
    /// Starts with the entries an earlier agent recorded (adopted: the first pass deletes those
    /// no longer wanted).
    pub fn new(upkeep: Upkeep, adopted: Vec<NeighbourRecord>) -> Self {
        Neighbours {
            upkeep,
            kept: adopted.into_iter().collect(),
            last_refresh: Instant::now(),
        }
    }

    /// The entries the agent keeps now.
    pub fn kept(&self) -> Vec<NeighbourRecord> {
        self.kept.iter().cloned().collect()
    }

    /// Makes the kernel's table hold an entry for each of `peers` on each of `devices`, and
    /// none of the agent's others. A failed push is logged and retried on the next pass.
    pub fn sync(&mut self, peers: &[IpAddr], devices: &[NeighDevice]) -> Result<(), AgentError> {
        let wanted = wanted(peers, devices, neigh::next_hop);
        let kernel = neigh::dump_neighbours()?;
        let plan = plan(&wanted, &self.kept, &kernel, self.upkeep);
        // A failed delete is logged and stays the agent's, to retry on the next pass; it does
        // not keep the wanted entries from being pushed.
        let mut undeleted = Vec::new();
        for r in &plan.delete {
            match neigh::delete(r.ifindex, r.next_hop) {
                Ok(_) => tracing::info!(
                    entry = %r,
                    "removed the neighbour entry of a next hop no longer used"
                ),
                Err(e) => {
                    tracing::warn!(entry = %r, "cannot remove a neighbour entry (retried on the next pass): {e}");
                    undeleted.push(r.clone());
                }
            }
        }
        for r in &plan.foreign {
            tracing::warn!(entry = %r, "a permanent neighbour entry the agent did not create is left as it is");
        }
        let mut failed = BTreeSet::new();
        for (r, learned) in &plan.push {
            let pushed = match self.upkeep {
                Upkeep::Kernel => neigh::push_managed(r.ifindex, r.next_hop),
                Upkeep::Agent(_) => neigh::push_and_resolve(r.ifindex, r.next_hop, *learned),
            };
            match pushed {
                Ok(()) => {
                    tracing::info!(entry = %r, "pushed a neighbour entry for another node's next hop")
                }
                Err(e) => {
                    tracing::warn!(entry = %r, "cannot push a neighbour entry (retried on the next pass): {e}");
                    failed.insert(r.clone());
                }
            }
        }
        // A failed push keeps an entry the agent had (it may still be in the table), and does
        // not claim one it did not have.
        let foreign: BTreeSet<_> = plan.foreign.into_iter().collect();
        self.kept = wanted
            .into_iter()
            .filter(|r| !foreign.contains(r))
            .filter(|r| !failed.contains(r) || self.kept.contains(r))
            .chain(undeleted)
            .collect();
        Ok(())
    }

    /// Asks the kernel to re-resolve every entry when the agent's refresh is due (never with
    /// managed entries); returns how many were refreshed.
    pub fn refresh_if_due(&mut self, now: Instant) -> usize {
        if !self.upkeep.refresh_due(self.last_refresh, now) {
            return 0;
        }
        self.last_refresh = now;
        let mut refreshed = 0;
        for r in &self.kept {
            match neigh::push_and_resolve(r.ifindex, r.next_hop, true) {
                Ok(()) => refreshed += 1,
                Err(e) => tracing::warn!(entry = %r, "cannot refresh a neighbour entry: {e}"),
            }
        }
        refreshed
    }
}

/// Deletes the recorded entries that are still externally learned (an entry someone else has
/// made their own since is left), when run in the namespace they are in; one line each for
/// the user (none for an entry gone already).
pub fn remove(recorded: &NeighbourEntries) -> Result<Vec<String>, AgentError> {
    if recorded.is_empty() {
        return Ok(Vec::new());
    }
    if recorded.netns_inode != crate::datapath::current_netns_inode() {
        return Ok(recorded
            .entries
            .iter()
            .map(|r| {
                format!(
                    "left neighbour entry {r}: it is in the agent's network namespace (inode \
                     {}), not this one; remove it there with `ip neigh del {} dev {}`",
                    recorded.netns_inode, r.next_hop, r.device
                )
            })
            .collect());
    }
    let kernel = neigh::dump_neighbours()?;
    let mut lines = Vec::new();
    for r in &recorded.entries {
        match find(&kernel, r) {
            Some(e) if e.ext_learned && neigh::delete(r.ifindex, r.next_hop)? => {
                lines.push(format!("deleted neighbour entry {r}"));
            }
            Some(e) if e.ext_learned => {} // Gone between the dump and the delete.
            Some(_) => lines.push(format!(
                "left neighbour entry {r}: it is no longer externally learned, so no longer \
                 the agent's"
            )),
            None => {}
        }
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, addresses: &[(&str, &str)]) -> Node {
        let yaml = format!(
            "metadata: {{name: {name}}}\nstatus: {{addresses: [{}]}}\n",
            addresses
                .iter()
                .map(|(t, a)| format!("{{type: {t}, address: \"{a}\"}}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        serde_yaml::from_str(&yaml).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn record(ifindex: u32, device: &str, next_hop: &str) -> NeighbourRecord {
        NeighbourRecord {
            ifindex,
            device: device.into(),
            next_hop: ip(next_hop),
        }
    }

    fn kernel(
        r: &NeighbourRecord,
        state: NeighbourState,
        ext: bool,
        managed: bool,
    ) -> NeighbourEntry {
        NeighbourEntry {
            ifindex: r.ifindex,
            ip: r.next_hop,
            state,
            ext_learned: ext,
            managed,
            lladdr: None,
        }
    }

    fn devices() -> Vec<NeighDevice> {
        vec![
            NeighDevice {
                name: "eno1".into(),
                ifindex: 2,
            },
            NeighDevice {
                name: "eno2".into(),
                ifindex: 3,
            },
        ]
    }

    #[test]
    fn peers_are_the_other_nodes_internal_ip_else_external_ip_per_family() {
        let nodes = [
            node("node1", &[("InternalIP", "10.69.0.1")]),
            node(
                "node2",
                &[
                    ("Hostname", "node2"),
                    ("ExternalIP", "203.0.113.2"),
                    ("InternalIP", "10.69.0.2"),
                    ("InternalIP", "fd00::2"),
                ],
            ),
            node(
                "node3",
                &[("ExternalIP", "203.0.113.3"), ("InternalIP", "bogus")],
            ),
        ];
        assert_eq!(
            peer_addresses(&nodes, "node1", true, false),
            [ip("10.69.0.2"), ip("203.0.113.3")]
        );
        assert_eq!(
            peer_addresses(&nodes, "node1", true, true),
            [ip("10.69.0.2"), ip("fd00::2"), ip("203.0.113.3")]
        );
        assert!(peer_addresses(&nodes, "node2", false, true).is_empty());
    }

    #[test]
    fn one_entry_per_device_for_the_next_hop_the_route_gives_there() {
        // The documents' example: node2 (10.69.0.2) is reached via 10.69.0.66 on eno1 and
        // 10.69.0.130 on eno2; node3 has no route on eno2; node4 sits behind node2's hops.
        let next_hop = |dst: IpAddr, oif: u32| match (dst.to_string().as_str(), oif) {
            ("10.69.0.2" | "10.69.0.4", 2) => Some(ip("10.69.0.66")),
            ("10.69.0.2" | "10.69.0.4", 3) => Some(ip("10.69.0.130")),
            ("10.69.0.3", 2) => Some(ip("10.69.0.3")),
            _ => None,
        };
        let got = wanted(
            &[ip("10.69.0.2"), ip("10.69.0.3"), ip("10.69.0.4")],
            &devices(),
            next_hop,
        );
        let want: BTreeSet<_> = [
            record(2, "eno1", "10.69.0.66"),
            record(3, "eno2", "10.69.0.130"),
            record(2, "eno1", "10.69.0.3"),
        ]
        .into();
        assert_eq!(got, want);
    }

    #[test]
    fn a_pass_pushes_what_the_kernel_lacks_and_deletes_only_its_own_leftovers() {
        let a = record(2, "eno1", "10.69.0.66");
        let b = record(3, "eno2", "10.69.0.130");
        let gone = record(2, "eno1", "10.69.0.9");
        let theirs = record(2, "eno1", "10.69.0.10");
        let wanted: BTreeSet<_> = [a.clone(), b.clone()].into();
        let kept: BTreeSet<_> = [a.clone(), gone.clone(), theirs.clone()].into();
        let table = vec![
            kernel(&a, NeighbourState::Reachable, true, true),
            kernel(&b, NeighbourState::Stale, false, false),
            kernel(&gone, NeighbourState::Reachable, true, true),
            // Someone made the agent's old entry permanent and their own: it stays.
            kernel(&theirs, NeighbourState::Permanent, false, false),
        ];
        let p = plan(&wanted, &kept, &table, Upkeep::Kernel);
        assert_eq!(p.push, [(b.clone(), false)]);
        assert_eq!(p.delete, [gone]);
        assert!(p.foreign.is_empty());
    }

    #[test]
    fn managed_upkeep_replaces_a_plain_entry_and_a_foreign_permanent_one_is_left() {
        let a = record(2, "eno1", "10.69.0.66");
        let b = record(3, "eno2", "10.69.0.130");
        let wanted: BTreeSet<_> = [a.clone(), b.clone()].into();
        let table = vec![
            kernel(&a, NeighbourState::Reachable, true, false),
            kernel(&b, NeighbourState::Permanent, false, false),
        ];
        let p = plan(&wanted, &BTreeSet::new(), &table, Upkeep::Kernel);
        assert_eq!(p.push, [(a.clone(), true)]);
        assert_eq!(p.foreign, [b]);
        // Refreshed by the agent, a plain externally learned entry is what it wants.
        let p = plan(
            &wanted,
            &BTreeSet::new(),
            &table[..1],
            Upkeep::Agent(Duration::from_secs(30)),
        );
        assert_eq!(p.push, [(record(3, "eno2", "10.69.0.130"), false)]);
    }

    #[test]
    fn without_managed_neighbours_the_agent_refreshes_every_period() {
        let period = Duration::from_secs(30);
        assert_eq!(Upkeep::choose(true, period), Upkeep::Kernel);
        let agent = Upkeep::choose(false, period);
        assert_eq!(agent, Upkeep::Agent(period));
        let start = Instant::now();
        assert!(!agent.refresh_due(start, start + Duration::from_secs(29)));
        assert!(agent.refresh_due(start, start + period));
        assert!(!Upkeep::Kernel.refresh_due(start, start + Duration::from_secs(3600)));
    }
}
