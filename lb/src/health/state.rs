//! [`HealthState`]: whether the agent keeps up with its source, in kube-proxy's terms, and
//! [`Health`], the same shared between the agent loop and the server with a clock.

use std::fmt::Debug;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use crate::agent::RESYNC;

/// How long a change may wait to be programmed before the agent reports itself unhealthy.
///
/// kube-proxy allows twice its sync period. The agent picks a change up within half a second
/// and programs it in the same pass, and passes at least every [`RESYNC`] (10 s); so a change
/// still waiting after two resync periods (20 s) means the loop is stuck, not merely busy.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(2 * RESYNC.as_secs());

/// The wall clock the answers' timestamps are read from; tests inject their own.
pub trait Clock: Send + Sync + Debug {
    /// The time now.
    fn now(&self) -> SystemTime;
}

/// The system's clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// What the agent loop last reported. Times are passed in, so the logic is the same under any
/// clock.
#[derive(Clone, Debug)]
pub struct HealthState {
    /// How long a queued change may wait (kube-proxy's `healthTimeout`).
    timeout: Duration,
    /// When the oldest change not yet programmed arrived; `None` when everything is programmed.
    oldest_queued: Option<SystemTime>,
    /// When the maps were last brought up to date; `None` before the first time.
    last_updated: Option<SystemTime>,
    /// Whether this node may receive load-balanced traffic (see [`super::node_eligible`]).
    node_eligible: bool,
}

impl HealthState {
    /// Starting up: nothing queued, nothing programmed, and the node eligible until a sync says
    /// otherwise (as kube-proxy, so a probe during start-up does not fail).
    pub fn new(timeout: Duration) -> Self {
        HealthState {
            timeout,
            oldest_queued: None,
            last_updated: None,
            node_eligible: true,
        }
    }

    /// A change arrived at `now` that the maps do not reflect yet; an earlier unprogrammed
    /// change keeps its own, older time.
    pub fn queued(&mut self, now: SystemTime) {
        self.oldest_queued.get_or_insert(now);
    }

    /// The maps reflect every change received so far, as of `now`.
    pub fn updated(&mut self, now: SystemTime) {
        self.oldest_queued = None;
        self.last_updated = Some(now);
    }

    /// This node's eligibility, as the last sync found it.
    pub fn set_node_eligible(&mut self, eligible: bool) {
        self.node_eligible = eligible;
    }

    /// Whether no change has waited for [`HealthState::timeout`] or longer at `now`. Until the
    /// first update the agent is starting up, which is healthy however long it takes, as in
    /// kube-proxy (its health server only judges proxiers that have updated once): a start
    /// that is slow on a large cluster must not get the agent restarted by its liveness probe,
    /// over and over.
    pub fn healthy(&self, now: SystemTime) -> bool {
        match (self.last_updated, self.oldest_queued) {
            (None, _) | (_, None) => true,
            // A clock stepped back makes the wait zero, not an error.
            (Some(_), Some(queued)) => {
                now.duration_since(queued).unwrap_or_default() < self.timeout
            }
        }
    }

    /// When the maps were last brought up to date, if ever.
    pub fn last_updated(&self) -> Option<SystemTime> {
        self.last_updated
    }

    /// Whether this node may receive load-balanced traffic.
    pub fn node_eligible(&self) -> bool {
        self.node_eligible
    }

    /// The allowed wait.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// [`HealthState`] shared between the agent loop (which reports) and the server (which reads),
/// with the clock both use.
#[derive(Debug)]
pub struct Health {
    state: Mutex<HealthState>,
    clock: Arc<dyn Clock>,
}

impl Health {
    /// Starting up with `timeout`, times read from `clock`.
    pub fn new(timeout: Duration, clock: Arc<dyn Clock>) -> Self {
        Health {
            state: Mutex::new(HealthState::new(timeout)),
            clock,
        }
    }

    /// A change arrived now (see [`HealthState::queued`]).
    pub fn queued(&self) {
        let now = self.clock.now();
        self.with_state(|s| s.queued(now));
    }

    /// The maps are up to date now (see [`HealthState::updated`]).
    pub fn updated(&self) {
        let now = self.clock.now();
        self.with_state(|s| s.updated(now));
    }

    /// This node's eligibility now.
    pub fn set_node_eligible(&self, eligible: bool) {
        self.with_state(|s| s.set_node_eligible(eligible));
    }

    /// A copy of the state and the time it was read at.
    pub fn snapshot(&self) -> (HealthState, SystemTime) {
        let now = self.clock.now();
        (self.with_state(|s| s.clone()), now)
    }

    fn with_state<T>(&self, f: impl FnOnce(&mut HealthState) -> T) -> T {
        // The state is plain values, each update whole: a panic elsewhere cannot leave it torn.
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(20);

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    #[test]
    fn the_timeout_is_two_resync_periods() {
        assert_eq!(HEALTH_TIMEOUT, 2 * RESYNC);
    }

    #[test]
    fn starting_up_is_healthy_and_eligible() {
        let s = HealthState::new(TIMEOUT);
        assert!(s.healthy(at(1_000)));
        assert!(s.node_eligible());
        assert_eq!(s.last_updated(), None);
    }

    #[test]
    fn the_first_programming_is_starting_up_however_long_it_takes() {
        let mut s = HealthState::new(TIMEOUT);
        s.queued(at(0));
        assert!(s.healthy(at(600)));
        s.updated(at(601));
        s.queued(at(700));
        assert!(
            !s.healthy(at(720)),
            "after the first update a change may wait 20 s"
        );
    }

    #[test]
    fn a_queued_change_is_healthy_until_it_has_waited_the_timeout() {
        let mut s = HealthState::new(TIMEOUT);
        s.updated(at(0));
        s.queued(at(0));
        assert!(s.healthy(at(0)));
        assert!(s.healthy(at(19)));
        assert!(!s.healthy(at(20)));
        assert!(!s.healthy(at(60)));
    }

    #[test]
    fn an_update_clears_the_queue_and_records_its_time() {
        let mut s = HealthState::new(TIMEOUT);
        s.queued(at(0));
        s.updated(at(30));
        assert!(s.healthy(at(100)));
        assert_eq!(s.last_updated(), Some(at(30)));
    }

    #[test]
    fn later_changes_do_not_restart_the_wait_of_an_earlier_one() {
        let mut s = HealthState::new(TIMEOUT);
        s.updated(at(0));
        s.queued(at(0));
        s.queued(at(15));
        assert!(!s.healthy(at(21)), "the change queued at 0 has waited 21 s");
    }

    #[test]
    fn a_change_after_an_update_waits_from_its_own_arrival() {
        let mut s = HealthState::new(TIMEOUT);
        s.queued(at(0));
        s.updated(at(1));
        s.queued(at(50));
        assert!(s.healthy(at(69)));
        assert!(!s.healthy(at(70)));
    }

    #[test]
    fn a_clock_stepped_back_counts_as_no_wait() {
        let mut s = HealthState::new(TIMEOUT);
        s.updated(at(0));
        s.queued(at(100));
        assert!(s.healthy(at(50)));
    }

    #[test]
    fn eligibility_follows_the_last_sync() {
        let mut s = HealthState::new(TIMEOUT);
        s.set_node_eligible(false);
        assert!(!s.node_eligible());
        assert!(s.healthy(at(0)), "eligibility is not the agent's health");
        s.set_node_eligible(true);
        assert!(s.node_eligible());
    }
}
