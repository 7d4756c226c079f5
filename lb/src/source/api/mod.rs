//! The API-server source: Services, EndpointSlices (discovery.k8s.io/v1), Nodes and this
//! node's hostPort Pods, watched with kube's watcher on a tokio runtime of their own thread and
//! handed to the agent's synchronous loop over a channel. Each kind is one store origin
//! (`api/Service`, ...): a complete list replaces it, watch events change single objects.
//! What is watched is exactly [`crate::k8s::API_ACCESS`], which the RBAC rules grant.

mod connect;
mod slim;
mod watch;

#[cfg(test)]
mod mock_tests;

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher;
use kube::{Api, Client};
use tracing::info;

pub use connect::ApiConnection;
use watch::{origin_of, KindWatch};

use super::{Change, ClusterStore, Source, SourceError, SyncReport};

/// The kinds watched, in the order their first lists are awaited.
const KINDS: [&str; 4] = ["Service", "EndpointSlice", "Node", "Pod"];
/// How often the first sync says which lists it still waits for.
const WAITING_NOTE: Duration = Duration::from_secs(10);

/// Objects from the Kubernetes API server.
#[derive(Debug)]
pub struct ApiSource {
    changes: Receiver<Change>,
    /// Changes received while waiting, not yet applied.
    pending: Vec<Change>,
    /// Kinds whose first complete list has reached the store.
    listed: BTreeSet<String>,
    server: String,
}

impl ApiSource {
    /// Connects as `connection` says and starts the watches for node `node`.
    pub fn connect(connection: ApiConnection, node: &str) -> Result<Self, SourceError> {
        ApiSource::start(node, move || async move {
            let (config, how) = connection.client_config().await?;
            let server = format!("{} ({how})", config.cluster_url);
            let client = Client::try_from(config).map_err(|e| SourceError::Api {
                detail: format!("cannot make a client for {server}: {e}"),
            })?;
            Ok((client, server))
        })
    }

    /// Starts the watches for node `node` with the client `make_client` returns; it is called
    /// on the source's runtime (a client spawns its request buffer there).
    pub fn start<F, Fut>(node: &str, make_client: F) -> Result<Self, SourceError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(Client, String), SourceError>>,
    {
        let node = node.to_owned();
        let (started_tx, started_rx) = mpsc::channel();
        let (changes_tx, changes) = mpsc::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| SourceError::Api {
                detail: format!("cannot start the watch runtime: {e}"),
            })?;
        std::thread::Builder::new()
            .name("k8s-watch".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let client = match make_client().await {
                        Ok((client, server)) => {
                            let _ = started_tx.send(Ok(server));
                            client
                        }
                        Err(e) => {
                            let _ = started_tx.send(Err(e));
                            return;
                        }
                    };
                    watch_all(client, &node, changes_tx).await;
                })
            })
            .map_err(|e| SourceError::Api {
                detail: format!("cannot start the watch thread: {e}"),
            })?;
        let server = started_rx.recv().map_err(|_| stopped())??;
        Ok(ApiSource {
            changes,
            pending: Vec::new(),
            listed: BTreeSet::new(),
            server,
        })
    }

    /// Waits until every kind's first list has arrived, so the first sync delivers a whole
    /// cluster (an agent programming a partial one would drop services it should serve).
    fn wait_for_first_lists(&mut self) -> Result<(), SourceError> {
        let mut note_at = Instant::now() + WAITING_NOTE;
        loop {
            let missing: Vec<&str> = KINDS
                .into_iter()
                .filter(|k| !self.listed.contains(*k) && !self.pending_lists(k))
                .collect();
            if missing.is_empty() {
                return Ok(());
            }
            match self.changes.recv_timeout(Duration::from_millis(500)) {
                Ok(change) => self.pending.push(change),
                Err(RecvTimeoutError::Timeout) if Instant::now() >= note_at => {
                    note_at = Instant::now() + WAITING_NOTE;
                    info!(
                        server = %self.server,
                        "waiting for the first list of {}",
                        missing.join(", ")
                    );
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Err(stopped()),
            }
        }
    }

    /// The changes received and not yet applied (for tests to look at what would be).
    #[cfg(test)]
    fn received(&mut self) -> &[Change] {
        while let Ok(change) = self.changes.try_recv() {
            self.pending.push(change);
        }
        &self.pending
    }

    fn pending_lists(&self, kind: &str) -> bool {
        let origin = origin_of(kind);
        self.pending
            .iter()
            .any(|c| matches!(c, Change::Replace { origin: o, .. } if *o == origin))
    }
}

impl Source for ApiSource {
    fn sync(&mut self, store: &mut ClusterStore) -> Result<SyncReport, SourceError> {
        if self.listed.len() < KINDS.len() {
            self.wait_for_first_lists()?;
        }
        loop {
            match self.changes.try_recv() {
                Ok(change) => self.pending.push(change),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return Err(stopped()),
            }
        }
        let mut report = SyncReport::default();
        for change in self.pending.drain(..) {
            if let Change::Replace { origin, .. } = &change {
                if let Some(kind) = origin.strip_prefix("api/") {
                    self.listed.insert(kind.to_owned());
                }
            }
            report.changed |= store.apply(change);
        }
        Ok(report)
    }

    fn wait_for_change(&mut self, timeout: Duration) -> Result<bool, SourceError> {
        if !self.pending.is_empty() {
            return Ok(true);
        }
        match self.changes.recv_timeout(timeout) {
            Ok(change) => {
                self.pending.push(change);
                Ok(true)
            }
            Err(RecvTimeoutError::Timeout) => Ok(false),
            Err(RecvTimeoutError::Disconnected) => Err(stopped()),
        }
    }

    fn describe(&self) -> String {
        format!("Kubernetes API server {}", self.server)
    }
}

fn stopped() -> SourceError {
    SourceError::Api {
        detail: "the watch thread stopped".into(),
    }
}

/// Runs the four watches until the source is dropped.
async fn watch_all(client: Client, node: &str, changes: mpsc::Sender<Change>) {
    let config = watcher::Config::default();
    let services = KindWatch {
        kind: "Service",
        api: Api::<Service>::all(client.clone()),
        config: config.clone(),
        keep: slim::service,
    };
    let slices = KindWatch {
        kind: "EndpointSlice",
        api: Api::<EndpointSlice>::all(client.clone()),
        config: config.clone(),
        keep: slim::endpoint_slice,
    };
    let nodes = KindWatch {
        kind: "Node",
        api: Api::<Node>::all(client.clone()),
        config: config.clone(),
        keep: slim::node,
    };
    // Only this node's pods: a hostPort is served on the node its pod runs on.
    let pods = KindWatch {
        kind: "Pod",
        api: Api::<Pod>::all(client),
        config: config.fields(&format!("spec.nodeName={node}")),
        keep: slim::pod,
    };
    futures::future::join4(
        services.run(changes.clone()),
        slices.run(changes.clone()),
        nodes.run(changes.clone()),
        pods.run(changes),
    )
    .await;
}
