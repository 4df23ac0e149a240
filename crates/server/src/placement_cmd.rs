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

use anyhow::{Context, Result, bail};
use tessera_engine_rocks::EngineOptions;
use tessera_placement::{
    NodeConfig, PlacementNode, PlacementRpcHandler, PlacementSystem, TransportNodeNetwork,
    bootstrap_group, member_transport_config,
};
use tessera_transport::Transport;
use tessera_transport::tls::{NodeTls, TlsSource};
use tessera_wire::ids::NodeId;
use tessera_wire::placement::PlacementMember;

/// Arguments of `tessera placement`.
#[derive(Debug, clap::Args)]
pub struct PlacementArgs {
    /// This member's node id (distinct from every store id).
    #[arg(long)]
    pub id: u64,
    /// The cluster's id; a data directory of another cluster is refused.
    #[arg(long)]
    pub cluster_id: u64,
    /// Where the member keeps its RocksDB instances.
    #[arg(long)]
    pub data_dir: PathBuf,
    /// UDP address the QUIC transport listens on.
    #[arg(long)]
    pub listen: SocketAddr,
    /// The address other nodes reach this member at. Default: the bound --listen address.
    #[arg(long)]
    pub advertise_addr: Option<SocketAddr>,
    /// A member of the group: `ID=ADDR`, this one included. Repeat for each.
    #[arg(long = "member", value_parser = parse_member)]
    pub members: Vec<(u64, SocketAddr)>,
    /// Join a running group (empty data directory only) instead of creating one.
    #[arg(long)]
    pub join: bool,
    /// Development TLS: the cluster CA and node certificates are generated in this
    /// directory (shared by all nodes of the cluster). Insecure by design.
    #[arg(long)]
    pub insecure_dev_certs: PathBuf,
    /// Milliseconds per Raft tick.
    #[arg(long, default_value_t = 100)]
    pub tick_ms: u64,
    /// Seconds a store may miss heartbeats before its replicas are rebuilt elsewhere.
    #[arg(long, default_value_t = 1_800)]
    pub max_store_down_secs: u64,
    /// Voters per range where no placement rule says otherwise.
    #[arg(long, default_value_t = 3)]
    pub max_replicas: u32,
    /// Label levels replicas spread over, highest first (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "region,zone,host")]
    pub location_labels: Vec<String>,
}

fn parse_member(text: &str) -> Result<(u64, SocketAddr), String> {
    let (id, addr) = text.split_once('=').ok_or_else(|| format!("`{text}`: expected ID=ADDR"))?;
    let id = id.parse().map_err(|_| format!("`{id}`: not a node id"))?;
    let addr = addr.parse().map_err(|_| format!("`{addr}`: not a socket address"))?;
    Ok((id, addr))
}

/// Runs the member until SIGINT or SIGTERM.
pub fn run(args: &PlacementArgs) -> Result<()> {
    if args.id == 0 || args.cluster_id == 0 {
        bail!("--id and --cluster-id must be positive");
    }
    let mut config = NodeConfig::new(NodeId(args.id), args.cluster_id);
    config.tick_ms = args.tick_ms;
    config.schedule.max_store_down_ms = args.max_store_down_secs.saturating_mul(1_000);
    config.schedule.max_replicas = args.max_replicas;
    config.schedule.location_labels.clone_from(&args.location_labels);
    config.validate()?;
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
    let tls = NodeTls::load(
        &TlsSource::DevGenerated { dir: args.insecure_dev_certs.clone() },
        &format!("node-{}", args.id),
    )?;
    let transport_config =
        member_transport_config(NodeId(args.id), args.cluster_id, args.listen, tls);
    let handler = Arc::new(PlacementRpcHandler::new());
    let transport = Arc::new(
        runtime
            .block_on(Transport::start(transport_config, handler.clone()))
            .context("starting the transport")?,
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
    // The readiness line scripts and tests wait for.
    println!("tessera placement {} ready on {addr}", args.id);
    crate::wait_for_shutdown(&runtime)?;
    tracing::info!(node = args.id, "stopping");
    handler.clear_node();
    system.stop();
    if let Ok(transport) = Arc::try_unwrap(transport) {
        runtime.block_on(transport.shutdown(Duration::from_secs(2)));
    }
    Ok(())
}
