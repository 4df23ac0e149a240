//! Snapshots: a leader whose follower needs entries the log no longer has builds the range's
//! snapshot (the KV engine's files of the range's keys as of the applied index, with the
//! descriptor and the membership there); the follower checks it before Raft sees it, and
//! installs it when its Ready carries it.
//!
//! Install order, for crash safety: the files are ingested and the range's apply state and
//! descriptor written and synced in the KV engine first; the Raft log is then reset to the
//! snapshot's position in the round's synced raft batch. A crash between the two leaves the
//! KV engine ahead of the log, which `start_peer` repairs by moving the log up to the apply
//! state on restart.

use std::path::Path;

use rkyv::{Archive, Deserialize, Serialize};
use tessera_engine::{Cf, KvBatch, KvEngine, RaftLogEngine, keys};
use tessera_raft::{LogIndex, Term};
use tessera_raft::{Snapshot, SnapshotMetadata};
use tessera_wire::ids::RangeId;
use tessera_wire::raft::Message;
use tessera_wire::range::RangeDescriptor;

use crate::codec;
use crate::env::Network;
use crate::error::{Result, StoreError};
use crate::fsm::Store;
use crate::fsm::snapshot_worker::{BuildJob, Built, build};
use crate::snapshot::SnapshotData;
use crate::state::{RangeLocalState, ReplicaState, conf_state_of};

/// A snapshot install under way: written (synced) before the range's span is cleared and
/// deleted with the apply state once the files are loaded.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub(crate) struct SnapshotApplying {
    /// The snapshot, its files in `<snapshot_dir>/apply-<range>/`.
    pub(crate) data: SnapshotData,
    /// Its index.
    pub(crate) index: u64,
    /// Its term.
    pub(crate) term: u64,
}

/// Whether two key spans (`end` empty: +∞) share a key.
fn spans_overlap(a: &RangeDescriptor, b: &RangeDescriptor) -> bool {
    let before_end = |start: &[u8], end: &[u8]| end.is_empty() || start < end;
    before_end(&a.start_key, &b.end_key) && before_end(&b.start_key, &a.end_key)
}

/// Whether two memberships hold the same replicas in the same roles (order aside).
fn same_membership(a: &tessera_raft::ConfState, b: &tessera_raft::ConfState) -> bool {
    let sorted = |ids: &[tessera_raft::ReplicaId]| {
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids
    };
    sorted(&a.voters) == sorted(&b.voters)
        && sorted(&a.voters_outgoing) == sorted(&b.voters_outgoing)
        && sorted(&a.learners) == sorted(&b.learners)
        && sorted(&a.learners_next) == sorted(&b.learners_next)
}

/// Removes a snapshot directory, logging (not failing) on error: it is only disk space.
pub(crate) fn remove_snapshot_dir(dir: &Path) {
    if let Err(error) = std::fs::remove_dir_all(dir)
        && error.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %dir.display(), %error, "cannot remove a snapshot directory");
    }
}

impl<R: RaftLogEngine, K: KvEngine, N: Network> Store<R, K, N> {
    /// Builds the snapshot `range`'s Raft core asked for, if it asked. A failure is logged
    /// and retried the next time the core asks: the store goes on.
    pub(crate) fn maybe_build_snapshot(&mut self, range: RangeId) {
        if self.snapshot_building(range) {
            return;
        }
        let Some(peer) = self.peers.get_mut(&range) else { return };
        if peer.raw.store().snapshot_wanted().is_none() || !peer.is_initialized() {
            return;
        }
        // The snapshot built last time still serves (it is not behind the log's start).
        if tessera_raft::Storage::snapshot(peer.raw.store(), tessera_raft::LogIndex(0)).is_ok() {
            return;
        }
        // The snapshot holds the range as applied: the apply worker's writes first.
        if let Err(error) = self.settle_applies() {
            tracing::error!(%range, %error, "snapshot not built");
            return;
        }
        let Some(peer) = self.peers.get_mut(&range) else { return };
        let applied = peer.applied;
        let dir = self.config.snapshot_dir.join(format!(
            "gen-{}-{}-{}-{}",
            self.ident.store_id, range, applied.applied_index, self.ticks
        ));
        let job = BuildJob {
            range,
            kv: self.kv.clone(),
            view: self.kv.snapshot(),
            descriptor: peer.descriptor.clone(),
            metadata: SnapshotMetadata {
                index: applied.applied_index,
                term: applied.applied_term,
                conf_state: peer.raw.conf_state(),
            },
            dir,
            started: std::time::Instant::now(),
        };
        let job = match self.snapshot_worker.as_mut() {
            Some(worker) => match worker.submit(job) {
                Ok(()) => return,
                Err(job) => {
                    tracing::warn!(%range, "snapshot worker gone; building here");
                    *job
                }
            },
            None => job,
        };
        self.finish_snapshot(build(job));
    }

    /// Whether `range`'s snapshot is being built off the raft worker.
    fn snapshot_building(&self, range: RangeId) -> bool {
        self.snapshot_worker.as_ref().is_some_and(|worker| worker.is_building(range))
    }

    /// Hands the snapshots the snapshot worker built since the last round to their ranges.
    pub(crate) fn collect_built_snapshots(&mut self) {
        let Some(worker) = self.snapshot_worker.as_mut() else { return };
        for built in worker.take_done() {
            self.finish_snapshot(built);
        }
    }

    /// Gives a built snapshot to its range's Raft storage (which offers it to followers from
    /// then on), or drops its files if it failed or the replica is gone.
    fn finish_snapshot(&mut self, built: Built) {
        let Built { range, metadata, dir, started, data } = built;
        let data = match data {
            Ok(data) => data,
            Err(error) => {
                tracing::warn!(%range, %error, "cannot build a snapshot; retried later");
                remove_snapshot_dir(&dir);
                return;
            }
        };
        let Some(peer) = self.peers.get_mut(&range).filter(|peer| peer.is_initialized()) else {
            remove_snapshot_dir(&dir);
            return;
        };
        let bytes: u64 = data.files.iter().map(|file| file.size_bytes).sum();
        tracing::info!(
            %range, index = %metadata.index, bytes,
            "snapshot built in {:?}", started.elapsed()
        );
        peer.raw.store_mut().set_snapshot(Snapshot { metadata, data: data.encode() });
        if let Some(old) = peer.snapshot_dir.replace(dir) {
            remove_snapshot_dir(&old);
        }
        self.dirty.insert(range);
        self.stats.snapshots_built += 1;
        metrics::counter!("tessera_store_snapshots_built_total").increment(1);
        metrics::histogram!("tessera_store_snapshot_build_seconds")
            .record(started.elapsed().as_secs_f64());
    }

    /// Checks a snapshot message before Raft sees it: it must decode, name this range, not
    /// be older than this replica's range, overlap no other range this store holds, and its
    /// files must match their checksums. `Err` says why it is refused.
    pub(crate) fn check_snapshot(&self, range: RangeId, message: &Message) -> Result<(), String> {
        let snapshot = message.snapshot.as_ref().ok_or("snapshot message without snapshot")?;
        let data = SnapshotData::decode(&snapshot.data)?;
        let descriptor = &data.descriptor;
        if descriptor.id != range {
            return Err(format!("snapshot of range {} sent to range {range}", descriptor.id));
        }
        match descriptor.replica(message.to) {
            Some(replica) if replica.store_id == self.ident.store_id => {}
            _ => {
                return Err(format!(
                    "snapshot whose range does not list replica {} on this store",
                    message.to
                ));
            }
        }
        if !same_membership(&snapshot.metadata.conf_state, &conf_state_of(descriptor)) {
            return Err("snapshot membership differs from its descriptor".to_owned());
        }
        // Only files received for this store, under `<snapshot_dir>/rcv-*/`: a message must
        // not make the store read or delete anything else.
        for file in &data.files {
            if !self.is_received_file(Path::new(&file.path)) {
                return Err(format!("snapshot file {} is not a received file", file.path));
            }
        }
        if let Some(peer) = self.peers.get(&range)
            && peer.is_initialized()
            && descriptor.epoch.is_stale_against(peer.descriptor.epoch)
        {
            return Err(format!(
                "snapshot epoch {:?} older than the replica's {:?}",
                descriptor.epoch, peer.descriptor.epoch
            ));
        }
        // Nor any snapshot of another range stepped but not installed yet.
        if let Some((other, _)) = self
            .pending_snapshots
            .iter()
            .find(|(other, _)| other.id != range && spans_overlap(other, descriptor))
        {
            return Err(format!("snapshot overlaps range {}'s snapshot being installed", other.id));
        }
        if let Some(other) = self.peers.values().find(|other| {
            other.range() != range
                && other.is_initialized()
                && spans_overlap(&other.descriptor, descriptor)
        }) {
            return Err(format!("snapshot overlaps range {} held here", other.range()));
        }
        let manifest = data.manifest()?;
        manifest.verify().map_err(|error| error.to_string())?;
        Ok(())
    }

    /// Installs the snapshot of `range`'s Ready (see the module documentation for the order).
    pub(crate) fn install_snapshot(
        &mut self,
        range: RangeId,
        snapshot: &Snapshot,
        batch: &mut R::Batch,
    ) -> Result<()> {
        // The span is cleared and loaded: no write the apply worker holds may land after.
        self.settle_applies()?;
        let started = std::time::Instant::now();
        let corrupt =
            |reason: String| StoreError::corruption(format!("snapshot of range {range}"), reason);
        let mut data = SnapshotData::decode(&snapshot.data).map_err(corrupt)?;
        // Clearing the span and loading the files is not one atomic write in every engine:
        // the files move where a restart finds them, and a record of the install is synced
        // before the span is touched, so a crash in the middle is finished at restart
        // (`resume_snapshot_installs`) instead of leaving a half-loaded range.
        if let Some(received) = data.files.first().and_then(|file| Path::new(&file.path).parent()) {
            let received = received.to_path_buf();
            let dir = self.config.snapshot_dir.join(format!("apply-{range}"));
            remove_snapshot_dir(&dir);
            std::fs::rename(&received, &dir).map_err(|error| {
                tessera_engine::EngineError::io(
                    format!("moving {} to {}", received.display(), dir.display()),
                    error,
                )
            })?;
            for file in &mut data.files {
                if let Some(name) = Path::new(&file.path).file_name() {
                    file.path = dir.join(name).display().to_string();
                }
            }
        }
        let record = SnapshotApplying {
            data,
            index: snapshot.metadata.index.0,
            term: snapshot.metadata.term.0,
        };
        let mut kv_batch = self.kv.batch();
        kv_batch.put(Cf::Meta, &keys::snapshot_applying_key(range), &codec::encode(&record));
        self.kv.write(&mut kv_batch, true)?;
        let descriptor = self.finish_snapshot_install(range, &record)?;
        let applied = tessera_engine::codec::ApplyState {
            applied_index: snapshot.metadata.index,
            applied_term: snapshot.metadata.term,
        };
        let peer = self.peers.get_mut(&range).expect("installing ranges exist");
        peer.raw.store_mut().stage_snapshot(batch, &snapshot.metadata);
        for replica in &descriptor.replicas {
            peer.peer_stores.remove(&replica.id);
        }
        peer.descriptor = descriptor;
        peer.applied = applied;
        // Proposals the snapshot covers were made here as leader and their entries are not
        // applied here one by one: they may have committed (the snapshot would hold them)
        // or not. Their outcome is unknown.
        while peer.proposals.front().is_some_and(|p| p.index <= snapshot.metadata.index) {
            let proposal = peer.proposals.pop_front().expect("front exists");
            proposal.respond.fail(tessera_wire::errors::RpcError::Timeout);
        }
        self.stats.snapshots_installed += 1;
        metrics::counter!("tessera_store_snapshots_applied_total").increment(1);
        metrics::histogram!("tessera_store_snapshot_apply_seconds")
            .record(started.elapsed().as_secs_f64());
        tracing::info!(
            %range, index = %snapshot.metadata.index,
            "snapshot installed in {:?}", started.elapsed()
        );
        Ok(())
    }

    /// Notes the directory of a received snapshot's files, to delete at the end of the
    /// round: by then the snapshot is installed, or Raft did not want it.
    pub(crate) fn note_received_snapshot(&mut self, message: &Message) {
        let Some(snapshot) = message.snapshot.as_ref() else { return };
        let Ok(data) = SnapshotData::decode(&snapshot.data) else { return };
        // Only copies received for this store.
        if let Some(file) = data.files.first().map(|file| Path::new(&file.path))
            && self.is_received_file(file)
            && let Some(dir) = file.parent()
        {
            self.received_snapshots.push((dir.to_path_buf(), self.polls));
        }
    }

    /// Whether `path` is exactly `<snapshot_dir>/rcv-<…>/<file>`, with no `..` or other
    /// tricks: the only place received snapshot files live.
    pub(crate) fn is_received_file(&self, path: &Path) -> bool {
        let Ok(rest) = path.strip_prefix(&self.config.snapshot_dir) else { return false };
        let parts: Vec<_> = rest.components().collect();
        matches!(
            parts.as_slice(),
            [std::path::Component::Normal(dir), std::path::Component::Normal(_)]
                if dir.to_string_lossy().starts_with("rcv-")
        )
    }

    /// Loads a recorded snapshot install into the KV engine: clears the span, ingests the
    /// files, writes the range state and apply state and drops the record, synced; then
    /// deletes the files. Returns the range's descriptor.
    fn finish_snapshot_install(
        &self,
        range: RangeId,
        record: &SnapshotApplying,
    ) -> Result<tessera_wire::range::RangeDescriptor> {
        let corrupt =
            |reason: String| StoreError::corruption(format!("snapshot of range {range}"), reason);
        let manifest = record.data.manifest().map_err(corrupt)?;
        let descriptor = record.data.descriptor.clone();
        let span = keys::data_span(&descriptor.start_key, &descriptor.end_key);
        self.kv.ingest_snapshot(&span, &manifest)?;
        let applied = tessera_engine::codec::ApplyState {
            applied_index: LogIndex(record.index),
            applied_term: Term(record.term),
        };
        let mut kv_batch = self.kv.batch();
        RangeLocalState { state: ReplicaState::Normal, descriptor: descriptor.clone() }
            .stage(&mut kv_batch);
        kv_batch.put_apply_state(range, &applied);
        kv_batch.delete(Cf::Meta, &keys::snapshot_applying_key(range));
        self.kv.write(&mut kv_batch, true)?;
        remove_snapshot_dir(&self.config.snapshot_dir.join(format!("apply-{range}")));
        Ok(descriptor)
    }

    /// Drops a snapshot install the engine refused before touching the range (damaged or
    /// invalid files): the record and files go, and the replica restarts from disk — as
    /// it was before the snapshot's Ready, which is dropped unpersisted.
    pub(crate) fn abandon_snapshot_install(&mut self, range: RangeId) -> Result<()> {
        self.settle_applies()?;
        let mut kv_batch = self.kv.batch();
        kv_batch.delete(Cf::Meta, &keys::snapshot_applying_key(range));
        self.kv.write(&mut kv_batch, true)?;
        remove_snapshot_dir(&self.config.snapshot_dir.join(format!("apply-{range}")));
        if let Some(mut peer) = self.peers.remove(&range) {
            for proposal in std::mem::take(&mut peer.proposals) {
                proposal.respond.fail(tessera_wire::errors::RpcError::Timeout);
            }
            let error = peer.not_leader();
            for read in std::mem::take(&mut peer.reads) {
                (read.respond)(Err(error.clone()));
            }
        }
        match RangeLocalState::load(&self.kv, range)? {
            Some(state) if state.state == ReplicaState::Normal => self.start_peer(state.descriptor),
            // Uninitialized: the next message from its leader creates it again.
            _ => Ok(()),
        }
    }

    /// Finishes every snapshot install a crash interrupted (at open, before the ranges
    /// start; the raft log is then moved up to the apply state by `start_peer`).
    ///
    /// # Errors
    /// Engine failures; corruption if a record does not decode or its files are gone.
    pub(crate) fn resume_snapshot_installs(&self, ranges: &[RangeId]) -> Result<()> {
        for &range in ranges {
            let Some(bytes) = self.kv.get(Cf::Meta, &keys::snapshot_applying_key(range))? else {
                continue;
            };
            let record: SnapshotApplying = codec::decode(&bytes).map_err(|reason| {
                StoreError::corruption(format!("snapshot install record of range {range}"), reason)
            })?;
            tracing::warn!(%range, index = record.index, "finishing an interrupted snapshot install");
            match self.finish_snapshot_install(range, &record) {
                Ok(_) => {}
                // Both engines check every file before they touch the span: files refused
                // as corrupt or invalid mean nothing changed. The install is abandoned (the
                // replica keeps what it had; its leader sends a snapshot again).
                Err(StoreError::Engine(
                    error @ (tessera_engine::EngineError::Corruption { .. }
                    | tessera_engine::EngineError::InvalidArgument(_)),
                )) => {
                    tracing::error!(%range, %error, "interrupted snapshot install abandoned");
                    let mut batch = self.kv.batch();
                    batch.delete(Cf::Meta, &keys::snapshot_applying_key(range));
                    self.kv.write(&mut batch, true)?;
                    remove_snapshot_dir(&self.config.snapshot_dir.join(format!("apply-{range}")));
                }
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// The outcome of sending a snapshot of `range` to replica `to`.
    pub fn report_snapshot(&mut self, range: RangeId, to: tessera_raft::ReplicaId, ok: bool) {
        if let Some(peer) = self.peers.get_mut(&range) {
            peer.raw.report_snapshot(to, ok);
            if !ok && peer.is_leader() {
                // The cached files may be what failed (gone or damaged on this disk): the
                // next send builds afresh rather than stream the same files forever.
                peer.raw.store_mut().clear_snapshot();
            }
            self.dirty.insert(range);
        }
        if !ok {
            metrics::counter!("tessera_store_snapshot_send_failures_total").increment(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use tessera_engine::codec::StoreIdent;
    use tessera_engine::mem::{MemKvEngine, MemRaftLogEngine};
    use tessera_engine::{KvRead, RaftLogEngine};
    use tessera_wire::ids::StoreId;
    use tessera_wire::range::{RangeEpoch, Replica, ReplicaRole};
    use tessera_wire::transport::RaftEnvelope;

    use super::*;
    use crate::config::StoreConfig;

    struct NoNetwork;

    impl Network for NoNetwork {
        fn send(&mut self, _envelope: RaftEnvelope) {}
    }

    /// Range `[a, m)` with voters on stores `stores` (replica id = store id).
    fn range_a_to_m(range: RangeId, stores: std::ops::RangeInclusive<u64>) -> RangeDescriptor {
        RangeDescriptor {
            id: range,
            start_key: Bytes::from_static(b"a"),
            end_key: Bytes::from_static(b"m"),
            epoch: RangeEpoch { conf_ver: 3, version: 2 },
            replicas: stores
                .map(|id| Replica {
                    id: tessera_raft::ReplicaId(id),
                    store_id: StoreId(id),
                    role: ReplicaRole::Voter,
                })
                .collect(),
        }
    }

    /// A crash after the install record was synced (the span possibly half cleared): the
    /// next open loads the files, writes the range and apply state, drops the record and
    /// the files, and starts the replica with its log moved up to the snapshot.
    #[test]
    fn an_interrupted_install_is_finished_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let snapshot_dir = dir.path().join("snapshots");
        let range = RangeId(7);
        let descriptor = range_a_to_m(range, 1..=3);
        let span = keys::data_span(&descriptor.start_key, &descriptor.end_key);
        // The leader's data, exported where an install keeps its files.
        let source = MemKvEngine::new();
        let mut batch = source.batch();
        for key in [&b"b"[..], b"c", b"d"] {
            batch.put(Cf::Default, &keys::data_key(key), b"value");
        }
        source.write(&mut batch, true).unwrap();
        let files = snapshot_dir.join(format!("apply-{range}"));
        std::fs::create_dir_all(&files).unwrap();
        let manifest = source.export_snapshot(&source.snapshot(), &span, &files).unwrap();
        // The receiving store: a stale key in the span (half cleared) and the record.
        let raft = MemRaftLogEngine::new();
        let kv = MemKvEngine::new();
        let ident = StoreIdent { cluster_id: 1, store_id: StoreId(2) };
        crate::bootstrap_store(&raft, &kv, ident).unwrap();
        let record = SnapshotApplying {
            data: SnapshotData::new(descriptor.clone(), &manifest),
            index: 40,
            term: 6,
        };
        let mut batch = kv.batch();
        batch.put(Cf::Default, &keys::data_key(b"e"), b"left over");
        batch.put(Cf::Meta, &keys::snapshot_applying_key(range), &codec::encode(&record));
        kv.write(&mut batch, true).unwrap();
        let config = StoreConfig { snapshot_dir: snapshot_dir.clone(), ..StoreConfig::default() };
        let store = crate::Store::open(config, raft.clone(), kv.clone(), NoNetwork, ident).unwrap();
        let peer = store.peer(range).expect("the replica starts");
        assert_eq!(peer.descriptor(), &descriptor);
        assert_eq!(peer.applied_index(), LogIndex(40));
        assert_eq!(peer.log_first_index(), LogIndex(41));
        let keys: Vec<_> = kv
            .scan(Cf::Default, &span, tessera_engine::Direction::Forward, 10)
            .unwrap()
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        assert_eq!(keys, vec![keys::data_key(b"b"), keys::data_key(b"c"), keys::data_key(b"d")]);
        assert!(kv.get(Cf::Meta, &keys::snapshot_applying_key(range)).unwrap().is_none());
        assert!(!files.exists(), "the files are deleted once loaded");
        assert!(raft.raft_state(range).unwrap().is_some());
    }

    /// An interrupted install whose files turn out damaged is abandoned at open: nothing of
    /// the span changed (the engines check files first), the record and files go, and the
    /// store opens.
    #[test]
    fn an_interrupted_install_with_damaged_files_is_abandoned() {
        let dir = tempfile::tempdir().unwrap();
        let snapshot_dir = dir.path().join("snapshots");
        let range = RangeId(7);
        let descriptor = range_a_to_m(range, 2..=2);
        let span = keys::data_span(&descriptor.start_key, &descriptor.end_key);
        let source = MemKvEngine::new();
        let mut batch = source.batch();
        batch.put(Cf::Default, &keys::data_key(b"b"), b"value");
        source.write(&mut batch, true).unwrap();
        let files = snapshot_dir.join(format!("apply-{range}"));
        std::fs::create_dir_all(&files).unwrap();
        let manifest = source.export_snapshot(&source.snapshot(), &span, &files).unwrap();
        std::fs::write(&manifest.files[0].path, b"damaged").unwrap();
        let raft = MemRaftLogEngine::new();
        let kv = MemKvEngine::new();
        let ident = StoreIdent { cluster_id: 1, store_id: StoreId(2) };
        crate::bootstrap_store(&raft, &kv, ident).unwrap();
        let record =
            SnapshotApplying { data: SnapshotData::new(descriptor, &manifest), index: 40, term: 6 };
        let mut batch = kv.batch();
        batch.put(Cf::Default, &keys::data_key(b"e"), b"kept");
        batch.put(Cf::Meta, &keys::snapshot_applying_key(range), &codec::encode(&record));
        kv.write(&mut batch, true).unwrap();
        let config = StoreConfig { snapshot_dir, ..StoreConfig::default() };
        let store = crate::Store::open(config, raft, kv.clone(), NoNetwork, ident).unwrap();
        assert!(store.peer(range).is_none());
        assert!(kv.get(Cf::Meta, &keys::snapshot_applying_key(range)).unwrap().is_none());
        assert_eq!(
            kv.get(Cf::Default, &keys::data_key(b"e")).unwrap().as_deref(),
            Some(&b"kept"[..])
        );
        assert!(!files.exists());
    }

    fn span(start: &'static [u8], end: &'static [u8]) -> RangeDescriptor {
        RangeDescriptor {
            start_key: Bytes::from_static(start),
            end_key: Bytes::from_static(end),
            ..RangeDescriptor::default()
        }
    }

    #[test]
    fn overlap_treats_an_empty_end_as_infinity() {
        assert!(spans_overlap(&span(b"a", b"m"), &span(b"c", b"")));
        assert!(!spans_overlap(&span(b"a", b"m"), &span(b"m", b"")));
        assert!(spans_overlap(&span(b"", b""), &span(b"x", b"y")));
        assert!(!spans_overlap(&span(b"a", b"b"), &span(b"b", b"c")));
        assert!(spans_overlap(&span(b"b", b"d"), &span(b"a", b"c")));
    }
}
