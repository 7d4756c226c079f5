//! The kernel's tick counter (jiffies) as a clock of CLOCK_MONOTONIC seconds, for the packet
//! programs. Reading jiffies in BPF (`bpf_jiffies64`) is one load on 64-bit JITs, which the
//! verifier writes in place of the call; any other clock is a helper call, and with this
//! machine class's return-thunk mitigations that call cost as much as the rest of a tracked
//! packet's work. Conntrack counts whole seconds, which the tick gives.
//!
//! What the programs need is the tick rate (`CONFIG_HZ`, not exported) and the jiffies value
//! at CLOCK_MONOTONIC 0, so that `(jiffies - at_zero) / hz` is the monotonic second the agent's
//! garbage collection compares entries with. Both come from `/proc/timer_list`, which prints
//! the monotonic time ("now at N nsecs") and jiffies ("jiffies: N") in one read:
//!
//! - a 64-bit kernel starts jiffies at `2^32 - 300 * HZ` (`INITIAL_JIFFIES`, so that they wrap
//!   five minutes after boot), so one sample tells the rate: the candidate rate for which
//!   `jiffies - now * hz` lands on its own start;
//! - right after boot (uptime near 300 s every candidate fits) or on a kernel that starts
//!   elsewhere, two samples [`SECOND_SAMPLE_AFTER`] apart measure the rate instead.
//!
//! Without a readable `/proc/timer_list`, or when neither way gives one rate, the programs keep
//! the helper clock (`cfg_jiffies_hz` 0).

use std::time::Duration;

/// `CONFIG_HZ` values the kernel offers.
const HZ_CANDIDATES: [u32; 4] = [100, 250, 300, 1000];
/// How far the monotonic clock and the tick may disagree about their common start, in seconds,
/// for one sample to tell the rate.
const START_TOLERANCE_SECS: f64 = 2.0;
/// The gap between the two samples that measure the rate when one sample cannot: at 100 Hz it
/// holds 15 ticks, so a one-tick error stays far from the next candidate.
pub const SECOND_SAMPLE_AFTER: Duration = Duration::from_millis(150);
const NANOS_PER_SEC: f64 = 1e9;

/// A calibrated tick: `(jiffies - at_zero) / hz` is the CLOCK_MONOTONIC second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JiffiesClock {
    /// Ticks per second (`CONFIG_HZ`).
    pub hz: u32,
    /// jiffies when CLOCK_MONOTONIC read 0.
    pub at_zero: u64,
}

/// One reading of `/proc/timer_list`: the monotonic time and jiffies at (nearly) one instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    /// CLOCK_MONOTONIC, ns ("now at N nsecs").
    pub now_ns: u64,
    /// jiffies ("jiffies: N", the first CPU's line).
    pub jiffies: u64,
}

/// The clock for this kernel, calibrated once per process; `None` when it cannot be.
pub fn clock() -> Option<JiffiesClock> {
    static ANSWER: std::sync::OnceLock<Option<JiffiesClock>> = std::sync::OnceLock::new();
    *ANSWER.get_or_init(calibrate_now)
}

fn calibrate_now() -> Option<JiffiesClock> {
    let first = read_sample()?;
    if let Some(clock) = from_one_sample(first) {
        return Some(clock);
    }
    std::thread::sleep(SECOND_SAMPLE_AFTER);
    from_two_samples(first, read_sample()?)
}

fn read_sample() -> Option<Sample> {
    parse_timer_list(&std::fs::read_to_string("/proc/timer_list").ok()?)
}

/// The monotonic time and the first jiffies line of `/proc/timer_list`'s text.
pub fn parse_timer_list(text: &str) -> Option<Sample> {
    let mut now_ns = None;
    let mut jiffies = None;
    for line in text.lines() {
        let line = line.trim();
        if now_ns.is_none() {
            if let Some(rest) = line.strip_prefix("now at ") {
                now_ns = rest.strip_suffix(" nsecs")?.trim().parse().ok();
            }
        }
        if jiffies.is_none() {
            if let Some(rest) = line.strip_prefix("jiffies:") {
                jiffies = rest.trim().parse().ok();
            }
        }
    }
    Some(Sample {
        now_ns: now_ns?,
        jiffies: jiffies?,
    })
}

/// `INITIAL_JIFFIES` of a 64-bit kernel at `hz`.
fn initial_jiffies(hz: u32) -> u64 {
    (1u64 << 32) - 300 * u64::from(hz)
}

/// The rate for which the sample's start lands on that rate's `INITIAL_JIFFIES`, when exactly
/// one candidate does.
pub fn from_one_sample(sample: Sample) -> Option<JiffiesClock> {
    let mut fits = HZ_CANDIDATES.into_iter().filter_map(|hz| {
        let at_zero = at_zero(sample, hz)?;
        let off_secs = (at_zero as f64 - initial_jiffies(hz) as f64).abs() / f64::from(hz);
        (off_secs <= START_TOLERANCE_SECS).then_some(JiffiesClock { hz, at_zero })
    });
    let clock = fits.next()?;
    fits.next().is_none().then_some(clock)
}

/// The rate two samples measure, rounded to the candidate within 10 %; the start from the later.
pub fn from_two_samples(first: Sample, second: Sample) -> Option<JiffiesClock> {
    let elapsed = second.now_ns.checked_sub(first.now_ns)? as f64 / NANOS_PER_SEC;
    let ticks = second.jiffies.checked_sub(first.jiffies)? as f64;
    if elapsed <= 0.0 {
        return None;
    }
    let rate = ticks / elapsed;
    let hz = HZ_CANDIDATES
        .into_iter()
        .find(|&hz| (rate - f64::from(hz)).abs() <= 0.1 * f64::from(hz))?;
    Some(JiffiesClock {
        hz,
        at_zero: at_zero(second, hz)?,
    })
}

/// jiffies at monotonic 0, had the tick run at `hz` since then.
fn at_zero(sample: Sample, hz: u32) -> Option<u64> {
    let ticks_since_zero = u128::from(sample.now_ns) * u128::from(hz) / 1_000_000_000;
    sample
        .jiffies
        .checked_sub(u64::try_from(ticks_since_zero).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine's kernel at 250 Hz, six hours up (the lines around the two read).
    const TIMER_LIST: &str = "Timer List Version: v0.9\nHRTIMER_MAX_CLOCK_BASES: 8\n\
        now at 21494616834507 nsecs\n\ncpu: 0\n clock 0:\n  .base:       ffff\n\
        jiffies: 4300265886\n  .next_timer: 1\njiffies: 4300265999\n";

    #[test]
    fn parses_the_time_and_the_first_jiffies_line() {
        assert_eq!(
            parse_timer_list(TIMER_LIST),
            Some(Sample {
                now_ns: 21_494_616_834_507,
                jiffies: 4_300_265_886
            })
        );
        assert_eq!(parse_timer_list("now at 5 nsecs\n"), None);
        assert_eq!(parse_timer_list("jiffies: 5\n"), None);
    }

    #[test]
    fn one_sample_of_a_long_running_kernel_tells_its_rate() {
        let clock = from_one_sample(parse_timer_list(TIMER_LIST).unwrap()).unwrap();
        assert_eq!(clock.hz, 250);
        // The second it gives is the monotonic second of the sample.
        let secs = (4_300_265_886 - clock.at_zero) / u64::from(clock.hz);
        assert_eq!(secs, 21_494);
    }

    #[test]
    fn every_candidate_rate_is_recognised_from_its_start() {
        for hz in HZ_CANDIDATES {
            let now_ns = 3_600 * 1_000_000_000u64 + 123;
            let sample = Sample {
                now_ns,
                jiffies: initial_jiffies(hz) + 3_600 * u64::from(hz),
            };
            assert_eq!(from_one_sample(sample).map(|c| c.hz), Some(hz), "{hz} Hz");
        }
    }

    #[test]
    fn five_minutes_after_boot_one_sample_is_ambiguous_and_two_measure() {
        // At uptime 300 s every rate's jiffies sit at 2^32.
        let first = Sample {
            now_ns: 300_000_000_000,
            jiffies: 1 << 32,
        };
        assert_eq!(from_one_sample(first), None);
        let second = Sample {
            now_ns: first.now_ns + 150_000_000,
            jiffies: first.jiffies + 150,
        };
        let clock = from_two_samples(first, second).unwrap();
        assert_eq!(clock.hz, 1000);
        assert_eq!((second.jiffies - clock.at_zero) / 1000, 300);
    }

    #[test]
    fn a_rate_between_candidates_or_a_clock_going_back_gives_none() {
        let first = Sample {
            now_ns: 1_000_000_000,
            jiffies: 10_000,
        };
        let between = Sample {
            now_ns: first.now_ns + 1_000_000_000,
            jiffies: first.jiffies + 500,
        };
        assert_eq!(from_two_samples(first, between), None);
        assert_eq!(from_two_samples(between, first), None);
    }

    #[test]
    fn a_kernel_starting_its_tick_elsewhere_is_not_guessed_from_one_sample() {
        let sample = Sample {
            now_ns: 3_600 * 1_000_000_000,
            jiffies: 77,
        };
        assert_eq!(from_one_sample(sample), None);
    }
}
