//! Sources of Kubernetes objects: each delivers the objects it knows and their changes into a
//! [`ClusterStore`], from which the agent translates what to program. The manifest directory
//! ([`ManifestDir`]) is one source, the API server's watch ([`ApiSource`]) the other, both
//! behind the same [`Source`] interface.

mod api;
mod journal;
mod manifest_dir;
mod store;

use std::path::PathBuf;
use std::time::Duration;

pub use api::{ApiConnection, ApiSource};
pub use journal::{StoreVersion, Touched};
pub use manifest_dir::ManifestDir;
pub use store::{Change, ClusterStore, Object, ObjectKey};

use crate::k8s::manifests::ManifestError;

/// A source of Kubernetes objects.
pub trait Source {
    /// Brings `store` up to date with what the source holds now; the first call delivers
    /// everything. Problems with single objects or files are reported, not fatal.
    fn sync(&mut self, store: &mut ClusterStore) -> Result<SyncReport, SourceError>;

    /// Waits up to `timeout` for the source to change; returns whether it did (then
    /// [`Source::sync`] picks the change up).
    fn wait_for_change(&mut self, timeout: Duration) -> Result<bool, SourceError>;

    /// What the source is, for logs.
    fn describe(&self) -> String;
}

/// What one [`Source::sync`] did.
#[derive(Debug, Default)]
pub struct SyncReport {
    /// Whether the store changed.
    pub changed: bool,
    /// Files or objects that could not be read; the others were delivered.
    pub errors: Vec<ManifestError>,
    /// Kinds seen but not used (Deployments and the like).
    pub skipped_kinds: Vec<String>,
    /// Files that could not be parsed and keep the objects they delivered before.
    pub kept: Vec<PathBuf>,
}

/// Why a source cannot deliver anything at all.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The source's directory cannot be watched.
    #[error("cannot watch {}: {detail}", path.display())]
    Watch {
        /// The directory.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// The manifest directory cannot be listed.
    #[error(transparent)]
    Manifests(ManifestError),
    /// The Kubernetes API server cannot be reached or watched.
    #[error("Kubernetes API: {detail}")]
    Api {
        /// What was tried and what failed.
        detail: String,
    },
}

impl Object {
    /// The objects of `objects`, kind by kind.
    pub fn all(objects: crate::k8s::ClusterObjects) -> Vec<Object> {
        let crate::k8s::ClusterObjects {
            services,
            endpoint_slices,
            nodes,
            pods,
        } = objects;
        services
            .into_iter()
            .map(Object::Service)
            .chain(endpoint_slices.into_iter().map(Object::EndpointSlice))
            .chain(nodes.into_iter().map(Object::Node))
            .chain(pods.into_iter().map(Object::Pod))
            .collect()
    }
}
