//! One kind's watch: kube's watcher (list, then watch from the list's resourceVersion, with
//! bookmarks; a re-list after `410 Gone`), slowed by a back-off while requests fail, turned
//! into store [`Change`]s. A list, first or again, is buffered and delivered as one
//! [`Change::Replace`] once complete, so the agent never programs half of a cluster.

use std::fmt::Debug;
use std::sync::mpsc::Sender;

use futures::StreamExt;
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
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
        let mut events = std::pin::pin!(watcher(api, config).default_backoff());
        while let Some(event) = events.next().await {
            let change = match event {
                Err(e) => {
                    // The stream waits (exponentially longer, up to 30 s) before its next try.
                    warn!(kind, "Kubernetes API: {e}; retrying after a back-off");
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
