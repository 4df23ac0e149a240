//! [`RawClient`]: raw key-value operations routed to the ranges' leaders, with retries.
//!
//! # Routing and retries
//!
//! Every request is built for one range from its cached descriptor (see [`crate::routing`])
//! and sent to the range's leader as last seen (else its first voter). What comes back
//! decides the next attempt:
//!
//! - `NotLeader { leader: Some(r) }`: `r` is noted as the leader and tried at once (unless it
//!   just failed at the transport: then another replica, after a pause).
//! - `NotLeader { leader: None }`: another voter, after a pause (an election is running).
//! - `EpochNotMatch { ranges }`: the descriptors go into the cache (evicting what they
//!   overlap) and the request is rebuilt for the range now holding the key (the store adds
//!   that range's descriptor when a split moved the key). If they are no newer than the
//!   request's (the store is behind), another replica is tried. Only the first such answer
//!   in a call is followed at once; later ones after a pause.
//! - `RangeNotFound`, `KeyNotInRange`, `StoreNotMatch`: the range is dropped from the cache
//!   and looked up again at the placement driver; the store is not asked again in this call
//!   unless every voter was.
//! - `ServerBusy`: the same store after a pause (at least its `retry_after_ms`).
//! - `StaleCommand`: at once (the proposal was never committed).
//! - A store that cannot be reached, or that does not answer within
//!   [`ClientConfig::attempt_timeout`]: it is suspected for [`ClientConfig::suspect_for`]
//!   (other replicas are tried first, by every call), the route is reloaded from the
//!   placement driver, and the next voter is tried.
//! - Any other error is the request's own and is returned as [`ClientError::Server`].
//!
//! Pauses grow from [`ClientConfig::backoff_min`] to [`ClientConfig::backoff_max`]. A call
//! ends with [`ClientError::Timeout`] at its deadline ([`ClientConfig::request_timeout`]) and
//! with [`ClientError::Unavailable`] after [`ClientConfig::max_retries`] retries.
//!
//! Ambiguous failures (a timeout, a connection lost after sending, a server's `Timeout` or
//! `Internal`) may hide an applied write. Reads are simply retried. Writes are not: the call
//! fails at once with [`ClientError::Timeout`] or [`ClientError::OutcomeUnknown`]. Even a
//! put or a delete, idempotent on its own, cannot be resent safely: the earlier attempt may
//! still be on its way (held by a paused store, or queued in the network) and be applied
//! after the retry was acknowledged and after other clients' later writes, which it would
//! silently undo. [`ClientConfig::retry_ambiguous_writes`] turns retries of put, delete,
//! batch put and delete range back on, for callers who accept that; a compare-and-swap is
//! never resent. Definite refusals (`NotLeader`, `EpochNotMatch`, `StaleCommand`, …) mean
//! the attempt was not applied, and every call retries after them.
//!
//! # Requests spanning ranges
//!
//! `batch_get`, `batch_put` and `delete_range` are split by range (the routes of uncached
//! ranges are fetched with one `ScanRanges`), the parts are sent in parallel, and a part that
//! meets a newer range layout (a split) is split again for the next round. A batch put is
//! atomic within each range only. `scan` walks the ranges in key order, one request each,
//! until `limit` pairs.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parking_lot::Mutex;
use tessera_transport::tls::{NodeTls, TlsSource};
use tessera_transport::{Handler, Transport, TransportConfig, TransportError};
use tessera_wire::errors::RpcError;
use tessera_wire::ids::{NodeId, RangeId, StoreId};
use tessera_wire::kv::{
    KvCommand, KvPair, KvRequest, KvResponse, RawBatchGetRequest, RawBatchPutRequest,
    RawCompareAndSwapRequest, RawDeleteRangeRequest, RawDeleteRequest, RawGetRequest,
    RawPutRequest, RawScanRequest, ReadMode, RequestContext,
};
use tessera_wire::placement::{PlacementRequest, PlacementResponse, StoreState};
use tessera_wire::range::{RangeDescriptor, Replica};
use tessera_wire::rpc::{RpcRequestBody, RpcResponseBody, RpcResult};
use tessera_wire::transport::RaftEnvelope;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::config::ClientConfig;
use crate::error::ClientError;
use crate::placement::PlacementRpc;
use crate::routing::{CachedRoute, RouteCache};

/// Client node ids are `CLIENT_NODE_BASE | random 48 bits`: far above any store or placement
/// node id, and distinct between clients with overwhelming probability.
pub const CLIENT_NODE_BASE: u64 = 1 << 48;

/// Ranges asked for per `ScanRanges` when a batch or scan needs routes.
const SCAN_RANGES_LIMIT: u32 = 256;

/// A store's scan stops at its byte bound (`scan_bytes_max`, 4 MiB by default) as well as at
/// the limit. A short answer smaller than this is taken to mean the range's part is
/// exhausted; a larger one is continued in the same range.
const SCAN_BYTES_TRUSTED: u64 = 256 << 10;

/// How a call may be retried after an ambiguous failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Reads (and writes with [`ClientConfig::retry_ambiguous_writes`]): retried.
    Always,
    /// Writes: never resent after a failure that may hide an applied write.
    AtMostOnce,
}

/// One logical call: its name (for errors), retry policy and deadline.
#[derive(Debug, Clone, Copy)]
struct Call {
    operation: &'static str,
    retry: Retry,
    started: Instant,
    deadline: Instant,
}

/// Why a routing lookup (range or store) failed.
enum Lookup {
    /// Try again (perhaps elsewhere, after a pause).
    Retry(String),
    /// Give up the call.
    Fatal(ClientError),
}

/// The client's transport handler: it calls out and serves nothing.
struct ClientNode;

impl Handler for ClientNode {
    fn on_raft(&self, _from: NodeId, _envelopes: Vec<RaftEnvelope>) {}
}

/// A raw key-value client: cheap to clone (clones share the transport and the caches),
/// `Send + Sync`, usable from many tasks at once.
#[derive(Debug, Clone)]
pub struct RawClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: ClientConfig,
    transport: Arc<Transport>,
    placement: PlacementRpc,
    routes: Mutex<RouteCache>,
    /// Stores whose address is registered with the transport, and their nodes.
    stores: Mutex<HashMap<StoreId, NodeId>>,
    /// Stores that failed at the transport, until when they are tried last.
    suspects: Mutex<HashMap<StoreId, Instant>>,
}

/// A part of a multi-range request, re-split when it meets a range boundary.
#[derive(Debug, Clone)]
enum Piece {
    /// Keys to read, ascending and distinct.
    Get(Vec<Bytes>),
    /// Pairs to write, ascending by key and distinct.
    Put(Vec<KvPair>),
    /// `[start, end)` to delete (empty `end`: +∞).
    DeleteRange(Bytes, Bytes),
}

impl Piece {
    /// The key the piece's range is looked up by (its smallest).
    fn locate(&self) -> Bytes {
        match self {
            Self::Get(keys) => keys.first().cloned().unwrap_or_default(),
            Self::Put(pairs) => pairs.first().map(|pair| pair.key.clone()).unwrap_or_default(),
            Self::DeleteRange(start, _) => start.clone(),
        }
    }

    /// The request for the part of the piece inside `range` (which holds its first key).
    fn command(&self, range: &RangeDescriptor) -> KvCommand {
        match self {
            Self::Get(keys) => KvCommand::RawBatchGet(RawBatchGetRequest {
                keys: keys.iter().filter(|key| range.contains_key(key)).cloned().collect(),
            }),
            Self::Put(pairs) => KvCommand::RawBatchPut(RawBatchPutRequest {
                pairs: pairs.iter().filter(|pair| range.contains_key(&pair.key)).cloned().collect(),
            }),
            Self::DeleteRange(start, end) => KvCommand::RawDeleteRange(RawDeleteRangeRequest {
                start_key: start.clone(),
                end_key: clip_end(end, &range.end_key),
            }),
        }
    }

    /// The part of the piece after `range`, if any.
    fn leftover(&self, range: &RangeDescriptor) -> Option<Self> {
        let after = |key: &Bytes| !range.end_key.is_empty() && *key >= range.end_key;
        let leftover = match self {
            Self::Get(keys) => Self::Get(keys.iter().filter(|key| after(key)).cloned().collect()),
            Self::Put(pairs) => {
                Self::Put(pairs.iter().filter(|pair| after(&pair.key)).cloned().collect())
            }
            Self::DeleteRange(_, end) => {
                if range.end_key.is_empty() || (!end.is_empty() && *end <= range.end_key) {
                    return None;
                }
                Self::DeleteRange(range.end_key.clone(), end.clone())
            }
        };
        (!leftover.is_empty()).then_some(leftover)
    }

    fn is_empty(&self) -> bool {
        match self {
            Self::Get(keys) => keys.is_empty(),
            Self::Put(pairs) => pairs.is_empty(),
            Self::DeleteRange(start, end) => !end.is_empty() && end <= start,
        }
    }
}

/// The smaller of a request's end `end` and a range's end `range_end` (empty: +∞).
fn clip_end(end: &Bytes, range_end: &Bytes) -> Bytes {
    if range_end.is_empty() || (!end.is_empty() && end <= range_end) {
        end.clone()
    } else {
        range_end.clone()
    }
}

/// The smallest key after `key`.
fn next_key(key: &[u8]) -> Bytes {
    let mut next = Vec::with_capacity(key.len() + 1);
    next.extend_from_slice(key);
    next.push(0);
    Bytes::from(next)
}

/// A fresh client node id (see [`CLIENT_NODE_BASE`]).
fn random_node_id() -> NodeId {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
    hasher.write_u128(nanos);
    hasher.write_u32(std::process::id());
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    NodeId(CLIENT_NODE_BASE | (hasher.finish() & (CLIENT_NODE_BASE - 1)))
}

/// Whether a placement error may go away by retrying.
const fn placement_retryable(error: &RpcError) -> bool {
    matches!(
        error,
        RpcError::NotPlacementLeader { .. }
            | RpcError::ServerBusy { .. }
            | RpcError::Timeout
            | RpcError::Internal { .. }
    )
}

impl RawClient {
    /// Starts the client's transport (a node id in `1 << 48 | random`), registers the
    /// placement members `(node id, address)`, and checks that the placement driver answers
    /// (`ClusterStatus`) within `config.request_timeout`.
    ///
    /// # Errors
    /// [`ClientError::InvalidArgument`] (no members, a bad configuration, or a placement
    /// driver of another cluster), [`ClientError::Transport`] (TLS material, bind),
    /// [`ClientError::Unavailable`] (the placement driver did not answer),
    /// [`ClientError::Placement`].
    pub async fn connect(
        placement: &[(u64, SocketAddr)],
        config: ClientConfig,
    ) -> Result<Self, ClientError> {
        config.validate()?;
        if placement.is_empty() {
            return Err(ClientError::InvalidArgument("no placement members given".to_owned()));
        }
        let node_id = random_node_id();
        let source = config
            .tls
            .clone()
            .unwrap_or_else(|| TlsSource::DevGenerated { dir: config.certs_dir.clone() });
        let name = config.tls_node_name.clone();
        let tls = tokio::task::spawn_blocking(move || NodeTls::load(&source, &name))
            .await
            .map_err(|error| ClientError::Transport(format!("loading TLS material: {error}")))?
            .map_err(|error| ClientError::Transport(format!("TLS material: {error}")))?;
        let mut transport_config =
            TransportConfig::new(node_id, StoreId(0), config.cluster_id, config.listen, tls);
        let dial = config.attempt_timeout.min(Duration::from_secs(5));
        transport_config.connect_timeout = dial;
        transport_config.handshake_timeout = dial;
        transport_config.reconnect_backoff_min = Duration::from_millis(50);
        transport_config.reconnect_backoff_max = Duration::from_secs(1);
        let transport = Transport::start(transport_config, Arc::new(ClientNode))
            .await
            .map_err(|error| ClientError::Transport(error.to_string()))?;
        let transport = Arc::new(transport);
        for (id, addr) in placement {
            transport.set_peer(NodeId(*id), *addr);
        }
        let members = placement.iter().map(|(id, _)| NodeId(*id)).collect();
        let placement = PlacementRpc::new(transport.clone(), members);
        match placement.call(PlacementRequest::ClusterStatus, config.request_timeout).await {
            Ok(PlacementResponse::ClusterStatus { status }) => {
                if status.cluster_id != config.cluster_id {
                    return Err(ClientError::InvalidArgument(format!(
                        "the placement driver serves cluster {}, not {}",
                        status.cluster_id, config.cluster_id
                    )));
                }
            }
            Ok(other) => {
                return Err(ClientError::UnexpectedResponse(format!(
                    "ClusterStatus answered with {other:?}"
                )));
            }
            Err(error) if placement_retryable(&error) => {
                return Err(ClientError::Unavailable {
                    operation: "connect",
                    attempts: 1,
                    last: format!("placement driver: {error}"),
                });
            }
            Err(error) => return Err(ClientError::Placement(error)),
        }
        tracing::debug!(node = %node_id, "raw client connected");
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                transport,
                placement,
                routes: Mutex::new(RouteCache::new()),
                stores: Mutex::new(HashMap::new()),
                suspects: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The client's transport node id.
    #[must_use]
    pub fn node_id(&self) -> NodeId {
        self.inner.transport.node_id()
    }

    /// The client's line to the placement driver (for administrative calls).
    #[must_use]
    pub fn placement(&self) -> &PlacementRpc {
        &self.inner.placement
    }

    /// The configuration the client runs with.
    #[must_use]
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// The routes cached now, in key order.
    #[must_use]
    pub fn cached_routes(&self) -> Vec<CachedRoute> {
        self.inner.routes.lock().routes().cloned().collect()
    }

    /// The value of `key`, or `None` if it is absent.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn get(&self, key: impl Into<Bytes>) -> Result<Option<Bytes>, ClientError> {
        let key = key.into();
        let call = self.call("get", Retry::Always);
        let command = KvCommand::RawGet(RawGetRequest { key: key.clone() });
        match self.call_range(call, &key, |_| command.clone()).await?.1 {
            KvResponse::RawGet { value } => Ok(value),
            other => Err(unexpected("get", &other)),
        }
    }

    /// The pairs of `keys` that exist, in the order of `keys` (a key asked twice is
    /// answered twice). Keys of different ranges are read in parallel, each range's at one
    /// point in time.
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn batch_get(&self, keys: Vec<Bytes>) -> Result<Vec<(Bytes, Bytes)>, ClientError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let call = self.call("batch_get", Retry::Always);
        let mut sorted = keys.clone();
        sorted.sort();
        sorted.dedup();
        let mut found: HashMap<Bytes, Bytes> = HashMap::new();
        for answer in self.run_pieces(call, Piece::Get(sorted)).await? {
            match answer {
                KvResponse::RawBatchGet { pairs } => {
                    found.extend(pairs.into_iter().map(|pair| (pair.key, pair.value)));
                }
                other => return Err(unexpected("batch_get", &other)),
            }
        }
        Ok(keys
            .into_iter()
            .filter_map(|key| found.get(&key).cloned().map(|value| (key, value)))
            .collect())
    }

    /// Sets `key` to `value`.
    ///
    /// # Errors
    /// See [`ClientError`]; after [`ClientError::Timeout`] or [`ClientError::OutcomeUnknown`]
    /// the write may have been applied (it is not resent: see the [module
    /// documentation](self)).
    pub async fn put(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
    ) -> Result<(), ClientError> {
        let key = key.into();
        let call = self.call("put", self.write_retry());
        let command = KvCommand::RawPut(RawPutRequest { key: key.clone(), value: value.into() });
        match self.call_range(call, &key, |_| command.clone()).await?.1 {
            KvResponse::RawPut => Ok(()),
            other => Err(unexpected("put", &other)),
        }
    }

    /// Sets every pair (a key given twice gets its last value). Atomic within each range;
    /// the ranges' parts are written in parallel.
    ///
    /// # Errors
    /// See [`ClientError`]; after an error some ranges' parts may have been written.
    pub async fn batch_put(&self, pairs: Vec<(Bytes, Bytes)>) -> Result<(), ClientError> {
        if pairs.is_empty() {
            return Ok(());
        }
        let call = self.call("batch_put", self.write_retry());
        let mut last: HashMap<Bytes, Bytes> = HashMap::with_capacity(pairs.len());
        last.extend(pairs);
        let mut pairs: Vec<KvPair> =
            last.into_iter().map(|(key, value)| KvPair { key, value }).collect();
        pairs.sort_by(|a, b| a.key.cmp(&b.key));
        for answer in self.run_pieces(call, Piece::Put(pairs)).await? {
            if answer != KvResponse::RawBatchPut {
                return Err(unexpected("batch_put", &answer));
            }
        }
        Ok(())
    }

    /// Deletes `key` (absent or not).
    ///
    /// # Errors
    /// See [`ClientError`]; after [`ClientError::Timeout`] or [`ClientError::OutcomeUnknown`]
    /// the delete may have been applied (it is not resent: see the [module
    /// documentation](self)).
    pub async fn delete(&self, key: impl Into<Bytes>) -> Result<(), ClientError> {
        let key = key.into();
        let call = self.call("delete", self.write_retry());
        let command = KvCommand::RawDelete(RawDeleteRequest { key: key.clone() });
        match self.call_range(call, &key, |_| command.clone()).await?.1 {
            KvResponse::RawDelete => Ok(()),
            other => Err(unexpected("delete", &other)),
        }
    }

    /// Deletes every key in `[start, end)` (empty `end`: up to +∞): one request per range,
    /// in parallel. Each range's part is atomic; the whole is not.
    ///
    /// # Errors
    /// [`ClientError::InvalidArgument`] if `end` is before `start`; see [`ClientError`].
    pub async fn delete_range(
        &self,
        start: impl Into<Bytes>,
        end: impl Into<Bytes>,
    ) -> Result<(), ClientError> {
        let (start, end) = (start.into(), end.into());
        if !end.is_empty() && end < start {
            return Err(ClientError::InvalidArgument(format!(
                "delete_range: end {end:?} is before start {start:?}"
            )));
        }
        let piece = Piece::DeleteRange(start, end);
        if piece.is_empty() {
            return Ok(());
        }
        let call = self.call("delete_range", self.write_retry());
        for answer in self.run_pieces(call, piece).await? {
            if answer != KvResponse::RawDeleteRange {
                return Err(unexpected("delete_range", &answer));
            }
        }
        Ok(())
    }

    /// At most `limit` pairs of `[start, end)` (empty `end`: up to +∞) in key order, across
    /// ranges (each range read at its own point in time). `limit == 0` returns nothing.
    ///
    /// # Errors
    /// [`ClientError::InvalidArgument`] if `end` is before `start`; see [`ClientError`].
    pub async fn scan(
        &self,
        start: impl Into<Bytes>,
        end: impl Into<Bytes>,
        limit: u32,
    ) -> Result<Vec<(Bytes, Bytes)>, ClientError> {
        let (start, end) = (start.into(), end.into());
        if !end.is_empty() && end < start {
            return Err(ClientError::InvalidArgument(format!(
                "scan: end {end:?} is before start {start:?}"
            )));
        }
        let mut pairs = Vec::new();
        if limit == 0 || (!end.is_empty() && end == start) {
            return Ok(pairs);
        }
        let call = self.call("scan", Retry::Always);
        self.prefetch_routes(call, &start, &end).await;
        let mut cursor = start;
        loop {
            let remaining = limit - u32::try_from(pairs.len()).unwrap_or(limit);
            let (range, answer) = self
                .call_range(call, &cursor, |range| {
                    KvCommand::RawScan(RawScanRequest {
                        start_key: cursor.clone(),
                        end_key: clip_end(&end, &range.end_key),
                        limit: remaining,
                        reverse: false,
                        key_only: false,
                    })
                })
                .await?;
            let KvResponse::RawScan { pairs: got } = answer else {
                return Err(unexpected("scan", &answer));
            };
            let count = got.len();
            let bytes: u64 =
                got.iter().map(|pair| (pair.key.len() + pair.value.len()) as u64).sum();
            let last = got.last().map(|pair| pair.key.clone());
            pairs.extend(got.into_iter().map(|pair| (pair.key, pair.value)));
            if count >= remaining as usize {
                pairs.truncate(limit as usize);
                return Ok(pairs);
            }
            cursor = match last {
                // Cut short by the store's byte bound: go on in this range.
                Some(last) if bytes >= SCAN_BYTES_TRUSTED => next_key(&last),
                _ => {
                    let range_end = range.end_key;
                    if range_end.is_empty() || (!end.is_empty() && range_end >= end) {
                        return Ok(pairs);
                    }
                    range_end
                }
            };
        }
    }

    /// Sets `key` to `new` (`None`: deletes it) if its value is `expected` (`None`:
    /// absent), atomically. Returns whether it did, and the value before.
    ///
    /// Not retried after an ambiguous failure: [`ClientError::Timeout`] and
    /// [`ClientError::OutcomeUnknown`] leave the outcome unknown (read the key).
    ///
    /// # Errors
    /// See [`ClientError`].
    pub async fn compare_and_swap(
        &self,
        key: impl Into<Bytes>,
        expected: Option<Bytes>,
        new: Option<Bytes>,
    ) -> Result<(bool, Option<Bytes>), ClientError> {
        let key = key.into();
        let call = self.call("compare_and_swap", Retry::AtMostOnce);
        let command = KvCommand::RawCompareAndSwap(RawCompareAndSwapRequest {
            key: key.clone(),
            expected,
            value: new,
        });
        match self.call_range(call, &key, |_| command.clone()).await?.1 {
            KvResponse::RawCompareAndSwap { succeeded, previous } => Ok((succeeded, previous)),
            other => Err(unexpected("compare_and_swap", &other)),
        }
    }

    /// How a put, delete, batch put or delete range may be retried.
    fn write_retry(&self) -> Retry {
        if self.inner.config.retry_ambiguous_writes { Retry::Always } else { Retry::AtMostOnce }
    }

    /// A call named `operation` starting now.
    fn call(&self, operation: &'static str, retry: Retry) -> Call {
        let started = Instant::now();
        Call { operation, retry, started, deadline: started + self.inner.config.request_timeout }
    }

    /// Runs `piece`, split by range, the parts in parallel, re-splitting the parts that meet
    /// range boundaries the cache did not know, until every part is answered. The answers
    /// come in no particular order.
    async fn run_pieces(&self, call: Call, piece: Piece) -> Result<Vec<KvResponse>, ClientError> {
        let mut answers = Vec::new();
        let mut pending = vec![piece];
        while !pending.is_empty() {
            let mut parts = Vec::new();
            for piece in pending.drain(..) {
                parts.extend(self.split_piece(call, piece).await);
            }
            if let [piece] = parts.as_slice() {
                let (range, answer) =
                    self.call_range(call, &piece.locate(), |range| piece.command(range)).await?;
                answers.push(answer);
                pending.extend(piece.leftover(&range));
                continue;
            }
            let mut tasks = JoinSet::new();
            for piece in parts {
                let client = self.clone();
                tasks.spawn(async move {
                    let (range, answer) = client
                        .call_range(call, &piece.locate(), |range| piece.command(range))
                        .await?;
                    Ok::<_, ClientError>((piece.leftover(&range), answer))
                });
            }
            while let Some(joined) = tasks.join_next().await {
                let (leftover, answer) = joined.map_err(|error| {
                    ClientError::Transport(format!(
                        "{}: a part's task failed: {error}",
                        call.operation
                    ))
                })??;
                answers.push(answer);
                pending.extend(leftover);
            }
        }
        Ok(answers)
    }

    /// Splits `piece` at the boundaries of the cached ranges (fetching the routes of its span
    /// first if some are missing). Keys no cached range holds go in one part whose range is
    /// looked up by its first key.
    async fn split_piece(&self, call: Call, piece: Piece) -> Vec<Piece> {
        let (start, end) = match &piece {
            Piece::Get(keys) => span_of(keys.iter()),
            Piece::Put(pairs) => span_of(pairs.iter().map(|pair| &pair.key)),
            Piece::DeleteRange(start, end) => (start.clone(), end.clone()),
        };
        let covered = {
            let routes = self.inner.routes.lock();
            match &piece {
                Piece::Get(keys) => keys.iter().all(|key| routes.locate(key).is_some()),
                Piece::Put(pairs) => pairs.iter().all(|pair| routes.locate(&pair.key).is_some()),
                Piece::DeleteRange(..) => span_covered(&routes, &start, &end),
            }
        };
        if !covered {
            self.prefetch_routes(call, &start, &end).await;
        }
        let routes = self.inner.routes.lock();
        match piece {
            Piece::Get(keys) => {
                group_by_range(&routes, keys, own_key).into_iter().map(Piece::Get).collect()
            }
            Piece::Put(pairs) => {
                group_by_range(&routes, pairs, pair_key).into_iter().map(Piece::Put).collect()
            }
            Piece::DeleteRange(start, end) => {
                let mut parts = Vec::new();
                let mut cursor = start;
                loop {
                    let Some(route) = routes.locate(&cursor) else {
                        parts.push(Piece::DeleteRange(cursor, end));
                        break;
                    };
                    let part_end = clip_end(&end, &route.descriptor.end_key);
                    let done = part_end == end;
                    parts.push(Piece::DeleteRange(cursor, part_end.clone()));
                    if done {
                        break;
                    }
                    cursor = part_end;
                }
                parts
            }
        }
    }

    /// Loads the routes of `[start, end)` from the placement driver into the cache, as far
    /// as it answers before the call's deadline; errors are left to the requests.
    async fn prefetch_routes(&self, call: Call, start: &Bytes, end: &Bytes) {
        let mut cursor = start.clone();
        loop {
            let now = Instant::now();
            if now >= call.deadline {
                return;
            }
            let request = PlacementRequest::ScanRanges {
                start_key: cursor.clone(),
                end_key: end.clone(),
                limit: SCAN_RANGES_LIMIT,
            };
            let timeout = (call.deadline - now).min(self.inner.config.attempt_timeout);
            let Ok(PlacementResponse::ScanRanges { routes }) =
                self.inner.placement.call(request, timeout).await
            else {
                return;
            };
            let count = routes.len();
            let last_end = routes.last().map(|route| route.descriptor.end_key.clone());
            {
                let mut cache = self.inner.routes.lock();
                for route in routes {
                    cache.insert(route.into());
                }
            }
            match last_end {
                Some(last_end)
                    if count >= SCAN_RANGES_LIMIT as usize
                        && !last_end.is_empty()
                        && last_end > cursor
                        && (end.is_empty() || last_end < *end) =>
                {
                    cursor = last_end;
                }
                _ => return,
            }
        }
    }

    /// Sends what `build` makes of the range holding `locate` to that range's leader,
    /// retrying as the [module documentation](self) says. Returns the descriptor the
    /// answered request was built from, and the answer.
    async fn call_range<F>(
        &self,
        call: Call,
        locate: &Bytes,
        build: F,
    ) -> Result<(RangeDescriptor, KvResponse), ClientError>
    where
        F: Fn(&RangeDescriptor) -> KvCommand,
    {
        let config = &self.inner.config;
        let mut attempts = 0u32;
        let mut backoff = config.backoff_min;
        let mut last = "no attempt made".to_owned();
        // Stores that failed this call for `tried_range`; not asked again until all were.
        let mut tried: Vec<StoreId> = Vec::new();
        let mut tried_range: Option<RangeId> = None;
        // A leader named by a replica, for a route the cache may have refused.
        let mut hint: Option<(RangeId, Replica)> = None;
        // `EpochNotMatch` answers in this call: the first is followed at once, later ones
        // after a pause (the layout is moving, or the placement driver has not caught up).
        let mut epoch_refusals = 0_u32;
        loop {
            let now = Instant::now();
            if now >= call.deadline {
                return Err(ClientError::Timeout {
                    operation: call.operation,
                    elapsed: now - call.started,
                    attempts,
                    last,
                });
            }
            if attempts > config.max_retries {
                return Err(ClientError::Unavailable { operation: call.operation, attempts, last });
            }
            attempts += 1;
            let route = match self.route_for(call, locate).await {
                Ok(route) => route,
                Err(Lookup::Fatal(error)) => return Err(error),
                Err(Lookup::Retry(reason)) => {
                    last = reason;
                    self.pause(&mut backoff, call.deadline).await;
                    continue;
                }
            };
            let range = route.descriptor.id;
            if tried_range != Some(range) {
                tried.clear();
                tried_range = Some(range);
            }
            let leader = hint.filter(|(hinted, _)| *hinted == range).map(|(_, leader)| leader);
            let route = CachedRoute { leader: leader.or(route.leader), ..route };
            let Some(store) = self.choose_store(&route, &tried) else {
                // Every voter failed (or none is known): start over with fresh routing.
                last = format!("range {range}: no replica left to try ({last})");
                tried.clear();
                hint = None;
                self.refresh_route(call, locate).await;
                self.pause(&mut backoff, call.deadline).await;
                continue;
            };
            let node = match self.resolve_store(call, store).await {
                Ok(node) => node,
                Err(Lookup::Fatal(error)) => return Err(error),
                Err(Lookup::Retry(reason)) => {
                    last = reason;
                    tried.push(store);
                    continue;
                }
            };
            let replica = route
                .descriptor
                .replica_on_store(store)
                .copied()
                .or_else(|| route.leader.filter(|leader| leader.store_id == store));
            let request = KvRequest {
                context: RequestContext {
                    range,
                    epoch: route.descriptor.epoch,
                    store_id: store,
                    replica: replica.map(|replica| replica.id),
                    read_mode: ReadMode::Leader,
                },
                command: build(&route.descriptor),
            };
            let remaining = call.deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                continue;
            }
            let attempt = remaining.min(config.attempt_timeout);
            let sent = self.inner.transport.rpc(node, RpcRequestBody::Kv(request), attempt).await;
            let error = match sent {
                Ok(response) => match response.result {
                    RpcResult::Ok(RpcResponseBody::Kv(answer)) => {
                        self.inner.suspects.lock().remove(&store);
                        if route.leader.map(|leader| leader.store_id) != Some(store)
                            && let Some(replica) = replica
                        {
                            self.inner.routes.lock().set_leader(range, Some(replica));
                        }
                        return Ok((route.descriptor, answer));
                    }
                    RpcResult::Ok(other) => {
                        return Err(ClientError::UnexpectedResponse(format!(
                            "{}: store {store} answered {other:?}",
                            call.operation
                        )));
                    }
                    RpcResult::Err(error) => error,
                },
                Err(error) => {
                    last = format!("store {store}: {error}");
                    let timeout = matches!(error, TransportError::Timeout { .. });
                    let ambiguous = match error {
                        TransportError::Unreachable { .. }
                        | TransportError::UnknownPeer { .. }
                        | TransportError::Blocked { .. } => false,
                        TransportError::Timeout { .. }
                        | TransportError::ConnectionLost { .. }
                        | TransportError::Protocol { .. } => true,
                        other => return Err(ClientError::Transport(other.to_string())),
                    };
                    if ambiguous && call.retry == Retry::AtMostOnce {
                        return Err(ambiguous_outcome(call, attempts, last, timeout));
                    }
                    self.suspect(store);
                    if !ambiguous {
                        // Perhaps the store moved: ask for its address again next time.
                        self.inner.stores.lock().remove(&store);
                    }
                    tried.push(store);
                    self.refresh_route(call, locate).await;
                    continue;
                }
            };
            last = format!("store {store}: {error}");
            tracing::debug!(operation = call.operation, %store, %error, "attempt refused");
            match error {
                RpcError::NotLeader { leader: Some(leader), .. } if leader.store_id != store => {
                    self.inner.routes.lock().set_leader(range, Some(leader));
                    hint = Some((range, leader));
                    if self.is_suspect(leader.store_id) || tried.contains(&leader.store_id) {
                        // The named leader just failed us: the replica knows less than we do.
                        tried.push(store);
                        self.pause(&mut backoff, call.deadline).await;
                    }
                }
                RpcError::NotLeader { .. } => {
                    self.inner.routes.lock().set_leader(range, None);
                    hint = None;
                    tried.push(store);
                    self.pause(&mut backoff, call.deadline).await;
                }
                RpcError::EpochNotMatch { ranges } => {
                    let newer = ranges.iter().any(|current| {
                        current.epoch.version > route.descriptor.epoch.version
                            || (current.id == range
                                && current.epoch.conf_ver > route.descriptor.epoch.conf_ver)
                    });
                    {
                        let mut cache = self.inner.routes.lock();
                        for current in ranges {
                            cache.insert(current.into());
                        }
                    }
                    epoch_refusals += 1;
                    if !newer {
                        // The store is behind the route: another replica.
                        tried.push(store);
                        hint = None;
                        self.pause(&mut backoff, call.deadline).await;
                    } else if epoch_refusals > 1 {
                        self.pause(&mut backoff, call.deadline).await;
                    }
                }
                RpcError::RangeNotFound { .. }
                | RpcError::KeyNotInRange { .. }
                | RpcError::StoreNotMatch { .. } => {
                    if matches!(error, RpcError::StoreNotMatch { .. }) {
                        self.inner.stores.lock().remove(&store);
                    }
                    self.inner.routes.lock().invalidate(range);
                    hint = None;
                    tried.push(store);
                    self.pause(&mut backoff, call.deadline).await;
                }
                RpcError::ServerBusy { retry_after_ms, .. } => {
                    let at_least = Duration::from_millis(retry_after_ms.into());
                    backoff = backoff.max(at_least.min(config.backoff_max));
                    self.pause(&mut backoff, call.deadline).await;
                }
                RpcError::StaleCommand => {}
                RpcError::Timeout | RpcError::Internal { .. } | RpcError::DataNotReady { .. } => {
                    let ambiguous = !matches!(error, RpcError::DataNotReady { .. });
                    if ambiguous && call.retry == Retry::AtMostOnce {
                        let timeout = matches!(error, RpcError::Timeout);
                        return Err(ambiguous_outcome(call, attempts, last, timeout));
                    }
                    tried.push(store);
                    self.pause(&mut backoff, call.deadline).await;
                }
                other => return Err(ClientError::Server(other)),
            }
        }
    }

    /// The route of the range holding `key`: cached, else from the placement driver (cached
    /// if it is not older than what the cache holds, and returned either way).
    async fn route_for(&self, call: Call, key: &Bytes) -> Result<CachedRoute, Lookup> {
        if let Some(route) = self.inner.routes.lock().locate(key) {
            return Ok(route.clone());
        }
        let route = self.lookup_route(call, key).await?;
        self.inner.routes.lock().insert(route.clone());
        Ok(route)
    }

    /// Asks the placement driver for the range holding `key`.
    async fn lookup_route(&self, call: Call, key: &Bytes) -> Result<CachedRoute, Lookup> {
        let timeout = call
            .deadline
            .saturating_duration_since(Instant::now())
            .min(self.inner.config.attempt_timeout);
        let request = PlacementRequest::GetRangeByKey { key: key.clone() };
        match self.inner.placement.call(request, timeout).await {
            Ok(PlacementResponse::GetRangeByKey { route }) => {
                if route.descriptor.contains_key(key) {
                    Ok(route.into())
                } else {
                    Err(Lookup::Retry(format!(
                        "placement driver answered range {} for key {key:?} it does not hold",
                        route.descriptor.id
                    )))
                }
            }
            Ok(other) => Err(Lookup::Fatal(ClientError::UnexpectedResponse(format!(
                "GetRangeByKey answered with {other:?}"
            )))),
            Err(error) if placement_retryable(&error) => {
                Err(Lookup::Retry(format!("placement driver: {error}")))
            }
            Err(error) => Err(Lookup::Fatal(ClientError::Placement(error))),
        }
    }

    /// Reloads the route of the range holding `key` from the placement driver, if it
    /// answers (errors are left to the next attempt).
    async fn refresh_route(&self, call: Call, key: &Bytes) {
        if let Ok(route) = self.lookup_route(call, key).await {
            self.inner.routes.lock().insert(route);
        }
    }

    /// The store to try: the leader's, else a voter's, skipping `tried` and preferring
    /// stores not suspected. `None` when every voter was tried.
    fn choose_store(&self, route: &CachedRoute, tried: &[StoreId]) -> Option<StoreId> {
        let candidates: Vec<StoreId> =
            route.voter_stores().into_iter().filter(|store| !tried.contains(store)).collect();
        candidates
            .iter()
            .copied()
            .find(|store| !self.is_suspect(*store))
            .or_else(|| candidates.first().copied())
    }

    /// The node of `store`, its address registered with the transport (asked of the
    /// placement driver the first time).
    async fn resolve_store(&self, call: Call, store: StoreId) -> Result<NodeId, Lookup> {
        if let Some(node) = self.inner.stores.lock().get(&store) {
            return Ok(*node);
        }
        let timeout = call
            .deadline
            .saturating_duration_since(Instant::now())
            .min(self.inner.config.attempt_timeout);
        let answer = self
            .inner
            .placement
            .call(PlacementRequest::GetStore { store_id: store }, timeout)
            .await;
        let registration = match answer {
            Ok(PlacementResponse::GetStore { store, .. }) => store,
            Ok(other) => {
                return Err(Lookup::Fatal(ClientError::UnexpectedResponse(format!(
                    "GetStore answered with {other:?}"
                ))));
            }
            Err(error @ RpcError::StoreNotFound { .. }) => {
                return Err(Lookup::Retry(format!("placement driver: {error}")));
            }
            Err(error) if placement_retryable(&error) => {
                return Err(Lookup::Retry(format!("placement driver: {error}")));
            }
            Err(error) => return Err(Lookup::Fatal(ClientError::Placement(error))),
        };
        if registration.state == StoreState::Tombstone {
            return Err(Lookup::Retry(format!("store {store} is a tombstone")));
        }
        let addr = match registration.address.parse::<SocketAddr>() {
            Ok(addr) => addr,
            Err(_) => match tokio::net::lookup_host(registration.address.as_str()).await {
                Ok(mut addrs) => addrs.next().ok_or_else(|| {
                    Lookup::Retry(format!(
                        "store {store}: address {:?} resolves to nothing",
                        registration.address
                    ))
                })?,
                Err(error) => {
                    return Err(Lookup::Retry(format!(
                        "store {store}: cannot resolve {:?}: {error}",
                        registration.address
                    )));
                }
            },
        };
        self.inner.transport.set_peer(registration.node_id, addr);
        self.inner.stores.lock().insert(store, registration.node_id);
        Ok(registration.node_id)
    }

    /// Notes that `store` failed at the transport.
    fn suspect(&self, store: StoreId) {
        let until = Instant::now() + self.inner.config.suspect_for;
        self.inner.suspects.lock().insert(store, until);
    }

    /// Whether `store` failed at the transport less than `suspect_for` ago.
    fn is_suspect(&self, store: StoreId) -> bool {
        let now = Instant::now();
        let mut suspects = self.inner.suspects.lock();
        suspects.retain(|_, until| *until > now);
        suspects.contains_key(&store)
    }

    /// Sleeps `backoff` (at most until `deadline`) and doubles it, up to the maximum.
    async fn pause(&self, backoff: &mut Duration, deadline: Instant) {
        let wake = (Instant::now() + *backoff).min(deadline);
        tokio::time::sleep_until(wake).await;
        *backoff = (*backoff * 2).min(self.inner.config.backoff_max);
    }
}

/// The error for a write whose attempt may have been applied.
fn ambiguous_outcome(call: Call, attempts: u32, last: String, timeout: bool) -> ClientError {
    if timeout {
        ClientError::Timeout {
            operation: call.operation,
            elapsed: call.started.elapsed(),
            attempts,
            last,
        }
    } else {
        ClientError::OutcomeUnknown { operation: call.operation, reason: last }
    }
}

/// A key's own bytes (for [`group_by_range`]).
fn own_key(key: &Bytes) -> &Bytes {
    key
}

/// A pair's key (for [`group_by_range`]).
fn pair_key(pair: &KvPair) -> &Bytes {
    &pair.key
}

/// The error for an answer of the wrong kind.
fn unexpected(operation: &str, answer: &KvResponse) -> ClientError {
    ClientError::UnexpectedResponse(format!("{operation}: answered {answer:?}"))
}

/// `[first, last + 1)` of ascending keys (empty keys: everything).
fn span_of<'a>(mut keys: impl DoubleEndedIterator<Item = &'a Bytes>) -> (Bytes, Bytes) {
    let first = keys.next().cloned().unwrap_or_default();
    let last = keys.next_back().cloned().unwrap_or_else(|| first.clone());
    (first, next_key(&last))
}

/// Whether the cache holds a route for every key of `[start, end)`.
fn span_covered(routes: &RouteCache, start: &Bytes, end: &Bytes) -> bool {
    let mut cursor = start.clone();
    loop {
        let Some(route) = routes.locate(&cursor) else { return false };
        let range_end = &route.descriptor.end_key;
        if range_end.is_empty() || (!end.is_empty() && range_end >= end) {
            return true;
        }
        cursor = range_end.clone();
    }
}

/// Splits ascending `items` into runs whose keys share a cached range; consecutive items
/// whose keys no cached range holds form runs of their own.
fn group_by_range<T>(
    routes: &RouteCache,
    items: Vec<T>,
    key: impl Fn(&T) -> &Bytes,
) -> Vec<Vec<T>> {
    let mut groups: Vec<Vec<T>> = Vec::new();
    // The range of the current run (`None`: keys no cached range holds).
    let mut current: Option<Option<RangeId>> = None;
    for item in items {
        let range = routes.locate(key(&item)).map(|route| route.descriptor.id);
        match groups.last_mut() {
            Some(group) if current == Some(range) => group.push(item),
            _ => {
                groups.push(vec![item]);
                current = Some(range);
            }
        }
    }
    groups
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use tessera_wire::range::RangeEpoch;

    fn b(key: &str) -> Bytes {
        Bytes::copy_from_slice(key.as_bytes())
    }

    fn descriptor(id: u64, start: &str, end: &str) -> RangeDescriptor {
        RangeDescriptor {
            id: RangeId(id),
            start_key: b(start),
            end_key: b(end),
            epoch: RangeEpoch { conf_ver: 1, version: 2 },
            replicas: Vec::new(),
        }
    }

    #[test]
    fn pieces_are_cut_at_range_ends() {
        let keys = Piece::Get(vec![b("a"), b("f"), b("m"), b("z")]);
        let left = descriptor(1, "", "m");
        let KvCommand::RawBatchGet(request) = keys.command(&left) else { panic!() };
        assert_eq!(request.keys, vec![b("a"), b("f")]);
        let Some(Piece::Get(rest)) = keys.leftover(&left) else { panic!() };
        assert_eq!(rest, vec![b("m"), b("z")]);
        assert!(keys.leftover(&descriptor(1, "", "")).is_none());

        let span = Piece::DeleteRange(b("c"), b("t"));
        let KvCommand::RawDeleteRange(request) = span.command(&descriptor(1, "b", "k")) else {
            panic!()
        };
        assert_eq!((request.start_key, request.end_key), (b("c"), b("k")));
        let Some(Piece::DeleteRange(start, end)) = span.leftover(&descriptor(1, "b", "k")) else {
            panic!()
        };
        assert_eq!((start, end), (b("k"), b("t")));
        assert!(span.leftover(&descriptor(1, "b", "t")).is_none());
        let unbounded = Piece::DeleteRange(b("c"), Bytes::new());
        let KvCommand::RawDeleteRange(request) = unbounded.command(&descriptor(1, "", "")) else {
            panic!()
        };
        assert!(request.end_key.is_empty());
        let Some(Piece::DeleteRange(start, end)) = unbounded.leftover(&descriptor(1, "", "k"))
        else {
            panic!()
        };
        assert_eq!((start, end), (b("k"), Bytes::new()));
    }

    #[test]
    fn keys_are_grouped_by_cached_range() {
        let mut routes = RouteCache::new();
        routes.insert(descriptor(1, "", "f").into());
        routes.insert(descriptor(3, "m", "").into());
        let keys = vec![b("a"), b("b"), b("g"), b("h"), b("m"), b("x")];
        let groups = group_by_range(&routes, keys, own_key);
        assert_eq!(groups, vec![vec![b("a"), b("b")], vec![b("g"), b("h")], vec![b("m"), b("x")]]);
        assert!(span_covered(&routes, &b("m"), &Bytes::new()));
        assert!(!span_covered(&routes, &b("a"), &b("n")));
        assert!(span_covered(&routes, &b("a"), &b("e")));
        assert_eq!(span_of([b("c"), b("d"), b("e")].iter()), (b("c"), b("e\0")));
        assert_eq!(clip_end(&Bytes::new(), &b("k")), b("k"));
        assert_eq!(clip_end(&b("c"), &b("k")), b("c"));
        assert_eq!(clip_end(&b("z"), &Bytes::new()), b("z"));
    }

    #[test]
    fn client_node_ids_are_high_and_distinct() {
        let a = random_node_id();
        let b = random_node_id();
        assert_ne!(a, b);
        assert!(a.get() >= CLIENT_NODE_BASE && a.get() < CLIENT_NODE_BASE << 1);
    }
}
