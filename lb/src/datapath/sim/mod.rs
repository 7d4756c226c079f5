//! The simulator: the datapath's decisions in plain Rust, over the same map contents the
//! kernel programs read.
//!
//! Two halves: the socket-level hooks ([`SockSim`], `ebpf/include/lb_sock.h` is the reference)
//! and the tc NodePort programs ([`PktSim`], `ebpf/src/bpf/nodeport.c` and its contract in
//! `lb_nodeport.h`). Every function names the C function it mirrors, so the two can be read
//! side by side. The simulator runs unprivileged, deterministically (socket backend choice
//! comes from a seeded [`Chooser`], packet backend choice from the same flow hash as the C)
//! and fast, and it is the oracle of the differential tests (`lb/tests/differential.rs`,
//! `lb/tests/differential_pkt.rs`), which run the same socket calls and packets through the
//! real programs and compare.
//!
//! Where the kernel's behaviour depends on the kernel rather than on the program (LRU eviction
//! of reverse, affinity and conntrack entries, the CPU an event was seen on, the clock, the
//! FIB), the simulator takes the simplest faithful choice or is told, and says so where it
//! does.

mod addr;
mod chooser;
mod ct;
mod fib;
mod held;
mod icmp;
pub mod jhash;
mod packet;
pub mod packet_builder;
mod pkt;
mod sock;
mod xdp;

pub use chooser::{Chooser, SeededChooser};
pub use ct::{CtTable, CT_CLOSE_SECS, CT_SYN_SECS, CT_TCP_SECS, CT_UDP_SECS};
pub use fib::{Fib, FibQuery, FibResult, FibTable};
pub use held::HeldSocket;
pub use pkt::{PktConfig, PktOutcome, PktSim, Verdict, SNAT_TRIES};
pub use sock::{SimConfig, SockCall, SockSim};
pub use xdp::{XdpAction, XdpOutcome};

#[cfg(test)]
mod pkt_tests;
#[cfg(test)]
mod tests;
