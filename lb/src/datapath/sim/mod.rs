//! The simulator: the socket-level datapath's decisions in plain Rust, over the same map
//! contents the kernel programs read.
//!
//! `ebpf/include/lb_sock.h` is the reference; every function here names the C function it
//! mirrors, so the two can be read side by side. The simulator runs unprivileged,
//! deterministically (backend choice comes from a seeded [`Chooser`]) and fast, and it is the
//! oracle of the differential tests (`lb/tests/differential.rs`), which run the same socket
//! calls through the real programs and compare.
//!
//! Where the kernel's behaviour depends on the kernel rather than on the program (LRU eviction
//! of reverse and affinity entries, the CPU an event was seen on, the clock), the simulator
//! takes the simplest faithful choice and says so where it does.

mod addr;
mod chooser;
mod held;
mod sock;

pub use chooser::{Chooser, SeededChooser};
pub use held::HeldSocket;
pub use sock::{SimConfig, SockCall, SockSim};

#[cfg(test)]
mod tests;
