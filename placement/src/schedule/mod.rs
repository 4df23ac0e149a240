//! Scheduling on the placement leader (ARCHITECTURE.md §8), as pure logic: no clock, no I/O,
//! no randomness. The caller hands in a [`ClusterView`] (stores, ranges, rules and the time
//! as data) and gets back new operators to start; an [`OperatorController`] turns running
//! operators into one [`ScheduleCommand`] per range heartbeat.
//!
//! # One pass ([`schedule`])
//!
//! Ranges with a running operator are skipped. Per range, in priority order:
//!
//! 1. **Split** at placement-rule boundaries strictly inside the range.
//! 2. **Replica checker** against the range's rule ([`rule_for`]): replace replicas on
//!    `Down` stores, drain `Offline` stores, add missing voters and learners, replace
//!    replicas whose store violates the rule's constraints, remove surplus replicas, and
//!    improve the spread over the location labels. A range with fewer than a quorum of live
//!    voters is left alone (no membership change could commit).
//! 3. **Leader preference** from the rule.
//!
//! Then the balancers, each proposing at most a few operators per pass: leaders (by count),
//! ranges (by size), hot leaders (by read + written bytes per second). Leader and range
//! balance wait while checker operators are proposed or running (they would balance a state
//! the checkers are about to change); hot-leader balance does not.
//!
//! # Anti-flap
//!
//! Every balancer move strictly lowers a sum of squares of per-store loads, so repeated
//! passes reach a fixed point:
//! - a leader moves only when the source has more than `leader_tolerance` (at least 1)
//!   leaders more than the target;
//! - a replica moves only when the source's range bytes exceed the target's by more than
//!   twice the range's size and more than `range_tolerance_ratio` of the mean;
//! - a hot leader moves only when the target's hot load plus the range's stays below the
//!   source's.
//!
//! Loads count the remaining steps of running operators, and proposals of the same pass.
//!
//! A replica move is `[AddLearner new, PromoteLearner new (voters), TransferLeader (if the old
//! replica leads), DemoteVoter old (voters), RemoveReplica old]`.

mod balance;
mod checker;
mod operator;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use tessera_wire::ids::{RangeId, StoreId};
use tessera_wire::placement::{
    ConstraintOp, DownReplica, LabelConstraint, OperatorStep, PlacementRule, Store, StoreState,
    StoreStats,
};
use tessera_wire::raft::ReplicaId;
use tessera_wire::range::{RangeDescriptor, Replica, ReplicaRole};

pub use operator::{Operator, OperatorController, apply_step};

/// Operator kinds made by the balancers.
pub const BALANCER_KINDS: [&str; 3] = ["balance-leader", "balance-range", "hot-leader"];
/// The latest finished operators [`OperatorController::list`] keeps.
pub const OPERATOR_HISTORY_MAX: usize = 64;
/// Operators the leader balancer proposes per pass, at most.
pub const BALANCE_LEADER_OPERATORS_PER_PASS_MAX: usize = 4;
/// Operators the range-size balancer proposes per pass, at most.
pub const BALANCE_RANGE_OPERATORS_PER_PASS_MAX: usize = 4;
/// Operators the hot-leader balancer proposes per pass, at most.
pub const HOT_LEADER_OPERATORS_PER_PASS_MAX: usize = 1;

/// The scheduler's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct ScheduleConfig {
    /// Voters for ranges no rule covers. Default 3.
    pub max_replicas: u32,
    /// The label levels replicas spread over by default, highest first. Default
    /// `["region", "zone", "host"]`.
    pub location_labels: Vec<String>,
    /// An `Up` store silent for this long is `Down` and its replicas are replaced.
    /// Default 30 minutes.
    pub max_store_down_ms: u64,
    /// An `Up` store silent for this long is `Disconnected`: nothing new moves to it.
    /// Default 20 seconds.
    pub store_disconnected_ms: u64,
    /// A leader moves only when its store has more than this many leaders more than the
    /// target (values below 1 count as 1: moving across a difference of 1 only swaps the
    /// counts). Default 2.
    pub leader_tolerance: u32,
    /// A replica moves only when the source's range bytes exceed the target's by more than
    /// this fraction of the mean over `Up` stores (and by more than twice the range's size).
    /// Default 0.05.
    pub range_tolerance_ratio: f64,
    /// Concurrent add-learner steps (snapshots) per store, sending or receiving. Default 3.
    pub max_snapshots_per_store: u32,
    /// A step not done after this long times its operator out. Default 10 minutes.
    pub step_timeout_ms: u64,
    /// A range whose leader serves at least this many read + written bytes per second is
    /// hot. Default 1 MiB/s.
    pub hot_read_write_bytes_per_sec: u64,
    /// Running operators, at most. Default 64.
    pub max_operators: usize,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            max_replicas: 3,
            location_labels: vec!["region".into(), "zone".into(), "host".into()],
            max_store_down_ms: 30 * 60 * 1000,
            store_disconnected_ms: 20 * 1000,
            leader_tolerance: 2,
            range_tolerance_ratio: 0.05,
            max_snapshots_per_store: 3,
            step_timeout_ms: 10 * 60 * 1000,
            hot_read_write_bytes_per_sec: 1 << 20,
            max_operators: 64,
        }
    }
}

/// A store as the scheduler sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreView {
    /// Its registration (stored state included).
    pub store: Store,
    /// Its latest statistics, if it has reported.
    pub stats: Option<StoreStats>,
    /// When its latest heartbeat arrived (leader's clock), if one did.
    pub last_heartbeat_ms: Option<u64>,
}

/// A range as the scheduler sees it (from its leader's latest heartbeat).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeView {
    /// The range.
    pub descriptor: RangeDescriptor,
    /// Its leader, if known.
    pub leader: Option<Replica>,
    /// Approximate size of its data.
    pub approximate_size_bytes: u64,
    /// Approximate number of keys.
    pub approximate_keys: u64,
    /// Bytes written in the interval.
    pub written_bytes: u64,
    /// Bytes read in the interval.
    pub read_bytes: u64,
    /// Keys written in the interval.
    pub written_keys: u64,
    /// Keys read in the interval.
    pub read_keys: u64,
    /// The interval the counters cover.
    pub interval_ms: u64,
    /// Replicas that are behind.
    pub pending_replicas: Vec<Replica>,
    /// Replicas that do not answer.
    pub down_replicas: Vec<DownReplica>,
}

impl RangeView {
    /// Read + written bytes per second served by the leader (0 without an interval).
    #[must_use]
    pub fn bytes_per_sec(&self) -> f64 {
        if self.interval_ms == 0 {
            return 0.0;
        }
        #[allow(clippy::cast_precision_loss)]
        let bytes = self.read_bytes.saturating_add(self.written_bytes) as f64;
        #[allow(clippy::cast_precision_loss)]
        let seconds = self.interval_ms as f64 / 1000.0;
        bytes / seconds
    }

    fn is_pending(&self, replica: &Replica) -> bool {
        self.pending_replicas.iter().any(|pending| pending.id == replica.id)
    }

    fn is_reported_down(&self, replica: &Replica) -> bool {
        self.down_replicas.iter().any(|down| down.replica.id == replica.id)
    }

    fn leader_store(&self) -> Option<StoreId> {
        self.leader.map(|leader| leader.store_id)
    }
}

/// The cluster as one scheduling pass sees it.
#[derive(Clone, Copy, Debug)]
pub struct ClusterView<'a> {
    /// The leader's clock (ms).
    pub now_ms: u64,
    /// Every store (tombstones may be left out).
    pub stores: &'a BTreeMap<StoreId, StoreView>,
    /// Every range.
    pub ranges: &'a BTreeMap<RangeId, RangeView>,
    /// The placement rules (non-overlapping).
    pub rules: &'a [PlacementRule],
}

/// A new operator proposed by [`schedule`]; the caller starts it with
/// [`OperatorController::add`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewOperator {
    /// The range.
    pub range: RangeId,
    /// What made it (`split`, `replica-repair`, `offline`, `rule`, `balance-leader`,
    /// `balance-range`, `hot-leader`).
    pub kind: &'static str,
    /// Why, in words.
    pub reason: String,
    /// Its steps.
    pub steps: Vec<OperatorStep>,
}

/// What one pass of [`schedule`] decided.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScheduleOutput {
    /// Operators to start, in priority order.
    pub operators: Vec<NewOperator>,
    /// `Offline` stores that hold no replica any more: to be stored as `Tombstone`.
    pub tombstones: Vec<StoreId>,
}

/// A store's state as scheduling uses it: `Tombstone`, `Offline` and `Down` as stored; a
/// stored `Up` becomes `Down` after `max_store_down_ms` without a heartbeat and
/// `Disconnected` after `store_disconnected_ms` (or when it never reported).
#[must_use]
pub fn effective_state(store: &StoreView, now_ms: u64, config: &ScheduleConfig) -> StoreState {
    match store.store.state {
        StoreState::Up => match store.last_heartbeat_ms {
            None => StoreState::Disconnected,
            Some(at) => {
                let silent_ms = now_ms.saturating_sub(at);
                if silent_ms >= config.max_store_down_ms {
                    StoreState::Down
                } else if silent_ms >= config.store_disconnected_ms {
                    StoreState::Disconnected
                } else {
                    StoreState::Up
                }
            }
        },
        state => state,
    }
}

/// Whether a store holding a replica can take part in a membership change now: it reported
/// within `store_disconnected_ms` and is neither `Down` nor a tombstone (an `Offline` store
/// being drained still votes).
fn store_alive(store: &StoreView, now_ms: u64, config: &ScheduleConfig) -> bool {
    let recent = store
        .last_heartbeat_ms
        .is_some_and(|at| now_ms.saturating_sub(at) < config.store_disconnected_ms);
    recent && matches!(store.store.state, StoreState::Up | StoreState::Offline)
}

/// The rule covering the range's start key, or the default rule (`max_replicas` voters, no
/// learners, no constraints, the configured location labels). A rule with no location
/// labels gets the configured ones.
#[must_use]
pub fn rule_for(
    range: &RangeDescriptor,
    rules: &[PlacementRule],
    config: &ScheduleConfig,
) -> PlacementRule {
    let start = range.start_key.as_ref();
    let covering = rules.iter().find(|rule| {
        start >= rule.start_key.as_ref()
            && (rule.end_key.is_empty() || start < rule.end_key.as_ref())
    });
    let mut rule = covering.cloned().unwrap_or_else(|| PlacementRule {
        id: "default".into(),
        voters: config.max_replicas,
        ..PlacementRule::default()
    });
    if rule.location_labels.is_empty() {
        rule.location_labels.clone_from(&config.location_labels);
    }
    rule
}

/// The rule boundaries strictly inside the range, ascending and without duplicates.
#[must_use]
pub fn rule_split_keys(range: &RangeDescriptor, rules: &[PlacementRule]) -> Vec<Bytes> {
    let inside = |key: &Bytes| {
        !key.is_empty()
            && key.as_ref() > range.start_key.as_ref()
            && (range.end_key.is_empty() || key.as_ref() < range.end_key.as_ref())
    };
    let keys: BTreeSet<Bytes> = rules
        .iter()
        .flat_map(|rule| [&rule.start_key, &rule.end_key])
        .filter(|key| inside(key))
        .cloned()
        .collect();
    keys.into_iter().collect()
}

/// Whether the store's labels satisfy every constraint.
#[must_use]
pub fn store_matches(store: &Store, constraints: &[LabelConstraint]) -> bool {
    constraints.iter().all(|constraint| {
        let value = store
            .labels
            .iter()
            .find(|label| label.key == constraint.key)
            .map(|label| label.value.as_str());
        match constraint.op {
            ConstraintOp::In => {
                value.is_some_and(|value| constraint.values.iter().any(|v| v == value))
            }
            ConstraintOp::NotIn => {
                value.is_none_or(|value| constraint.values.iter().all(|v| v != value))
            }
            ConstraintOp::Exists => value.is_some(),
            ConstraintOp::NotExists => value.is_none(),
        }
    })
}

/// How well a set of stores spreads over the location levels: per level, highest first, the
/// number of distinct locations (label value paths down to that level; a missing label is
/// one more value). Compared lexicographically: bigger is better.
fn spread(stores: &[&Store], labels: &[String]) -> Vec<usize> {
    (1..=labels.len())
        .map(|depth| {
            let paths: BTreeSet<Vec<&str>> = stores
                .iter()
                .map(|store| {
                    labels[..depth]
                        .iter()
                        .map(|key| {
                            store
                                .labels
                                .iter()
                                .find(|label| &label.key == key)
                                .map_or("", |label| label.value.as_str())
                        })
                        .collect()
                })
                .collect();
            paths.len()
        })
        .collect()
}

/// Per-store load, projected through running and just-proposed operators.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct StoreLoad {
    /// Replicas held.
    replicas: u64,
    /// Sum of the held ranges' weights (size in bytes, at least 1 per range).
    range_bytes: u64,
    /// Leaders held.
    leaders: u64,
    /// Read + written bytes per second of the hot ranges it leads.
    hot_bytes_per_sec: f64,
}

/// A range's weight for size balance: its size, at least 1 so empty ranges balance by count.
fn range_weight(range: &RangeView) -> u64 {
    range.approximate_size_bytes.max(1)
}

/// One scheduling pass in progress.
struct Pass<'a> {
    view: &'a ClusterView<'a>,
    config: &'a ScheduleConfig,
    controller: &'a OperatorController,
    states: BTreeMap<StoreId, StoreState>,
    loads: BTreeMap<StoreId, StoreLoad>,
    /// Snapshot slots taken per store, by running operators and this pass's proposals.
    snapshots: BTreeMap<StoreId, u32>,
    proposed: BTreeSet<RangeId>,
    output: ScheduleOutput,
}

impl<'a> Pass<'a> {
    fn new(view: &'a ClusterView<'a>, controller: &'a OperatorController) -> Self {
        let config = controller.config();
        let states = view
            .stores
            .iter()
            .map(|(id, store)| (*id, effective_state(store, view.now_ms, config)))
            .collect();
        let mut pass = Self {
            view,
            config,
            controller,
            states,
            loads: BTreeMap::new(),
            snapshots: BTreeMap::new(),
            proposed: BTreeSet::new(),
            output: ScheduleOutput::default(),
        };
        for id in view.stores.keys() {
            pass.loads.insert(*id, StoreLoad::default());
            pass.snapshots.insert(*id, controller.snapshot_load(*id));
        }
        for range in view.ranges.values() {
            let (mut descriptor, mut leader) = (range.descriptor.clone(), range.leader);
            if let Some(operator) = controller.running(range.descriptor.id) {
                let remaining = usize::try_from(operator.info.current_step).unwrap_or(usize::MAX);
                for step in operator.info.steps.iter().skip(remaining) {
                    // Projection only: a step that no longer applies changes nothing.
                    let _ = apply_step(&mut descriptor, &mut leader, step, ReplicaId(u64::MAX));
                }
            }
            pass.add_load(range, &descriptor, leader, true);
        }
        pass
    }

    fn state(&self, store: StoreId) -> StoreState {
        self.states.get(&store).copied().unwrap_or(StoreState::Tombstone)
    }

    fn store(&self, store: StoreId) -> Option<&'a Store> {
        self.view.stores.get(&store).map(|view| &view.store)
    }

    fn load(&self, store: StoreId) -> StoreLoad {
        self.loads.get(&store).copied().unwrap_or_default()
    }

    fn alive(&self, store: StoreId) -> bool {
        self.view
            .stores
            .get(&store)
            .is_some_and(|view| store_alive(view, self.view.now_ms, self.config))
    }

    fn available_bytes(&self, store: StoreId) -> u64 {
        self.view
            .stores
            .get(&store)
            .and_then(|view| view.stats.as_ref())
            .map_or(0, |stats| stats.available_bytes)
    }

    fn has_snapshot_slot(&self, store: StoreId) -> bool {
        self.snapshots.get(&store).copied().unwrap_or(0) < self.config.max_snapshots_per_store
    }

    /// Adds (or with `add == false` takes away) a range's contribution to the loads.
    fn add_load(
        &mut self,
        range: &RangeView,
        descriptor: &RangeDescriptor,
        leader: Option<Replica>,
        add: bool,
    ) {
        let weight = range_weight(range);
        let rate = if self.is_hot(range) { range.bytes_per_sec() } else { 0.0 };
        for replica in &descriptor.replicas {
            if let Some(load) = self.loads.get_mut(&replica.store_id) {
                if add {
                    load.replicas += 1;
                    load.range_bytes = load.range_bytes.saturating_add(weight);
                } else {
                    load.replicas = load.replicas.saturating_sub(1);
                    load.range_bytes = load.range_bytes.saturating_sub(weight);
                }
            }
        }
        if let Some(load) = leader.and_then(|leader| self.loads.get_mut(&leader.store_id)) {
            if add {
                load.leaders += 1;
                load.hot_bytes_per_sec += rate;
            } else {
                load.leaders = load.leaders.saturating_sub(1);
                load.hot_bytes_per_sec = (load.hot_bytes_per_sec - rate).max(0.0);
            }
        }
    }

    /// Whether the range is hot (only hot ranges count in a store's hot load, and only the
    /// hot-leader balancer moves their leaders, so balancers cannot undo each other).
    fn is_hot(&self, range: &RangeView) -> bool {
        #[allow(clippy::cast_precision_loss)]
        let threshold = self.config.hot_read_write_bytes_per_sec as f64;
        range.bytes_per_sec() >= threshold && range.bytes_per_sec() > 0.0
    }

    /// Whether checker operators (splits, repairs, rule fixes, admin ones) were proposed in
    /// this pass or still run: leader and range balance wait for them, or they would balance
    /// a state the checkers are about to change.
    fn checker_work_in_flight(&self) -> bool {
        !self.output.operators.is_empty()
            || self
                .controller
                .running_operators()
                .any(|operator| !BALANCER_KINDS.contains(&operator.info.kind.as_str()))
    }

    fn operator_cap_reached(&self) -> bool {
        self.controller.running_count() + self.output.operators.len() >= self.config.max_operators
    }

    /// Whether the range may get an operator in this pass.
    fn schedulable(&self, range: RangeId) -> bool {
        !self.proposed.contains(&range) && self.controller.running(range).is_none()
    }

    /// Records a proposal (if the operator cap and snapshot limits allow it) and projects its
    /// effect on the loads.
    fn propose(
        &mut self,
        range: &RangeView,
        kind: &'static str,
        reason: String,
        steps: Vec<OperatorStep>,
    ) -> bool {
        let id = range.descriptor.id;
        if self.operator_cap_reached() || !self.schedulable(id) {
            return false;
        }
        let (mut descriptor, mut leader) = (range.descriptor.clone(), range.leader);
        let mut snapshot_stores = Vec::new();
        for step in &steps {
            if let OperatorStep::AddLearner { store_id } = step {
                snapshot_stores.push(*store_id);
                snapshot_stores.extend(leader.map(|leader| leader.store_id));
            }
            if let Err(error) = apply_step(&mut descriptor, &mut leader, step, ReplicaId(u64::MAX))
            {
                tracing::warn!(range = id.0, kind, %reason, %error, "scheduler built an invalid operator");
                return false;
            }
        }
        if snapshot_stores.iter().any(|store| !self.has_snapshot_slot(*store)) {
            tracing::debug!(range = id.0, kind, %reason, "snapshot limit reached, operator deferred");
            return false;
        }
        for store in snapshot_stores {
            *self.snapshots.entry(store).or_insert(0) += 1;
        }
        self.add_load(range, &range.descriptor, range.leader, false);
        self.add_load(range, &descriptor, leader, true);
        tracing::info!(range = id.0, kind, %reason, ?steps, "operator proposed");
        self.proposed.insert(id);
        self.output.operators.push(NewOperator { range: id, kind, reason, steps });
        true
    }
}

/// Steps that move the replica on `from` to a new one on `to`: add a learner, promote it
/// (voters), hand leadership to `leader_to` if `from` leads, demote (voters), remove.
fn move_steps(
    range: &RangeView,
    from: StoreId,
    to: StoreId,
    voter: bool,
    leader_to: Option<StoreId>,
) -> Vec<OperatorStep> {
    let mut steps = vec![OperatorStep::AddLearner { store_id: to }];
    if voter {
        steps.push(OperatorStep::PromoteLearner { store_id: to });
    }
    steps.extend(removal_steps(range, from, voter, leader_to));
    steps
}

/// Steps that remove the replica on `from`: hand leadership to `leader_to` if `from` leads,
/// demote (voters), remove.
fn removal_steps(
    range: &RangeView,
    from: StoreId,
    voter: bool,
    leader_to: Option<StoreId>,
) -> Vec<OperatorStep> {
    let mut steps = Vec::new();
    if range.leader_store() == Some(from)
        && let Some(to_store) = leader_to
    {
        steps.push(OperatorStep::TransferLeader { to_store });
    }
    if voter {
        steps.push(OperatorStep::DemoteVoter { store_id: from });
    }
    steps.push(OperatorStep::RemoveReplica { store_id: from });
    steps
}

fn is_voter(replica: &Replica) -> bool {
    replica.role.is_voter()
}

fn in_joint_state(descriptor: &RangeDescriptor) -> bool {
    descriptor.replicas.iter().any(|replica| {
        matches!(replica.role, ReplicaRole::IncomingVoter | ReplicaRole::DemotingVoter)
    })
}

/// One scheduling pass on the placement leader: new operators to start (the caller adds each
/// to the controller, which may still refuse it) and `Offline` stores to tombstone. Pure: the
/// time is `view.now_ms`.
#[must_use]
pub fn schedule(view: &ClusterView<'_>, controller: &OperatorController) -> ScheduleOutput {
    let mut pass = Pass::new(view, controller);
    for range in view.ranges.values() {
        if pass.operator_cap_reached() {
            break;
        }
        if pass.schedulable(range.descriptor.id) {
            pass.check_range(range);
        }
    }
    if pass.checker_work_in_flight() {
        tracing::debug!("replica checker operators in flight: leader and range balance wait");
    } else {
        pass.balance_leaders();
        pass.balance_ranges();
    }
    pass.balance_hot_leaders();
    let holding: BTreeSet<StoreId> = view
        .ranges
        .values()
        .flat_map(|range| range.descriptor.replicas.iter().map(|replica| replica.store_id))
        .collect();
    for (id, store) in view.stores {
        if store.store.state == StoreState::Offline && !holding.contains(id) {
            tracing::info!(store = id.0, "offline store holds no replica: tombstone");
            pass.output.tombstones.push(*id);
        }
    }
    pass.output
}
