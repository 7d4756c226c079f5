//! [`TranslationCache`]: [`translate`](super::translate) for an agent that translates after
//! every change, redoing only the Services whose objects changed.
//!
//! The store gives a changed object a new allocation and keeps an unchanged one's
//! ([`crate::source::ClusterStore`]), so the cache knows its inputs by pointer: an
//! EndpointSlice is checked once per allocation (its errors and its service kept, not its
//! parsed endpoints, which would double what the store holds), and a Service is translated
//! again, its slices parsed again, only when its own allocation or one of its slices' changed,
//! or when the local node or the options did. Putting the results together (frontend conflicts, the order of errors and warnings) is
//! redone every time without allocating per unchanged object, so the result is exactly
//! `translate`'s.
//!
//! Unchanged frontends keep their allocation ([`crate::model::DesiredState::shared_services`]),
//! also those of a changed Service that came out equal, so the reconciler skips them by
//! pointer.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::endpoints::{parse_slice, ParsedSlice};
use super::error::TranslateError;
use super::translate::{
    sort_key, sorted, translate_one, ClusterObjects, LocalNode, Outcome, ServiceResult, Translation,
};
use super::TranslateOptions;
use crate::model::{LbService, ServiceName};

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
}

/// One EndpointSlice and what parsing it gave: the service it belongs to when usable.
#[derive(Debug)]
struct CachedSlice {
    slice: Arc<EndpointSlice>,
    parsed: Result<Option<Arc<ServiceName>>, Vec<TranslateError>>,
    /// The last pass it was among the objects.
    seen: u64,
}

/// One Service, the slices it was translated with, and the result.
#[derive(Debug)]
struct CachedService {
    /// Held so that its address is not reused while the entry is kept.
    _service: Arc<Service>,
    slices: Vec<Arc<EndpointSlice>>,
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
        self.pass += 1;
        let inputs_unchanged = self
            .inputs
            .as_ref()
            .is_some_and(|(n, o)| n == node && o == opts);
        if !inputs_unchanged {
            self.slices.clear();
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
        for slice in sorted(&objects.endpoint_slices, |s| &s.metadata) {
            let entry = self
                .slices
                .entry(Arc::as_ptr(slice) as usize)
                .or_insert_with(|| CachedSlice {
                    slice: Arc::clone(slice),
                    parsed: parse_slice(slice, opts).map(|p| p.map(|p| Arc::new(p.service))),
                    seen: pass,
                });
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
        self.slices.retain(|_, s| s.seen == pass);
        // Stable: a service's slices stay in their own order.
        usable.sort_by(|a, b| service_of(a).cmp(&service_of(b)));
        usable
    }

    /// Translates `svc` with its slices `own` into its entry, handing on the frontends of the
    /// earlier entries of its name that come out equal.
    fn translate_service(
        &mut self,
        svc: &Arc<Service>,
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

/// An EndpointSlice translation uses, and the service it belongs to.
#[derive(Debug)]
struct UsableSlice {
    service: Arc<ServiceName>,
    slice: Arc<EndpointSlice>,
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
