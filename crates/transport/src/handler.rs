//! What the transport hands upwards: [`Handler`] callbacks for Raft messages, RPCs and
//! snapshots, and the [`SnapshotReceiver`] a snapshot's chunks arrive on.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use tessera_wire::errors::RpcError;
use tessera_wire::ids::NodeId;
use tessera_wire::rpc::{RpcRequest, RpcResult};
use tessera_wire::transport::{
    HeartbeatBatch, HeartbeatResponseBatch, RaftEnvelope, SnapshotChunk, SnapshotHeader,
    SnapshotStatus,
};

use crate::batcher::{fan_out_heartbeat_responses, fan_out_heartbeats};
use tokio::sync::mpsc;

/// A boxed, sendable future: what [`Handler`]'s async callbacks return.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The receiving side of the transport, implemented by the store (or a test).
///
/// Callbacks run on the transport's tokio tasks: `on_raft` must not block (hand the
/// messages to a mailbox); the futures of `on_rpc` and `on_snapshot` may take their time
/// within the request's deadline.
pub trait Handler: Send + Sync + 'static {
    /// Raft messages from node `from`, in the order it sent them. Coalesced heartbeats and
    /// heartbeat responses arrive here fanned out into one envelope per range.
    fn on_raft(&self, from: NodeId, envelopes: Vec<RaftEnvelope>);

    /// A coalesced batch of heartbeats from node `from`. By default it is fanned out into one
    /// envelope per range and handed to [`on_raft`](Self::on_raft); a store may instead step
    /// each range straight from its tuple.
    fn on_heartbeats(&self, from: NodeId, batch: HeartbeatBatch) {
        self.on_raft(from, fan_out_heartbeats(&batch));
    }

    /// A coalesced batch of heartbeat responses from node `from`; by default fanned out to
    /// [`on_raft`](Self::on_raft) like [`on_heartbeats`](Self::on_heartbeats).
    fn on_heartbeat_responses(&self, from: NodeId, batch: HeartbeatResponseBatch) {
        self.on_raft(from, fan_out_heartbeat_responses(&batch));
    }

    /// Serves an RPC. The transport enforces the request's deadline (answering
    /// `RpcError::Timeout` when it expires) and fills in the response id.
    fn on_rpc(&self, from: NodeId, request: RpcRequest) -> BoxFuture<RpcResult> {
        let _ = (from, request);
        Box::pin(async {
            RpcResult::Err(RpcError::Internal { message: "this node serves no RPCs".to_owned() })
        })
    }

    /// Receives a snapshot: `header` is the first chunk's header; `chunks` yields every
    /// chunk (the first included) after its checksum was verified, in order. Return
    /// `Received` once the snapshot is stored, or `Rejected` (the transport stops reading
    /// and tells the sender).
    fn on_snapshot(
        &self,
        from: NodeId,
        header: SnapshotHeader,
        chunks: SnapshotReceiver,
    ) -> BoxFuture<SnapshotStatus> {
        let _ = (from, header, chunks);
        Box::pin(async {
            SnapshotStatus::Rejected { reason: "this node accepts no snapshots".to_owned() }
        })
    }
}

/// Why a snapshot stream stopped before its last chunk.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotStreamError {
    /// A chunk failed validation (checksum, sequence, or not a chunk of this snapshot).
    #[error("bad snapshot chunk: {reason}")]
    BadChunk {
        /// What was wrong.
        reason: String,
    },
    /// The stream or connection broke.
    #[error("snapshot stream broken: {reason}")]
    Broken {
        /// What quinn reported.
        reason: String,
    },
}

/// The verified chunks of one incoming snapshot, in order.
pub struct SnapshotReceiver {
    pub(crate) from: NodeId,
    pub(crate) chunks: mpsc::Receiver<Result<SnapshotChunk, SnapshotStreamError>>,
}

impl fmt::Debug for SnapshotReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotReceiver").field("from", &self.from).finish_non_exhaustive()
    }
}

impl SnapshotReceiver {
    /// The sending node.
    #[must_use]
    pub const fn from(&self) -> NodeId {
        self.from
    }

    /// The next verified chunk; `None` after the last one (`last == true`) was returned, or
    /// an error if the stream broke or a chunk was bad (nothing follows an error).
    pub async fn next(&mut self) -> Option<Result<SnapshotChunk, SnapshotStreamError>> {
        self.chunks.recv().await
    }
}
