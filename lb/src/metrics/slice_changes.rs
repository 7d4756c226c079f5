//! [`Seen`]: which shared objects changed since the last look, told by allocation. The store
//! gives a changed EndpointSlice a new allocation and keeps an unchanged one's
//! ([`crate::source::ClusterStore`]), so the metrics computed from the slices look only at
//! what changed, not at all 10 000 services on every change.

use std::collections::HashMap;
use std::sync::Arc;

use crate::k8s::StoredSlice;

/// Shared objects as last seen, by the address of their allocation.
#[derive(Clone, Debug)]
pub struct Seen<T> {
    /// Each object (held, so its address is not reused) and the look it was last seen at.
    objects: HashMap<usize, (Arc<T>, u64)>,
    looks: u64,
}

/// The EndpointSlices as last seen.
pub type SeenSlices = Seen<StoredSlice>;

/// What changed among the EndpointSlices.
pub type SliceChanges = Changes<StoredSlice>;

impl<T> Default for Seen<T> {
    fn default() -> Self {
        Seen {
            objects: HashMap::new(),
            looks: 0,
        }
    }
}

/// The objects that appeared and disappeared between two looks. An object that changed is
/// both: its old allocation disappeared and its new one appeared.
#[derive(Clone, Debug)]
pub struct Changes<T> {
    /// Objects not seen at the last look.
    pub appeared: Vec<Arc<T>>,
    /// Objects seen at the last look and not now.
    pub disappeared: Vec<Arc<T>>,
}

impl<T> Default for Changes<T> {
    fn default() -> Self {
        Changes {
            appeared: Vec::new(),
            disappeared: Vec::new(),
        }
    }
}

impl<T> Seen<T> {
    /// Takes the objects as they are now (the same allocation listed twice is one object) and
    /// returns what changed since the last call; the first call finds every object new.
    pub fn look<'a>(&mut self, now: impl IntoIterator<Item = &'a Arc<T>>) -> Changes<T>
    where
        T: 'a,
    {
        self.looks += 1;
        let look = self.looks;
        let mut changes = Changes::default();
        for object in now {
            let seen = self
                .objects
                .entry(Arc::as_ptr(object) as usize)
                .or_insert_with(|| {
                    changes.appeared.push(Arc::clone(object));
                    (Arc::clone(object), look)
                });
            seen.1 = look;
        }
        self.objects.retain(|_, (object, seen)| {
            let still = *seen == look;
            if !still {
                changes.disappeared.push(Arc::clone(object));
            }
            still
        });
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(name: &str) -> Arc<StoredSlice> {
        let mut s = StoredSlice::default();
        s.metadata.name = Some(name.to_owned());
        Arc::new(s)
    }

    fn names(slices: &[Arc<StoredSlice>]) -> Vec<&str> {
        let mut v: Vec<&str> = slices
            .iter()
            .map(|s| s.metadata.name.as_deref().unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn only_new_and_gone_allocations_are_changes() {
        let (a, b, c) = (slice("a"), slice("b"), slice("c"));
        let mut seen = SeenSlices::default();
        let first = seen.look([&a, &b]);
        assert_eq!(names(&first.appeared), ["a", "b"]);
        assert!(first.disappeared.is_empty());
        let again = seen.look([&a, &b, &a]);
        assert!(again.appeared.is_empty() && again.disappeared.is_empty());
        let b2 = slice("b");
        let changed = seen.look([&a, &b2, &c]);
        assert_eq!(names(&changed.appeared), ["b", "c"]);
        assert_eq!(names(&changed.disappeared), ["b"]);
        assert!(Arc::ptr_eq(&changed.disappeared[0], &b));
        let gone = seen.look([&c]);
        assert_eq!(names(&gone.disappeared), ["a", "b"]);
    }
}
