//! One replica of one range: its Raft group, its descriptor, and the requests waiting on it.
//! State only — what happens to it lives in `operation/`, when it happens in `fsm/`.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;

use tessera_engine::RaftLogEngine;
use tessera_engine::RangeLogStorage;
use tessera_engine::codec::ApplyState;
use tessera_raft::{LogIndex, RawNode, ReplicaId, Role, Term};
use tessera_wire::errors::RpcError;
use tessera_wire::ids::{RangeId, StoreId};
use tessera_wire::kv::{KvCommand, KvResponse};
use tessera_wire::range::{RangeDescriptor, Replica};

/// Answers a data request.
pub type KvResponder = Box<dyn FnOnce(Result<KvResponse, RpcError>) + Send>;
/// Answers a split request with the two resulting descriptors (left, right).
pub type SplitResponder =
    Box<dyn FnOnce(Result<(RangeDescriptor, RangeDescriptor), RpcError>) + Send>;
/// Answers a membership change with the range as it is after the change.
pub type ChangeResponder = Box<dyn FnOnce(Result<RangeDescriptor, RpcError>) + Send>;

/// Who is waiting for a proposal, and what answer they expect.
pub(crate) enum Responder {
    /// A raw write or compare-and-swap.
    Kv(KvResponder),
    /// A split.
    Split(SplitResponder),
    /// A membership change.
    ChangeReplicas(ChangeResponder),
    /// Nobody waits (a command the store proposes for itself, such as log truncation).
    Nobody,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Kv(_) => "Responder::Kv",
            Self::Split(_) => "Responder::Split",
            Self::ChangeReplicas(_) => "Responder::ChangeReplicas",
            Self::Nobody => "Responder::Nobody",
        })
    }
}

impl Responder {
    /// Answers with an error.
    pub(crate) fn fail(self, error: RpcError) {
        match self {
            Self::Kv(respond) => respond(Err(error)),
            Self::Split(respond) => respond(Err(error)),
            Self::ChangeReplicas(respond) => respond(Err(error)),
            Self::Nobody => {}
        }
    }
}

/// A proposal in the log, answered when the entry at `index` is applied: with its result if
/// that entry has `term`, else `StaleCommand` (another leader overwrote it).
#[derive(Debug)]
pub(crate) struct Proposal {
    pub(crate) index: LogIndex,
    pub(crate) term: Term,
    /// The response variant a successful data write answers with.
    pub(crate) ok: Option<KvResponse>,
    pub(crate) respond: Responder,
    /// When it was proposed, for the propose-to-apply latency metric.
    pub(crate) proposed_at: std::time::Instant,
}

/// A read waiting for its read index, then for apply to reach it.
pub(crate) struct PendingRead {
    pub(crate) id: u64,
    pub(crate) command: KvCommand,
    pub(crate) epoch_version: u64,
    /// Set once the Raft core answered the read index.
    pub(crate) index: Option<LogIndex>,
    pub(crate) deadline_tick: u64,
    pub(crate) respond: KvResponder,
}

impl std::fmt::Debug for PendingRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingRead")
            .field("id", &self.id)
            .field("index", &self.index)
            .field("deadline_tick", &self.deadline_tick)
            .finish_non_exhaustive()
    }
}

/// Write load since the last split check, for the size/key-count check.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct WriteLoad {
    pub(crate) bytes: u64,
    pub(crate) keys: u64,
}

/// A replica the group removed while this replica led: its store is told (a `Tombstone`
/// message) until the budget runs out, so it deletes the replica even if it never applied
/// its own removal.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RemovedReplica {
    pub(crate) replica: Replica,
    /// The membership version that removed it.
    pub(crate) conf_ver: u64,
    /// Tombstones still to send (counted only while its store is believed up).
    pub(crate) sends_left: u32,
}

/// Traffic since the last range heartbeat.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Traffic {
    pub(crate) written_bytes: u64,
    pub(crate) written_keys: u64,
    pub(crate) read_bytes: u64,
    pub(crate) read_keys: u64,
}

impl Traffic {
    /// Counts a key of `bytes` (key and value) written.
    pub(crate) fn write(&mut self, bytes: usize) {
        self.written_bytes += bytes as u64;
        self.written_keys += 1;
    }
}

/// Requests to this leader since the last split check, and a uniform sample of their keys
/// (reservoir sampling) for a load-based split.
#[derive(Debug, Default, Clone)]
pub(crate) struct LoadSampler {
    pub(crate) requests: u64,
    pub(crate) samples: Vec<bytes::Bytes>,
}

/// Keys a load sampler keeps.
pub(crate) const LOAD_SAMPLES: usize = 64;

impl LoadSampler {
    /// Counts one request on `key`; `draw` is a uniform random number.
    pub(crate) fn record(&mut self, key: &bytes::Bytes, draw: u64) {
        self.requests += 1;
        if self.samples.len() < LOAD_SAMPLES {
            self.samples.push(key.clone());
        } else {
            let slot = (draw % self.requests) as usize;
            if slot < LOAD_SAMPLES {
                self.samples[slot] = key.clone();
            }
        }
    }

    /// The median sampled key, if enough were sampled.
    pub(crate) fn median(&self) -> Option<bytes::Bytes> {
        if self.samples.len() < 8 {
            return None;
        }
        let mut keys = self.samples.clone();
        keys.sort();
        Some(keys[keys.len() / 2].clone())
    }
}

/// One replica on this store.
#[derive(Debug)]
pub struct Peer<R: RaftLogEngine> {
    pub(crate) store_id: StoreId,
    pub(crate) replica_id: ReplicaId,
    pub(crate) raw: RawNode<RangeLogStorage<R>>,
    /// The range as of `applied`.
    pub(crate) descriptor: RangeDescriptor,
    pub(crate) applied: ApplyState,
    /// The leader as last reported by the core.
    pub(crate) leader: ReplicaId,
    pub(crate) proposals: VecDeque<Proposal>,
    pub(crate) reads: VecDeque<PendingRead>,
    /// Ticks since anything happened on this range (for quiescence).
    pub(crate) idle_ticks: u32,
    pub(crate) write_load: WriteLoad,
    /// The log index every replica agreed to truncate up to (applied `CompactLog`); this
    /// replica truncates as far as its durable apply index allows.
    pub(crate) compact_wanted: LogIndex,
    /// Stores that were down when this leader quiesced: it wakes when one comes back.
    pub(crate) slept_without: Vec<StoreId>,
    /// Stores of replicas not (yet) in the descriptor, learned from their messages: an
    /// uninitialized replica answers its leader through this.
    pub(crate) peer_stores: HashMap<ReplicaId, StoreId>,
    /// Replicas removed while this replica led, still to be told.
    pub(crate) removed: Vec<RemovedReplica>,
    /// The directory of the last snapshot this replica built (deleted when a newer one is
    /// built or the replica goes).
    pub(crate) snapshot_dir: Option<PathBuf>,
    /// When (store ticks) a message last reached this replica, for the stale-replica check.
    pub(crate) last_heard: u64,
    /// When (store ticks) this replica last sent a range heartbeat (as leader).
    pub(crate) last_heartbeat: u64,
    /// Its last range heartbeat listed replicas still catching up: the next one goes as
    /// soon as they have caught up (placement waits for that to promote a learner).
    pub(crate) reported_pending: bool,
    /// Traffic since the last range heartbeat.
    pub(crate) traffic: Traffic,
    /// Traffic since the last store heartbeat.
    pub(crate) store_traffic: Traffic,
    /// Requests since the last split check (leader only).
    pub(crate) load: LoadSampler,
}

impl<R: RaftLogEngine> Peer<R> {
    /// The range.
    #[must_use]
    pub fn range(&self) -> RangeId {
        self.descriptor.id
    }

    /// The range's descriptor as of the applied index.
    #[must_use]
    pub fn descriptor(&self) -> &RangeDescriptor {
        &self.descriptor
    }

    /// Whether the replica holds the range's data: false for a replica created by a message
    /// that still waits for its first snapshot (it has no key span yet).
    #[must_use]
    pub fn is_initialized(&self) -> bool {
        !self.descriptor.replicas.is_empty()
    }

    /// This replica's id in its group.
    #[must_use]
    pub fn replica_id(&self) -> ReplicaId {
        self.replica_id
    }

    /// Whether this replica leads its range.
    #[must_use]
    pub fn is_leader(&self) -> bool {
        self.raw.raft().role() == Role::Leader
    }

    /// The applied index.
    #[must_use]
    pub fn applied_index(&self) -> LogIndex {
        self.applied.applied_index
    }

    /// The first index still in the log (everything before was truncated).
    #[must_use]
    pub fn log_first_index(&self) -> LogIndex {
        self.raw.store().raft_state().first_index()
    }

    /// Whether the range sleeps (no ticks, no heartbeats).
    #[must_use]
    pub fn is_quiesced(&self) -> bool {
        self.raw.is_quiesced()
    }

    /// Counts keys read (for heartbeats).
    pub(crate) fn count_read(&mut self, keys: u64, bytes: u64) {
        for traffic in [&mut self.traffic, &mut self.store_traffic] {
            traffic.read_bytes += bytes;
            traffic.read_keys += keys;
        }
    }

    /// The known leader as a replica of the descriptor, if any.
    pub(crate) fn leader_replica(&self) -> Option<Replica> {
        if self.leader.is_some() { self.descriptor.replica(self.leader).copied() } else { None }
    }

    /// The `NotLeader` answer for this range.
    pub(crate) fn not_leader(&self) -> RpcError {
        RpcError::NotLeader { range: self.descriptor.id, leader: self.leader_replica() }
    }

    /// The store of replica `id`: from the descriptor, else as learned from its messages or
    /// from the replicas this leader removed.
    pub(crate) fn store_of(&self, id: ReplicaId) -> Option<StoreId> {
        self.descriptor
            .replica(id)
            .map(|replica| replica.store_id)
            .or_else(|| self.peer_stores.get(&id).copied())
            .or_else(|| {
                self.removed.iter().find(|r| r.replica.id == id).map(|r| r.replica.store_id)
            })
    }
}
