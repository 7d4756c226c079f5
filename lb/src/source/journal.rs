//! [`Journal`]: which objects of a [`super::ClusterStore`] changed, numbered, so that a reader
//! that remembers the last number it saw can redo only what changed since (the agent's
//! translation does: one EndpointSlice changed among 10 000 Services costs one Service).

use std::collections::VecDeque;

/// One object that was added, changed or deleted: its kind and its (namespace, name) as
/// translation orders objects (a missing namespace is `default`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Touched {
    /// `Service`, `EndpointSlice`, `Node` or `Pod`.
    pub kind: &'static str,
    /// The namespace.
    pub namespace: String,
    /// The name.
    pub name: String,
}

/// What a reader remembers of a store: which store, and the last change it saw there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreVersion {
    store: u64,
    change: u64,
}

/// Changes numbered from 1, the most recent [`Journal::KEPT`] of them kept.
#[derive(Debug)]
pub struct Journal {
    /// Tells stores apart, so that a version of one means nothing to another (or to a copy).
    store: u64,
    /// The number of the last change.
    last: u64,
    /// Changes after this number are all in `entries`.
    complete_after: u64,
    entries: VecDeque<(u64, Touched)>,
}

impl Journal {
    /// How many changes are kept: more than a burst of watch events between two passes, few
    /// enough to cost little. A reader further behind redoes everything.
    pub const KEPT: usize = 65_536;

    /// An empty journal, for a store of its own.
    pub fn new() -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        static STORES: AtomicU64 = AtomicU64::new(1);
        Journal {
            store: STORES.fetch_add(1, Ordering::Relaxed),
            last: 0,
            complete_after: 0,
            entries: VecDeque::new(),
        }
    }

    /// Notes that `touched` changed.
    pub fn record(&mut self, touched: Touched) {
        self.last += 1;
        if self.entries.len() == Self::KEPT {
            if let Some((dropped, _)) = self.entries.pop_front() {
                self.complete_after = dropped;
            }
        }
        self.entries.push_back((self.last, touched));
    }

    /// Forgets the changes up to `seen`, which every reader has seen (the agent has one, its
    /// translation): the journal then holds only what came since, not the whole first list.
    /// A reader still behind `seen` redoes everything, as one behind more than [`Journal::KEPT`].
    pub fn forget_through(&mut self, seen: StoreVersion) {
        if seen.store != self.store || seen.change > self.last {
            return;
        }
        let upto = self.entries.partition_point(|(n, _)| *n <= seen.change);
        self.entries.drain(..upto);
        self.complete_after = self.complete_after.max(seen.change);
        if self.entries.capacity() > 4 * self.entries.len().max(1024) {
            self.entries.shrink_to_fit();
        }
    }

    /// The version a reader that has seen every change so far remembers.
    pub fn version(&self) -> StoreVersion {
        StoreVersion {
            store: self.store,
            change: self.last,
        }
    }

    /// The objects changed after `seen`, oldest first (an object changed twice is named
    /// twice); `None` when the journal cannot tell: `seen` is of another store, or older
    /// than the changes kept.
    pub fn since(&self, seen: StoreVersion) -> Option<impl Iterator<Item = &Touched>> {
        if seen.store != self.store || seen.change < self.complete_after || seen.change > self.last
        {
            return None;
        }
        let from = self.entries.partition_point(|(n, _)| *n <= seen.change);
        Some(self.entries.range(from..).map(|(_, t)| t))
    }
}

impl Default for Journal {
    fn default() -> Self {
        Self::new()
    }
}

impl Clone for Journal {
    /// A journal for a copy of the store: a store of its own from here, whose readers start
    /// over.
    fn clone(&self) -> Self {
        let mut copy = Journal::new();
        copy.last = self.last;
        copy.complete_after = self.last;
        copy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touched(name: &str) -> Touched {
        Touched {
            kind: "Service",
            namespace: "default".into(),
            name: name.into(),
        }
    }

    fn names(journal: &Journal, seen: StoreVersion) -> Option<Vec<String>> {
        journal
            .since(seen)
            .map(|t| t.map(|t| t.name.clone()).collect())
    }

    #[test]
    fn forgotten_changes_are_redone_by_a_reader_behind_and_kept_for_one_at_the_mark() {
        let mut journal = Journal::new();
        let start = journal.version();
        journal.record(touched("a"));
        let after_a = journal.version();
        journal.record(touched("b"));
        journal.forget_through(after_a);
        assert_eq!(names(&journal, after_a).unwrap(), ["b"]);
        assert_eq!(
            names(&journal, start),
            None,
            "behind the mark: redo everything"
        );
        let other = Journal::new();
        journal.forget_through(other.version());
        assert_eq!(
            names(&journal, after_a).unwrap(),
            ["b"],
            "another store's mark"
        );
        journal.forget_through(journal.version());
        assert_eq!(
            names(&journal, journal.version()).unwrap(),
            Vec::<String>::new()
        );
        assert_eq!(names(&journal, after_a), None);
    }

    #[test]
    fn a_reader_gets_what_changed_after_the_version_it_saw() {
        let mut journal = Journal::new();
        let start = journal.version();
        journal.record(touched("a"));
        let after_a = journal.version();
        journal.record(touched("b"));
        journal.record(touched("a"));
        assert_eq!(names(&journal, start).unwrap(), ["a", "b", "a"]);
        assert_eq!(names(&journal, after_a).unwrap(), ["b", "a"]);
        assert_eq!(
            names(&journal, journal.version()).unwrap(),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_reader_too_far_behind_or_of_another_store_is_told_the_journal_cannot_say() {
        let mut journal = Journal::new();
        let start = journal.version();
        for i in 0..=Journal::KEPT {
            journal.record(touched(&i.to_string()));
        }
        assert!(
            journal.since(start).is_none(),
            "the first change was dropped"
        );
        let recent = journal.version();
        journal.record(touched("x"));
        assert_eq!(names(&journal, recent).unwrap(), ["x"]);
        let copy = journal.clone();
        assert!(copy.since(recent).is_none(), "a copy is another store");
        assert!(Journal::new().since(recent).is_none());
    }
}
