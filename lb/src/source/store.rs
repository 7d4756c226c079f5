//! [`ClusterStore`]: the Kubernetes objects the agent knows, grouped by where they came from
//! (a manifest file, the API server), and the [`Change`]s sources deliver into it. Translation
//! reads [`ClusterStore::objects`], so every source feeds the same path.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::k8s::ClusterObjects;

/// One object of a kind the agent reads (boxed: the kinds differ much in size).
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    /// A Service.
    Service(Box<Service>),
    /// An EndpointSlice (discovery.k8s.io/v1).
    EndpointSlice(Box<EndpointSlice>),
    /// A Node.
    Node(Box<Node>),
    /// A Pod (for hostPort).
    Pod(Box<Pod>),
}

/// What identifies an object: kind, namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjectKey {
    /// `Service`, `EndpointSlice`, `Node` or `Pod`.
    pub kind: &'static str,
    /// Empty for cluster-scoped objects.
    pub namespace: String,
    /// The object's name.
    pub name: String,
}

impl Object {
    /// Its kind, namespace and name.
    pub fn key(&self) -> ObjectKey {
        let (kind, meta) = self.kind_and_meta();
        ObjectKey {
            kind,
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
        }
    }

    /// Whether its key is `key`, without copying its names: a watch event looks its object up
    /// among all of an origin's (10 000 Services), so this runs that often per event.
    pub fn has_key(&self, key: &ObjectKey) -> bool {
        let (kind, meta) = self.kind_and_meta();
        kind == key.kind
            && meta.name.as_deref().unwrap_or_default() == key.name
            && meta.namespace.as_deref().unwrap_or_default() == key.namespace
    }

    fn kind_and_meta(&self) -> (&'static str, &ObjectMeta) {
        match self {
            Object::Service(o) => ("Service", &o.metadata),
            Object::EndpointSlice(o) => ("EndpointSlice", &o.metadata),
            Object::Node(o) => ("Node", &o.metadata),
            Object::Pod(o) => ("Pod", &o.metadata),
        }
    }
}

/// A change a source delivers.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// Everything `origin` holds now, replacing what it held (a file read, a re-list).
    Replace {
        /// Where the objects come from (a file path, `api`).
        origin: String,
        /// Its objects, in the order the origin has them.
        objects: Vec<Object>,
    },
    /// One object of `origin` added or changed (a watch event).
    Upsert {
        /// Where it comes from.
        origin: String,
        /// The object.
        object: Object,
    },
    /// One object of `origin` deleted.
    Delete {
        /// Where it came from.
        origin: String,
        /// Which object.
        key: ObjectKey,
    },
    /// `origin` is gone with all its objects (a deleted file).
    Forget {
        /// The origin.
        origin: String,
    },
}

/// The objects every source delivered, by origin.
#[derive(Clone, Debug, Default)]
pub struct ClusterStore {
    origins: BTreeMap<String, Vec<Object>>,
}

impl ClusterStore {
    /// Applies `change`; returns whether the store's contents changed.
    pub fn apply(&mut self, change: Change) -> bool {
        match change {
            Change::Replace { origin, objects } => {
                if self.origins.get(&origin) == Some(&objects) {
                    return false;
                }
                self.origins.insert(origin, objects);
                true
            }
            Change::Upsert { origin, object } => {
                let objects = self.origins.entry(origin).or_default();
                let key = object.key();
                match objects.iter_mut().find(|o| o.has_key(&key)) {
                    Some(existing) if *existing == object => false,
                    Some(existing) => {
                        *existing = object;
                        true
                    }
                    None => {
                        objects.push(object);
                        true
                    }
                }
            }
            Change::Delete { origin, key } => match self.origins.get_mut(&origin) {
                Some(objects) => {
                    let before = objects.len();
                    objects.retain(|o| !o.has_key(&key));
                    objects.len() != before
                }
                None => false,
            },
            Change::Forget { origin } => self.origins.remove(&origin).is_some(),
        }
    }

    /// The origins that hold objects (or held an empty set).
    pub fn origins(&self) -> impl Iterator<Item = &str> {
        self.origins.keys().map(String::as_str)
    }

    /// Every Node, origins in name order.
    pub fn nodes(&self) -> Vec<Node> {
        self.origins
            .values()
            .flatten()
            .filter_map(|o| match o {
                Object::Node(n) => Some((**n).clone()),
                _ => None,
            })
            .collect()
    }

    /// Every object, by kind, origins in name order and each origin's objects in its order.
    pub fn objects(&self) -> ClusterObjects {
        let mut out = ClusterObjects::default();
        for object in self.origins.values().flatten() {
            match object {
                Object::Service(o) => out.services.push((**o).clone()),
                Object::EndpointSlice(o) => out.endpoint_slices.push((**o).clone()),
                Object::Node(o) => out.nodes.push((**o).clone()),
                Object::Pod(o) => out.pods.push((**o).clone()),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: &str, cluster_ip: &str) -> Object {
        Object::Service(Box::new(Service {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some("default".to_owned()),
                ..ObjectMeta::default()
            },
            spec: Some(k8s_openapi::api::core::v1::ServiceSpec {
                cluster_ip: Some(cluster_ip.to_owned()),
                ..Default::default()
            }),
            ..Service::default()
        }))
    }

    fn cluster_ips(store: &ClusterStore) -> Vec<String> {
        store
            .objects()
            .services
            .iter()
            .map(|s| s.spec.as_ref().unwrap().cluster_ip.clone().unwrap())
            .collect()
    }

    #[test]
    fn a_replace_swaps_one_origin_and_leaves_the_others() {
        let mut store = ClusterStore::default();
        assert!(store.apply(Change::Replace {
            origin: "a.yaml".into(),
            objects: vec![service("a", "10.0.0.1")],
        }));
        assert!(store.apply(Change::Replace {
            origin: "b.yaml".into(),
            objects: vec![service("b", "10.0.0.2")],
        }));
        assert!(store.apply(Change::Replace {
            origin: "a.yaml".into(),
            objects: vec![service("a", "10.0.0.3")],
        }));
        assert_eq!(cluster_ips(&store), ["10.0.0.3", "10.0.0.2"]);
        assert!(!store.apply(Change::Replace {
            origin: "a.yaml".into(),
            objects: vec![service("a", "10.0.0.3")],
        }));
        assert!(store.apply(Change::Forget {
            origin: "a.yaml".into()
        }));
        assert_eq!(cluster_ips(&store), ["10.0.0.2"]);
    }

    #[test]
    fn upserts_and_deletes_change_one_object_by_its_key() {
        let mut store = ClusterStore::default();
        assert!(store.apply(Change::Upsert {
            origin: "api".into(),
            object: service("a", "10.0.0.1"),
        }));
        assert!(store.apply(Change::Upsert {
            origin: "api".into(),
            object: service("b", "10.0.0.2"),
        }));
        assert!(!store.apply(Change::Upsert {
            origin: "api".into(),
            object: service("a", "10.0.0.1"),
        }));
        assert!(store.apply(Change::Upsert {
            origin: "api".into(),
            object: service("a", "10.0.0.9"),
        }));
        assert_eq!(cluster_ips(&store), ["10.0.0.9", "10.0.0.2"]);
        let key = service("b", "").key();
        assert!(store.apply(Change::Delete {
            origin: "api".into(),
            key: key.clone(),
        }));
        assert!(!store.apply(Change::Delete {
            origin: "api".into(),
            key,
        }));
        assert_eq!(cluster_ips(&store), ["10.0.0.9"]);
    }
}
