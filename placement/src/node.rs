//! One member of the placement group: its Raft replica, the replicated [`ClusterState`],
//! and — on the leader — the timestamp oracle, the id allocator's window, what heartbeats
//! say about stores and ranges, and the scheduler's operators.
//!
//! [`PlacementNode`] is single-threaded and deterministic given its clock: a test drives it
//! step by step (`on_*`, [`PlacementNode::tick`], [`PlacementNode::poll`]); [`crate::system`]
//! runs it on a thread behind a mailbox for the product.
//!
//! Reads are answered by the leader from its state once it has applied an entry of its own
//! term (so it holds everything committed before it) and while its lease holds; followers
//! answer `NotPlacementLeader` with the leader they know.

use std::collections::{BTreeMap, HashMap, VecDeque};

use bytes::Bytes;
use tessera_engine::codec::ApplyState;
use tessera_engine::{
    KvBatch, KvEngine, RaftLogBatch, RaftLogEngine, RaftLogState, RangeLogStorage,
};
use tessera_raft::{
    ConfChange, ConfChangeStep, Config as RaftConfig, Entry, EntryKind, HardState, LogIndex,
    Message, RawNode, ReplicaId, Role, Snapshot, SnapshotMetadata, Term,
};
use tessera_wire::errors::RpcError;
use tessera_wire::ids::{NodeId, RangeId, StoreId};
use tessera_wire::placement::{
    ClusterStatus, OperatorInfo, PlacementMember, PlacementRequest, PlacementResponse,
    RangeHeartbeat, RangeRoute, SplitIds, StoreState, StoreStats,
};
use tessera_wire::range::RangeDescriptor;
use tessera_wire::timestamp::Timestamp;
use tessera_wire::transport::RaftEnvelope;

use crate::error::{PlacementError, Result};
use crate::schedule::{
    self, ClusterView, OperatorController, RangeView, ScheduleConfig, StoreView,
};
use crate::state::{Applied, ClusterState, Command};
use crate::tso::{Tso, TsoWait};

/// The placement group's Raft log id inside a member's engines.
pub const PLACEMENT_GROUP: RangeId = RangeId(1);
/// Term and index the group's log starts at on bootstrap.
const INITIAL_INDEX: LogIndex = LogIndex(5);
const INITIAL_TERM: Term = Term(5);
/// Ids taken from the persisted bound at a time.
const ID_BATCH: u64 = 1_000;
/// Operators and requests waiting for a leader to become ready give up after this many
/// ticks.
const WAIT_TICKS_MAX: u64 = 50;

/// Answers a placement request.
pub type Responder = Box<dyn FnOnce(Result<PlacementResponse, RpcError>) + Send>;

/// How a placement node reaches the other members.
pub trait NodeNetwork: Send {
    /// Sends a Raft message to member `to` (best effort; Raft retries).
    fn send(&mut self, to: NodeId, envelope: RaftEnvelope);
    /// Sends what was queued (called after each Ready).
    fn flush(&mut self) {}
    /// A tick passed (a transport that gathers heartbeats per tick sends them now).
    fn tick(&mut self) {}
    /// Member `node` is reached at `address` (from the replicated member list: at open and
    /// whenever a member is added).
    fn set_member_address(&mut self, node: NodeId, address: &str) {
        let _ = (node, address);
    }
}

/// A placement node's settings.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This member.
    pub node_id: NodeId,
    /// The cluster.
    pub cluster_id: u64,
    /// Milliseconds per tick.
    pub tick_ms: u64,
    /// Election timeout in ticks (the lower bound; Raft draws from `[e, 2e)`).
    pub election_ticks: u32,
    /// Heartbeat interval in ticks.
    pub heartbeat_ticks: u32,
    /// A scheduling pass every this many ticks on the leader.
    pub schedule_every_ticks: u64,
    /// The log is truncated once this many entries are applied past its start.
    pub log_compact_entries: u64,
    /// The scheduler's settings.
    pub schedule: ScheduleConfig,
    /// Seed of the election-timeout jitter (each member its own).
    pub seed: u64,
}

impl NodeConfig {
    /// Defaults for member `node_id` of `cluster_id`: 100 ms ticks, election after 1–2 s,
    /// a scheduling pass every second, truncation every 10,000 entries.
    #[must_use]
    pub fn new(node_id: NodeId, cluster_id: u64) -> Self {
        Self {
            node_id,
            cluster_id,
            tick_ms: 100,
            election_ticks: 10,
            heartbeat_ticks: 2,
            schedule_every_ticks: 10,
            log_compact_entries: 10_000,
            schedule: ScheduleConfig::default(),
            // Not `id * golden ratio`: SplitMix64 steps its state by that constant, so members
            // seeded that way draw the same timeouts one draw apart and can split every vote.
            seed: tessera_raft::SplitMix64::new(node_id.0).next_u64(),
        }
    }

    /// Checks the settings.
    ///
    /// # Errors
    /// [`PlacementError::Config`] naming the mistake.
    pub fn validate(&self) -> Result<()> {
        let bad = |reason: &str| Err(PlacementError::Config(reason.to_owned()));
        if self.node_id.0 == 0 || self.cluster_id == 0 {
            return bad("node id and cluster id must be positive");
        }
        if self.tick_ms == 0 || self.schedule_every_ticks == 0 || self.log_compact_entries == 0 {
            return bad("tick_ms, schedule_every_ticks and log_compact_entries must be positive");
        }
        if self.election_ticks <= self.heartbeat_ticks + 1 {
            return bad("election_ticks must exceed heartbeat_ticks + 1");
        }
        Ok(())
    }
}

/// What a committed proposal answers.
enum Waiting {
    /// Answer `Ok(response)` (or the command's refusal).
    Answer(Responder, PlacementResponse),
    /// Answer with the GC safe point in force.
    GcSafePoint(Responder),
    /// The id bound this leader asked for.
    IdBound,
    /// The timestamp bound this leader asked for.
    TsoBound(u64),
    /// A membership change; answer `AddMember`/`RemoveMember`.
    Member(Responder, PlacementResponse),
    /// Nobody waits.
    Nobody,
}

struct Proposal {
    index: LogIndex,
    term: Term,
    waiting: Waiting,
}

/// A request parked until the leader can serve it (its first entry applied, an id or
/// timestamp bound committed).
struct Parked {
    request: PlacementRequest,
    respond: Responder,
    since_tick: u64,
}

/// What the leader knows of a range beyond its descriptor, from heartbeats.
#[derive(Debug, Clone)]
struct RangeLive {
    heartbeat: RangeHeartbeat,
}

/// Counters for tests and metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NodeStats {
    /// Entries applied.
    pub applied: u64,
    /// Times this node became leader.
    pub became_leader: u64,
    /// Store heartbeats handled.
    pub store_heartbeats: u64,
    /// Range heartbeats handled.
    pub range_heartbeats: u64,
    /// Timestamp requests served.
    pub tso_requests: u64,
    /// Snapshots installed.
    pub snapshots_installed: u64,
}

/// A placement member at one moment, for its admin endpoints.
#[derive(Debug, Clone)]
pub struct NodeInspection {
    /// This member.
    pub node_id: NodeId,
    /// The cluster.
    pub cluster_id: u64,
    /// Whether the first store bootstrapped the cluster.
    pub bootstrapped: bool,
    /// The leader this member knows of.
    pub leader: Option<NodeId>,
    /// Whether this member leads and serves.
    pub serving: bool,
    /// Its Raft term.
    pub term: u64,
    /// Its commit index.
    pub committed: u64,
    /// Its applied index.
    pub applied: u64,
    /// The group's members as applied here.
    pub members: Vec<PlacementMember>,
    /// The stores as applied here.
    pub stores: Vec<tessera_wire::placement::Store>,
    /// How many ranges the directory holds.
    pub range_count: usize,
    /// The range directory (empty unless asked for).
    pub ranges: Vec<RangeDescriptor>,
    /// Operators in flight (leader only).
    pub operators: usize,
    /// Counters.
    pub stats: NodeStats,
}

/// One member of the placement group.
pub struct PlacementNode<R: RaftLogEngine, K: KvEngine, N: NodeNetwork> {
    config: NodeConfig,
    raw: RawNode<RangeLogStorage<R>>,
    raft_engine: R,
    kv: K,
    net: N,
    clock: Box<dyn FnMut() -> u64 + Send>,
    state: ClusterState,
    applied: ApplyState,
    proposals: VecDeque<Proposal>,
    parked: Vec<Parked>,
    ticks: u64,
    /// The term in which this node leads and has applied an entry of its own; `None`
    /// while it cannot serve.
    ready_term: Option<Term>,
    tso: Option<Tso>,
    /// A leadership confirmation (read index) is in flight to renew the lease.
    lease_renewing: bool,
    /// Confirmations asked so far (their read-index contexts).
    lease_rounds: u64,
    /// The leader's id window `[next, bound)`.
    id_next: u64,
    id_raising: bool,
    store_live: HashMap<StoreId, (StoreStats, u64)>,
    range_live: HashMap<RangeId, RangeLive>,
    operators: OperatorController,
    stats: NodeStats,
}

impl<R: RaftLogEngine, K: KvEngine, N: NodeNetwork> std::fmt::Debug for PlacementNode<R, K, N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlacementNode")
            .field("node", &self.config.node_id)
            .field("role", &self.raw.raft().role())
            .field("applied", &self.applied.applied_index)
            .field("hard_state", &self.raw.raft().hard_state())
            .field("last_index", &self.raw.last_index())
            .field("last_term", &self.raw.term_at(self.raw.last_index()))
            .finish_non_exhaustive()
    }
}

fn node_of(replica: ReplicaId) -> NodeId {
    NodeId(replica.0)
}

fn replica_of(node: NodeId) -> ReplicaId {
    ReplicaId(node.0)
}

/// Writes the first state of a new placement group into a member's fresh engines: every
/// listed member is a voter. Every member of a new group is bootstrapped with the same list.
///
/// # Errors
/// [`PlacementError::Config`] if the engines already hold a group or the list is bad;
/// engine failures.
pub fn bootstrap_group<R: RaftLogEngine, K: KvEngine>(
    raft_engine: &R,
    kv: &K,
    cluster_id: u64,
    members: &[PlacementMember],
) -> Result<()> {
    if ClusterState::load(kv)?.is_some() || raft_engine.raft_state(PLACEMENT_GROUP)?.is_some() {
        return Err(PlacementError::Config(
            "the data directory already holds a placement group".into(),
        ));
    }
    if members.is_empty() || members.iter().any(|member| member.node_id.0 == 0) {
        return Err(PlacementError::Config("a group needs members with positive ids".into()));
    }
    let mut state = ClusterState::new(cluster_id);
    for member in members {
        state.members.insert(member.node_id, PlacementMember { voter: true, ..member.clone() });
    }
    state.conf_state.voters = members.iter().map(|member| replica_of(member.node_id)).collect();
    let mut raft_batch = raft_engine.batch();
    raft_batch.put_raft_state(
        PLACEMENT_GROUP,
        &RaftLogState {
            hard_state: HardState {
                term: INITIAL_TERM,
                vote: ReplicaId::NONE,
                commit: INITIAL_INDEX,
            },
            truncated_index: INITIAL_INDEX,
            truncated_term: INITIAL_TERM,
        },
    );
    raft_engine.write(&mut raft_batch, true)?;
    let mut batch = kv.batch();
    state.stage_all(&mut batch);
    batch.put_apply_state(
        PLACEMENT_GROUP,
        &ApplyState { applied_index: INITIAL_INDEX, applied_term: INITIAL_TERM },
    );
    kv.write(&mut batch, true)?;
    Ok(())
}

impl<R: RaftLogEngine, K: KvEngine, N: NodeNetwork> PlacementNode<R, K, N> {
    /// Opens the member from its engines. Engines holding no group make a member that
    /// waits to be added by the leader (it receives the state as a snapshot).
    ///
    /// # Errors
    /// Bad configuration, engine failures, corrupt state.
    pub fn open(
        config: NodeConfig,
        raft_engine: R,
        kv: K,
        net: N,
        clock: Box<dyn FnMut() -> u64 + Send>,
    ) -> Result<Self> {
        config.validate()?;
        let state =
            ClusterState::load(&kv)?.unwrap_or_else(|| ClusterState::new(config.cluster_id));
        if state.meta.cluster_id != config.cluster_id {
            return Err(PlacementError::Config(format!(
                "the data directory belongs to cluster {}, not {}",
                state.meta.cluster_id, config.cluster_id
            )));
        }
        let applied = kv.apply_state(PLACEMENT_GROUP)?.unwrap_or_default();
        let storage =
            RangeLogStorage::open(raft_engine.clone(), PLACEMENT_GROUP, state.conf_state.clone())?;
        let mut raft_config = RaftConfig::new(replica_of(config.node_id));
        raft_config.election_ticks = config.election_ticks;
        raft_config.heartbeat_ticks = config.heartbeat_ticks;
        raft_config.lease_ticks = config.election_ticks - 1;
        raft_config.applied = applied.applied_index;
        raft_config.seed = config.seed;
        let raw = RawNode::new(raft_config, storage)?;
        let operators = OperatorController::new(config.schedule.clone());
        let mut net = net;
        for member in state.members.values() {
            if member.node_id != config.node_id {
                net.set_member_address(member.node_id, &member.address);
            }
        }
        Ok(Self {
            config,
            raw,
            raft_engine,
            kv,
            net,
            clock,
            state,
            applied,
            proposals: VecDeque::new(),
            parked: Vec::new(),
            ticks: 0,
            ready_term: None,
            tso: None,
            lease_renewing: false,
            lease_rounds: 0,
            id_next: 0,
            id_raising: false,
            store_live: HashMap::new(),
            range_live: HashMap::new(),
            operators,
            stats: NodeStats::default(),
        })
    }

    /// The settings this member runs with.
    #[must_use]
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// This member.
    #[must_use]
    pub fn node_id(&self) -> NodeId {
        self.config.node_id
    }

    /// The replicated state as applied here.
    #[must_use]
    pub fn state(&self) -> &ClusterState {
        &self.state
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> NodeStats {
        self.stats
    }

    /// Whether this member leads and can serve.
    #[must_use]
    pub fn is_serving_leader(&self) -> bool {
        self.ready_term.is_some() && self.raw.raft().role() == Role::Leader
    }

    /// The leader this member knows of.
    #[must_use]
    pub fn leader(&self) -> Option<NodeId> {
        let leader = self.raw.raft().leader();
        leader.is_some().then(|| node_of(leader))
    }

    /// The answer of a member that is not the serving leader: the leader it knows, with its
    /// address, so that a caller configured before the leader joined can still reach it.
    fn not_leader(&self) -> RpcError {
        let leader = self.leader();
        let address = leader
            .and_then(|leader| self.state.members.get(&leader))
            .map(|member| member.address.clone());
        RpcError::NotPlacementLeader { leader, address }
    }

    /// This member as it is now, with the range directory when `with_ranges`.
    #[must_use]
    pub fn inspect(&self, with_ranges: bool) -> NodeInspection {
        NodeInspection {
            node_id: self.config.node_id,
            cluster_id: self.state.meta.cluster_id,
            bootstrapped: self.state.meta.bootstrapped,
            leader: self.leader(),
            serving: self.is_serving_leader(),
            term: self.raw.raft().term().0,
            committed: self.raw.committed().0,
            applied: self.applied.applied_index.0,
            members: self.state.members.values().cloned().collect(),
            stores: self.state.stores.values().cloned().collect(),
            range_count: self.state.ranges.len(),
            ranges: if with_ranges {
                self.state.ranges.values().cloned().collect()
            } else {
                Vec::new()
            },
            operators: self.operators.running_count(),
            stats: self.stats,
        }
    }

    /// The network, for a test to take messages out of.
    pub fn network_mut(&mut self) -> &mut N {
        &mut self.net
    }

    /// A Raft message from another member.
    pub fn on_raft(&mut self, envelope: RaftEnvelope) {
        if envelope.range != PLACEMENT_GROUP
            || envelope.message.to != replica_of(self.config.node_id)
        {
            tracing::debug!(range = %envelope.range, "message for another group or member dropped");
            return;
        }
        if let Err(error) = self.raw.step(envelope.message) {
            tracing::debug!(%error, "raft message refused");
        }
    }

    /// Advances time by one tick.
    pub fn tick(&mut self) {
        self.ticks += 1;
        self.raw.tick();
        self.net.tick();
        let ticks = self.ticks;
        let (expired, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.parked)
            .into_iter()
            .partition(|parked| ticks - parked.since_tick > WAIT_TICKS_MAX);
        self.parked = kept;
        for parked in expired {
            (parked.respond)(Err(RpcError::Timeout));
        }
        // A confirmation lost with its messages is asked again.
        self.lease_renewing = false;
        if !self.is_serving_leader() {
            return;
        }
        let now = self.now();
        if let Some(bound) = self.tso.as_mut().and_then(|tso| tso.wanted_bound(now)) {
            self.propose(&Command::RaiseTsoBound { to_ms: bound }, Waiting::TsoBound(bound));
        }
        if self.ticks.is_multiple_of(self.config.schedule_every_ticks) {
            self.run_scheduler();
        }
        self.maybe_promote_learners();
        if !self.parked.is_empty() {
            // Some wait for a lease or a bound that may be there now.
            self.serve_parked();
        }
    }

    fn now(&mut self) -> u64 {
        (self.clock)()
    }

    /// A request from a store, client or operator.
    pub fn on_request(&mut self, request: PlacementRequest, respond: Responder) {
        if !self.is_serving_leader() {
            if self.raw.raft().role() == Role::Leader {
                // Leading, but not caught up yet: serve once the first entry applies.
                self.parked.push(Parked { request, respond, since_tick: self.ticks });
                return;
            }
            respond(Err(self.not_leader()));
            return;
        }
        self.serve(request, respond);
    }

    fn not_bootstrapped(&self) -> Option<RpcError> {
        (!self.state.meta.bootstrapped).then_some(RpcError::ClusterNotBootstrapped)
    }

    fn serve(&mut self, request: PlacementRequest, respond: Responder) {
        if is_read(&request) && !self.lease_valid() {
            // A leader cut off from the others may not know yet that a newer one leads and
            // has changed the state: it answers reads only while its lease holds, and
            // otherwise confirms its leadership with a quorum first (as for timestamps).
            self.renew_lease();
            self.park(request, respond);
            return;
        }
        let invalid = |message: String| Err(RpcError::InvalidRequest { message });
        match request {
            PlacementRequest::Bootstrap { store, range } => {
                if self.state.meta.bootstrapped {
                    respond(Err(RpcError::AlreadyBootstrapped));
                    return;
                }
                self.propose(
                    &Command::Bootstrap { store, range },
                    Waiting::Answer(respond, PlacementResponse::Bootstrap),
                );
            }
            PlacementRequest::AllocId { count } => {
                if count == 0 || u64::from(count) > ID_BATCH {
                    respond(invalid(format!("count {count}: between 1 and {ID_BATCH}")));
                    return;
                }
                match self.take_ids(u64::from(count)) {
                    Some(first) => respond(Ok(PlacementResponse::AllocId { first, count })),
                    None => self.park(PlacementRequest::AllocId { count }, respond),
                }
            }
            PlacementRequest::GetTimestamp { count } => {
                let now = self.now();
                if !self.lease_valid() {
                    // A leader without a lease (no recent quorum contact, or too new to be
                    // sure the previous lease ended) must not hand out timestamps a newer
                    // leader may also hand out: it confirms its leadership with a quorum
                    // (which renews the lease) and serves then, or a new leader does.
                    self.renew_lease();
                    self.park(PlacementRequest::GetTimestamp { count }, respond);
                    return;
                }
                let Some(tso) = self.tso.as_mut() else {
                    self.park(PlacementRequest::GetTimestamp { count }, respond);
                    return;
                };
                match tso.allocate(now, count) {
                    Ok(first) => {
                        self.stats.tso_requests += 1;
                        metrics::counter!("tessera_placement_tso_requests_total").increment(1);
                        metrics::histogram!("tessera_placement_tso_batch").record(f64::from(count));
                        respond(Ok(PlacementResponse::GetTimestamp { first, count }));
                    }
                    Err(TsoWait::BadCount) => respond(invalid(format!("timestamp count {count}"))),
                    Err(TsoWait::Bound) => {
                        if let Some(bound) = tso.wanted_bound(now) {
                            self.propose(
                                &Command::RaiseTsoBound { to_ms: bound },
                                Waiting::TsoBound(bound),
                            );
                        }
                        self.park(PlacementRequest::GetTimestamp { count }, respond);
                    }
                }
            }
            PlacementRequest::GetRangeByKey { key } => {
                let route = self.state.range_by_key(&key).map(|range| self.route(range));
                respond(route.map(|route| PlacementResponse::GetRangeByKey { route }).ok_or_else(
                    || {
                        self.not_bootstrapped().unwrap_or(RpcError::InvalidRequest {
                            message: "no range holds the key yet".to_owned(),
                        })
                    },
                ));
            }
            PlacementRequest::GetRangeById { range } => {
                let route = self.state.ranges.get(&range).map(|descriptor| self.route(descriptor));
                respond(
                    route
                        .map(|route| PlacementResponse::GetRangeById { route })
                        .ok_or(RpcError::RangeNotFound { range }),
                );
            }
            PlacementRequest::ScanRanges { start_key, end_key, limit } => {
                let limit = usize::try_from(limit.clamp(1, 10_000)).unwrap_or(10_000);
                let routes = self
                    .state
                    .scan_ranges(&start_key, &end_key, limit)
                    .into_iter()
                    .map(|range| self.route(range))
                    .collect();
                respond(Ok(PlacementResponse::ScanRanges { routes }));
            }
            PlacementRequest::PutStore { store } => {
                if let Some(error) = self.not_bootstrapped() {
                    respond(Err(error));
                    return;
                }
                let now = self.now();
                self.store_live.entry(store.id).or_insert((StoreStats::default(), now));
                self.propose(
                    &Command::PutStore { store },
                    Waiting::Answer(respond, PlacementResponse::PutStore),
                );
            }
            PlacementRequest::GetStore { store_id } => {
                let answer = match self.state.stores.get(&store_id) {
                    Some(store) => {
                        let mut store = store.clone();
                        store.state = self.effective_state(store_id);
                        Ok(PlacementResponse::GetStore {
                            store,
                            stats: self.store_live.get(&store_id).map(|(stats, _)| stats.clone()),
                        })
                    }
                    None => Err(RpcError::StoreNotFound { store: store_id }),
                };
                respond(answer);
            }
            PlacementRequest::GetAllStores { exclude_tombstones } => {
                let stores = self.stores_with_effective_state(exclude_tombstones);
                respond(Ok(PlacementResponse::GetAllStores { stores }));
            }
            PlacementRequest::StoreHeartbeat { stats, labels } => {
                let store_id = stats.store_id;
                let Some(store) = self.state.stores.get(&store_id) else {
                    respond(Err(RpcError::StoreNotFound { store: store_id }));
                    return;
                };
                if store.state == StoreState::Tombstone {
                    respond(Err(RpcError::StoreNotFound { store: store_id }));
                    return;
                }
                if store.labels != labels && !labels.is_empty() {
                    self.propose(&Command::SetStoreLabels { store_id, labels }, Waiting::Nobody);
                }
                let now = self.now();
                self.store_live.insert(store_id, (stats, now));
                self.stats.store_heartbeats += 1;
                metrics::counter!("tessera_placement_heartbeats_total", "kind" => "store")
                    .increment(1);
                respond(Ok(PlacementResponse::StoreHeartbeat));
            }
            PlacementRequest::RangeHeartbeat(heartbeat) => {
                self.on_range_heartbeat(&heartbeat, respond);
            }
            PlacementRequest::AskSplit { descriptor, split_count } => {
                if split_count == 0 || split_count > 64 || descriptor.replicas.len() > 64 {
                    respond(invalid(format!(
                        "split count {split_count} with {} replicas (at most 64 each)",
                        descriptor.replicas.len()
                    )));
                    return;
                }
                let per = 1 + descriptor.replicas.len() as u64;
                let Some(first) = self.take_ids(per * u64::from(split_count)) else {
                    self.park(PlacementRequest::AskSplit { descriptor, split_count }, respond);
                    return;
                };
                let splits = (0..u64::from(split_count))
                    .map(|split| {
                        let base = first + split * per;
                        SplitIds {
                            new_range: RangeId(base),
                            new_replica_ids: (1..per)
                                .map(|offset| ReplicaId(base + offset))
                                .collect(),
                        }
                    })
                    .collect();
                respond(Ok(PlacementResponse::AskSplit { splits }));
            }
            PlacementRequest::ReportSplit { ranges } => {
                if ranges.iter().any(|range| self.state.is_newer(range)) {
                    self.propose(&Command::PutRanges { ranges }, Waiting::Nobody);
                }
                respond(Ok(PlacementResponse::ReportSplit));
            }
            PlacementRequest::ClusterStatus => {
                let status = ClusterStatus {
                    cluster_id: self.state.meta.cluster_id,
                    bootstrapped: self.state.meta.bootstrapped,
                    leader: self.config.node_id,
                    members: self.members(),
                    stores: self.stores_with_effective_state(false),
                    range_count: self.state.ranges.len() as u64,
                    running_operators: self.operators.running_count() as u64,
                    gc_safe_point: Timestamp(self.state.meta.gc_safe_point),
                };
                respond(Ok(PlacementResponse::ClusterStatus { status }));
            }
            PlacementRequest::ListRules => {
                let mut rules: Vec<_> = self.state.rules.values().cloned().collect();
                rules.sort_by(|a, b| a.start_key.cmp(&b.start_key));
                respond(Ok(PlacementResponse::ListRules { rules }));
            }
            PlacementRequest::PutRule { rule } => {
                self.propose(
                    &Command::PutRule { rule },
                    Waiting::Answer(respond, PlacementResponse::PutRule),
                );
            }
            PlacementRequest::DeleteRule { id } => {
                self.propose(
                    &Command::DeleteRule { id },
                    Waiting::Answer(respond, PlacementResponse::DeleteRule),
                );
            }
            PlacementRequest::ListOperators => {
                respond(Ok(PlacementResponse::ListOperators { operators: self.operators.list() }));
            }
            PlacementRequest::AddOperator { range, steps } => {
                let Some(view) = self.range_view(range) else {
                    respond(Err(RpcError::RangeNotFound { range }));
                    return;
                };
                let now = self.now();
                let answer = self
                    .operators
                    .add(&view, "admin", "asked by an operator".to_owned(), steps, now)
                    .map(|operator: OperatorInfo| PlacementResponse::AddOperator { operator })
                    .map_err(|message| RpcError::InvalidRequest { message });
                respond(answer);
            }
            PlacementRequest::CancelOperator { range } => {
                self.operators.cancel(range);
                respond(Ok(PlacementResponse::CancelOperator));
            }
            PlacementRequest::SetStoreState { store_id, state } => {
                if !matches!(state, StoreState::Up | StoreState::Offline) {
                    respond(invalid(format!("a store can be set Up or Offline, not {state:?}")));
                    return;
                }
                self.propose(
                    &Command::SetStoreState { store_id, state },
                    Waiting::Answer(respond, PlacementResponse::SetStoreState),
                );
            }
            PlacementRequest::SetStoreLabels { store_id, labels } => {
                self.propose(
                    &Command::SetStoreLabels { store_id, labels },
                    Waiting::Answer(respond, PlacementResponse::SetStoreLabels),
                );
            }
            PlacementRequest::UpdateGcSafePoint { safe_point } => {
                self.propose(
                    &Command::SetGcSafePoint { safe_point: safe_point.0 },
                    Waiting::GcSafePoint(respond),
                );
            }
            PlacementRequest::AddMember { node_id, address } => {
                self.add_member(node_id, address, respond);
            }
            PlacementRequest::RemoveMember { node_id } => self.remove_member(node_id, respond),
        }
    }

    /// Whether this leader's lease holds (a group of one needs no quorum contact).
    fn lease_valid(&self) -> bool {
        let conf = &self.state.conf_state;
        let alone =
            conf.voters == [replica_of(self.config.node_id)] && conf.voters_outgoing.is_empty();
        self.raw.raft().lease_valid() || (alone && self.raw.raft().role() == Role::Leader)
    }

    /// Asks a quorum to confirm this leader, which renews its lease (the Raft core renews
    /// it on commits and on confirmed read indexes, not on every heartbeat): at most one
    /// round in flight.
    fn renew_lease(&mut self) {
        if self.lease_renewing {
            return;
        }
        self.lease_renewing = true;
        // The context must not be empty: the Raft core matches heartbeat answers to reads
        // by it, and an empty one is an ordinary heartbeat.
        self.lease_rounds += 1;
        let context = Bytes::copy_from_slice(&self.lease_rounds.to_be_bytes());
        if let Err(error) = self.raw.read_index(context) {
            self.lease_renewing = false;
            tracing::debug!(%error, "cannot confirm leadership");
        }
    }

    fn park(&mut self, request: PlacementRequest, respond: Responder) {
        self.parked.push(Parked { request, respond, since_tick: self.ticks });
    }

    fn members(&self) -> Vec<PlacementMember> {
        let conf = &self.state.conf_state;
        self.state
            .members
            .values()
            .map(|member| PlacementMember {
                voter: conf.voters.contains(&replica_of(member.node_id)),
                ..member.clone()
            })
            .collect()
    }

    fn route(&self, range: &RangeDescriptor) -> RangeRoute {
        let leader = self
            .range_live
            .get(&range.id)
            .filter(|live| live.heartbeat.descriptor.epoch == range.epoch)
            .and_then(|live| live.heartbeat.leader);
        RangeRoute { descriptor: range.clone(), leader }
    }

    fn store_view(&self, store_id: StoreId) -> Option<StoreView> {
        let store = self.state.stores.get(&store_id)?;
        let live = self.store_live.get(&store_id);
        Some(StoreView {
            store: store.clone(),
            stats: live.map(|(stats, _)| stats.clone()),
            last_heartbeat_ms: live.map(|(_, at)| *at),
        })
    }

    fn effective_state(&mut self, store_id: StoreId) -> StoreState {
        let now = self.now();
        self.store_view(store_id).map_or(StoreState::Tombstone, |view| {
            schedule::effective_state(&view, now, &self.config.schedule)
        })
    }

    fn stores_with_effective_state(
        &mut self,
        exclude_tombstones: bool,
    ) -> Vec<tessera_wire::placement::Store> {
        let ids: Vec<StoreId> = self.state.stores.keys().copied().collect();
        let mut stores = Vec::new();
        for id in ids {
            let state = self.effective_state(id);
            if exclude_tombstones && state == StoreState::Tombstone {
                continue;
            }
            if let Some(store) = self.state.stores.get(&id) {
                stores.push(tessera_wire::placement::Store { state, ..store.clone() });
            }
        }
        stores
    }

    fn range_view(&self, range: RangeId) -> Option<RangeView> {
        let descriptor = self.state.ranges.get(&range)?;
        let live = self.range_live.get(&range);
        let heartbeat = live.map(|live| &live.heartbeat);
        Some(RangeView {
            descriptor: descriptor.clone(),
            leader: heartbeat.and_then(|heartbeat| heartbeat.leader),
            approximate_size_bytes: heartbeat.map_or(0, |h| h.approximate_size_bytes),
            approximate_keys: heartbeat.map_or(0, |h| h.approximate_keys),
            written_bytes: heartbeat.map_or(0, |h| h.written_bytes),
            read_bytes: heartbeat.map_or(0, |h| h.read_bytes),
            written_keys: heartbeat.map_or(0, |h| h.written_keys),
            read_keys: heartbeat.map_or(0, |h| h.read_keys),
            interval_ms: heartbeat.map_or(0, |h| h.interval_ms),
            pending_replicas: heartbeat.map(|h| h.pending_replicas.clone()).unwrap_or_default(),
            down_replicas: heartbeat.map(|h| h.down_replicas.clone()).unwrap_or_default(),
        })
    }

    fn on_range_heartbeat(&mut self, heartbeat: &RangeHeartbeat, respond: Responder) {
        self.stats.range_heartbeats += 1;
        metrics::counter!("tessera_placement_heartbeats_total", "kind" => "range").increment(1);
        if let Some(error) = self.not_bootstrapped() {
            respond(Err(error));
            return;
        }
        let range = heartbeat.descriptor.id;
        let epoch = heartbeat.descriptor.epoch;
        if self.state.is_newer(&heartbeat.descriptor) {
            self.propose(
                &Command::PutRanges { ranges: vec![heartbeat.descriptor.clone()] },
                Waiting::Nobody,
            );
        } else if let Some(known) = self.state.ranges.get(&range)
            && (known.epoch.version > epoch.version || known.epoch.conf_ver > epoch.conf_ver)
        {
            // A stale leader: no command for it.
            respond(Ok(PlacementResponse::RangeHeartbeat { range, epoch, command: None }));
            return;
        }
        let now = self.now();
        let newer_term =
            self.range_live.get(&range).is_none_or(|live| live.heartbeat.term <= heartbeat.term);
        if newer_term {
            self.range_live.insert(range, RangeLive { heartbeat: heartbeat.clone() });
        }
        let view = RangeView {
            descriptor: heartbeat.descriptor.clone(),
            leader: heartbeat.leader,
            approximate_size_bytes: heartbeat.approximate_size_bytes,
            approximate_keys: heartbeat.approximate_keys,
            written_bytes: heartbeat.written_bytes,
            read_bytes: heartbeat.read_bytes,
            written_keys: heartbeat.written_keys,
            read_keys: heartbeat.read_keys,
            interval_ms: heartbeat.interval_ms,
            pending_replicas: heartbeat.pending_replicas.clone(),
            down_replicas: heartbeat.down_replicas.clone(),
        };
        // Replica ids for new learners come from the id window; when it is empty the step
        // waits for the next heartbeat (the refill is under way).
        let mut window = (self.id_next, self.state.meta.id_bound);
        let command = self.operators.on_range_heartbeat(&view, now, &mut || {
            (window.0 < window.1).then(|| {
                window.0 += 1;
                window.0 - 1
            })
        });
        if window.0 != self.id_next {
            self.id_next = window.0;
        }
        if self.id_next >= self.state.meta.id_bound {
            self.raise_id_bound(1);
        }
        respond(Ok(PlacementResponse::RangeHeartbeat { range, epoch, command }));
    }

    /// `count` fresh ids from the window, asking for a larger bound when it runs low.
    fn take_ids(&mut self, count: u64) -> Option<u64> {
        let bound = self.state.meta.id_bound;
        if self.id_next.saturating_add(count) <= bound {
            let first = self.id_next;
            self.id_next += count;
            if bound - self.id_next < ID_BATCH / 4 {
                self.raise_id_bound(count);
            }
            return Some(first);
        }
        self.raise_id_bound(count);
        None
    }

    fn raise_id_bound(&mut self, count: u64) {
        if self.id_raising {
            return;
        }
        self.id_raising = true;
        let to = self.state.meta.id_bound.max(self.id_next).saturating_add(ID_BATCH.max(count));
        self.propose(&Command::RaiseIdBound { to }, Waiting::IdBound);
    }

    fn add_member(&mut self, node_id: NodeId, address: String, respond: Responder) {
        if node_id.0 == 0 || self.state.members.contains_key(&node_id) {
            respond(Err(RpcError::InvalidRequest {
                message: format!("member {node_id} exists or is 0"),
            }));
            return;
        }
        self.propose(
            &Command::PutMember { member: PlacementMember { node_id, address, voter: false } },
            Waiting::Nobody,
        );
        let change = ConfChange {
            steps: vec![ConfChangeStep::AddLearner(replica_of(node_id))],
            explicit_leave: false,
            context: Bytes::new(),
        };
        self.propose_conf_change(&change, Waiting::Member(respond, PlacementResponse::AddMember));
    }

    fn remove_member(&mut self, node_id: NodeId, respond: Responder) {
        let replica = replica_of(node_id);
        let conf = &self.state.conf_state;
        if !conf.voters.contains(&replica) && !conf.learners.contains(&replica) {
            respond(Err(RpcError::InvalidRequest {
                message: format!("{node_id} is not a member"),
            }));
            return;
        }
        if conf.voters.len() == 1 && conf.voters.contains(&replica) {
            respond(Err(RpcError::InvalidRequest {
                message: "the last voter cannot leave".to_owned(),
            }));
            return;
        }
        let change = ConfChange {
            steps: vec![ConfChangeStep::Remove(replica)],
            explicit_leave: false,
            context: Bytes::new(),
        };
        self.propose_conf_change(
            &change,
            Waiting::Member(respond, PlacementResponse::RemoveMember),
        );
    }

    /// Promotes learners that caught up with the leader's log.
    fn maybe_promote_learners(&mut self) {
        let conf = &self.state.conf_state;
        if !conf.voters_outgoing.is_empty()
            || self.proposals.iter().any(|p| matches!(p.waiting, Waiting::Member(..)))
        {
            return;
        }
        let last = self.raw.last_index();
        let caught_up: Vec<ReplicaId> = self
            .raw
            .matched()
            .into_iter()
            .filter(|(id, matched)| conf.learners.contains(id) && matched.0 + 10 >= last.0)
            .map(|(id, _)| id)
            .collect();
        if let Some(learner) = caught_up.first() {
            tracing::info!(member = %node_of(*learner), "promoting a caught-up member");
            let change = ConfChange {
                steps: vec![ConfChangeStep::AddVoter(*learner)],
                explicit_leave: false,
                context: Bytes::new(),
            };
            self.propose_conf_change(&change, Waiting::Nobody);
        }
    }

    fn run_scheduler(&mut self) {
        let now = self.now();
        self.operators.expire(now);
        let stores: BTreeMap<StoreId, StoreView> = self
            .state
            .stores
            .keys()
            .filter_map(|id| self.store_view(*id).map(|view| (*id, view)))
            .collect();
        let ranges: BTreeMap<RangeId, RangeView> = self
            .state
            .ranges
            .keys()
            .filter_map(|id| self.range_view(*id).map(|view| (*id, view)))
            .collect();
        let rules: Vec<_> = self.state.rules.values().cloned().collect();
        let view = ClusterView { now_ms: now, stores: &stores, ranges: &ranges, rules: &rules };
        let output = schedule::schedule(&view, &self.operators);
        for new in output.operators {
            let Some(range) = ranges.get(&new.range) else { continue };
            match self.operators.add(range, new.kind, new.reason.clone(), new.steps, now) {
                Ok(operator) => {
                    metrics::counter!("tessera_placement_operators_created_total", "kind" => new.kind).increment(1);
                    tracing::info!(range = %operator.range, kind = new.kind, reason = %new.reason, "operator created");
                }
                Err(reason) => tracing::debug!(range = %new.range, %reason, "operator not added"),
            }
        }
        for store_id in output.tombstones {
            tracing::info!(store = %store_id, "drained store becomes a tombstone");
            self.propose(
                &Command::SetStoreState { store_id, state: StoreState::Tombstone },
                Waiting::Nobody,
            );
        }
    }

    fn propose(&mut self, command: &Command, waiting: Waiting) {
        match self.raw.propose(command.encode()) {
            Ok(index) => {
                let term = self.raw.raft().term();
                self.proposals.push_back(Proposal { index, term, waiting });
            }
            Err(error) => {
                let answer = self.not_leader();
                self.fail(waiting, answer, &error);
            }
        }
    }

    fn propose_conf_change(&mut self, change: &ConfChange, waiting: Waiting) {
        match self.raw.propose_conf_change(change) {
            Ok(index) => {
                let term = self.raw.raft().term();
                self.proposals.push_back(Proposal { index, term, waiting });
            }
            Err(error) => {
                let answer = match &error {
                    tessera_raft::RaftError::ConfChangePending { .. } => {
                        RpcError::ServerBusy { reason: error.to_string(), retry_after_ms: 100 }
                    }
                    tessera_raft::RaftError::NotLeader { .. } => self.not_leader(),
                    _ => RpcError::InvalidRequest { message: error.to_string() },
                };
                self.fail(waiting, answer, &error);
            }
        }
    }

    /// Handles the Ready, if any: persists, sends, applies, answers. Returns whether there
    /// was one.
    ///
    /// # Errors
    /// Engine failures: the node must stop and restart from disk.
    pub fn poll(&mut self) -> Result<bool> {
        if self.raw.store().snapshot_wanted().is_some() {
            self.build_snapshot();
        }
        if !self.raw.has_ready() {
            self.net.flush();
            return Ok(false);
        }
        let ready = self.raw.ready();
        let must_sync = ready.must_sync();
        if let Some(soft) = ready.soft_state {
            self.on_role_change(soft.role);
        }
        let mut batch = self.raft_engine.batch();
        if let Some(snapshot) = &ready.snapshot {
            self.install_snapshot(snapshot, &mut batch)?;
        }
        if !ready.entries.is_empty() {
            self.raw.store_mut().stage_entries(&mut batch, &ready.entries);
        }
        if let Some(hard_state) = ready.hard_state {
            self.raw.store_mut().stage_hard_state(&mut batch, hard_state);
        }
        for message in ready.messages {
            self.send(message);
        }
        if !batch.is_empty() || must_sync {
            self.raft_engine.write(&mut batch, true)?;
        }
        self.raw.on_persist_ready(ready.number);
        for message in ready.persisted_messages {
            self.send(message);
        }
        if !ready.committed_entries.is_empty() {
            self.apply(&ready.committed_entries)?;
        }
        if !ready.read_states.is_empty() {
            // Leadership confirmed: the lease is renewed; timestamps waiting on it go now.
            self.lease_renewing = false;
            self.serve_parked();
        }
        self.maybe_compact()?;
        self.net.flush();
        Ok(true)
    }

    fn send(&mut self, message: Message) {
        let to = node_of(message.to);
        let node = StoreId(self.config.node_id.0);
        self.net.send(
            to,
            RaftEnvelope {
                range: PLACEMENT_GROUP,
                from_store: node,
                to_store: StoreId(to.0),
                message,
            },
        );
    }

    fn on_role_change(&mut self, role: Role) {
        if role == Role::Leader {
            return;
        }
        if self.ready_term.take().is_some() {
            tracing::info!(node = %self.config.node_id, "no longer the placement leader");
        }
        self.tso = None;
        self.operators.clear();
        self.range_live.clear();
        self.store_live.clear();
        for parked in std::mem::take(&mut self.parked) {
            (parked.respond)(Err(self.not_leader()));
        }
    }

    fn apply(&mut self, entries: &[Entry]) -> Result<()> {
        let mut batch = self.kv.batch();
        let mut answers = Vec::new();
        let mut conf_changed = false;
        for entry in entries {
            let outcome = match entry.kind {
                EntryKind::Normal if entry.data.is_empty() => Ok(Applied::Done),
                EntryKind::Normal => match Command::decode(&entry.data) {
                    Ok(command) => {
                        if let Command::PutMember { member } = &command
                            && member.node_id != self.config.node_id
                        {
                            self.net.set_member_address(member.node_id, &member.address);
                        }
                        self.state.apply(command, &mut batch)
                    }
                    Err(error) => {
                        tracing::error!(index = %entry.index, %error, "undecodable placement command skipped");
                        Err(RpcError::Internal { message: error.to_string() })
                    }
                },
                EntryKind::ConfChange => {
                    conf_changed = true;
                    self.apply_conf_change(entry, &mut batch)
                }
            };
            self.applied = ApplyState { applied_index: entry.index, applied_term: entry.term };
            answers.push((entry.index, entry.term, outcome));
        }
        batch.put_apply_state(PLACEMENT_GROUP, &self.applied);
        self.kv.write(&mut batch, false)?;
        self.stats.applied += entries.len() as u64;
        self.raw.advance_apply_to(self.applied.applied_index);
        if conf_changed {
            self.raw.store_mut().set_conf_state(self.state.conf_state.clone());
        }
        for (index, term, outcome) in answers {
            self.answer(index, term, outcome);
        }
        let leading = self.raw.raft().role() == Role::Leader;
        let term = self.raw.raft().term();
        if leading && self.ready_term != Some(term) && self.applied.applied_term == term {
            self.become_ready(term);
        }
        Ok(())
    }

    fn apply_conf_change(
        &mut self,
        entry: &Entry,
        batch: &mut K::Batch,
    ) -> std::result::Result<Applied, RpcError> {
        let change = tessera_wire::raft::decode_conf_change(&entry.data)
            .map_err(|error| RpcError::Internal { message: error.to_string() })?;
        let conf = self
            .raw
            .apply_conf_change(&change)
            .map_err(|error| RpcError::InvalidRequest { message: error.to_string() })?;
        for step in &change.steps {
            if let ConfChangeStep::Remove(replica) = step {
                self.state.apply(Command::RemoveMember { node_id: node_of(*replica) }, batch)?;
            }
        }
        tracing::info!(voters = ?conf.voters, learners = ?conf.learners, "placement membership changed");
        self.state.set_conf_state(conf, batch);
        Ok(Applied::Done)
    }

    /// Answers the proposal at `index`, if it is this node's: with `outcome` if it is the
    /// entry proposed (same term), else as overwritten.
    fn answer(
        &mut self,
        index: LogIndex,
        term: Term,
        outcome: std::result::Result<Applied, RpcError>,
    ) {
        while let Some(front) = self.proposals.front() {
            if front.index > index {
                return;
            }
            let proposal = self.proposals.pop_front().expect("front exists");
            if proposal.index < index || proposal.term != term {
                self.fail(proposal.waiting, RpcError::StaleCommand, &"overwritten");
                continue;
            }
            match (proposal.waiting, outcome) {
                (
                    Waiting::Answer(respond, response) | Waiting::Member(respond, response),
                    Ok(_),
                ) => {
                    respond(Ok(response));
                }
                (Waiting::GcSafePoint(respond), Ok(applied)) => {
                    let safe_point = match applied {
                        Applied::GcSafePoint(point) => point,
                        Applied::Done => Timestamp(self.state.meta.gc_safe_point),
                    };
                    respond(Ok(PlacementResponse::UpdateGcSafePoint { safe_point }));
                }
                (Waiting::IdBound, _) => {
                    self.id_raising = false;
                    self.serve_parked();
                }
                (Waiting::TsoBound(bound), outcome) => {
                    if let Some(tso) = self.tso.as_mut() {
                        tso.bound_committed(outcome.is_ok().then_some(bound));
                    }
                    self.serve_parked();
                }
                (waiting, Err(error)) => self.fail(waiting, error, &"refused"),
                (Waiting::Nobody, Ok(_)) => {}
            }
            return;
        }
    }

    /// A proposal that will not apply (refused, overwritten): its waiter learns why, and a
    /// bound asked for may be asked again.
    fn fail(&mut self, waiting: Waiting, error: RpcError, why: &dyn std::fmt::Display) {
        tracing::debug!(%why, %error, "placement proposal failed");
        match waiting {
            Waiting::Answer(respond, _)
            | Waiting::GcSafePoint(respond)
            | Waiting::Member(respond, _) => respond(Err(error)),
            Waiting::IdBound => self.id_raising = false,
            Waiting::TsoBound(_) => {
                if let Some(tso) = self.tso.as_mut() {
                    tso.bound_committed(None);
                }
            }
            Waiting::Nobody => {}
        }
    }

    fn become_ready(&mut self, term: Term) {
        self.ready_term = Some(term);
        self.stats.became_leader += 1;
        metrics::counter!("tessera_placement_leader_changes_total").increment(1);
        tracing::info!(node = %self.config.node_id, %term, "serving as the placement leader");
        let now = self.now();
        // Ids: start at the persisted bound (ids below it may have been handed out).
        self.id_next = self.state.meta.id_bound;
        self.id_raising = false;
        self.raise_id_bound(ID_BATCH);
        let mut tso = Tso::start(self.state.meta.tso_bound_ms);
        if let Some(bound) = tso.wanted_bound(now) {
            self.propose(&Command::RaiseTsoBound { to_ms: bound }, Waiting::TsoBound(bound));
        }
        self.tso = Some(tso);
        // Every known store gets a full `max_store_down` from now before it counts as down:
        // this leader has not heard anything yet.
        for (id, store) in &self.state.stores {
            if store.state != StoreState::Tombstone {
                self.store_live
                    .insert(*id, (StoreStats { store_id: *id, ..StoreStats::default() }, now));
            }
        }
        self.serve_parked();
    }

    fn serve_parked(&mut self) {
        if !self.is_serving_leader() {
            return;
        }
        for parked in std::mem::take(&mut self.parked) {
            let since = parked.since_tick;
            let before = self.parked.len();
            self.serve(parked.request, parked.respond);
            // Parked again: keep its original age so it times out.
            for again in &mut self.parked[before..] {
                again.since_tick = since;
            }
        }
    }

    fn build_snapshot(&mut self) {
        let metadata = SnapshotMetadata {
            index: self.applied.applied_index,
            term: self.applied.applied_term,
            conf_state: self.state.conf_state.clone(),
        };
        self.raw.store_mut().set_snapshot(Snapshot { metadata, data: self.state.encode_image() });
    }

    fn install_snapshot(&mut self, snapshot: &Snapshot, raft_batch: &mut R::Batch) -> Result<()> {
        let state = ClusterState::decode_image(&snapshot.data)?;
        if state.meta.cluster_id != self.config.cluster_id {
            return Err(PlacementError::Corruption(format!(
                "a snapshot of cluster {} reached cluster {}",
                state.meta.cluster_id, self.config.cluster_id
            )));
        }
        let mut batch = self.kv.batch();
        ClusterState::clear(&mut batch);
        state.stage_all(&mut batch);
        self.applied = ApplyState {
            applied_index: snapshot.metadata.index,
            applied_term: snapshot.metadata.term,
        };
        batch.put_apply_state(PLACEMENT_GROUP, &self.applied);
        self.kv.write(&mut batch, true)?;
        self.raw.store_mut().set_conf_state(state.conf_state.clone());
        self.raw.store_mut().stage_snapshot(raft_batch, &snapshot.metadata);
        for member in state.members.values() {
            if member.node_id != self.config.node_id {
                self.net.set_member_address(member.node_id, &member.address);
            }
        }
        self.state = state;
        self.stats.snapshots_installed += 1;
        tracing::info!(index = %snapshot.metadata.index, "placement snapshot installed");
        Ok(())
    }

    /// Truncates the log once enough is applied and durable (members behind get a snapshot).
    fn maybe_compact(&mut self) -> Result<()> {
        let truncated = self.raw.store().raft_state().truncated_index;
        if self.applied.applied_index.0 < truncated.0 + self.config.log_compact_entries {
            return Ok(());
        }
        self.kv.sync_wal()?;
        let mut batch = self.raft_engine.batch();
        let applied = self.applied.applied_index;
        if self.raw.store_mut().stage_compaction(&mut batch, applied, applied)?.is_some() {
            self.raft_engine.write(&mut batch, false)?;
        }
        Ok(())
    }
}

/// Requests answered from the leader's state without a proposal: served under the lease.
fn is_read(request: &PlacementRequest) -> bool {
    matches!(
        request,
        PlacementRequest::GetRangeByKey { .. }
            | PlacementRequest::GetRangeById { .. }
            | PlacementRequest::ScanRanges { .. }
            | PlacementRequest::GetStore { .. }
            | PlacementRequest::GetAllStores { .. }
            | PlacementRequest::ClusterStatus
            | PlacementRequest::ListRules
            | PlacementRequest::ListOperators
    )
}
