//! One kind's watch: kube's watcher (list, then watch from the list's resourceVersion, with
//! bookmarks; a re-list after `410 Gone`), slowed by a back-off while requests fail, turned
//! into store [`Change`]s. A list, first or again, is buffered and delivered as one
//! [`Change::Replace`] once complete, so the agent never programs half of a cluster.
//!
//! The back-off is this module's, not kube's `default_backoff`: that one starts again from its
//! first delay whenever the stream yields an item, and the watcher yields `Init` before every
//! list it tries, so against a down API server it retried every 0.8 s forever instead of
//! growing to 30 s. Here only progress (a complete list, a watch event) resets it.

use std::fmt::Debug;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::mpsc::Sender;
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::watcher::{self, watcher, Event};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tracing::{debug, warn};

use crate::source::{Change, Object, ObjectKey};

/// How one kind is watched and kept.
#[derive(Debug)]
pub struct KindWatch<K> {
    /// The kind, as [`ObjectKey::kind`] spells it.
    pub kind: &'static str,
    /// What to watch: every object of the kind, or those the field selector names.
    pub api: Api<K>,
    /// Selectors and bookmarks.
    pub config: watcher::Config,
    /// The object as the store keeps it, or `None` when the agent has no use for it.
    pub keep: fn(K) -> Option<Object>,
}

/// The store origin of a kind's objects (`api/Service`, ...).
pub fn origin_of(kind: &str) -> String {
    format!("api/{kind}")
}

impl<K> KindWatch<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static,
{
    /// Watches until `changes` has no receiver (the source was dropped).
    pub async fn run(self, changes: Sender<Change>) {
        let KindWatch {
            kind,
            api,
            config,
            keep,
        } = self;
        let origin = origin_of(kind);
        let mut listing: Option<Vec<Object>> = None;
        let mut backoff = Backoff::default();
        let mut events = std::pin::pin!(watcher(api, config));
        while let Some(event) = events.next().await {
            if matches!(
                event,
                Ok(Event::InitDone | Event::Apply(_) | Event::Delete(_))
            ) {
                backoff.reset();
            }
            let change = match event {
                // The watch's resourceVersion was compacted away: the watcher lists again at
                // once, as client-go does (a failing list is backed off like any request).
                Err(watcher::Error::WatchError(status)) if status.code == 410 => {
                    debug!(kind, "{}; listing again", status.message);
                    continue;
                }
                Err(e) => {
                    // The watcher tries again when next polled: not before the delay.
                    let delay = backoff.next_delay();
                    warn!(kind, retry_in = ?delay, "Kubernetes API: {e}");
                    tokio::time::sleep(delay).await;
                    continue;
                }
                Ok(Event::Init) => {
                    debug!(kind, "listing");
                    listing = Some(Vec::new());
                    continue;
                }
                Ok(Event::InitApply(object)) => {
                    if let (Some(listing), Some(object)) = (&mut listing, keep(object)) {
                        listing.push(object);
                    }
                    continue;
                }
                Ok(Event::InitDone) => {
                    let objects = listing.take().unwrap_or_default();
                    debug!(kind, objects = objects.len(), "listed");
                    Change::Replace {
                        origin: origin.clone(),
                        objects,
                    }
                }
                Ok(Event::Apply(object)) => {
                    let key = key_of(kind, &object);
                    match keep(object) {
                        Some(object) => Change::Upsert {
                            origin: origin.clone(),
                            object,
                        },
                        // No longer of use (a pod that lost its hostPort): as if deleted.
                        None => Change::Delete {
                            origin: origin.clone(),
                            key,
                        },
                    }
                }
                Ok(Event::Delete(object)) => Change::Delete {
                    origin: origin.clone(),
                    key: key_of(kind, &object),
                },
            };
            if changes.send(change).is_err() {
                return;
            }
        }
    }
}

fn key_of<K: Resource>(kind: &'static str, object: &K) -> ObjectKey {
    ObjectKey {
        kind,
        namespace: object.namespace().unwrap_or_default(),
        name: object.name_any(),
    }
}

/// Delays between failed tries: 0.8 s, doubling up to 30 s, each up to a quarter longer at
/// random so the agents of a cluster do not retry in step.
#[derive(Debug, Default)]
struct Backoff {
    failures: u32,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(800);
    const MAX: Duration = Duration::from_secs(30);

    fn next_delay(&mut self) -> Duration {
        let base = Self::FIRST
            .saturating_mul(1 << self.failures.min(16))
            .min(Self::MAX);
        self.failures = self.failures.saturating_add(1);
        let jitter = RandomState::new().build_hasher().finish() % 1000;
        base + base.mul_f64(jitter as f64 / 4000.0)
    }

    fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_back_off_doubles_to_thirty_seconds_and_starts_again_after_progress() {
        let mut b = Backoff::default();
        let delays: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        let expected = [0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30.0, 30.0];
        for (d, base) in delays.iter().zip(expected) {
            let d = d.as_secs_f64();
            assert!(d >= base && d < base * 1.25 + 1e-9, "{delays:?}");
        }
        b.reset();
        assert!(b.next_delay() < Duration::from_secs(1));
    }
}
