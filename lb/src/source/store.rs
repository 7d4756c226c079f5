//! [`ClusterStore`]: the Kubernetes objects the agent knows, grouped by where they came from
//! (a manifest file, the API server), and the [`Change`]s sources deliver into it. Translation
//! reads [`ClusterStore::objects`], so every source feeds the same path.
//!
//! Objects are shared ([`Arc`]) and found by key, so a watch event costs O(log n) among
//! 10 000 Services, and [`ClusterStore::objects`] hands them out without copying. An object
//! that changes gets a new allocation and one that does not keeps its own, even through a
//! re-list: translation caches its work per object by pointer
//! ([`crate::k8s::TranslationCache`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use crate::k8s::{Named, StoredService, StoredSlice};
use k8s_openapi::api::core::v1::{Node, Pod};

use super::journal::{Journal, StoreVersion, Touched};
use crate::k8s::ClusterObjects;

/// One object of a kind the agent reads, shared with the store's readers.
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    /// A Service.
    Service(Arc<StoredService>),
    /// An EndpointSlice (discovery.k8s.io/v1).
    EndpointSlice(Arc<StoredSlice>),
    /// A Node.
    Node(Arc<Node>),
    /// A Pod (for hostPort).
    Pod(Arc<Pod>),
}

/// What identifies an object: kind, namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
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
            namespace: meta.namespace().unwrap_or_default().to_owned(),
            name: meta.name().unwrap_or_default().to_owned(),
        }
    }

    /// Whether `self` and `other` are the same object with the same contents: the same
    /// allocation, or equal ones.
    fn same_as(&self, other: &Object) -> bool {
        match (self, other) {
            (Object::Service(a), Object::Service(b)) => Arc::ptr_eq(a, b) || a == b,
            (Object::EndpointSlice(a), Object::EndpointSlice(b)) => Arc::ptr_eq(a, b) || a == b,
            (Object::Node(a), Object::Node(b)) => Arc::ptr_eq(a, b) || a == b,
            (Object::Pod(a), Object::Pod(b)) => Arc::ptr_eq(a, b) || a == b,
            _ => false,
        }
    }

    /// The address of its allocation, which only an unchanged object keeps.
    fn address(&self) -> usize {
        match self {
            Object::Service(o) => Arc::as_ptr(o) as usize,
            Object::EndpointSlice(o) => Arc::as_ptr(o) as usize,
            Object::Node(o) => Arc::as_ptr(o) as usize,
            Object::Pod(o) => Arc::as_ptr(o) as usize,
        }
    }

    /// Its kind and name as the journal of changes names it.
    fn touched(&self) -> Touched {
        let (kind, meta) = self.kind_and_meta();
        Touched {
            kind,
            namespace: meta.namespace().unwrap_or("default").to_owned(),
            name: meta.name().unwrap_or("<unnamed>").to_owned(),
        }
    }

    fn kind_and_meta(&self) -> (&'static str, &dyn Named) {
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
    origins: BTreeMap<Arc<str>, OriginObjects>,
    /// Every object again, by kind ([`kind_index`]), in the order translation takes them.
    ordered: [Ordered; 4],
    /// Which objects changed, for readers that redo only that.
    journal: Journal,
}

/// Where an object stands in the order translation takes objects of its kind in: by
/// (namespace, name) as error messages name it (a missing namespace is `default`), then, for
/// the same name from several places, by origin name and the origin's order.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct OrderKey {
    namespace: String,
    name: String,
    origin: Arc<str>,
    seq: u64,
}

impl ClusterStore {
    /// Applies `change`; returns whether the store's contents changed.
    pub fn apply(&mut self, change: Change) -> bool {
        match change {
            Change::Replace { origin, objects } => {
                let held = self.origins.get(origin.as_str());
                if held.is_some_and(|held| held.holds_exactly(&objects)) {
                    return false;
                }
                let replaced = OriginObjects::replacing(held, objects);
                let origin = self.origin_name(origin);
                let old = self.origins.remove(&origin).unwrap_or_default();
                for (seq, object) in &old.in_order {
                    unindex(&mut self.ordered, &origin, *seq, object);
                }
                for (seq, object) in &replaced.in_order {
                    index(&mut self.ordered, &origin, *seq, object);
                }
                // Touched: what only one of them holds (a kept object is the same allocation).
                let held: HashSet<usize> = old.in_order.values().map(Object::address).collect();
                let now: HashSet<usize> = replaced.in_order.values().map(Object::address).collect();
                for object in old.in_order.values() {
                    if !now.contains(&object.address()) {
                        self.journal.record(object.touched());
                    }
                }
                for object in replaced.in_order.values() {
                    if !held.contains(&object.address()) {
                        self.journal.record(object.touched());
                    }
                }
                self.origins.insert(origin, replaced);
                true
            }
            Change::Upsert { origin, object } => {
                let origin = self.origin_name(origin);
                let objects = self.origins.entry(Arc::clone(&origin)).or_default();
                let Some(seq) = objects.upsert(object.clone()) else {
                    return false;
                };
                index(&mut self.ordered, &origin, seq, &object);
                self.journal.record(object.touched());
                true
            }
            Change::Delete { origin, key } => {
                let origin = self.origin_name(origin);
                let Some(objects) = self.origins.get_mut(&origin) else {
                    return false;
                };
                let removed = objects.delete(&key);
                for (seq, object) in &removed {
                    unindex(&mut self.ordered, &origin, *seq, object);
                    self.journal.record(object.touched());
                }
                !removed.is_empty()
            }
            Change::Forget { origin } => {
                let Some((origin, objects)) = self.origins.remove_entry(origin.as_str()) else {
                    return false;
                };
                for (seq, object) in &objects.in_order {
                    unindex(&mut self.ordered, &origin, *seq, object);
                    self.journal.record(object.touched());
                }
                true
            }
        }
    }

    /// The version of the store's contents: a reader that remembers it can ask
    /// [`ClusterStore::changed_since`] what changed after.
    pub fn version(&self) -> StoreVersion {
        self.journal.version()
    }

    /// Forgets the changes up to `seen`, which every reader of [`ClusterStore::changed_since`]
    /// has seen (see [`Journal::forget_through`]).
    pub fn forget_changes_through(&mut self, seen: StoreVersion) {
        self.journal.forget_through(seen);
    }

    /// The objects added, changed or deleted after `seen` (one changed twice is named twice);
    /// `None` when the store cannot tell (`seen` is another store's, or too old), and the
    /// reader must look at everything.
    pub fn changed_since(&self, seen: StoreVersion) -> Option<impl Iterator<Item = &Touched>> {
        self.journal.since(seen)
    }

    /// Whether no two objects share a kind, namespace and name (as with the API server; two
    /// manifest files may both hold one). Otherwise the first by origin name wins a name
    /// ([`ClusterStore::objects`]), and a reader following changes by name cannot tell which.
    pub fn names_unique(&self) -> bool {
        self.ordered
            .iter()
            .map(Ordered::shared_names)
            .sum::<usize>()
            == 0
    }

    /// The objects of `kind` named `namespace`/`name` (a missing namespace is `default`), in
    /// translation order.
    pub fn named(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> impl Iterator<Item = &Object> + '_ {
        self.ordered[kind_index(kind)].named(namespace, name)
    }

    /// Every Node, by name, shared with the store.
    pub fn shared_nodes(&self) -> Vec<Arc<Node>> {
        self.ordered[NODES]
            .objects
            .values()
            .filter_map(|o| match o {
                Object::Node(n) => Some(Arc::clone(n)),
                _ => None,
            })
            .collect()
    }

    /// `origin`'s name as the store shares it: the held one when the origin is known.
    fn origin_name(&self, origin: String) -> Arc<str> {
        match self.origins.get_key_value(origin.as_str()) {
            Some((held, _)) => Arc::clone(held),
            None => origin.into(),
        }
    }

    /// The origins that hold objects (or held an empty set).
    pub fn origins(&self) -> impl Iterator<Item = &str> {
        self.origins.keys().map(|o| &**o)
    }

    /// Every EndpointSlice, shared, by namespace and name.
    pub fn endpoint_slices(&self) -> impl Iterator<Item = &Arc<StoredSlice>> {
        self.ordered[ENDPOINT_SLICES]
            .objects
            .values()
            .filter_map(|o| match o {
                Object::EndpointSlice(s) => Some(s),
                _ => None,
            })
    }

    /// Every object, by kind, in the order translation takes them: by namespace and name,
    /// then (the same object from several places) by origin name and the origin's order. The
    /// objects are shared with the store, not copied.
    pub fn objects(&self) -> ClusterObjects {
        let mut out = ClusterObjects::default();
        for object in self.ordered.iter().flat_map(|o| o.objects.values()) {
            match object {
                Object::Service(o) => out.services.push(Arc::clone(o)),
                Object::EndpointSlice(o) => out.endpoint_slices.push(Arc::clone(o)),
                Object::Node(o) => out.nodes.push(Arc::clone(o)),
                Object::Pod(o) => out.pods.push(Arc::clone(o)),
            }
        }
        out
    }
}

/// Puts `object`, number `seq` of `origin`, in its place in `ordered` (replacing what was
/// there: an update keeps its place).
fn index(ordered: &mut [Ordered; 4], origin: &Arc<str>, seq: u64, object: &Object) {
    let (kind, key) = order_key(origin, seq, object);
    ordered[kind].insert(key, object.clone());
}

/// Takes `object`, number `seq` of `origin`, out of `ordered`.
fn unindex(ordered: &mut [Ordered; 4], origin: &Arc<str>, seq: u64, object: &Object) {
    let (kind, key) = order_key(origin, seq, object);
    ordered[kind].remove(&key);
}

/// The objects of one kind in translation order, counting those whose name another object
/// of the kind has too.
#[derive(Clone, Debug, Default)]
struct Ordered {
    objects: BTreeMap<OrderKey, Object>,
    /// Objects beyond the first of their name.
    shared: usize,
}

impl Ordered {
    fn insert(&mut self, key: OrderKey, object: Object) {
        let others = self.named(&key.namespace, &key.name).count();
        if self.objects.insert(key, object).is_none() && others > 0 {
            self.shared += 1;
        }
    }

    fn remove(&mut self, key: &OrderKey) {
        if self.objects.remove(key).is_some()
            && self.named(&key.namespace, &key.name).next().is_some()
        {
            self.shared -= 1;
        }
    }

    fn named(&self, namespace: &str, name: &str) -> impl Iterator<Item = &Object> + '_ {
        let from = OrderKey {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            origin: Arc::from(""),
            seq: 0,
        };
        let (namespace, name) = (from.namespace.clone(), from.name.clone());
        self.objects
            .range(from..)
            .take_while(move |(k, _)| k.namespace == namespace && k.name == name)
            .map(|(_, o)| o)
    }

    fn shared_names(&self) -> usize {
        self.shared
    }
}

const ENDPOINT_SLICES: usize = 1;
const NODES: usize = 2;

/// The index of objects of `kind` in [`ClusterStore::ordered`].
fn kind_index(kind: &str) -> usize {
    match kind {
        "Service" => 0,
        "EndpointSlice" => ENDPOINT_SLICES,
        "Node" => NODES,
        _ => 3,
    }
}

/// The index of `object`'s kind in [`ClusterStore::ordered`], and its place there.
fn order_key(origin: &Arc<str>, seq: u64, object: &Object) -> (usize, OrderKey) {
    let (kind, meta) = object.kind_and_meta();
    let kind = kind_index(kind);
    let key = OrderKey {
        namespace: meta.namespace().unwrap_or("default").to_owned(),
        name: meta.name().unwrap_or("<unnamed>").to_owned(),
        origin: Arc::clone(origin),
        seq,
    };
    (kind, key)
}

/// One origin's objects, in the origin's order and found by key.
///
/// The order is a sequence number given on arrival: an updated object keeps its place, a new
/// one goes last, as in a list. One origin may hold the same key more than once (a manifest
/// file listing one object twice); all are kept, an update changes the first and a deletion
/// removes them all.
#[derive(Clone, Debug, Default)]
struct OriginObjects {
    in_order: BTreeMap<u64, Object>,
    /// The sequence numbers of each key's objects, ascending.
    by_key: HashMap<ObjectKey, Vec<u64>>,
    next: u64,
}

impl OriginObjects {
    /// `objects` as an origin's new contents; of those equal to one `previous` held under the
    /// same key, the held allocation is kept, so only changed objects are new to readers.
    fn replacing(previous: Option<&OriginObjects>, objects: Vec<Object>) -> Self {
        let mut out = OriginObjects::default();
        for object in objects {
            let key = object.key();
            let kept = previous
                .and_then(|p| p.with_key(&key).find(|held| held.same_as(&object)))
                .cloned();
            out.push(key, kept.unwrap_or(object));
        }
        out
    }

    /// Whether it holds `objects`, in this order, and nothing else.
    fn holds_exactly(&self, objects: &[Object]) -> bool {
        self.in_order.len() == objects.len()
            && self
                .in_order
                .values()
                .zip(objects)
                .all(|(held, new)| held.same_as(new))
    }

    /// Adds or updates `object`; returns its sequence number when anything changed.
    fn upsert(&mut self, object: Object) -> Option<u64> {
        let key = object.key();
        let Some(&first) = self.by_key.get(&key).and_then(|seqs| seqs.first()) else {
            return Some(self.push(key, object));
        };
        let held = self
            .in_order
            .get_mut(&first)
            .expect("every indexed key is held");
        if held.same_as(&object) {
            return None;
        }
        *held = object;
        Some(first)
    }

    /// Removes every object under `key`; returns them with their sequence numbers.
    fn delete(&mut self, key: &ObjectKey) -> Vec<(u64, Object)> {
        let Some(seqs) = self.by_key.remove(key) else {
            return Vec::new();
        };
        seqs.into_iter()
            .filter_map(|seq| self.in_order.remove(&seq).map(|o| (seq, o)))
            .collect()
    }

    fn push(&mut self, key: ObjectKey, object: Object) -> u64 {
        let seq = self.next;
        self.by_key.entry(key).or_default().push(seq);
        self.in_order.insert(seq, object);
        self.next += 1;
        seq
    }

    fn with_key<'a>(&'a self, key: &ObjectKey) -> impl Iterator<Item = &'a Object> {
        self.by_key
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|seq| self.in_order.get(seq))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: &str, cluster_ip: &str) -> Object {
        Object::Service(Arc::new(StoredService {
            metadata: crate::k8s::StoredMeta {
                name: Some(name.to_owned()),
                namespace: Some("default".to_owned()),
                deletion_timestamp: None,
            },
            spec: Some(crate::k8s::StoredServiceSpec {
                cluster_ip: Some(cluster_ip.to_owned().into()),
                ..Default::default()
            }),
            ..StoredService::default()
        }))
    }

    fn cluster_ips(store: &ClusterStore) -> Vec<String> {
        store
            .objects()
            .services
            .iter()
            .map(|s| {
                s.spec
                    .as_ref()
                    .unwrap()
                    .cluster_ip
                    .clone()
                    .unwrap()
                    .into_owned()
            })
            .collect()
    }

    /// The names the store says changed since `seen`, in order.
    fn changed(store: &ClusterStore, seen: StoreVersion) -> Vec<String> {
        store
            .changed_since(seen)
            .expect("the store can tell")
            .map(|t| format!("{}/{}", t.kind, t.name))
            .collect()
    }

    #[test]
    fn the_store_names_what_each_change_touched_and_a_relist_only_what_differs() {
        let mut store = ClusterStore::default();
        let start = store.version();
        store.apply(Change::Upsert {
            origin: "api".into(),
            object: service("a", "10.0.0.1"),
        });
        store.apply(Change::Upsert {
            origin: "api".into(),
            object: service("b", "10.0.0.2"),
        });
        assert_eq!(changed(&store, start), ["Service/a", "Service/b"]);
        let listed = store.version();
        // A re-list with a equal (kept), b changed and c new; then a deleted.
        store.apply(Change::Replace {
            origin: "api".into(),
            objects: vec![
                service("a", "10.0.0.1"),
                service("b", "10.0.0.9"),
                service("c", "10.0.0.3"),
            ],
        });
        let mut relisted = changed(&store, listed);
        relisted.sort();
        assert_eq!(relisted, ["Service/b", "Service/b", "Service/c"]);
        let after_relist = store.version();
        store.apply(Change::Delete {
            origin: "api".into(),
            key: service("a", "").key(),
        });
        assert_eq!(changed(&store, after_relist), ["Service/a"]);
        assert!(store
            .changed_since(ClusterStore::default().version())
            .is_none());
    }

    #[test]
    fn names_are_unique_until_two_origins_hold_one() {
        let mut store = ClusterStore::default();
        for origin in ["api/Service", "api/EndpointSlice"] {
            store.apply(Change::Upsert {
                origin: origin.into(),
                object: service("a", "10.0.0.1"),
            });
            // Two kinds in two origins, or one object in two: only the second shares a name.
            if origin == "api/Service" {
                assert!(store.names_unique());
            }
        }
        assert!(!store.names_unique(), "Service a is held twice");
        store.apply(Change::Forget {
            origin: "api/EndpointSlice".into(),
        });
        assert!(store.names_unique());
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

    fn service_ptr(store: &ClusterStore, name: &str) -> *const StoredService {
        let objects = store.objects();
        let found = objects
            .services
            .iter()
            .find(|s| s.metadata.name.as_deref() == Some(name))
            .expect("held");
        Arc::as_ptr(found)
    }

    fn names(store: &ClusterStore) -> Vec<String> {
        store
            .objects()
            .services
            .iter()
            .map(|s| s.metadata.name.clone().unwrap())
            .collect()
    }

    #[test]
    fn objects_come_by_name_then_by_origin_and_the_origins_order() {
        let mut store = ClusterStore::default();
        for (name, ip) in [("c", "10.0.0.3"), ("a", "10.0.0.1"), ("web", "10.0.1.1")] {
            store.apply(Change::Upsert {
                origin: "api".into(),
                object: service(name, ip),
            });
        }
        store.apply(Change::Replace {
            origin: "0.yaml".into(),
            objects: vec![service("web", "10.0.2.1"), service("b", "10.0.0.2")],
        });
        assert!(store.apply(Change::Upsert {
            origin: "api".into(),
            object: service("a", "10.0.0.9"),
        }));
        assert_eq!(names(&store), ["a", "b", "c", "web", "web"]);
        assert_eq!(
            cluster_ips(&store),
            ["10.0.0.9", "10.0.0.2", "10.0.0.3", "10.0.2.1", "10.0.1.1"],
            "the same name in two origins: origins in name order"
        );
        assert!(store.apply(Change::Delete {
            origin: "api".into(),
            key: service("c", "").key(),
        }));
        assert_eq!(names(&store), ["a", "b", "web", "web"]);
    }

    #[test]
    fn an_unchanged_object_keeps_its_allocation_and_a_changed_one_gets_a_new_one() {
        let mut store = ClusterStore::default();
        store.apply(Change::Upsert {
            origin: "api".into(),
            object: service("a", "10.0.0.1"),
        });
        let before = service_ptr(&store, "a");
        assert!(!store.apply(Change::Upsert {
            origin: "api".into(),
            object: service("a", "10.0.0.1"),
        }));
        assert_eq!(service_ptr(&store, "a"), before, "an equal upsert");
        assert!(store.apply(Change::Upsert {
            origin: "api".into(),
            object: service("a", "10.0.0.2"),
        }));
        assert_ne!(service_ptr(&store, "a"), before, "a changed upsert");
    }

    #[test]
    fn a_relist_with_one_change_keeps_every_other_allocation() {
        let list = |changed: &str| -> Vec<Object> {
            (0..100)
                .map(|i| {
                    let ip = if i == 42 { changed } else { "10.0.1.1" };
                    service(&format!("s{i}"), ip)
                })
                .collect()
        };
        let mut store = ClusterStore::default();
        store.apply(Change::Replace {
            origin: "api".into(),
            objects: list("10.0.0.1"),
        });
        let pointers = |store: &ClusterStore| -> BTreeMap<String, *const StoredService> {
            store
                .objects()
                .services
                .iter()
                .map(|s| (s.metadata.name.clone().unwrap(), Arc::as_ptr(s)))
                .collect()
        };
        let before = pointers(&store);
        assert!(
            !store.apply(Change::Replace {
                origin: "api".into(),
                objects: list("10.0.0.1"),
            }),
            "the same list again changes nothing"
        );
        assert!(store.apply(Change::Replace {
            origin: "api".into(),
            objects: list("10.0.0.2"),
        }));
        let after = pointers(&store);
        let new: Vec<&String> = after
            .iter()
            .filter(|(name, at)| before[*name] != **at)
            .map(|(name, _)| name)
            .collect();
        assert_eq!(new, ["s42"], "only the changed one is a new allocation");
        assert_eq!(service_ptr(&store, "s42"), after["s42"]);
        assert_eq!(
            cluster_ips(&store)
                .iter()
                .filter(|ip| *ip == "10.0.0.2")
                .count(),
            1
        );
    }

    #[test]
    fn a_relist_takes_the_new_order_of_one_name_listed_twice() {
        let mut store = ClusterStore::default();
        store.apply(Change::Replace {
            origin: "a.yaml".into(),
            objects: vec![service("web", "10.0.0.1"), service("web", "10.0.0.2")],
        });
        assert!(store.apply(Change::Replace {
            origin: "a.yaml".into(),
            objects: vec![service("web", "10.0.0.2"), service("web", "10.0.0.1")],
        }));
        assert_eq!(cluster_ips(&store), ["10.0.0.2", "10.0.0.1"]);
    }

    #[test]
    fn an_object_listed_twice_in_one_origin_is_held_twice_updated_once_deleted_whole() {
        let mut store = ClusterStore::default();
        store.apply(Change::Replace {
            origin: "a.yaml".into(),
            objects: vec![
                service("web", "10.0.0.1"),
                service("db", "10.0.0.5"),
                service("web", "10.0.0.2"),
            ],
        });
        assert_eq!(cluster_ips(&store), ["10.0.0.5", "10.0.0.1", "10.0.0.2"]);
        assert!(store.apply(Change::Upsert {
            origin: "a.yaml".into(),
            object: service("web", "10.0.0.3"),
        }));
        assert_eq!(cluster_ips(&store), ["10.0.0.5", "10.0.0.3", "10.0.0.2"]);
        assert!(store.apply(Change::Delete {
            origin: "a.yaml".into(),
            key: service("web", "").key(),
        }));
        assert_eq!(cluster_ips(&store), ["10.0.0.5"]);
    }

    #[test]
    fn the_same_object_in_two_origins_is_held_by_each_in_origin_order() {
        let mut store = ClusterStore::default();
        for (origin, ip) in [("b.yaml", "10.0.0.2"), ("a.yaml", "10.0.0.1")] {
            store.apply(Change::Replace {
                origin: origin.into(),
                objects: vec![service("web", ip)],
            });
        }
        assert_eq!(cluster_ips(&store), ["10.0.0.1", "10.0.0.2"]);
        assert!(store.apply(Change::Delete {
            origin: "a.yaml".into(),
            key: service("web", "").key(),
        }));
        assert_eq!(cluster_ips(&store), ["10.0.0.2"]);
        assert!(!store.apply(Change::Delete {
            origin: "c.yaml".into(),
            key: service("web", "").key(),
        }));
    }
}
