//! The FIB oracle of the packet simulator: what `bpf_fib_lookup` answers on the node, which
//! the simulator is told (the kernel's routes and neighbours are not the simulator's to model).

use std::collections::BTreeMap;
use std::net::IpAddr;

use ebpf::maps::LbAddr;

/// A `bpf_fib_lookup` question: family, source, destination and the ifindex the packet came
/// in on (flags 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FibQuery {
    /// `AF_INET6` (else `AF_INET`).
    pub v6: bool,
    /// Source address (IPv4 mapped).
    pub src: LbAddr,
    /// Destination address (IPv4 mapped).
    pub dst: LbAddr,
    /// The ingress ifindex.
    pub ifindex: u32,
}

/// What `bpf_fib_lookup` answers, as far as the programs tell the answers apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FibResult {
    /// `BPF_FIB_LKUP_RET_NOT_FWDED`: the destination is a local address.
    Local,
    /// `BPF_FIB_LKUP_RET_SUCCESS`: out through `ifindex`, with these MACs.
    Forward {
        /// Egress device.
        ifindex: u32,
        /// Its MAC address.
        smac: [u8; 6],
        /// The next hop's MAC address.
        dmac: [u8; 6],
    },
    /// `BPF_FIB_LKUP_RET_NO_NEIGH`: routed out through `ifindex`, next hop not resolved yet.
    NoNeigh {
        /// Egress device.
        ifindex: u32,
    },
    /// Any other answer (unreachable, blackhole, forwarding disabled, ...).
    Unreachable,
}

/// The FIB the simulated programs ask.
pub trait Fib: std::fmt::Debug {
    /// `bpf_fib_lookup(ctx, params, sizeof(params), 0)`.
    fn lookup(&self, query: &FibQuery) -> FibResult;
}

/// A FIB given as a table: an answer per destination address, and one for every other
/// destination (the source and ingress device do not matter to it, as on a node without
/// policy routing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FibTable {
    routes: BTreeMap<LbAddr, FibResult>,
    default: FibResult,
}

impl Default for FibTable {
    /// Every destination unreachable.
    fn default() -> Self {
        FibTable {
            routes: BTreeMap::new(),
            default: FibResult::Unreachable,
        }
    }
}

impl FibTable {
    /// An empty table: every destination unreachable.
    pub fn new() -> Self {
        Self::default()
    }

    /// `dst` answers `result`.
    pub fn route(mut self, dst: IpAddr, result: FibResult) -> Self {
        self.routes.insert(LbAddr::from(dst), result);
        self
    }

    /// Every destination without a route of its own answers `result`.
    pub fn otherwise(mut self, result: FibResult) -> Self {
        self.default = result;
        self
    }
}

impl Fib for FibTable {
    fn lookup(&self, query: &FibQuery) -> FibResult {
        self.routes.get(&query.dst).copied().unwrap_or(self.default)
    }
}
