//! `store-throughput`: three multi-raft stores in one process on the real stack (RocksDB
//! engines in temporary directories, the QUIC transport on loopback, each store on its own
//! thread), measured two ways (bench/README.md):
//!
//! 1. **writes**: concurrent clients put 256-byte values to random keys spread over 1, 16
//!    and 64 ranges; writes/s, latency percentiles, and the raft-log fsyncs/s of the three
//!    stores beside writes/s (group commit: one fsync per store round for every range);
//! 2. **idle ranges**: 10,000 ranges on every store doing nothing, with quiescence on and
//!    off; process CPU seconds per second and transport bytes per second.
//!
//! Progress goes to stderr; the table to stdout, and with `--json` one JSON object per case.
//!
//! `cargo run --release -p tessera-bench --bin store-throughput [-- --seconds 10 --json]`

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use clap::Parser;
use metrics::{
    Counter, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use tempfile::TempDir;
use tessera_bench::cpu;
use tessera_engine::codec::StoreIdent;
use tessera_engine_rocks::EngineOptions;
use tessera_raft::ReplicaId;
use tessera_store::{
    RaftPool, Store, StoreConfig, StoreHandle, StoreRpcHandler, StoreSystem, TransportNetwork,
    bootstrap,
};
use tessera_transport::tls::{NodeTls, TlsSource};
use tessera_transport::{Transport, TransportConfig, TransportStats};
use tessera_wire::errors::RpcError;
use tessera_wire::ids::{NodeId, RangeId, StoreId};
use tessera_wire::kv::{KvCommand, KvRequest, KvResponse, RawPutRequest, RequestContext};
use tessera_wire::range::{RangeDescriptor, RangeEpoch, Replica, ReplicaRole};
use tessera_wire::rpc::{StoreAdminRequest, StoreAdminResponse};
use tokio::runtime::Runtime;

/// Stores (and nodes) per cluster; every range has a replica on each.
const STORES: usize = 3;
const CLUSTER_ID: u64 = 42;
/// Mailbox of each store, as in the store's own cluster tests.
const MAILBOX: usize = 4096;
/// Keys are `r{slot:05}-{random:016x}` with a slot below this; range boundaries are slots.
const SLOTS: u64 = 1 << 16;
/// One request (a put or a split) gives up after this long, retries included.
const OP_DEADLINE: Duration = Duration::from_secs(30);
/// One answer is awaited at most this long before the request is retried.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause before retrying a refused request.
const RETRY_PAUSE: Duration = Duration::from_millis(5);
/// Range and replica ids handed out for splits start here (range 1 and replicas 1..=3
/// exist from the bootstrap).
const FIRST_SPLIT_ID: u64 = 1000;

/// Write throughput and latency of three stores on loopback with 1, 16 and 64 ranges, and the
/// cost of 10,000 idle ranges per store with quiescence on and off.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Seconds measured per write case (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Seconds of writes before each write case is measured.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Concurrent clients, each with one put in flight.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Range counts of the write cases, in increasing order (one cluster, split further
    /// before each case).
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    ranges: Vec<usize>,
    /// Bytes of each value.
    #[arg(long, default_value_t = 256)]
    value_bytes: usize,
    /// Ranges per cluster in the idle cases.
    #[arg(long, default_value_t = 10_000)]
    idle_ranges: usize,
    /// Seconds measured per idle case.
    #[arg(long, default_value_t = 10.0)]
    idle_seconds: f64,
    /// Least seconds the idle ranges settle before they are measured; then the benchmark
    /// also waits (up to a minute) for a whole second without any raft-log write.
    #[arg(long, default_value_t = 5.0)]
    settle_seconds: f64,
    /// `quiesce_after_ticks` of the "quiescence on" idle case (the store's default).
    #[arg(long, default_value_t = StoreConfig::default().quiesce_after_ticks)]
    quiesce_after_ticks: u32,
    /// Milliseconds per tick in every case (the store's default).
    #[arg(long, default_value_t = StoreConfig::default().tick_interval_ms)]
    tick_ms: u64,
    /// Splits in flight at once while ranges are created.
    #[arg(long, default_value_t = 32)]
    split_parallelism: usize,
    /// Tokio worker threads of each cluster's runtime (the transports run on it).
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Threads stepping each store's ranges (the raft worker and its pool's helpers); a
    /// list runs the write cases once per value, each on a fresh cluster, side by side in
    /// one table.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    raft_workers: Vec<usize>,
    /// Skip the write cases.
    #[arg(long)]
    skip_writes: bool,
    /// Skip the idle cases.
    #[arg(long)]
    skip_idle: bool,
    /// Where the stores' temporary directories go (default: the system's temporary
    /// directory). Never a tmpfs, where fsync is free.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Also print one JSON object per case to stdout.
    #[arg(long)]
    json: bool,
    /// Before each write case, hand range i's leadership to store i mod 3, so every store
    /// leads a share of the ranges (splits otherwise leave them all on one store).
    #[arg(long)]
    spread_leaders: bool,
}

// ---------------------------------------------------------------------------------------
// Counters: the store and engines record through the `metrics` macros; a small recorder
// keeps the few series read here in atomics.
// ---------------------------------------------------------------------------------------

/// Count and total seconds of a histogram (the engines' sync durations).
#[derive(Debug, Default)]
struct Durations {
    count: AtomicU64,
    nanos: AtomicU64,
}

impl HistogramFn for Durations {
    fn record(&self, seconds: f64) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.nanos.fetch_add((seconds * 1e9) as u64, Ordering::Relaxed);
    }
}

/// A gauge that every store sets for itself from its own thread (named `store-<id>`): one
/// slot per store, so that the stores do not overwrite each other's value.
#[derive(Debug, Default)]
struct PerStore([AtomicU64; STORES]);

impl PerStore {
    fn values(&self) -> [u64; STORES] {
        std::array::from_fn(|i| self.0[i].load(Ordering::Relaxed))
    }
}

impl GaugeFn for PerStore {
    fn increment(&self, _value: f64) {}

    fn decrement(&self, _value: f64) {}

    fn set(&self, value: f64) {
        if let Some(slot) = store_slot() {
            self.0[slot].store(value as u64, Ordering::Relaxed);
        }
    }
}

/// The index of the store whose thread is running, from the thread's name.
fn store_slot() -> Option<usize> {
    let thread = std::thread::current();
    let digits = thread.name()?.rsplit(|c: char| !c.is_ascii_digit()).next()?;
    let id: usize = digits.parse().ok()?;
    (1..=STORES).contains(&id).then(|| id - 1)
}

#[derive(Debug, Default)]
struct Counters {
    /// `tessera_store_raft_syncs_total`: synced raft-log writes, one per store round.
    raft_syncs: Arc<AtomicU64>,
    /// `tessera_store_proposals_total`.
    proposals: Arc<AtomicU64>,
    /// `tessera_store_mailbox_full_total`: Raft messages dropped at a full mailbox.
    mailbox_full: Arc<AtomicU64>,
    /// `tessera_engine_sync_seconds{engine="raft"}`.
    raft_engine_syncs: Arc<Durations>,
    /// `tessera_engine_sync_seconds{engine="kv"}` (the KV engine's WAL syncs).
    kv_engine_syncs: Arc<Durations>,
    /// `tessera_store_quiesced_ranges`, per store.
    quiesced: Arc<PerStore>,
    /// `tessera_store_leaders`, per store.
    leaders: Arc<PerStore>,
}

#[derive(Debug, Clone, Default)]
struct BenchRecorder(Arc<Counters>);

impl Recorder for BenchRecorder {
    fn describe_counter(&self, _key: KeyName, _unit: Option<Unit>, _description: SharedString) {}

    fn describe_gauge(&self, _key: KeyName, _unit: Option<Unit>, _description: SharedString) {}

    fn describe_histogram(&self, _key: KeyName, _unit: Option<Unit>, _description: SharedString) {}

    fn register_counter(&self, key: &Key, _metadata: &Metadata<'_>) -> Counter {
        let counters = &self.0;
        match key.name() {
            "tessera_store_raft_syncs_total" => Counter::from_arc(counters.raft_syncs.clone()),
            "tessera_store_proposals_total" => Counter::from_arc(counters.proposals.clone()),
            "tessera_store_mailbox_full_total" => Counter::from_arc(counters.mailbox_full.clone()),
            _ => Counter::noop(),
        }
    }

    fn register_gauge(&self, key: &Key, _metadata: &Metadata<'_>) -> Gauge {
        match key.name() {
            "tessera_store_quiesced_ranges" => Gauge::from_arc(self.0.quiesced.clone()),
            "tessera_store_leaders" => Gauge::from_arc(self.0.leaders.clone()),
            _ => Gauge::noop(),
        }
    }

    fn register_histogram(&self, key: &Key, _metadata: &Metadata<'_>) -> Histogram {
        if key.name() != "tessera_engine_sync_seconds" {
            return Histogram::noop();
        }
        let engine = key.labels().find(|label| label.key() == "engine").map(metrics::Label::value);
        match engine {
            Some("raft") => Histogram::from_arc(self.0.raft_engine_syncs.clone()),
            Some("kv") => Histogram::from_arc(self.0.kv_engine_syncs.clone()),
            _ => Histogram::noop(),
        }
    }
}

/// Everything counted, at one instant.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    cpu: Duration,
    raft_syncs: u64,
    proposals: u64,
    mailbox_full: u64,
    raft_engine_syncs: u64,
    raft_engine_sync_nanos: u64,
    kv_engine_syncs: u64,
    /// Transport bytes and messages sent, every class, summed over the stores.
    sent_bytes: u64,
    sent_messages: u64,
}

impl Sample {
    fn take(counters: &Counters, cluster: &Cluster) -> Result<Self> {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let stats: Vec<TransportStats> =
            cluster.nodes.iter().map(|node| node.transport.stats()).collect();
        let sent = stats.iter().flat_map(|s| s.sent.iter());
        let (sent_bytes, sent_messages) =
            sent.fold((0, 0), |(bytes, msgs), t| (bytes + t.bytes, msgs + t.messages));
        Ok(Self {
            at: Instant::now(),
            cpu: cpu::process_cpu_time().context("reading the process CPU time")?,
            raft_syncs: load(&counters.raft_syncs),
            proposals: load(&counters.proposals),
            mailbox_full: load(&counters.mailbox_full),
            raft_engine_syncs: load(&counters.raft_engine_syncs.count),
            raft_engine_sync_nanos: load(&counters.raft_engine_syncs.nanos),
            kv_engine_syncs: load(&counters.kv_engine_syncs.count),
            sent_bytes,
            sent_messages,
        })
    }
}

// ---------------------------------------------------------------------------------------
// The cluster: three stores on RocksDB and QUIC, as in the store's cluster tests.
// ---------------------------------------------------------------------------------------

struct Node {
    id: u64,
    system: StoreSystem,
    handle: StoreHandle,
    transport: Arc<Transport>,
    handler: Arc<StoreRpcHandler>,
    _dir: TempDir,
}

struct Cluster {
    nodes: Vec<Node>,
    runtime: Runtime,
    _certs: TempDir,
}

fn first_range() -> RangeDescriptor {
    RangeDescriptor {
        id: RangeId(1),
        start_key: Bytes::new(),
        end_key: Bytes::new(),
        epoch: RangeEpoch { conf_ver: 1, version: 1 },
        replicas: (1..=STORES as u64)
            .map(|id| Replica {
                id: ReplicaId(id),
                store_id: StoreId(id),
                role: ReplicaRole::Voter,
            })
            .collect(),
    }
}

/// A fresh temporary directory in `base`, or in the system's temporary directory.
fn temp_dir(base: Option<&Path>) -> Result<TempDir> {
    let mut builder = tempfile::Builder::new();
    builder.prefix("store-throughput-");
    let dir = match base {
        Some(base) => builder.tempdir_in(base),
        None => builder.tempdir(),
    };
    dir.context("creating a temporary directory")
}

fn ident(id: u64) -> StoreIdent {
    StoreIdent { cluster_id: CLUSTER_ID, store_id: StoreId(id) }
}

impl Cluster {
    /// Bootstraps and starts three stores with `config` (each gets its own snapshot
    /// directory) and connects their transports.
    fn start(
        config: &StoreConfig,
        workers: usize,
        raft_workers: usize,
        base: Option<&Path>,
    ) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
            .context("starting the tokio runtime")?;
        let certs = temp_dir(base)?;
        let mut nodes = Vec::with_capacity(STORES);
        let mut addrs = Vec::with_capacity(STORES);
        for id in 1..=STORES as u64 {
            let dir = temp_dir(base)?;
            let options = EngineOptions { block_cache_bytes: 64 << 20, ..EngineOptions::default() };
            let (raft, kv) = tessera_engine_rocks::open(dir.path(), &options)
                .with_context(|| format!("opening store {id}'s engines"))?;
            bootstrap(&raft, &kv, ident(id), &first_range())
                .with_context(|| format!("bootstrapping store {id}"))?;
            let tls = NodeTls::load(
                &TlsSource::DevGenerated { dir: certs.path().to_owned() },
                &format!("node-{id}"),
            )
            .context("dev TLS")?;
            let listen = "127.0.0.1:0".parse().context("loopback address")?;
            let transport_config =
                TransportConfig::new(NodeId(id), StoreId(id), CLUSTER_ID, listen, tls);
            let snapshot_dir = dir.path().join("snapshots");
            let handler = Arc::new(StoreRpcHandler::with_snapshot_dir(snapshot_dir.clone()));
            let transport = Arc::new(
                runtime
                    .block_on(Transport::start(transport_config, handler.clone()))
                    .context("starting a transport")?,
            );
            addrs.push(transport.local_addr()?);
            let net = TransportNetwork::new(transport.clone(), runtime.handle().clone());
            let config = StoreConfig { snapshot_dir, ..config.clone() };
            let mut store = Store::open(config, raft, kv.clone(), net, ident(id))
                .with_context(|| format!("opening store {id}"))?;
            if raft_workers > 1 {
                let name = format!("store-{id}-step");
                store.set_raft_pool(RaftPool::new(&name, raft_workers, RaftPool::PARALLEL_MIN)?);
            }
            let system =
                StoreSystem::start(store, tessera_store::MailboxCapacity::uniform(MAILBOX))?;
            let handle = system.handle();
            handler.set_store(handle.clone());
            nodes.push(Node { id, system, handle, transport, handler, _dir: dir });
        }
        for a in &nodes {
            for (b, addr) in nodes.iter().zip(&addrs) {
                if a.id != b.id {
                    a.transport.set_peer(NodeId(b.id), *addr);
                }
            }
        }
        Ok(Self { nodes, runtime, _certs: certs })
    }

    fn index_of(&self, store: StoreId) -> Result<usize> {
        self.nodes.iter().position(|node| node.id == store.0).ok_or_else(|| anyhow!("no {store}"))
    }

    /// Stops the stores (their threads drop the engines and networks), then the transports
    /// and the runtime; the temporary directories go last.
    fn stop(self) {
        let Self { nodes, runtime, _certs } = self;
        let mut rest = Vec::with_capacity(nodes.len());
        for node in nodes {
            let Node { id: _, system, handle, transport, handler, _dir } = node;
            system.stop();
            handler.clear_store();
            drop(handle);
            rest.push((transport, _dir));
        }
        for (transport, dir) in rest {
            if let Ok(transport) = Arc::try_unwrap(transport) {
                runtime.block_on(transport.shutdown(Duration::from_secs(1)));
            }
            drop(dir);
        }
        runtime.shutdown_timeout(Duration::from_secs(2));
    }
}

/// Sends one request through `send` and waits for its answer (`Timeout` if none comes).
fn call<T: Send + 'static>(
    send: impl FnOnce(Box<dyn FnOnce(Result<T, RpcError>) + Send>),
) -> Result<T, RpcError> {
    let (sender, receiver) = mpsc::sync_channel(1);
    send(Box::new(move |result| {
        let _ = sender.send(result);
    }));
    receiver.recv_timeout(CALL_TIMEOUT).unwrap_or(Err(RpcError::Timeout))
}

// ---------------------------------------------------------------------------------------
// Routing: a client-side cache of range descriptors by start key, with a leader guess.
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Route {
    descriptor: RangeDescriptor,
    /// Index into the cluster's nodes of the store believed to lead the range.
    leader: usize,
}

#[derive(Debug, Clone, Default)]
struct Routes {
    by_start: BTreeMap<Bytes, Route>,
}

impl Routes {
    fn new() -> Self {
        let mut routes = Self::default();
        routes.insert(Route { descriptor: first_range(), leader: 0 });
        routes
    }

    fn insert(&mut self, route: Route) {
        self.by_start.insert(route.descriptor.start_key.clone(), route);
    }

    fn lookup(&self, key: &[u8]) -> Option<&Route> {
        let bounds = (Bound::Unbounded, Bound::Included(key));
        self.by_start.range::<[u8], _>(bounds).next_back().map(|(_, route)| route)
    }

    fn lookup_mut(&mut self, key: &[u8]) -> Option<&mut Route> {
        let bounds = (Bound::Unbounded, Bound::Included(key));
        self.by_start.range_mut::<[u8], _>(bounds).next_back().map(|(_, route)| route)
    }

    /// Takes current descriptors from an `EpochNotMatch`, keeping the leader guesses.
    fn refresh(&mut self, descriptors: Vec<RangeDescriptor>, fallback_leader: usize) {
        for descriptor in descriptors {
            let leader = self
                .by_start
                .values()
                .find(|route| route.descriptor.id == descriptor.id)
                .map_or(fallback_leader, |route| route.leader);
            self.insert(Route { descriptor, leader });
        }
    }
}

/// The first key of range `i` of `n` (`i` in `1..n`): slots are cut evenly, so the
/// boundaries of `n` ranges include those of every divisor of `n` that is a power of two.
fn boundary(i: usize, n: usize) -> Bytes {
    Bytes::from(format!("r{:05}", i as u64 * SLOTS / n as u64))
}

fn boundaries(n: usize) -> Vec<Bytes> {
    (1..n).map(|i| boundary(i, n)).collect()
}

fn data_key(slot: u64, suffix: u64) -> Bytes {
    Bytes::from(format!("r{slot:05}-{suffix:016x}"))
}

// ---------------------------------------------------------------------------------------
// Splits.
// ---------------------------------------------------------------------------------------

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Splits `route`'s range at `key` at its leader; returns the right-hand range (led, at
/// first, by the same store) and leaves the left-hand one in `route`.
fn split_once(cluster: &Cluster, route: &mut Route, key: Bytes, ids: &AtomicU64) -> Result<Route> {
    let new_range = RangeId(ids.fetch_add(1, Ordering::Relaxed));
    let new_replicas: Vec<ReplicaId> = (0..route.descriptor.replicas.len())
        .map(|_| ReplicaId(ids.fetch_add(1, Ordering::Relaxed)))
        .collect();
    let deadline = Instant::now() + OP_DEADLINE;
    let mut attempts = 0u32;
    let mut last = String::new();
    while Instant::now() < deadline {
        attempts += 1;
        let request = StoreAdminRequest::Split {
            range: route.descriptor.id,
            epoch: route.descriptor.epoch,
            split_key: key.clone(),
            new_range,
            new_replicas: new_replicas.clone(),
        };
        let handle = &cluster.nodes[route.leader].handle;
        match call(|respond| handle.admin(request, respond)) {
            Ok(StoreAdminResponse::Split { left, right }) => {
                route.descriptor = left;
                return Ok(Route { descriptor: right, leader: route.leader });
            }
            Ok(other) => bail!("unexpected answer to a split: {other:?}"),
            Err(RpcError::NotLeader { leader: Some(leader), .. })
                if cluster.index_of(leader.store_id)? != route.leader =>
            {
                route.leader = cluster.index_of(leader.store_id)?;
            }
            Err(RpcError::EpochNotMatch { ranges }) => {
                let current = ranges
                    .into_iter()
                    .find(|descriptor| descriptor.id == route.descriptor.id)
                    .context("EpochNotMatch without the range's descriptor")?;
                if current.end_key == key {
                    // An earlier attempt applied; its answer was lost to a timeout.
                    let right = RangeDescriptor {
                        id: new_range,
                        start_key: key,
                        end_key: route.descriptor.end_key.clone(),
                        epoch: current.epoch,
                        replicas: current
                            .replicas
                            .iter()
                            .zip(&new_replicas)
                            .map(|(replica, id)| Replica { id: *id, ..*replica })
                            .collect(),
                    };
                    route.descriptor = current;
                    return Ok(Route { descriptor: right, leader: route.leader });
                }
                route.descriptor = current;
            }
            Err(error) => {
                // No leader yet (a range just split off elects one), a full mailbox, a
                // superseded proposal, or a store that has not created the range yet.
                last = error.to_string();
                if attempts.is_multiple_of(20) || matches!(error, RpcError::RangeNotFound { .. }) {
                    route.leader = (route.leader + 1) % cluster.nodes.len();
                }
                std::thread::sleep(RETRY_PAUSE);
            }
        }
    }
    bail!("split of range {} at {key:?} failed until the deadline: {last}", route.descriptor.id)
}

/// Splits so that every key of `keys` starts a range, `parallel` splits at a time: the keys
/// are grouped by the range holding them, and each group's range is split at its keys from
/// the highest down, so that the range keeps its id and its leader throughout.
fn split_groups(
    cluster: &Cluster,
    routes: &mut Routes,
    keys: &[Bytes],
    parallel: usize,
    ids: &AtomicU64,
) -> Result<()> {
    let mut groups: BTreeMap<Bytes, (Route, Vec<Bytes>)> = BTreeMap::new();
    for key in keys.iter().filter(|key| !routes.by_start.contains_key(*key)) {
        let route = routes.lookup(key).context("no range holds a key")?;
        groups
            .entry(route.descriptor.start_key.clone())
            .or_insert_with(|| (route.clone(), Vec::new()))
            .1
            .push(key.clone());
    }
    let queue = Mutex::new(groups.into_values().collect::<Vec<_>>());
    let done = Mutex::new(Vec::new());
    let failure: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..parallel.max(1) {
            scope.spawn(|| {
                loop {
                    if lock(&failure).is_some() {
                        return;
                    }
                    let Some((mut route, mut keys)) = lock(&queue).pop() else { return };
                    keys.sort();
                    while let Some(key) = keys.pop() {
                        match split_once(cluster, &mut route, key, ids) {
                            Ok(right) => lock(&done).push(right),
                            Err(error) => {
                                lock(&failure).get_or_insert(error);
                                return;
                            }
                        }
                    }
                    lock(&done).push(route);
                }
            });
        }
    });
    if let Some(error) = failure.into_inner().unwrap_or_else(PoisonError::into_inner) {
        return Err(error);
    }
    for route in done.into_inner().unwrap_or_else(PoisonError::into_inner) {
        routes.insert(route);
    }
    Ok(())
}

/// Splits until every key of `keys` starts a range. With fewer ranges than `parallel`, a
/// coarse pass first cuts at `parallel` evenly spaced keys, so that the fine pass has that
/// many ranges to split side by side.
fn split_at(
    cluster: &Cluster,
    routes: &mut Routes,
    keys: &[Bytes],
    parallel: usize,
    ids: &AtomicU64,
) -> Result<()> {
    let parallel = parallel.max(1);
    if routes.by_start.len() < parallel && keys.len() > 2 * parallel {
        let step = keys.len() / parallel;
        let coarse: Vec<Bytes> = keys.iter().step_by(step).skip(1).cloned().collect();
        split_groups(cluster, routes, &coarse, parallel, ids)?;
    }
    split_groups(cluster, routes, keys, parallel, ids)
}

// ---------------------------------------------------------------------------------------
// Writes.
// ---------------------------------------------------------------------------------------

/// Puts `key` at its range's leader, following `NotLeader` and `EpochNotMatch` answers and
/// retrying retryable refusals; returns the retries it took.
fn put(cluster: &Cluster, routes: &mut Routes, key: &Bytes, value: &Bytes) -> Result<u64> {
    let deadline = Instant::now() + OP_DEADLINE;
    let mut retries = 0;
    let mut last = String::new();
    while Instant::now() < deadline {
        let route = routes.lookup(key).context("no range holds the key")?;
        let node = &cluster.nodes[route.leader];
        let request = KvRequest {
            context: RequestContext {
                range: route.descriptor.id,
                epoch: route.descriptor.epoch,
                store_id: StoreId(node.id),
                ..RequestContext::default()
            },
            command: KvCommand::RawPut(RawPutRequest { key: key.clone(), value: value.clone() }),
        };
        let fallback_leader = route.leader;
        match call(|respond| node.handle.kv(request, respond)) {
            Ok(KvResponse::RawPut) => return Ok(retries),
            Ok(other) => bail!("unexpected answer to a put: {other:?}"),
            Err(RpcError::NotLeader { leader: Some(leader), .. })
                if leader.store_id != StoreId(node.id) =>
            {
                let index = cluster.index_of(leader.store_id)?;
                if let Some(route) = routes.lookup_mut(key) {
                    route.leader = index;
                }
            }
            Err(RpcError::EpochNotMatch { ranges }) => routes.refresh(ranges, fallback_leader),
            Err(error) => {
                last = error.to_string();
                if matches!(error, RpcError::RangeNotFound { .. } | RpcError::NotLeader { .. })
                    && retries % 20 == 19
                    && let Some(route) = routes.lookup_mut(key)
                {
                    route.leader = (route.leader + 1) % cluster.nodes.len();
                }
                std::thread::sleep(RETRY_PAUSE);
            }
        }
        retries += 1;
    }
    bail!("put of {key:?} failed until the deadline: {last}")
}

const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

#[derive(Debug, Default)]
struct ClientResult {
    latencies_us: Vec<u32>,
    retries: u64,
}

#[derive(Debug)]
struct WriteCase {
    raft_workers: usize,
    ranges: usize,
    clients: usize,
    seconds: f64,
    writes: u64,
    retries: u64,
    p50_us: u32,
    p99_us: u32,
    p999_us: u32,
    max_us: u32,
    raft_syncs: u64,
    raft_engine_syncs: u64,
    raft_engine_sync_nanos: u64,
    kv_engine_syncs: u64,
    proposals: u64,
    mailbox_full: u64,
    cpu: Duration,
    leaders: [u64; STORES],
}

impl WriteCase {
    fn writes_per_sec(&self) -> f64 {
        self.writes as f64 / self.seconds
    }

    fn fsyncs_per_sec(&self) -> f64 {
        self.raft_syncs as f64 / self.seconds
    }

    fn writes_per_fsync(&self) -> f64 {
        self.writes as f64 / self.raft_syncs.max(1) as f64
    }

    fn fsyncs_per_write(&self) -> f64 {
        self.raft_syncs as f64 / self.writes.max(1) as f64
    }

    fn sync_avg_us(&self) -> f64 {
        self.raft_engine_sync_nanos as f64 / 1e3 / self.raft_engine_syncs.max(1) as f64
    }

    fn cpu_us_per_write(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.writes.max(1) as f64
    }

    fn to_json(&self) -> String {
        format!(
            "{{\"bench\":\"store-throughput\",\"case\":\"writes\",\"raft_workers\":{},\
             \"ranges\":{},\"clients\":{},\
             \"seconds\":{:.3},\"writes\":{},\"writes_per_sec\":{:.1},\"p50_us\":{},\
             \"p99_us\":{},\"p999_us\":{},\"max_us\":{},\"raft_syncs\":{},\
             \"fsyncs_per_sec\":{:.1},\"fsyncs_per_write\":{:.4},\"writes_per_fsync\":{:.2},\
             \"raft_sync_avg_us\":{:.0},\"kv_wal_syncs\":{},\"proposals\":{},\"retries\":{},\
             \"mailbox_full\":{},\"cpu_us_per_write\":{:.1},\"leaders\":[{}]}}",
            self.raft_workers,
            self.ranges,
            self.clients,
            self.seconds,
            self.writes,
            self.writes_per_sec(),
            self.p50_us,
            self.p99_us,
            self.p999_us,
            self.max_us,
            self.raft_syncs,
            self.fsyncs_per_sec(),
            self.fsyncs_per_write(),
            self.writes_per_fsync(),
            self.sync_avg_us(),
            self.kv_engine_syncs,
            self.proposals,
            self.retries,
            self.mailbox_full,
            self.cpu_us_per_write(),
            self.leaders.map(|n| n.to_string()).join(","),
        )
    }
}

fn percentile(sorted: &[u32], q: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Makes sure every range has a leader that takes writes (one put per range, untimed).
fn probe_ranges(cluster: &Cluster, routes: &mut Routes) -> Result<()> {
    let starts: Vec<Bytes> = routes.by_start.keys().cloned().collect();
    let value = Bytes::from_static(b"probe");
    for start in starts {
        let mut key = start.to_vec();
        key.extend_from_slice(b"-probe");
        put(cluster, routes, &Bytes::from(key), &value)?;
    }
    Ok(())
}

/// Asks the leader of the i-th range (in key order) to hand leadership to the store
/// `i mod 3`, then probes every range so the routes learn the new leaders.
fn spread_leaders(cluster: &Cluster, routes: &mut Routes) -> Result<()> {
    let targets: Vec<(Route, usize)> = routes
        .by_start
        .values()
        .enumerate()
        .map(|(i, route)| (route.clone(), i % STORES))
        .collect();
    for (route, target) in targets {
        if route.leader == target {
            continue;
        }
        let Some(to) = route.descriptor.replica_on_store(StoreId(cluster.nodes[target].id)) else {
            continue;
        };
        let request = StoreAdminRequest::TransferLeader { range: route.descriptor.id, to: to.id };
        let handle = &cluster.nodes[route.leader].handle;
        // A refusal (not the leader any more, a transfer in progress) leaves it where it is.
        let _ = call(|respond| handle.admin(request, respond));
    }
    std::thread::sleep(Duration::from_secs(1));
    probe_ranges(cluster, routes)
}

fn run_writes(
    cluster: &Cluster,
    counters: &Counters,
    routes: &Routes,
    args: &Args,
    ranges: usize,
) -> Result<WriteCase> {
    let phase = AtomicU8::new(WARMUP);
    let value = Bytes::from(vec![b'v'; args.value_bytes]);
    let (before, after, results) = std::thread::scope(|scope| -> Result<_> {
        let mut clients = Vec::with_capacity(args.clients);
        for client in 0..args.clients {
            let (phase, value) = (&phase, &value);
            let mut routes = routes.clone();
            clients.push(scope.spawn(move || -> Result<ClientResult> {
                let mut rng = tessera_raft::SplitMix64::new(0x5eed_0000 + client as u64);
                let mut result = ClientResult::default();
                loop {
                    let started_in = phase.load(Ordering::Acquire);
                    if started_in == STOP {
                        return Ok(result);
                    }
                    let key = data_key(rng.next_u64() % SLOTS, rng.next_u64());
                    let started = Instant::now();
                    let retries = put(cluster, &mut routes, &key, value)?;
                    let latency = started.elapsed();
                    if started_in == MEASURE && phase.load(Ordering::Acquire) == MEASURE {
                        let micros = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
                        result.latencies_us.push(micros);
                        result.retries += retries;
                    }
                }
            }));
        }
        std::thread::sleep(Duration::from_secs_f64(args.warmup));
        let before = Sample::take(counters, cluster);
        phase.store(MEASURE, Ordering::Release);
        std::thread::sleep(Duration::from_secs_f64(args.seconds));
        let after = Sample::take(counters, cluster);
        phase.store(STOP, Ordering::Release);
        let results: Vec<_> =
            clients.into_iter().map(std::thread::ScopedJoinHandle::join).collect();
        Ok((before?, after?, results))
    })?;
    let mut latencies = Vec::new();
    let mut retries = 0;
    for result in results {
        let result = result.map_err(|_| anyhow!("a client thread panicked"))??;
        latencies.extend(result.latencies_us);
        retries += result.retries;
    }
    latencies.sort_unstable();
    Ok(WriteCase {
        raft_workers: 1,
        ranges,
        clients: args.clients,
        seconds: after.at.duration_since(before.at).as_secs_f64(),
        writes: latencies.len() as u64,
        retries,
        p50_us: percentile(&latencies, 0.50),
        p99_us: percentile(&latencies, 0.99),
        p999_us: percentile(&latencies, 0.999),
        max_us: latencies.last().copied().unwrap_or(0),
        raft_syncs: after.raft_syncs - before.raft_syncs,
        raft_engine_syncs: after.raft_engine_syncs - before.raft_engine_syncs,
        raft_engine_sync_nanos: after.raft_engine_sync_nanos - before.raft_engine_sync_nanos,
        kv_engine_syncs: after.kv_engine_syncs - before.kv_engine_syncs,
        proposals: after.proposals - before.proposals,
        mailbox_full: after.mailbox_full - before.mailbox_full,
        cpu: after.cpu.saturating_sub(before.cpu),
        leaders: counters.leaders.values(),
    })
}

fn write_cases(args: &Args, counters: &Counters) -> Result<Vec<WriteCase>> {
    let config = StoreConfig { tick_interval_ms: args.tick_ms, ..StoreConfig::default() };
    let mut cases = Vec::new();
    for &raft_workers in &args.raft_workers {
        cases.extend(write_cases_on(args, counters, &config, raft_workers)?);
    }
    Ok(cases)
}

fn write_cases_on(
    args: &Args,
    counters: &Counters,
    config: &StoreConfig,
    raft_workers: usize,
) -> Result<Vec<WriteCase>> {
    let cluster = Cluster::start(config, args.workers, raft_workers, args.dir.as_deref())?;
    let result = (|| {
        let ids = AtomicU64::new(FIRST_SPLIT_ID);
        let mut routes = Routes::new();
        let mut cases = Vec::new();
        for &ranges in &args.ranges {
            let started = Instant::now();
            split_at(&cluster, &mut routes, &boundaries(ranges), args.split_parallelism, &ids)?;
            probe_ranges(&cluster, &mut routes)?;
            if args.spread_leaders {
                spread_leaders(&cluster, &mut routes)?;
            }
            eprintln!(
                "writes ({raft_workers} raft workers): {} ranges ready in {:.1} s; {} clients, \
                 {} s warm-up, {} s measured",
                routes.by_start.len(),
                started.elapsed().as_secs_f64(),
                args.clients,
                args.warmup,
                args.seconds
            );
            let mut case = run_writes(&cluster, counters, &routes, args, routes.by_start.len())?;
            case.raft_workers = raft_workers;
            eprintln!(
                "  {:.0} writes/s, p50 {} us, p99 {} us, {:.0} fsyncs/s, {:.1} writes per fsync",
                case.writes_per_sec(),
                case.p50_us,
                case.p99_us,
                case.fsyncs_per_sec(),
                case.writes_per_fsync()
            );
            if args.json {
                println!("{}", case.to_json());
            }
            cases.push(case);
        }
        Ok(cases)
    })();
    cluster.stop();
    result
}

// ---------------------------------------------------------------------------------------
// Idle ranges.
// ---------------------------------------------------------------------------------------

#[derive(Debug)]
struct IdleCase {
    quiesce_after_ticks: u32,
    ranges: usize,
    split_seconds: f64,
    settle_seconds: f64,
    settled: bool,
    seconds: f64,
    cpu: Duration,
    sent_bytes: u64,
    sent_messages: u64,
    raft_syncs: u64,
    mailbox_full: u64,
    quiesced: [u64; STORES],
    leaders: [u64; STORES],
}

impl IdleCase {
    fn quiescence(&self) -> &'static str {
        if self.quiesce_after_ticks == 0 { "off" } else { "on" }
    }

    fn cpu_per_sec(&self) -> f64 {
        self.cpu.as_secs_f64() / self.seconds
    }

    fn bytes_per_sec(&self) -> f64 {
        self.sent_bytes as f64 / self.seconds
    }

    fn messages_per_sec(&self) -> f64 {
        self.sent_messages as f64 / self.seconds
    }

    fn to_json(&self) -> String {
        format!(
            "{{\"bench\":\"store-throughput\",\"case\":\"idle\",\"quiescence\":\"{}\",\
             \"quiesce_after_ticks\":{},\"ranges\":{},\"split_seconds\":{:.1},\
             \"settle_seconds\":{:.1},\"settled\":{},\"seconds\":{:.3},\
             \"cpu_sec_per_sec\":{:.4},\"sent_bytes_per_sec\":{:.0},\
             \"sent_messages_per_sec\":{:.1},\"raft_syncs\":{},\"mailbox_full\":{},\
             \"quiesced\":[{}],\"leaders\":[{}]}}",
            self.quiescence(),
            self.quiesce_after_ticks,
            self.ranges,
            self.split_seconds,
            self.settle_seconds,
            self.settled,
            self.seconds,
            self.cpu_per_sec(),
            self.bytes_per_sec(),
            self.messages_per_sec(),
            self.raft_syncs,
            self.mailbox_full,
            self.quiesced.map(|n| n.to_string()).join(","),
            self.leaders.map(|n| n.to_string()).join(","),
        )
    }
}

fn idle_case(args: &Args, counters: &Counters, quiesce_after_ticks: u32) -> Result<IdleCase> {
    let config = StoreConfig {
        tick_interval_ms: args.tick_ms,
        quiesce_after_ticks,
        ..StoreConfig::default()
    };
    let cluster = Cluster::start(&config, args.workers, 1, args.dir.as_deref())?;
    let result = (|| {
        let ids = AtomicU64::new(FIRST_SPLIT_ID);
        let mut routes = Routes::new();
        probe_ranges(&cluster, &mut routes)?;
        let started = Instant::now();
        split_at(
            &cluster,
            &mut routes,
            &boundaries(args.idle_ranges),
            args.split_parallelism,
            &ids,
        )?;
        let split_seconds = started.elapsed().as_secs_f64();
        eprintln!(
            "idle, quiescence {}: {} ranges split in {split_seconds:.1} s; settling",
            if quiesce_after_ticks == 0 { "off" } else { "on" },
            routes.by_start.len()
        );

        // Settle: at least `settle_seconds`, then until a whole second passes without a
        // raft-log write or a change in the number of quiesced replicas.
        let settle_started = Instant::now();
        std::thread::sleep(Duration::from_secs_f64(args.settle_seconds));
        let settle_deadline = settle_started + Duration::from_secs(60);
        let mut settled = false;
        while Instant::now() < settle_deadline {
            let syncs = counters.raft_syncs.load(Ordering::Relaxed);
            let quiesced: u64 = counters.quiesced.values().iter().sum();
            std::thread::sleep(Duration::from_secs(1));
            if counters.raft_syncs.load(Ordering::Relaxed) == syncs
                && counters.quiesced.values().iter().sum::<u64>() == quiesced
            {
                settled = true;
                break;
            }
        }
        let settle_seconds = settle_started.elapsed().as_secs_f64();

        let before = Sample::take(counters, &cluster)?;
        std::thread::sleep(Duration::from_secs_f64(args.idle_seconds));
        let after = Sample::take(counters, &cluster)?;
        let case = IdleCase {
            quiesce_after_ticks,
            ranges: routes.by_start.len(),
            split_seconds,
            settle_seconds,
            settled,
            seconds: after.at.duration_since(before.at).as_secs_f64(),
            cpu: after.cpu.saturating_sub(before.cpu),
            sent_bytes: after.sent_bytes - before.sent_bytes,
            sent_messages: after.sent_messages - before.sent_messages,
            raft_syncs: after.raft_syncs - before.raft_syncs,
            mailbox_full: after.mailbox_full - before.mailbox_full,
            quiesced: counters.quiesced.values(),
            leaders: counters.leaders.values(),
        };
        eprintln!(
            "  {} after {settle_seconds:.1} s; {:.3} CPU s/s, {:.0} B/s, {:.0} msgs/s sent; \
             quiesced replicas {:?}, leaders {:?}",
            if settled { "settled" } else { "NOT settled" },
            case.cpu_per_sec(),
            case.bytes_per_sec(),
            case.messages_per_sec(),
            case.quiesced,
            case.leaders
        );
        if args.json {
            println!("{}", case.to_json());
        }
        Ok(case)
    })();
    cluster.stop();
    result
}

// ---------------------------------------------------------------------------------------
// Report.
// ---------------------------------------------------------------------------------------

fn ratio(a: f64, b: f64) -> String {
    if b == 0.0 { "∞".to_owned() } else { format!("{:.1}", a / b) }
}

fn table(writes: &[WriteCase], idle: &[IdleCase]) -> String {
    let mut out = String::new();
    if !writes.is_empty() {
        let _ = writeln!(
            out,
            "\nwrites ({} clients, RawPut of random keys, 3 stores on loopback)",
            writes[0].clients
        );
        let _ = writeln!(
            out,
            "{:>7} {:>6} {:>10} {:>8} {:>8} {:>8} {:>9} {:>11} {:>10} {:>9} {:>9} {:>12}",
            "workers",
            "ranges",
            "writes/s",
            "p50 ms",
            "p99 ms",
            "p999 ms",
            "fsyncs/s",
            "fsync/write",
            "writes/fs",
            "fsync ms",
            "CPU us/w",
            "leaders"
        );
        for case in writes {
            let _ = writeln!(
                out,
                "{:>7} {:>6} {:>10.0} {:>8.2} {:>8.2} {:>8.2} {:>9.0} {:>11.4} {:>10.1} {:>9.2} \
                 {:>9.0} {:>12}",
                case.raft_workers,
                case.ranges,
                case.writes_per_sec(),
                f64::from(case.p50_us) / 1e3,
                f64::from(case.p99_us) / 1e3,
                f64::from(case.p999_us) / 1e3,
                case.fsyncs_per_sec(),
                case.fsyncs_per_write(),
                case.writes_per_fsync(),
                case.sync_avg_us() / 1e3,
                case.cpu_us_per_write(),
                case.leaders.map(|n| n.to_string()).join("/"),
            );
        }
        let base = writes[0].writes_per_sec();
        let relative: Vec<String> = writes
            .iter()
            .map(|case| format!("{} ranges {}×", case.ranges, ratio(case.writes_per_sec(), base)))
            .collect();
        let _ = writeln!(
            out,
            "writes/s relative to {} range(s): {}",
            writes[0].ranges,
            relative.join(", ")
        );
    }
    if !idle.is_empty() {
        let _ = writeln!(
            out,
            "\nidle ranges ({} per store, 3 replicas each, {} s measured)",
            idle[0].ranges,
            idle[0].seconds.round()
        );
        let _ = writeln!(
            out,
            "{:>10} {:>10} {:>12} {:>12} {:>9} {:>20} {:>8}",
            "quiescence",
            "CPU s/s",
            "sent B/s",
            "sent msgs/s",
            "fsyncs/s",
            "quiesced replicas",
            "settled"
        );
        for case in idle {
            let _ = writeln!(
                out,
                "{:>10} {:>10.3} {:>12.0} {:>12.0} {:>9.1} {:>20} {:>8}",
                case.quiescence(),
                case.cpu_per_sec(),
                case.bytes_per_sec(),
                case.messages_per_sec(),
                case.raft_syncs as f64 / case.seconds,
                case.quiesced.map(|n| n.to_string()).join("/"),
                case.settled,
            );
        }
        let on = idle.iter().find(|case| case.quiesce_after_ticks != 0);
        let off = idle.iter().find(|case| case.quiesce_after_ticks == 0);
        if let (Some(on), Some(off)) = (on, off) {
            let _ = writeln!(
                out,
                "quiescence off ÷ on: CPU {}×, bytes {}×, messages {}×",
                ratio(off.cpu_per_sec(), on.cpu_per_sec()),
                ratio(off.bytes_per_sec(), on.bytes_per_sec()),
                ratio(off.messages_per_sec(), on.messages_per_sec()),
            );
        }
    }
    out
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.ranges.is_empty() || args.ranges.iter().any(|&n| n == 0 || n as u64 > SLOTS) {
        bail!("--ranges needs counts between 1 and {SLOTS}");
    }
    if args.idle_ranges == 0 || args.idle_ranges as u64 > SLOTS {
        bail!("--idle-ranges must be between 1 and {SLOTS}");
    }
    let recorder = BenchRecorder::default();
    let counters = recorder.0.clone();
    metrics::set_global_recorder(recorder)
        .map_err(|_| anyhow!("a metrics recorder is already installed"))?;
    eprintln!(
        "store-throughput {}: 3 stores in one process (RocksDB, QUIC on loopback), tick {} ms, \
         {} cores",
        env!("CARGO_PKG_VERSION"),
        args.tick_ms,
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get)
    );
    let writes = if args.skip_writes { Vec::new() } else { write_cases(&args, &counters)? };
    let mut idle = Vec::new();
    if !args.skip_idle {
        idle.push(idle_case(&args, &counters, args.quiesce_after_ticks)?);
        idle.push(idle_case(&args, &counters, 0)?);
    }
    print!("{}", table(&writes, &idle));
    Ok(())
}
