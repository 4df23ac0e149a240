//! The operator's CLI over the placement driver: `tessera cluster status`,
//! `tessera store list|offline|up|label`, `tessera range list|split|transfer-leader`,
//! `tessera rule list|set|delete`, `tessera operator list|add|cancel`.
//!
//! Tables for people by default, `--json` for scripts. Exit codes: 0 done, 1 the cluster
//! refused or failed (the message says why), 2 bad usage (clap).

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use serde_json::{Value, json};
use tessera_client::placement::PlacementRpc;
use tessera_transport::tls::{NodeTls, TlsSource};
use tessera_transport::{Handler, Transport, TransportConfig};
use tessera_wire::ids::{NodeId, RangeId, StoreId};
use tessera_wire::placement::{
    ConstraintOp, LabelConstraint, OperatorInfo, OperatorStep, PlacementRequest, PlacementResponse,
    PlacementRule, RangeRoute, Store, StoreLabel, StoreState,
};
use tessera_wire::range::ReplicaRole;
use tessera_wire::transport::RaftEnvelope;

use crate::profile::{ConnectArgs, Profile};

/// How long one CLI request may take, retries included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A CLI node: calls, serves nothing.
struct CliNode;

impl Handler for CliNode {
    fn on_raft(&self, _from: NodeId, _envelopes: Vec<RaftEnvelope>) {}
}

/// A connection to the placement driver for one CLI command.
pub struct Connection {
    runtime: tokio::runtime::Runtime,
    rpc: PlacementRpc,
}

impl Connection {
    /// Connects as a fresh client node (a random id in the clients' range).
    ///
    /// # Errors
    /// TLS material or the transport cannot be set up.
    pub fn open(profile: &Profile) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        let node = client_node_id();
        let tls = NodeTls::load(
            &TlsSource::DevGenerated { dir: profile.certs_dir.clone() },
            &format!("client-{node}"),
        )
        .with_context(|| format!("loading TLS material from {}", profile.certs_dir.display()))?;
        let config = TransportConfig::new(
            NodeId(node),
            StoreId(node),
            profile.cluster_id,
            "127.0.0.1:0".parse().context("the loopback address")?,
            tls,
        );
        let transport = Arc::new(
            runtime
                .block_on(Transport::start(config, Arc::new(CliNode)))
                .context("starting the transport")?,
        );
        let members = profile.members()?;
        for (id, addr) in &members {
            transport.set_peer(NodeId(*id), *addr);
        }
        let rpc = PlacementRpc::new(transport, members.iter().map(|(id, _)| NodeId(*id)).collect());
        Ok(Self { runtime, rpc })
    }

    /// Sends `request` to the placement leader.
    ///
    /// # Errors
    /// The driver's refusal or the last failure, as a message.
    pub fn call(&self, request: PlacementRequest) -> Result<PlacementResponse> {
        let what = format!("{request:?}");
        self.runtime
            .block_on(self.rpc.call(request, REQUEST_TIMEOUT))
            .map_err(|error| anyhow::anyhow!("{error}"))
            .with_context(|| {
                format!("placement driver: {}", what.split([' ', '{']).next().unwrap_or(""))
            })
    }
}

/// A client node id: random, in a range no store or placement member uses (above 2^48).
fn client_node_id() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_nanos());
    let mut rng =
        tessera_raft::SplitMix64::new(u64::from(nanos) ^ u64::from(std::process::id()) << 32);
    (1 << 48) | (rng.next_u64() >> 17)
}

/// `tessera cluster …`
#[derive(Debug, clap::Subcommand)]
pub enum ClusterCmd {
    /// The cluster at a glance: placement members, stores, ranges, operators.
    Status {
        /// Where the cluster is.
        #[command(flatten)]
        connect: ConnectArgs,
    },
}

/// `tessera store …`
#[derive(Debug, clap::Subcommand)]
pub enum StoreCmd {
    /// Every store with its state, labels and address.
    List {
        /// Where the cluster is.
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Drain a store: its replicas move away, then it becomes a tombstone.
    Offline {
        /// The store.
        id: u64,
        /// Where the cluster is.
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Cancel an offline that has not finished.
    Up {
        /// The store.
        id: u64,
        /// Where the cluster is.
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Replace a store's labels (`region=eu,zone=a`, highest level first).
    Label {
        /// The store.
        id: u64,
        /// The labels.
        #[arg(value_parser = parse_labels)]
        labels: Vec<StoreLabel>,
        /// Where the cluster is.
        #[command(flatten)]
        connect: ConnectArgs,
    },
}

/// `tessera range …`
#[derive(Debug, clap::Subcommand)]
pub enum RangeCmd {
    /// Ranges in key order with their replicas and leader.
    List {
        /// First key (default: the start of the key space).
        #[arg(long, default_value = "")]
        start: String,
        /// At most this many.
        #[arg(long, default_value_t = 1_000)]
        limit: u32,
        /// Where the cluster is.
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Split the range holding `key` at `key`.
    Split {
        /// The split key (the first key of the new right-hand range).
        key: String,
        /// Where the cluster is.
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Move the leadership of a range to its replica on `to_store`.
    TransferLeader {
        /// The range.
        range: u64,
        /// The store to lead.
        to_store: u64,
        /// Where the cluster is.
        #[command(flatten)]
        connect: ConnectArgs,
    },
}

/// `tessera rule …`
#[derive(Debug, clap::Subcommand)]
pub enum RuleCmd {
    /// Every placement rule.
    List {
        /// Where the cluster is.
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Create or replace a rule.
    Set {
        /// The rule's id.
        id: String,
        /// First key covered.
        #[arg(long)]
        start: String,
        /// End of the span (exclusive; default: the end of the key space).
        #[arg(long, default_value = "")]
        end: String,
        /// Voters per range.
        #[arg(long, default_value_t = 3)]
        voters: u32,
        /// Learners per range.
        #[arg(long, default_value_t = 0)]
        learners: u32,
        /// Voters' stores must have these labels: `key=v1|v2`, or `key!=v` (repeat).
        #[arg(long = "voter", value_parser = parse_constraint)]
        voter_constraints: Vec<LabelConstraint>,
        /// Learners' stores must have these labels (same syntax).
        #[arg(long = "learner", value_parser = parse_constraint)]
        learner_constraints: Vec<LabelConstraint>,
        /// The leader goes to a voter whose store has these labels (same syntax).
        #[arg(long = "leader", value_parser = parse_constraint)]
        leader_preference: Vec<LabelConstraint>,
        /// Where the cluster is.
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Delete a rule.
    Delete {
        /// The rule's id.
        id: String,
        /// Where the cluster is.
        #[command(flatten)]
        connect: ConnectArgs,
    },
}

/// `tessera placement member …`
#[derive(Debug, clap::Subcommand)]
pub enum MemberCmd {
    /// The placement group's members.
    List {
        /// Where the cluster is.
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Add a member (started with `tessera placement --join`): it catches up, then votes.
    Add {
        /// Its node id.
        id: u64,
        /// Its address.
        address: std::net::SocketAddr,
        /// Where the cluster is.
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Remove a member (a failed one, or one being replaced).
    Remove {
        /// Its node id.
        id: u64,
        /// Where the cluster is.
        #[command(flatten)]
        connect: ConnectArgs,
    },
}

/// `tessera operator …`
#[derive(Debug, clap::Subcommand)]
pub enum OperatorCmd {
    /// Running operators, then the latest finished ones.
    List {
        /// Where the cluster is.
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Add an operator by hand.
    Add {
        /// The range.
        range: u64,
        /// Its steps, in order: `add-learner:STORE`, `promote:STORE`, `demote:STORE`,
        /// `remove:STORE`, `transfer-leader:STORE`, `split:KEY`.
        #[arg(required = true, value_parser = parse_step)]
        steps: Vec<OperatorStep>,
        /// Where the cluster is.
        #[command(flatten)]
        connect: ConnectArgs,
    },
    /// Cancel the operator running on a range.
    Cancel {
        /// The range.
        range: u64,
        /// Where the cluster is.
        #[command(flatten)]
        connect: ConnectArgs,
    },
}

/// Every CLI command carries its connection flags.
macro_rules! connect_of {
    ($enum:ident: $($variant:ident),+) => {
        impl $enum {
            /// The connection flags given with the command.
            fn connect(&self) -> &ConnectArgs {
                match self {
                    $(Self::$variant { connect, .. })|+ => connect,
                }
            }
        }
    };
}

connect_of!(ClusterCmd: Status);
connect_of!(StoreCmd: List, Offline, Up, Label);
connect_of!(RangeCmd: List, Split, TransferLeader);
connect_of!(RuleCmd: List, Set, Delete);
connect_of!(OperatorCmd: List, Add, Cancel);
connect_of!(MemberCmd: List, Add, Remove);

fn parse_labels(text: &str) -> Result<StoreLabel, String> {
    let (key, value) =
        text.split_once('=').ok_or_else(|| format!("`{text}`: expected KEY=VALUE"))?;
    if key.is_empty() || value.is_empty() {
        return Err(format!("`{text}`: empty key or value"));
    }
    Ok(StoreLabel { key: key.to_owned(), value: value.to_owned() })
}

fn parse_constraint(text: &str) -> Result<LabelConstraint, String> {
    let (key, op, values) = if let Some((key, values)) = text.split_once("!=") {
        (key, ConstraintOp::NotIn, values)
    } else if let Some((key, values)) = text.split_once('=') {
        (key, ConstraintOp::In, values)
    } else {
        return Err(format!("`{text}`: expected key=v1|v2 or key!=v"));
    };
    let values: Vec<String> =
        values.split('|').filter(|v| !v.is_empty()).map(str::to_owned).collect();
    if key.is_empty() || values.is_empty() {
        return Err(format!("`{text}`: empty key or values"));
    }
    Ok(LabelConstraint { key: key.to_owned(), op, values })
}

fn parse_step(text: &str) -> Result<OperatorStep, String> {
    let (kind, arg) = text.split_once(':').ok_or_else(|| format!("`{text}`: expected KIND:ARG"))?;
    let store = || arg.parse::<u64>().map(StoreId).map_err(|_| format!("`{arg}`: not a store id"));
    Ok(match kind {
        "add-learner" => OperatorStep::AddLearner { store_id: store()? },
        "promote" => OperatorStep::PromoteLearner { store_id: store()? },
        "demote" => OperatorStep::DemoteVoter { store_id: store()? },
        "remove" => OperatorStep::RemoveReplica { store_id: store()? },
        "transfer-leader" => OperatorStep::TransferLeader { to_store: store()? },
        "split" => OperatorStep::Split { keys: vec![Bytes::copy_from_slice(arg.as_bytes())] },
        other => return Err(format!("`{other}`: not a step kind")),
    })
}

/// Prints `value` as JSON or `table` as text.
fn print(args: &ConnectArgs, value: &Value, table: &str) {
    if args.json {
        println!("{value}");
    } else {
        print!("{table}");
    }
}

fn key_text(key: &[u8]) -> String {
    String::from_utf8_lossy(key).into_owned()
}

fn labels_text(labels: &[StoreLabel]) -> String {
    labels
        .iter()
        .map(|label| format!("{}={}", label.key, label.value))
        .collect::<Vec<_>>()
        .join(",")
}

fn constraints_text(constraints: &[LabelConstraint]) -> String {
    constraints
        .iter()
        .map(|c| match c.op {
            ConstraintOp::In => format!("{}={}", c.key, c.values.join("|")),
            ConstraintOp::NotIn => format!("{}!={}", c.key, c.values.join("|")),
            ConstraintOp::Exists => format!("{} exists", c.key),
            ConstraintOp::NotExists => format!("no {}", c.key),
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn store_json(store: &Store) -> Value {
    json!({
        "id": store.id.0, "node_id": store.node_id.0, "address": store.address,
        "labels": store.labels.iter().map(|l| json!({"key": l.key, "value": l.value})).collect::<Vec<_>>(),
        "state": format!("{:?}", store.state),
    })
}

fn route_json(route: &RangeRoute) -> Value {
    let d = &route.descriptor;
    json!({
        "id": d.id.0, "start_key": key_text(&d.start_key), "end_key": key_text(&d.end_key),
        "epoch": {"conf_ver": d.epoch.conf_ver, "version": d.epoch.version},
        "replicas": d.replicas.iter().map(|r| json!({"id": r.id.0, "store": r.store_id.0, "role": format!("{:?}", r.role)})).collect::<Vec<_>>(),
        "leader_store": route.leader.map(|leader| leader.store_id.0),
    })
}

fn operator_json(op: &OperatorInfo) -> Value {
    json!({
        "id": op.id, "range": op.range.0, "kind": op.kind, "reason": op.reason,
        "steps": op.steps.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>(),
        "current_step": op.current_step, "status": format!("{:?}", op.status), "created_ms": op.created_ms,
    })
}

fn stores_table(stores: &[Store]) -> String {
    let mut out = format!("{:<6} {:<13} {:<24} {}\n", "STORE", "STATE", "ADDRESS", "LABELS");
    for store in stores {
        let _ = writeln!(
            out,
            "{:<6} {:<13} {:<24} {}",
            store.id,
            format!("{:?}", store.state),
            store.address,
            labels_text(&store.labels)
        );
    }
    out
}

fn routes_table(routes: &[RangeRoute]) -> String {
    let mut out = format!(
        "{:<8} {:<16} {:<16} {:<8} {:<24} {}\n",
        "RANGE", "START", "END", "EPOCH", "REPLICAS (store)", "LEADER"
    );
    for route in routes {
        let d = &route.descriptor;
        let replicas = d
            .replicas
            .iter()
            .map(|r| match r.role {
                ReplicaRole::Voter => r.store_id.to_string(),
                role => format!("{}({role:?})", r.store_id),
            })
            .collect::<Vec<_>>()
            .join(",");
        let _ = writeln!(
            out,
            "{:<8} {:<16} {:<16} {:<8} {:<24} {}",
            d.id,
            format!("{:?}", key_text(&d.start_key)),
            if d.end_key.is_empty() {
                "+inf".to_owned()
            } else {
                format!("{:?}", key_text(&d.end_key))
            },
            format!("{}/{}", d.epoch.conf_ver, d.epoch.version),
            replicas,
            route.leader.map_or_else(|| "-".to_owned(), |leader| leader.store_id.to_string())
        );
    }
    out
}

fn operators_table(operators: &[OperatorInfo]) -> String {
    let mut out = format!(
        "{:<6} {:<8} {:<16} {:<10} {:<6} {}\n",
        "ID", "RANGE", "KIND", "STATUS", "STEP", "REASON"
    );
    for op in operators {
        let _ = writeln!(
            out,
            "{:<6} {:<8} {:<16} {:<10} {:<6} {}",
            op.id,
            op.range,
            op.kind,
            format!("{:?}", op.status),
            format!("{}/{}", op.current_step, op.steps.len()),
            op.reason
        );
    }
    out
}

fn unexpected(answer: &PlacementResponse) -> anyhow::Error {
    anyhow::anyhow!("unexpected answer from the placement driver: {answer:?}")
}

fn all_routes(conn: &Connection, start: &str, limit: u32) -> Result<Vec<RangeRoute>> {
    match conn.call(PlacementRequest::ScanRanges {
        start_key: Bytes::copy_from_slice(start.as_bytes()),
        end_key: Bytes::new(),
        limit,
    })? {
        PlacementResponse::ScanRanges { routes } => Ok(routes),
        other => Err(unexpected(&other)),
    }
}

/// `tessera cluster …`
///
/// # Errors
/// The cluster cannot be reached or refuses.
pub fn cluster(command: &ClusterCmd) -> Result<()> {
    let args = command.connect();
    let conn = Connection::open(&args.resolve()?)?;
    match command {
        ClusterCmd::Status { .. } => {
            let PlacementResponse::ClusterStatus { status } =
                conn.call(PlacementRequest::ClusterStatus)?
            else {
                bail!("unexpected answer to ClusterStatus");
            };
            let members = status
                .members
                .iter()
                .map(|m| json!({"id": m.node_id.0, "address": m.address, "voter": m.voter}))
                .collect::<Vec<_>>();
            let value = json!({
                "cluster_id": status.cluster_id, "bootstrapped": status.bootstrapped,
                "placement_leader": status.leader.0, "placement_members": members,
                "stores": status.stores.iter().map(store_json).collect::<Vec<_>>(),
                "ranges": status.range_count, "running_operators": status.running_operators,
                "gc_safe_point": status.gc_safe_point.0,
            });
            let up = status.stores.iter().filter(|s| s.state == StoreState::Up).count();
            let mut table = format!(
                "cluster {}  {}\nplacement leader {} of {} members: {}\nstores {} ({} up), ranges {}, running operators {}\n\n",
                status.cluster_id,
                if status.bootstrapped { "bootstrapped" } else { "NOT bootstrapped" },
                status.leader,
                status.members.len(),
                status
                    .members
                    .iter()
                    .map(|m| format!("{}@{}", m.node_id, m.address))
                    .collect::<Vec<_>>()
                    .join(" "),
                status.stores.len(),
                up,
                status.range_count,
                status.running_operators,
            );
            table.push_str(&stores_table(&status.stores));
            print(args, &value, &table);
        }
    }
    Ok(())
}

/// `tessera store …`
///
/// # Errors
/// The cluster cannot be reached or refuses.
pub fn store(command: &StoreCmd) -> Result<()> {
    let args = command.connect();
    let conn = Connection::open(&args.resolve()?)?;
    let (value, table) = match command {
        StoreCmd::List { .. } => {
            let PlacementResponse::GetAllStores { stores } =
                conn.call(PlacementRequest::GetAllStores { exclude_tombstones: false })?
            else {
                bail!("unexpected answer to GetAllStores");
            };
            (json!(stores.iter().map(store_json).collect::<Vec<_>>()), stores_table(&stores))
        }
        StoreCmd::Offline { id, .. } | StoreCmd::Up { id, .. } => {
            let state = if matches!(command, StoreCmd::Offline { .. }) {
                StoreState::Offline
            } else {
                StoreState::Up
            };
            conn.call(PlacementRequest::SetStoreState { store_id: StoreId(*id), state })?;
            (
                json!({"store": id, "state": format!("{state:?}")}),
                format!("store {id} is now {state:?}\n"),
            )
        }
        StoreCmd::Label { id, labels, .. } => {
            conn.call(PlacementRequest::SetStoreLabels {
                store_id: StoreId(*id),
                labels: labels.clone(),
            })?;
            (
                json!({"store": id, "labels": labels_text(labels)}),
                format!("store {id} labels: {}\n", labels_text(labels)),
            )
        }
    };
    print(args, &value, &table);
    Ok(())
}

/// `tessera range …`
///
/// # Errors
/// The cluster cannot be reached or refuses.
pub fn range(command: &RangeCmd) -> Result<()> {
    let args = command.connect();
    let conn = Connection::open(&args.resolve()?)?;
    let (value, table) = match command {
        RangeCmd::List { start, limit, .. } => {
            let routes = all_routes(&conn, start, *limit)?;
            (json!(routes.iter().map(route_json).collect::<Vec<_>>()), routes_table(&routes))
        }
        RangeCmd::Split { key, .. } => {
            let PlacementResponse::GetRangeByKey { route } =
                conn.call(PlacementRequest::GetRangeByKey {
                    key: Bytes::copy_from_slice(key.as_bytes()),
                })?
            else {
                bail!("unexpected answer to GetRangeByKey");
            };
            if route.descriptor.start_key.as_ref() == key.as_bytes() {
                bail!("range {} already starts at {key:?}", route.descriptor.id);
            }
            let steps =
                vec![OperatorStep::Split { keys: vec![Bytes::copy_from_slice(key.as_bytes())] }];
            let operator = add_operator(&conn, route.descriptor.id, steps)?;
            (
                operator_json(&operator),
                format!(
                    "operator {} will split range {} at {key:?}\n",
                    operator.id, operator.range
                ),
            )
        }
        RangeCmd::TransferLeader { range, to_store, .. } => {
            let steps = vec![OperatorStep::TransferLeader { to_store: StoreId(*to_store) }];
            let operator = add_operator(&conn, RangeId(*range), steps)?;
            (
                operator_json(&operator),
                format!(
                    "operator {} will move range {range}'s leader to store {to_store}\n",
                    operator.id
                ),
            )
        }
    };
    print(args, &value, &table);
    Ok(())
}

fn add_operator(
    conn: &Connection,
    range: RangeId,
    steps: Vec<OperatorStep>,
) -> Result<OperatorInfo> {
    match conn.call(PlacementRequest::AddOperator { range, steps })? {
        PlacementResponse::AddOperator { operator } => Ok(operator),
        other => Err(unexpected(&other)),
    }
}

/// `tessera rule …`
///
/// # Errors
/// The cluster cannot be reached or refuses.
pub fn rule(command: &RuleCmd) -> Result<()> {
    let args = command.connect();
    let conn = Connection::open(&args.resolve()?)?;
    let (value, table) = match command {
        RuleCmd::List { .. } => {
            let PlacementResponse::ListRules { rules } = conn.call(PlacementRequest::ListRules)?
            else {
                bail!("unexpected answer to ListRules");
            };
            let mut table = format!(
                "{:<12} {:<16} {:<16} {:<7} {:<9} {}\n",
                "RULE", "START", "END", "VOTERS", "LEARNERS", "CONSTRAINTS"
            );
            let mut values = Vec::new();
            for rule in &rules {
                let constraints = format!(
                    "voters [{}] learners [{}] leader [{}]",
                    constraints_text(&rule.voter_constraints),
                    constraints_text(&rule.learner_constraints),
                    constraints_text(&rule.leader_preference)
                );
                let _ = writeln!(
                    table,
                    "{:<12} {:<16} {:<16} {:<7} {:<9} {}",
                    rule.id,
                    format!("{:?}", key_text(&rule.start_key)),
                    if rule.end_key.is_empty() {
                        "+inf".to_owned()
                    } else {
                        format!("{:?}", key_text(&rule.end_key))
                    },
                    rule.voters,
                    rule.learners,
                    constraints
                );
                values.push(json!({"id": rule.id, "start_key": key_text(&rule.start_key), "end_key": key_text(&rule.end_key), "voters": rule.voters, "learners": rule.learners, "constraints": constraints}));
            }
            (json!(values), table)
        }
        RuleCmd::Set {
            id,
            start,
            end,
            voters,
            learners,
            voter_constraints,
            learner_constraints,
            leader_preference,
            ..
        } => {
            let rule = PlacementRule {
                id: id.clone(),
                start_key: Bytes::copy_from_slice(start.as_bytes()),
                end_key: Bytes::copy_from_slice(end.as_bytes()),
                voters: *voters,
                learners: *learners,
                voter_constraints: voter_constraints.clone(),
                learner_constraints: learner_constraints.clone(),
                leader_preference: leader_preference.clone(),
                location_labels: Vec::new(),
            };
            conn.call(PlacementRequest::PutRule { rule })?;
            (json!({"rule": id, "stored": true}), format!("rule {id} stored\n"))
        }
        RuleCmd::Delete { id, .. } => {
            conn.call(PlacementRequest::DeleteRule { id: id.clone() })?;
            (json!({"rule": id, "deleted": true}), format!("rule {id} deleted\n"))
        }
    };
    print(args, &value, &table);
    Ok(())
}

/// `tessera placement member …`
///
/// # Errors
/// The cluster cannot be reached or refuses.
pub fn member(command: &MemberCmd) -> Result<()> {
    let args = command.connect();
    let conn = Connection::open(&args.resolve()?)?;
    let (value, table) = match command {
        MemberCmd::List { .. } => {
            let PlacementResponse::ClusterStatus { status } =
                conn.call(PlacementRequest::ClusterStatus)?
            else {
                bail!("unexpected answer to ClusterStatus");
            };
            let mut table =
                format!("{:<8} {:<24} {:<8} {}\n", "MEMBER", "ADDRESS", "VOTER", "LEADER");
            for m in &status.members {
                let _ = writeln!(
                    table,
                    "{:<8} {:<24} {:<8} {}",
                    m.node_id,
                    m.address,
                    m.voter,
                    if m.node_id == status.leader { "*" } else { "" }
                );
            }
            let value = json!(status
                .members
                .iter()
                .map(|m| json!({"id": m.node_id.0, "address": m.address, "voter": m.voter, "leader": m.node_id == status.leader}))
                .collect::<Vec<_>>());
            (value, table)
        }
        MemberCmd::Add { id, address, .. } => {
            conn.call(PlacementRequest::AddMember {
                node_id: NodeId(*id),
                address: address.to_string(),
            })?;
            (
                json!({"member": id, "added": true}),
                format!("member {id} added; it votes once caught up\n"),
            )
        }
        MemberCmd::Remove { id, .. } => {
            conn.call(PlacementRequest::RemoveMember { node_id: NodeId(*id) })?;
            (json!({"member": id, "removed": true}), format!("member {id} removed\n"))
        }
    };
    print(args, &value, &table);
    Ok(())
}

/// `tessera operator …`
///
/// # Errors
/// The cluster cannot be reached or refuses.
pub fn operator(command: &OperatorCmd) -> Result<()> {
    let args = command.connect();
    let conn = Connection::open(&args.resolve()?)?;
    let (value, table) = match command {
        OperatorCmd::List { .. } => {
            let PlacementResponse::ListOperators { operators } =
                conn.call(PlacementRequest::ListOperators)?
            else {
                bail!("unexpected answer to ListOperators");
            };
            (
                json!(operators.iter().map(operator_json).collect::<Vec<_>>()),
                operators_table(&operators),
            )
        }
        OperatorCmd::Add { range, steps, .. } => {
            let operator = add_operator(&conn, RangeId(*range), steps.clone())?;
            (operator_json(&operator), operators_table(&[operator]))
        }
        OperatorCmd::Cancel { range, .. } => {
            conn.call(PlacementRequest::CancelOperator { range: RangeId(*range) })?;
            (
                json!({"range": range, "cancelled": true}),
                format!("operator on range {range} cancelled\n"),
            )
        }
    };
    print(args, &value, &table);
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_or_say_what_is_wrong() {
        assert_eq!(
            parse_constraint("region=eu|us").unwrap(),
            LabelConstraint {
                key: "region".into(),
                op: ConstraintOp::In,
                values: vec!["eu".into(), "us".into()]
            }
        );
        assert_eq!(parse_constraint("zone!=a").unwrap().op, ConstraintOp::NotIn);
        assert!(parse_constraint("zone").unwrap_err().contains("expected"));
        assert!(parse_constraint("=a").is_err());
        assert_eq!(
            parse_step("transfer-leader:3").unwrap(),
            OperatorStep::TransferLeader { to_store: StoreId(3) }
        );
        assert_eq!(
            parse_step("split:k").unwrap(),
            OperatorStep::Split { keys: vec![Bytes::from_static(b"k")] }
        );
        assert!(parse_step("remove:x").unwrap_err().contains("not a store id"));
        assert!(parse_step("jump:1").unwrap_err().contains("not a step kind"));
        assert!(parse_labels("region").is_err());
        assert!(client_node_id() >= 1 << 48);
    }
}
