//! How the store reaches the placement driver: [`PlacementClient`], a non-blocking queue of
//! requests whose answers the store collects on its own thread. The store sends store
//! heartbeats, range heartbeats from its leaders, asks for split ids and reports splits;
//! it executes the scheduling commands that range-heartbeat answers carry
//! (`operation::heartbeat`).
//!
//! The product binary has no placement client until the placement driver exists; tests use
//! an in-process fake behind this trait.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use tessera_wire::errors::RpcError;
use tessera_wire::ids::{RangeId, StoreId};
use tessera_wire::placement::{PlacementRequest, PlacementResponse};
use tessera_wire::raft::ReplicaId;
use tessera_wire::range::RangeEpoch;

/// The store's line to the placement driver.
///
/// Both methods are called on the store's thread and must not block: `send` queues (and may
/// drop when its queue is full: every request is periodic or retried), `take_answers`
/// returns what came back since the last call.
pub trait PlacementClient: Send {
    /// Queues `request`; its answer comes back from [`take_answers`](Self::take_answers)
    /// with the same `token`.
    fn send(&mut self, token: u64, request: PlacementRequest);

    /// Answers received since the last call, with their requests' tokens.
    fn take_answers(&mut self) -> Vec<(u64, Result<PlacementResponse, RpcError>)>;
}

/// A split asked for, waiting for its ids.
#[derive(Debug, Clone)]
pub(crate) struct SplitAsked {
    pub(crate) range: RangeId,
    pub(crate) epoch: RangeEpoch,
    pub(crate) key: Bytes,
}

/// A replica asking the placement driver whether it is still in its range.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StaleAsked {
    pub(crate) range: RangeId,
    pub(crate) replica: ReplicaId,
    /// Store ticks when asked: an unanswered question is forgotten at the next one.
    pub(crate) at: u64,
}

/// The store's side of the conversation.
pub(crate) struct PlacementState {
    pub(crate) client: Box<dyn PlacementClient>,
    next_token: u64,
    /// Splits waiting for ids, by token.
    pub(crate) splits_asked: HashMap<u64, SplitAsked>,
    /// Replicas that heard from no leader for long and asked the placement driver for
    /// their range, by token (see `Store::check_stale_replicas`).
    pub(crate) stale_asked: HashMap<u64, StaleAsked>,
    /// Requests made from answer callbacks (split reports), sent at the next tick.
    pub(crate) outbox: Arc<Mutex<Vec<PlacementRequest>>>,
    /// When each store was first seen down (store ticks), for down replicas' durations.
    pub(crate) down_since: HashMap<StoreId, u64>,
    /// Ticks at the last range heartbeat (for the traffic interval).
    pub(crate) last_range_heartbeat: u64,
    /// Ticks at the last store heartbeat.
    pub(crate) last_store_heartbeat: u64,
    /// A store heartbeat goes at the next tick (the first one, so that a new store counts
    /// as up at once).
    pub(crate) store_heartbeat_due: bool,
}

impl std::fmt::Debug for PlacementState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlacementState")
            .field("next_token", &self.next_token)
            .field("splits_asked", &self.splits_asked.len())
            .finish_non_exhaustive()
    }
}

impl PlacementState {
    pub(crate) fn new(client: Box<dyn PlacementClient>, now: u64) -> Self {
        Self {
            client,
            next_token: 1,
            splits_asked: HashMap::new(),
            stale_asked: HashMap::new(),
            outbox: Arc::default(),
            down_since: HashMap::new(),
            last_range_heartbeat: now,
            last_store_heartbeat: now,
            store_heartbeat_due: true,
        }
    }

    /// Sends `request` with a fresh token, which it returns.
    pub(crate) fn send(&mut self, request: PlacementRequest) -> u64 {
        let token = self.next_token;
        self.next_token += 1;
        self.client.send(token, request);
        token
    }

    /// Requests queued by callbacks.
    pub(crate) fn take_outbox(&self) -> Vec<PlacementRequest> {
        std::mem::take(&mut *self.outbox.lock().unwrap_or_else(PoisonError::into_inner))
    }
}
