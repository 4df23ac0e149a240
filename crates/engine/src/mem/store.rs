//! The versioned map both in-memory engines are built on.
//!
//! Per column family a `BTreeMap` from key to the key's versions. Every write batch gets the
//! next sequence number and stamps each of its changes with it; a read at sequence `s` sees,
//! per key, the newest version stamped `<= s` (a tombstone hides the key). Old versions are
//! pruned against a *horizon* the owner supplies (the oldest sequence anyone may still read
//! at): per key the newest version at or below the horizon is kept, unless it is a tombstone,
//! and everything older goes.

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::keys::KeySpan;

/// One version of a key: the sequence number of the batch that wrote it and the value, or
/// `None` for a deletion.
type Version = (u64, Option<Vec<u8>>);

/// A change, applied in batch order under one sequence number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// Sets `key` in column family slot `cf`.
    Put { cf: usize, key: Vec<u8>, value: Vec<u8> },
    /// Removes `key` from column family slot `cf`.
    Delete { cf: usize, key: Vec<u8> },
    /// Removes every key of `span` from column family slot `cf`.
    DeleteSpan { cf: usize, span: KeySpan },
}

impl Op {
    /// Approximate encoded size (keys and values plus a small header).
    pub(crate) fn size_bytes(&self) -> usize {
        const HEADER: usize = 8;
        HEADER
            + match self {
                Self::Put { key, value, .. } => key.len() + value.len(),
                Self::Delete { key, .. } => key.len(),
                Self::DeleteSpan { span, .. } => span.start.len() + span.end.len(),
            }
    }
}

/// The versioned key-value maps of one engine instance.
#[derive(Debug)]
pub(crate) struct VersionedStore {
    cfs: Vec<BTreeMap<Vec<u8>, Vec<Version>>>,
    // The last sequence number handed out.
    seq: u64,
    // Invariant: the total number of versions held over all keys of all column families.
    versions: usize,
}

impl VersionedStore {
    /// An empty store with `cfs` column families.
    pub(crate) fn new(cfs: usize) -> Self {
        Self { cfs: (0..cfs).map(|_| BTreeMap::new()).collect(), seq: 0, versions: 0 }
    }

    /// The last sequence number handed out: reads at it see every write so far.
    pub(crate) fn seq(&self) -> u64 {
        self.seq
    }

    /// Total versions held (for deciding when to sweep).
    pub(crate) fn versions(&self) -> usize {
        self.versions
    }

    /// Applies `ops` in order as one batch with a new sequence number and returns it.
    /// `horizon` must be below the new sequence number.
    pub(crate) fn apply(&mut self, ops: &[Op], horizon: u64) -> u64 {
        self.seq += 1;
        let seq = self.seq;
        for op in ops {
            match op {
                Op::Put { cf, key, value } => self.set(*cf, key, Some(value.clone()), seq, horizon),
                Op::Delete { cf, key } => self.set(*cf, key, None, seq, horizon),
                Op::DeleteSpan { cf, span } => {
                    let doomed: Vec<Vec<u8>> = self
                        .visible(*cf, span, Bound::Unbounded, Bound::Unbounded, seq)
                        .map(|(key, _)| key.to_vec())
                        .collect();
                    for key in doomed {
                        self.set(*cf, &key, None, seq, horizon);
                    }
                }
            }
        }
        seq
    }

    fn set(&mut self, cf: usize, key: &[u8], value: Option<Vec<u8>>, seq: u64, horizon: u64) {
        let Some(map) = self.cfs.get_mut(cf) else { return };
        match map.get_mut(key) {
            Some(versions) => {
                match versions.last_mut() {
                    Some(last) if last.0 == seq => last.1 = value,
                    _ => {
                        versions.push((seq, value));
                        self.versions += 1;
                    }
                }
                self.versions -= prune_versions(versions, horizon);
                if versions.is_empty() {
                    map.remove(key);
                }
            }
            // Deleting a key that has no version at all changes nothing.
            None if value.is_none() => {}
            None => {
                map.insert(key.to_vec(), vec![(seq, value)]);
                self.versions += 1;
            }
        }
    }

    /// The value of `key` in `cf` as of `seq`.
    pub(crate) fn get(&self, cf: usize, key: &[u8], seq: u64) -> Option<&[u8]> {
        self.cfs.get(cf)?.get(key).and_then(|versions| visible_value(versions, seq))
    }

    /// The keys of `span` in `cf` visible at `seq`, further restricted to `lower..upper`, in
    /// key order (walk from either end).
    pub(crate) fn visible<'s>(
        &'s self,
        cf: usize,
        span: &'s KeySpan,
        lower: Bound<&'s [u8]>,
        upper: Bound<&'s [u8]>,
        seq: u64,
    ) -> impl DoubleEndedIterator<Item = (&'s [u8], &'s [u8])> + 's {
        let lower = max_lower(Bound::Included(span.start.as_slice()), lower);
        let upper = match span.end_bound() {
            Some(end) => min_upper(Bound::Excluded(end), upper),
            None => upper,
        };
        let range = match self.cfs.get(cf) {
            Some(map) if bounds_nonempty(lower, upper) => {
                Some(map.range::<[u8], _>((lower, upper)))
            }
            _ => None,
        };
        range.into_iter().flatten().filter_map(move |(key, versions)| {
            visible_value(versions, seq).map(|value| (key.as_slice(), value))
        })
    }

    /// Prunes every key against `horizon`.
    pub(crate) fn prune_all(&mut self, horizon: u64) {
        let mut removed = 0;
        for map in &mut self.cfs {
            map.retain(|_, versions| {
                removed += prune_versions(versions, horizon);
                !versions.is_empty()
            });
        }
        self.versions -= removed;
    }

    /// A new store holding exactly what is visible at `seq`, as one version per key, with
    /// `seq` as its last sequence number.
    pub(crate) fn image_at(&self, seq: u64) -> Self {
        let mut image = Self::new(self.cfs.len());
        image.seq = seq;
        for (map, image_map) in self.cfs.iter().zip(&mut image.cfs) {
            for (key, versions) in map {
                if let Some(value) = visible_value(versions, seq) {
                    image_map.insert(key.clone(), vec![(0, Some(value.to_vec()))]);
                    image.versions += 1;
                }
            }
        }
        image
    }
}

fn visible_value(versions: &[Version], seq: u64) -> Option<&[u8]> {
    versions
        .iter()
        .rev()
        .find(|(version, _)| *version <= seq)
        .and_then(|(_, value)| value.as_deref())
}

/// Drops the versions no read at or after `horizon` can see; returns how many went.
fn prune_versions(versions: &mut Vec<Version>, horizon: u64) -> usize {
    let Some(newest_below) = versions.iter().rposition(|(seq, _)| *seq <= horizon) else {
        return 0;
    };
    // A tombstone with nothing older left to hide is itself unneeded.
    let cut = if versions[newest_below].1.is_none() { newest_below + 1 } else { newest_below };
    versions.drain(..cut);
    cut
}

/// The tighter (larger) of two lower bounds.
fn max_lower<'k>(a: Bound<&'k [u8]>, b: Bound<&'k [u8]>) -> Bound<&'k [u8]> {
    match (a, b) {
        (Bound::Unbounded, other) | (other, Bound::Unbounded) => other,
        (Bound::Included(x) | Bound::Excluded(x), Bound::Included(y) | Bound::Excluded(y))
            if x != y =>
        {
            if x > y {
                a
            } else {
                b
            }
        }
        (Bound::Excluded(_), _) => a,
        _ => b,
    }
}

/// The tighter (smaller) of two upper bounds.
fn min_upper<'k>(a: Bound<&'k [u8]>, b: Bound<&'k [u8]>) -> Bound<&'k [u8]> {
    match (a, b) {
        (Bound::Unbounded, other) | (other, Bound::Unbounded) => other,
        (Bound::Included(x) | Bound::Excluded(x), Bound::Included(y) | Bound::Excluded(y))
            if x != y =>
        {
            if x < y {
                a
            } else {
                b
            }
        }
        (Bound::Excluded(_), _) => a,
        _ => b,
    }
}

/// Whether `(lower, upper)` may hold a key; `BTreeMap::range` panics on inverted bounds.
fn bounds_nonempty(lower: Bound<&[u8]>, upper: Bound<&[u8]>) -> bool {
    match (lower, upper) {
        (Bound::Included(x), Bound::Included(y)) => x <= y,
        (Bound::Included(x) | Bound::Excluded(x), Bound::Included(y) | Bound::Excluded(y)) => x < y,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &[u8], value: &[u8]) -> Op {
        Op::Put { cf: 0, key: key.to_vec(), value: value.to_vec() }
    }

    fn keys_at(store: &VersionedStore, seq: u64) -> Vec<Vec<u8>> {
        let span = KeySpan::all();
        store
            .visible(0, &span, Bound::Unbounded, Bound::Unbounded, seq)
            .map(|(k, _)| k.to_vec())
            .collect()
    }

    #[test]
    fn reads_at_a_sequence_see_that_batch_and_older() {
        let mut store = VersionedStore::new(1);
        let s1 = store.apply(&[put(b"a", b"1"), put(b"b", b"1")], 0);
        let s2 = store.apply(&[put(b"a", b"2"), Op::Delete { cf: 0, key: b"b".to_vec() }], 0);
        assert_eq!(store.get(0, b"a", s1), Some(&b"1"[..]));
        assert_eq!(store.get(0, b"a", s2), Some(&b"2"[..]));
        assert_eq!(store.get(0, b"b", s2), None);
        assert_eq!(keys_at(&store, s1), vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(keys_at(&store, s2), vec![b"a".to_vec()]);
        assert_eq!(keys_at(&store, 0), Vec::<Vec<u8>>::new());
    }

    #[test]
    fn ops_in_a_batch_apply_in_order() {
        let mut store = VersionedStore::new(1);
        let span = KeySpan::new(b"a".to_vec(), b"c".to_vec());
        let seq = store.apply(
            &[put(b"a", b"1"), put(b"b", b"1"), Op::DeleteSpan { cf: 0, span }, put(b"b", b"2")],
            0,
        );
        assert_eq!(store.get(0, b"a", seq), None);
        assert_eq!(store.get(0, b"b", seq), Some(&b"2"[..]));
    }

    #[test]
    fn pruning_keeps_what_reads_at_or_after_the_horizon_need() {
        let mut store = VersionedStore::new(1);
        for i in 0..10u8 {
            store.apply(&[put(b"k", &[i])], 0);
        }
        store.apply(&[Op::Delete { cf: 0, key: b"gone".to_vec() }], 0);
        assert_eq!(store.versions(), 10);
        store.prune_all(5);
        assert_eq!(store.versions(), 6);
        assert_eq!(store.get(0, b"k", 5), Some(&[4u8][..]));
        assert_eq!(store.get(0, b"k", 7), Some(&[6u8][..]));
        store.apply(&[Op::Delete { cf: 0, key: b"k".to_vec() }], 11);
        store.prune_all(12);
        assert_eq!(store.versions(), 0);
        assert_eq!(keys_at(&store, 12), Vec::<Vec<u8>>::new());
    }

    #[test]
    fn bounds_intersect_and_never_panic() {
        let mut store = VersionedStore::new(1);
        store.apply(&[put(b"a", b""), put(b"b", b""), put(b"c", b"")], 0);
        let span = KeySpan::new(b"b".to_vec(), b"a".to_vec());
        assert_eq!(store.visible(0, &span, Bound::Unbounded, Bound::Unbounded, 1).count(), 0);
        let span = KeySpan::new(b"a".to_vec(), Vec::new());
        let from_b: Vec<_> =
            store.visible(0, &span, Bound::Excluded(b"a"), Bound::Excluded(b"c"), 1).collect();
        assert_eq!(from_b, vec![(&b"b"[..], &b""[..])]);
        assert_eq!(
            store.visible(0, &span, Bound::Excluded(b"b"), Bound::Excluded(b"b"), 1).count(),
            0
        );
        assert_eq!(store.visible(7, &span, Bound::Unbounded, Bound::Unbounded, 1).count(), 0);
        let image = store.image_at(1);
        assert_eq!(keys_at(&image, 1).len(), 3);
    }
}
