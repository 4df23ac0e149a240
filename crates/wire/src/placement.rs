//! Requests to the placement driver and its answers (ARCHITECTURE.md §8): bootstrap, id and
//! timestamp allocation, range lookup, store registration, store and range heartbeats (whose
//! answers carry scheduling commands), and split id allocation.

use bytes::Bytes;
use rkyv::{Archive, Deserialize, Serialize};

use crate::ids::{NodeId, RangeId, StoreId};
use crate::raft::{ReplicaId, Term};
use crate::range::{RangeDescriptor, RangeEpoch, Replica};
use crate::timestamp::Timestamp;

/// A store's lifecycle state, as the placement driver sees it.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum StoreState {
    /// Serving.
    #[default]
    Up,
    /// Being drained by an operator: replicas move away, then it becomes a tombstone.
    Offline,
    /// Missed heartbeats for longer than `max_store_down`: its replicas are repaired
    /// elsewhere.
    Down,
    /// Removed for good; its id is never reused.
    Tombstone,
    /// Up, but it missed its last heartbeats: nothing moves to it until it reports again.
    /// Shown by the API; never stored.
    Disconnected,
}

/// One label of a store's location (e.g. `region = eu-west`), ordered from the highest level.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct StoreLabel {
    /// The level (`region`, `zone`, `host`, …).
    pub key: String,
    /// The value at that level.
    pub value: String,
}

/// A store's registration.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Store {
    /// The store.
    pub id: StoreId,
    /// The node that runs it.
    pub node_id: NodeId,
    /// The node's peer address (`host:port`).
    pub address: String,
    /// Its location, from the highest level down.
    pub labels: Vec<StoreLabel>,
    /// Its state.
    pub state: StoreState,
}

/// What a store reports about itself on every store heartbeat. Traffic counters cover the
/// `interval_ms` since the previous heartbeat.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct StoreStats {
    /// The reporting store.
    pub store_id: StoreId,
    /// The size of its disk.
    pub capacity_bytes: u64,
    /// Free space on it.
    pub available_bytes: u64,
    /// Space used by Tessera.
    pub used_bytes: u64,
    /// Replicas held.
    pub range_count: u32,
    /// Replicas that are leaders.
    pub leader_count: u32,
    /// Snapshots being sent.
    pub sending_snapshot_count: u32,
    /// Snapshots being received.
    pub receiving_snapshot_count: u32,
    /// Snapshots being applied.
    pub applying_snapshot_count: u32,
    /// The store is shedding load (answering `ServerBusy`).
    pub busy: bool,
    /// Bytes written in the interval.
    pub written_bytes: u64,
    /// Keys written in the interval.
    pub written_keys: u64,
    /// Bytes read in the interval.
    pub read_bytes: u64,
    /// Keys read in the interval.
    pub read_keys: u64,
    /// The interval the counters cover.
    pub interval_ms: u64,
}

/// A replica the leader reports as unresponsive.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct DownReplica {
    /// The replica.
    pub replica: Replica,
    /// How long it has not answered.
    pub down_ms: u64,
}

/// What a range's leader reports on every range heartbeat. Traffic counters cover the
/// `interval_ms` since the previous heartbeat.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct RangeHeartbeat {
    /// The range as the leader knows it.
    pub descriptor: RangeDescriptor,
    /// The reporting leader.
    pub leader: Option<Replica>,
    /// The leader's term (orders reports across leader changes).
    pub term: Term,
    /// Approximate size of the range's data.
    pub approximate_size_bytes: u64,
    /// Approximate number of keys.
    pub approximate_keys: u64,
    /// Replicas that are behind (being caught up or sent a snapshot).
    pub pending_replicas: Vec<Replica>,
    /// Replicas that do not answer.
    pub down_replicas: Vec<DownReplica>,
    /// Bytes written in the interval.
    pub written_bytes: u64,
    /// Keys written in the interval.
    pub written_keys: u64,
    /// Bytes read in the interval.
    pub read_bytes: u64,
    /// Keys read in the interval.
    pub read_keys: u64,
    /// The interval the counters cover.
    pub interval_ms: u64,
}

/// A range and its leader, as the placement driver last heard.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct RangeRoute {
    /// The range.
    pub descriptor: RangeDescriptor,
    /// Its leader, if known.
    pub leader: Option<Replica>,
}

/// The ids for one new range of a split.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct SplitIds {
    /// The new range's id.
    pub new_range: RangeId,
    /// Its replicas' ids, one per replica of the range being split, in descriptor order.
    pub new_replica_ids: Vec<ReplicaId>,
}

/// A membership change step asked of a range.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum ReplicaChangeOp {
    /// Add a voter, or promote a learner.
    AddVoter,
    /// Add a learner, or demote a voter.
    AddLearner,
    /// Remove the replica.
    Remove,
}

/// One replica's change in a [`ScheduleCommand::ChangeReplicas`].
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ReplicaChange {
    /// What to do.
    pub op: ReplicaChangeOp,
    /// To which replica (a new one has a fresh id from the placement driver).
    pub replica: Replica,
}

/// What the scheduler asks of a range's leader, in answer to its heartbeat.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum ScheduleCommand {
    /// Hand leadership to `to`.
    TransferLeader {
        /// The new leader.
        to: Replica,
    },
    /// Change the membership (through a joint configuration when voters change).
    ChangeReplicas {
        /// The changes, applied together.
        changes: Vec<ReplicaChange>,
    },
    /// Split at `keys` (empty: at the range's approximate middle); the leader then asks for
    /// ids with `AskSplit`.
    Split {
        /// The split keys, ascending, strictly inside the range.
        keys: Vec<Bytes>,
    },
    /// Merge this range into its neighbour `target`.
    Merge {
        /// The adjacent range that absorbs this one.
        target: RangeDescriptor,
    },
}

/// How a [`LabelConstraint`] matches a store's label.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum ConstraintOp {
    /// The store has the label with one of the values.
    In,
    /// The store does not have the label with any of the values.
    NotIn,
    /// The store has the label (any value).
    Exists,
    /// The store does not have the label.
    NotExists,
}

/// A condition on a store's labels (e.g. `region in [eu-west]`).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct LabelConstraint {
    /// The label's key (`region`, `zone`, `host`, …).
    pub key: String,
    /// How it matches.
    pub op: ConstraintOp,
    /// The values (`In`, `NotIn`); ignored by `Exists` and `NotExists`.
    pub values: Vec<String>,
}

/// Where the replicas of the ranges in `[start_key, end_key)` go. Rules do not overlap; keys
/// no rule covers follow the cluster's default (`max_replicas` voters spread over the
/// highest label level). Ranges are split at rule boundaries.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct PlacementRule {
    /// A name, unique in the cluster.
    pub id: String,
    /// The first key covered (inclusive).
    pub start_key: Bytes,
    /// The end (exclusive); empty: +∞.
    pub end_key: Bytes,
    /// Voters per range.
    pub voters: u32,
    /// Learners per range (for local follower reads).
    pub learners: u32,
    /// Every voter's store matches all of these.
    pub voter_constraints: Vec<LabelConstraint>,
    /// Every learner's store matches all of these.
    pub learner_constraints: Vec<LabelConstraint>,
    /// The leader goes to a voter whose store matches all of these, when one exists.
    pub leader_preference: Vec<LabelConstraint>,
    /// The label levels replicas spread over, highest first (empty: the cluster's).
    pub location_labels: Vec<String>,
}

/// One step of an operator (a scheduling decision as a sequence of commands to a range).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum OperatorStep {
    /// Add a learner on the store (a fresh replica id is allocated when the step runs).
    AddLearner {
        /// Where.
        store_id: StoreId,
    },
    /// Promote the learner on the store to a voter.
    PromoteLearner {
        /// Where.
        store_id: StoreId,
    },
    /// Demote the voter on the store to a learner.
    DemoteVoter {
        /// Where.
        store_id: StoreId,
    },
    /// Remove the (learner) replica on the store.
    RemoveReplica {
        /// Where.
        store_id: StoreId,
    },
    /// Move leadership to the replica on the store.
    TransferLeader {
        /// Where.
        to_store: StoreId,
    },
    /// Split the range at the keys.
    Split {
        /// Ascending, strictly inside the range.
        keys: Vec<Bytes>,
    },
}

/// Where an operator is.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum OperatorStatus {
    /// Steps remain.
    Running,
    /// Every step is done.
    Finished,
    /// A step took longer than its timeout.
    TimedOut,
    /// Cancelled by an operator or replaced.
    Cancelled,
    /// The range changed under it (another epoch) so its steps no longer apply.
    Failed,
}

/// An operator, as the API shows it.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct OperatorInfo {
    /// Unique among the leader's operators.
    pub id: u64,
    /// The range it works on.
    pub range: RangeId,
    /// What made it (`replica-repair`, `rule`, `balance-leader`, `balance-range`,
    /// `hot-leader`, `offline`, `admin`, …).
    pub kind: String,
    /// Why, in words.
    pub reason: String,
    /// Its steps.
    pub steps: Vec<OperatorStep>,
    /// The step running now (`steps.len()` when finished).
    pub current_step: u32,
    /// Where it is.
    pub status: OperatorStatus,
    /// When it was created (ms since the Unix epoch, leader's clock).
    pub created_ms: u64,
}

/// A member of the placement group.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct PlacementMember {
    /// Its node id.
    pub node_id: NodeId,
    /// Its peer address.
    pub address: String,
    /// Whether it votes (a joining member is a learner until it caught up).
    pub voter: bool,
}

/// The cluster at a glance.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ClusterStatus {
    /// The cluster.
    pub cluster_id: u64,
    /// Whether it was bootstrapped.
    pub bootstrapped: bool,
    /// The placement leader answering.
    pub leader: NodeId,
    /// The placement group.
    pub members: Vec<PlacementMember>,
    /// Stores by state (tombstones included).
    pub stores: Vec<Store>,
    /// Ranges known.
    pub range_count: u64,
    /// Operators running.
    pub running_operators: u64,
    /// The GC safe point.
    pub gc_safe_point: Timestamp,
}

/// A request to the placement driver.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum PlacementRequest {
    /// Create the cluster with its first store and first range `[∅, ∞)`.
    Bootstrap {
        /// The first store.
        store: Store,
        /// The first range.
        range: RangeDescriptor,
    },
    /// Allocate `count` fresh ids (for stores, ranges and replicas).
    AllocId {
        /// How many.
        count: u32,
    },
    /// Allocate `count` consecutive timestamps.
    GetTimestamp {
        /// How many (at least 1).
        count: u32,
    },
    /// The range holding `key`.
    GetRangeByKey {
        /// The key.
        key: Bytes,
    },
    /// The range with id `range`.
    GetRangeById {
        /// The range.
        range: RangeId,
    },
    /// The ranges overlapping `[start_key, end_key)`, in key order.
    ScanRanges {
        /// The first key (inclusive).
        start_key: Bytes,
        /// The end (exclusive); empty: +∞.
        end_key: Bytes,
        /// At most this many ranges; the placement driver also applies its own bound.
        limit: u32,
    },
    /// Register or update a store.
    PutStore {
        /// The store.
        store: Store,
    },
    /// One store's registration.
    GetStore {
        /// The store.
        store_id: StoreId,
    },
    /// Every store's registration.
    GetAllStores {
        /// Leave out tombstones.
        exclude_tombstones: bool,
    },
    /// A store's periodic report.
    StoreHeartbeat {
        /// Its statistics.
        stats: StoreStats,
        /// Its current labels (configuration may change them across restarts).
        labels: Vec<StoreLabel>,
    },
    /// A range leader's periodic report.
    RangeHeartbeat(RangeHeartbeat),
    /// Ids for splitting `descriptor` into `split_count + 1` ranges.
    AskSplit {
        /// The range to split, as its leader knows it.
        descriptor: RangeDescriptor,
        /// How many new ranges.
        split_count: u32,
    },
    /// A split happened: the resulting ranges, left to right.
    ReportSplit {
        /// The ranges.
        ranges: Vec<RangeDescriptor>,
    },
    /// The cluster at a glance.
    ClusterStatus,
    /// Every placement rule.
    ListRules,
    /// Create or replace a rule (by id); refused if it overlaps another rule.
    PutRule {
        /// The rule.
        rule: PlacementRule,
    },
    /// Delete a rule.
    DeleteRule {
        /// Its id.
        id: String,
    },
    /// Operators (running, and the latest finished ones).
    ListOperators,
    /// Run `steps` on a range by hand.
    AddOperator {
        /// The range.
        range: RangeId,
        /// What to do.
        steps: Vec<OperatorStep>,
    },
    /// Cancel the operator running on a range.
    CancelOperator {
        /// The range.
        range: RangeId,
    },
    /// Mark a store `Offline` (drain it, then tombstone it) or back `Up` (before it is a
    /// tombstone).
    SetStoreState {
        /// The store.
        store_id: StoreId,
        /// `Offline` or `Up`.
        state: StoreState,
    },
    /// Replace a store's labels.
    SetStoreLabels {
        /// The store.
        store_id: StoreId,
        /// Its location, highest level first.
        labels: Vec<StoreLabel>,
    },
    /// Raise the GC safe point (it never goes back).
    UpdateGcSafePoint {
        /// The new safe point.
        safe_point: Timestamp,
    },
    /// Add a member to the placement group (as a learner, promoted once caught up).
    AddMember {
        /// The new member.
        node_id: NodeId,
        /// Its peer address.
        address: String,
    },
    /// Remove a member from the placement group.
    RemoveMember {
        /// The member.
        node_id: NodeId,
    },
}

/// The placement driver's answer to a successful [`PlacementRequest`], one variant per
/// request.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum PlacementResponse {
    /// The cluster exists.
    Bootstrap,
    /// The ids `first..first + count`.
    AllocId {
        /// The first id.
        first: u64,
        /// How many.
        count: u32,
    },
    /// The timestamps `first..first + count`, all in `first`'s millisecond.
    GetTimestamp {
        /// The first timestamp.
        first: Timestamp,
        /// How many.
        count: u32,
    },
    /// The range holding the key.
    GetRangeByKey {
        /// The range and leader.
        route: RangeRoute,
    },
    /// The range with the id.
    GetRangeById {
        /// The range and leader.
        route: RangeRoute,
    },
    /// The overlapping ranges, in key order.
    ScanRanges {
        /// The ranges and leaders.
        routes: Vec<RangeRoute>,
    },
    /// Registered.
    PutStore,
    /// The store.
    GetStore {
        /// Its registration.
        store: Store,
        /// Its latest statistics, if it has reported.
        stats: Option<StoreStats>,
    },
    /// Every store.
    GetAllStores {
        /// Their registrations.
        stores: Vec<Store>,
    },
    /// Noted.
    StoreHeartbeat,
    /// Noted, perhaps with work for the leader.
    RangeHeartbeat {
        /// The range.
        range: RangeId,
        /// The epoch the command was computed against; the leader ignores a command for
        /// another epoch.
        epoch: RangeEpoch,
        /// What to do, if anything.
        command: Option<ScheduleCommand>,
    },
    /// The ids, one entry per new range.
    AskSplit {
        /// The ids.
        splits: Vec<SplitIds>,
    },
    /// Noted.
    ReportSplit,
    /// The cluster at a glance.
    ClusterStatus {
        /// The status.
        status: ClusterStatus,
    },
    /// Every rule, by key.
    ListRules {
        /// The rules.
        rules: Vec<PlacementRule>,
    },
    /// Stored.
    PutRule,
    /// Deleted (or there was none).
    DeleteRule,
    /// Operators.
    ListOperators {
        /// Running first, then the latest finished ones.
        operators: Vec<OperatorInfo>,
    },
    /// Accepted.
    AddOperator {
        /// The new operator.
        operator: OperatorInfo,
    },
    /// Cancelled (or none ran).
    CancelOperator,
    /// Stored.
    SetStoreState,
    /// Stored.
    SetStoreLabels,
    /// The safe point now in force (the larger of the old and the asked).
    UpdateGcSafePoint {
        /// The safe point.
        safe_point: Timestamp,
    },
    /// The member was added.
    AddMember,
    /// The member was removed.
    RemoveMember,
}
