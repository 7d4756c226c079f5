//! How a fresh backend choice is made: the kernel draws `bpf_get_prandom_u32() % count`; the
//! simulator asks a [`Chooser`], by default a seeded one so a scenario replays identically.

use std::net::SocketAddr;

/// Picks one of a service's active slots for a fresh (non-affinity) choice.
pub trait Chooser {
    /// The index, in `slots`, of the slot to use. `slots` holds, in slot order (slot 1 first),
    /// the address `connect` would return for each active slot; it is never empty. An index
    /// out of range is taken modulo the length, as the kernel's `% count` would.
    fn choose(&mut self, slots: &[SocketAddr]) -> usize;
}

/// Any closure over the slots is a chooser; a differential test uses one to replay the
/// kernel's choice (pick the slot whose address the kernel connected to).
impl<F: FnMut(&[SocketAddr]) -> usize> Chooser for F {
    fn choose(&mut self, slots: &[SocketAddr]) -> usize {
        self(slots)
    }
}

/// A small seeded pseudo-random chooser (SplitMix64): uniform like the kernel's, and the same
/// sequence for the same seed, so simulated scenarios are reproducible.
#[derive(Clone, Debug)]
pub struct SeededChooser {
    state: u64,
}

impl SeededChooser {
    /// A chooser whose choices depend only on `seed`.
    pub fn new(seed: u64) -> Self {
        SeededChooser { state: seed }
    }

    /// The next 32 random bits, as `bpf_get_prandom_u32` gives them.
    pub fn next_u32(&mut self) -> u32 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        // The high half of the mixed word: the better-mixed bits.
        (z ^ (z >> 31)).wrapping_shr(32) as u32
    }
}

impl Chooser for SeededChooser {
    fn choose(&mut self, slots: &[SocketAddr]) -> usize {
        // `slots` is never empty (the caller's contract); `max(1)` keeps a misuse from dividing
        // by zero.
        self.next_u32() as usize % slots.len().max(1)
    }
}
