//! [`TranslationCache`]: [`translate`](super::translate) for an agent that translates after
//! every change, redoing only the Services whose objects changed.
//!
//! The store gives a changed object a new allocation and keeps an unchanged one's
//! ([`crate::source::ClusterStore`]), so the cache knows its inputs by pointer: an
//! EndpointSlice is checked once per allocation (its errors and its service kept, not its
//! parsed endpoints, which would double what the store holds), and a Service is translated
//! again, its slices parsed again, only when its own allocation or one of its slices' changed,
//! or when the local node or the options did. Putting the results together (frontend
//! conflicts, the order of errors and warnings) is redone at every whole translation without
//! allocating per unchanged object, so the result is exactly `translate`'s.
//!
//! Unchanged frontends keep their allocation ([`crate::model::DesiredState::shared_services`]),
//! also those of a changed Service that came out equal, so the reconciler skips them by
//! pointer.
//!
//! Walking every object is still work for each of them. The agent translates its store
//! ([`TranslationCache::translate_store`]), which says which objects changed
//! ([`ClusterStore::changed_since`]): when those are EndpointSlices and Services whose
//! frontends stay the same (endpoints scaled, a backend turning terminating), only their
//! Services are translated again and put in the last result in place. What is left growing
//! with the cluster is copying pointers: the desired state's vector (shared with the
//! reconciler, so copied on change) and the result's lists of errors, warnings and health
//! checks; about 0.3 ms at 10 000 services (`cargo xtask bench agent-pass`).

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use super::stored_service::StoredService;

use super::endpoints::{parse_slice, ParsedSlice};
use super::error::TranslateError;
use super::stored_slice::StoredSlice;
use super::translate::{
    sort_key, sorted, translate_one, ClusterObjects, LocalNode, Outcome, ServiceResult, Translation,
};
use super::TranslateOptions;
use crate::model::{LbService, ServiceName};
use crate::source::{ClusterStore, StoreVersion};

/// What the last translation worked out, by object, for the next one.
#[derive(Debug, Default)]
pub struct TranslationCache {
    /// The local node and options of the last translation.
    inputs: Option<(LocalNode, TranslateOptions)>,
    /// Translations done, this one included.
    pass: u64,
    /// The first pass with the current inputs: results from before are not reused (but their
    /// frontends are handed on where they come out equal).
    valid_from: u64,
    /// Each EndpointSlice parsed, by the address of its allocation.
    slices: ByAddress<CachedSlice>,
    /// Each Service's result, by the address of its allocation.
    services: ByAddress<CachedService>,
    /// The addresses of `services`' entries, by service name: where a changed Service's
    /// earlier frontends are.
    by_name: HashMap<ServiceName, Vec<usize>>,
    /// The frontends Pods' hostPorts gave last time.
    pod_frontends: Vec<Arc<LbService>>,
    /// The address of each EndpointSlice's entry in `slices`, by (namespace, name).
    slice_at: HashMap<(String, String), usize>,
    /// Whether `slice_at` names every slice's entry (not after a pass that had two slices of
    /// one name).
    slice_at_complete: bool,
    /// The last result of [`TranslationCache::translate_store`], and the store's version it
    /// is of, when each object of that version had a name of its own.
    last: Option<(StoreVersion, Translation)>,
    /// Whether the last [`TranslationCache::translate_store`] changed only what changed.
    patched: bool,
}

/// One EndpointSlice and what parsing it gave: the service it belongs to when usable.
#[derive(Debug)]
struct CachedSlice {
    slice: Arc<StoredSlice>,
    parsed: Result<Option<Arc<ServiceName>>, Vec<TranslateError>>,
    /// The last pass it was among the objects.
    seen: u64,
}

impl CachedSlice {
    fn parse(slice: &Arc<StoredSlice>, opts: &TranslateOptions, pass: u64) -> Self {
        CachedSlice {
            slice: Arc::clone(slice),
            parsed: parse_slice(slice, opts).map(|p| p.map(|p| Arc::new(p.service))),
            seen: pass,
        }
    }
}

/// One Service, the slices it was translated with, and the result.
#[derive(Debug)]
struct CachedService {
    /// Held so that its address is not reused while the entry is kept.
    _service: Arc<StoredService>,
    slices: Vec<Arc<StoredSlice>>,
    result: ServiceResult,
    /// The pass that worked the result out.
    worked_out: u64,
    /// The last pass it was among the objects.
    seen: u64,
}

impl CachedService {
    /// Whether it was translated with exactly `slices`.
    fn has_slices(&self, slices: &[UsableSlice]) -> bool {
        self.slices.len() == slices.len()
            && self
                .slices
                .iter()
                .zip(slices)
                .all(|(a, b)| Arc::ptr_eq(a, &b.slice))
    }

    /// Its frontend equal to `wanted`, shared.
    fn frontend_like(&self, wanted: &LbService) -> Option<Arc<LbService>> {
        let Outcome::Programmed(services, _) = &self.result.outcome else {
            return None;
        };
        services.iter().find(|s| ***s == *wanted).map(Arc::clone)
    }
}

impl TranslationCache {
    /// An empty cache: the first translation does everything.
    pub fn new() -> Self {
        Self::default()
    }

    /// [`translate`](super::translate)`(objects, node, opts)`, reusing what earlier calls
    /// worked out for the objects that are the same allocations as then.
    pub fn translate(
        &mut self,
        objects: &ClusterObjects,
        node: &LocalNode,
        opts: &TranslateOptions,
    ) -> Translation {
        // Objects from elsewhere than the store: the next `translate_store` cannot patch a
        // result the cache has moved on from.
        self.last = None;
        self.patched = false;
        self.pass += 1;
        let inputs_unchanged = self
            .inputs
            .as_ref()
            .is_some_and(|(n, o)| n == node && o == opts);
        if !inputs_unchanged {
            self.slices.clear();
            self.slice_at.clear();
            self.inputs = Some((node.clone(), opts.clone()));
            self.valid_from = self.pass;
        }
        let mut out = Translation::default();
        let usable = self.parse_slices(objects, opts, &mut out.errors);
        let mut next_slice = 0;
        for svc in sorted(&objects.services, |s| &s.metadata) {
            // Services and slices are both in (namespace, name) order: each service's slices
            // are the run of slices naming it, found by walking both lists together.
            let key = sort_key(&svc.metadata);
            while next_slice < usable.len() && service_of(&usable[next_slice]) < key {
                next_slice += 1;
            }
            let own_end = next_slice
                + usable[next_slice..]
                    .iter()
                    .take_while(|s| service_of(s) == key)
                    .count();
            let own = &usable[next_slice..own_end];
            let at = Arc::as_ptr(svc) as usize;
            let reusable = self
                .services
                .get(&at)
                .is_some_and(|c| c.worked_out >= self.valid_from && c.has_slices(own));
            if !reusable {
                self.translate_service(svc, own, node, opts);
            }
            let entry = self.services.get_mut(&at).expect("worked out just above");
            entry.seen = self.pass;
            out.add_service(&entry.result);
        }
        self.forget_services_gone();
        // Pods with a hostPort are few: translated every time, their frontends shared with
        // the last translation's where equal.
        let services_end = out.state.len();
        out.add_pods(&objects.pods, node, opts, |s| {
            self.pod_frontends
                .iter()
                .find(|p| ***p == *s)
                .map(Arc::clone)
        });
        self.pod_frontends = out
            .state
            .shared_services()
            .skip(services_end)
            .map(Arc::clone)
            .collect();
        out
    }

    /// Parses every EndpointSlice not parsed before and forgets those gone. Returns the usable
    /// ones in the order of their services' (namespace, name), each service's in their own
    /// (namespace, name) order, as `translate` gives them to the service; errors are added to
    /// `errors` in slice order, as `translate` reports them.
    fn parse_slices(
        &mut self,
        objects: &ClusterObjects,
        opts: &TranslateOptions,
        errors: &mut Vec<TranslateError>,
    ) -> Vec<UsableSlice> {
        let pass = self.pass;
        let mut usable = Vec::with_capacity(objects.endpoint_slices.len());
        let slice_at = &mut self.slice_at;
        // Entries are noted as they are made; after a pass with two slices of one name, which
        // one is noted is unknown, so the next pass notes every slice again.
        let note_all = !self.slice_at_complete;
        let mut duplicates = false;
        let mut last_key = None;
        for slice in sorted(&objects.endpoint_slices, |s| &s.metadata) {
            let key = sort_key(&slice.metadata);
            duplicates |= last_key == Some(key);
            last_key = Some(key);
            let at = Arc::as_ptr(slice) as usize;
            if note_all || !self.slices.contains_key(&at) {
                slice_at.insert(slice_key(slice), at);
            }
            let entry = self
                .slices
                .entry(at)
                .or_insert_with(|| CachedSlice::parse(slice, opts, pass));
            entry.seen = pass;
            match &entry.parsed {
                Ok(Some(service)) => usable.push(UsableSlice {
                    service: Arc::clone(service),
                    slice: Arc::clone(&entry.slice),
                }),
                Ok(None) => {}
                Err(e) => errors.extend(e.iter().cloned()),
            }
        }
        self.slices.retain(|at, s| {
            if s.seen != pass {
                forget_slice_at(slice_at, &s.slice, *at);
            }
            s.seen == pass
        });
        self.slice_at_complete = !duplicates;
        // Stable: a service's slices stay in their own order.
        usable.sort_by(|a, b| service_of(a).cmp(&service_of(b)));
        usable
    }

    /// Translates `svc` with its slices `own` into its entry, handing on the frontends of the
    /// earlier entries of its name that come out equal.
    fn translate_service(
        &mut self,
        svc: &Arc<StoredService>,
        own: &[UsableSlice],
        node: &LocalNode,
        opts: &TranslateOptions,
    ) {
        let (namespace, name) = sort_key(&svc.metadata);
        let name = ServiceName {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        };
        // Usable when checked, and parsing depends on nothing else than the slice and the
        // options, which have not changed since.
        let parsed: Vec<ParsedSlice> = own
            .iter()
            .filter_map(|s| parse_slice(&s.slice, opts).ok().flatten())
            .collect();
        let parsed: Vec<&ParsedSlice> = parsed.iter().collect();
        let earlier: Vec<&CachedService> = self
            .by_name
            .get(&name)
            .into_iter()
            .flatten()
            .filter_map(|at| self.services.get(at))
            .collect();
        let result = translate_one(svc, name.clone(), &parsed, node, opts, |s| {
            earlier.iter().find_map(|c| c.frontend_like(s))
        });
        let at = Arc::as_ptr(svc) as usize;
        let entry = CachedService {
            _service: Arc::clone(svc),
            slices: own.iter().map(|s| Arc::clone(&s.slice)).collect(),
            result,
            worked_out: self.pass,
            seen: self.pass,
        };
        if self.services.insert(at, entry).is_none() {
            self.by_name.entry(name).or_default().push(at);
        }
    }

    /// Drops the entries of the Services that were not among this pass's objects.
    fn forget_services_gone(&mut self) {
        let pass = self.pass;
        let by_name = &mut self.by_name;
        self.services.retain(|at, entry| {
            if entry.seen == pass {
                return true;
            }
            if let Some(addresses) = by_name.get_mut(&entry.result.name) {
                addresses.retain(|a| a != at);
                if addresses.is_empty() {
                    by_name.remove(&entry.result.name);
                }
            }
            false
        });
    }
}

impl TranslationCache {
    /// [`translate`](super::translate) of `store`'s objects. After a first call, and as long
    /// as the node and options stay and the store can say what changed
    /// ([`ClusterStore::changed_since`]), the last result is changed where the changed objects'
    /// Services are, when they keep their frontends (new backends, the common change): the
    /// cost is that of those Services, not of the cluster. Anything else (a Service added or
    /// deleted, a frontend that comes or goes, an error that appears or goes, a Pod) is
    /// translated through [`TranslationCache::translate`].
    pub fn translate_store(
        &mut self,
        store: &ClusterStore,
        node: &LocalNode,
        opts: &TranslateOptions,
    ) -> Translation {
        if let Some(patched) = self.patch(store, node, opts) {
            self.patched = true;
            return patched;
        }
        self.patched = false;
        let out = self.translate(&store.objects(), node, opts);
        // Patched later only from a result in which each name was one object, so that a name
        // changed is known to be the one object the cache has under it.
        self.last = store.names_unique().then(|| (store.version(), out.clone()));
        out
    }

    /// Whether the last [`TranslationCache::translate_store`] redid only the changed Services.
    pub fn patched(&self) -> bool {
        self.patched
    }

    /// The last result with the changed objects' Services redone, when that is all that
    /// changed: see [`TranslationCache::translate_store`]. `None`, with nothing changed, when
    /// the whole translation must run.
    fn patch(
        &mut self,
        store: &ClusterStore,
        node: &LocalNode,
        opts: &TranslateOptions,
    ) -> Option<Translation> {
        let (seen, _) = self.last.as_ref()?;
        let inputs_unchanged = self
            .inputs
            .as_ref()
            .is_some_and(|(n, o)| n == node && o == opts);
        if !inputs_unchanged || !store.names_unique() {
            return None;
        }
        let mut services: BTreeSet<ServiceName> = BTreeSet::new();
        let mut slice_keys: BTreeSet<(&str, &str)> = BTreeSet::new();
        for touched in store.changed_since(*seen)? {
            let key = (touched.namespace.as_str(), touched.name.as_str());
            match touched.kind {
                "Service" => {
                    services.insert(ServiceName {
                        namespace: key.0.to_owned(),
                        name: key.1.to_owned(),
                    });
                }
                "EndpointSlice" => {
                    slice_keys.insert(key);
                }
                // The local node is among the inputs; other Nodes change nothing here.
                "Node" => {}
                _ => return None,
            }
        }
        // What becomes of each changed slice, and the services it belonged and belongs to.
        let mut slices: Vec<SliceChange> = Vec::new();
        for &(namespace, name) in &slice_keys {
            let old_at = self
                .slice_at
                .get(&(namespace.to_owned(), name.to_owned()))
                .copied();
            if let Some(old) = old_at.and_then(|at| self.slices.get(&at)) {
                // A slice with errors puts them first in the result: not patched.
                if let Some(owner) = old.parsed.as_ref().ok()? {
                    services.insert((**owner).clone());
                }
            }
            let now = match store.named("EndpointSlice", namespace, name).next() {
                Some(crate::source::Object::EndpointSlice(slice)) => {
                    let at = Arc::as_ptr(slice) as usize;
                    let cached = match self.slices.get(&at) {
                        Some(held) => CachedSlice {
                            slice: Arc::clone(&held.slice),
                            parsed: held.parsed.clone(),
                            seen: self.pass + 1,
                        },
                        None => CachedSlice::parse(slice, opts, self.pass + 1),
                    };
                    if let Some(owner) = cached.parsed.as_ref().ok()?.as_ref() {
                        services.insert((**owner).clone());
                    }
                    Some((at, cached))
                }
                Some(_) => return None,
                None => None,
            };
            slices.push(SliceChange {
                key: (namespace, name),
                old_at,
                now,
            });
        }
        let (_, last) = self.last.as_ref()?;
        let mut redone: Vec<RedoneService> = Vec::new();
        for name in services {
            let svc = match store.named("Service", &name.namespace, &name.name).next() {
                Some(crate::source::Object::Service(svc)) => Some(svc),
                Some(_) => return None,
                None => None,
            };
            let old = match self.by_name.get(&name).map(Vec::as_slice) {
                None | Some([]) => None,
                Some([at]) => Some((*at, self.services.get(at)?)),
                Some(_) => return None,
            };
            let (svc, (old_at, old)) = match (svc, old) {
                (None, None) => continue,
                (Some(svc), Some(old)) => (svc, old),
                // A Service that comes or goes moves every frontend after it.
                _ => return None,
            };
            let mut own: Vec<Arc<StoredSlice>> = old
                .slices
                .iter()
                .filter(|s| !slice_keys.contains(&sort_key(&s.metadata)))
                .cloned()
                .collect();
            own.extend(slices.iter().filter_map(|c| {
                let (_, cached) = c.now.as_ref()?;
                let owner = cached.parsed.as_ref().ok()?.as_ref()?;
                (**owner == name).then(|| Arc::clone(&cached.slice))
            }));
            own.sort_by(|a, b| sort_key(&a.metadata).cmp(&sort_key(&b.metadata)));
            let parsed: Vec<ParsedSlice> = own
                .iter()
                .filter_map(|s| parse_slice(s, opts).ok().flatten())
                .collect();
            let parsed: Vec<&ParsedSlice> = parsed.iter().collect();
            let result = translate_one(svc, name, &parsed, node, opts, |s| old.frontend_like(s));
            if !same_frontends(&old.result, &result, &last.state) {
                return None;
            }
            redone.push(RedoneService {
                old_at,
                service: Arc::clone(svc),
                slices: own,
                result,
            });
        }
        // Everything worked out: from here the cache and the last result change.
        self.pass += 1;
        let pass = self.pass;
        let (_, mut out) = self.last.take()?;
        for change in slices {
            if let Some(old_at) = change.old_at {
                if change.now.as_ref().is_none_or(|(at, _)| *at != old_at) {
                    self.slices.remove(&old_at);
                }
            }
            let key = (change.key.0.to_owned(), change.key.1.to_owned());
            match change.now {
                Some((at, cached)) => {
                    self.slice_at.insert(key, at);
                    self.slices.insert(at, cached);
                }
                None => {
                    self.slice_at.remove(&key);
                }
            }
        }
        for redone in redone {
            let name = redone.result.name.clone();
            if let Outcome::Programmed(frontends, check) = &redone.result.outcome {
                for frontend in frontends {
                    if !out
                        .state
                        .get_shared(&frontend.frontend)
                        .is_some_and(|held| Arc::ptr_eq(held, frontend))
                    {
                        out.state.replace_shared(Arc::clone(frontend));
                    }
                }
                match check {
                    Some(check) => out.health_checks.insert(name.clone(), *check),
                    None => out.health_checks.remove(&name),
                };
            }
            let at = Arc::as_ptr(&redone.service) as usize;
            self.services.remove(&redone.old_at);
            self.services.insert(
                at,
                CachedService {
                    _service: redone.service,
                    slices: redone.slices,
                    result: redone.result,
                    worked_out: pass,
                    seen: pass,
                },
            );
            self.by_name.insert(name, vec![at]);
        }
        self.last = Some((store.version(), out.clone()));
        Some(out)
    }
}

/// One EndpointSlice that changed: its entry before, and the one it has now (none: deleted).
struct SliceChange<'a> {
    key: (&'a str, &'a str),
    old_at: Option<usize>,
    now: Option<(usize, CachedSlice)>,
}

/// One Service translated again by [`TranslationCache::patch`], before it goes in the cache.
struct RedoneService {
    old_at: usize,
    service: Arc<StoredService>,
    slices: Vec<Arc<StoredSlice>>,
    result: ServiceResult,
}

/// Whether `new` can take `old`'s place in a result that holds `old` (`state`) without moving
/// anything else: the same frontends (address, scope, type) in the same order, all of them
/// `old`'s in `state` (none lost to another object), the same warnings; or the same reason to
/// be ignored or the same errors.
fn same_frontends(
    old: &ServiceResult,
    new: &ServiceResult,
    state: &crate::model::DesiredState,
) -> bool {
    if old.warnings != new.warnings {
        return false;
    }
    match (&old.outcome, &new.outcome) {
        (Outcome::Programmed(old, _), Outcome::Programmed(new, _)) => {
            old.len() == new.len()
                && old.iter().zip(new).all(|(old, new)| {
                    old.frontend == new.frontend
                        && state
                            .get_shared(&old.frontend)
                            .is_some_and(|held| Arc::ptr_eq(held, old))
                })
        }
        (Outcome::Ignored(old), Outcome::Ignored(new)) => old == new,
        (Outcome::Failed(old), Outcome::Failed(new)) => old == new,
        _ => false,
    }
}

/// How [`TranslationCache::slice_at`] names an EndpointSlice.
fn slice_key(slice: &StoredSlice) -> (String, String) {
    let (namespace, name) = sort_key(&slice.metadata);
    (namespace.to_owned(), name.to_owned())
}

/// Forgets that `slice`'s entry is at `at`, unless another allocation of its name is there.
fn forget_slice_at(
    slice_at: &mut HashMap<(String, String), usize>,
    slice: &StoredSlice,
    at: usize,
) {
    let key = slice_key(slice);
    if slice_at.get(&key) == Some(&at) {
        slice_at.remove(&key);
    }
}

/// An EndpointSlice translation uses, and the service it belongs to.
#[derive(Debug)]
struct UsableSlice {
    service: Arc<ServiceName>,
    slice: Arc<StoredSlice>,
}

/// The (namespace, name) of the service a usable slice belongs to, as [`sort_key`] gives a
/// Service's.
fn service_of(slice: &UsableSlice) -> (&str, &str) {
    (&slice.service.namespace, &slice.service.name)
}

/// A map keyed by the address of an allocation.
type ByAddress<V> = HashMap<usize, V, BuildHasherDefault<AddressHasher>>;

/// Hashes an allocation's address: distinct already, they need spreading only (their low bits
/// are zero from alignment), not a keyed hash.
#[derive(Clone, Copy, Debug, Default)]
struct AddressHasher(u64);

impl Hasher for AddressHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(29);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::translate::translate;
    use crate::source::{Change, Object};
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use serde_json::json;

    fn node() -> LocalNode {
        LocalNode::without_devices("n1")
    }

    fn service(i: u8) -> Change {
        let object = serde_json::from_value(json!({
            "metadata": {"name": format!("svc-{i}"), "namespace": "default"},
            "spec": {"clusterIP": format!("10.96.0.{i}"), "ports": [{"port": 80}]}
        }))
        .unwrap();
        Change::Upsert {
            origin: "api".into(),
            object: Object::Service(Arc::new(object)),
        }
    }

    fn slice(i: u8, backends: u8) -> Change {
        let endpoints: Vec<_> = (1..=backends)
            .map(|b| json!({"addresses": [format!("10.244.{i}.{b}")], "conditions": {"ready": true}}))
            .collect();
        let object: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": format!("svc-{i}-x"), "namespace": "default",
                         "labels": {"kubernetes.io/service-name": format!("svc-{i}")}},
            "addressType": "IPv4", "ports": [{"port": 8080}], "endpoints": endpoints
        }))
        .unwrap();
        Change::Upsert {
            origin: "api".into(),
            object: Object::EndpointSlice(Arc::new(object.into())),
        }
    }

    /// The number of backends each frontend has, in order.
    fn backends(t: &Translation) -> Vec<usize> {
        t.state.services().map(|s| s.backends.len()).collect()
    }

    #[test]
    fn an_endpoint_change_redoes_its_service_only_and_a_new_service_everything() {
        let mut store = ClusterStore::default();
        for i in 1..=3 {
            store.apply(service(i));
            store.apply(slice(i, 2));
        }
        let opts = TranslateOptions::default();
        let mut cache = TranslationCache::new();
        let first = cache.translate_store(&store, &node(), &opts);
        assert!(!cache.patched(), "the first translation is whole");
        assert_eq!(backends(&first), [2, 2, 2]);

        store.apply(slice(2, 3));
        let second = cache.translate_store(&store, &node(), &opts);
        assert!(cache.patched(), "one slice changed: its service redone");
        assert_eq!(backends(&second), [2, 3, 2]);
        assert_eq!(
            second.state,
            translate(&store.objects(), &node(), &opts).state
        );
        let same: Vec<bool> = first
            .state
            .shared_services()
            .zip(second.state.shared_services())
            .map(|(a, b)| Arc::ptr_eq(a, b))
            .collect();
        assert_eq!(same, [true, false, true], "the others are handed on");

        store.apply(service(0));
        let third = cache.translate_store(&store, &node(), &opts);
        assert!(!cache.patched(), "a new service moves the ones after it");
        assert_eq!(backends(&third), [0, 2, 3, 2]);

        let unchanged = cache.translate_store(&store, &node(), &opts);
        assert!(cache.patched(), "nothing changed: nothing redone");
        assert!(unchanged.state.same_as(&third.state));

        // Objects from elsewhere in between: the cache moved on, the next pass is whole.
        cache.translate(&ClusterObjects::default(), &node(), &opts);
        store.apply(slice(3, 1));
        let after = cache.translate_store(&store, &node(), &opts);
        assert!(!cache.patched(), "not patched over a result the cache left");
        assert_eq!(backends(&after), [0, 2, 3, 1]);
    }
}
