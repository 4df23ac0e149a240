//! The route cache: which range holds a key, its epoch, replicas and leader, as last learnt
//! from the placement driver or from the stores' refusals.
//!
//! Ranges tile the key space, so the cache is a map from start key to route; a key's range is
//! the entry with the greatest start key at or below it, if that entry's span contains the
//! key (the cache may have gaps: ranges never looked up, or dropped after a refusal).
//!
//! # Which descriptor wins
//!
//! Every change of a range's key span (split, merge) raises the epoch `version` of every range
//! it produces, so of two overlapping descriptors the one with the higher `version` is the
//! newer (for one range id at one `version`, the higher `conf_ver`). [`RouteCache::insert`]
//! drops the cached entries a newer descriptor overlaps, and refuses a descriptor that an
//! overlapping cached entry shows to be stale: a placement driver that has not heard of a
//! split yet cannot undo what a store already told the client.

use std::collections::BTreeMap;
use std::ops::Bound;

use bytes::Bytes;
use tessera_wire::ids::{RangeId, StoreId};
use tessera_wire::placement::RangeRoute;
use tessera_wire::range::{RangeDescriptor, Replica};

/// A range and where its leader was last seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedRoute {
    /// The range.
    pub descriptor: RangeDescriptor,
    /// Its leader, if known.
    pub leader: Option<Replica>,
}

impl From<RangeRoute> for CachedRoute {
    fn from(route: RangeRoute) -> Self {
        Self { descriptor: route.descriptor, leader: route.leader }
    }
}

impl From<RangeDescriptor> for CachedRoute {
    fn from(descriptor: RangeDescriptor) -> Self {
        Self { descriptor, leader: None }
    }
}

impl CachedRoute {
    /// The voters' stores, the leader's first (when it is known and a member), then the
    /// others in descriptor order.
    #[must_use]
    pub fn voter_stores(&self) -> Vec<StoreId> {
        let mut stores = Vec::with_capacity(self.descriptor.replicas.len());
        if let Some(leader) = self.leader {
            stores.push(leader.store_id);
        }
        for replica in &self.descriptor.replicas {
            if replica.role.is_voter() && !stores.contains(&replica.store_id) {
                stores.push(replica.store_id);
            }
        }
        stores
    }
}

/// Whether descriptor `a` is older than `b`, which it overlaps (see the module
/// documentation).
fn older(a: &RangeDescriptor, b: &RangeDescriptor) -> bool {
    a.epoch.version < b.epoch.version
        || (a.id == b.id
            && a.epoch.version == b.epoch.version
            && a.epoch.conf_ver < b.epoch.conf_ver)
}

/// Routes by start key. Not synchronised: the client keeps it behind a lock.
#[derive(Debug, Default, Clone)]
pub struct RouteCache {
    ranges: BTreeMap<Bytes, CachedRoute>,
}

impl RouteCache {
    /// An empty cache.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of cached ranges.
    #[must_use]
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Whether nothing is cached.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The cached range holding `key`, if any.
    #[must_use]
    pub fn locate(&self, key: &[u8]) -> Option<&CachedRoute> {
        self.ranges
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()
            .map(|(_, route)| route)
            .filter(|route| route.descriptor.contains_key(key))
    }

    /// The cached route of range `range`, if any.
    #[must_use]
    pub fn get(&self, range: RangeId) -> Option<&CachedRoute> {
        self.ranges.values().find(|route| route.descriptor.id == range)
    }

    /// Every cached route, in key order.
    pub fn routes(&self) -> impl Iterator<Item = &CachedRoute> {
        self.ranges.values()
    }

    /// The start keys of the cached entries overlapping `[start, end)` (empty `end`: +∞).
    fn overlapping(&self, start: &[u8], end: &[u8]) -> Vec<Bytes> {
        let mut found = Vec::new();
        if let Some((key, route)) =
            self.ranges.range::<[u8], _>((Bound::Unbounded, Bound::Included(start))).next_back()
        {
            let route_end = route.descriptor.end_key.as_ref();
            if route_end.is_empty() || route_end > start {
                found.push(key.clone());
            }
        }
        for key in self
            .ranges
            .range::<[u8], _>((Bound::Excluded(start), Bound::Unbounded))
            .map(|(key, _)| key)
        {
            if !end.is_empty() && key.as_ref() >= end {
                break;
            }
            found.push(key.clone());
        }
        found
    }

    /// Caches `route`, dropping the entries it overlaps. Refused (returns `false`, nothing
    /// changes) if an overlapping entry is newer. For the same range at the same epoch only
    /// the leader is updated, and only when `route` names one.
    pub fn insert(&mut self, route: CachedRoute) -> bool {
        let descriptor = &route.descriptor;
        let overlapping = self.overlapping(&descriptor.start_key, &descriptor.end_key);
        let mut leader = route.leader;
        for key in &overlapping {
            let Some(cached) = self.ranges.get(key) else { continue };
            if older(descriptor, &cached.descriptor) {
                return false;
            }
            if cached.descriptor == *descriptor && leader.is_none() {
                leader = cached.leader;
            }
        }
        for key in overlapping {
            self.ranges.remove(&key);
        }
        let start = route.descriptor.start_key.clone();
        self.ranges.insert(start, CachedRoute { descriptor: route.descriptor, leader });
        true
    }

    /// Notes `leader` as the leader of range `range` (if it is cached).
    pub fn set_leader(&mut self, range: RangeId, leader: Option<Replica>) {
        if let Some(route) = self.ranges.values_mut().find(|route| route.descriptor.id == range) {
            route.leader = leader;
        }
    }

    /// Drops range `range`; returns whether it was cached.
    pub fn invalidate(&mut self, range: RangeId) -> bool {
        let key = self
            .ranges
            .iter()
            .find(|(_, route)| route.descriptor.id == range)
            .map(|(key, _)| key.clone());
        key.is_some_and(|key| self.ranges.remove(&key).is_some())
    }

    /// Drops everything.
    pub fn clear(&mut self) {
        self.ranges.clear();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use tessera_wire::raft::ReplicaId;
    use tessera_wire::range::{RangeEpoch, ReplicaRole};

    fn replica(id: u64, store: u64) -> Replica {
        Replica { id: ReplicaId(id), store_id: StoreId(store), role: ReplicaRole::Voter }
    }

    fn range(id: u64, start: &str, end: &str, version: u64) -> CachedRoute {
        CachedRoute {
            descriptor: RangeDescriptor {
                id: RangeId(id),
                start_key: Bytes::copy_from_slice(start.as_bytes()),
                end_key: Bytes::copy_from_slice(end.as_bytes()),
                epoch: RangeEpoch { conf_ver: 1, version },
                replicas: vec![replica(id * 10 + 1, 1), replica(id * 10 + 2, 2)],
            },
            leader: None,
        }
    }

    fn located(cache: &RouteCache, key: &str) -> Option<u64> {
        cache.locate(key.as_bytes()).map(|route| route.descriptor.id.0)
    }

    #[test]
    fn lookup_by_key_respects_spans_and_gaps() {
        let mut cache = RouteCache::new();
        assert!(cache.is_empty());
        assert!(cache.insert(range(1, "", "c", 2)));
        assert!(cache.insert(range(3, "f", "", 2)));
        assert_eq!(cache.len(), 2);
        assert_eq!(located(&cache, ""), Some(1));
        assert_eq!(located(&cache, "bzz"), Some(1));
        // [c, f) was never looked up: a gap, not range 1.
        assert_eq!(located(&cache, "c"), None);
        assert_eq!(located(&cache, "e"), None);
        assert_eq!(located(&cache, "f"), Some(3));
        assert_eq!(located(&cache, "zzzz"), Some(3));
        assert_eq!(cache.get(RangeId(3)).unwrap().descriptor.start_key.as_ref(), b"f");
        assert!(cache.get(RangeId(2)).is_none());
    }

    #[test]
    fn a_newer_descriptor_evicts_what_it_overlaps() {
        let mut cache = RouteCache::new();
        assert!(cache.insert(range(1, "", "", 1)));
        // Range 1 split at m (both halves at version 2): the left half replaces the parent.
        assert!(cache.insert(range(1, "", "m", 2)));
        assert_eq!(cache.len(), 1);
        assert_eq!(located(&cache, "a"), Some(1));
        assert_eq!(located(&cache, "x"), None);
        assert!(cache.insert(range(2, "m", "", 2)));
        assert_eq!(located(&cache, "x"), Some(2));
        // Two more splits; then a merge-like range covering [d, t) at a higher version
        // evicts every entry it touches and nothing else.
        assert!(cache.insert(range(1, "", "d", 3)));
        assert!(cache.insert(range(4, "d", "m", 3)));
        assert!(cache.insert(range(2, "m", "t", 3)));
        assert!(cache.insert(range(5, "t", "", 3)));
        assert_eq!(cache.len(), 4);
        assert!(cache.insert(range(4, "d", "t", 5)));
        let spans: Vec<(u64, &[u8])> = cache
            .routes()
            .map(|route| (route.descriptor.id.0, route.descriptor.start_key.as_ref()))
            .collect();
        assert_eq!(spans, vec![(1, &b""[..]), (4, b"d"), (5, b"t")]);
        assert_eq!(located(&cache, "p"), Some(4));
    }

    #[test]
    fn a_stale_descriptor_is_refused() {
        let mut cache = RouteCache::new();
        assert!(cache.insert(range(1, "", "m", 2)));
        assert!(cache.insert(range(2, "m", "", 2)));
        // The placement driver has not heard of the split yet: its parent is older than
        // both halves and changes nothing.
        assert!(!cache.insert(range(1, "", "", 1)));
        assert_eq!(cache.len(), 2);
        assert_eq!(located(&cache, "x"), Some(2));
        // Same range and version, older membership: refused; newer: accepted.
        let mut newer = range(2, "m", "", 2);
        newer.descriptor.epoch.conf_ver = 4;
        assert!(cache.insert(newer.clone()));
        let mut older = range(2, "m", "", 2);
        older.descriptor.epoch.conf_ver = 3;
        assert!(!cache.insert(older));
        assert_eq!(cache.locate(b"x").unwrap().descriptor, newer.descriptor);
    }

    #[test]
    fn leaders_are_kept_updated_and_invalidated() {
        let mut cache = RouteCache::new();
        let mut route = range(1, "", "", 1);
        route.leader = Some(replica(12, 2));
        assert!(cache.insert(route.clone()));
        assert_eq!(cache.locate(b"k").unwrap().voter_stores(), vec![StoreId(2), StoreId(1)]);
        // The same descriptor without a leader keeps the known one.
        route.leader = None;
        assert!(cache.insert(route));
        assert_eq!(cache.locate(b"k").unwrap().leader, Some(replica(12, 2)));
        cache.set_leader(RangeId(1), Some(replica(11, 1)));
        assert_eq!(cache.locate(b"k").unwrap().leader, Some(replica(11, 1)));
        assert_eq!(cache.locate(b"k").unwrap().voter_stores(), vec![StoreId(1), StoreId(2)]);
        cache.set_leader(RangeId(9), Some(replica(91, 9)));
        assert!(cache.invalidate(RangeId(1)));
        assert!(!cache.invalidate(RangeId(1)));
        assert!(cache.locate(b"k").is_none());
        assert!(cache.insert(range(1, "", "", 1)));
        cache.clear();
        assert!(cache.is_empty());
    }
}
