//! [`Transport`]: the quinn endpoint, the peers, and the public API.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tessera_wire::ids::{NodeId, StoreId};
use tessera_wire::rpc::{RpcRequestBody, RpcResponse};
use tessera_wire::transport::{Heartbeat, Hello, RaftEnvelope, SnapshotAck, SnapshotChunk};
use tokio::runtime::Handle;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::AbortHandle;

use crate::batcher::{Batcher, Dropped, Pushed};
use crate::config::TransportConfig;
use crate::connection::{self, CLOSE_PEER_CHANGED, CLOSE_SHUTDOWN};
use crate::error::TransportError;
use crate::faults::{Faults, XorShift};
use crate::handler::Handler;
use crate::metrics::{DropReason, Stats, TransportStats};
use crate::peer::{self, Peer};
use crate::snapshot::RateLimiter;
use crate::{rpc, snapshot};

/// What the transport knows about a node's reachability: the node-liveness signal.
///
/// A connection stays open only while the peer answers QUIC keep-alives (every
/// `keep_alive_interval`); it closes after `max_idle_timeout` of silence
/// ([`crate::tls::QuicTimeouts`]). `last_seen` is refreshed whenever packets arrived from
/// the peer (checked every half keep-alive interval) and on every new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    /// A handshaken connection with the node is open.
    pub connected: bool,
    /// When packets last arrived from the node, if ever.
    pub last_seen: Option<Instant>,
}

/// Shared state of one transport, referenced by its tasks.
pub(crate) struct Inner {
    pub(crate) config: TransportConfig,
    pub(crate) local: NodeId,
    pub(crate) hello: Hello,
    pub(crate) endpoint: quinn::Endpoint,
    pub(crate) client_config: quinn::ClientConfig,
    pub(crate) handler: Arc<dyn Handler>,
    pub(crate) runtime: Handle,
    /// Short critical sections only: push, poll, tick.
    pub(crate) batcher: Mutex<Batcher>,
    pub(crate) peers: Mutex<HashMap<NodeId, Arc<Peer>>>,
    pub(crate) faults: Faults,
    pub(crate) stats: Stats,
    pub(crate) snapshot_send_limiter: RateLimiter,
    pub(crate) snapshot_recv_limiter: RateLimiter,
    /// Bounds the RPCs this node serves at once.
    pub(crate) serve_permits: Arc<Semaphore>,
    /// Bounds the snapshots this node receives at once.
    pub(crate) snapshot_permits: Arc<Semaphore>,
    pub(crate) next_request_id: AtomicU64,
    pub(crate) next_snapshot_id: AtomicU64,
    pub(crate) jitter: Mutex<XorShift>,
    tasks: Mutex<Vec<AbortHandle>>,
    closed: AtomicBool,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner").field("local", &self.local).finish_non_exhaustive()
    }
}

impl Inner {
    /// Spawns a task on the transport's runtime.
    pub(crate) fn spawn<F>(&self, future: F) -> AbortHandle
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.runtime.spawn(future).abort_handle()
    }

    /// Spawns a task that lives as long as the transport (aborted at shutdown).
    fn spawn_owned<F>(&self, future: F) -> AbortHandle
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let handle = self.spawn(future);
        let mut tasks = self.tasks.lock();
        tasks.retain(|task| !task.is_finished());
        tasks.push(handle.clone());
        handle
    }

    /// The peer entry of `node`, created (with its sender task) if missing; `addr`, when
    /// given, replaces the known address. `None` once shut down.
    pub(crate) fn peer_entry(
        self: &Arc<Self>,
        node: NodeId,
        addr: Option<SocketAddr>,
    ) -> Option<Arc<Peer>> {
        if self.closed.load(Ordering::Acquire) {
            return None;
        }
        let mut peers = self.peers.lock();
        if let Some(peer) = peers.get(&node) {
            return Some(peer.clone());
        }
        let peer = Arc::new(Peer::new(node, addr, self.config.rpc_inflight_max));
        let task = self.spawn_owned(peer::run(self.clone(), peer.clone()));
        *peer.task.lock() = Some(task);
        peers.insert(node, peer.clone());
        Some(peer)
    }

    fn peer(&self, node: NodeId) -> Option<Arc<Peer>> {
        self.peers.lock().get(&node).cloned()
    }

    fn shutdown(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        for task in self.tasks.lock().drain(..) {
            task.abort();
        }
        self.endpoint.close(CLOSE_SHUTDOWN, b"shutting down");
    }
}

/// The QUIC transport of one node. See the crate documentation for the design.
///
/// Dropping it shuts it down: tasks are aborted and every connection is closed (peers see
/// the closure at once). [`Transport::shutdown`] also waits for the close to be sent.
#[derive(Debug)]
pub struct Transport {
    inner: Arc<Inner>,
}

impl Transport {
    /// Binds the endpoint on `config.listen` and starts accepting connections. Must be
    /// called inside a tokio runtime, which runs all of the transport's tasks.
    ///
    /// # Errors
    /// [`TransportError::InvalidConfig`], [`TransportError::Tls`] (the TLS material cannot
    /// make a QUIC configuration), [`TransportError::Bind`].
    pub async fn start(
        config: TransportConfig,
        handler: Arc<dyn Handler>,
    ) -> Result<Self, TransportError> {
        config.validate()?;
        let server_config = config.tls.server_config()?;
        let client_config = config.tls.client_config()?;
        let socket = std::net::UdpSocket::bind(config.listen)
            .map_err(|source| TransportError::Bind { addr: config.listen, source })?;
        let runtime = quinn::default_runtime().ok_or_else(|| TransportError::InvalidConfig {
            reason: "no async runtime: start the transport inside tokio".to_owned(),
        })?;
        // A reset key derived from the node key, and connection ids any of which may be ours:
        // together they let a restarted node answer its previous incarnation's connections
        // with a stateless reset its peers recognise (see `RandomConnectionIds`).
        let mut endpoint_config =
            quinn::EndpointConfig::new(Arc::new(config.tls.stateless_reset_key()));
        endpoint_config.cid_generator(|| Box::new(RandomConnectionIds::default()));
        let endpoint = quinn::Endpoint::new(endpoint_config, Some(server_config), socket, runtime)
            .map_err(|source| TransportError::Bind { addr: config.listen, source })?;
        let local = config.node_id;
        let inner = Arc::new(Inner {
            local,
            hello: Hello::new(config.cluster_id, local),
            endpoint,
            client_config,
            handler,
            runtime: Handle::current(),
            batcher: Mutex::new(Batcher::new(local, config.store_id, config.batcher.clone())),
            peers: Mutex::new(HashMap::new()),
            faults: Faults::new(&config.faults),
            stats: Stats::default(),
            snapshot_send_limiter: RateLimiter::new(config.snapshot_send_bytes_per_sec),
            snapshot_recv_limiter: RateLimiter::new(config.snapshot_recv_bytes_per_sec),
            serve_permits: Arc::new(Semaphore::new(config.rpc_serve_inflight_max)),
            snapshot_permits: Arc::new(Semaphore::new(config.snapshot_recv_max)),
            next_request_id: AtomicU64::new(1),
            next_snapshot_id: AtomicU64::new(1),
            jitter: Mutex::new(XorShift::new(config.jitter_seed)),
            tasks: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
            config,
        });
        let accept_inner = inner.clone();
        inner.spawn_owned(async move {
            while let Some(incoming) = accept_inner.endpoint.accept().await {
                accept_inner.spawn(connection::accept(accept_inner.clone(), incoming));
            }
        });
        tracing::info!(node = %local, addr = ?inner.endpoint.local_addr().ok(), "transport started");
        Ok(Self { inner })
    }

    /// This node.
    #[must_use]
    pub fn node_id(&self) -> NodeId {
        self.inner.local
    }

    /// The bound UDP address (the actual port when `listen` asked for port 0).
    ///
    /// # Errors
    /// If the socket cannot report its address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.endpoint.local_addr()
    }

    /// Sets the address of `node`. If it changed, the current connection (to the old
    /// address) is closed and any reconnect backoff is forgotten; the next send dials anew.
    pub fn set_peer(&self, node: NodeId, addr: SocketAddr) {
        let Some(peer) = self.inner.peer_entry(node, Some(addr)) else { return };
        let previous = peer.addr.lock().replace(addr);
        if previous != Some(addr) {
            if let Some(link) = peer.link()
                && link.conn.remote_address() != addr
            {
                link.conn.close(CLOSE_PEER_CHANGED, b"peer address changed");
                peer.link_closed(&link);
            }
            peer.clear_backoff();
        }
    }

    /// The address `node` is dialled at, if one was set.
    #[must_use]
    pub fn peer_addr(&self, node: NodeId) -> Option<SocketAddr> {
        self.inner.peer(node).and_then(|peer| *peer.addr.lock())
    }

    /// Forgets `node`: closes its connection, stops its sender, drops what was queued for it.
    pub fn remove_peer(&self, node: NodeId) {
        let Some(peer) = self.inner.peers.lock().remove(&node) else { return };
        if let Some(task) = peer.task.lock().take() {
            task.abort();
        }
        if let Some(link) = peer.link() {
            link.conn.close(CLOSE_PEER_CHANGED, b"peer removed");
        }
        let dropped = self.inner.batcher.lock().on_disconnected(node);
        peer.metrics.dropped(&self.inner.stats, DropReason::NoAddress, dropped);
    }

    /// Queues a Raft message for node `to` and wakes its sender. Never blocks and never
    /// waits for the network. When the destination's queue is full the message is dropped
    /// (counted; Raft retries) and `Err(Dropped::QueueFull)` returned.
    ///
    /// # Errors
    /// [`Dropped`] when the message was not queued.
    pub fn send_raft(&self, to: NodeId, envelope: RaftEnvelope) -> Result<(), Dropped> {
        let Some(peer) = self.inner.peer(to).or_else(|| self.inner.peer_entry(to, None)) else {
            return Err(Dropped::QueueFull);
        };
        let pushed = self.inner.batcher.lock().push_raft(to, envelope);
        match pushed {
            Ok(Pushed::Queued) => {
                peer.wake.notify_one();
                Ok(())
            }
            // Coalesced heartbeats wait for the tick, which wakes the sender.
            Ok(Pushed::Coalesced) => Ok(()),
            Err(dropped) => {
                peer.metrics.dropped(&self.inner.stats, DropReason::QueueFull, 1);
                Err(dropped)
            }
        }
    }

    /// Queues a tick's heartbeat tuples for node `to` (from store `from_store` to store
    /// `to_store`) under one lock: a store hands over one tuple per active range, no Raft
    /// message is built, and the next [`tick`](Self::tick) sends them as one coalesced batch.
    /// Returns how many were dropped because the queue was full.
    pub fn send_heartbeats(
        &self,
        to: NodeId,
        from_store: StoreId,
        to_store: StoreId,
        beats: impl IntoIterator<Item = Heartbeat>,
    ) -> usize {
        let Some(peer) = self.inner.peer(to).or_else(|| self.inner.peer_entry(to, None)) else {
            return beats.into_iter().count();
        };
        let pushed = self.inner.batcher.lock().push_heartbeats(to, from_store, to_store, beats);
        if pushed.queued > 0 {
            peer.wake.notify_one();
        }
        if pushed.dropped > 0 {
            peer.metrics.dropped(&self.inner.stats, DropReason::QueueFull, pushed.dropped);
        }
        pushed.dropped
    }

    /// Queues many Raft messages for node `to` under one lock and one wake-up (a store hands
    /// over a round's messages, or a tick's heartbeats, this way). Returns how many were
    /// dropped because the queue was full; Raft retries them.
    pub fn send_raft_many(
        &self,
        to: NodeId,
        envelopes: impl IntoIterator<Item = RaftEnvelope>,
    ) -> usize {
        self.push_many(to, envelopes, |batcher, envelope| batcher.push_raft(to, envelope))
    }

    /// Pushes every item for `to` under one batcher lock, wakes the sender once if anything
    /// became sendable now, counts drops, and returns how many were dropped.
    fn push_many<T>(
        &self,
        to: NodeId,
        items: impl IntoIterator<Item = T>,
        mut push: impl FnMut(&mut Batcher, T) -> Result<Pushed, Dropped>,
    ) -> usize {
        let Some(peer) = self.inner.peer(to).or_else(|| self.inner.peer_entry(to, None)) else {
            return items.into_iter().count();
        };
        let (mut queued, mut dropped) = (false, 0);
        {
            let mut batcher = self.inner.batcher.lock();
            for item in items {
                match push(&mut batcher, item) {
                    Ok(Pushed::Queued) => queued = true,
                    Ok(Pushed::Coalesced) => {}
                    Err(Dropped::QueueFull) => dropped += 1,
                }
            }
        }
        if queued {
            peer.wake.notify_one();
        }
        if dropped > 0 {
            peer.metrics.dropped(&self.inner.stats, DropReason::QueueFull, dropped);
        }
        dropped
    }

    /// Advances the batcher one tick (coalesced heartbeats become ready) and wakes the
    /// senders of every destination with something to send. Call once per Raft tick.
    pub fn tick(&self) {
        let ready = {
            let mut batcher = self.inner.batcher.lock();
            batcher.tick();
            batcher.ready_destinations()
        };
        for node in ready {
            if let Some(peer) = self.inner.peer(node).or_else(|| self.inner.peer_entry(node, None))
            {
                peer.wake.notify_one();
            }
        }
    }

    /// Sends an RPC to `to` and waits for the answer, at most `timeout` (which is also sent
    /// as the server-side deadline).
    ///
    /// When this node already has `rpc_inflight_max` RPCs in flight to `to`, the answer is
    /// `RpcError::ServerBusy` at once, without sending; the server answers the same when
    /// its own bound is hit. Typed errors of the request come back inside the response.
    ///
    /// # Errors
    /// [`TransportError::Timeout`], [`TransportError::Unreachable`],
    /// [`TransportError::UnknownPeer`], [`TransportError::Blocked`],
    /// [`TransportError::ConnectionLost`], [`TransportError::Protocol`],
    /// [`TransportError::Shutdown`].
    pub async fn rpc(
        &self,
        to: NodeId,
        body: RpcRequestBody,
        timeout: Duration,
    ) -> Result<RpcResponse, TransportError> {
        let peer = self.inner.peer_entry(to, None).ok_or(TransportError::Shutdown)?;
        rpc::call(&self.inner, &peer, body, timeout).await
    }

    /// Streams a snapshot to `to`: the chunks come from `chunks` (the first with `seq == 0`
    /// and the header, the last with `last == true`; sealed with
    /// [`SnapshotChunk::sealed`]), are rate limited to `snapshot_send_bytes_per_sec`, and
    /// the receiver's final [`SnapshotAck`] is returned (`Received`, or `Rejected` with a
    /// reason). `timeout` bounds the whole transfer.
    ///
    /// # Errors
    /// As [`Transport::rpc`]; a receiver that stops the stream without an ack gives
    /// [`TransportError::ConnectionLost`].
    pub async fn send_snapshot(
        &self,
        to: NodeId,
        chunks: mpsc::Receiver<SnapshotChunk>,
        timeout: Duration,
    ) -> Result<SnapshotAck, TransportError> {
        let peer = self.inner.peer_entry(to, None).ok_or(TransportError::Shutdown)?;
        snapshot::send(&self.inner, &peer, chunks, timeout).await
    }

    /// [`Transport::send_snapshot`] for chunks already in memory.
    ///
    /// # Errors
    /// As [`Transport::send_snapshot`].
    pub async fn send_snapshot_chunks(
        &self,
        to: NodeId,
        chunks: Vec<SnapshotChunk>,
        timeout: Duration,
    ) -> Result<SnapshotAck, TransportError> {
        let (sender, receiver) = mpsc::channel(chunks.len().max(1));
        for chunk in chunks {
            // Cannot fail: the channel has room for every chunk and the receiver is alive.
            let _ = sender.try_send(chunk);
        }
        drop(sender);
        self.send_snapshot(to, receiver, timeout).await
    }

    /// A fresh snapshot id, unique among this transport's snapshots.
    #[must_use]
    pub fn next_snapshot_id(&self) -> u64 {
        self.inner.next_snapshot_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether `node` is connected and when it was last heard from.
    #[must_use]
    pub fn liveness(&self, node: NodeId) -> Liveness {
        match self.inner.peer(node) {
            Some(peer) => {
                Liveness { connected: peer.link().is_some(), last_seen: *peer.last_seen.lock() }
            }
            None => Liveness { connected: false, last_seen: None },
        }
    }

    /// Raft messages and bytes queued for `node`.
    #[must_use]
    pub fn queue_depth(&self, node: NodeId) -> (usize, usize) {
        self.inner.batcher.lock().queue_depth(node)
    }

    /// The fault hooks (tests and demos).
    #[must_use]
    pub fn faults(&self) -> &Faults {
        &self.inner.faults
    }

    /// Counters since start.
    #[must_use]
    pub fn stats(&self) -> TransportStats {
        self.inner.stats.snapshot()
    }

    /// Shuts down and waits (at most `wait`) until the connections' closes are sent.
    pub async fn shutdown(self, wait: Duration) {
        self.inner.shutdown();
        let _ = tokio::time::timeout(wait, self.inner.endpoint.wait_idle()).await;
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        self.inner.shutdown();
    }
}

/// Connection ids of 8 random bytes, every one of which the endpoint treats as possibly its
/// own. quinn's default signs its ids with a key chosen at random per process and silently
/// drops packets whose id it cannot verify; after a restart that would include every packet
/// of the previous incarnation's connections, so their peers would wait for the idle timeout.
/// Accepting them lets the endpoint answer with a stateless reset instead (rate limited by
/// quinn), which peers verify with the reset key derived from the node key.
#[derive(Debug)]
struct RandomConnectionIds {
    rng: ring::rand::SystemRandom,
}

impl Default for RandomConnectionIds {
    fn default() -> Self {
        Self { rng: ring::rand::SystemRandom::new() }
    }
}

impl quinn::ConnectionIdGenerator for RandomConnectionIds {
    fn generate_cid(&mut self) -> quinn::ConnectionId {
        let mut bytes = [0u8; 8];
        ring::rand::SecureRandom::fill(&self.rng, &mut bytes)
            .expect("the operating system's random source is available");
        quinn::ConnectionId::new(&bytes)
    }

    fn cid_len(&self) -> usize {
        8
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}
