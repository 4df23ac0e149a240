//! Replica lifecycle: bootstrap of the first range, recovery of every range on restart, and
//! creation of the right-hand replica of a split.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use tessera_engine::RangeLogStorage;
use tessera_engine::codec::{ApplyState, RaftLogState, StoreIdent};
use tessera_engine::{Cf, KvBatch, KvEngine, RaftLogBatch, RaftLogEngine, keys};
use tessera_raft::{HardState, RawNode, ReplicaId};
use tessera_wire::ids::RangeId;
use tessera_wire::range::RangeDescriptor;

use crate::config::StoreConfig;
use crate::env::Network;
use crate::error::{Result, StoreError};
use crate::fsm::{Store, StoreStats};
use crate::peer::{Peer, WriteLoad};
use crate::state::{
    INITIAL_INDEX, INITIAL_TERM, RangeLocalState, ReplicaState, conf_state_of, initial_apply_state,
};

/// The raft state of a range created without log entries: its log starts after
/// [`INITIAL_INDEX`].
fn initial_raft_state() -> RaftLogState {
    RaftLogState {
        hard_state: HardState { term: INITIAL_TERM, vote: ReplicaId::NONE, commit: INITIAL_INDEX },
        truncated_index: INITIAL_INDEX,
        truncated_term: INITIAL_TERM,
    }
}

/// Writes `ident` and the first range (`descriptor`, which must name a replica on this
/// store) into fresh engines. Every store of a new cluster is bootstrapped with the same
/// descriptor; the replicas then elect a leader among themselves.
///
/// # Errors
/// [`StoreError::Bootstrap`] if the engines already hold a store or the descriptor does not
/// name this store; engine failures.
pub fn bootstrap<R: RaftLogEngine, K: KvEngine>(
    raft_engine: &R,
    kv: &K,
    ident: StoreIdent,
    descriptor: &RangeDescriptor,
) -> Result<()> {
    if kv.get(Cf::Meta, keys::STORE_IDENT_KEY)?.is_some() {
        return Err(StoreError::Bootstrap("the store is already bootstrapped".to_owned()));
    }
    if descriptor.replica_on_store(ident.store_id).is_none() {
        return Err(StoreError::Bootstrap(format!(
            "the first range has no replica on store {}",
            ident.store_id
        )));
    }
    let mut raft_batch = raft_engine.batch();
    raft_batch.put_raft_state(descriptor.id, &initial_raft_state());
    raft_engine.write(&mut raft_batch, true)?;
    let mut batch = kv.batch();
    RangeLocalState { state: ReplicaState::Normal, descriptor: descriptor.clone() }
        .stage(&mut batch);
    batch.put_apply_state(descriptor.id, &initial_apply_state());
    // The identity goes last, in the same batch: a store without it is not bootstrapped.
    batch.put(Cf::Meta, keys::STORE_IDENT_KEY, &ident.encode());
    kv.write(&mut batch, true)?;
    Ok(())
}

impl<R: RaftLogEngine, K: KvEngine, N: Network> Store<R, K, N> {
    /// Opens a bootstrapped store: checks its identity and recovers every range from the
    /// engines.
    ///
    /// # Errors
    /// [`StoreError::IdentityMismatch`] if the engines belong to another store; corruption
    /// and engine failures.
    pub fn open(
        config: StoreConfig,
        raft_engine: R,
        kv: K,
        net: N,
        ident: StoreIdent,
    ) -> Result<Self> {
        config.validate()?;
        let Some(stored) = kv.get(Cf::Meta, keys::STORE_IDENT_KEY)? else {
            return Err(StoreError::Bootstrap("the store is not bootstrapped".to_owned()));
        };
        let found = StoreIdent::decode(&stored)?;
        if found != ident {
            return Err(StoreError::IdentityMismatch {
                cluster: ident.cluster_id,
                store: ident.store_id.0,
                found_cluster: found.cluster_id,
                found_store: found.store_id.0,
            });
        }
        let mut store = Self {
            config,
            ident,
            raft_engine,
            kv,
            net,
            peers: BTreeMap::new(),
            dirty: BTreeSet::new(),
            ticks: 0,
            next_read_id: 1,
            gc_due: false,
            early: Vec::new(),
            stats: StoreStats::default(),
        };
        let mut ranges = Vec::new();
        for (key, _) in store.kv.scan(
            Cf::Meta,
            &keys::all_range_local_span(),
            tessera_engine::Direction::Forward,
            usize::MAX,
        )? {
            if let Some((range, keys::RANGE_STATE_SUFFIX)) = keys::decode_range_local_key(&key) {
                ranges.push(range);
            }
        }
        for range in ranges {
            let Some(state) = RangeLocalState::load(&store.kv, range)? else { continue };
            if state.state == ReplicaState::Tombstone {
                continue;
            }
            store.start_peer(state.descriptor)?;
        }
        tracing::info!(store = %store.ident.store_id, ranges = store.peers.len(), "store opened");
        Ok(store)
    }

    /// Starts the replica of `descriptor` on this store from what the engines hold; a range
    /// created without log entries (split) gets its initial raft state here.
    pub(crate) fn start_peer(&mut self, descriptor: RangeDescriptor) -> Result<()> {
        let range = descriptor.id;
        let replica = descriptor.replica_on_store(self.ident.store_id).ok_or_else(|| {
            StoreError::corruption(
                format!("range state of range {range}"),
                format!("no replica on store {}", self.ident.store_id),
            )
        })?;
        let applied: ApplyState = self.kv.apply_state(range)?.ok_or_else(|| {
            StoreError::corruption(format!("range {range}"), "range state without apply state")
        })?;
        if self.raft_engine.raft_state(range)?.is_none() {
            if applied != initial_apply_state() {
                return Err(StoreError::corruption(
                    format!("range {range}"),
                    format!("no raft state, but applied up to {}", applied.applied_index),
                ));
            }
            let mut batch = self.raft_engine.batch();
            batch.put_raft_state(range, &initial_raft_state());
            // Durable with the next round's sync; recreated the same way if lost.
            self.write_raft(&mut batch, false)?;
        }
        let storage =
            RangeLogStorage::open(self.raft_engine.clone(), range, conf_state_of(&descriptor))?;
        if storage.raft_state().hard_state.commit < applied.applied_index {
            return Err(StoreError::corruption(
                format!("range {range}"),
                format!(
                    "applied {} past the durable commit index {}",
                    applied.applied_index,
                    storage.raft_state().hard_state.commit
                ),
            ));
        }
        let seed = self.ident.store_id.0.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ range.0;
        let mut raft_config = self.config.raft_config(replica.id, applied.applied_index, seed);
        // Still exactly as created (never voted, never answered a leader): it may grant votes
        // at once, so the first leader of a split's right half is elected without waiting.
        raft_config.new_group = storage.raft_state() == initial_raft_state()
            && tessera_raft::Storage::last_index(&storage) == INITIAL_INDEX;
        let raw = RawNode::new(raft_config, storage)
            .map_err(|source| StoreError::Raft { range, source })?;
        let peer = Peer {
            store_id: self.ident.store_id,
            replica_id: replica.id,
            raw,
            descriptor,
            applied,
            leader: ReplicaId::NONE,
            proposals: VecDeque::new(),
            reads: VecDeque::new(),
            idle_ticks: 0,
            write_load: WriteLoad::default(),
            slept_without: Vec::new(),
            compact_wanted: tessera_raft::LogIndex(0),
        };
        self.peers.insert(range, peer);
        self.dirty.insert(range);
        // Deliver what arrived before this replica existed.
        if self.early.iter().any(|envelope| envelope.range == range) {
            let (mine, others) =
                std::mem::take(&mut self.early).into_iter().partition(|e| e.range == range);
            self.early = others;
            for envelope in mine {
                self.on_raft_message(envelope);
            }
        }
        metrics::gauge!("tessera_store_ranges").set(self.peers.len() as f64);
        Ok(())
    }

    /// Makes this store's replica of `range` campaign now (tests, and the right-hand range
    /// of a split whose left side this store leads).
    pub fn campaign(&mut self, range: RangeId) {
        if let Some(peer) = self.peers.get_mut(&range) {
            peer.raw.campaign();
            self.dirty.insert(range);
        }
    }

    /// Hands leadership of `range` to `to` (a voter); the answer is the range's next
    /// leadership change.
    pub fn transfer_leader(
        &mut self,
        range: RangeId,
        to: ReplicaId,
    ) -> Result<(), tessera_wire::errors::RpcError> {
        let peer = self
            .peers
            .get_mut(&range)
            .ok_or(tessera_wire::errors::RpcError::RangeNotFound { range })?;
        if !peer.is_leader() {
            return Err(peer.not_leader());
        }
        peer.raw.transfer_leader(to).map_err(|error| {
            tessera_wire::errors::RpcError::InvalidRequest { message: error.to_string() }
        })?;
        self.dirty.insert(range);
        Ok(())
    }
}
