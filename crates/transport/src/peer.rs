//! Per-destination state and the sender task: the one place that dials a node, and the one
//! writer of its Raft stream.
//!
//! The task sleeps until woken ([`Peer::wake`]: a Raft message was queued, a tick made
//! heartbeats ready, or an RPC wants a connection). Then it makes sure a connection exists
//! (dialling, with exponential backoff and jitter after failures), polls every batch the
//! [`Batcher`](crate::batcher::Batcher) has ready for the node, encodes them outside the
//! batcher's lock and writes them with one `write_all` on the connection's long-lived Raft
//! stream. A slow or dead destination only ever stalls its own task.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use bytes::BytesMut;
use parking_lot::Mutex;
use tessera_wire::frame::encode_frame_into;
use tessera_wire::ids::NodeId;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::AbortHandle;

use crate::batcher::Outgoing;
use crate::connection::{self, Link};
use crate::metrics::{DropReason, MessageClass, PeerMetrics};
use crate::transport::Inner;

/// Bytes of encoded frames gathered into one stream write.
const WRITE_BYTES_MAX: usize = 1 << 20;

/// The connection state of one peer, published to RPC and snapshot callers waiting for it.
#[derive(Debug, Clone)]
pub(crate) enum Slot {
    /// No connection. `retry_at`: the reconnect backoff runs until then (callers fail fast
    /// meanwhile); `error`: why the last dial failed.
    Down { retry_at: Option<Instant>, error: Option<Arc<str>> },
    /// The sender task is dialling.
    Dialing,
    /// The connection in use.
    Up(Arc<Link>),
}

/// One destination node.
#[derive(Debug)]
pub(crate) struct Peer {
    pub(crate) node: NodeId,
    pub(crate) addr: Mutex<Option<SocketAddr>>,
    pub(crate) slot: watch::Sender<Slot>,
    /// Wakes the sender task (a permit is stored if it is busy).
    pub(crate) wake: Notify,
    /// Cuts a reconnect backoff short (the address changed).
    pub(crate) reset: Notify,
    pub(crate) last_seen: Mutex<Option<Instant>>,
    /// Whether a connection to the node was ever established (for the reconnect metric).
    pub(crate) connected_before: AtomicBool,
    /// Bounds this node's RPCs in flight to the peer.
    pub(crate) rpc_permits: Arc<Semaphore>,
    pub(crate) metrics: PeerMetrics,
    pub(crate) task: Mutex<Option<AbortHandle>>,
}

impl Peer {
    pub(crate) fn new(node: NodeId, addr: Option<SocketAddr>, rpc_inflight_max: usize) -> Self {
        Self {
            node,
            addr: Mutex::new(addr),
            slot: watch::Sender::new(Slot::Down { retry_at: None, error: None }),
            wake: Notify::new(),
            reset: Notify::new(),
            last_seen: Mutex::new(None),
            connected_before: AtomicBool::new(false),
            rpc_permits: Arc::new(Semaphore::new(rpc_inflight_max)),
            metrics: PeerMetrics::new(node),
            task: Mutex::new(None),
        }
    }

    /// The open connection, if any.
    pub(crate) fn link(&self) -> Option<Arc<Link>> {
        match &*self.slot.borrow() {
            Slot::Up(link) if link.is_open() => Some(link.clone()),
            _ => None,
        }
    }

    /// Marks `link` down if it is still the current one.
    pub(crate) fn link_closed(&self, link: &Link) {
        self.slot.send_if_modified(|slot| match slot {
            Slot::Up(current) if current.id() == link.id() => {
                *slot = Slot::Down { retry_at: None, error: None };
                true
            }
            _ => false,
        });
    }

    /// Records a failed dial unless a connection appeared meanwhile (an inbound one).
    fn dial_failed(&self, retry_at: Instant, error: &str) {
        let error: Arc<str> = Arc::from(error);
        self.slot.send_if_modified(|slot| match slot {
            Slot::Up(link) if link.is_open() => false,
            _ => {
                *slot = Slot::Down { retry_at: Some(retry_at), error: Some(error) };
                true
            }
        });
    }

    fn retry_at(&self) -> Option<Instant> {
        match &*self.slot.borrow() {
            Slot::Down { retry_at, .. } => *retry_at,
            _ => None,
        }
    }

    /// Forgets the reconnect backoff (the address changed).
    pub(crate) fn clear_backoff(&self) {
        self.slot.send_if_modified(|slot| match slot {
            Slot::Down { retry_at: Some(_), .. } => {
                *slot = Slot::Down { retry_at: None, error: None };
                true
            }
            _ => false,
        });
        self.reset.notify_one();
    }
}

/// Resolves once the peer's slot holds an open connection (one the peer dialled to us).
async fn inbound_link(slot: &mut watch::Receiver<Slot>) {
    let up = slot.wait_for(|slot| matches!(slot, Slot::Up(link) if link.is_open())).await.is_ok();
    if !up {
        // The peer entry is gone; the task is being torn down.
        std::future::pending::<()>().await;
    }
}

/// Drops everything queued for the peer, counted under `reason`.
fn drop_queued(inner: &Inner, peer: &Peer, reason: DropReason) {
    let dropped = inner.batcher.lock().on_disconnected(peer.node);
    peer.metrics.dropped(&inner.stats, reason, dropped);
    peer.metrics.queue_depth(0);
}

/// The sender task of one peer. Runs until aborted (peer removed or transport shut down).
pub(crate) async fn run(inner: Arc<Inner>, peer: Arc<Peer>) {
    let mut stream: Option<(usize, quinn::SendStream)> = None;
    let mut failures: u32 = 0;
    let mut buffer = BytesMut::new();
    loop {
        peer.wake.notified().await;
        // Consecutive write failures in this wake-up: two in a row and the batch is dropped.
        let mut write_failures = 0;
        loop {
            if inner.faults.blocked(peer.node) {
                drop_queued(&inner, &peer, DropReason::FaultBlocked);
                break;
            }
            let link = match peer.link() {
                Some(link) => link,
                None => {
                    let addr = *peer.addr.lock();
                    let Some(addr) = addr else {
                        drop_queued(&inner, &peer, DropReason::NoAddress);
                        break;
                    };
                    if let Some(retry_at) = peer.retry_at()
                        && retry_at > Instant::now()
                    {
                        tokio::select! {
                            () = tokio::time::sleep_until(retry_at.into()) => {}
                            () = peer.reset.notified() => {}
                        }
                        continue;
                    }
                    peer.slot.send_replace(Slot::Dialing);
                    let mut slot = peer.slot.subscribe();
                    // A dial gives way when the address changes (the node restarted
                    // elsewhere) or the node connects to us meanwhile: waiting out the
                    // connect timeout on a dead address would hold its traffic that long.
                    let dialed = tokio::select! {
                        result = connection::dial(&inner, &peer, addr) => Some(result),
                        () = peer.reset.notified() => None,
                        () = inbound_link(&mut slot) => None,
                    };
                    let Some(dialed) = dialed else { continue };
                    match dialed {
                        Ok(link) => {
                            failures = 0;
                            link
                        }
                        Err(error) => {
                            if let Some(link) = peer.link() {
                                // Our dial lost to a crossing connection from the peer:
                                // not a failure, use that one.
                                failures = 0;
                                link
                            } else {
                                failures = failures.saturating_add(1);
                                let unit = inner.jitter.lock().next_f64();
                                let delay = inner.config.reconnect_delay(failures, unit);
                                tracing::debug!(node = %peer.node, %addr, %error, ?delay, "dial failed");
                                peer.dial_failed(Instant::now() + delay, &error.to_string());
                                drop_queued(&inner, &peer, DropReason::Unreachable);
                                break;
                            }
                        }
                    }
                }
            };
            match flush(&inner, &peer, &link, &mut stream, &mut buffer).await {
                Ok(()) => break,
                Err(error) => {
                    stream = None;
                    write_failures += 1;
                    tracing::debug!(node = %peer.node, %error, "raft stream write failed");
                    if write_failures >= 2 {
                        link.conn.close(connection::CLOSE_STREAM_FAILED, b"raft stream failed");
                        peer.link_closed(&link);
                        break;
                    }
                }
            }
        }
    }
}

/// Writes everything queued for the peer on `link`'s Raft stream. On a write error the
/// batch in hand is lost (counted) and the error returned.
async fn flush(
    inner: &Inner,
    peer: &Peer,
    link: &Link,
    stream: &mut Option<(usize, quinn::SendStream)>,
    buffer: &mut BytesMut,
) -> Result<(), String> {
    let mut outgoing = Vec::new();
    loop {
        outgoing.clear();
        let queued = {
            let mut batcher = inner.batcher.lock();
            let mut bytes_estimate = 0usize;
            while bytes_estimate < WRITE_BYTES_MAX {
                let Some(out) = batcher.poll_transmit(peer.node) else { break };
                bytes_estimate += estimate_bytes(&out);
                outgoing.push(out);
            }
            batcher.queue_depth(peer.node).0
        };
        peer.metrics.queue_depth(queued);
        if outgoing.is_empty() {
            return Ok(());
        }
        let rule = inner.faults.rule(peer.node);
        if rule.blocked {
            let lost: usize = outgoing.iter().map(message_count).sum();
            peer.metrics.dropped(&inner.stats, DropReason::FaultBlocked, lost);
            continue;
        }
        if !rule.delay.is_zero() {
            tokio::time::sleep(rule.delay).await;
        }
        buffer.clear();
        let mut sent = 0usize;
        for out in outgoing.drain(..) {
            let messages = message_count(&out);
            if inner.faults.lose_frame(peer.node) {
                peer.metrics.dropped(&inner.stats, DropReason::FaultLoss, messages);
                continue;
            }
            let start = buffer.len();
            let (class, result) = match &out {
                Outgoing::Raft(batch) => (MessageClass::Raft, encode_frame_into(batch, buffer)),
                Outgoing::Heartbeats(batch) => {
                    (MessageClass::Heartbeat, encode_frame_into(batch, buffer))
                }
                Outgoing::HeartbeatResponses(batch) => {
                    (MessageClass::HeartbeatResponse, encode_frame_into(batch, buffer))
                }
            };
            match result {
                Ok(()) => {
                    peer.metrics.sent(&inner.stats, class, messages, buffer.len() - start);
                    sent += messages;
                }
                Err(error) => {
                    tracing::warn!(node = %peer.node, %error, "cannot encode a raft frame; dropped");
                    peer.metrics.dropped(&inner.stats, DropReason::WriteFailed, messages);
                }
            }
        }
        if buffer.is_empty() {
            continue;
        }
        let send = match stream {
            Some((id, send)) if *id == link.id() => send,
            _ => {
                let send = link.conn.open_uni().await.map_err(|error| {
                    peer.metrics.dropped(&inner.stats, DropReason::WriteFailed, sent);
                    error.to_string()
                })?;
                &mut stream.insert((link.id(), send)).1
            }
        };
        if let Err(error) = send.write_all(buffer).await {
            peer.metrics.dropped(&inner.stats, DropReason::WriteFailed, sent);
            return Err(error.to_string());
        }
    }
}

/// Messages in an outgoing frame (envelopes or tuples).
fn message_count(out: &Outgoing) -> usize {
    out.len()
}

/// A rough size of an outgoing frame, to bound one write.
fn estimate_bytes(out: &Outgoing) -> usize {
    out.size_bytes()
}

/// Whether the flag was newly set (the first connection to the peer returns `false`).
pub(crate) fn mark_connected(peer: &Peer) -> bool {
    peer.connected_before.swap(true, Ordering::Relaxed)
}
