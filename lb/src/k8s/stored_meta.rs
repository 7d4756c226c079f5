//! [`StoredMeta`]: the metadata the agent keeps of the Services and EndpointSlices it stores,
//! and [`Named`], what every reader of an object's name asks of metadata.
//!
//! k8s-openapi's `ObjectMeta` is 360 bytes of mostly empty fields; kept once per Service and
//! per EndpointSlice that was 7 MiB at 10 000 services. The fields here have `ObjectMeta`'s
//! names and types, so code reading them reads either.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

/// Name, namespace and deletion time of a stored object.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StoredMeta {
    /// `metadata.name`.
    pub name: Option<String>,
    /// `metadata.namespace`.
    pub namespace: Option<String>,
    /// `metadata.deletionTimestamp`.
    pub deletion_timestamp: Option<Time>,
}

/// An object's name and namespace, as written (either may be missing).
pub trait Named {
    /// `metadata.name`.
    fn name(&self) -> Option<&str>;
    /// `metadata.namespace`.
    fn namespace(&self) -> Option<&str>;
}

impl Named for ObjectMeta {
    fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }
}

impl Named for StoredMeta {
    fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }
}
