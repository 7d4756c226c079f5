//! Latency samples per (service count, variant) and the report table.

/// The connection latencies of one variant at one service count, over all rounds.
#[derive(Debug, Default, Clone)]
pub struct Samples {
    nanos: Vec<u64>,
    /// Mean nanoseconds per connection of each round, in round order.
    rounds: Vec<f64>,
    /// Where the current round starts in `nanos`.
    round_start: usize,
}

/// What a [`Samples`] comes to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Connections measured.
    pub count: usize,
    /// Connections per second of one client doing them back to back (1 / mean).
    pub rate: f64,
    /// Median, microseconds.
    pub p50_us: f64,
    /// 99th percentile, microseconds.
    pub p99_us: f64,
    /// [`Samples::paired_ratio`] against the direct variant.
    pub paired: f64,
}

impl Samples {
    /// Adds latencies to the current round.
    pub fn extend(&mut self, nanos: &[u64]) {
        self.nanos.extend_from_slice(nanos);
    }

    /// Ends the current round (a round without connections counts as infinitely slow).
    pub fn end_round(&mut self) {
        let round = &self.nanos[self.round_start..];
        let mean = if round.is_empty() {
            f64::INFINITY
        } else {
            round.iter().sum::<u64>() as f64 / round.len() as f64
        };
        self.rounds.push(mean);
        self.round_start = self.nanos.len();
    }

    /// The median over rounds of `reference`'s mean time per connection divided by this one's:
    /// the speed relative to `reference` measured moments apart, which a burst of machine
    /// noise moves much less than the overall ratio. `None` without common rounds.
    pub fn paired_ratio(&self, reference: &Samples) -> Option<f64> {
        let mut ratios: Vec<f64> = reference
            .rounds
            .iter()
            .zip(&self.rounds)
            .map(|(r, s)| r / s)
            .filter(|x| !x.is_nan())
            .collect();
        if ratios.is_empty() {
            return None;
        }
        ratios.sort_by(f64::total_cmp);
        Some(ratios[ratios.len() / 2])
    }

    /// The summary, paired against `direct`; `None` with no samples.
    pub fn summary(&self, direct: &Samples) -> Option<Summary> {
        if self.nanos.is_empty() {
            return None;
        }
        let mut sorted = self.nanos.clone();
        sorted.sort_unstable();
        let total: u128 = sorted.iter().map(|&n| u128::from(n)).sum();
        let mean_ns = total as f64 / sorted.len() as f64;
        Some(Summary {
            count: sorted.len(),
            rate: 1e9 / mean_ns,
            p50_us: percentile(&sorted, 50.0) as f64 / 1e3,
            p99_us: percentile(&sorted, 99.0) as f64 / 1e3,
            paired: self.paired_ratio(direct).unwrap_or(f64::NAN),
        })
    }
}

/// The nearest-rank percentile `p` of `sorted` (not empty).
fn percentile(sorted: &[u64], p: f64) -> u64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
