//! Scheduling: the store's ranges, what reaches them (messages, requests, ticks) and the
//! round that turns their Readys into one synced raft-log write, batched sends and one KV
//! apply batch. No Raft or range rule lives here; those are in `operation/`.
//!
//! [`Store`] is single-threaded and deterministic: the simulator drives it step by step
//! (`on_*`, [`Store::tick`], [`Store::poll`]); [`system`] runs it on a thread behind
//! bounded crossbeam mailboxes, one per range ([`router`]), for the product.

pub mod apply_worker;
pub mod pool;
pub mod router;
pub(crate) mod snapshot_worker;
pub mod system;

use std::collections::{BTreeMap, BTreeSet};

use tessera_engine::codec::StoreIdent;
use tessera_engine::{KvEngine, RaftLogBatch, RaftLogEngine};
use tessera_raft::{Entry, Message, ReadState, Ready};
use tessera_wire::ids::{RangeId, StoreId};
use tessera_wire::raft::MessageKind;
use tessera_wire::transport::RaftEnvelope;

use crate::config::StoreConfig;
use crate::env::Network;
use crate::error::{Result, StoreError};
use crate::operation::apply::ApplyContext;
use crate::peer::Peer;

/// Counters of what the store did, for tests, benches and metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StoreStats {
    /// Rounds that found work.
    pub rounds: u64,
    /// Synced raft-log writes (one per round with anything durable).
    pub raft_syncs: u64,
    /// Readys handled.
    pub readies: u64,
    /// Entries applied.
    pub entries_applied: u64,
    /// Messages sent.
    pub messages_sent: u64,
    /// Messages dropped on receipt (unknown range or replica, wrong store).
    pub messages_dropped: u64,
    /// Splits applied.
    pub splits: u64,
    /// Membership changes applied.
    pub conf_changes: u64,
    /// Snapshots built (leader side).
    pub snapshots_built: u64,
    /// Snapshots installed (receiver side).
    pub snapshots_installed: u64,
    /// Replicas deleted after their removal.
    pub replicas_destroyed: u64,
    /// Ranges stepped, or whose Ready was taken, on the raft pool (see [`pool`]).
    pub pooled_ranges: u64,
}

/// Messages for not-yet-created ranges held at most (see `Store::early`).
const EARLY_MESSAGES_MAX: usize = 4096;

/// One store: all its range replicas, its engines and its network.
pub struct Store<R: RaftLogEngine, K: KvEngine, N: Network> {
    pub(crate) config: StoreConfig,
    pub(crate) ident: StoreIdent,
    pub(crate) raft_engine: R,
    pub(crate) kv: K,
    pub(crate) net: N,
    pub(crate) peers: BTreeMap<RangeId, Peer<R>>,
    /// Ranges that may have a Ready.
    pub(crate) dirty: BTreeSet<RangeId>,
    pub(crate) ticks: u64,
    pub(crate) next_read_id: u64,
    /// Messages for ranges not created here yet, held briefly: a split applies on the
    /// leader's store first, and the new range's first vote requests would otherwise be
    /// lost until the next election timeout. Bounded; cleared every election timeout.
    pub(crate) early: Vec<RaftEnvelope>,
    /// A log-truncation check is due at the next poll.
    pub(crate) gc_due: bool,
    pub(crate) stats: StoreStats,
    /// The placement driver, if this store talks to one.
    pub(crate) placement: Option<crate::placement::PlacementState>,
    /// Draws for load sampling (seeded by the store id: deterministic in the simulator).
    pub(crate) rng: tessera_raft::SplitMix64,
    /// Directories of received snapshots, with the number of the last round started when
    /// their message was stepped: deleted at the end of the next round, which handled the
    /// Ready that carried them (or Raft did not want them).
    pub(crate) received_snapshots: Vec<(std::path::PathBuf, u64)>,
    /// Spans of snapshots stepped (or about to be), with the round number as for
    /// `received_snapshots`: a snapshot overlapping one of them is refused, so two
    /// uninitialized replicas never install overlapping snapshots in one round.
    pub(crate) pending_snapshots: Vec<(tessera_wire::range::RangeDescriptor, u64)>,
    /// Rounds started.
    pub(crate) polls: u64,
    /// Ranges whose leader owes placement a heartbeat now (split, membership or leader
    /// change).
    pub(crate) heartbeat_due: BTreeSet<RangeId>,
    /// Writes the rounds' KV batches, answers proposers and serves reads behind the
    /// rounds (see [`apply_worker`]).
    pub(crate) applier: apply_worker::Applier<K>,
    /// Helpers that step ranges in parallel with the raft worker, if any (see [`pool`]).
    pub(crate) pool: Option<pool::RaftPool>,
    /// The thread building snapshots, if any; without one they are built inline.
    pub(crate) snapshot_worker: Option<snapshot_worker::SnapshotWorker<K>>,
}

impl<R: RaftLogEngine, K: KvEngine, N: Network> std::fmt::Debug for Store<R, K, N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("store_id", &self.ident.store_id)
            .field("ranges", &self.peers.len())
            .field("ticks", &self.ticks)
            .finish_non_exhaustive()
    }
}

/// What one range's Ready left to do after the shared sync.
struct Persisted {
    range: RangeId,
    number: u64,
    messages: Vec<Message>,
    committed: Vec<Entry>,
    reads: Vec<ReadState>,
}

impl<R: RaftLogEngine, K: KvEngine, N: Network> Store<R, K, N> {
    /// This store's id.
    #[must_use]
    pub fn store_id(&self) -> StoreId {
        self.ident.store_id
    }

    /// The replica of `range`, if this store holds one.
    #[must_use]
    pub fn peer(&self, range: RangeId) -> Option<&Peer<R>> {
        self.peers.get(&range)
    }

    /// Every replica on this store, by range id.
    pub fn peers(&self) -> impl Iterator<Item = &Peer<R>> {
        self.peers.values()
    }

    /// What the store did so far.
    #[must_use]
    pub fn stats(&self) -> StoreStats {
        self.stats
    }

    /// The network, for the simulator to take messages out of.
    pub fn network_mut(&mut self) -> &mut N {
        &mut self.net
    }

    /// The KV engine. What the apply worker still holds is not in it yet: call
    /// [`settle_applies`](Self::settle_applies) first to see every applied write.
    #[must_use]
    pub fn kv(&self) -> &K {
        &self.kv
    }

    /// Chooses where apply work runs (see [`apply_worker::ApplyMode`]); a new store
    /// applies inline.
    ///
    /// # Errors
    /// Outstanding work failed, or the apply thread could not start.
    pub fn set_apply_mode(&mut self, mode: apply_worker::ApplyMode) -> Result<()> {
        self.applier.set_mode(&self.kv, self.ident.store_id.0, mode)?;
        self.count_read_loads();
        Ok(())
    }

    /// In [`ApplyMode::Thread`](apply_worker::ApplyMode::Thread), `backlog` says whether
    /// work waits for this store (its mailbox): a round's job goes to the apply thread only
    /// then, or while that thread still holds jobs.
    pub fn set_apply_backlog(&mut self, backlog: Box<dyn Fn() -> bool + Send>) {
        self.applier.set_backlog(backlog);
    }

    /// Steps ranges in parallel on `pool`'s helpers as well as on the calling thread, when
    /// enough of them have work (see [`pool`]); a store without one steps them all on the
    /// calling thread.
    pub fn set_raft_pool(&mut self, pool: pool::RaftPool) {
        metrics::gauge!("tessera_store_raft_workers").set(pool.workers() as f64);
        self.pool = Some(pool);
    }

    /// Builds snapshots on a thread of their own (named `store-{id}-snap`) from now on,
    /// instead of inline in the round that asks (see `fsm/snapshot_worker.rs`).
    ///
    /// # Errors
    /// The thread could not be spawned.
    pub fn build_snapshots_on_a_thread(&mut self) -> std::io::Result<()> {
        if self.snapshot_worker.is_none() {
            let name = format!("store-{}-snap", self.ident.store_id);
            self.snapshot_worker = Some(snapshot_worker::SnapshotWorker::start(name)?);
        }
        Ok(())
    }

    /// Waits until every write, answer and read handed to the apply worker is done.
    ///
    /// # Errors
    /// The apply worker failed to write (the store must stop).
    pub fn settle_applies(&mut self) -> Result<()> {
        self.applier.settle(&self.kv)?;
        self.count_read_loads();
        Ok(())
    }

    /// Runs up to `count` jobs the apply worker holds in [`ApplyMode::Deferred`]
    /// (the simulator's apply worker).
    ///
    /// [`ApplyMode::Deferred`]: apply_worker::ApplyMode::Deferred
    ///
    /// # Errors
    /// The write failed (the store must stop).
    pub fn run_deferred_applies(&mut self, count: usize) -> Result<()> {
        self.applier.run_deferred(&self.kv, count)?;
        self.count_read_loads();
        Ok(())
    }

    /// Adds the read loads the apply worker reported to their ranges.
    fn count_read_loads(&mut self) {
        for (range, keys, bytes) in self.applier.take_loads() {
            if let Some(peer) = self.peers.get_mut(&range) {
                peer.count_read(keys, bytes);
            }
        }
    }

    /// Steps messages from other stores into their ranges: with a pool (see
    /// [`set_raft_pool`](Self::set_raft_pool)), the ranges whose messages need nothing but
    /// a step are stepped in parallel; everything else — a range whose replica is missing,
    /// stale or uninitialized and asked to vote, snapshots, tombstones — as
    /// [`on_raft_message`](Self::on_raft_message) does, in order. Each range's messages are
    /// stepped in the order given.
    ///
    /// # Errors
    /// A pool helper failed: the store must stop and restart from disk.
    pub fn on_raft_messages(&mut self, envelopes: Vec<RaftEnvelope>) -> Result<()> {
        if self.pool.is_none() {
            for envelope in envelopes {
                self.on_raft_message(envelope);
            }
            return Ok(());
        }
        let mut by_range: BTreeMap<RangeId, (bool, Vec<RaftEnvelope>)> = BTreeMap::new();
        for envelope in &envelopes {
            let plain = self.steps_plainly(envelope);
            let entry = by_range.entry(envelope.range).or_insert((true, Vec::new()));
            entry.0 &= plain;
        }
        let parallel = by_range.values().filter(|(plain, _)| *plain).count();
        if !self.pool.as_ref().is_some_and(|pool| pool.worth_it(parallel)) {
            for envelope in envelopes {
                self.on_raft_message(envelope);
            }
            return Ok(());
        }
        let mut in_order = Vec::new();
        for envelope in envelopes {
            match by_range.get_mut(&envelope.range) {
                Some((true, mine)) => mine.push(envelope),
                _ => in_order.push(envelope),
            }
        }
        // What needs the store goes first, one by one; it touches no range stepped below
        // (a tombstone, a snapshot check or a replica's creation concerns its own range).
        for envelope in in_order {
            self.on_raft_message(envelope);
        }
        let ticks = self.ticks;
        let mut work = Vec::with_capacity(parallel);
        for (range, (plain, mine)) in by_range {
            if plain && let Some(peer) = self.peers.remove(&range) {
                work.push((range, peer, mine, ticks));
            }
        }
        metrics::counter!("tessera_store_pool_ranges_total", "phase" => "step")
            .increment(work.len() as u64);
        self.stats.pooled_ranges += work.len() as u64;
        let pool = self.pool.as_ref().expect("checked above");
        let stepped = pool.map(work, |(range, mut peer, mine, ticks)| {
            for envelope in mine {
                Self::step_into(&mut peer, envelope, ticks);
            }
            (range, peer)
        })?;
        for (range, peer) in stepped {
            self.peers.insert(range, peer);
            self.dirty.insert(range);
        }
        Ok(())
    }

    /// Whether `envelope` needs nothing but a step into an existing replica: for this
    /// store and this replica, neither a snapshot nor a tombstone, and not a vote request
    /// to an uninitialized replica. [`on_raft_message`](Self::on_raft_message) does only
    /// [`step_into`](Self::step_into) for such a message, and stepping one changes none of
    /// these conditions.
    fn steps_plainly(&self, envelope: &RaftEnvelope) -> bool {
        let kind = envelope.message.kind;
        envelope.to_store == self.ident.store_id
            && !matches!(kind, MessageKind::Snapshot | MessageKind::Tombstone)
            && self.peers.get(&envelope.range).is_some_and(|peer| {
                envelope.message.to == peer.replica_id
                    && (peer.is_initialized()
                        || !matches!(kind, MessageKind::RequestVote | MessageKind::RequestPreVote))
            })
    }

    /// Steps a message into its replica, checked by the caller to be for it.
    fn step_into(peer: &mut Peer<R>, envelope: RaftEnvelope, ticks: u64) {
        peer.last_heard = ticks;
        if peer.descriptor.replica(envelope.message.from).is_none() {
            peer.peer_stores.insert(envelope.message.from, envelope.from_store);
        }
        if !envelope.message.entries.is_empty() {
            peer.idle_ticks = 0;
        }
        if let Err(error) = peer.raw.step(envelope.message) {
            tracing::debug!(range = %envelope.range, %error, "raft message refused");
        }
    }

    /// Steps a message from another store into its range.
    pub fn on_raft_message(&mut self, envelope: RaftEnvelope) {
        if envelope.message.kind == MessageKind::Snapshot {
            // Received files go at the end of the round, whatever becomes of the message.
            self.note_received_snapshot(&envelope.message);
        }
        if envelope.to_store != self.ident.store_id {
            self.stats.messages_dropped += 1;
            tracing::debug!(to = %envelope.to_store, "raft message for another store dropped");
            return;
        }
        let range = envelope.range;
        if envelope.message.kind == MessageKind::Tombstone {
            if let Err(error) = self.on_tombstone(&envelope) {
                tracing::error!(%range, %error, "cannot remove a replica");
            }
            return;
        }
        if let Some(peer) = self.peers.get(&range)
            && envelope.message.to > peer.replica_id
            && matches!(
                envelope.message.kind,
                MessageKind::Append | MessageKind::Heartbeat | MessageKind::Snapshot
            )
        {
            // A leader talks to a newer replica of this range on this store: the one here was
            // removed (it never learnt) and the store added again under a new id (replica ids
            // of a range only grow). The stale one goes; the new one is created below.
            let mut tombstone = peer.descriptor.clone();
            tombstone.id = range;
            if !peer.is_initialized() {
                tombstone.replicas = vec![tessera_wire::range::Replica {
                    id: peer.replica_id,
                    store_id: self.ident.store_id,
                    role: tessera_wire::range::ReplicaRole::Learner,
                }];
            }
            tracing::info!(%range, stale = %peer.replica_id, new = %envelope.message.to, "stale replica replaced");
            if let Err(error) = self.destroy_peer(tombstone) {
                tracing::error!(%range, %error, "cannot remove a stale replica");
                return;
            }
        }
        if !self.peers.contains_key(&range) {
            match self.maybe_create_uninitialized(&envelope) {
                Ok(true) => {}
                Ok(false) => {
                    // A replica not created yet (its split is not applied here yet) or
                    // already removed: held until the range starts here (or dropped later;
                    // Raft retries).
                    if self.early.len() >= EARLY_MESSAGES_MAX {
                        self.early.remove(0);
                        self.stats.messages_dropped += 1;
                    }
                    self.early.push(envelope);
                    metrics::counter!("tessera_store_messages_held_total").increment(1);
                    return;
                }
                Err(error) => {
                    self.stats.messages_dropped += 1;
                    tracing::error!(%range, %error, "cannot create a replica");
                    return;
                }
            }
        }
        let peer = self.peers.get(&range).expect("created above");
        let kind = envelope.message.kind;
        if envelope.message.to != peer.replica_id
            || (!peer.is_initialized()
                && matches!(kind, MessageKind::RequestVote | MessageKind::RequestPreVote))
        {
            // Uninitialized replicas never vote: a split may still create the same range
            // here, and its replica must not have voted in a term it does not remember.
            self.stats.messages_dropped += 1;
            return;
        }
        if kind == MessageKind::Snapshot
            && let Err(reason) = self.check_snapshot(range, &envelope.message)
        {
            self.stats.messages_dropped += 1;
            metrics::counter!("tessera_store_snapshots_refused_total").increment(1);
            tracing::info!(%range, %reason, "snapshot refused");
            return;
        }
        if kind == MessageKind::Snapshot
            && let Some(data) = envelope
                .message
                .snapshot
                .as_ref()
                .and_then(|snapshot| crate::snapshot::SnapshotData::decode(&snapshot.data).ok())
        {
            self.pending_snapshots.push((data.descriptor, self.polls));
        }
        let ticks = self.ticks;
        let peer = self.peers.get_mut(&range).expect("created above");
        Self::step_into(peer, envelope, ticks);
        self.dirty.insert(range);
    }

    /// Runs rounds until no range has a Ready (at most `max_rounds`); returns whether work
    /// remains.
    ///
    /// # Errors
    /// An engine failure: the store must stop and restart from disk.
    pub fn poll_until_idle(&mut self, max_rounds: usize) -> Result<bool> {
        for _ in 0..max_rounds {
            if !self.poll()? {
                return Ok(false);
            }
        }
        Ok(!self.dirty.is_empty())
    }

    /// One round: collects the Ready of every range with one, persists them all with one
    /// synced write, sends their messages, applies committed entries in one KV batch and
    /// answers proposals and reads. Returns whether any range had a Ready.
    ///
    /// # Errors
    /// An engine failure: the store must stop and restart from disk.
    pub fn poll(&mut self) -> Result<bool> {
        self.polls += 1;
        self.applier.collect()?;
        self.count_read_loads();
        if std::mem::take(&mut self.gc_due) {
            self.log_gc()?;
        }
        for report in self.net.take_snapshot_reports() {
            self.report_snapshot(report.range, report.to, report.ok);
        }
        self.collect_built_snapshots();
        let dirty = std::mem::take(&mut self.dirty);
        for range in &dirty {
            self.maybe_build_snapshot(*range);
        }
        let mut batch = self.raft_engine.batch();
        let mut must_sync = false;
        let mut persisted = Vec::new();
        if let Some(readies) = self.take_readies_in_parallel(&dirty)? {
            for (range, ready) in readies {
                self.stats.readies += 1;
                must_sync |= ready.must_sync();
                if let Some(done) = self.stage_ready(range, ready, &mut batch)? {
                    persisted.push(done);
                }
            }
        } else {
            for range in dirty {
                let Some(peer) = self.peers.get_mut(&range) else { continue };
                if !peer.raw.has_ready() {
                    continue;
                }
                let ready = peer.raw.ready();
                self.stats.readies += 1;
                must_sync |= ready.must_sync();
                if let Some(done) = self.stage_ready(range, ready, &mut batch)? {
                    persisted.push(done);
                }
            }
        }
        if persisted.is_empty() {
            self.applier.submit(&self.kv)?;
            self.net.flush();
            self.remove_received_snapshots();
            return Ok(false);
        }
        self.stats.rounds += 1;
        // What may leave before the write (a leader's appends, heartbeats) leaves now, so
        // followers persist in parallel with the leader's own fsync.
        self.net.flush();
        if must_sync {
            let started = std::time::Instant::now();
            self.raft_engine.write(&mut batch, true)?;
            metrics::histogram!("tessera_store_raft_sync_seconds")
                .record(started.elapsed().as_secs_f64());
            metrics::counter!("tessera_store_raft_syncs_total").increment(1);
            self.stats.raft_syncs += 1;
        } else if !batch.is_empty() {
            // Only commit indexes moved: no fsync (see `Ready::must_sync`; a restart finds
            // the log's commit behind the apply state and moves it up).
            self.raft_engine.write(&mut batch, false)?;
        }
        metrics::histogram!("tessera_store_ready_batch_ranges").record(persisted.len() as f64);

        let mut apply = ApplyContext::new(self.kv.batch());
        for done in &mut persisted {
            let Some(peer) = self.peers.get_mut(&done.range) else { continue };
            peer.raw.on_persist_ready(done.number);
            for message in std::mem::take(&mut done.messages) {
                Self::send(&mut self.net, &mut self.stats, peer, message);
            }
            if !done.committed.is_empty() {
                let committed = std::mem::take(&mut done.committed);
                self.stats.entries_applied += committed.len() as u64;
                self.apply_entries(done.range, &committed, &mut apply)?;
            }
        }
        self.after_apply(apply)?;
        for done in persisted {
            self.on_read_states(done.range, done.reads);
            self.dirty.insert(done.range);
        }
        self.serve_reads();
        // What the fsync held back (a follower's append responses, a leader's commit
        // notices) leaves before the apply work: a KV write run inline must not delay the
        // messages another store waits on.
        self.net.flush();
        // The round's writes, answers and reads go to the apply worker; the next round's
        // fsync overlaps them.
        self.applier.submit(&self.kv)?;
        self.net.flush();
        self.remove_received_snapshots();
        Ok(true)
    }

    /// With a pool and enough ranges with a Ready among `dirty`, takes their Readys in
    /// parallel and returns them in range order; `None` otherwise (the caller takes them
    /// one by one). Staging one Ready touches no other range's Raft state, so taking them
    /// all before staging any is the same as taking each just before it is staged.
    fn take_readies_in_parallel(
        &mut self,
        dirty: &BTreeSet<RangeId>,
    ) -> Result<Option<Vec<(RangeId, Ready)>>> {
        let Some(pool) = self.pool.as_ref() else { return Ok(None) };
        let with_ready: Vec<RangeId> = dirty
            .iter()
            .copied()
            .filter(|range| self.peers.get(range).is_some_and(|peer| peer.raw.has_ready()))
            .collect();
        if !pool.worth_it(with_ready.len()) {
            return Ok(None);
        }
        let work: Vec<(RangeId, Peer<R>)> = with_ready
            .into_iter()
            .filter_map(|range| self.peers.remove(&range).map(|peer| (range, peer)))
            .collect();
        metrics::counter!("tessera_store_pool_ranges_total", "phase" => "ready")
            .increment(work.len() as u64);
        self.stats.pooled_ranges += work.len() as u64;
        let taken = pool.map(work, |(range, mut peer)| {
            let ready = peer.raw.ready();
            (range, peer, ready)
        })?;
        let mut readies = Vec::with_capacity(taken.len());
        for (range, peer, ready) in taken {
            self.peers.insert(range, peer);
            readies.push((range, ready));
        }
        Ok(Some(readies))
    }

    /// Stages one Ready: snapshot (installed now), entries and hard state into `batch`;
    /// sends its messages at once.
    fn stage_ready(
        &mut self,
        range: RangeId,
        ready: Ready,
        batch: &mut R::Batch,
    ) -> Result<Option<Persisted>> {
        let peer = self.peers.get_mut(&range).expect("staged ranges exist");
        if let Some(soft) = ready.soft_state {
            peer.leader = soft.leader;
            if peer.is_leader() {
                self.heartbeat_due.insert(range);
            } else {
                self.on_lost_leadership(range);
            }
        }
        if let Some(snapshot) = &ready.snapshot {
            match self.install_snapshot(range, snapshot, batch) {
                Ok(()) => {}
                // The engine refused the files before touching the range: this replica
                // drops the Ready as if it had crashed before persisting it, and restarts
                // from disk; its leader sends a snapshot again. The store goes on.
                Err(StoreError::Engine(
                    error @ (tessera_engine::EngineError::Corruption { .. }
                    | tessera_engine::EngineError::InvalidArgument(_)),
                )) => {
                    tracing::error!(%range, %error, "snapshot refused by the engine");
                    metrics::counter!("tessera_store_snapshots_refused_total").increment(1);
                    self.abandon_snapshot_install(range)?;
                    return Ok(None);
                }
                Err(error) => return Err(error),
            }
        }
        let peer = self.peers.get_mut(&range).expect("staged ranges exist");
        if !ready.entries.is_empty() {
            peer.idle_ticks = 0;
            peer.raw.store_mut().stage_entries(batch, &ready.entries);
        }
        if let Some(hard_state) = ready.hard_state {
            peer.raw.store_mut().stage_hard_state(batch, hard_state);
        }
        for message in ready.messages {
            Self::send(&mut self.net, &mut self.stats, peer, message);
        }
        Ok(Some(Persisted {
            range,
            number: ready.number,
            messages: ready.persisted_messages,
            committed: ready.committed_entries,
            reads: ready.read_states,
        }))
    }

    /// Deletes the received snapshot files whose Ready this round handled.
    fn remove_received_snapshots(&mut self) {
        let polls = self.polls;
        self.pending_snapshots.retain(|(_, stepped)| *stepped >= polls);
        self.received_snapshots.retain(|(dir, stepped)| {
            if *stepped < polls {
                crate::operation::snapshot::remove_snapshot_dir(dir);
                false
            } else {
                true
            }
        });
    }

    pub(crate) fn send(net: &mut N, stats: &mut StoreStats, peer: &Peer<R>, message: Message) {
        let Some(to_store) = peer.store_of(message.to) else {
            tracing::debug!(range = %peer.range(), to = %message.to, "message to unknown replica");
            return;
        };
        stats.messages_sent += 1;
        net.send(RaftEnvelope {
            range: peer.range(),
            from_store: peer.store_id,
            to_store,
            message,
        });
    }

    /// Writes one Raft-log batch now (used when creating replicas).
    pub(crate) fn write_raft(&self, batch: &mut R::Batch, sync: bool) -> Result<()> {
        if !batch.is_empty() {
            self.raft_engine.write(batch, sync)?;
        }
        Ok(())
    }
}
