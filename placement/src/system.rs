//! A placement node on its own thread behind a bounded mailbox, ticked by the wall clock,
//! and its face to the QUIC transport: [`PlacementRpcHandler`] hands Raft messages and
//! placement RPCs to the mailbox, [`TransportNodeNetwork`] sends Raft messages.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError, bounded};
use parking_lot::RwLock;
use tessera_engine::{KvEngine, RaftLogEngine};
use tessera_raft::Ticker;
use tessera_transport::{BoxFuture, Handler, Transport};
use tessera_wire::errors::RpcError;
use tessera_wire::ids::NodeId;
use tessera_wire::placement::PlacementRequest;
use tessera_wire::rpc::{RpcRequest, RpcRequestBody, RpcResponseBody, RpcResult};
use tessera_wire::transport::RaftEnvelope;

use crate::node::{NodeInspection, NodeNetwork, PlacementNode, Responder};

/// What reaches a running placement node.
pub enum NodeMsg {
    /// Raft messages from other members.
    Raft(Vec<RaftEnvelope>),
    /// A request to serve.
    Request(Box<PlacementRequest>, Responder),
    /// Report the member as it is now (with the range directory when the flag is set).
    Inspect(bool, Box<dyn FnOnce(NodeInspection) + Send>),
    /// Stop after this message.
    Stop,
}

impl std::fmt::Debug for NodeMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Raft(envelopes) => write!(f, "Raft({})", envelopes.len()),
            Self::Request(request, _) => write!(f, "Request({request:?})"),
            Self::Inspect(with_ranges, _) => write!(f, "Inspect({with_ranges})"),
            Self::Stop => f.write_str("Stop"),
        }
    }
}

/// Messages taken per loop before the node handles its Ready.
const DRAIN_MAX: usize = 4096;

/// A handle to send to a running placement node.
#[derive(Debug, Clone)]
pub struct PlacementHandle {
    mailbox: Sender<NodeMsg>,
}

impl PlacementHandle {
    /// Delivers Raft messages; dropped when the mailbox is full (Raft retries).
    pub fn send_raft(&self, envelopes: Vec<RaftEnvelope>) {
        if let Err(TrySendError::Full(_)) = self.mailbox.try_send(NodeMsg::Raft(envelopes)) {
            metrics::counter!("tessera_placement_mailbox_full_total").increment(1);
        }
    }

    /// Asks for the member as it is now (with the range directory when `with_ranges`);
    /// `false` (and `respond` is dropped) when the member has stopped or its mailbox is full.
    pub fn inspect(
        &self,
        with_ranges: bool,
        respond: Box<dyn FnOnce(NodeInspection) + Send>,
    ) -> bool {
        self.mailbox.try_send(NodeMsg::Inspect(with_ranges, respond)).is_ok()
    }

    /// Submits a request; answered `ServerBusy` at once when the mailbox is full.
    pub fn request(&self, request: PlacementRequest, respond: Responder) {
        match self.mailbox.try_send(NodeMsg::Request(Box::new(request), respond)) {
            Ok(()) => {}
            Err(TrySendError::Full(NodeMsg::Request(_, respond))) => {
                respond(Err(RpcError::ServerBusy {
                    reason: "placement mailbox full".to_owned(),
                    retry_after_ms: 10,
                }));
            }
            Err(TrySendError::Disconnected(NodeMsg::Request(_, respond))) => {
                respond(Err(RpcError::NotPlacementLeader { leader: None, address: None }));
            }
            Err(_) => {}
        }
    }
}

/// A placement node running on its own thread.
#[derive(Debug)]
pub struct PlacementSystem {
    handle: PlacementHandle,
    thread: Option<JoinHandle<()>>,
}

impl PlacementSystem {
    /// Starts `node` on a thread with a mailbox of `capacity` messages.
    ///
    /// # Errors
    /// The thread could not be spawned.
    pub fn start<R, K, N>(
        node: PlacementNode<R, K, N>,
        tick: Duration,
        capacity: usize,
    ) -> std::io::Result<Self>
    where
        R: RaftLogEngine,
        K: KvEngine,
        N: NodeNetwork + 'static,
    {
        let (sender, receiver) = bounded(capacity);
        let name = format!("placement-{}", node.node_id());
        // Twice the election timeout: enough to end every lease and timer after a pause.
        let catch_up = node.config().election_ticks.saturating_mul(2);
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || run(node, tick, catch_up, &receiver))?;
        Ok(Self { handle: PlacementHandle { mailbox: sender }, thread: Some(thread) })
    }

    /// A handle to send to the node.
    #[must_use]
    pub fn handle(&self) -> PlacementHandle {
        self.handle.clone()
    }

    /// Stops the node and waits for its thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = self.handle.mailbox.send(NodeMsg::Stop);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("placement thread panicked");
        }
    }
}

impl Drop for PlacementSystem {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn run<R: RaftLogEngine, K: KvEngine, N: NodeNetwork>(
    mut node: PlacementNode<R, K, N>,
    tick: Duration,
    catch_up_ticks: u32,
    mailbox: &Receiver<NodeMsg>,
) {
    let mut ticker = Ticker::new(tick, catch_up_ticks, Instant::now());
    loop {
        let wait = ticker.deadline().saturating_duration_since(Instant::now());
        let first = match mailbox.recv_timeout(wait) {
            Ok(message) => Some(message),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        // Ticks first, made up if this thread did not run for a while: a leader must not
        // answer from a lease that ended while it slept (see `Ticker`).
        for _ in 0..ticker.due(Instant::now()) {
            node.tick();
        }
        let mut stop = false;
        for message in first.into_iter().chain(mailbox.try_iter().take(DRAIN_MAX)) {
            match message {
                NodeMsg::Raft(envelopes) => {
                    for envelope in envelopes {
                        node.on_raft(envelope);
                    }
                }
                NodeMsg::Request(request, respond) => node.on_request(*request, respond),
                NodeMsg::Inspect(with_ranges, respond) => respond(node.inspect(with_ranges)),
                NodeMsg::Stop => stop = true,
            }
        }
        for _ in 0..64 {
            match node.poll() {
                Ok(true) => {}
                Ok(false) => break,
                Err(error) => {
                    // The engines are failing: stop serving; a restart recovers from disk.
                    tracing::error!(node = %node.node_id(), %error, "placement node stopped");
                    return;
                }
            }
        }
        if stop {
            return;
        }
    }
}

/// The transport settings of placement member `node`: a member has no store, so its
/// "store id" on the wire is its node id (the group's Raft envelopes carry member ids
/// there), and heartbeats are not coalesced (one Raft group: nothing to gather, and a
/// heartbeat must not wait for a tick).
#[must_use]
pub fn member_transport_config(
    node: NodeId,
    cluster_id: u64,
    listen: std::net::SocketAddr,
    tls: tessera_transport::tls::NodeTls,
) -> tessera_transport::TransportConfig {
    let mut config = tessera_transport::TransportConfig::new(
        node,
        tessera_wire::ids::StoreId(node.0),
        cluster_id,
        listen,
        tls,
    );
    config.batcher.coalesce_heartbeats = false;
    config
}

/// Sends a placement node's Raft messages over the QUIC transport.
#[derive(Debug, Clone)]
pub struct TransportNodeNetwork {
    transport: Arc<Transport>,
}

impl TransportNodeNetwork {
    /// Over `transport` (members' addresses must be set on it).
    #[must_use]
    pub fn new(transport: Arc<Transport>) -> Self {
        Self { transport }
    }
}

impl NodeNetwork for TransportNodeNetwork {
    fn send(&mut self, to: NodeId, envelope: RaftEnvelope) {
        if self.transport.send_raft(to, envelope).is_err() {
            metrics::counter!("tessera_placement_messages_dropped_total").increment(1);
        }
    }

    fn tick(&mut self) {
        // Heartbeats the transport gathered for this tick go now (a transport configured
        // without coalescing has none waiting).
        self.transport.tick();
    }

    fn set_member_address(&mut self, node: NodeId, address: &str) {
        match address.parse() {
            Ok(addr) => self.transport.set_peer(node, addr),
            Err(_) => tracing::warn!(%node, address, "a member's address does not parse"),
        }
    }
}

/// The transport's handler on a placement node.
#[derive(Debug, Default)]
pub struct PlacementRpcHandler {
    node: RwLock<Option<PlacementHandle>>,
}

impl PlacementRpcHandler {
    /// A handler with no node yet (requests answer `NotPlacementLeader` until one is set).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Routes to `handle` from now on.
    pub fn set_node(&self, handle: PlacementHandle) {
        *self.node.write() = Some(handle);
    }

    /// Stops routing (the node is stopping).
    pub fn clear_node(&self) {
        *self.node.write() = None;
    }
}

impl Handler for PlacementRpcHandler {
    fn on_raft(&self, _from: NodeId, envelopes: Vec<RaftEnvelope>) {
        if let Some(node) = self.node.read().as_ref() {
            node.send_raft(envelopes);
        }
    }

    fn on_rpc(&self, _from: NodeId, request: RpcRequest) -> BoxFuture<RpcResult> {
        let RpcRequestBody::Placement(request) = request.body else {
            return Box::pin(async {
                RpcResult::Err(RpcError::InvalidRequest {
                    message: "this is a placement node; it serves placement requests only"
                        .to_owned(),
                })
            });
        };
        let Some(node) = self.node.read().clone() else {
            return Box::pin(async {
                RpcResult::Err(RpcError::NotPlacementLeader { leader: None, address: None })
            });
        };
        let (sender, receiver) = tokio::sync::oneshot::channel();
        node.request(
            request,
            Box::new(move |result| {
                let _ = sender.send(result);
            }),
        );
        Box::pin(async move {
            match receiver.await {
                Ok(Ok(response)) => RpcResult::Ok(RpcResponseBody::Placement(response)),
                Ok(Err(error)) => RpcResult::Err(error),
                Err(_) => {
                    RpcResult::Err(RpcError::NotPlacementLeader { leader: None, address: None })
                }
            }
        })
    }
}
