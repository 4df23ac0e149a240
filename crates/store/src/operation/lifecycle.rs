//! Replica lifecycle: bootstrap of the first range, recovery of every range on restart, and
//! creation of the right-hand replica of a split.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use tessera_engine::RangeLogStorage;
use tessera_engine::codec::{ApplyState, RaftLogState, StoreIdent};
use tessera_engine::{Cf, KvBatch, KvEngine, RaftLogBatch, RaftLogEngine, keys};
use tessera_raft::{ConfState, HardState, LogIndex, RawNode, ReplicaId, Term};
use tessera_wire::errors::RpcError;
use tessera_wire::ids::RangeId;
use tessera_wire::placement::PlacementRequest;
use tessera_wire::raft::{Message, MessageKind};
use tessera_wire::range::{RangeDescriptor, Replica, ReplicaRole};
use tessera_wire::transport::RaftEnvelope;

use crate::config::StoreConfig;
use crate::env::Network;
use crate::error::{Result, StoreError};
use crate::fsm::{Store, StoreStats};
use crate::peer::{Peer, WriteLoad};
use crate::placement::StaleAsked;
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

/// Writes `ident` into fresh engines for a store that joins a running cluster holding no
/// range: its replicas arrive later, created by their leaders' messages and filled by
/// snapshots.
///
/// # Errors
/// [`StoreError::Bootstrap`] if the engines already hold a store; engine failures.
pub fn bootstrap_store<R: RaftLogEngine, K: KvEngine>(
    raft_engine: &R,
    kv: &K,
    ident: StoreIdent,
) -> Result<()> {
    if kv.get(Cf::Meta, keys::STORE_IDENT_KEY)?.is_some() {
        return Err(StoreError::Bootstrap("the store is already bootstrapped".to_owned()));
    }
    // Nothing of the raft engine is needed yet; synced so that the store's two engines are
    // both known good before it says it exists.
    raft_engine.sync()?;
    let mut batch = kv.batch();
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
        let config_scan_bytes_max = config.scan_bytes_max;
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
            placement: None,
            received_snapshots: Vec::new(),
            polls: 0,
            pending_snapshots: Vec::new(),
            heartbeat_due: BTreeSet::new(),
            rng: tessera_raft::SplitMix64::new(ident.store_id.0),
            gc_due: false,
            early: Vec::new(),
            stats: StoreStats::default(),
            applier: crate::fsm::apply_worker::Applier::new(config_scan_bytes_max),
            pool: None,
            snapshot_worker: None,
        };
        store.clean_snapshot_dir();
        let mut ranges = Vec::new();
        let mut installing = Vec::new();
        for (key, _) in store.kv.scan(
            Cf::Meta,
            &keys::all_range_local_span(),
            tessera_engine::Direction::Forward,
            usize::MAX,
        )? {
            match keys::decode_range_local_key(&key) {
                Some((range, keys::RANGE_STATE_SUFFIX)) => ranges.push(range),
                Some((range, keys::SNAPSHOT_APPLYING_SUFFIX)) => installing.push(range),
                _ => {}
            }
        }
        store.resume_snapshot_installs(&installing)?;
        for range in installing {
            if !ranges.contains(&range) {
                ranges.push(range);
            }
        }
        for range in ranges {
            let Some(state) = RangeLocalState::load(&store.kv, range)? else { continue };
            if state.state == ReplicaState::Tombstone {
                continue;
            }
            if state.descriptor.replica_on_store(store.ident.store_id).is_none() {
                // Left by a version that wrote a removal's new descriptor before its
                // tombstone: finish the removal.
                tracing::warn!(%range, "range state without this store: removing the replica");
                store.finish_destroy(&state.descriptor)?;
                continue;
            }
            store.start_peer(state.descriptor)?;
        }
        tracing::info!(store = %store.ident.store_id, ranges = store.peers.len(), "store opened");
        Ok(store)
    }

    /// Removes snapshots left from before a restart (built or being received): a replica
    /// that still needs one asks again.
    fn clean_snapshot_dir(&self) {
        let Ok(entries) = std::fs::read_dir(&self.config.snapshot_dir) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("gen-") || name.starts_with("rcv-") {
                crate::operation::snapshot::remove_snapshot_dir(&entry.path());
            }
        }
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
        let stored = self.raft_engine.raft_state(range)?;
        if stored.is_none() && applied == initial_apply_state() {
            let mut batch = self.raft_engine.batch();
            batch.put_raft_state(range, &initial_raft_state());
            // Durable with the next round's sync; recreated the same way if lost.
            self.write_raft(&mut batch, false)?;
        }
        let mut storage =
            RangeLogStorage::open(self.raft_engine.clone(), range, conf_state_of(&descriptor))?;
        let commit = storage.raft_state().hard_state.commit;
        if stored.is_some()
            && commit < applied.applied_index
            && tessera_raft::Storage::term(&storage, applied.applied_index).ok()
                == Some(applied.applied_term)
        {
            // A commit index is written without an fsync of its own (see
            // `Ready::must_sync`): after a machine crash the log may hold the applied entry
            // but an older commit. What was applied was committed; the commit moves up.
            tracing::info!(%range, %commit, applied = %applied.applied_index, "commit index moved up to the apply state");
            let mut state = storage.raft_state();
            state.hard_state.commit = applied.applied_index;
            let mut batch = self.raft_engine.batch();
            storage.stage_hard_state(&mut batch, state.hard_state);
            self.write_raft(&mut batch, true)?;
        }
        if stored.is_none() && applied != initial_apply_state()
            || storage.raft_state().hard_state.commit < applied.applied_index
        {
            // A snapshot's KV half is written and synced before its log half (see
            // `operation::snapshot`): a crash between them leaves the KV engine ahead of the
            // log. Move the log up to the apply state.
            tracing::warn!(
                %range, applied = %applied.applied_index,
                commit = %storage.raft_state().hard_state.commit,
                "apply state ahead of the raft log (snapshot install interrupted): log reset"
            );
            let old = storage.raft_state();
            let term = old.hard_state.term.max(applied.applied_term);
            let state = RaftLogState {
                hard_state: HardState {
                    term,
                    vote: if term == old.hard_state.term {
                        old.hard_state.vote
                    } else {
                        ReplicaId::NONE
                    },
                    commit: applied.applied_index,
                },
                truncated_index: applied.applied_index,
                truncated_term: applied.applied_term,
            };
            let mut batch = self.raft_engine.batch();
            batch.clear_range(range);
            batch.put_raft_state(range, &state);
            self.write_raft(&mut batch, true)?;
            storage =
                RangeLogStorage::open(self.raft_engine.clone(), range, conf_state_of(&descriptor))?;
        }
        let seed = self.ident.store_id.0.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ range.0;
        let mut raft_config = self.config.raft_config(replica.id, applied.applied_index, seed);
        // Still exactly as created (never voted, never answered a leader): it may grant votes
        // at once, so the first leader of a split's right half is elected without waiting.
        raft_config.new_group = storage.raft_state() == initial_raft_state()
            && tessera_raft::Storage::last_index(&storage) == INITIAL_INDEX;
        let raw = RawNode::new(raft_config, storage)
            .map_err(|source| StoreError::Raft { range, source })?;
        let peer = self.new_peer(replica.id, raw, descriptor, applied);
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

    fn new_peer(
        &self,
        replica_id: ReplicaId,
        raw: RawNode<RangeLogStorage<R>>,
        descriptor: RangeDescriptor,
        applied: ApplyState,
    ) -> Peer<R> {
        Peer {
            store_id: self.ident.store_id,
            replica_id,
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
            peer_stores: HashMap::new(),
            removed: Vec::new(),
            snapshot_dir: None,
            last_heard: self.ticks,
            last_heartbeat: self.ticks,
            reported_pending: false,
            traffic: crate::peer::Traffic::default(),
            store_traffic: crate::peer::Traffic::default(),
            load: crate::peer::LoadSampler::default(),
        }
    }

    /// Creates the replica a leader's message (append, heartbeat or snapshot) is for, when
    /// this store has none: uninitialized (no key span, no data) until its first snapshot.
    /// Returns `false` when the message must not create one: another kind, or a replica id
    /// at or below one this store already removed (a stale message must not resurrect it).
    ///
    /// # Errors
    /// Engine failures.
    pub(crate) fn maybe_create_uninitialized(&mut self, envelope: &RaftEnvelope) -> Result<bool> {
        let message = &envelope.message;
        if !matches!(
            message.kind,
            MessageKind::Append | MessageKind::Heartbeat | MessageKind::Snapshot
        ) || !message.to.is_some()
        {
            return Ok(false);
        }
        let range = envelope.range;
        if let Some(state) = RangeLocalState::load(&self.kv, range)? {
            let removed = state.descriptor.replica_on_store(self.ident.store_id).map(|r| r.id);
            if state.state == ReplicaState::Normal || removed.is_some_and(|id| message.to <= id) {
                return Ok(false);
            }
            // A tombstone: whatever log is left (a crash between the tombstone and the log's
            // deletion) belongs to the removed replica.
            let mut batch = self.raft_engine.batch();
            batch.clear_range(range);
            self.write_raft(&mut batch, true)?;
        }
        if !self.raft_log_is_empty(range)? {
            // A log is here without its range state: a split created this replica and its
            // apply was lost in a crash. The parent applies the split again and the replica
            // restarts on that log (acknowledged entries must not be thrown away).
            return Ok(false);
        }
        let storage = RangeLogStorage::open(self.raft_engine.clone(), range, ConfState::default())?;
        let seed = self.ident.store_id.0.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ range.0;
        let config = self.config.raft_config(message.to, LogIndex(0), seed);
        let raw =
            RawNode::new(config, storage).map_err(|source| StoreError::Raft { range, source })?;
        let descriptor = RangeDescriptor { id: range, ..RangeDescriptor::default() };
        let mut peer = self.new_peer(message.to, raw, descriptor, ApplyState::default());
        peer.peer_stores.insert(message.from, envelope.from_store);
        self.peers.insert(range, peer);
        tracing::info!(%range, replica = %message.to, "uninitialized replica created by a message");
        metrics::counter!("tessera_store_replicas_created_total").increment(1);
        metrics::gauge!("tessera_store_ranges").set(self.peers.len() as f64);
        Ok(true)
    }

    /// A split is about to start `range` here: an uninitialized replica of it (created by a
    /// message from the new range's leader before this store applied the split) gives way.
    /// It never voted (uninitialized replicas do not), so only its term is kept.
    pub(crate) fn replace_uninitialized(&mut self, range: RangeId) -> Result<()> {
        if self.peers.get(&range).is_none_or(Peer::is_initialized) {
            return Ok(());
        }
        self.peers.remove(&range);
        if !self.raft_log_is_empty(range)? {
            return Ok(());
        }
        let term = self.raft_engine.raft_state(range)?.map_or(Term(0), |s| s.hard_state.term);
        let mut state = initial_raft_state();
        state.hard_state.term = state.hard_state.term.max(term);
        let mut batch = self.raft_engine.batch();
        batch.clear_range(range);
        batch.put_raft_state(range, &state);
        self.write_raft(&mut batch, true)?;
        Ok(())
    }

    /// Whether `range`'s raft log here is empty as an uninitialized replica leaves it: no
    /// entry and nothing truncated (only a term, perhaps).
    fn raft_log_is_empty(&self, range: RangeId) -> Result<bool> {
        let truncated =
            self.raft_engine.raft_state(range)?.map_or(LogIndex(0), |s| s.truncated_index);
        Ok(truncated == LogIndex(0) && self.raft_engine.stored_index_bounds(range)?.is_none())
    }

    /// Deletes this store's replica of `tombstone.id`: its data, its log, its waiting
    /// requests (reads answered `RangeNotFound`, proposals `Timeout`: they may still commit
    /// elsewhere); a tombstone with `tombstone` (the range as this
    /// replica knew it, with the epoch that removed it) stays in its place.
    ///
    /// # Errors
    /// Engine failures.
    pub(crate) fn destroy_peer(&mut self, tombstone: RangeDescriptor) -> Result<()> {
        let range = tombstone.id;
        if !self.peers.contains_key(&range) {
            return Ok(());
        }
        // The range's data is deleted: no write the apply worker holds may land after.
        self.settle_applies()?;
        let Some(mut peer) = self.peers.remove(&range) else { return Ok(()) };
        self.dirty.remove(&range);
        let gone = RpcError::RangeNotFound { range };
        // A proposal still waiting may yet commit through the other replicas (this one may
        // have led when it was made): its outcome is unknown, not a refusal.
        for proposal in std::mem::take(&mut peer.proposals) {
            proposal.respond.fail(RpcError::Timeout);
        }
        for read in std::mem::take(&mut peer.reads) {
            (read.respond)(Err(gone.clone()));
        }
        let mut batch = self.kv.batch();
        if peer.is_initialized() {
            let span = keys::data_span(&peer.descriptor.start_key, &peer.descriptor.end_key);
            for cf in Cf::DATA {
                batch.delete_span(cf, &span);
            }
        }
        RangeLocalState { state: ReplicaState::Tombstone, descriptor: tombstone }.stage(&mut batch);
        self.kv.write(&mut batch, true)?;
        let mut raft_batch = self.raft_engine.batch();
        raft_batch.clear_range(range);
        self.write_raft(&mut raft_batch, true)?;
        if let Some(dir) = &peer.snapshot_dir {
            crate::operation::snapshot::remove_snapshot_dir(dir);
        }
        tracing::info!(%range, replica = %peer.replica_id, "replica removed");
        self.stats.replicas_destroyed += 1;
        metrics::counter!("tessera_store_replicas_destroyed_total").increment(1);
        metrics::gauge!("tessera_store_ranges").set(self.peers.len() as f64);
        Ok(())
    }

    /// Deletes the data and log of a replica whose range state is `descriptor` (which no
    /// longer lists this store) and leaves a tombstone, for a removal cut short.
    fn finish_destroy(&self, descriptor: &RangeDescriptor) -> Result<()> {
        let mut batch = self.kv.batch();
        let span = keys::data_span(&descriptor.start_key, &descriptor.end_key);
        for cf in Cf::DATA {
            batch.delete_span(cf, &span);
        }
        RangeLocalState { state: ReplicaState::Tombstone, descriptor: descriptor.clone() }
            .stage(&mut batch);
        self.kv.write(&mut batch, true)?;
        let mut raft_batch = self.raft_engine.batch();
        raft_batch.clear_range(descriptor.id);
        self.write_raft(&mut raft_batch, true)
    }

    /// A `Tombstone` message: the leader says this store's replica was removed at the
    /// membership version in `index` — or, with `index` 0, a replica that has not heard
    /// from a leader for long asks whether it was removed.
    pub(crate) fn on_tombstone(&mut self, envelope: &RaftEnvelope) -> Result<()> {
        let range = envelope.range;
        let conf_ver = envelope.message.index.0;
        if conf_ver == 0 {
            return self.answer_stale_query(envelope);
        }
        let Some(peer) = self.peers.get(&range) else { return Ok(()) };
        if envelope.message.to != peer.replica_id
            || (peer.is_initialized() && peer.descriptor.epoch.conf_ver >= conf_ver)
        {
            return Ok(());
        }
        let mut tombstone = peer.descriptor.clone();
        if !peer.is_initialized() {
            tombstone.replicas = vec![Replica {
                id: peer.replica_id,
                store_id: self.ident.store_id,
                role: ReplicaRole::Learner,
            }];
        }
        tombstone.epoch.conf_ver = conf_ver;
        self.destroy_peer(tombstone)
    }

    /// Answers a replica asking whether it was removed: any replica whose membership
    /// version is newer than the asker's and whose descriptor does not list it knows the
    /// asker was removed in between (replica ids are never reused, so a removed replica
    /// never comes back under its id) — and so does a store whose own tombstone of the range
    /// is such a descriptor. Otherwise it stays silent.
    fn answer_stale_query(&mut self, envelope: &RaftEnvelope) -> Result<()> {
        let asker = envelope.message.from;
        let asker_conf_ver = envelope.message.commit.0;
        // What this store knows of the range: its live replica's descriptor, or the one its
        // own tombstone keeps (the range as it was when this store left it).
        let (descriptor, from, term) = match self.peers.get(&envelope.range) {
            Some(peer) if peer.is_initialized() => {
                (peer.descriptor.clone(), peer.replica_id, peer.raw.raft().term())
            }
            Some(_) => return Ok(()),
            None => match RangeLocalState::load(&self.kv, envelope.range)? {
                Some(state) if state.state == ReplicaState::Tombstone => {
                    let from = state
                        .descriptor
                        .replica_on_store(self.ident.store_id)
                        .map_or(ReplicaId::NONE, |replica| replica.id);
                    (state.descriptor, from, tessera_raft::Term(0))
                }
                _ => return Ok(()),
            },
        };
        if descriptor.replica(asker).is_some() || descriptor.epoch.conf_ver <= asker_conf_ver {
            return Ok(());
        }
        let mut reply = Message::new(MessageKind::Tombstone, from, asker, term);
        reply.index = LogIndex(descriptor.epoch.conf_ver);
        self.stats.messages_sent += 1;
        self.net.send(RaftEnvelope {
            range: envelope.range,
            from_store: self.ident.store_id,
            to_store: envelope.from_store,
            message: reply,
        });
        tracing::info!(range = %envelope.range, %asker, "told a removed replica it is gone");
        Ok(())
    }

    /// Replicas that have heard from no leader for `stale_replica_ticks` ask the others
    /// whether they were removed (a removed replica may never learn it otherwise) — the
    /// voters their descriptor lists and, when the store has one, the placement driver,
    /// which knows the range even after every voter the descriptor names has left it.
    pub(crate) fn check_stale_replicas(&mut self) {
        let stale_after = u64::from(self.config.stale_replica_ticks);
        if stale_after == 0 {
            return;
        }
        let now = self.ticks;
        let mut asking = Vec::new();
        for peer in self.peers.values_mut() {
            // A quiesced replica is silent by agreement with its leader (and wakes when that
            // leader's store goes down); it does not ask.
            if peer.is_leader()
                || !peer.is_initialized()
                || peer.is_quiesced()
                || now - peer.last_heard < stale_after
            {
                continue;
            }
            peer.last_heard = now;
            let term = peer.raw.raft().term();
            for replica in &peer.descriptor.replicas {
                if replica.id == peer.replica_id || !replica.role.is_voter() {
                    continue;
                }
                let mut query =
                    Message::new(MessageKind::Tombstone, peer.replica_id, replica.id, term);
                query.commit = LogIndex(peer.descriptor.epoch.conf_ver);
                self.stats.messages_sent += 1;
                self.net.send(RaftEnvelope {
                    range: peer.descriptor.id,
                    from_store: self.ident.store_id,
                    to_store: replica.store_id,
                    message: query,
                });
            }
            asking.push((peer.descriptor.id, peer.replica_id));
            metrics::counter!("tessera_store_stale_replica_checks_total").increment(1);
        }
        if let Some(state) = self.placement.as_mut() {
            // A question not answered by the next check is forgotten (the client may drop
            // requests; the replica asks again).
            state.stale_asked.retain(|_, asked| now - asked.at < stale_after);
            for (range, replica) in asking {
                let token = state.send(PlacementRequest::GetRangeById { range });
                state.stale_asked.insert(token, StaleAsked { range, replica, at: now });
            }
        }
    }

    /// The placement driver's answer to a stale replica's question: the replica goes when
    /// the range's membership there is newer than the replica's and no longer lists it
    /// (replica ids are never reused, so it was removed in between — the rule a live
    /// replica applies in `answer_stale_query`).
    pub(crate) fn on_stale_answer(&mut self, asked: StaleAsked, current: &RangeDescriptor) {
        let Some(peer) = self.peers.get(&asked.range) else { return };
        if peer.replica_id != asked.replica
            || !peer.is_initialized()
            || current.id != asked.range
            || current.replica(asked.replica).is_some()
            || current.epoch.conf_ver <= peer.descriptor.epoch.conf_ver
        {
            return;
        }
        let mut tombstone = peer.descriptor.clone();
        tombstone.epoch.conf_ver = current.epoch.conf_ver;
        tracing::info!(range = %asked.range, replica = %asked.replica, "the placement driver no longer lists this replica: removed");
        if let Err(error) = self.destroy_peer(tombstone) {
            tracing::error!(range = %asked.range, %error, "cannot remove a replica");
        }
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
