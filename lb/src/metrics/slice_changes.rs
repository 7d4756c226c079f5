//! [`SeenSlices`]: which EndpointSlices changed since the last look, told by allocation. The
//! store gives a changed slice a new allocation and keeps an unchanged one's
//! ([`crate::source::ClusterStore`]), so the metrics computed from slice changes look only at
//! the slices that changed, not at all 10 000 on every change.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::discovery::v1::EndpointSlice;

/// The EndpointSlices as last seen, by the address of their allocation.
#[derive(Clone, Debug, Default)]
pub struct SeenSlices {
    /// Each slice (held, so its address is not reused) and the look it was last seen at.
    slices: HashMap<usize, (Arc<EndpointSlice>, u64)>,
    looks: u64,
}

/// The slices that appeared and disappeared between two looks. A slice that changed is both:
/// its old allocation disappeared and its new one appeared.
#[derive(Clone, Debug, Default)]
pub struct SliceChanges {
    /// Slices not seen at the last look.
    pub appeared: Vec<Arc<EndpointSlice>>,
    /// Slices seen at the last look and not now.
    pub disappeared: Vec<Arc<EndpointSlice>>,
}

impl SeenSlices {
    /// Takes the slices as they are now (the same allocation listed twice is one slice) and
    /// returns what changed since the last call; the first call finds every slice new.
    pub fn look<'a>(
        &mut self,
        now: impl IntoIterator<Item = &'a Arc<EndpointSlice>>,
    ) -> SliceChanges {
        self.looks += 1;
        let look = self.looks;
        let mut changes = SliceChanges::default();
        for slice in now {
            let seen = self
                .slices
                .entry(Arc::as_ptr(slice) as usize)
                .or_insert_with(|| {
                    changes.appeared.push(Arc::clone(slice));
                    (Arc::clone(slice), look)
                });
            seen.1 = look;
        }
        self.slices.retain(|_, (slice, seen)| {
            let still = *seen == look;
            if !still {
                changes.disappeared.push(Arc::clone(slice));
            }
            still
        });
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice(name: &str) -> Arc<EndpointSlice> {
        let mut s = EndpointSlice::default();
        s.metadata.name = Some(name.to_owned());
        Arc::new(s)
    }

    fn names(slices: &[Arc<EndpointSlice>]) -> Vec<&str> {
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
