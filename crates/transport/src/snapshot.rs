//! Snapshot streams: one bidirectional stream per snapshot. The sender writes
//! `SnapshotChunk` frames (rate limited) and finishes; the receiver verifies each chunk
//! (checksum, sequence, same range and snapshot id), rate limits its reads, hands the chunks
//! to [`Handler::on_snapshot`](crate::Handler::on_snapshot) through a small bounded channel
//! (so a slow handler pushes back on QUIC flow control), and answers one `SnapshotAck` with
//! the handler's verdict. A bad chunk ends the transfer with `Rejected`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use parking_lot::Mutex;
use tessera_wire::frame::{Frame, encode_frame, encode_frame_into};
use tessera_wire::transport::{SnapshotAck, SnapshotChunk, SnapshotStatus};
use tokio::sync::mpsc;

use crate::connection::{FrameReader, ReadError, STREAM_BAD_FRAME, STREAM_REFUSED, bad_frame};
use crate::error::TransportError;
use crate::handler::{SnapshotReceiver, SnapshotStreamError};
use crate::metrics::{DropReason, MessageClass};
use crate::peer::Peer;
use crate::rpc::wait_link;
use crate::transport::Inner;

/// A token bucket shared by all snapshot streams of one direction. Tokens may go negative
/// (a chunk larger than the burst waits out its debt), so the long-run rate is honoured for
/// any chunk size.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    /// 0: unlimited.
    bytes_per_sec: u64,
    burst_bytes: f64,
    bucket: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    /// A limiter of `bytes_per_sec` (0: unlimited) with a burst of 50 ms worth (at least
    /// 64 KiB).
    pub(crate) fn new(bytes_per_sec: u64) -> Self {
        #[allow(clippy::cast_precision_loss)]
        let burst_bytes = (bytes_per_sec as f64 / 20.0).max(65_536.0);
        Self { bytes_per_sec, burst_bytes, bucket: Mutex::new((burst_bytes, Instant::now())) }
    }

    /// Waits until `bytes` may pass.
    pub(crate) async fn acquire(&self, bytes: usize) {
        if self.bytes_per_sec == 0 {
            return;
        }
        #[allow(clippy::cast_precision_loss)]
        let rate = self.bytes_per_sec as f64;
        let wait = {
            let mut bucket = self.bucket.lock();
            let now = Instant::now();
            let refill = now.duration_since(bucket.1).as_secs_f64() * rate;
            bucket.0 = (bucket.0 + refill).min(self.burst_bytes);
            bucket.1 = now;
            #[allow(clippy::cast_precision_loss)]
            {
                bucket.0 -= bytes as f64;
            }
            (bucket.0 < 0.0).then(|| Duration::from_secs_f64(-bucket.0 / rate))
        };
        if let Some(wait) = wait {
            tokio::time::sleep(wait).await;
        }
    }
}

/// The sending side of one snapshot.
pub(crate) async fn send(
    inner: &Arc<Inner>,
    peer: &Arc<Peer>,
    mut chunks: mpsc::Receiver<SnapshotChunk>,
    timeout: Duration,
) -> Result<SnapshotAck, TransportError> {
    let node = peer.node;
    if inner.faults.blocked(node) {
        return Err(TransportError::Blocked { node });
    }
    let lost = |error: &dyn std::fmt::Display| TransportError::ConnectionLost {
        node,
        reason: error.to_string(),
    };
    let transfer = async {
        let link = wait_link(inner, peer).await?;
        let (mut send, recv) = link.conn.open_bi().await.map_err(|e| lost(&e))?;
        let mut reader = FrameReader::new(recv, inner.config.frame_bytes_max);
        let mut buffer = BytesMut::new();
        let mut write_error = None;
        while let Some(chunk) = chunks.recv().await {
            if inner.faults.blocked(node) {
                let _ = send.reset(STREAM_REFUSED);
                return Err(TransportError::Blocked { node });
            }
            if inner.faults.lose_frame(node) {
                // A lost chunk breaks the transfer; the sender retries the whole snapshot.
                let _ = send.reset(STREAM_REFUSED);
                peer.metrics.dropped(&inner.stats, DropReason::FaultLoss, 1);
                return Err(TransportError::ConnectionLost {
                    node,
                    reason: "snapshot chunk lost (fault hook)".to_owned(),
                });
            }
            inner.snapshot_send_limiter.acquire(chunk.data.len()).await;
            buffer.clear();
            encode_frame_into(&chunk, &mut buffer)?;
            if let Err(error) = send.write_all(&buffer).await {
                // The receiver stopped reading: its ack says why.
                write_error = Some(error.to_string());
                break;
            }
            peer.metrics.sent(&inner.stats, MessageClass::Snapshot, 1, buffer.len());
            if chunk.last {
                break;
            }
        }
        if write_error.is_none() {
            let _ = send.finish();
        }
        match reader.next().await {
            Ok(Some(frame)) => {
                let ack: SnapshotAck = frame.decode().map_err(|error| {
                    bad_frame(inner, peer, &error, "snapshot");
                    TransportError::Protocol { node, reason: error.to_string() }
                })?;
                Ok(ack)
            }
            Ok(None) => Err(lost(&write_error.unwrap_or_else(|| "no snapshot ack".to_owned()))),
            Err(ReadError::Frame(error)) => {
                bad_frame(inner, peer, &error, "snapshot");
                Err(TransportError::Protocol { node, reason: error.to_string() })
            }
            Err(ReadError::Stream(reason)) => Err(lost(&reason)),
        }
    };
    tokio::time::timeout(timeout, transfer)
        .await
        .unwrap_or(Err(TransportError::Timeout { node, after: timeout }))
}

/// Writes the ack and finishes the stream.
async fn write_ack(peer: &Peer, send: &mut quinn::SendStream, ack: &SnapshotAck) {
    match encode_frame(ack) {
        Ok(frame) => {
            if send.write_all(&frame).await.is_ok() {
                let _ = send.finish();
            }
        }
        Err(error) => {
            tracing::warn!(node = %peer.node, %error, "cannot encode a snapshot ack");
            let _ = send.reset(STREAM_REFUSED);
        }
    }
}

/// The receiving side of a snapshot stream whose first frame is `first`.
pub(crate) async fn receive(
    inner: Arc<Inner>,
    peer: Arc<Peer>,
    first: Frame,
    mut reader: FrameReader,
    mut send: quinn::SendStream,
) {
    let first_bytes = first.wire_bytes();
    let first: SnapshotChunk = match first.decode() {
        Ok(chunk) => chunk,
        Err(error) => {
            bad_frame(&inner, &peer, &error, "snapshot");
            reader.refuse(STREAM_BAD_FRAME);
            let _ = send.reset(STREAM_BAD_FRAME);
            return;
        }
    };
    peer.metrics.received(&inner.stats, MessageClass::Snapshot, 1, first_bytes);
    let (range, snapshot_id) = (first.range, first.snapshot_id);
    let reject = |reason: String, chunks_received: u32| SnapshotAck {
        range,
        snapshot_id,
        chunks_received,
        status: SnapshotStatus::Rejected { reason },
    };
    let Some(header) = first.header.clone() else {
        reader.refuse(STREAM_REFUSED);
        write_ack(&peer, &mut send, &reject("first chunk lacks the header".to_owned(), 0)).await;
        return;
    };
    let Ok(_permit) = inner.snapshot_permits.clone().try_acquire_owned() else {
        reader.refuse(STREAM_REFUSED);
        let reason = format!("{} snapshots already being received", inner.config.snapshot_recv_max);
        write_ack(&peer, &mut send, &reject(reason, 0)).await;
        return;
    };
    inner.snapshot_recv_limiter.acquire(first.data.len()).await;

    let (sender, receiver) = mpsc::channel(inner.config.snapshot_chunks_buffered_max);
    let mut handler = inner.handler.on_snapshot(
        peer.node,
        header,
        SnapshotReceiver { from: peer.node, chunks: receiver },
    );
    let received = AtomicU32::new(1);
    let saw_last = AtomicBool::new(first.last);
    let failure: Mutex<Option<String>> = Mutex::new(None);
    let status = {
        let feed = async {
            if sender.send(Ok(first)).await.is_err() {
                return;
            }
            let mut next_seq = 1u32;
            while !saw_last.load(Ordering::Relaxed) {
                let error = match reader.next().await {
                    Ok(Some(frame)) => {
                        let bytes = frame.wire_bytes();
                        match frame.decode::<SnapshotChunk>() {
                            Ok(chunk)
                                if chunk.range == range
                                    && chunk.snapshot_id == snapshot_id
                                    && chunk.seq == next_seq =>
                            {
                                inner.snapshot_recv_limiter.acquire(chunk.data.len()).await;
                                peer.metrics.received(
                                    &inner.stats,
                                    MessageClass::Snapshot,
                                    1,
                                    bytes,
                                );
                                next_seq += 1;
                                received.fetch_add(1, Ordering::Relaxed);
                                saw_last.store(chunk.last, Ordering::Relaxed);
                                if sender.send(Ok(chunk)).await.is_err() {
                                    return;
                                }
                                continue;
                            }
                            Ok(chunk) => SnapshotStreamError::BadChunk {
                                reason: format!(
                                    "chunk {} of range {} snapshot {} where chunk {next_seq} of range {range} snapshot {snapshot_id} was due",
                                    chunk.seq, chunk.range, chunk.snapshot_id
                                ),
                            },
                            Err(error) => {
                                bad_frame(&inner, &peer, &error, "snapshot");
                                SnapshotStreamError::BadChunk {
                                    reason: format!("chunk {next_seq}: {error}"),
                                }
                            }
                        }
                    }
                    Ok(None) => SnapshotStreamError::Broken {
                        reason: "stream ended before the last chunk".to_owned(),
                    },
                    Err(ReadError::Frame(error)) => {
                        bad_frame(&inner, &peer, &error, "snapshot");
                        SnapshotStreamError::BadChunk {
                            reason: format!("chunk {next_seq}: {error}"),
                        }
                    }
                    Err(ReadError::Stream(reason)) => SnapshotStreamError::Broken { reason },
                };
                *failure.lock() = Some(error.to_string());
                let _ = sender.send(Err(error)).await;
                return;
            }
        };
        tokio::pin!(feed);
        let mut fed = false;
        loop {
            tokio::select! {
                status = &mut handler => break status,
                () = &mut feed, if !fed => fed = true,
            }
        }
    };
    drop(sender);
    let failure = failure.lock().take();
    if failure.is_some() || !saw_last.load(Ordering::Relaxed) {
        reader.refuse(STREAM_REFUSED);
    }
    let status = match (failure, status) {
        (Some(reason), SnapshotStatus::Received) => SnapshotStatus::Rejected { reason },
        (_, status) => status,
    };
    let ack = SnapshotAck {
        range,
        snapshot_id,
        chunks_received: received.load(Ordering::Relaxed),
        status,
    };
    write_ack(&peer, &mut send, &ack).await;
}
