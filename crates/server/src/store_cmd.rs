//! `tessera store`: one store process — RocksDB engines in `--data-dir`, the QUIC transport
//! on `--listen`, the multi-raft store on its own thread, KV served over RPC.
//!
//! Until the placement driver lands (issue 7), a new cluster is bootstrapped by starting
//! every store with the same `--initial-stores`: each empty data directory is bootstrapped
//! with the first range, one voter per listed store (replica id = store id). A store started
//! on an empty directory without `--initial-stores` joins holding nothing; replicas reach it
//! by membership changes and snapshots.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use tessera_engine::codec::StoreIdent;
use tessera_engine::{Cf, KvRead, keys};
use tessera_engine_rocks::EngineOptions;
use tessera_raft::ReplicaId;
use tessera_store::{
    Store, StoreConfig, StoreRpcHandler, StoreSystem, TransportNetwork, bootstrap, bootstrap_store,
};
use tessera_transport::tls::{NodeTls, TlsSource};
use tessera_transport::{Transport, TransportConfig};
use tessera_wire::ids::{NodeId, RangeId, StoreId};
use tessera_wire::range::{RangeDescriptor, RangeEpoch, Replica, ReplicaRole};

/// Arguments of `tessera store`.
#[derive(Debug, clap::Args)]
pub struct StoreArgs {
    /// This store's id (also its node id).
    #[arg(long)]
    pub store_id: u64,
    /// The cluster's id; a data directory of another cluster is refused.
    #[arg(long)]
    pub cluster_id: u64,
    /// Where the store keeps its RocksDB instances.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// UDP address the QUIC transport listens on.
    #[arg(long)]
    pub listen: SocketAddr,
    /// Another store: `ID=ADDR`. Repeat for each.
    #[arg(long = "peer", value_parser = parse_peer)]
    pub peers: Vec<(u64, SocketAddr)>,
    /// Stores holding the first range of a new cluster (comma-separated ids); used only
    /// when the data directory is empty. Left out, an empty store joins holding nothing.
    #[arg(long, value_delimiter = ',')]
    pub initial_stores: Vec<u64>,
    /// Development TLS: the cluster CA and node certificates are generated in this
    /// directory (shared by all nodes of the cluster). Insecure by design.
    #[arg(long)]
    pub insecure_dev_certs: PathBuf,
    /// Milliseconds per Raft tick.
    #[arg(long, default_value_t = 100)]
    pub tick_ms: u64,
}

fn parse_peer(text: &str) -> Result<(u64, SocketAddr), String> {
    let (id, addr) = text.split_once('=').ok_or_else(|| format!("`{text}`: expected ID=ADDR"))?;
    let id = id.parse().map_err(|_| format!("`{id}`: not a store id"))?;
    let addr = addr.parse().map_err(|_| format!("`{addr}`: not a socket address"))?;
    Ok((id, addr))
}

/// Runs the store until SIGINT or SIGTERM.
pub fn run(args: &StoreArgs) -> Result<()> {
    if args.store_id == 0 || args.cluster_id == 0 {
        bail!("--store-id and --cluster-id must be positive");
    }
    let config = StoreConfig {
        tick_interval_ms: args.tick_ms,
        snapshot_dir: args.data_dir.join("snapshots"),
        ..StoreConfig::default()
    };
    config.validate()?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let (raft, kv) = tessera_engine_rocks::open(&args.data_dir, &EngineOptions::default())
        .with_context(|| format!("opening the engines in {}", args.data_dir.display()))?;
    let ident = StoreIdent { cluster_id: args.cluster_id, store_id: StoreId(args.store_id) };
    if kv.get(Cf::Meta, keys::STORE_IDENT_KEY)?.is_none() && args.initial_stores.is_empty() {
        // A store joining a running cluster: it holds nothing until leaders add replicas
        // on it (they arrive by snapshot).
        bootstrap_store(&raft, &kv, ident)?;
        tracing::info!(store = args.store_id, "joined holding no range");
    } else if kv.get(Cf::Meta, keys::STORE_IDENT_KEY)?.is_none() {
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
        bootstrap(&raft, &kv, ident, &first)?;
        tracing::info!(store = args.store_id, "bootstrapped the first range");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let tls = NodeTls::load(
        &TlsSource::DevGenerated { dir: args.insecure_dev_certs.clone() },
        &format!("node-{}", args.store_id),
    )?;
    let transport_config = TransportConfig::new(
        NodeId(args.store_id),
        StoreId(args.store_id),
        args.cluster_id,
        args.listen,
        tls,
    );
    let handler = Arc::new(StoreRpcHandler::with_snapshot_dir(config.snapshot_dir.clone()));
    let transport = Arc::new(
        runtime
            .block_on(Transport::start(transport_config, handler.clone()))
            .context("starting the transport")?,
    );
    for (id, addr) in &args.peers {
        transport.set_peer(NodeId(*id), *addr);
    }
    let net = TransportNetwork::new(transport.clone(), runtime.handle().clone());
    let store = Store::open(config, raft, kv, net, ident)?;
    let ranges = store.peers().count();
    let system = StoreSystem::start(store, 65_536)?;
    handler.set_store(system.handle());
    let addr = transport.local_addr()?;
    // The readiness line scripts and tests wait for.
    println!("tessera store {} ready on {addr} with {ranges} ranges", args.store_id);
    runtime.block_on(async {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        anyhow::Ok(())
    })?;
    tracing::info!(store = args.store_id, "stopping");
    system.stop();
    handler.clear_store();
    if let Ok(transport) = Arc::try_unwrap(transport) {
        runtime.block_on(transport.shutdown(Duration::from_secs(2)));
    }
    Ok(())
}
