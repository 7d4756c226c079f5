//! Translation from Kubernetes objects (Service, EndpointSlice, Node, Pod) into the model.
//!
//! Pure: no I/O besides [`manifests`], which reads objects from files. Every malformed object
//! yields errors naming the object, the field and the value, and is left out; the others are
//! programmed.

mod access;
mod endpoints;
mod error;
mod fields;
mod for_node;
mod health_check;
mod hostport;
pub mod manifests;
mod node;
mod options;
mod service;
mod stored_meta;
mod stored_service;
mod stored_slice;
mod translate;
mod translate_cache;

pub use access::{ApiAccess, API_ACCESS};
pub use endpoints::SERVICE_NAME_LABEL;
pub use error::{ObjectRef, TranslateError};
pub use for_node::{translate_for_node, translate_for_node_store, NodeNotFound, NodeTranslation};
pub use health_check::{HealthCheck, HealthChecks};
pub use node::{DeviceSelection, K8sAddressType, NodeContext, NodeDevice, ZONE_LABEL};
pub use options::TranslateOptions;
pub use service::{HEADLESS_LABEL, SERVICE_PROXY_NAME_LABEL};
pub use stored_meta::{Named, StoredMeta};
pub use stored_service::{StoredService, StoredServicePort, StoredServiceSpec};
pub use stored_slice::{EndpointAddress, StoredEndpoint, StoredSlice};
pub use translate::{translate, ClusterObjects, LocalNode, Translation};
pub use translate_cache::TranslationCache;
