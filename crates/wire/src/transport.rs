//! Node-to-node messages: the handshake, batched Raft messages, coalesced heartbeats and
//! snapshot streams (ARCHITECTURE.md §6).
//!
//! Heartbeats are the one Raft message the transport rewrites: per tick, the heartbeats of
//! every active range from one store to another travel as compact [`Heartbeat`] tuples in a
//! single [`HeartbeatBatch`], and their answers as [`HeartbeatResponse`] tuples. Only
//! heartbeats that carry nothing but those tuple fields are coalesced; one with a read-index
//! context (or any other field set) goes as a full [`RaftEnvelope`], so the conversion is
//! lossless both ways.

use bytes::Bytes;
use rkyv::{Archive, Deserialize, Serialize};

use crate::frame::{PROTOCOL_VERSION, PROTOCOL_VERSION_MIN};
use crate::ids::{NodeId, RangeId, StoreId};
use crate::raft::{LogIndex, Message, MessageKind, ReplicaId, SnapshotMetadata, Term};
use crate::range::RangeDescriptor;

/// The first frame each side sends on a new connection. Its layout is frozen: every
/// protocol version reads it, which is what lets two versions find a common one.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Hello {
    /// The cluster the sender belongs to; a connection across clusters is refused.
    pub cluster_id: u64,
    /// The sending node.
    pub node_id: NodeId,
    /// The oldest frame version the sender reads and writes.
    pub version_min: u8,
    /// The newest frame version the sender reads and writes.
    pub version_max: u8,
}

/// Why a handshake failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The peer belongs to another cluster.
    #[error("peer is in cluster {remote}, this node in cluster {local}")]
    ClusterMismatch {
        /// This node's cluster.
        local: u64,
        /// The peer's cluster.
        remote: u64,
    },
    /// The two version ranges do not overlap.
    #[error(
        "no common protocol version: local {local_min}..={local_max}, peer {remote_min}..={remote_max}"
    )]
    NoCommonVersion {
        /// This node's oldest version.
        local_min: u8,
        /// This node's newest version.
        local_max: u8,
        /// The peer's oldest version.
        remote_min: u8,
        /// The peer's newest version.
        remote_max: u8,
    },
    /// The peer's hello names an empty version range.
    #[error("peer sent an empty version range {min}..={max}")]
    EmptyVersionRange {
        /// The peer's oldest version.
        min: u8,
        /// The peer's newest version.
        max: u8,
    },
}

impl Hello {
    /// This build's hello: every version from [`PROTOCOL_VERSION_MIN`] to
    /// [`PROTOCOL_VERSION`].
    #[must_use]
    pub const fn new(cluster_id: u64, node_id: NodeId) -> Self {
        Self {
            cluster_id,
            node_id,
            version_min: PROTOCOL_VERSION_MIN,
            version_max: PROTOCOL_VERSION,
        }
    }

    /// The version both sides use from now on: the highest one both support. Symmetric, so
    /// both ends reach the same answer from the two hellos.
    pub fn negotiate(&self, peer: &Self) -> Result<u8, HandshakeError> {
        if peer.cluster_id != self.cluster_id {
            return Err(HandshakeError::ClusterMismatch {
                local: self.cluster_id,
                remote: peer.cluster_id,
            });
        }
        if peer.version_min > peer.version_max {
            return Err(HandshakeError::EmptyVersionRange {
                min: peer.version_min,
                max: peer.version_max,
            });
        }
        let highest = self.version_max.min(peer.version_max);
        if highest < self.version_min.max(peer.version_min) {
            return Err(HandshakeError::NoCommonVersion {
                local_min: self.version_min,
                local_max: self.version_max,
                remote_min: peer.version_min,
                remote_max: peer.version_max,
            });
        }
        Ok(highest)
    }
}

/// One Raft message of one range, addressed store to store.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct RaftEnvelope {
    /// The range (Raft group) the message belongs to.
    pub range: RangeId,
    /// The sending store.
    pub from_store: StoreId,
    /// The receiving store.
    pub to_store: StoreId,
    /// The message.
    pub message: Message,
}

/// Everything queued for one destination node, flushed together.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct RaftBatch {
    /// The messages, in send order.
    pub envelopes: Vec<RaftEnvelope>,
}

/// Whether every field of `message` other than the ones a coalesced tuple carries is empty.
fn only_tuple_fields(message: &Message, commit_allowed: bool, quiesce_allowed: bool) -> bool {
    message.log_term == Term(0)
        && message.index == LogIndex(0)
        && message.entries.is_empty()
        && (commit_allowed || message.commit == LogIndex(0))
        && !message.reject
        && message.reject_hint == LogIndex(0)
        && message.snapshot.is_none()
        && message.context.is_empty()
        && (quiesce_allowed || !message.quiesce)
}

/// One range's heartbeat inside a [`HeartbeatBatch`]: `(range, from, to, term, commit)`.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Heartbeat {
    /// The range.
    pub range: RangeId,
    /// The leader replica.
    pub from: ReplicaId,
    /// The follower replica.
    pub to: ReplicaId,
    /// The leader's term.
    pub term: Term,
    /// The leader's Raft commit index, as sent to this follower.
    pub commit: LogIndex,
    /// The leader is putting the idle group to sleep.
    pub quiesce: bool,
}

impl Heartbeat {
    /// The tuple for a heartbeat message of `range`, or `None` if the message is not a
    /// heartbeat or carries more than a tuple holds (a read-index context): such a message
    /// goes as a full [`RaftEnvelope`].
    #[must_use]
    pub fn from_message(range: RangeId, message: &Message) -> Option<Self> {
        (message.kind == MessageKind::Heartbeat && only_tuple_fields(message, true, true))
            .then_some(Self {
                range,
                from: message.from,
                to: message.to,
                term: message.term,
                commit: message.commit,
                quiesce: message.quiesce,
            })
    }

    /// The Raft message this tuple stands for.
    #[must_use]
    pub fn to_message(&self) -> Message {
        let mut message = Message::new(MessageKind::Heartbeat, self.from, self.to, self.term);
        message.commit = self.commit;
        message.quiesce = self.quiesce;
        message
    }
}

/// The heartbeats from one store to another for one tick.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct HeartbeatBatch {
    /// The sending store.
    pub from_store: StoreId,
    /// The receiving store.
    pub to_store: StoreId,
    /// The sender's tick count when the batch was built (echoed by the responses).
    pub tick: u64,
    /// One tuple per active range.
    pub beats: Vec<Heartbeat>,
}

/// One range's heartbeat answer inside a [`HeartbeatResponseBatch`]. A Raft heartbeat
/// response carries nothing but its addressing and term (the read-index context, when there
/// is one, makes it a full message).
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct HeartbeatResponse {
    /// The range.
    pub range: RangeId,
    /// The follower replica.
    pub from: ReplicaId,
    /// The leader replica.
    pub to: ReplicaId,
    /// The follower's term.
    pub term: Term,
}

impl HeartbeatResponse {
    /// The tuple for a heartbeat response of `range`, or `None` if the message is not one or
    /// carries a read-index context (or any other field a tuple does not hold).
    #[must_use]
    pub fn from_message(range: RangeId, message: &Message) -> Option<Self> {
        (message.kind == MessageKind::HeartbeatResponse && only_tuple_fields(message, false, false))
            .then_some(Self { range, from: message.from, to: message.to, term: message.term })
    }

    /// The Raft message this tuple stands for.
    #[must_use]
    pub fn to_message(&self) -> Message {
        Message::new(MessageKind::HeartbeatResponse, self.from, self.to, self.term)
    }
}

/// The heartbeat answers from one store to another for one received batch.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct HeartbeatResponseBatch {
    /// The answering store.
    pub from_store: StoreId,
    /// The store that sent the heartbeats.
    pub to_store: StoreId,
    /// The `tick` of the batch being answered.
    pub tick: u64,
    /// One tuple per answered heartbeat.
    pub responses: Vec<HeartbeatResponse>,
}

/// One file of a snapshot (one column family's SST, say), as announced in the first chunk.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct SnapshotFile {
    /// The column family the file belongs to.
    pub cf: String,
    /// Its length.
    pub size_bytes: u64,
    /// CRC-32C of the whole file.
    pub checksum: u32,
    /// Keys in the file (checked again when it is loaded).
    pub keys: u64,
}

/// What the first chunk of a snapshot carries: enough for the receiver to check the snapshot
/// against its state before accepting the data, and to hand Raft a snapshot message at the
/// end.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct SnapshotHeader {
    /// The sending store.
    pub from_store: StoreId,
    /// The receiving store.
    pub to_store: StoreId,
    /// The leader replica sending it.
    pub from: ReplicaId,
    /// The replica receiving it.
    pub to: ReplicaId,
    /// The leader's term.
    pub term: Term,
    /// Where the snapshot sits in the log and the membership there.
    pub metadata: SnapshotMetadata,
    /// The range as of the snapshot.
    pub descriptor: RangeDescriptor,
    /// The files that follow, referred to by index from each chunk.
    pub files: Vec<SnapshotFile>,
}

/// A piece of a snapshot stream. Chunks of one snapshot arrive in order on their own stream;
/// the first (`seq == 0`) carries the header.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct SnapshotChunk {
    /// The range.
    pub range: RangeId,
    /// Distinguishes snapshots of one range (chosen by the sender, never reused by it).
    pub snapshot_id: u64,
    /// The chunk's position in the stream, from 0.
    pub seq: u32,
    /// The header, in the first chunk only.
    pub header: Option<SnapshotHeader>,
    /// Index into `header.files` of the file `data` belongs to.
    pub file_index: u32,
    /// Where `data` starts in that file.
    pub offset: u64,
    /// The bytes.
    pub data: Bytes,
    /// CRC-32C of `file_index` and `offset` (big-endian) followed by `data`; see
    /// [`SnapshotChunk::compute_checksum`].
    pub checksum: u32,
    /// This is the last chunk of the snapshot.
    pub last: bool,
}

impl SnapshotChunk {
    /// The checksum of this chunk's position and data.
    #[must_use]
    pub fn compute_checksum(&self) -> u32 {
        let mut position = [0u8; 12];
        position[..4].copy_from_slice(&self.file_index.to_be_bytes());
        position[4..].copy_from_slice(&self.offset.to_be_bytes());
        crc32c::crc32c_append(crc32c::crc32c(&position), &self.data)
    }

    /// Sets `checksum` from the current fields; call after filling in the chunk.
    #[must_use]
    pub fn sealed(mut self) -> Self {
        self.checksum = self.compute_checksum();
        self
    }

    /// Whether `checksum` matches the chunk's position and data.
    #[must_use]
    pub fn checksum_matches(&self) -> bool {
        self.checksum == self.compute_checksum()
    }
}

/// How a snapshot transfer stands, from the receiver's side.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum SnapshotStatus {
    /// Chunks are being received; send more (flow control).
    Receiving,
    /// Every chunk arrived and checked out; the snapshot was handed to the range.
    Received,
    /// The receiver refused the snapshot (stale, overlapping, too many in flight, bad
    /// checksum); the sender stops and reports the failure to Raft.
    Rejected {
        /// Why, for logs.
        reason: String,
    },
}

/// The receiver's answer on a snapshot stream.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct SnapshotAck {
    /// The range.
    pub range: RangeId,
    /// The snapshot.
    pub snapshot_id: u64,
    /// How many chunks (from `seq` 0) have been received and checked.
    pub chunks_received: u32,
    /// The transfer's state.
    pub status: SnapshotStatus,
}
