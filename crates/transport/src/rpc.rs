//! RPCs over a few long-lived bidirectional streams per connection ("lanes"): a call queues
//! its request frame on the next lane in turn and waits for the answer with its id; each
//! side writes whatever queued up in one write. A request whose call gave up before its
//! frame was written is never sent. Deadlines on both sides, and bounds on both sides
//! answered with `ServerBusy`. The server serves every request of a stream concurrently, so
//! a stream carrying a single request (then finished) works as well.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tessera_wire::errors::RpcError;
use tessera_wire::frame::{Frame, encode_frame};
use tessera_wire::rpc::{RpcRequest, RpcRequestBody, RpcResponse, RpcResult};

use crate::connection::{FrameReader, Link, ReadError, STREAM_BAD_FRAME, bad_frame};
use crate::error::TransportError;
use crate::metrics::{DropReason, MessageClass};
use crate::peer::{Peer, Slot};
use crate::transport::Inner;

/// The open connection to `peer`, asking its sender task to dial if there is none. Fails
/// fast while a reconnect backoff runs.
pub(crate) async fn wait_link(inner: &Inner, peer: &Peer) -> Result<Arc<Link>, TransportError> {
    let node = peer.node;
    let mut slot = peer.slot.subscribe();
    loop {
        let current = slot.borrow_and_update().clone();
        match current {
            Slot::Up(link) if link.is_open() => return Ok(link),
            Slot::Down { retry_at: Some(retry_at), error } if retry_at > Instant::now() => {
                return Err(TransportError::Unreachable {
                    node,
                    reason: error.map_or_else(|| "reconnect backoff".to_owned(), |e| e.to_string()),
                });
            }
            Slot::Dialing => {}
            _ => {
                if peer.addr.lock().is_none() {
                    return Err(TransportError::UnknownPeer { node });
                }
                peer.wake.notify_one();
            }
        }
        if inner.faults.blocked(node) {
            return Err(TransportError::Blocked { node });
        }
        if slot.changed().await.is_err() {
            return Err(TransportError::Shutdown);
        }
    }
}

/// The client side of one RPC: registers a waiter for the request's id on a lane, queues the
/// frame (with its id) for the lane's writer and waits for the answer, all within `timeout`.
///
/// A call that ends before its frame was handed to quinn (its deadline passed while the
/// frame waited behind a lane blocked by flow control — a slow or paused peer — or the
/// caller dropped it) removes its waiter, and the writer then drops the frame instead of
/// sending it ([`write_requests`]): a request reported as timed out (outcome unknown) is not
/// executed by the server seconds later. Once handed to quinn, a request may still be
/// served after its caller gave up.
pub(crate) async fn call(
    inner: &Arc<Inner>,
    peer: &Arc<Peer>,
    body: RpcRequestBody,
    timeout: Duration,
) -> Result<RpcResponse, TransportError> {
    let node = peer.node;
    if inner.faults.blocked(node) {
        return Err(TransportError::Blocked { node });
    }
    let id = inner.next_request_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let Ok(_permit) = peer.rpc_permits.clone().try_acquire_owned() else {
        inner.stats.rpc_busy("client");
        return Ok(RpcResponse {
            id,
            result: RpcResult::Err(busy(
                inner,
                format!("{} RPCs in flight to node {node}", inner.config.rpc_inflight_max),
            )),
        });
    };
    let timeout_ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX).max(1);
    let request = RpcRequest { id, timeout_ms, body };
    let frame = encode_frame(&request)?;
    let lost = |error: &dyn std::fmt::Display| TransportError::ConnectionLost {
        node,
        reason: error.to_string(),
    };
    let exchange = async {
        let link = wait_link(inner, peer).await?;
        let delay = inner.faults.rule(node).delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if inner.faults.lose_frame(node) {
            // A lost request: no answer ever comes, the caller's deadline decides.
            peer.metrics.dropped(&inner.stats, DropReason::FaultLoss, 1);
            std::future::pending::<()>().await;
        }
        let (waiter, answer) = tokio::sync::oneshot::channel();
        let mut waiter = Some(waiter);
        let mut lane = None;
        for _ in 0..=LANES {
            let candidate = open_lane(inner, peer, &link).await?;
            match candidate.register(id, waiter.take().expect("put back on refusal")) {
                Ok(()) => {
                    lane = Some(candidate);
                    break;
                }
                Err(back) => waiter = Some(back),
            }
        }
        let Some(lane) = lane else { return Err(lost(&"no RPC lane stays open")) };
        // Forgets the waiter if the caller's deadline ends the call first; the writer then
        // drops the frame if it has not written it yet.
        let _registered = Registered { lane: &lane, id };
        if lane.queue.send((id, frame)).is_err() {
            return Err(lost(&"RPC lane closed"));
        }
        match answer.await {
            Ok(result) => result,
            Err(_) => Err(lost(&"RPC lane closed")),
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or(Err(TransportError::Timeout { node, after: timeout }))
}

/// Long-lived RPC streams per connection: calls take them in turn, so that concurrent
/// calls share a few streams (and their writes) instead of opening one stream each.
pub(crate) const LANES: usize = 4;

/// Requests of one stream the server serves or holds answers for at once.
const STREAM_ANSWERS_MAX: usize = 1024;

/// Frames written at most per write on a lane or an answering stream.
const WRITE_BATCH_MAX: usize = 64;

type Waiter = tokio::sync::oneshot::Sender<Result<RpcResponse, TransportError>>;

/// A connection's RPC lanes (kept on its [`Link`]).
#[derive(Debug, Default)]
pub(crate) struct Lanes {
    lanes: parking_lot::Mutex<[Option<Arc<Lane>>; LANES]>,
    /// Held while a lane is opened, so that calls arriving together open it once.
    opening: [tokio::sync::Mutex<()>; LANES],
    next: std::sync::atomic::AtomicUsize,
}

/// One long-lived RPC stream: a writer task sends the queued requests, a reader task hands
/// each answer to the call waiting for its id. A queued request whose id is no longer in
/// `waiting` when the writer takes it (its call timed out or went away) is dropped unsent.
#[derive(Debug)]
pub(crate) struct Lane {
    /// Request frames to write, each with its request id.
    queue: tokio::sync::mpsc::UnboundedSender<(u64, Bytes)>,
    /// Calls waiting for an answer, by request id; `None` once the lane failed.
    waiting: parking_lot::Mutex<Option<HashMap<u64, Waiter>>>,
}

impl Lane {
    fn register(&self, id: u64, waiter: Waiter) -> Result<(), Waiter> {
        match self.waiting.lock().as_mut() {
            Some(waiting) => {
                waiting.insert(id, waiter);
                Ok(())
            }
            None => Err(waiter),
        }
    }

    /// Whether more than `count` calls wait for an answer on this lane.
    fn waiting_more_than(&self, count: usize) -> bool {
        self.waiting.lock().as_ref().is_some_and(|waiting| waiting.len() > count)
    }

    fn is_open(&self) -> bool {
        self.waiting.lock().is_some() && !self.queue.is_closed()
    }

    /// Moves the frames of `queued` whose call still waits into `chunks` and drops the others
    /// (every one once the lane failed: their calls were failed); how many it dropped. One
    /// lock for the whole batch.
    fn keep_waited(&self, queued: &mut Vec<(u64, Bytes)>, chunks: &mut Vec<Bytes>) -> usize {
        let before = chunks.len();
        let count = queued.len();
        if let Some(waiting) = self.waiting.lock().as_ref() {
            chunks.extend(
                queued.drain(..).filter(|(id, _)| waiting.contains_key(id)).map(|(_, f)| f),
            );
        }
        queued.clear();
        count - (chunks.len() - before)
    }

    /// Fails every waiting call; later calls pick another lane.
    fn fail(&self, error: impl Fn() -> TransportError) {
        let waiting = self.waiting.lock().take();
        for (_, waiter) in waiting.into_iter().flatten() {
            let _ = waiter.send(Err(error()));
        }
    }
}

/// Removes a call's waiter when the call ends (answered, failed or timed out).
struct Registered<'a> {
    lane: &'a Lane,
    id: u64,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        if let Some(waiting) = self.lane.waiting.lock().as_mut() {
            waiting.remove(&self.id);
        }
    }
}

/// The next lane of `link` in turn, opened (with its tasks) if it is missing or failed.
async fn open_lane(
    inner: &Arc<Inner>,
    peer: &Arc<Peer>,
    link: &Arc<Link>,
) -> Result<Arc<Lane>, TransportError> {
    let index = link.lanes.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % LANES;
    let open = || link.lanes.lanes.lock()[index].clone().filter(|lane| lane.is_open());
    if let Some(lane) = open() {
        return Ok(lane);
    }
    let _opening = link.lanes.opening[index].lock().await;
    if let Some(lane) = open() {
        return Ok(lane);
    }
    let (send, recv) = link.conn.open_bi().await.map_err(|error| {
        TransportError::ConnectionLost { node: peer.node, reason: error.to_string() }
    })?;
    inner.stats.rpc_lane_opened();
    let (queue, requests) = tokio::sync::mpsc::unbounded_channel();
    let lane = Arc::new(Lane { queue, waiting: parking_lot::Mutex::new(Some(HashMap::new())) });
    inner.spawn(write_requests(inner.clone(), peer.clone(), lane.clone(), send, requests));
    inner.spawn(read_answers(
        inner.clone(),
        peer.clone(),
        Arc::downgrade(&lane),
        FrameReader::new(recv, inner.config.frame_bytes_max),
    ));
    link.lanes.lanes.lock()[index] = Some(lane.clone());
    Ok(lane)
}

/// Writes a lane's requests as they are queued, several per write when they queued up (up to
/// [`WRITE_BATCH_MAX`]); finishes the stream when the lane is dropped.
///
/// Just before a batch is handed to quinn, the requests whose call no longer waits (it timed
/// out or was dropped while its frame sat in the queue, e.g. behind a peer that stopped
/// reading and so blocked the previous write) are dropped and counted
/// ([`DropReason::Abandoned`]): never sent, so never executed after the caller gave up. One
/// upgrade of the lane and one lock of its waiters per batch.
async fn write_requests(
    inner: Arc<Inner>,
    peer: Arc<Peer>,
    lane: Arc<Lane>,
    mut send: quinn::SendStream,
    mut requests: tokio::sync::mpsc::UnboundedReceiver<(u64, Bytes)>,
) {
    // Only a weak hold from here on: the lane goes (and this task ends) with its last user.
    let weak = Arc::downgrade(&lane);
    drop(lane);
    let mut queued = Vec::with_capacity(WRITE_BATCH_MAX);
    let mut chunks = Vec::with_capacity(WRITE_BATCH_MAX);
    while requests.recv_many(&mut queued, WRITE_BATCH_MAX).await > 0 {
        // Other calls wait on this lane: their callers (woken by the same batch of answers)
        // may be about to queue theirs; let them, and write them all at once.
        if weak.upgrade().is_some_and(|lane| lane.waiting_more_than(queued.len())) {
            gather(&mut queued, |queued| {
                while queued.len() < WRITE_BATCH_MAX
                    && let Ok(request) = requests.try_recv()
                {
                    queued.push(request);
                }
            })
            .await;
        }
        // No lane, no call waiting on it: what is left was abandoned.
        let Some(lane) = weak.upgrade() else {
            peer.metrics.dropped(&inner.stats, DropReason::Abandoned, queued.len());
            break;
        };
        let abandoned = lane.keep_waited(&mut queued, &mut chunks);
        // Not held across the write: the lane may go while it blocks.
        drop(lane);
        peer.metrics.dropped(&inner.stats, DropReason::Abandoned, abandoned);
        if chunks.is_empty() {
            continue;
        }
        if let Err(error) = write_batch(&inner, &peer, &mut send, &mut chunks).await {
            if let Some(lane) = weak.upgrade() {
                let reason = error.to_string();
                lane.fail(|| TransportError::ConnectionLost {
                    node: peer.node,
                    reason: reason.clone(),
                });
            }
            return;
        }
    }
    let _ = send.finish();
}

/// Lets the other tasks that are ready run once (they may queue more frames), then calls
/// `take` to move what they queued into `batch` — unless `batch` is already full.
async fn gather<T>(batch: &mut Vec<T>, take: impl FnOnce(&mut Vec<T>)) {
    if batch.len() < WRITE_BATCH_MAX {
        tokio::task::yield_now().await;
        take(batch);
    }
}

/// Writes the frames of `chunks` (at most [`WRITE_BATCH_MAX`]) in one write and empties it.
async fn write_batch(
    inner: &Inner,
    peer: &Peer,
    send: &mut quinn::SendStream,
    chunks: &mut Vec<Bytes>,
) -> Result<(), quinn::WriteError> {
    let count = chunks.len();
    let bytes: usize = chunks.iter().map(Bytes::len).sum();
    send.write_all_chunks(chunks).await?;
    chunks.clear();
    peer.metrics.sent(&inner.stats, MessageClass::Rpc, count, bytes);
    Ok(())
}

/// Hands each answer on a lane to its waiting call; fails the lane when the stream ends.
async fn read_answers(
    inner: Arc<Inner>,
    peer: Arc<Peer>,
    lane: std::sync::Weak<Lane>,
    mut reader: FrameReader,
) {
    let node = peer.node;
    // (a protocol error?, why)
    let (protocol, reason) = loop {
        match reader.next().await {
            Ok(Some(frame)) => {
                let response: RpcResponse = match frame.decode() {
                    Ok(response) => response,
                    Err(error) => {
                        bad_frame(&inner, &peer, &error, "rpc");
                        reader.refuse(STREAM_BAD_FRAME);
                        break (true, error.to_string());
                    }
                };
                peer.metrics.received(&inner.stats, MessageClass::Rpc, 1, frame.wire_bytes());
                let Some(lane) = lane.upgrade() else { return };
                let waiter = lane.waiting.lock().as_mut().and_then(|w| w.remove(&response.id));
                // No waiter: the call gave up (its deadline) before the answer came.
                if let Some(waiter) = waiter {
                    let _ = waiter.send(Ok(response));
                }
            }
            Ok(None) => break (false, "RPC stream ended".to_owned()),
            Err(ReadError::Stream(reason)) => break (false, reason),
            Err(ReadError::Frame(error)) => {
                bad_frame(&inner, &peer, &error, "rpc");
                reader.refuse(STREAM_BAD_FRAME);
                break (true, error.to_string());
            }
        }
    };
    if let Some(lane) = lane.upgrade() {
        lane.fail(|| {
            let reason = reason.clone();
            if protocol {
                TransportError::Protocol { node, reason }
            } else {
                TransportError::ConnectionLost { node, reason }
            }
        });
    }
}

fn busy(inner: &Inner, reason: String) -> RpcError {
    RpcError::ServerBusy {
        reason,
        retry_after_ms: u32::try_from(inner.config.rpc_busy_retry_after.as_millis())
            .unwrap_or(u32::MAX),
    }
}

/// The server side of one RPC stream whose first frame is `first`: every request frame on
/// it is served concurrently, and the answers go back on the same stream as they are ready
/// (matched by id), several per write when they queue up. A client may send one request
/// and finish, or keep the stream as a lane for many (see [`Lanes`]).
pub(crate) async fn serve(
    inner: Arc<Inner>,
    peer: Arc<Peer>,
    first: Frame,
    mut reader: FrameReader,
    send: quinn::SendStream,
) {
    let (answers, queue) = tokio::sync::mpsc::channel::<Bytes>(STREAM_ANSWERS_MAX);
    // Requests of this stream being served or waiting to be written: a peer that stops
    // reading its answers stops being read (QUIC flow control then holds it back) instead
    // of growing a queue here.
    let unanswered = Arc::new(tokio::sync::Semaphore::new(STREAM_ANSWERS_MAX));
    inner.spawn(write_answers(inner.clone(), peer.clone(), send, queue, unanswered.clone()));
    let mut frame = first;
    loop {
        let Ok(slot) = unanswered.clone().acquire_owned().await else { break };
        let request: RpcRequest = match frame.decode() {
            Ok(request) => request,
            Err(error) => {
                bad_frame(&inner, &peer, &error, "rpc");
                reader.refuse(STREAM_BAD_FRAME);
                break;
            }
        };
        peer.metrics.received(&inner.stats, MessageClass::Rpc, 1, frame.wire_bytes());
        let (task_inner, task_peer, answers) = (inner.clone(), peer.clone(), answers.clone());
        inner.spawn(async move {
            if let Some(frame) = answer(&task_inner, &task_peer, request).await {
                // The stream may have failed meanwhile; the caller's deadline decides.
                let _ = answers.send(frame).await;
            }
            drop(slot);
        });
        frame = match reader.next().await {
            Ok(Some(frame)) => frame,
            // The client finished its side: the answers still due go out, then the stream
            // ends.
            Ok(None) | Err(ReadError::Stream(_)) => break,
            Err(ReadError::Frame(error)) => {
                bad_frame(&inner, &peer, &error, "rpc");
                reader.refuse(STREAM_BAD_FRAME);
                break;
            }
        };
    }
}

/// Writes the answers of one RPC stream as they come, batching those that queued up;
/// finishes the stream once every request on it was answered.
///
/// While other requests of the stream are still being served, the writer first lets the
/// tasks that are ready run (one [`yield_now`](tokio::task::yield_now)) and takes the answers
/// they queued: the answers of one applied batch are handed out one by one, and without the
/// pause each would leave in a packet (and a `sendmsg`) of its own. A stream with nothing
/// else in flight writes at once.
async fn write_answers(
    inner: Arc<Inner>,
    peer: Arc<Peer>,
    mut send: quinn::SendStream,
    mut queue: tokio::sync::mpsc::Receiver<Bytes>,
    unanswered: Arc<tokio::sync::Semaphore>,
) {
    let mut chunks = Vec::with_capacity(WRITE_BATCH_MAX);
    while queue.recv_many(&mut chunks, WRITE_BATCH_MAX).await > 0 {
        if unanswered.available_permits() < STREAM_ANSWERS_MAX {
            gather(&mut chunks, |chunks| {
                while chunks.len() < WRITE_BATCH_MAX
                    && let Ok(chunk) = queue.try_recv()
                {
                    chunks.push(chunk);
                }
            })
            .await;
        }
        if write_batch(&inner, &peer, &mut send, &mut chunks).await.is_err() {
            return;
        }
    }
    let _ = send.finish();
}

/// Serves one request; the encoded answer (`None` only if not even an error fits a frame).
async fn answer(inner: &Arc<Inner>, peer: &Peer, request: RpcRequest) -> Option<Bytes> {
    let id = request.id;
    let timeout = if request.timeout_ms == 0 {
        inner.config.rpc_timeout_default
    } else {
        Duration::from_millis(request.timeout_ms.into())
    };
    let result = match inner.serve_permits.clone().try_acquire_owned() {
        Err(_) => {
            inner.stats.rpc_busy("server");
            RpcResult::Err(busy(
                inner,
                format!("{} RPCs being served", inner.config.rpc_serve_inflight_max),
            ))
        }
        Ok(_permit) => {
            let answer = inner.handler.on_rpc(peer.node, request);
            tokio::time::timeout(timeout, answer).await.unwrap_or(RpcResult::Err(RpcError::Timeout))
        }
    };
    let response = RpcResponse { id, result };
    match encode_frame(&response) {
        Ok(frame) => Some(frame),
        Err(error) => {
            tracing::warn!(node = %peer.node, %error, "cannot encode an RPC response");
            let fallback = RpcResponse {
                id,
                result: RpcResult::Err(RpcError::Internal {
                    message: format!("response not encodable: {error}"),
                }),
            };
            encode_frame(&fallback).ok()
        }
    }
}
