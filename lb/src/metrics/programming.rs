//! [`ProgrammingLatency`]: kube-proxy's network programming latency. Each EndpointSlice that
//! changed (or appeared) carries the time its change was triggered in the
//! `endpoints.kubernetes.io/last-change-trigger-time` annotation; once the maps hold the change,
//! the time since then is one observation. As kube-proxy does: a slice's time is taken when the
//! slice differs from the one seen before, times from before the agent started are ignored (they
//! would measure the agent's downtime), a deleted slice drops its service's waiting times (its
//! annotation dates from its last update, not from the deletion), and every time waiting for a
//! service is observed at the next successful sync.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::k8s::StoredSlice;
use k8s_openapi::jiff::Timestamp;

use super::slice_changes::SliceChanges;
use super::terminating::service_of;

/// The annotation the EndpointSlice controller sets to when the change was triggered.
pub const LAST_CHANGE_TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// Trigger times waiting for the maps, and the slices they came from.
#[derive(Clone, Debug)]
pub struct ProgrammingLatency {
    /// When the agent started: earlier trigger times are not measured.
    started: SystemTime,
    /// Each slice (namespace, name) as last seen, shared with the store.
    slices: HashMap<(String, String), Arc<StoredSlice>>,
    /// Trigger times not yet programmed, by service (namespace, name).
    waiting: HashMap<(String, String), Vec<SystemTime>>,
}

impl ProgrammingLatency {
    /// Nothing seen yet; trigger times before `started` will be ignored.
    pub fn new(started: SystemTime) -> Self {
        ProgrammingLatency {
            started,
            slices: HashMap::new(),
            waiting: HashMap::new(),
        }
    }

    /// Takes the slices that changed since the last call: each one that differs from the
    /// slice of its name seen before, or is new, has its trigger time wait for the next
    /// [`ProgrammingLatency::programmed`].
    pub fn observe(&mut self, changes: &SliceChanges) {
        for slice in &changes.appeared {
            let key = key_of(slice);
            let before = self.slices.get(&key);
            if !before.is_some_and(|b| Arc::ptr_eq(b, slice) || **b == **slice) {
                if let Some(t) = trigger_time(slice).filter(|t| *t > self.started) {
                    self.waiting.entry(service_of(slice)).or_default().push(t);
                }
            }
            self.slices.insert(key, Arc::clone(slice));
        }
        for gone in &changes.disappeared {
            let key = key_of(gone);
            // Replaced by a slice of the same name, or deleted.
            if self.slices.get(&key).is_some_and(|s| Arc::ptr_eq(s, gone)) {
                self.slices.remove(&key);
                self.waiting.remove(&service_of(gone));
            }
        }
    }

    /// The maps hold every change observed so far, as of `now`: the latency of each waiting
    /// trigger time (zero for a clock behind the annotation's), which no longer waits.
    pub fn programmed(&mut self, now: SystemTime) -> Vec<Duration> {
        self.waiting
            .drain()
            .flat_map(|(_, times)| times)
            .map(|t| now.duration_since(t).unwrap_or_default())
            .collect()
    }
}

/// The slice's namespace and name.
fn key_of(slice: &StoredSlice) -> (String, String) {
    (
        slice.metadata.namespace.clone().unwrap_or_default(),
        slice.metadata.name.clone().unwrap_or_default(),
    )
}

/// The slice's trigger time, when the annotation is there and is an RFC 3339 time (kube-proxy
/// also ignores a malformed one).
pub fn trigger_time(slice: &StoredSlice) -> Option<SystemTime> {
    let raw = slice.trigger_time.as_deref()?;
    let ts: Timestamp = raw.parse().ok()?;
    // Before the epoch: not a time a controller stamps.
    let secs = u64::try_from(ts.as_second()).ok()?;
    let nanos = u32::try_from(ts.subsec_nanosecond()).ok()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::slice_changes::SeenSlices;

    /// The latency fed the way the agent feeds it: all slices as they are now, of which the
    /// ones not seen before (here: every one, as each is a new allocation) are the changes.
    struct Tracker {
        seen: SeenSlices,
        latency: ProgrammingLatency,
    }

    impl Tracker {
        fn new(started: SystemTime) -> Self {
            Tracker {
                seen: SeenSlices::default(),
                latency: ProgrammingLatency::new(started),
            }
        }

        fn observe(&mut self, slices: &[StoredSlice]) {
            let now: Vec<Arc<StoredSlice>> = slices.iter().cloned().map(Arc::new).collect();
            let changes = self.seen.look(&now);
            self.latency.observe(&changes);
        }

        fn programmed(&mut self, now: SystemTime) -> Vec<Duration> {
            self.latency.programmed(now)
        }
    }

    /// 2026-12-03T08:00:00Z plus `secs`.
    fn at(secs: f64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs_f64(1_796_284_800.0 + secs)
    }

    /// Slice `name` of service `svc` with endpoint `address`, triggered at `trigger` (RFC 3339).
    fn slice(name: &str, svc: &str, address: &str, trigger: Option<&str>) -> StoredSlice {
        let annotations = trigger.map_or_else(String::new, |t| {
            format!(", annotations: {{{LAST_CHANGE_TRIGGER_TIME}: '{t}'}}")
        });
        serde_yaml::from_str(&format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata: {{name: {name}, namespace: default, labels: {{kubernetes.io/service-name: {svc}}}{annotations}}}\n\
             addressType: IPv4\nendpoints: [{{addresses: [{address}]}}]\n"
        ))
        .map(|s: k8s_openapi::api::discovery::v1::EndpointSlice| s.into())
        .unwrap()
    }

    #[test]
    fn the_latency_runs_from_the_annotation_to_the_programming() {
        let mut p = Tracker::new(at(0.0));
        p.observe(&[slice(
            "a-1",
            "a",
            "10.0.0.1",
            Some("2026-12-03T08:00:10.25Z"),
        )]);
        assert_eq!(p.programmed(at(12.0)), vec![Duration::from_millis(1750)]);
        assert_eq!(
            p.programmed(at(13.0)),
            Vec::<Duration>::new(),
            "observed once"
        );
    }

    #[test]
    fn an_unchanged_slice_seen_again_is_not_measured_again() {
        let mut p = Tracker::new(at(0.0));
        let s = [slice("a-1", "a", "10.0.0.1", Some("2026-12-03T08:00:10Z"))];
        p.observe(&s);
        assert_eq!(p.programmed(at(11.0)).len(), 1);
        p.observe(&s);
        assert_eq!(p.programmed(at(21.0)), Vec::<Duration>::new());
    }

    #[test]
    fn changes_before_the_start_or_without_a_valid_annotation_are_not_measured() {
        let mut p = Tracker::new(at(100.0));
        p.observe(&[
            slice("a-1", "a", "10.0.0.1", Some("2026-12-03T08:00:10Z")),
            slice("b-1", "b", "10.0.0.2", None),
            slice("c-1", "c", "10.0.0.3", Some("yesterday")),
        ]);
        assert_eq!(p.programmed(at(101.0)), Vec::<Duration>::new());
    }

    #[test]
    fn several_changes_before_one_sync_are_each_observed() {
        let mut p = Tracker::new(at(0.0));
        p.observe(&[slice("a-1", "a", "10.0.0.1", Some("2026-12-03T08:00:01Z"))]);
        p.observe(&[slice("a-1", "a", "10.0.0.9", Some("2026-12-03T08:00:02Z"))]);
        let mut got = p.programmed(at(3.0));
        got.sort();
        assert_eq!(got, vec![Duration::from_secs(1), Duration::from_secs(2)]);
    }

    #[test]
    fn a_deleted_slice_drops_its_services_waiting_times() {
        let mut p = Tracker::new(at(0.0));
        p.observe(&[
            slice("a-1", "a", "10.0.0.1", Some("2026-12-03T08:00:01Z")),
            slice("b-1", "b", "10.0.0.2", Some("2026-12-03T08:00:01Z")),
        ]);
        p.observe(&[slice("b-1", "b", "10.0.0.2", Some("2026-12-03T08:00:01Z"))]);
        assert_eq!(p.programmed(at(2.0)), vec![Duration::from_secs(1)]);
    }

    #[test]
    fn a_clock_behind_the_annotation_measures_zero() {
        let mut p = Tracker::new(at(0.0));
        p.observe(&[slice("a-1", "a", "10.0.0.1", Some("2026-12-03T08:00:05Z"))]);
        assert_eq!(p.programmed(at(4.0)), vec![Duration::ZERO]);
    }
}
