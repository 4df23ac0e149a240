//! The store on the QUIC transport: [`TransportNetwork`] is the store's [`Network`] over a
//! [`Transport`], and [`StoreRpcHandler`] is the transport's [`Handler`] that hands what
//! arrives (Raft messages, KV RPCs) to a running store through its [`StoreHandle`].
//!
//! In this layout every store is its own node: store `n` is reached at node `n`.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tessera_transport::{BoxFuture, Handler, SnapshotReceiver, Transport};
use tessera_wire::errors::RpcError;
use tessera_wire::ids::{NodeId, StoreId};
use tessera_wire::raft::{Message, MessageKind, Snapshot};
use tessera_wire::rpc::{RpcRequest, RpcRequestBody, RpcResponseBody, RpcResult};
use tessera_wire::transport::{
    RaftEnvelope, SnapshotChunk, SnapshotFile, SnapshotHeader, SnapshotStatus,
};

use crate::env::{Network, SnapshotReport};
use crate::fsm::system::StoreHandle;
use crate::snapshot::{SnapshotData, SnapshotDataFile};

/// Bytes of snapshot file per chunk.
const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;
/// How long one snapshot transfer may take.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(600);
/// Snapshots one store sends at once; more are refused (reported failed, so Raft retries
/// later) rather than queued: a store joining with thousands of ranges must not start
/// thousands of transfers.
const SNAPSHOT_SENDS_MAX: usize = 4;

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
///
/// A snapshot message leaves on its own stream ([`Transport::send_snapshot`]): the header
/// carries the message's metadata and descriptor, the chunks carry the files; how it ended
/// comes back through [`Network::take_snapshot_reports`].
#[derive(Debug)]
pub struct TransportNetwork {
    transport: Arc<Transport>,
    pending: BTreeMap<NodeId, Vec<RaftEnvelope>>,
    runtime: tokio::runtime::Handle,
    reports: Arc<Mutex<Vec<SnapshotReport>>>,
    sending: Arc<AtomicUsize>,
}

impl TransportNetwork {
    /// A network sending through `transport`; snapshots are streamed by tasks on
    /// `runtime` (the transport's).
    #[must_use]
    pub fn new(transport: Arc<Transport>, runtime: tokio::runtime::Handle) -> Self {
        Self {
            transport,
            pending: BTreeMap::new(),
            runtime,
            reports: Arc::default(),
            sending: Arc::default(),
        }
    }

    fn send_snapshot(&self, envelope: &RaftEnvelope) {
        let report = SnapshotReport { range: envelope.range, to: envelope.message.to, ok: false };
        let reports = self.reports.clone();
        let fail = move |reason: String| {
            tracing::warn!(range = %report.range, to = %report.to, %reason, "snapshot not sent");
            reports.lock().unwrap_or_else(PoisonError::into_inner).push(report);
        };

        if self.sending.fetch_add(1, Ordering::AcqRel) >= SNAPSHOT_SENDS_MAX {
            self.sending.fetch_sub(1, Ordering::AcqRel);
            fail(format!("{SNAPSHOT_SENDS_MAX} snapshots already in flight"));
            return;
        }
        let sending = self.sending.clone();
        let done = move || {
            sending.fetch_sub(1, Ordering::AcqRel);
        };
        let Some(snapshot) = envelope.message.snapshot.as_deref() else {
            done();
            fail("snapshot message without snapshot".to_owned());
            return;
        };
        let data = match SnapshotData::decode(&snapshot.data) {
            Ok(data) => data,
            Err(reason) => {
                done();
                fail(reason);
                return;
            }
        };
        let header = SnapshotHeader {
            from_store: envelope.from_store,
            to_store: envelope.to_store,
            from: envelope.message.from,
            to: envelope.message.to,
            term: envelope.message.term,
            metadata: snapshot.metadata.clone(),
            descriptor: data.descriptor.clone(),
            files: data
                .files
                .iter()
                .map(|file| SnapshotFile {
                    cf: file.cf.clone(),
                    size_bytes: file.size_bytes,
                    checksum: file.checksum,
                    keys: file.keys,
                })
                .collect(),
        };
        let transport = self.transport.clone();
        let reports = self.reports.clone();
        let node = node_of(envelope.to_store);
        let range = envelope.range;
        let snapshot_id = transport.next_snapshot_id();
        self.runtime.spawn(async move {
            let (sender, receiver) = tokio::sync::mpsc::channel(4);
            let paths: Vec<PathBuf> =
                data.files.iter().map(|file| PathBuf::from(&file.path)).collect();
            // Files are read on a blocking thread, a chunk at a time, as the stream drains.
            let reader = tokio::task::spawn_blocking(move || {
                read_chunks(range, snapshot_id, header, &paths, &sender)
            });
            let sent = transport.send_snapshot(node, receiver, SNAPSHOT_TIMEOUT).await;
            let read = reader.await.map_err(|error| error.to_string()).and_then(|r| r);
            let ok = match (&sent, &read) {
                (Ok(ack), Ok(())) => ack.status == SnapshotStatus::Received,
                _ => false,
            };
            if !ok {
                tracing::warn!(%range, ?sent, ?read, "snapshot transfer failed");
            }
            done();
            reports.lock().unwrap_or_else(PoisonError::into_inner).push(SnapshotReport {
                range,
                to: report.to,
                ok,
            });
        });
    }

    /// The transport this network sends through.
    #[must_use]
    pub fn transport(&self) -> &Arc<Transport> {
        &self.transport
    }
}

impl Network for TransportNetwork {
    fn send(&mut self, envelope: RaftEnvelope) {
        if envelope.message.kind == MessageKind::Snapshot {
            self.send_snapshot(&envelope);
            return;
        }
        self.pending.entry(node_of(envelope.to_store)).or_default().push(envelope);
    }

    fn take_snapshot_reports(&mut self) -> Vec<SnapshotReport> {
        std::mem::take(&mut *self.reports.lock().unwrap_or_else(PoisonError::into_inner))
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
    snapshot_dir: Option<PathBuf>,
    /// Numbers the directories of incoming snapshots (unique within the process).
    received: std::sync::atomic::AtomicU64,
}

impl StoreRpcHandler {
    /// A handler with no store yet, which refuses snapshots.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A handler with no store yet that receives snapshots into `dir` (the store's
    /// `snapshot_dir`).
    #[must_use]
    pub fn with_snapshot_dir(dir: PathBuf) -> Self {
        Self { snapshot_dir: Some(dir), ..Self::default() }
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

/// Streams the files named by `paths` as chunks of snapshot `snapshot_id` of `range`; the
/// first chunk carries `header`, the last is marked.
fn read_chunks(
    range: tessera_wire::ids::RangeId,
    snapshot_id: u64,
    header: SnapshotHeader,
    paths: &[PathBuf],
    sender: &tokio::sync::mpsc::Sender<SnapshotChunk>,
) -> Result<(), String> {
    let mut header = Some(header);
    let mut seq = 0u32;
    let mut pieces: Vec<(u32, u64, Bytes)> = Vec::new();
    let mut emit = |file_index: u32, offset: u64, data: Bytes, last: bool| -> Result<(), String> {
        let chunk = SnapshotChunk {
            range,
            snapshot_id,
            seq,
            header: header.take(),
            file_index,
            offset,
            data,
            checksum: 0,
            last,
        }
        .sealed();
        seq += 1;
        sender.blocking_send(chunk).map_err(|_| "snapshot stream closed".to_owned())
    };
    for (index, path) in paths.iter().enumerate() {
        let mut file = std::fs::File::open(path)
            .map_err(|error| format!("opening {}: {error}", path.display()))?;
        let mut offset = 0u64;
        loop {
            let mut buffer = vec![0u8; SNAPSHOT_CHUNK_BYTES];
            let read = read_full(&mut file, &mut buffer)
                .map_err(|error| format!("reading {}: {error}", path.display()))?;
            if read == 0 {
                break;
            }
            buffer.truncate(read);
            let file_index = u32::try_from(index).map_err(|_| "too many files".to_owned())?;
            // Hold one piece back so that the last one can be marked.
            if let Some((i, o, d)) = pieces.pop() {
                emit(i, o, d, false)?;
            }
            pieces.push((file_index, offset, Bytes::from(buffer)));
            offset += read as u64;
        }
    }
    match pieces.pop() {
        Some((i, o, d)) => emit(i, o, d, true),
        // No file (an empty range): one chunk with the header only.
        None => emit(0, 0, Bytes::new(), true),
    }
}

/// Reads until `buffer` is full or the file ends; returns the bytes read.
fn read_full(file: &mut std::fs::File, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        let read = file.read(&mut buffer[filled..])?;
        if read == 0 {
            break;
        }
        filled += read;
    }
    Ok(filled)
}

/// Writes an incoming snapshot's chunks into `dir` (one file per header file, each written
/// in order) and checks every file's length and checksum; returns the payload naming the
/// local copies.
async fn receive_files(
    header: &SnapshotHeader,
    chunks: &mut SnapshotReceiver,
    dir: &Path,
) -> Result<SnapshotData, String> {
    let declared: u64 = header.files.iter().map(|file| file.size_bytes).sum();
    let (_, available) = crate::operation::heartbeat::disk_space(dir);
    if available > 0 && declared > available {
        return Err(format!("{declared} bytes declared, {available} free on disk"));
    }
    std::fs::create_dir_all(dir).map_err(|error| format!("creating {}: {error}", dir.display()))?;
    let path_of = |index: usize| dir.join(format!("{index}.sst"));
    let mut written = vec![0u64; header.files.len()];
    // Blocking writes of at most one chunk (1 MiB) each, on the transport's task: small
    // enough not to stall it noticeably.
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|error| error.to_string())?;
        if !chunk.data.is_empty() {
            let index = chunk.file_index as usize;
            let Some(done) = written.get_mut(index) else {
                return Err(format!("chunk for file {index} of {}", header.files.len()));
            };
            if chunk.offset != *done {
                return Err(format!("chunk at {} of file {index}, expected {done}", chunk.offset));
            }
            let declared = header.files[index].size_bytes;
            if *done + chunk.data.len() as u64 > declared {
                return Err(format!("file {index} grows past its declared {declared} bytes"));
            }
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path_of(index))
                .map_err(|error| format!("opening file {index}: {error}"))?;
            file.write_all(&chunk.data)
                .map_err(|error| format!("writing file {index}: {error}"))?;
            *done += chunk.data.len() as u64;
        }
        if chunk.last {
            break;
        }
    }
    let mut files = Vec::with_capacity(header.files.len());
    for (index, file) in header.files.iter().enumerate() {
        let path = path_of(index);
        let (size_bytes, checksum) = tessera_engine::file_checksum(&path)
            .map_err(|error| format!("checking file {index}: {error}"))?;
        if size_bytes != file.size_bytes || checksum != file.checksum {
            return Err(format!("file {index} arrived damaged or incomplete"));
        }
        files.push(SnapshotDataFile {
            cf: file.cf.clone(),
            path: path.display().to_string(),
            size_bytes,
            keys: file.keys,
            checksum,
        });
    }
    Ok(SnapshotData { descriptor: header.descriptor.clone(), files })
}

impl Handler for StoreRpcHandler {
    fn on_snapshot(
        &self,
        from: NodeId,
        header: SnapshotHeader,
        mut chunks: SnapshotReceiver,
    ) -> BoxFuture<SnapshotStatus> {
        let handle = self.handle();
        let base = self.snapshot_dir.clone();
        let number = self.received.fetch_add(1, Ordering::Relaxed);
        Box::pin(async move {
            let rejected = |reason: String| SnapshotStatus::Rejected { reason };
            let (Some(handle), Some(base)) = (handle, base) else {
                return rejected("this store takes no snapshots now".to_owned());
            };
            let range = header.descriptor.id;
            let dir = base.join(format!(
                "rcv-{}-{range}-{}-{}-{number}",
                header.to_store, header.from_store, header.metadata.index
            ));
            let data = match receive_files(&header, &mut chunks, &dir).await {
                Ok(data) => data,
                Err(reason) => {
                    crate::operation::snapshot::remove_snapshot_dir(&dir);
                    tracing::warn!(%from, %range, %reason, "snapshot refused");
                    return rejected(reason);
                }
            };
            let mut message =
                Message::new(MessageKind::Snapshot, header.from, header.to, header.term);
            message.snapshot =
                Some(Box::new(Snapshot { metadata: header.metadata.clone(), data: data.encode() }));
            if data.files.is_empty() {
                // Nothing for the store to delete later.
                crate::operation::snapshot::remove_snapshot_dir(&dir);
            }
            handle.send_raft(vec![RaftEnvelope {
                range,
                from_store: header.from_store,
                to_store: header.to_store,
                message,
            }]);
            SnapshotStatus::Received
        })
    }

    fn on_raft(&self, from: NodeId, mut envelopes: Vec<RaftEnvelope>) {
        // Snapshots arrive only on their own stream (`on_snapshot`), with their files; one
        // in a message batch would name files the store must not trust.
        let before = envelopes.len();
        envelopes.retain(|envelope| envelope.message.kind != MessageKind::Snapshot);
        if envelopes.len() < before {
            tracing::warn!(%from, "snapshot messages outside a snapshot stream dropped");
        }
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
