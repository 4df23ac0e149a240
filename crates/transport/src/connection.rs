//! Connections: dialling and accepting, the Hello handshake, the one-connection-per-pair
//! rule, and the receive side of every stream.
//!
//! # Handshake
//!
//! The dialler opens a bidirectional control stream and writes its [`Hello`]; the acceptor
//! reads it, checks it ([`Hello::negotiate`]: same cluster, a common version; and not
//! itself), answers with its own Hello and finishes the stream. The dialler checks the answer
//! the same way and also that the node at the address is the one it meant to reach. Any
//! failure closes the connection with [`CLOSE_HANDSHAKE`] and a readable reason. Nothing
//! else is read from a connection before its handshake succeeded.
//!
//! # One connection per node pair
//!
//! Either side may dial. When a second connection with the same peer comes up while one is
//! open, [`install`] keeps exactly one, and both sides reach the same answer:
//!
//! - if both were dialled by the same node, or the older one is older than
//!   [`SIMULTANEOUS_DIAL_WINDOW`], the newer one wins: the peer dialled because it no longer
//!   has the old one (it restarted, or saw the old connection die);
//! - otherwise the two crossed (both sides dialled at once) and the one dialled by the lower
//!   node id wins.
//!
//! The loser is closed with [`CLOSE_DUPLICATE`].
//!
//! # Streams
//!
//! - Unidirectional streams carry Raft frames (`RaftBatch`, `HeartbeatBatch`,
//!   `HeartbeatResponseBatch`); each side opens one per connection and keeps it.
//! - Bidirectional streams after the control stream are RPC lanes (`RpcRequest` frames,
//!   answered on the same stream by id) or snapshots (first frame `SnapshotChunk`).
//!
//! Every stream is read through a [`FrameDecoder`] bounded by `frame_bytes_max`. A bad
//! frame stops that stream with [`STREAM_BAD_FRAME`], is logged and counted; the connection
//! and every other stream carry on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn::VarInt;
use tessera_wire::frame::{Frame, FrameDecoder, FrameError, FrameKind, encode_frame};
use tessera_wire::ids::NodeId;
use tessera_wire::transport::{HeartbeatBatch, HeartbeatResponseBatch, Hello, RaftBatch};

use crate::error::TransportError;
use crate::metrics::MessageClass;
use crate::peer::{self, Peer, Slot};
use crate::tls::SERVER_NAME;
use crate::transport::Inner;
use crate::{rpc, snapshot};

/// Connection closed: the transport shut down.
pub(crate) const CLOSE_SHUTDOWN: VarInt = VarInt::from_u32(0);
/// Connection closed: the handshake failed (reason attached).
pub(crate) const CLOSE_HANDSHAKE: VarInt = VarInt::from_u32(1);
/// Connection closed: another connection with the same peer was kept.
pub(crate) const CLOSE_DUPLICATE: VarInt = VarInt::from_u32(2);
/// Connection closed: the peer was removed or its address changed.
pub(crate) const CLOSE_PEER_CHANGED: VarInt = VarInt::from_u32(3);
/// Connection closed: its Raft stream could not be written.
pub(crate) const CLOSE_STREAM_FAILED: VarInt = VarInt::from_u32(4);
/// Stream stopped or reset: a bad frame.
pub(crate) const STREAM_BAD_FRAME: VarInt = VarInt::from_u32(1);
/// Stream stopped or reset: refused (busy, or an unexpected kind of stream).
pub(crate) const STREAM_REFUSED: VarInt = VarInt::from_u32(2);

/// Two connections with one peer that came up closer together than this crossed (both
/// sides dialled at once); further apart, the newer replaced the older.
pub(crate) const SIMULTANEOUS_DIAL_WINDOW: Duration = Duration::from_secs(1);

/// The largest Hello frame accepted (a Hello is 24 bytes).
const HELLO_FRAME_BYTES_MAX: usize = 1024;

/// Bytes asked of quinn per read.
const READ_CHUNK_BYTES: usize = 256 * 1024;

/// An established, handshaken connection with one peer.
#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) conn: quinn::Connection,
    /// The peer.
    pub(crate) node: NodeId,
    /// Which side dialled.
    pub(crate) dialer: NodeId,
    pub(crate) established: Instant,
    /// The negotiated frame version (only version 1 exists so far; encoders write it).
    pub(crate) version: u8,
    /// The RPC lanes this side opened on it.
    pub(crate) lanes: rpc::Lanes,
}

impl Link {
    pub(crate) fn id(&self) -> usize {
        self.conn.stable_id()
    }

    pub(crate) fn is_open(&self) -> bool {
        self.conn.close_reason().is_none()
    }
}

/// Why reading a stream stopped.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The bytes are not a valid frame: stop the stream.
    Frame(FrameError),
    /// The stream or connection broke.
    Stream(String),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Frame(error) => write!(f, "{error}"),
            Self::Stream(reason) => write!(f, "{reason}"),
        }
    }
}

/// Frames out of a receive stream.
#[derive(Debug)]
pub(crate) struct FrameReader {
    pub(crate) recv: quinn::RecvStream,
    decoder: FrameDecoder,
}

impl FrameReader {
    pub(crate) fn new(recv: quinn::RecvStream, frame_bytes_max: usize) -> Self {
        Self { recv, decoder: FrameDecoder::new(frame_bytes_max) }
    }

    /// The next whole frame (payload not yet validated), or `None` at a clean end of stream.
    pub(crate) async fn next(&mut self) -> Result<Option<Frame>, ReadError> {
        loop {
            if let Some(frame) = self.decoder.next_frame().map_err(ReadError::Frame)? {
                return Ok(Some(frame));
            }
            match self.recv.read_chunk(READ_CHUNK_BYTES, true).await {
                Ok(Some(chunk)) => self.decoder.feed(&chunk.bytes).map_err(ReadError::Frame)?,
                Ok(None) => {
                    self.decoder.finish().map_err(ReadError::Frame)?;
                    return Ok(None);
                }
                Err(error) => return Err(ReadError::Stream(error.to_string())),
            }
        }
    }

    /// Stops the stream because of a bad frame.
    pub(crate) fn refuse(&mut self, code: VarInt) {
        let _ = self.recv.stop(code);
    }
}

/// Dials `peer` at `addr`, handshakes, and installs the connection.
pub(crate) async fn dial(
    inner: &Arc<Inner>,
    peer: &Arc<Peer>,
    addr: std::net::SocketAddr,
) -> Result<Arc<Link>, TransportError> {
    let node = peer.node;
    let unreachable = |reason: String| TransportError::Unreachable { node, reason };
    let connecting = inner
        .endpoint
        .connect_with(inner.client_config.clone(), addr, SERVER_NAME)
        .map_err(|error| unreachable(error.to_string()))?;
    let conn = tokio::time::timeout(inner.config.connect_timeout, connecting)
        .await
        .map_err(|_| unreachable(format!("connect to {addr} timed out")))?
        .map_err(|error| unreachable(format!("connect to {addr}: {error}")))?;
    let hello = tokio::time::timeout(inner.config.handshake_timeout, async {
        let (mut send, recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
        let frame = encode_frame(&inner.hello).map_err(|e| e.to_string())?;
        send.write_all(&frame).await.map_err(|e| e.to_string())?;
        let _ = send.finish();
        read_hello(recv).await
    })
    .await
    .map_err(|_| "handshake timed out".to_owned())
    .and_then(|result| result);
    let hello = match hello {
        Ok(hello) => hello,
        Err(reason) => {
            conn.close(CLOSE_HANDSHAKE, reason.as_bytes());
            return Err(unreachable(format!("handshake with {addr}: {reason}")));
        }
    };
    let version = match check_hello(inner, &hello, Some(node)) {
        Ok(version) => version,
        Err(reason) => {
            tracing::warn!(%node, %addr, %reason, "handshake refused");
            conn.close(CLOSE_HANDSHAKE, reason.as_bytes());
            return Err(unreachable(reason));
        }
    };
    let link = Arc::new(Link {
        conn,
        node,
        dialer: inner.local,
        established: Instant::now(),
        version,
        lanes: rpc::Lanes::default(),
    });
    if install(inner, peer, &link) {
        Ok(link)
    } else {
        Err(unreachable("a crossing connection from the peer was kept".to_owned()))
    }
}

/// Serves one incoming connection: handshake, then install.
pub(crate) async fn accept(inner: Arc<Inner>, incoming: quinn::Incoming) {
    let remote = incoming.remote_address();
    let conn = match tokio::time::timeout(inner.config.connect_timeout, incoming).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(error)) => {
            tracing::info!(%remote, %error, "incoming connection failed");
            return;
        }
        Err(_) => {
            tracing::info!(%remote, "incoming connection timed out");
            return;
        }
    };
    let handshake = tokio::time::timeout(inner.config.handshake_timeout, async {
        let (mut send, recv) = conn.accept_bi().await.map_err(|e| e.to_string())?;
        let hello = read_hello(recv).await?;
        let version = check_hello(&inner, &hello, None)?;
        let frame = encode_frame(&inner.hello).map_err(|e| e.to_string())?;
        send.write_all(&frame).await.map_err(|e| e.to_string())?;
        let _ = send.finish();
        Ok::<_, String>((hello.node_id, version))
    })
    .await
    .map_err(|_| "handshake timed out".to_owned())
    .and_then(|result| result);
    let (node, version) = match handshake {
        Ok(result) => result,
        Err(reason) => {
            if reason.starts_with("bad frame") {
                inner.stats.bad_frame_unattributed();
            }
            tracing::warn!(%remote, %reason, "incoming handshake refused");
            conn.close(CLOSE_HANDSHAKE, reason.as_bytes());
            return;
        }
    };
    let Some(peer) = inner.peer_entry(node, None) else {
        conn.close(CLOSE_SHUTDOWN, b"shutting down");
        return;
    };
    let link = Arc::new(Link {
        conn,
        node,
        dialer: node,
        established: Instant::now(),
        version,
        lanes: rpc::Lanes::default(),
    });
    install(&inner, &peer, &link);
}

/// Reads the peer's Hello off the control stream.
async fn read_hello(recv: quinn::RecvStream) -> Result<Hello, String> {
    let mut reader = FrameReader::new(recv, HELLO_FRAME_BYTES_MAX);
    match reader.next().await {
        Ok(Some(frame)) => frame.decode_hello().map_err(|error| format!("bad frame: {error}")),
        Ok(None) => Err("control stream ended before a hello".to_owned()),
        Err(ReadError::Frame(error)) => Err(format!("bad frame: {error}")),
        Err(ReadError::Stream(reason)) => Err(reason),
    }
}

/// Checks a peer's Hello; the negotiated version, or why the connection is refused.
fn check_hello(inner: &Inner, hello: &Hello, expected: Option<NodeId>) -> Result<u8, String> {
    let version = inner.hello.negotiate(hello).map_err(|error| error.to_string())?;
    if hello.node_id == inner.local {
        return Err(format!("peer claims this node's id {}", inner.local));
    }
    if let Some(expected) = expected
        && hello.node_id != expected
    {
        return Err(format!(
            "expected node {expected} at this address, found node {}",
            hello.node_id
        ));
    }
    Ok(version)
}

/// Makes `link` the peer's connection unless the one-connection rule keeps the current one;
/// starts its receive task. Returns whether `link` was kept.
pub(crate) fn install(inner: &Arc<Inner>, peer: &Arc<Peer>, link: &Arc<Link>) -> bool {
    let mut replaced = None;
    let kept = peer.slot.send_if_modified(|slot| {
        if let Slot::Up(old) = slot
            && old.is_open()
            && old.id() != link.id()
        {
            let newer_wins = old.dialer == link.dialer
                || link.established.duration_since(old.established) >= SIMULTANEOUS_DIAL_WINDOW;
            let keep_new = newer_wins || link.dialer < old.dialer;
            if !keep_new {
                return false;
            }
            replaced = Some(old.clone());
        }
        *slot = Slot::Up(link.clone());
        true
    });
    if !kept {
        tracing::debug!(node = %peer.node, "crossing connection closed; keeping the other");
        link.conn.close(CLOSE_DUPLICATE, b"duplicate connection");
        return false;
    }
    if let Some(old) = replaced {
        tracing::debug!(node = %peer.node, "connection replaced by a newer one");
        old.conn.close(CLOSE_DUPLICATE, b"replaced by a newer connection");
    }
    *peer.last_seen.lock() = Some(Instant::now());
    if peer::mark_connected(peer) {
        peer.metrics.reconnected(&inner.stats);
    }
    tracing::info!(
        node = %link.node,
        remote = %link.conn.remote_address(),
        dialer = %link.dialer,
        version = link.version,
        "connected"
    );
    inner.spawn(serve_link(inner.clone(), peer.clone(), link.clone()));
    // Whatever was queued while there was no connection goes now.
    peer.wake.notify_one();
    true
}

/// Accepts the peer's streams on `link` and keeps `last_seen` fresh until it closes.
async fn serve_link(inner: Arc<Inner>, peer: Arc<Peer>, link: Arc<Link>) {
    let conn = link.conn.clone();
    let keep_alive = inner.config.tls.timeouts().keep_alive_interval;
    let mut liveness = tokio::time::interval(keep_alive / 2);
    liveness.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut datagrams = conn.stats().udp_rx.datagrams;
    loop {
        tokio::select! {
            stream = conn.accept_uni() => match stream {
                Ok(recv) => {
                    inner.spawn(read_raft_stream(inner.clone(), peer.clone(), recv));
                }
                Err(_) => break,
            },
            stream = conn.accept_bi() => match stream {
                Ok((send, recv)) => {
                    inner.spawn(serve_bi(inner.clone(), peer.clone(), send, recv));
                }
                Err(_) => break,
            },
            _ = liveness.tick() => {
                let now = conn.stats().udp_rx.datagrams;
                if now != datagrams {
                    datagrams = now;
                    *peer.last_seen.lock() = Some(Instant::now());
                }
            }
        }
    }
    let reason = conn.close_reason().map_or_else(|| "closed".to_owned(), |r| r.to_string());
    tracing::info!(node = %peer.node, %reason, "connection closed");
    peer.link_closed(&link);
}

/// Reads one Raft stream, handing every message to the handler in order.
async fn read_raft_stream(inner: Arc<Inner>, peer: Arc<Peer>, recv: quinn::RecvStream) {
    let mut reader = FrameReader::new(recv, inner.config.frame_bytes_max);
    loop {
        let frame = match reader.next().await {
            Ok(Some(frame)) => frame,
            Ok(None) => return,
            Err(ReadError::Stream(reason)) => {
                tracing::debug!(node = %peer.node, %reason, "raft stream ended");
                return;
            }
            Err(ReadError::Frame(error)) => {
                bad_frame(&inner, &peer, &error, "raft");
                reader.refuse(STREAM_BAD_FRAME);
                return;
            }
        };
        if let Err(error) = deliver_raft_frame(&inner, &peer, &frame) {
            bad_frame(&inner, &peer, &error, "raft");
            reader.refuse(STREAM_BAD_FRAME);
            return;
        }
    }
}

/// Decodes one frame of a Raft stream and hands its messages to the handler.
fn deliver_raft_frame(inner: &Inner, peer: &Peer, frame: &Frame) -> Result<(), FrameError> {
    let bytes = frame.wire_bytes();
    match frame.kind {
        FrameKind::RaftBatch => {
            let batch: RaftBatch = frame.decode()?;
            peer.metrics.received(&inner.stats, MessageClass::Raft, batch.envelopes.len(), bytes);
            if !batch.envelopes.is_empty() {
                inner.handler.on_raft(peer.node, batch.envelopes);
            }
        }
        FrameKind::HeartbeatBatch => {
            let batch: HeartbeatBatch = frame.decode()?;
            // So that the answers going back echo this batch's tick.
            inner.batcher.lock().on_heartbeats_received(peer.node, &batch);
            peer.metrics.received(&inner.stats, MessageClass::Heartbeat, batch.beats.len(), bytes);
            if !batch.beats.is_empty() {
                inner.handler.on_heartbeats(peer.node, batch);
            }
        }
        FrameKind::HeartbeatResponseBatch => {
            let batch: HeartbeatResponseBatch = frame.decode()?;
            let count = batch.responses.len();
            peer.metrics.received(&inner.stats, MessageClass::HeartbeatResponse, count, bytes);
            if count > 0 {
                inner.handler.on_heartbeat_responses(peer.node, batch);
            }
        }
        kind => {
            return Err(FrameError::Invalid {
                kind,
                reason: "not a Raft frame (on a Raft stream)".to_owned(),
            });
        }
    }
    Ok(())
}

/// Logs and counts a bad frame from `peer`.
pub(crate) fn bad_frame(inner: &Inner, peer: &Peer, error: &FrameError, stream: &str) {
    tracing::warn!(node = %peer.node, %error, stream, "bad frame; stream closed");
    peer.metrics.bad_frame(&inner.stats);
}

/// Serves a bidirectional stream: an RPC or a snapshot, told apart by the first frame.
async fn serve_bi(
    inner: Arc<Inner>,
    peer: Arc<Peer>,
    mut send: quinn::SendStream,
    recv: quinn::RecvStream,
) {
    let mut reader = FrameReader::new(recv, inner.config.frame_bytes_max);
    let first = match tokio::time::timeout(inner.config.rpc_timeout_default, reader.next()).await {
        Ok(Ok(Some(frame))) => frame,
        Ok(Ok(None)) => return,
        Ok(Err(ReadError::Stream(_))) => return,
        Ok(Err(ReadError::Frame(error))) => {
            bad_frame(&inner, &peer, &error, "bidirectional");
            reader.refuse(STREAM_BAD_FRAME);
            let _ = send.reset(STREAM_BAD_FRAME);
            return;
        }
        Err(_) => {
            reader.refuse(STREAM_REFUSED);
            let _ = send.reset(STREAM_REFUSED);
            return;
        }
    };
    match first.kind {
        FrameKind::RpcRequest => rpc::serve(inner, peer, first, reader, send).await,
        FrameKind::SnapshotChunk => snapshot::receive(inner, peer, first, reader, send).await,
        kind => {
            let error = FrameError::Invalid {
                kind,
                reason: "a bidirectional stream must open with an RPC request or a snapshot chunk"
                    .to_owned(),
            };
            bad_frame(&inner, &peer, &error, "bidirectional");
            reader.refuse(STREAM_BAD_FRAME);
            let _ = send.reset(STREAM_BAD_FRAME);
        }
    }
}
