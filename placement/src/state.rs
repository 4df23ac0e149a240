//! The placement driver's replicated state: what every member holds after applying the
//! same log. Commands are the only way it changes; [`ClusterState::apply`] is
//! deterministic, and each change is staged into the member's KV engine in the same batch
//! as the applied index, so a restart loads the state as of that index and replays the rest
//! of the log.
//!
//! What is not here, on purpose: leaders and load of ranges and stores (heartbeats refresh
//! them every few seconds; the leader keeps them in memory), running operators, and the
//! timestamps and ids handed out under the persisted bounds.

use std::collections::BTreeMap;

use bytes::Bytes;
use rkyv::{Archive, Deserialize, Serialize};
use tessera_engine::{Cf, KvBatch, KvRead};
use tessera_wire::errors::RpcError;
use tessera_wire::ids::{NodeId, RangeId, StoreId};
use tessera_wire::placement::{PlacementMember, PlacementRule, Store, StoreLabel, StoreState};
use tessera_wire::raft::ConfState;
use tessera_wire::range::RangeDescriptor;
use tessera_wire::timestamp::Timestamp;

use crate::codec::{decode, encode};
use crate::error::{PlacementError, Result};

/// Prefix of every key the placement state writes (in `Cf::Meta`).
const PREFIX: &[u8] = b"pd/";
const CLUSTER_KEY: &[u8] = b"pd/cluster";
const STORE_PREFIX: &[u8] = b"pd/store/";
const RANGE_PREFIX: &[u8] = b"pd/range/";
const RULE_PREFIX: &[u8] = b"pd/rule/";
const MEMBER_PREFIX: &[u8] = b"pd/member/";
const CONF_KEY: &[u8] = b"pd/conf";

/// The scalar part of the state, stored under one key.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterMeta {
    /// The cluster's id (fixed at the placement group's creation).
    pub cluster_id: u64,
    /// Whether the first store bootstrapped the cluster.
    pub bootstrapped: bool,
    /// Ids below this have been handed to some leader; a new leader allocates above it.
    pub id_bound: u64,
    /// Timestamps up to this millisecond may have been handed out; a new leader starts
    /// above it.
    pub tso_bound_ms: u64,
    /// The GC safe point (never goes back).
    pub gc_safe_point: u64,
}

/// A change to the replicated state, as proposed through Raft.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Create the cluster with its first store and range.
    Bootstrap {
        /// The first store.
        store: Store,
        /// The first range.
        range: RangeDescriptor,
    },
    /// Register a store or update its address and labels (state kept, tombstones refused).
    PutStore {
        /// The store.
        store: Store,
    },
    /// Change a store's state.
    SetStoreState {
        /// The store.
        store_id: StoreId,
        /// The new state.
        state: StoreState,
    },
    /// Replace a store's labels.
    SetStoreLabels {
        /// The store.
        store_id: StoreId,
        /// The labels.
        labels: Vec<StoreLabel>,
    },
    /// Newer descriptors of ranges (from heartbeats and split reports); stale ones are
    /// ignored, and ranges they overlap with an older version are dropped.
    PutRanges {
        /// The descriptors.
        ranges: Vec<RangeDescriptor>,
    },
    /// Raise the id bound.
    RaiseIdBound {
        /// The new bound.
        to: u64,
    },
    /// Raise the timestamp oracle's bound.
    RaiseTsoBound {
        /// The new bound, in ms.
        to_ms: u64,
    },
    /// Create or replace a placement rule.
    PutRule {
        /// The rule.
        rule: PlacementRule,
    },
    /// Delete a placement rule.
    DeleteRule {
        /// Its id.
        id: String,
    },
    /// Raise the GC safe point.
    SetGcSafePoint {
        /// The new safe point.
        safe_point: u64,
    },
    /// Record a member's address (its Raft membership changes separately).
    PutMember {
        /// The member.
        member: PlacementMember,
    },
    /// Forget a member's address.
    RemoveMember {
        /// The member.
        node_id: NodeId,
    },
}

impl Command {
    /// Encodes the command for the log.
    #[must_use]
    pub fn encode(&self) -> Bytes {
        Bytes::from(encode(self))
    }

    /// Decodes a command from the log.
    ///
    /// # Errors
    /// [`PlacementError::Corruption`] if the bytes are not a command.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        decode(bytes).map_err(|reason| PlacementError::Corruption(format!("command: {reason}")))
    }
}

/// The replicated state.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterState {
    /// Scalars.
    pub meta: ClusterMeta,
    /// Every store ever registered.
    pub stores: BTreeMap<StoreId, Store>,
    /// The latest descriptor of every range.
    pub ranges: BTreeMap<RangeId, RangeDescriptor>,
    /// Start key → range (the ranges tile the key space).
    pub by_start: BTreeMap<Bytes, RangeId>,
    /// Placement rules by id.
    pub rules: BTreeMap<String, PlacementRule>,
    /// Placement group members' addresses.
    pub members: BTreeMap<NodeId, PlacementMember>,
    /// The placement group's Raft membership as of the applied index.
    pub conf_state: ConfState,
}

/// What applying a command produced, for the proposer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// Done.
    Done,
    /// The GC safe point now in force.
    GcSafePoint(Timestamp),
}

fn store_key(id: StoreId) -> Vec<u8> {
    [STORE_PREFIX, &id.0.to_be_bytes()].concat()
}

fn range_key(id: RangeId) -> Vec<u8> {
    [RANGE_PREFIX, &id.0.to_be_bytes()].concat()
}

fn rule_key(id: &str) -> Vec<u8> {
    [RULE_PREFIX, id.as_bytes()].concat()
}

fn member_key(id: NodeId) -> Vec<u8> {
    [MEMBER_PREFIX, &id.0.to_be_bytes()].concat()
}

/// Whether `[a_start, a_end)` and `[b_start, b_end)` overlap (empty end: +∞).
fn overlaps(a: &RangeDescriptor, b: &RangeDescriptor) -> bool {
    let a_before_b_ends = b.end_key.is_empty() || a.start_key < b.end_key;
    let b_before_a_ends = a.end_key.is_empty() || b.start_key < a.end_key;
    a_before_b_ends && b_before_a_ends
}

/// Whether a rule's span and another's overlap.
fn rules_overlap(a: &PlacementRule, b: &PlacementRule) -> bool {
    let a_before_b_ends = b.end_key.is_empty() || a.start_key < b.end_key;
    let b_before_a_ends = a.end_key.is_empty() || b.start_key < a.end_key;
    a_before_b_ends && b_before_a_ends
}

impl ClusterState {
    /// A new, unbootstrapped cluster.
    #[must_use]
    pub fn new(cluster_id: u64) -> Self {
        Self {
            meta: ClusterMeta { cluster_id, id_bound: 1000, ..ClusterMeta::default() },
            ..Self::default()
        }
    }

    /// Loads the state from a member's KV engine; `None` if it holds none.
    ///
    /// # Errors
    /// Engine failures; [`PlacementError::Corruption`] for undecodable values.
    pub fn load<K: KvRead>(kv: &K) -> Result<Option<Self>> {
        let Some(meta) = kv.get(Cf::Meta, CLUSTER_KEY)? else { return Ok(None) };
        let corrupt =
            |what: &str, reason: String| PlacementError::Corruption(format!("{what}: {reason}"));
        let mut state = Self {
            meta: decode(&meta).map_err(|reason| corrupt("cluster meta", reason))?,
            ..Self::default()
        };
        for (key, value) in scan_prefix(kv, STORE_PREFIX)? {
            let store: Store = decode(&value).map_err(|reason| corrupt("store", reason))?;
            let _ = key;
            state.stores.insert(store.id, store);
        }
        for (_, value) in scan_prefix(kv, RANGE_PREFIX)? {
            let range: RangeDescriptor =
                decode(&value).map_err(|reason| corrupt("range", reason))?;
            state.by_start.insert(range.start_key.clone(), range.id);
            state.ranges.insert(range.id, range);
        }
        for (_, value) in scan_prefix(kv, RULE_PREFIX)? {
            let rule: PlacementRule = decode(&value).map_err(|reason| corrupt("rule", reason))?;
            state.rules.insert(rule.id.clone(), rule);
        }
        if let Some(conf) = kv.get(Cf::Meta, CONF_KEY)? {
            state.conf_state = decode(&conf).map_err(|reason| corrupt("conf state", reason))?;
        }
        for (_, value) in scan_prefix(kv, MEMBER_PREFIX)? {
            let member: PlacementMember =
                decode(&value).map_err(|reason| corrupt("member", reason))?;
            state.members.insert(member.node_id, member);
        }
        Ok(Some(state))
    }

    /// Writes the whole state into `batch` (after a snapshot, or at creation), replacing
    /// whatever the engine held: the caller deletes the old keys with [`Self::clear`].
    pub fn stage_all<B: KvBatch>(&self, batch: &mut B) {
        batch.put(Cf::Meta, CLUSTER_KEY, &encode(&self.meta));
        batch.put(Cf::Meta, CONF_KEY, &encode(&self.conf_state));
        for store in self.stores.values() {
            batch.put(Cf::Meta, &store_key(store.id), &encode(store));
        }
        for range in self.ranges.values() {
            batch.put(Cf::Meta, &range_key(range.id), &encode(range));
        }
        for rule in self.rules.values() {
            batch.put(Cf::Meta, &rule_key(&rule.id), &encode(rule));
        }
        for member in self.members.values() {
            batch.put(Cf::Meta, &member_key(member.node_id), &encode(member));
        }
    }

    /// Deletes every placement key from the engine (before a snapshot's state is staged).
    pub fn clear<B: KvBatch>(batch: &mut B) {
        let mut end = PREFIX.to_vec();
        end.push(0xff);
        batch.delete_span(Cf::Meta, &tessera_engine::KeySpan { start: PREFIX.to_vec(), end });
    }

    /// The whole state, encoded (a Raft snapshot's data).
    #[must_use]
    pub fn encode_image(&self) -> Bytes {
        Bytes::from(encode(self))
    }

    /// Decodes [`Self::encode_image`]'s output, rebuilding nothing derived (all is stored).
    ///
    /// # Errors
    /// [`PlacementError::Corruption`].
    pub fn decode_image(bytes: &[u8]) -> Result<Self> {
        decode(bytes).map_err(|reason| PlacementError::Corruption(format!("snapshot: {reason}")))
    }

    /// The range holding `key`.
    #[must_use]
    pub fn range_by_key(&self, key: &[u8]) -> Option<&RangeDescriptor> {
        let (_, id) = self.by_start.range(..=Bytes::copy_from_slice(key)).next_back()?;
        let range = self.ranges.get(id)?;
        (range.end_key.is_empty() || key < range.end_key.as_ref()).then_some(range)
    }

    /// The ranges overlapping `[start, end)` (empty end: +∞), in key order, at most `limit`.
    #[must_use]
    pub fn scan_ranges(&self, start: &[u8], end: &[u8], limit: usize) -> Vec<&RangeDescriptor> {
        let first = self
            .by_start
            .range(..=Bytes::copy_from_slice(start))
            .next_back()
            .map_or_else(Bytes::new, |(key, _)| key.clone());
        self.by_start
            .range(first..)
            .filter_map(|(_, id)| self.ranges.get(id))
            .filter(|range| range.end_key.is_empty() || range.end_key.as_ref() > start)
            .take_while(|range| end.is_empty() || range.start_key.as_ref() < end)
            .take(limit)
            .collect()
    }

    /// Applies `command`, staging what changed into `batch`. A refusal (`Err`) changes
    /// nothing and is the proposer's answer.
    pub fn apply<B: KvBatch>(
        &mut self,
        command: Command,
        batch: &mut B,
    ) -> std::result::Result<Applied, RpcError> {
        let invalid = |reason: String| RpcError::InvalidRequest { message: reason };
        match command {
            Command::Bootstrap { store, range } => {
                if self.meta.bootstrapped {
                    return Err(RpcError::AlreadyBootstrapped);
                }
                if !range.start_key.is_empty() || !range.end_key.is_empty() {
                    return Err(invalid("the first range must span the whole key space".into()));
                }
                if range.replica_on_store(store.id).is_none() {
                    return Err(invalid("the first range has no replica on the store".into()));
                }
                self.meta.bootstrapped = true;
                let top = range
                    .replicas
                    .iter()
                    .map(|replica| replica.id.0)
                    .chain([range.id.0, store.id.0])
                    .max()
                    .unwrap_or(0);
                self.meta.id_bound = self.meta.id_bound.max(top.saturating_add(1));
                self.put_store(store, batch);
                self.put_range(range, batch);
                batch.put(Cf::Meta, CLUSTER_KEY, &encode(&self.meta));
            }
            Command::PutStore { store } => {
                self.check_bootstrapped()?;
                let mut store = store;
                if let Some(other) = self.stores.values().find(|other| {
                    other.id != store.id
                        && other.address == store.address
                        && other.state != StoreState::Tombstone
                }) {
                    return Err(invalid(format!(
                        "address {} is store {}'s (tombstone it first)",
                        store.address, other.id
                    )));
                }
                store.state = match self.stores.get(&store.id) {
                    Some(old) if old.state == StoreState::Tombstone => {
                        return Err(invalid(format!("store {} is a tombstone", store.id)));
                    }
                    Some(old) => old.state,
                    None => StoreState::Up,
                };
                self.put_store(store, batch);
            }
            Command::SetStoreState { store_id, state } => {
                let Some(store) = self.stores.get(&store_id) else {
                    return Err(RpcError::StoreNotFound { store: store_id });
                };
                let allowed = !matches!(
                    (store.state, state),
                    (StoreState::Tombstone, _) | (_, StoreState::Disconnected)
                );
                if !allowed {
                    return Err(invalid(format!(
                        "store {store_id}: {:?} → {state:?}",
                        store.state
                    )));
                }
                let mut store = store.clone();
                store.state = state;
                self.put_store(store, batch);
            }
            Command::SetStoreLabels { store_id, labels } => {
                let Some(store) = self.stores.get(&store_id) else {
                    return Err(RpcError::StoreNotFound { store: store_id });
                };
                let mut store = store.clone();
                store.labels = labels;
                self.put_store(store, batch);
            }
            Command::PutRanges { ranges } => {
                for range in ranges {
                    self.maybe_put_range(range, batch);
                }
            }
            Command::RaiseIdBound { to } => {
                self.meta.id_bound = self.meta.id_bound.max(to);
                batch.put(Cf::Meta, CLUSTER_KEY, &encode(&self.meta));
            }
            Command::RaiseTsoBound { to_ms } => {
                self.meta.tso_bound_ms = self.meta.tso_bound_ms.max(to_ms);
                batch.put(Cf::Meta, CLUSTER_KEY, &encode(&self.meta));
            }
            Command::PutRule { rule } => {
                if rule.id.is_empty() || rule.voters == 0 {
                    return Err(invalid("a rule needs an id and at least one voter".into()));
                }
                if !rule.end_key.is_empty() && rule.start_key >= rule.end_key {
                    return Err(invalid(format!("rule {}: empty key span", rule.id)));
                }
                if let Some(other) = self
                    .rules
                    .values()
                    .find(|other| other.id != rule.id && rules_overlap(other, &rule))
                {
                    return Err(invalid(format!("rule {} overlaps rule {}", rule.id, other.id)));
                }
                batch.put(Cf::Meta, &rule_key(&rule.id), &encode(&rule));
                self.rules.insert(rule.id.clone(), rule);
            }
            Command::DeleteRule { id } => {
                if self.rules.remove(&id).is_some() {
                    batch.delete(Cf::Meta, &rule_key(&id));
                }
            }
            Command::SetGcSafePoint { safe_point } => {
                self.meta.gc_safe_point = self.meta.gc_safe_point.max(safe_point);
                batch.put(Cf::Meta, CLUSTER_KEY, &encode(&self.meta));
                return Ok(Applied::GcSafePoint(Timestamp(self.meta.gc_safe_point)));
            }
            Command::PutMember { member } => {
                batch.put(Cf::Meta, &member_key(member.node_id), &encode(&member));
                self.members.insert(member.node_id, member);
            }
            Command::RemoveMember { node_id } => {
                if self.members.remove(&node_id).is_some() {
                    batch.delete(Cf::Meta, &member_key(node_id));
                }
            }
        }
        Ok(Applied::Done)
    }

    /// Records the group's membership after a change is applied.
    pub fn set_conf_state<B: KvBatch>(&mut self, conf_state: ConfState, batch: &mut B) {
        batch.put(Cf::Meta, CONF_KEY, &encode(&conf_state));
        self.conf_state = conf_state;
    }

    fn check_bootstrapped(&self) -> std::result::Result<(), RpcError> {
        if self.meta.bootstrapped { Ok(()) } else { Err(RpcError::ClusterNotBootstrapped) }
    }

    fn put_store<B: KvBatch>(&mut self, store: Store, batch: &mut B) {
        batch.put(Cf::Meta, &store_key(store.id), &encode(&store));
        self.stores.insert(store.id, store);
    }

    fn put_range<B: KvBatch>(&mut self, range: RangeDescriptor, batch: &mut B) {
        if let Some(old) = self.ranges.get(&range.id)
            && self.by_start.get(&old.start_key) == Some(&range.id)
        {
            self.by_start.remove(&old.start_key);
        }
        batch.put(Cf::Meta, &range_key(range.id), &encode(&range));
        self.by_start.insert(range.start_key.clone(), range.id);
        self.ranges.insert(range.id, range);
    }

    /// Whether `range` is news: not older than what is known of it, nor than any range it
    /// overlaps.
    #[must_use]
    pub fn is_newer(&self, range: &RangeDescriptor) -> bool {
        match self.ranges.get(&range.id) {
            Some(old) if old == range => return false,
            Some(old)
                if old.epoch.version > range.epoch.version
                    || old.epoch.conf_ver > range.epoch.conf_ver =>
            {
                return false;
            }
            _ => {}
        }
        self.scan_ranges(&range.start_key, &range.end_key, usize::MAX)
            .into_iter()
            .filter(|other| other.id != range.id)
            .all(|other| other.epoch.version < range.epoch.version)
    }

    fn maybe_put_range<B: KvBatch>(&mut self, range: RangeDescriptor, batch: &mut B) {
        let empty = !range.end_key.is_empty() && range.start_key >= range.end_key;
        if !self.meta.bootstrapped || empty || !self.is_newer(&range) {
            return;
        }
        let overlapped: Vec<RangeId> = self
            .ranges
            .values()
            .filter(|other| other.id != range.id && overlaps(other, &range))
            .map(|other| other.id)
            .collect();
        for id in overlapped {
            if let Some(old) = self.ranges.remove(&id) {
                if self.by_start.get(&old.start_key) == Some(&id) {
                    self.by_start.remove(&old.start_key);
                }
                batch.delete(Cf::Meta, &range_key(id));
            }
        }
        self.put_range(range, batch);
    }
}

/// Every `(key, value)` under `prefix` in `Cf::Meta`.
fn scan_prefix<K: KvRead>(kv: &K, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut end = prefix.to_vec();
    end.push(0xff);
    let span = tessera_engine::KeySpan { start: prefix.to_vec(), end };
    let mut out = Vec::new();
    let mut cursor = kv.cursor(Cf::Meta, &span)?;
    let mut valid = tessera_engine::KvCursor::seek_to_first(&mut cursor)?;
    while valid {
        out.push((
            tessera_engine::KvCursor::key(&cursor).to_vec(),
            tessera_engine::KvCursor::value(&cursor).to_vec(),
        ));
        valid = tessera_engine::KvCursor::next(&mut cursor)?;
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use tessera_engine::mem::MemKvEngine;
    use tessera_engine::{KvEngine, KvRead};
    use tessera_wire::placement::StoreState;
    use tessera_wire::raft::ReplicaId;
    use tessera_wire::range::{RangeEpoch, Replica, ReplicaRole};

    use super::*;

    fn range(id: u64, start: &'static [u8], end: &'static [u8], version: u64) -> RangeDescriptor {
        RangeDescriptor {
            id: RangeId(id),
            start_key: Bytes::from_static(start),
            end_key: Bytes::from_static(end),
            epoch: RangeEpoch { conf_ver: 1, version },
            replicas: vec![Replica {
                id: ReplicaId(1),
                store_id: StoreId(1),
                role: ReplicaRole::Voter,
            }],
        }
    }

    fn store(id: u64, address: &str) -> Store {
        Store {
            id: StoreId(id),
            node_id: NodeId(id),
            address: address.to_owned(),
            labels: vec![],
            state: StoreState::Up,
        }
    }

    /// A bootstrapped state and the engine it was written to.
    fn bootstrapped() -> (ClusterState, MemKvEngine) {
        let kv = MemKvEngine::new();
        let mut state = ClusterState::new(3);
        let mut batch = kv.batch();
        state.stage_all(&mut batch);
        state
            .apply(
                Command::Bootstrap { store: store(1, "a:1"), range: range(1, b"", b"", 1) },
                &mut batch,
            )
            .unwrap();
        kv.write(&mut batch, true).unwrap();
        (state, kv)
    }

    fn apply(
        state: &mut ClusterState,
        kv: &MemKvEngine,
        command: Command,
    ) -> std::result::Result<Applied, RpcError> {
        let mut batch = kv.batch();
        let result = state.apply(command, &mut batch);
        kv.write(&mut batch, true).unwrap();
        result
    }

    #[test]
    fn splits_replace_older_ranges_and_stale_reports_are_ignored() {
        let (mut state, kv) = bootstrapped();
        let left = range(1, b"", b"m", 2);
        let right = range(2, b"m", b"", 2);
        apply(&mut state, &kv, Command::PutRanges { ranges: vec![left.clone(), right.clone()] })
            .unwrap();
        assert_eq!(state.range_by_key(b"a").unwrap().id, RangeId(1));
        assert_eq!(state.range_by_key(b"z").unwrap().id, RangeId(2));
        // A leader that has not applied the split reports the old range: ignored.
        apply(&mut state, &kv, Command::PutRanges { ranges: vec![range(1, b"", b"", 1)] }).unwrap();
        assert_eq!(state.ranges[&RangeId(1)], left);
        assert_eq!(state.range_by_key(b"z").unwrap().id, RangeId(2));
        // The right half splits again, reported before the left half learns anything.
        apply(&mut state, &kv, Command::PutRanges { ranges: vec![range(3, b"t", b"", 3)] })
            .unwrap();
        assert!(!state.ranges.contains_key(&RangeId(2)), "the overlapped older range goes");
        assert!(state.range_by_key(b"p").is_none(), "a gap until [m, t) reports");
        apply(&mut state, &kv, Command::PutRanges { ranges: vec![range(2, b"m", b"t", 3)] })
            .unwrap();
        let scanned: Vec<u64> = state.scan_ranges(b"", b"", 10).iter().map(|r| r.id.0).collect();
        assert_eq!(scanned, vec![1, 2, 3]);
        let scanned: Vec<u64> = state.scan_ranges(b"n", b"u", 10).iter().map(|r| r.id.0).collect();
        assert_eq!(scanned, vec![2, 3]);
        // The engine holds the same state.
        assert_eq!(ClusterState::load(&kv).unwrap().unwrap(), state);
    }

    #[test]
    fn refusals_change_nothing() {
        let (mut state, kv) = bootstrapped();
        let before = state.clone();
        let again = Command::Bootstrap { store: store(2, "b:1"), range: range(1, b"", b"", 1) };
        assert_eq!(apply(&mut state, &kv, again), Err(RpcError::AlreadyBootstrapped));
        apply(
            &mut state,
            &kv,
            Command::SetStoreState { store_id: StoreId(1), state: StoreState::Tombstone },
        )
        .unwrap();
        let revive = Command::SetStoreState { store_id: StoreId(1), state: StoreState::Up };
        assert!(matches!(apply(&mut state, &kv, revive), Err(RpcError::InvalidRequest { .. })));
        assert!(matches!(
            apply(&mut state, &kv, Command::PutStore { store: store(1, "a:1") }),
            Err(RpcError::InvalidRequest { .. })
        ));
        assert_eq!(
            apply(
                &mut state,
                &kv,
                Command::SetStoreLabels { store_id: StoreId(9), labels: vec![] }
            ),
            Err(RpcError::StoreNotFound { store: StoreId(9) })
        );
        let rule = |id: &str, start: &'static [u8], end: &'static [u8]| PlacementRule {
            id: id.to_owned(),
            start_key: Bytes::from_static(start),
            end_key: Bytes::from_static(end),
            voters: 3,
            ..PlacementRule::default()
        };
        apply(&mut state, &kv, Command::PutRule { rule: rule("eu", b"eu/", b"eu0") }).unwrap();
        assert!(matches!(
            apply(&mut state, &kv, Command::PutRule { rule: rule("x", b"a", b"eu1") }),
            Err(RpcError::InvalidRequest { .. })
        ));
        assert!(matches!(
            apply(&mut state, &kv, Command::PutRule { rule: rule("y", b"b", b"a") }),
            Err(RpcError::InvalidRequest { .. })
        ));
        apply(&mut state, &kv, Command::PutStore { store: store(2, "b:1") }).unwrap();
        assert!(matches!(
            apply(&mut state, &kv, Command::PutStore { store: store(5, "b:1") }),
            Err(RpcError::InvalidRequest { .. })
        ));
        // Replacing a rule by id is not an overlap with itself.
        apply(&mut state, &kv, Command::PutRule { rule: rule("eu", b"eu/", b"eu1") }).unwrap();
        assert_eq!(state.rules.len(), 1);
        assert_ne!(state, before);
        assert_eq!(ClusterState::load(&kv).unwrap().unwrap(), state);
    }

    #[test]
    fn bounds_and_the_safe_point_never_go_back() {
        let (mut state, kv) = bootstrapped();
        apply(&mut state, &kv, Command::RaiseTsoBound { to_ms: 5_000 }).unwrap();
        apply(&mut state, &kv, Command::RaiseTsoBound { to_ms: 4_000 }).unwrap();
        assert_eq!(state.meta.tso_bound_ms, 5_000);
        let bound = state.meta.id_bound;
        apply(&mut state, &kv, Command::RaiseIdBound { to: 1 }).unwrap();
        assert_eq!(state.meta.id_bound, bound);
        assert_eq!(
            apply(&mut state, &kv, Command::SetGcSafePoint { safe_point: 9 }),
            Ok(Applied::GcSafePoint(Timestamp(9)))
        );
        assert_eq!(
            apply(&mut state, &kv, Command::SetGcSafePoint { safe_point: 3 }),
            Ok(Applied::GcSafePoint(Timestamp(9)))
        );
        let loaded = ClusterState::load(&kv).unwrap().unwrap();
        assert_eq!(loaded.meta, state.meta);
        // A damaged value is an error, not a panic.
        let mut batch = kv.batch();
        batch.put(Cf::Meta, CLUSTER_KEY, b"\x01garbage");
        kv.write(&mut batch, true).unwrap();
        assert!(matches!(ClusterState::load(&kv), Err(PlacementError::Corruption(_))));
        assert!(kv.get(Cf::Meta, CLUSTER_KEY).unwrap().is_some());
    }
}
