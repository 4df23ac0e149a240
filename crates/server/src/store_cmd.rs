//! `tessera store`: one store process — RocksDB engines in `--data-dir`, the QUIC transport
//! on `--listen`, the multi-raft store on its own thread, KV served over RPC.
//!
//! A store's node id is its store id: the store's network reaches store `n` at node `n`.
//!
//! # Without the placement driver: `--initial-stores`
//!
//! A new cluster is bootstrapped by starting every store with the same `--initial-stores`:
//! each empty data directory is bootstrapped with the first range, one voter per listed
//! store (replica id = store id). A store started on an empty directory without
//! `--initial-stores` joins holding nothing; replicas reach it by membership changes and
//! snapshots. Other stores' addresses come from `--peer ID=ADDR`.
//!
//! # With the placement driver: `--placement ID=ADDR` (repeatable)
//!
//! Conflicts with `--initial-stores`. The placement nodes are registered as transport peers
//! under their node ids, which must differ from this store's id and from every `--peer` id
//! (the operator keeps node ids distinct across stores and placement nodes; the start is
//! refused otherwise). This store registers itself as
//! `Store { id, node_id: id, address, labels, state: Up }` where `address` is
//! `--advertise-addr`, by default the bound `--listen` address (so `--advertise-addr` is
//! required when `--listen` is a wildcard address such as `0.0.0.0`), and `labels` are the
//! `--label KEY=VALUE` flags in the order given (highest level first; they also go into the
//! store heartbeats).
//!
//! Startup, each placement call retried across the placement members for at most
//! [`PLACEMENT_STARTUP_TIMEOUT`] (then the start fails with the last error):
//!
//! 1. If the data directory holds no store ident: `Bootstrap { store, range }` with the
//!    first range `[∅, ∞)`, id 1, epoch `{conf_ver: 1, version: 1}` and one voter on this
//!    store (replica id = store id).
//!    - Accepted: this store created the cluster and bootstraps that range locally
//!      (`bootstrap`).
//!    - `AlreadyBootstrapped`: `GetRangeById { range: 1 }`. If range 1 is still exactly
//!      epoch `{1, 1}` with a single replica, on this store, this store created the cluster
//!      but stopped before bootstrapping locally: it bootstraps that descriptor locally.
//!      (The same happens if this store of a one-store cluster lost its data directory
//!      before any membership change or split: writes do not change the epoch, so what was
//!      written is not recovered.) Otherwise, or if range 1 is gone, it joins holding
//!      nothing (`bootstrap_store`); the placement driver moves replicas to it.
//! 2. Always: `PutStore { store }`; then the store gets a [`PlacementLink`] (store and range
//!    heartbeats, split ids and reports; the answers carry scheduling commands) before its
//!    thread starts.
//! 3. A background task ([`spawn_store_directory`]) asks `GetAllStores` at start and every
//!    second and registers every other store's address with the transport, so stores need
//!    no `--peer` (explicit `--peer` flags still work until the placement driver names an
//!    address for that store).
//!
//! The process prints `tessera store N ready on ADDR with K ranges` once it serves (scripts
//! and tests wait for it), and stops cleanly on SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use serde_json::json;
use tessera_client::placement::PlacementRpc;
use tessera_engine::codec::StoreIdent;
use tessera_engine::{Cf, KvEngine, KvRead, RaftLogEngine, keys};
use tessera_engine_rocks::EngineOptions;
use tessera_raft::ReplicaId;
use tessera_store::{
    MailboxCapacity, RaftPool, ReplicaInfo, Store, StoreConfig, StoreHandle, StoreInspection,
    StoreRpcHandler, StoreSystem, TransportNetwork, bootstrap, bootstrap_store,
};
use tessera_transport::tls::{NodeTls, TlsSource};
use tessera_transport::{Transport, TransportConfig};
use tessera_wire::errors::RpcError;
use tessera_wire::ids::{NodeId, RangeId, StoreId};
use tessera_wire::placement::{PlacementRequest, PlacementResponse, StoreLabel, StoreState};
use tessera_wire::range::{RangeDescriptor, RangeEpoch, Replica, ReplicaRole};

use crate::admin::{AdminServer, AdminSource, JsonFuture};
use crate::config::{self, TlsArgs, parse_node_addr};
use crate::placement_link::{PlacementLink, spawn_store_directory};

/// The store's mailboxes: its own takes bursts of Raft messages for ranges that just
/// arrived and every administrative request; a range's bounds what one range may queue, so
/// a flooded range answers `ServerBusy` while the others are served.
const MAILBOXES: MailboxCapacity = MailboxCapacity { store: 65_536, range: 8_192 };

/// How long each placement call of the startup may take, retries included.
pub const PLACEMENT_STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Arguments of `tessera store`: flags over the keys of `--config FILE` (see
/// [`crate::config`]). Required, from one or the other: the store id, the cluster id, the
/// data directory, the listen address and the TLS material.
#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    /// A TOML config file (see docs/configuration.md): each flag is a key with `_` for `-`,
    /// repeatable ones are lists (`peers`, `placement`, `labels`, `initial_stores`); unknown keys are refused; flags win.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// This store's id (also its node id). Required.
    #[arg(long)]
    pub store_id: Option<u64>,
    /// The cluster's id; a data directory of another cluster is refused. Required.
    #[arg(long)]
    pub cluster_id: Option<u64>,
    /// Where the store keeps its RocksDB instances. Required.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// UDP address the QUIC transport listens on. Required.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Another store: `ID=ADDR`. Repeat for each.
    #[arg(long = "peer", value_parser = parse_node_addr)]
    pub peers: Vec<(u64, SocketAddr)>,
    /// Stores holding the first range of a new cluster (comma-separated ids); used only
    /// when the data directory is empty. Left out, an empty store joins holding nothing.
    #[arg(long, value_delimiter = ',')]
    pub initial_stores: Vec<u64>,
    /// A placement node: `ID=ADDR` (its node id, distinct from every store id). Repeat for
    /// each. The store then bootstraps or joins through the placement driver, registers
    /// itself, reports to it and learns the other stores' addresses from it.
    #[arg(long = "placement", value_parser = parse_node_addr)]
    pub placement: Vec<(u64, SocketAddr)>,
    /// The address other nodes reach this store at, registered with the placement driver.
    /// Default: the bound --listen address (required when --listen is a wildcard address).
    #[arg(long)]
    pub advertise_addr: Option<SocketAddr>,
    /// Labels of this store's location, `KEY=VALUE`, highest level first: repeat the flag
    /// or separate with commas (`--labels region=eu,zone=eu-1a`).
    #[arg(long = "label", visible_alias = "labels", value_delimiter = ',', value_parser = parse_label)]
    pub labels: Vec<StoreLabel>,
    /// TCP address of the admin HTTP endpoints (`/metrics`, `/status`, `/ranges`,
    /// `/health`). Default: none served.
    #[arg(long)]
    pub admin_addr: Option<SocketAddr>,
    /// Milliseconds per Raft tick. Default: 100.
    #[arg(long)]
    pub tick_ms: Option<u64>,
    /// Seconds a stopping store waits for its leaders to move to other stores. Default: 10.
    #[arg(long)]
    pub leader_handoff_secs: Option<u64>,
    /// Requests per second (sampled at the leader) above which a range splits by load at
    /// its median sampled key; 0 turns load splits off. Default: 3000.
    #[arg(long)]
    pub load_split_qps: Option<u64>,
    /// Threads that step this store's ranges: the raft worker and its helpers, which take
    /// a share of a round's ranges when enough of them have work (1–64). Default: 1 (no
    /// helpers); measure before raising it (`store-throughput --raft-workers 1,2,4`).
    #[arg(long)]
    pub raft_workers: Option<usize>,
    // The TLS flags sit here rather than in a flattened `TlsArgs`: clap does not fill an
    // optional flattened group (`Option<StoreArgs>`) from the flags of a nested one.
    /// Development TLS: the cluster CA and node certificates are generated in this
    /// directory (shared by all nodes of the cluster). Insecure by design. Conflicts with
    /// the --tls-* flags.
    #[arg(long, conflicts_with_all = ["tls_ca", "tls_cert", "tls_key"])]
    pub insecure_dev_certs: Option<PathBuf>,
    /// The cluster CA certificate (PEM): the only trust anchor.
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
    /// This node's certificate chain (PEM, leaf first), signed by --tls-ca.
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// This node's private key (PEM).
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
}

/// The keys of a store's config file (the flags' names with `_`).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreFile {
    store_id: Option<u64>,
    cluster_id: Option<u64>,
    data_dir: Option<PathBuf>,
    listen: Option<SocketAddr>,
    #[serde(default)]
    peers: Vec<String>,
    #[serde(default)]
    initial_stores: Vec<u64>,
    #[serde(default)]
    placement: Vec<String>,
    advertise_addr: Option<SocketAddr>,
    #[serde(default)]
    labels: Vec<String>,
    admin_addr: Option<SocketAddr>,
    tick_ms: Option<u64>,
    leader_handoff_secs: Option<u64>,
    load_split_qps: Option<u64>,
    raft_workers: Option<usize>,
    insecure_dev_certs: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
}

/// A store's settings: flags over the config file over defaults.
#[derive(Debug)]
pub struct StoreSettings {
    store_id: u64,
    cluster_id: u64,
    data_dir: PathBuf,
    listen: SocketAddr,
    peers: Vec<(u64, SocketAddr)>,
    initial_stores: Vec<u64>,
    placement: Vec<(u64, SocketAddr)>,
    advertise_addr: Option<SocketAddr>,
    labels: Vec<StoreLabel>,
    admin_addr: Option<SocketAddr>,
    tick_ms: u64,
    leader_handoff: Duration,
    load_split_qps: u64,
    raft_workers: usize,
    tls: TlsSource,
}

/// `flag` when given, else `file`.
fn either<T>(flag: Vec<T>, file: Vec<T>) -> Vec<T> {
    if flag.is_empty() { file } else { flag }
}

impl StoreSettings {
    /// Merges the flags with the config file they name, and checks the result.
    ///
    /// # Errors
    /// The file cannot be read or holds a mistake; a required value is missing; values
    /// contradict each other. The message names the problem.
    pub fn resolve(args: &StoreArgs) -> Result<Self> {
        let file: StoreFile = match &args.config {
            Some(path) => config::load_file(path)?,
            None => StoreFile::default(),
        };
        let labels = file
            .labels
            .iter()
            .map(|label| parse_label(label).map_err(|error| anyhow::anyhow!("labels: {error}")))
            .collect::<Result<Vec<_>>>()?;
        let flags = TlsArgs {
            insecure_dev_certs: args.insecure_dev_certs.clone(),
            tls_ca: args.tls_ca.clone(),
            tls_cert: args.tls_cert.clone(),
            tls_key: args.tls_key.clone(),
        };
        let tls = flags.or(TlsArgs {
            insecure_dev_certs: file.insecure_dev_certs,
            tls_ca: file.tls_ca,
            tls_cert: file.tls_cert,
            tls_key: file.tls_key,
        });
        let settings = Self {
            store_id: config::required(args.store_id.or(file.store_id), "store-id")?,
            cluster_id: config::required(args.cluster_id.or(file.cluster_id), "cluster-id")?,
            data_dir: config::required(args.data_dir.clone().or(file.data_dir), "data-dir")?,
            listen: config::required(args.listen.or(file.listen), "listen")?,
            peers: either(args.peers.clone(), config::parse_node_addrs("peers", &file.peers)?),
            initial_stores: either(args.initial_stores.clone(), file.initial_stores),
            placement: either(
                args.placement.clone(),
                config::parse_node_addrs("placement", &file.placement)?,
            ),
            advertise_addr: args.advertise_addr.or(file.advertise_addr),
            labels: either(args.labels.clone(), labels),
            admin_addr: args.admin_addr.or(file.admin_addr),
            tick_ms: args.tick_ms.or(file.tick_ms).unwrap_or(100),
            leader_handoff: Duration::from_secs(
                args.leader_handoff_secs.or(file.leader_handoff_secs).unwrap_or(10),
            ),
            load_split_qps: args
                .load_split_qps
                .or(file.load_split_qps)
                .unwrap_or(StoreConfig::default().load_split_qps),
            raft_workers: args.raft_workers.or(file.raft_workers).unwrap_or(1),
            tls: tls.source()?,
        };
        settings.check()?;
        Ok(settings)
    }

    fn check(&self) -> Result<()> {
        if self.store_id == 0 || self.cluster_id == 0 {
            bail!("--store-id and --cluster-id must be positive");
        }
        if !(1..=64).contains(&self.raft_workers) {
            bail!("--raft-workers must be between 1 and 64, not {}", self.raft_workers);
        }
        if !self.initial_stores.is_empty() && !self.placement.is_empty() {
            bail!(
                "--initial-stores and --placement exclude each other: with the placement \
                 driver the first store bootstraps the cluster"
            );
        }
        if self.tick_ms == 0 {
            bail!("--tick-ms must be at least 1");
        }
        check_placement_ids(self)?;
        if !self.placement.is_empty()
            && self.advertise_addr.is_none()
            && self.listen.ip().is_unspecified()
        {
            bail!("--listen {} is a wildcard address: give --advertise-addr", self.listen);
        }
        Ok(())
    }
}

fn parse_label(text: &str) -> Result<StoreLabel, String> {
    let (key, value) =
        text.split_once('=').ok_or_else(|| format!("`{text}`: expected KEY=VALUE"))?;
    if key.is_empty() {
        return Err(format!("`{text}`: empty label key"));
    }
    Ok(StoreLabel { key: key.to_owned(), value: value.to_owned() })
}

/// Refuses placement node ids that are zero, repeated, or shared with this store or a peer.
fn check_placement_ids(args: &StoreSettings) -> Result<()> {
    for (index, (id, _)) in args.placement.iter().enumerate() {
        if *id == 0 {
            bail!("--placement {id}=…: node ids must be positive");
        }
        if *id == args.store_id {
            bail!(
                "--placement {id}=…: node id {id} is this store's id; placement nodes and \
                 stores need distinct node ids"
            );
        }
        if args.peers.iter().any(|(peer, _)| peer == id) {
            bail!(
                "--placement {id}=…: node id {id} is also given as a --peer store; placement \
                 nodes and stores need distinct node ids"
            );
        }
        if args.placement[..index].iter().any(|(other, _)| other == id) {
            bail!("--placement {id}=… is given twice");
        }
    }
    Ok(())
}

/// The address this store registers: `--advertise-addr`, else the bound address.
fn advertised(args: &StoreSettings, bound: SocketAddr) -> Result<SocketAddr> {
    let addr = args.advertise_addr.unwrap_or(bound);
    if addr.ip().is_unspecified() || addr.port() == 0 {
        bail!(
            "cannot register {addr} with the placement driver: give --advertise-addr (the \
             address other nodes reach this store at)"
        );
    }
    Ok(addr)
}

/// The first range of a cluster created by `store`: `[∅, ∞)`, one voter on `store`.
fn first_range(store: StoreId) -> RangeDescriptor {
    RangeDescriptor {
        id: RangeId(1),
        start_key: Bytes::new(),
        end_key: Bytes::new(),
        epoch: RangeEpoch { conf_ver: 1, version: 1 },
        replicas: vec![Replica {
            id: ReplicaId(store.0),
            store_id: store,
            role: ReplicaRole::Voter,
        }],
    }
}

/// Whether `descriptor` is range 1 as bootstrapped by `store` and never changed since.
fn is_untouched_first_range(descriptor: &RangeDescriptor, store: StoreId) -> bool {
    descriptor.id == RangeId(1)
        && descriptor.epoch == (RangeEpoch { conf_ver: 1, version: 1 })
        && descriptor.start_key.is_empty()
        && descriptor.end_key.is_empty()
        && matches!(descriptor.replicas.as_slice(), [only] if only.store_id == store)
}

/// Startup step 1 with the placement driver (see the module documentation): an empty data
/// directory bootstraps the cluster, finishes an interrupted bootstrap, or joins empty.
fn bootstrap_with_placement<R: RaftLogEngine, K: KvEngine>(
    runtime: &tokio::runtime::Runtime,
    rpc: &PlacementRpc,
    (raft, kv): (&R, &K),
    ident: StoreIdent,
    store: &tessera_wire::placement::Store,
) -> Result<()> {
    let first = first_range(ident.store_id);
    let request = PlacementRequest::Bootstrap { store: store.clone(), range: first.clone() };
    match runtime.block_on(rpc.call(request, PLACEMENT_STARTUP_TIMEOUT)) {
        Ok(PlacementResponse::Bootstrap) => {
            bootstrap(raft, kv, ident, &first)?;
            tracing::info!(store = %ident.store_id, "bootstrapped the cluster");
            return Ok(());
        }
        Ok(other) => bail!("the placement driver answered Bootstrap with {other:?}"),
        Err(RpcError::AlreadyBootstrapped) => {}
        Err(error) => {
            return Err(error).context("bootstrapping the cluster through the placement driver");
        }
    }
    let request = PlacementRequest::GetRangeById { range: RangeId(1) };
    match runtime.block_on(rpc.call(request, PLACEMENT_STARTUP_TIMEOUT)) {
        Ok(PlacementResponse::GetRangeById { route })
            if is_untouched_first_range(&route.descriptor, ident.store_id) =>
        {
            bootstrap(raft, kv, ident, &route.descriptor)?;
            tracing::info!(store = %ident.store_id, "finished an interrupted bootstrap");
        }
        Ok(PlacementResponse::GetRangeById { .. }) | Err(RpcError::RangeNotFound { .. }) => {
            bootstrap_store(raft, kv, ident)?;
            tracing::info!(store = %ident.store_id, "joined the cluster holding no range");
        }
        Ok(other) => bail!("the placement driver answered GetRangeById with {other:?}"),
        Err(error) => {
            return Err(error).context("asking the placement driver for the first range");
        }
    }
    Ok(())
}

/// Startup step 2 with the placement driver: registers (or updates) this store.
fn register_store(
    runtime: &tokio::runtime::Runtime,
    rpc: &PlacementRpc,
    store: &tessera_wire::placement::Store,
) -> Result<()> {
    let request = PlacementRequest::PutStore { store: store.clone() };
    match runtime.block_on(rpc.call(request, PLACEMENT_STARTUP_TIMEOUT)) {
        Ok(PlacementResponse::PutStore) => {
            tracing::info!(store = %store.id, address = %store.address, "registered with the placement driver");
            Ok(())
        }
        Ok(other) => bail!("the placement driver answered PutStore with {other:?}"),
        Err(RpcError::ClusterNotBootstrapped) => bail!(
            "the placement driver holds no cluster, but this data directory belongs to one \
             (bootstrapped without --placement, or the placement data was lost)"
        ),
        Err(error) => Err(error).with_context(|| {
            format!(
                "registering store {} with the placement driver (gave up after {} s)",
                store.id,
                PLACEMENT_STARTUP_TIMEOUT.as_secs()
            )
        }),
    }
}

/// Startup without the placement driver: `--initial-stores` (see the module documentation).
fn bootstrap_locally<R: RaftLogEngine, K: KvEngine>(
    args: &StoreSettings,
    (raft, kv): (&R, &K),
    ident: StoreIdent,
) -> Result<()> {
    if args.initial_stores.is_empty() {
        // A store joining a running cluster: it holds nothing until leaders add replicas
        // on it (they arrive by snapshot).
        bootstrap_store(raft, kv, ident)?;
        tracing::info!(store = args.store_id, "joined holding no range");
        return Ok(());
    }
    if !args.initial_stores.contains(&args.store_id) {
        bail!(
            "the data directory is empty and --initial-stores does not list this store \
             (leave --initial-stores out to join a running cluster holding nothing)"
        );
    }
    let first = RangeDescriptor {
        id: RangeId(1),
        start_key: Bytes::new(),
        end_key: Bytes::new(),
        epoch: RangeEpoch { conf_ver: 1, version: 1 },
        replicas: args
            .initial_stores
            .iter()
            .map(|id| Replica {
                id: ReplicaId(*id),
                store_id: StoreId(*id),
                role: ReplicaRole::Voter,
            })
            .collect(),
    };
    bootstrap(raft, kv, ident, &first)?;
    tracing::info!(store = args.store_id, "bootstrapped the first range");
    Ok(())
}

/// Runs the store until SIGINT or SIGTERM; on either, hands its leaders to other stores
/// (at most `leader_handoff_secs`) before stopping.
pub fn run(args: &StoreArgs) -> Result<()> {
    let args = &StoreSettings::resolve(args)?;
    let config = StoreConfig {
        tick_interval_ms: args.tick_ms,
        load_split_qps: args.load_split_qps,
        snapshot_dir: args.data_dir.join("snapshots"),
        labels: args.labels.clone(),
        ..StoreConfig::default()
    };
    config.validate()?;
    let metrics = crate::admin::install_recorder()?;
    let tls = NodeTls::load(&args.tls, &format!("node-{}", args.store_id))
        .context("loading this node's TLS material")?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create the data directory {}", args.data_dir.display()))?;
    let (raft, kv) = tessera_engine_rocks::open(&args.data_dir, &EngineOptions::default())
        .with_context(|| format!("opening the engines in {}", args.data_dir.display()))?;
    let store_id = StoreId(args.store_id);
    let ident = StoreIdent { cluster_id: args.cluster_id, store_id };
    let fresh = kv.get(Cf::Meta, keys::STORE_IDENT_KEY)?.is_none();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let transport_config =
        TransportConfig::new(NodeId(args.store_id), store_id, args.cluster_id, args.listen, tls);
    let handler = Arc::new(StoreRpcHandler::with_snapshot_dir(config.snapshot_dir.clone()));
    let transport = Arc::new(
        runtime
            .block_on(Transport::start(transport_config, handler.clone()))
            .with_context(|| format!("starting the transport on --listen {}", args.listen))?,
    );
    for (id, addr) in args.peers.iter().chain(&args.placement) {
        transport.set_peer(NodeId(*id), *addr);
    }
    let addr = transport.local_addr()?;

    let placement = if args.placement.is_empty() {
        if fresh {
            bootstrap_locally(args, (&raft, &kv), ident)?;
        }
        None
    } else {
        let members = args.placement.iter().map(|(id, _)| NodeId(*id)).collect();
        let rpc = Arc::new(PlacementRpc::new(transport.clone(), members));
        let registration = tessera_wire::placement::Store {
            id: store_id,
            node_id: NodeId(args.store_id),
            address: advertised(args, addr)?.to_string(),
            labels: args.labels.clone(),
            state: StoreState::Up,
        };
        if fresh {
            bootstrap_with_placement(&runtime, &rpc, (&raft, &kv), ident, &registration)?;
        }
        register_store(&runtime, &rpc, &registration)?;
        Some(rpc)
    };

    let net = TransportNetwork::new(transport.clone(), runtime.handle().clone());
    let mut store = Store::open(config, raft, kv, net, ident)?;
    let directory = placement.as_ref().map(|rpc| {
        store.set_placement(Box::new(PlacementLink::new(rpc.clone(), runtime.handle().clone())));
        spawn_store_directory(rpc.clone(), store_id, runtime.handle())
    });
    if args.raft_workers > 1 {
        let name = format!("store-{}-step", args.store_id);
        store.set_raft_pool(RaftPool::new(&name, args.raft_workers, RaftPool::PARALLEL_MIN)?);
    }
    let ranges = store.peers().count();
    let system = StoreSystem::start(store, MAILBOXES)?;
    handler.set_store(system.handle());
    let admin = match args.admin_addr {
        Some(admin_addr) => {
            let source = Arc::new(StoreAdmin { store: system.handle(), address: addr });
            let server = runtime.block_on(AdminServer::start(admin_addr, metrics, source))?;
            println!("tessera store {} admin on http://{}", args.store_id, server.local_addr());
            Some(server)
        }
        None => None,
    };
    // The readiness line scripts and tests wait for.
    println!("tessera store {} ready on {addr} with {ranges} ranges", args.store_id);
    crate::wait_for_shutdown(&runtime)?;
    tracing::info!(store = args.store_id, "stopping: handing leaders to other stores");
    let left = runtime.block_on(hand_off_leaders(&system.handle(), args.leader_handoff));
    // Scripts and tests read this line: 0 means clients find every range's leader at once.
    println!("tessera store {} stopping: {left} ranges still led here", args.store_id);
    if let Some(admin) = admin {
        runtime.block_on(admin.shutdown());
    }
    // Stopping the store drops its placement link, which aborts the calls in flight.
    system.stop();
    handler.clear_store();
    if let Some(directory) = directory {
        directory.abort();
    }
    drop(placement);
    // Aborted tasks release their references to the transport soon after; wait a little
    // for them so that the transport can be shut down gracefully.
    runtime.block_on(async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        while Arc::strong_count(&transport) > 1 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    if let Ok(transport) = Arc::try_unwrap(transport) {
        runtime.block_on(transport.shutdown(Duration::from_secs(2)));
    }
    Ok(())
}

/// The store as it is now, or `None` when it has stopped or does not answer within 2 s.
async fn inspect(store: &StoreHandle) -> Option<StoreInspection> {
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let asked = store.inspect(Box::new(move |inspection| {
        let _ = sender.send(inspection);
    }));
    if !asked {
        return None;
    }
    tokio::time::timeout(Duration::from_secs(2), receiver).await.ok()?.ok()
}

/// Hands every range this store leads to another store, asking again every half second
/// (a transfer fails when its target lags or an election intervenes), until none is led
/// here or `deadline` passes; returns how many the store still leads.
async fn hand_off_leaders(store: &StoreHandle, deadline: Duration) -> usize {
    let until = tokio::time::Instant::now() + deadline;
    let mut asked_at: Option<tokio::time::Instant> = None;
    loop {
        let Some(inspection) = inspect(store).await else { return 0 };
        let leaders = inspection.leaders();
        let alone = inspection.replicas.iter().all(|replica| {
            !replica.is_leader
                || replica.descriptor.replicas.iter().all(|r| r.store_id == inspection.store_id)
        });
        if leaders == 0 || alone || tokio::time::Instant::now() >= until {
            return leaders;
        }
        if asked_at.is_none_or(|at| at.elapsed() >= Duration::from_millis(500)) {
            let (sender, receiver) = tokio::sync::oneshot::channel();
            if store.transfer_leaders_away(Box::new(move |started| {
                let _ = sender.send(started);
            })) {
                let started = receiver.await.unwrap_or(0);
                tracing::debug!(leaders, started, "leader hand-off asked");
            }
            asked_at = Some(tokio::time::Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What `tessera store` shows on its admin endpoints.
struct StoreAdmin {
    store: StoreHandle,
    address: SocketAddr,
}

impl AdminSource for StoreAdmin {
    fn status(&self) -> JsonFuture {
        let store = self.store.clone();
        let address = self.address;
        Box::pin(async move {
            let inspection = inspect(&store).await.ok_or("the store does not answer")?;
            let stats = inspection.stats;
            Ok(json!({
                "kind": "store",
                "version": env!("CARGO_PKG_VERSION"),
                "store_id": inspection.store_id.0,
                "cluster_id": inspection.cluster_id,
                "address": address.to_string(),
                "ranges": inspection.replicas.len(),
                "leaders": inspection.leaders(),
                "quiesced": inspection.replicas.iter().filter(|r| r.quiesced).count(),
                "stats": {
                    "rounds": stats.rounds,
                    "raft_syncs": stats.raft_syncs,
                    "readies": stats.readies,
                    "entries_applied": stats.entries_applied,
                    "messages_sent": stats.messages_sent,
                    "messages_dropped": stats.messages_dropped,
                    "splits": stats.splits,
                    "conf_changes": stats.conf_changes,
                    "snapshots_built": stats.snapshots_built,
                    "snapshots_installed": stats.snapshots_installed,
                    "replicas_destroyed": stats.replicas_destroyed,
                },
            }))
        })
    }

    fn ranges(&self) -> JsonFuture {
        let store = self.store.clone();
        Box::pin(async move {
            let inspection = inspect(&store).await.ok_or("the store does not answer")?;
            let ranges: Vec<serde_json::Value> =
                inspection.replicas.iter().map(replica_json).collect();
            Ok(json!({ "store_id": inspection.store_id.0, "ranges": ranges }))
        })
    }

    fn health(&self) -> std::result::Result<(), String> {
        // The mailbox accepts requests while the store thread runs.
        let (sender, _receiver) = tokio::sync::oneshot::channel::<()>();
        if self.store.inspect(Box::new(move |_| drop(sender))) {
            Ok(())
        } else {
            Err("the store has stopped or its mailbox is full".to_owned())
        }
    }
}

/// One replica for `/ranges`: keys as lossy UTF-8 with the hex beside them.
fn replica_json(replica: &ReplicaInfo) -> serde_json::Value {
    let descriptor = &replica.descriptor;
    let key = |bytes: &[u8]| {
        let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
        json!({ "text": String::from_utf8_lossy(bytes), "hex": hex })
    };
    json!({
        "range_id": descriptor.id.0,
        "start_key": key(&descriptor.start_key),
        "end_key": key(&descriptor.end_key),
        "epoch": { "conf_ver": descriptor.epoch.conf_ver, "version": descriptor.epoch.version },
        "replica_id": replica.replica_id.0,
        "role": replica.role.map_or("uninitialized", |role| match role {
            ReplicaRole::Voter => "voter",
            ReplicaRole::Learner => "learner",
            ReplicaRole::IncomingVoter => "incoming-voter",
            ReplicaRole::DemotingVoter => "demoting-voter",
        }),
        "is_leader": replica.is_leader,
        "leader_replica": (replica.leader.0 != 0).then_some(replica.leader.0),
        "term": replica.term.0,
        "committed": replica.committed.0,
        "applied": replica.applied.0,
        "last_index": replica.last_index.0,
        "quiesced": replica.quiesced,
        "replicas": descriptor.replicas.iter().map(|r| json!({
            "replica_id": r.id.0, "store_id": r.store_id.0, "role": format!("{:?}", r.role),
        })).collect::<Vec<_>>(),
    })
}
