//! Operators: scheduling decisions as step sequences, advanced by range heartbeats.
//!
//! A step is done when the range's reported descriptor or leader shows its effect; until
//! then its command is re-sent with every heartbeat (the store ignores a command for another
//! epoch, and re-applying a done change is refused harmlessly). A step not done within
//! `step_timeout_ms` times the operator out; a step that can no longer happen (its replica
//! vanished, a voter reappeared where a learner was to be removed) fails it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use tessera_wire::ids::{RangeId, StoreId};
use tessera_wire::placement::{
    OperatorInfo, OperatorStatus, OperatorStep, ReplicaChange, ReplicaChangeOp, ScheduleCommand,
};
use tessera_wire::raft::ReplicaId;
use tessera_wire::range::{RangeDescriptor, RangeEpoch, Replica, ReplicaRole};

use super::{OPERATOR_HISTORY_MAX, RangeView, ScheduleConfig};

/// Applies one step to a descriptor and leader as the store would, checking that it applies
/// (`new_id` names the replica an `AddLearner` adds). Used to validate operators and to
/// project their effect; tests use it to simulate stores.
///
/// # Errors
///
/// A reason when the step does not apply: adding on a store that holds a replica, promoting
/// anything but a learner, demoting anything but a voter or the leader, removing anything but
/// a learner, handing leadership to anything but a voter, split keys outside the range or not
/// ascending.
pub fn apply_step(
    descriptor: &mut RangeDescriptor,
    leader: &mut Option<Replica>,
    step: &OperatorStep,
    new_id: ReplicaId,
) -> Result<(), String> {
    let role_on = |descriptor: &RangeDescriptor, store: StoreId| {
        descriptor.replica_on_store(store).map(|replica| replica.role)
    };
    match step {
        OperatorStep::AddLearner { store_id } => {
            if descriptor.replica_on_store(*store_id).is_some() {
                return Err(format!("store {store_id} already holds a replica"));
            }
            descriptor.replicas.push(Replica {
                id: new_id,
                store_id: *store_id,
                role: ReplicaRole::Learner,
            });
        }
        OperatorStep::PromoteLearner { store_id } => {
            if role_on(descriptor, *store_id) != Some(ReplicaRole::Learner) {
                return Err(format!("store {store_id} holds no learner to promote"));
            }
            set_role(descriptor, *store_id, ReplicaRole::Voter);
        }
        OperatorStep::DemoteVoter { store_id } => {
            if role_on(descriptor, *store_id) != Some(ReplicaRole::Voter) {
                return Err(format!("store {store_id} holds no voter to demote"));
            }
            if leader.is_some_and(|leader| leader.store_id == *store_id) {
                return Err(format!(
                    "the leader on store {store_id} cannot be demoted: transfer leadership first"
                ));
            }
            set_role(descriptor, *store_id, ReplicaRole::Learner);
        }
        OperatorStep::RemoveReplica { store_id } => {
            if role_on(descriptor, *store_id) != Some(ReplicaRole::Learner) {
                return Err(format!(
                    "store {store_id} holds no learner to remove (demote voters first)"
                ));
            }
            descriptor.replicas.retain(|replica| replica.store_id != *store_id);
        }
        OperatorStep::TransferLeader { to_store } => {
            let target = descriptor.replica_on_store(*to_store).copied();
            match target {
                Some(replica) if replica.role == ReplicaRole::Voter => *leader = Some(replica),
                _ => return Err(format!("store {to_store} holds no voter to lead")),
            }
            return Ok(());
        }
        OperatorStep::Split { keys } => {
            let inside = |key: &[u8]| {
                key > descriptor.start_key.as_ref()
                    && (descriptor.end_key.is_empty() || key < descriptor.end_key.as_ref())
            };
            if !keys.iter().all(|key| inside(key)) {
                return Err("split keys must lie strictly inside the range".into());
            }
            if !keys.windows(2).all(|pair| pair[0] < pair[1]) {
                return Err("split keys must be ascending".into());
            }
            descriptor.epoch.version += 1;
            return Ok(());
        }
    }
    descriptor.epoch.conf_ver += 1;
    if let Some(current) = leader.as_mut()
        && let Some(replica) = descriptor.replica(current.id)
    {
        *current = *replica;
    }
    Ok(())
}

fn set_role(descriptor: &mut RangeDescriptor, store: StoreId, role: ReplicaRole) {
    for replica in &mut descriptor.replicas {
        if replica.store_id == store {
            replica.role = role;
        }
    }
}

/// Where a step stands against a range heartbeat.
enum Progress {
    Done,
    Pending,
    Impossible(String),
}

/// An operator running on one range.
#[derive(Clone, Debug)]
pub struct Operator {
    /// What the API shows.
    pub info: OperatorInfo,
    /// The range's epoch when the operator started (a split is done once the version grew).
    start_epoch: RangeEpoch,
    /// The newest epoch reported since; older reports are ignored.
    last_epoch: RangeEpoch,
    /// When the current step started (or the operator, for step 0).
    step_started_ms: u64,
    /// The replica id allocated for each `AddLearner` step, by step index, kept for re-sends.
    new_replicas: BTreeMap<usize, ReplicaId>,
    /// The range's leader store at the latest heartbeat (it sends the snapshots).
    leader_store: Option<StoreId>,
    /// Stores whose replica of the range was catching up at the latest heartbeat.
    pending_stores: BTreeSet<StoreId>,
}

impl Operator {
    /// The step running now, if any remain.
    #[must_use]
    pub fn current_step(&self) -> Option<&OperatorStep> {
        self.info.steps.get(self.current_index())
    }

    /// When the current step started (ms, leader's clock).
    #[must_use]
    pub const fn step_started_ms(&self) -> u64 {
        self.step_started_ms
    }

    /// The replica id allocated for the `AddLearner` step at `step`, once it ran.
    #[must_use]
    pub fn new_replica(&self, step: usize) -> Option<ReplicaId> {
        self.new_replicas.get(&step).copied()
    }

    fn current_index(&self) -> usize {
        usize::try_from(self.info.current_step).unwrap_or(usize::MAX)
    }

    /// The stores whose snapshot slots the operator holds: for every `AddLearner` step not
    /// done, or done but whose learner is still catching up, its target (receiving) and the
    /// leader's store (sending).
    fn snapshot_stores(&self) -> Vec<StoreId> {
        let mut stores = Vec::new();
        for (index, step) in self.info.steps.iter().enumerate() {
            if let OperatorStep::AddLearner { store_id } = step
                && (index >= self.current_index() || self.pending_stores.contains(store_id))
            {
                stores.push(*store_id);
                stores.extend(self.leader_store);
            }
        }
        stores
    }
}

/// Runs operators on the placement leader: at most one per range, a cap on how many run, a
/// per-store limit on concurrent snapshots, and a short history of finished ones.
#[derive(Debug)]
pub struct OperatorController {
    config: ScheduleConfig,
    next_id: u64,
    running: BTreeMap<RangeId, Operator>,
    /// Finished operators, newest first, at most [`OPERATOR_HISTORY_MAX`].
    finished: VecDeque<OperatorInfo>,
}

impl OperatorController {
    /// A controller with no operators.
    #[must_use]
    pub fn new(config: ScheduleConfig) -> Self {
        Self { config, next_id: 1, running: BTreeMap::new(), finished: VecDeque::new() }
    }

    /// The scheduler's settings.
    #[must_use]
    pub const fn config(&self) -> &ScheduleConfig {
        &self.config
    }

    /// Snapshot slots taken on `store` by running operators (sending or receiving).
    #[must_use]
    pub fn snapshot_load(&self, store: StoreId) -> u32 {
        let count = self
            .running
            .values()
            .flat_map(Operator::snapshot_stores)
            .filter(|taken| *taken == store)
            .count();
        u32::try_from(count).unwrap_or(u32::MAX)
    }

    /// Starts an operator on `range`.
    ///
    /// # Errors
    ///
    /// The reason it is refused: an operator already runs on the range, the steps are empty
    /// or do not apply to the descriptor in order (see [`apply_step`]), `max_operators` run
    /// already, or a store would exceed `max_snapshots_per_store`.
    pub fn add(
        &mut self,
        range: &RangeView,
        kind: &str,
        reason: String,
        steps: Vec<OperatorStep>,
        now_ms: u64,
    ) -> Result<OperatorInfo, String> {
        let id = range.descriptor.id;
        if let Some(running) = self.running.get(&id) {
            return Err(format!(
                "operator {} ({}) already runs on range {id}",
                running.info.id, running.info.kind
            ));
        }
        if steps.is_empty() {
            return Err("an operator needs at least one step".into());
        }
        if self.running.len() >= self.config.max_operators {
            return Err(format!("{} operators run already (the maximum)", self.running.len()));
        }
        let (mut descriptor, mut leader) = (range.descriptor.clone(), range.leader);
        let mut snapshot_stores: BTreeMap<StoreId, u32> = BTreeMap::new();
        for (index, step) in steps.iter().enumerate() {
            if let OperatorStep::AddLearner { store_id } = step {
                *snapshot_stores.entry(*store_id).or_insert(0) += 1;
                if let Some(leader) = leader {
                    *snapshot_stores.entry(leader.store_id).or_insert(0) += 1;
                }
            }
            apply_step(&mut descriptor, &mut leader, step, ReplicaId(u64::MAX))
                .map_err(|error| format!("step {index} ({step:?}): {error}"))?;
        }
        for (store, extra) in snapshot_stores {
            let load = self.snapshot_load(store);
            if load + extra > self.config.max_snapshots_per_store {
                return Err(format!(
                    "store {store} has {load} snapshots in flight (limit {})",
                    self.config.max_snapshots_per_store
                ));
            }
        }
        let info = OperatorInfo {
            id: self.next_id,
            range: id,
            kind: kind.to_owned(),
            reason,
            steps,
            current_step: 0,
            status: OperatorStatus::Running,
            created_ms: now_ms,
        };
        self.next_id += 1;
        tracing::info!(
            range = id.0,
            operator = info.id,
            kind,
            reason = %info.reason,
            steps = ?info.steps,
            "operator started"
        );
        let epoch = range.descriptor.epoch;
        self.running.insert(
            id,
            Operator {
                info: info.clone(),
                start_epoch: epoch,
                last_epoch: epoch,
                step_started_ms: now_ms,
                new_replicas: BTreeMap::new(),
                leader_store: range.leader.map(|leader| leader.store_id),
                pending_stores: range.pending_replicas.iter().map(|r| r.store_id).collect(),
            },
        );
        Ok(info)
    }

    /// Cancels the operator running on `range`; whether one ran.
    pub fn cancel(&mut self, range: RangeId) -> bool {
        self.finish(range, OperatorStatus::Cancelled, "cancelled")
    }

    fn finish(&mut self, range: RangeId, status: OperatorStatus, why: &str) -> bool {
        let Some(mut operator) = self.running.remove(&range) else {
            return false;
        };
        operator.info.status = status;
        let outcome = match status {
            OperatorStatus::Running => "running",
            OperatorStatus::Finished => "finished",
            OperatorStatus::TimedOut => "timed_out",
            OperatorStatus::Cancelled => "cancelled",
            OperatorStatus::Failed => "failed",
        };
        metrics::counter!(
            "tessera_placement_operators_ended_total",
            "kind" => operator.info.kind.clone(),
            "status" => outcome
        )
        .increment(1);
        tracing::info!(
            range = range.0,
            operator = operator.info.id,
            kind = %operator.info.kind,
            ?status,
            step = operator.info.current_step,
            why,
            "operator ended"
        );
        self.finished.push_front(operator.info);
        self.finished.truncate(OPERATOR_HISTORY_MAX);
        true
    }

    /// Handles a range heartbeat: marks the operator's steps done from the reported
    /// descriptor and leader, times out a step older than `step_timeout_ms`, fails the
    /// operator when its step can no longer happen, and returns the current step's command
    /// (re-sent every heartbeat until done), or `None`. `alloc_id` gives the replica id of an
    /// `AddLearner` step the first time it runs; without one no command is sent this time.
    pub fn on_range_heartbeat(
        &mut self,
        range: &RangeView,
        now_ms: u64,
        alloc_id: &mut dyn FnMut() -> Option<u64>,
    ) -> Option<ScheduleCommand> {
        let id = range.descriptor.id;
        let operator = self.running.get_mut(&id)?;
        let epoch = range.descriptor.epoch;
        if epoch.is_stale_against(operator.last_epoch) {
            return None;
        }
        operator.last_epoch = epoch;
        operator.leader_store = range.leader.map(|leader| leader.store_id);
        operator.pending_stores = range.pending_replicas.iter().map(|r| r.store_id).collect();
        let outcome = loop {
            let Some(step) = operator.current_step() else {
                break Some((OperatorStatus::Finished, "every step done".to_owned()));
            };
            match progress(step, range, operator.start_epoch) {
                Progress::Done => {
                    operator.info.current_step += 1;
                    operator.step_started_ms = now_ms;
                }
                Progress::Impossible(why) => break Some((OperatorStatus::Failed, why)),
                Progress::Pending => {
                    if now_ms.saturating_sub(operator.step_started_ms)
                        >= self.config.step_timeout_ms
                    {
                        break Some((OperatorStatus::TimedOut, "step timed out".to_owned()));
                    }
                    break None;
                }
            }
        };
        if let Some((status, why)) = outcome {
            self.finish(id, status, &why);
            return None;
        }
        command(operator, range, alloc_id)
    }

    /// Times out operators whose current step is older than `step_timeout_ms` (their range
    /// stopped reporting).
    pub fn expire(&mut self, now_ms: u64) {
        let timeout = self.config.step_timeout_ms;
        let expired: Vec<RangeId> = self
            .running
            .iter()
            .filter(|(_, operator)| now_ms.saturating_sub(operator.step_started_ms) >= timeout)
            .map(|(range, _)| *range)
            .collect();
        for range in expired {
            self.finish(range, OperatorStatus::TimedOut, "no heartbeat completed the step in time");
        }
    }

    /// The operator running on `range`.
    #[must_use]
    pub fn running(&self, range: RangeId) -> Option<&Operator> {
        self.running.get(&range)
    }

    /// Every running operator, by range.
    pub fn running_operators(&self) -> impl Iterator<Item = &Operator> {
        self.running.values()
    }

    /// How many operators run.
    #[must_use]
    pub fn running_count(&self) -> usize {
        self.running.len()
    }

    /// Running operators (by range), then up to [`OPERATOR_HISTORY_MAX`] finished ones, newest
    /// first.
    #[must_use]
    pub fn list(&self) -> Vec<OperatorInfo> {
        self.running
            .values()
            .map(|operator| operator.info.clone())
            .chain(self.finished.iter().cloned())
            .collect()
    }

    /// Drops every operator and the history (on losing placement leadership).
    pub fn clear(&mut self) {
        self.running.clear();
        self.finished.clear();
    }
}

/// Where `step` stands given the reported range.
fn progress(step: &OperatorStep, range: &RangeView, start_epoch: RangeEpoch) -> Progress {
    let descriptor = &range.descriptor;
    let role_on = |store: StoreId| descriptor.replica_on_store(store).map(|replica| replica.role);
    match step {
        OperatorStep::AddLearner { store_id } => match role_on(*store_id) {
            Some(_) => Progress::Done,
            None => Progress::Pending,
        },
        OperatorStep::PromoteLearner { store_id } => match role_on(*store_id) {
            Some(ReplicaRole::Voter) => Progress::Done,
            Some(ReplicaRole::Learner | ReplicaRole::IncomingVoter) => Progress::Pending,
            Some(ReplicaRole::DemotingVoter) => {
                Progress::Impossible(format!("the replica on store {store_id} is being demoted"))
            }
            None => Progress::Impossible(format!("store {store_id} lost the learner to promote")),
        },
        OperatorStep::DemoteVoter { store_id } => match role_on(*store_id) {
            Some(ReplicaRole::Learner) | None => Progress::Done,
            Some(_) => Progress::Pending,
        },
        OperatorStep::RemoveReplica { store_id } => match role_on(*store_id) {
            None => Progress::Done,
            Some(ReplicaRole::Learner | ReplicaRole::DemotingVoter) => Progress::Pending,
            Some(role) => Progress::Impossible(format!(
                "store {store_id} holds a {role:?}, not a learner to remove"
            )),
        },
        OperatorStep::TransferLeader { to_store } => {
            if range.leader.is_some_and(|leader| leader.store_id == *to_store) {
                return Progress::Done;
            }
            match role_on(*to_store) {
                Some(role) if role.is_voter() => Progress::Pending,
                _ => Progress::Impossible(format!("store {to_store} holds no voter to lead")),
            }
        }
        OperatorStep::Split { .. } => {
            if descriptor.epoch.version > start_epoch.version {
                Progress::Done
            } else {
                Progress::Pending
            }
        }
    }
}

/// The command for the operator's current (pending) step, if it can be sent now.
fn command(
    operator: &mut Operator,
    range: &RangeView,
    alloc_id: &mut dyn FnMut() -> Option<u64>,
) -> Option<ScheduleCommand> {
    let index = operator.current_index();
    let step = operator.info.steps.get(index)?;
    let descriptor = &range.descriptor;
    let change = |op, replica| ScheduleCommand::ChangeReplicas {
        changes: vec![ReplicaChange { op, replica }],
    };
    match step {
        OperatorStep::AddLearner { store_id } => {
            let id = match operator.new_replicas.get(&index) {
                Some(id) => *id,
                None => {
                    let id = ReplicaId(alloc_id().filter(|id| *id != 0)?);
                    operator.new_replicas.insert(index, id);
                    id
                }
            };
            let replica = Replica { id, store_id: *store_id, role: ReplicaRole::Learner };
            Some(change(ReplicaChangeOp::AddLearner, replica))
        }
        OperatorStep::PromoteLearner { store_id } => {
            let replica = *descriptor.replica_on_store(*store_id)?;
            let caught_up = !range.pending_replicas.iter().any(|pending| pending.id == replica.id);
            (replica.role == ReplicaRole::Learner && caught_up)
                .then(|| change(ReplicaChangeOp::AddVoter, replica))
        }
        OperatorStep::DemoteVoter { store_id } => {
            let replica = *descriptor.replica_on_store(*store_id)?;
            let leads = range.leader.is_some_and(|leader| leader.store_id == *store_id);
            (replica.role == ReplicaRole::Voter && !leads)
                .then(|| change(ReplicaChangeOp::AddLearner, replica))
        }
        OperatorStep::RemoveReplica { store_id } => {
            let replica = *descriptor.replica_on_store(*store_id)?;
            (replica.role == ReplicaRole::Learner).then(|| change(ReplicaChangeOp::Remove, replica))
        }
        OperatorStep::TransferLeader { to_store } => {
            let to = *descriptor.replica_on_store(*to_store)?;
            (to.role == ReplicaRole::Voter).then_some(ScheduleCommand::TransferLeader { to })
        }
        OperatorStep::Split { keys } => Some(ScheduleCommand::Split { keys: keys.clone() }),
    }
}
