//! `tessera placement`: one member of the placement group — RocksDB engines in
//! `--data-dir`, the QUIC transport on `--listen`, the member on its own thread serving
//! placement RPCs (followers answer `NotPlacementLeader` with the leader they know).
//!
//! A new group: start every member with the same `--member ID=ADDR` list (this member
//! included); each empty data directory is bootstrapped with all of them as voters. A
//! member joining a running group starts with `--join` on an empty data directory (and the
//! running members as `--member`), and is added by `AddMember` on the leader
//! (`tessera` CLI or any placement client): it receives the state as a snapshot, then is
//! promoted to voter once caught up. A restarted member needs only its data directory.
//!
//! The process prints `tessera placement N ready on ADDR` once it serves, and stops
//! cleanly on SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::admin::{AdminServer, AdminSource, JsonFuture};
use crate::config::{self, TlsArgs, parse_node_addr};
use anyhow::{Context, Result, bail};
use serde_json::json;
use tessera_engine_rocks::EngineOptions;
use tessera_placement::{
    NodeConfig, NodeInspection, PlacementHandle, PlacementNode, PlacementRpcHandler,
    PlacementSystem, TransportNodeNetwork, bootstrap_group, member_transport_config,
};
use tessera_transport::Transport;
use tessera_transport::tls::{NodeTls, TlsSource};
use tessera_wire::ids::NodeId;
use tessera_wire::placement::PlacementMember;

/// Arguments of `tessera placement`: flags over the keys of `--config FILE` (see
/// [`crate::config`]). Required, from one or the other: the id, the cluster id, the data
/// directory, the listen address and the TLS material.
#[derive(Debug, clap::Args)]
pub struct PlacementArgs {
    /// A TOML config file (see docs/configuration.md): each flag is a key with `_` for `-`,
    /// repeatable ones are lists (`members`, `location_labels`); unknown keys are refused; flags win.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// This member's node id (distinct from every store id). Required.
    #[arg(long)]
    pub id: Option<u64>,
    /// The cluster's id; a data directory of another cluster is refused. Required.
    #[arg(long)]
    pub cluster_id: Option<u64>,
    /// Where the member keeps its RocksDB instances. Required.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// UDP address the QUIC transport listens on. Required.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// The address other nodes reach this member at. Default: the bound --listen address.
    #[arg(long)]
    pub advertise_addr: Option<SocketAddr>,
    /// A member of the group: `ID=ADDR`, this one included. Repeat for each.
    #[arg(long = "member", value_parser = parse_node_addr)]
    pub members: Vec<(u64, SocketAddr)>,
    /// Join a running group (empty data directory only) instead of creating one.
    #[arg(long)]
    pub join: bool,
    /// TCP address of the admin HTTP endpoints (`/metrics`, `/status`, `/ranges`,
    /// `/health`). Default: none served.
    #[arg(long)]
    pub admin_addr: Option<SocketAddr>,
    /// Milliseconds per Raft tick. Default: 100.
    #[arg(long)]
    pub tick_ms: Option<u64>,
    /// Seconds a store may miss heartbeats before its replicas are rebuilt elsewhere.
    /// Default: 1800.
    #[arg(long)]
    pub max_store_down_secs: Option<u64>,
    /// Voters per range where no placement rule says otherwise. Default: 3.
    #[arg(long)]
    pub max_replicas: Option<u32>,
    /// Label levels replicas spread over, highest first (comma-separated). Default:
    /// `region,zone,host`.
    #[arg(long, value_delimiter = ',')]
    pub location_labels: Vec<String>,
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

/// The keys of a placement member's config file (the flags' names with `_`).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PlacementFile {
    id: Option<u64>,
    cluster_id: Option<u64>,
    data_dir: Option<PathBuf>,
    listen: Option<SocketAddr>,
    advertise_addr: Option<SocketAddr>,
    #[serde(default)]
    members: Vec<String>,
    join: Option<bool>,
    admin_addr: Option<SocketAddr>,
    tick_ms: Option<u64>,
    max_store_down_secs: Option<u64>,
    max_replicas: Option<u32>,
    #[serde(default)]
    location_labels: Vec<String>,
    insecure_dev_certs: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
}

/// A member's settings: flags over the config file over defaults.
#[derive(Debug)]
struct PlacementSettings {
    id: u64,
    cluster_id: u64,
    data_dir: PathBuf,
    listen: SocketAddr,
    advertise_addr: Option<SocketAddr>,
    members: Vec<(u64, SocketAddr)>,
    join: bool,
    admin_addr: Option<SocketAddr>,
    tick_ms: u64,
    max_store_down_secs: u64,
    max_replicas: u32,
    location_labels: Vec<String>,
    tls: TlsSource,
}

impl PlacementSettings {
    /// Merges the flags with the config file they name.
    fn resolve(args: &PlacementArgs) -> Result<Self> {
        let file: PlacementFile = match &args.config {
            Some(path) => config::load_file(path)?,
            None => PlacementFile::default(),
        };
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
        let members = if args.members.is_empty() {
            config::parse_node_addrs("members", &file.members)?
        } else {
            args.members.clone()
        };
        let location_labels = if !args.location_labels.is_empty() {
            args.location_labels.clone()
        } else if !file.location_labels.is_empty() {
            file.location_labels
        } else {
            vec!["region".to_owned(), "zone".to_owned(), "host".to_owned()]
        };
        let settings = Self {
            id: config::required(args.id.or(file.id), "id")?,
            cluster_id: config::required(args.cluster_id.or(file.cluster_id), "cluster-id")?,
            data_dir: config::required(args.data_dir.clone().or(file.data_dir), "data-dir")?,
            listen: config::required(args.listen.or(file.listen), "listen")?,
            advertise_addr: args.advertise_addr.or(file.advertise_addr),
            members,
            join: args.join || file.join.unwrap_or(false),
            admin_addr: args.admin_addr.or(file.admin_addr),
            tick_ms: args.tick_ms.or(file.tick_ms).unwrap_or(100),
            max_store_down_secs: args
                .max_store_down_secs
                .or(file.max_store_down_secs)
                .unwrap_or(1_800),
            max_replicas: args.max_replicas.or(file.max_replicas).unwrap_or(3),
            location_labels,
            tls: tls.source()?,
        };
        if settings.id == 0 || settings.cluster_id == 0 {
            bail!("--id and --cluster-id must be positive");
        }
        for (index, (id, _)) in settings.members.iter().enumerate() {
            if settings.members[..index].iter().any(|(other, _)| other == id) {
                bail!("--member {id}=… is given twice");
            }
        }
        Ok(settings)
    }
}

/// Runs the member until SIGINT or SIGTERM.
pub fn run(args: &PlacementArgs) -> Result<()> {
    let args = &PlacementSettings::resolve(args)?;
    let mut config = NodeConfig::new(NodeId(args.id), args.cluster_id);
    config.tick_ms = args.tick_ms;
    config.schedule.max_store_down_ms = args.max_store_down_secs.saturating_mul(1_000);
    config.schedule.max_replicas = args.max_replicas;
    config.schedule.location_labels.clone_from(&args.location_labels);
    config.validate()?;
    let metrics = crate::admin::install_recorder()?;
    let advertise = args.advertise_addr.unwrap_or(args.listen);
    if advertise.ip().is_unspecified() {
        bail!("--listen is a wildcard address: give --advertise-addr");
    }
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let (raft, kv) = tessera_engine_rocks::open(&args.data_dir, &EngineOptions::default())
        .with_context(|| format!("opening the engines in {}", args.data_dir.display()))?;
    let holds_group = tessera_placement::state::ClusterState::load(&kv)?.is_some();
    if !holds_group && !args.join {
        let members: Vec<PlacementMember> = args
            .members
            .iter()
            .map(|(id, addr)| PlacementMember {
                node_id: NodeId(*id),
                address: addr.to_string(),
                voter: true,
            })
            .collect();
        if !members.iter().any(|member| member.node_id == NodeId(args.id)) {
            bail!(
                "--member must list every member of the new group, this one ({}) included",
                args.id
            );
        }
        bootstrap_group(&raft, &kv, args.cluster_id, &members)?;
        tracing::info!(
            node = args.id,
            members = members.len(),
            "bootstrapped a new placement group"
        );
    } else if holds_group && args.join {
        tracing::info!(
            node = args.id,
            "--join ignored: the data directory already holds the group"
        );
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let tls = NodeTls::load(&args.tls, &format!("node-{}", args.id))
        .context("loading this node's TLS material")?;
    let transport_config =
        member_transport_config(NodeId(args.id), args.cluster_id, args.listen, tls);
    let handler = Arc::new(PlacementRpcHandler::new());
    let transport = Arc::new(
        runtime
            .block_on(Transport::start(transport_config, handler.clone()))
            .with_context(|| format!("starting the transport on --listen {}", args.listen))?,
    );
    for (id, addr) in &args.members {
        if *id != args.id {
            transport.set_peer(NodeId(*id), *addr);
        }
    }
    let net = TransportNodeNetwork::new(transport.clone());
    let clock = Box::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
    });
    let node = PlacementNode::open(config, raft, kv, net, clock)?;
    let system = PlacementSystem::start(node, Duration::from_millis(args.tick_ms), 65_536)?;
    handler.set_node(system.handle());
    let addr = transport.local_addr()?;
    let admin = match args.admin_addr {
        Some(admin_addr) => {
            let source = Arc::new(MemberAdmin { node: system.handle(), address: addr });
            let server = runtime.block_on(AdminServer::start(admin_addr, metrics, source))?;
            println!("tessera placement {} admin on http://{}", args.id, server.local_addr());
            Some(server)
        }
        None => None,
    };
    // The readiness line scripts and tests wait for.
    println!("tessera placement {} ready on {addr}", args.id);
    crate::wait_for_shutdown(&runtime)?;
    tracing::info!(node = args.id, "stopping");
    if let Some(admin) = admin {
        runtime.block_on(admin.shutdown());
    }
    handler.clear_node();
    system.stop();
    if let Ok(transport) = Arc::try_unwrap(transport) {
        runtime.block_on(transport.shutdown(Duration::from_secs(2)));
    }
    Ok(())
}

/// The member as it is now, or `None` when it has stopped or does not answer within 2 s.
async fn inspect(node: &PlacementHandle, with_ranges: bool) -> Option<NodeInspection> {
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let asked = node.inspect(
        with_ranges,
        Box::new(move |inspection| {
            let _ = sender.send(inspection);
        }),
    );
    if !asked {
        return None;
    }
    tokio::time::timeout(Duration::from_secs(2), receiver).await.ok()?.ok()
}

/// What `tessera placement` shows on its admin endpoints.
struct MemberAdmin {
    node: PlacementHandle,
    address: SocketAddr,
}

impl AdminSource for MemberAdmin {
    fn status(&self) -> JsonFuture {
        let node = self.node.clone();
        let address = self.address;
        Box::pin(async move {
            let member = inspect(&node, false).await.ok_or("the member does not answer")?;
            let stats = member.stats;
            Ok(json!({
                "kind": "placement",
                "version": env!("CARGO_PKG_VERSION"),
                "node_id": member.node_id.0,
                "cluster_id": member.cluster_id,
                "address": address.to_string(),
                "bootstrapped": member.bootstrapped,
                "leader": member.leader.map(|leader| leader.0),
                "serving_leader": member.serving,
                "term": member.term,
                "committed": member.committed,
                "applied": member.applied,
                "members": member.members.iter().map(|m| json!({
                    "node_id": m.node_id.0, "address": m.address, "voter": m.voter,
                })).collect::<Vec<_>>(),
                "stores": member.stores.iter().map(|s| json!({
                    "id": s.id.0, "address": s.address, "state": format!("{:?}", s.state),
                    "labels": s.labels.iter().map(|l| format!("{}={}", l.key, l.value)).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
                "ranges": member.range_count,
                "operators_running": member.operators,
                "stats": {
                    "applied": stats.applied,
                    "became_leader": stats.became_leader,
                    "store_heartbeats": stats.store_heartbeats,
                    "range_heartbeats": stats.range_heartbeats,
                    "tso_requests": stats.tso_requests,
                    "snapshots_installed": stats.snapshots_installed,
                },
            }))
        })
    }

    fn ranges(&self) -> JsonFuture {
        let node = self.node.clone();
        Box::pin(async move {
            let member = inspect(&node, true).await.ok_or("the member does not answer")?;
            let ranges: Vec<serde_json::Value> = member
                .ranges
                .iter()
                .map(|d| {
                    json!({
                        "range_id": d.id.0,
                        "start_key": String::from_utf8_lossy(&d.start_key),
                        "end_key": String::from_utf8_lossy(&d.end_key),
                        "epoch": { "conf_ver": d.epoch.conf_ver, "version": d.epoch.version },
                        "replicas": d.replicas.iter().map(|r| json!({
                            "replica_id": r.id.0, "store_id": r.store_id.0,
                            "role": format!("{:?}", r.role),
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            Ok(json!({ "node_id": member.node_id.0, "ranges": ranges }))
        })
    }

    fn health(&self) -> std::result::Result<(), String> {
        let (sender, _receiver) = tokio::sync::oneshot::channel::<()>();
        if self.node.inspect(false, Box::new(move |_| drop(sender))) {
            Ok(())
        } else {
            Err("the member has stopped or its mailbox is full".to_owned())
        }
    }
}
