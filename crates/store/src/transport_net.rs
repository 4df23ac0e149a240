//! The store on the QUIC transport: [`TransportNetwork`] is the store's [`Network`] over a
//! [`Transport`], and [`StoreRpcHandler`] is the transport's [`Handler`] that hands what
//! arrives (Raft messages, KV RPCs) to a running store through its [`StoreHandle`].
//!
//! In this layout every store is its own node: store `n` is reached at node `n`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use tessera_transport::{BoxFuture, Handler, Transport};
use tessera_wire::errors::RpcError;
use tessera_wire::ids::{NodeId, StoreId};
use tessera_wire::rpc::{RpcRequest, RpcRequestBody, RpcResponseBody, RpcResult};
use tessera_wire::transport::RaftEnvelope;

use crate::env::Network;
use crate::fsm::system::StoreHandle;

/// The node that hosts `store` (one store per node).
#[must_use]
pub const fn node_of(store: StoreId) -> NodeId {
    NodeId(store.0)
}

/// The store's [`Network`] over the QUIC [`Transport`].
///
/// [`send`](Network::send) only buffers; [`flush`](Network::flush) (end of every round)
/// hands each destination node its messages with one
/// [`Transport::send_raft_many`] call; [`tick`](Network::tick) (every store tick) advances
/// the transport's heartbeat-coalescing tick ([`Transport::tick`]), which sends the
/// coalesced heartbeats and their responses.
#[derive(Debug)]
pub struct TransportNetwork {
    transport: Arc<Transport>,
    pending: BTreeMap<NodeId, Vec<RaftEnvelope>>,
}

impl TransportNetwork {
    /// A network sending through `transport`.
    #[must_use]
    pub fn new(transport: Arc<Transport>) -> Self {
        Self { transport, pending: BTreeMap::new() }
    }

    /// The transport this network sends through.
    #[must_use]
    pub fn transport(&self) -> &Arc<Transport> {
        &self.transport
    }
}

impl Network for TransportNetwork {
    fn send(&mut self, envelope: RaftEnvelope) {
        self.pending.entry(node_of(envelope.to_store)).or_default().push(envelope);
    }

    fn flush(&mut self) {
        for (node, envelopes) in std::mem::take(&mut self.pending) {
            let dropped = self.transport.send_raft_many(node, envelopes);
            if dropped > 0 {
                tracing::debug!(%node, dropped, "raft messages dropped by the transport");
            }
        }
    }

    /// Only a definite "down" counts: a node that was connected once and whose connection
    /// is now closed. A node never contacted yet (connections are dialled lazily) is
    /// believed up.
    fn tick(&mut self) {
        // Coalesced heartbeats (and their responses) leave once per tick.
        self.transport.tick();
    }

    fn store_alive(&self, store: StoreId) -> bool {
        let liveness = self.transport.liveness(node_of(store));
        liveness.connected || liveness.last_seen.is_none()
    }
}

/// The transport's [`Handler`] for one store: Raft messages go to the store's mailbox, KV
/// RPCs become store requests answered through a oneshot channel.
///
/// The transport must exist before the store (the store's network sends through it), and
/// the store's handle exists only once the store runs, so the handle is set afterwards
/// with [`set_store`](Self::set_store). Until then Raft messages are dropped (Raft retries)
/// and KV RPCs are answered `ServerBusy`.
#[derive(Debug, Default)]
pub struct StoreRpcHandler {
    store: Mutex<Option<StoreHandle>>,
}

impl StoreRpcHandler {
    /// A handler with no store yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Routes everything that arrives from now on to `handle` (replacing any earlier one).
    pub fn set_store(&self, handle: StoreHandle) {
        *self.store.lock().unwrap_or_else(PoisonError::into_inner) = Some(handle);
    }

    /// Stops routing to the store: what arrives from now on is dropped or refused.
    pub fn clear_store(&self) {
        *self.store.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    fn handle(&self) -> Option<StoreHandle> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl Handler for StoreRpcHandler {
    fn on_raft(&self, from: NodeId, envelopes: Vec<RaftEnvelope>) {
        match self.handle() {
            Some(handle) => handle.send_raft(envelopes),
            None => {
                tracing::debug!(%from, count = envelopes.len(), "raft messages before the store");
            }
        }
    }

    fn on_rpc(&self, from: NodeId, request: RpcRequest) -> BoxFuture<RpcResult> {
        let handle = self.handle();
        Box::pin(async move {
            let Some(handle) = handle else {
                return RpcResult::Err(RpcError::ServerBusy {
                    reason: "store not started".to_owned(),
                    retry_after_ms: 10,
                });
            };
            let unanswered = || RpcError::Internal {
                message: "store dropped the request unanswered".to_owned(),
            };
            match request.body {
                RpcRequestBody::Kv(kv_request) => {
                    let (sender, receiver) = tokio::sync::oneshot::channel();
                    handle.kv(
                        kv_request,
                        Box::new(move |result| {
                            let _ = sender.send(result);
                        }),
                    );
                    match receiver.await {
                        Ok(result) => result.map(RpcResponseBody::Kv).into(),
                        Err(_) => RpcResult::Err(unanswered()),
                    }
                }
                RpcRequestBody::StoreAdmin(admin_request) => {
                    let (sender, receiver) = tokio::sync::oneshot::channel();
                    handle.admin(
                        admin_request,
                        Box::new(move |result| {
                            let _ = sender.send(result);
                        }),
                    );
                    match receiver.await {
                        Ok(result) => result.map(RpcResponseBody::StoreAdmin).into(),
                        Err(_) => RpcResult::Err(unanswered()),
                    }
                }
                RpcRequestBody::Placement(_) => RpcResult::Err(RpcError::InvalidRequest {
                    message: format!("node {from}: a store does not serve placement requests"),
                }),
            }
        })
    }
}
