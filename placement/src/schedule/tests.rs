//! Scheduler tests over synthetic clusters. [`Sim`] plays the stores: it feeds range
//! heartbeats to the controller and applies the returned commands the way a store's
//! `replica_change` does, so operators run end to end and passes can be repeated until
//! nothing more is proposed.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use tessera_wire::ids::{NodeId, RangeId, StoreId};
use tessera_wire::placement::{
    ConstraintOp, DownReplica, LabelConstraint, OperatorStatus, OperatorStep, PlacementRule,
    ReplicaChangeOp, ScheduleCommand, Store, StoreLabel, StoreState, StoreStats,
};
use tessera_wire::raft::ReplicaId;
use tessera_wire::range::{RangeDescriptor, RangeEpoch, Replica, ReplicaRole};

use super::{
    ClusterView, OperatorController, RangeView, ScheduleConfig, ScheduleOutput, StoreView,
    effective_state, rule_for, rule_split_keys, schedule, store_matches,
};

const MIB: u64 = 1 << 20;

fn labels(pairs: &[(&str, &str)]) -> Vec<StoreLabel> {
    pairs
        .iter()
        .map(|(key, value)| StoreLabel { key: (*key).into(), value: (*value).into() })
        .collect()
}

fn store_view(id: u64, pairs: &[(&str, &str)]) -> StoreView {
    StoreView {
        store: Store {
            id: StoreId(id),
            node_id: NodeId(id),
            address: format!("127.0.0.1:{}", 20_000 + id),
            labels: labels(pairs),
            state: StoreState::Up,
        },
        stats: Some(StoreStats {
            store_id: StoreId(id),
            capacity_bytes: 1 << 40,
            available_bytes: 1 << 39,
            ..StoreStats::default()
        }),
        last_heartbeat_ms: Some(0),
    }
}

fn voter(id: u64, store: u64) -> Replica {
    Replica { id: ReplicaId(id), store_id: StoreId(store), role: ReplicaRole::Voter }
}

fn learner(id: u64, store: u64) -> Replica {
    Replica { id: ReplicaId(id), store_id: StoreId(store), role: ReplicaRole::Learner }
}

/// A range of voters on `stores` (replica ids `range * 100 + i`), led by `leader_store`.
fn range_view(id: u64, start: &str, end: &str, stores: &[u64], leader_store: u64) -> RangeView {
    let replicas: Vec<Replica> =
        stores.iter().zip(1..).map(|(store, i)| voter(id * 100 + i, *store)).collect();
    let leader = replicas.iter().copied().find(|replica| replica.store_id == StoreId(leader_store));
    RangeView {
        descriptor: RangeDescriptor {
            id: RangeId(id),
            start_key: Bytes::copy_from_slice(start.as_bytes()),
            end_key: Bytes::copy_from_slice(end.as_bytes()),
            epoch: RangeEpoch { conf_ver: 1, version: 1 },
            replicas,
        },
        leader,
        interval_ms: 10_000,
        ..RangeView::default()
    }
}

fn constraint(key: &str, op: ConstraintOp, values: &[&str]) -> LabelConstraint {
    LabelConstraint {
        key: key.into(),
        op,
        values: values.iter().map(|value| (*value).to_owned()).collect(),
    }
}

fn test_config() -> ScheduleConfig {
    ScheduleConfig {
        max_store_down_ms: 60_000,
        store_disconnected_ms: 5_000,
        step_timeout_ms: 30_000,
        ..ScheduleConfig::default()
    }
}

struct Sim {
    now: u64,
    stores: BTreeMap<StoreId, StoreView>,
    ranges: BTreeMap<RangeId, RangeView>,
    rules: Vec<PlacementRule>,
    controller: OperatorController,
    /// Stores that stopped heartbeating.
    silent: BTreeSet<StoreId>,
    next_id: u64,
    /// Kinds of every operator started.
    started: Vec<(RangeId, String)>,
}

impl Sim {
    fn new(config: ScheduleConfig) -> Self {
        Self {
            now: 1_000,
            stores: BTreeMap::new(),
            ranges: BTreeMap::new(),
            rules: Vec::new(),
            controller: OperatorController::new(config),
            silent: BTreeSet::new(),
            next_id: 10_000,
            started: Vec::new(),
        }
    }

    fn add_store(&mut self, id: u64, pairs: &[(&str, &str)]) {
        let mut view = store_view(id, pairs);
        view.last_heartbeat_ms = Some(self.now);
        self.stores.insert(StoreId(id), view);
    }

    fn add_range(&mut self, range: RangeView) {
        self.ranges.insert(range.descriptor.id, range);
    }

    fn heartbeat_stores(&mut self) {
        for (id, store) in &mut self.stores {
            if !self.silent.contains(id) {
                store.last_heartbeat_ms = Some(self.now);
            }
        }
    }

    /// One scheduling pass; starts what it proposes and stores the tombstones.
    fn pass(&mut self) -> ScheduleOutput {
        let view = ClusterView {
            now_ms: self.now,
            stores: &self.stores,
            ranges: &self.ranges,
            rules: &self.rules,
        };
        let output = schedule(&view, &self.controller);
        for operator in &output.operators {
            let range = &self.ranges[&operator.range];
            let added = self.controller.add(
                range,
                operator.kind,
                operator.reason.clone(),
                operator.steps.clone(),
                self.now,
            );
            if added.is_ok() {
                self.started.push((operator.range, operator.kind.to_owned()));
            }
        }
        for store in &output.tombstones {
            self.stores.get_mut(store).unwrap().store.state = StoreState::Tombstone;
        }
        output
    }

    /// Heartbeats every range until its operator has nothing more to send.
    fn drive(&mut self) {
        let ids: Vec<RangeId> = self.ranges.keys().copied().collect();
        for id in ids {
            for _ in 0..16 {
                let mut next_id = self.next_id;
                let mut alloc = || {
                    next_id += 1;
                    Some(next_id)
                };
                let range = &self.ranges[&id];
                let command = self.controller.on_range_heartbeat(range, self.now, &mut alloc);
                self.next_id = next_id;
                let Some(command) = command else { break };
                self.apply(id, &command);
            }
        }
    }

    /// Applies a command the way a store does (panicking where a store would refuse).
    fn apply(&mut self, id: RangeId, command: &ScheduleCommand) {
        match command {
            ScheduleCommand::ChangeReplicas { changes } => {
                assert_eq!(changes.len(), 1, "one change at a time");
                let change = changes[0];
                let range = self.ranges.get_mut(&id).unwrap();
                let descriptor = &mut range.descriptor;
                let existing = descriptor.replica(change.replica.id).map(|r| r.role);
                match (change.op, existing) {
                    (ReplicaChangeOp::AddLearner, None) => {
                        assert!(descriptor.replica_on_store(change.replica.store_id).is_none());
                        descriptor
                            .replicas
                            .push(Replica { role: ReplicaRole::Learner, ..change.replica });
                    }
                    (ReplicaChangeOp::AddLearner, Some(ReplicaRole::Voter)) => {
                        assert_ne!(range.leader.map(|l| l.id), Some(change.replica.id));
                        set_role(descriptor, change.replica.id, ReplicaRole::Learner);
                    }
                    (ReplicaChangeOp::AddVoter, Some(ReplicaRole::Learner)) => {
                        set_role(descriptor, change.replica.id, ReplicaRole::Voter);
                    }
                    (ReplicaChangeOp::Remove, Some(ReplicaRole::Learner)) => {
                        descriptor.replicas.retain(|r| r.id != change.replica.id);
                    }
                    (op, role) => panic!("a store refuses {op:?} on {role:?}"),
                }
                descriptor.epoch.conf_ver += 1;
            }
            ScheduleCommand::TransferLeader { to } => {
                let range = self.ranges.get_mut(&id).unwrap();
                let target = *range.descriptor.replica(to.id).unwrap();
                assert_eq!(target.role, ReplicaRole::Voter);
                range.leader = Some(target);
            }
            ScheduleCommand::Split { keys } => {
                let key = keys.first().cloned().unwrap();
                let mut left = self.ranges.remove(&id).unwrap();
                assert!(left.descriptor.contains_key(&key) && key != left.descriptor.start_key);
                self.next_id += 1;
                let right_id = RangeId(self.next_id);
                let mut right = left.clone();
                right.descriptor.id = right_id;
                right.descriptor.start_key = key.clone();
                left.descriptor.end_key = key;
                for replica in &mut right.descriptor.replicas {
                    self.next_id += 1;
                    replica.id = ReplicaId(self.next_id);
                }
                let leader_store = left.leader.map(|l| l.store_id);
                right.leader = right
                    .descriptor
                    .replicas
                    .iter()
                    .copied()
                    .find(|r| Some(r.store_id) == leader_store);
                left.descriptor.epoch.version += 1;
                right.descriptor.epoch.version += 1;
                left.approximate_size_bytes /= 2;
                right.approximate_size_bytes /= 2;
                self.ranges.insert(id, left);
                self.ranges.insert(right_id, right);
            }
            ScheduleCommand::Merge { .. } => panic!("the scheduler must never merge"),
        }
    }

    /// Passes (each after a second of heartbeats) until a pass proposes nothing and nothing
    /// runs; the number of passes it took.
    fn run_until_stable(&mut self, max_passes: usize) -> usize {
        for passes in 1..=max_passes {
            self.now += 1_000;
            self.heartbeat_stores();
            let output = self.pass();
            self.drive();
            if output.operators.is_empty() && self.controller.running_count() == 0 {
                return passes;
            }
        }
        panic!("no fixed point after {max_passes} passes: {:#?}", self.controller.list());
    }

    fn stores_of(&self, range: u64) -> BTreeSet<u64> {
        self.ranges[&RangeId(range)].descriptor.replicas.iter().map(|r| r.store_id.0).collect()
    }

    fn voter_stores_of(&self, range: u64) -> BTreeSet<u64> {
        self.ranges[&RangeId(range)]
            .descriptor
            .replicas
            .iter()
            .filter(|r| r.role == ReplicaRole::Voter)
            .map(|r| r.store_id.0)
            .collect()
    }

    fn label_of(&self, store: u64, key: &str) -> String {
        self.stores[&StoreId(store)]
            .store
            .labels
            .iter()
            .find(|label| label.key == key)
            .map(|label| label.value.clone())
            .unwrap_or_default()
    }

    fn leader_counts(&self) -> BTreeMap<u64, u64> {
        let mut counts: BTreeMap<u64, u64> = self.stores.keys().map(|id| (id.0, 0)).collect();
        for range in self.ranges.values() {
            *counts.get_mut(&range.leader.unwrap().store_id.0).unwrap() += 1;
        }
        counts
    }

    fn replica_counts(&self) -> BTreeMap<u64, u64> {
        let mut counts: BTreeMap<u64, u64> = self.stores.keys().map(|id| (id.0, 0)).collect();
        for range in self.ranges.values() {
            for replica in &range.descriptor.replicas {
                *counts.get_mut(&replica.store_id.0).unwrap() += 1;
            }
        }
        counts
    }

    /// Every range has its leader among its voters.
    fn assert_consistent(&self) {
        for range in self.ranges.values() {
            let leader = range.leader.unwrap();
            let replica = range.descriptor.replica(leader.id).unwrap();
            assert_eq!(replica.role, ReplicaRole::Voter, "leader of {:?}", range.descriptor);
        }
    }
}

fn set_role(descriptor: &mut RangeDescriptor, id: ReplicaId, role: ReplicaRole) {
    for replica in &mut descriptor.replicas {
        if replica.id == id {
            replica.role = role;
        }
    }
}

fn zone_sim() -> Sim {
    let mut sim = Sim::new(test_config());
    for (id, zone) in [(1, "a"), (2, "a"), (3, "b"), (4, "b"), (5, "c"), (6, "c")] {
        sim.add_store(id, &[("region", "r1"), ("zone", zone), ("host", &format!("h{id}"))]);
    }
    sim
}

// ---- pure helpers ----

#[test]
fn effective_state_follows_heartbeat_age() {
    let config = test_config();
    let mut store = store_view(1, &[]);
    store.last_heartbeat_ms = Some(10_000);
    assert_eq!(effective_state(&store, 10_000, &config), StoreState::Up);
    assert_eq!(effective_state(&store, 14_999, &config), StoreState::Up);
    assert_eq!(effective_state(&store, 15_000, &config), StoreState::Disconnected);
    assert_eq!(effective_state(&store, 69_999, &config), StoreState::Disconnected);
    assert_eq!(effective_state(&store, 70_000, &config), StoreState::Down);
    store.last_heartbeat_ms = None;
    assert_eq!(effective_state(&store, 0, &config), StoreState::Disconnected);
    for stored in [StoreState::Offline, StoreState::Tombstone, StoreState::Down] {
        store.store.state = stored;
        assert_eq!(effective_state(&store, 1_000_000, &config), stored);
    }
}

#[test]
fn store_matches_every_constraint_op() {
    let store = store_view(1, &[("region", "eu"), ("zone", "eu-1")]).store;
    let check = |key, op, values: &[&str]| store_matches(&store, &[constraint(key, op, values)]);
    assert!(check("region", ConstraintOp::In, &["us", "eu"]));
    assert!(!check("region", ConstraintOp::In, &["us"]));
    assert!(!check("disk", ConstraintOp::In, &["ssd"]));
    assert!(check("region", ConstraintOp::NotIn, &["us"]));
    assert!(!check("region", ConstraintOp::NotIn, &["eu"]));
    assert!(check("disk", ConstraintOp::NotIn, &["ssd"]));
    assert!(check("zone", ConstraintOp::Exists, &[]));
    assert!(!check("disk", ConstraintOp::Exists, &[]));
    assert!(check("disk", ConstraintOp::NotExists, &[]));
    assert!(!check("zone", ConstraintOp::NotExists, &[]));
    assert!(store_matches(&store, &[]));
    assert!(!store_matches(
        &store,
        &[
            constraint("region", ConstraintOp::In, &["eu"]),
            constraint("zone", ConstraintOp::In, &["eu-2"])
        ]
    ));
}

fn eu_rule() -> PlacementRule {
    PlacementRule {
        id: "eu".into(),
        start_key: Bytes::from_static(b"eu/"),
        end_key: Bytes::from_static(b"eu0"),
        voters: 3,
        learners: 0,
        voter_constraints: vec![constraint("region", ConstraintOp::In, &["eu"])],
        leader_preference: vec![constraint("region", ConstraintOp::In, &["eu"])],
        ..PlacementRule::default()
    }
}

#[test]
fn rule_for_picks_the_covering_rule_or_the_default() {
    let config = test_config();
    let rules = [eu_rule()];
    let inside = range_view(1, "eu/a", "eu/b", &[1], 1).descriptor;
    let rule = rule_for(&inside, &rules, &config);
    assert_eq!(rule.id, "eu");
    assert_eq!(rule.location_labels, config.location_labels);
    let outside = range_view(2, "eu0", "", &[1], 1).descriptor;
    let rule = rule_for(&outside, &rules, &config);
    assert_eq!(rule.id, "default");
    assert_eq!(rule.voters, 3);
    assert_eq!(rule.learners, 0);
    assert!(rule.voter_constraints.is_empty());
    assert_eq!(rule.location_labels, vec!["region", "zone", "host"]);
}

#[test]
fn rule_split_keys_are_the_boundaries_strictly_inside() {
    let rules = [eu_rule()];
    let whole = range_view(1, "", "", &[1], 1).descriptor;
    assert_eq!(rule_split_keys(&whole, &rules), vec![&b"eu/"[..], &b"eu0"[..]]);
    let left = range_view(1, "", "eu/", &[1], 1).descriptor;
    assert!(rule_split_keys(&left, &rules).is_empty());
    let straddle = range_view(1, "eu/x", "f", &[1], 1).descriptor;
    assert_eq!(rule_split_keys(&straddle, &rules), vec![&b"eu0"[..]]);
    let exact = range_view(1, "eu/", "eu0", &[1], 1).descriptor;
    assert!(rule_split_keys(&exact, &rules).is_empty());
}

// ---- replica checker ----

#[test]
fn default_rule_spreads_voters_across_zones() {
    let mut sim = zone_sim();
    sim.add_range(range_view(1, "", "", &[1], 1));
    sim.run_until_stable(20);
    let stores = sim.voter_stores_of(1);
    assert_eq!(stores.len(), 3);
    let zones: BTreeSet<String> = stores.iter().map(|s| sim.label_of(*s, "zone")).collect();
    assert_eq!(zones.len(), 3, "voters on {stores:?}");
    sim.assert_consistent();
}

#[test]
fn badly_spread_voters_move_to_distinct_zones() {
    let mut sim = zone_sim();
    // Two voters in zone a.
    sim.add_range(range_view(1, "", "", &[1, 2, 3], 1));
    sim.run_until_stable(20);
    let stores = sim.voter_stores_of(1);
    let zones: BTreeSet<String> = stores.iter().map(|s| sim.label_of(*s, "zone")).collect();
    assert_eq!(zones.len(), 3, "voters on {stores:?}");
    assert!(sim.started.iter().any(|(_, kind)| kind == "rule"));
}

#[test]
fn down_store_repaired_only_after_max_store_down() {
    let mut sim = Sim::new(test_config());
    for id in 1..=4 {
        sim.add_store(id, &[("host", &format!("h{id}"))]);
    }
    sim.add_range(range_view(1, "", "", &[1, 2, 3], 1));
    sim.silent.insert(StoreId(3));
    let silent_since = sim.now;
    // Disconnected, then not yet down: nothing moves.
    while sim.now + 1_000 < silent_since + 60_000 {
        sim.now += 1_000;
        sim.heartbeat_stores();
        let output = sim.pass();
        assert!(output.operators.is_empty(), "at {}: {output:?}", sim.now);
    }
    sim.now = silent_since + 60_000;
    sim.heartbeat_stores();
    let output = sim.pass();
    assert_eq!(output.operators.len(), 1);
    assert_eq!(output.operators[0].kind, "replica-repair");
    assert_eq!(
        output.operators[0].steps,
        vec![
            OperatorStep::AddLearner { store_id: StoreId(4) },
            OperatorStep::PromoteLearner { store_id: StoreId(4) },
            OperatorStep::DemoteVoter { store_id: StoreId(3) },
            OperatorStep::RemoveReplica { store_id: StoreId(3) },
        ]
    );
    sim.drive();
    sim.run_until_stable(10);
    assert_eq!(sim.voter_stores_of(1), BTreeSet::from([1, 2, 4]));
    assert_eq!(sim.stores_of(1), BTreeSet::from([1, 2, 4]));
}

#[test]
fn no_repair_without_a_live_quorum() {
    let mut sim = Sim::new(test_config());
    for id in 1..=5 {
        sim.add_store(id, &[("host", &format!("h{id}"))]);
    }
    sim.add_range(range_view(1, "", "", &[1, 2, 3], 1));
    sim.silent.extend([StoreId(2), StoreId(3)]);
    sim.now += 120_000;
    sim.heartbeat_stores();
    let output = sim.pass();
    assert!(output.operators.is_empty(), "{output:?}");
}

#[test]
fn offline_store_drained_then_tombstoned() {
    let mut sim = Sim::new(test_config());
    for id in 1..=4 {
        sim.add_store(id, &[("host", &format!("h{id}"))]);
    }
    // Store 3 leads one range and follows in the other.
    sim.add_range(range_view(1, "", "m", &[1, 2, 3], 3));
    sim.add_range(range_view(2, "m", "", &[1, 2, 3], 1));
    sim.stores.get_mut(&StoreId(3)).unwrap().store.state = StoreState::Offline;
    let output = sim.pass();
    assert_eq!(output.operators.len(), 2);
    assert!(output.operators.iter().all(|op| op.kind == "offline"));
    assert!(output.tombstones.is_empty());
    let led = &output.operators[0];
    assert!(matches!(led.steps[2], OperatorStep::TransferLeader { .. }), "{led:?}");
    sim.drive();
    sim.run_until_stable(10);
    assert_eq!(sim.stores_of(1), BTreeSet::from([1, 2, 4]));
    assert_eq!(sim.stores_of(2), BTreeSet::from([1, 2, 4]));
    assert_eq!(sim.stores[&StoreId(3)].store.state, StoreState::Tombstone);
    sim.assert_consistent();
}

#[test]
fn surplus_voter_removed_without_demoting_the_leader() {
    let mut sim = Sim::new(test_config());
    for id in 1..=4 {
        sim.add_store(id, &[("host", &format!("h{id}"))]);
    }
    sim.add_range(range_view(1, "", "", &[1, 2, 3, 4], 1));
    sim.run_until_stable(10);
    assert_eq!(sim.voter_stores_of(1).len(), 3);
    assert_eq!(sim.stores_of(1).len(), 3);
    sim.assert_consistent();
}

fn geo_sim() -> Sim {
    let mut sim = Sim::new(test_config());
    for (id, region, zone) in [
        (1, "us", "us-1"),
        (2, "us", "us-2"),
        (3, "us", "us-3"),
        (4, "eu", "eu-1"),
        (5, "eu", "eu-2"),
        (6, "eu", "eu-3"),
    ] {
        sim.add_store(id, &[("region", region), ("zone", zone)]);
    }
    sim
}

#[test]
fn rule_pins_eu_ranges_to_eu_stores_and_leaves_others() {
    let mut sim = geo_sim();
    // Spread over zones only: the other ranges are well spread in us (over regions, the
    // default rule would rightly move one of their voters to eu).
    sim.controller = OperatorController::new(ScheduleConfig {
        location_labels: vec!["zone".into()],
        ..test_config()
    });
    sim.rules.push(eu_rule());
    sim.add_range(range_view(1, "", "eu/", &[1, 2, 3], 1));
    sim.add_range(range_view(2, "eu/", "eu0", &[1, 2, 3], 2));
    sim.add_range(range_view(3, "eu0", "", &[1, 2, 3], 3));
    sim.run_until_stable(30);
    assert_eq!(sim.voter_stores_of(2), BTreeSet::from([4, 5, 6]));
    assert_eq!(sim.stores_of(2), BTreeSet::from([4, 5, 6]));
    let leader = sim.ranges[&RangeId(2)].leader.unwrap().store_id.0;
    assert_eq!(sim.label_of(leader, "region"), "eu");
    assert_eq!(sim.stores_of(1), BTreeSet::from([1, 2, 3]), "{:#?}", sim.controller.list());
    assert_eq!(sim.stores_of(3), BTreeSet::from([1, 2, 3]));
    assert!(sim.started.iter().all(|(range, _)| *range == RangeId(2)), "{:?}", sim.started);
    sim.assert_consistent();
}

#[test]
fn rule_adds_learners_for_local_reads_elsewhere() {
    let mut sim = geo_sim();
    let mut rule = eu_rule();
    rule.learners = 1;
    rule.learner_constraints = vec![constraint("region", ConstraintOp::In, &["us"])];
    sim.rules.push(rule);
    sim.add_range(range_view(1, "eu/", "eu0", &[4, 5, 6], 4));
    sim.run_until_stable(10);
    assert_eq!(sim.voter_stores_of(1), BTreeSet::from([4, 5, 6]));
    let stores = sim.stores_of(1);
    assert_eq!(stores.len(), 4);
    let learner = stores.difference(&BTreeSet::from([4, 5, 6])).next().copied().unwrap();
    assert_eq!(sim.label_of(learner, "region"), "us");
}

#[test]
fn leader_preference_moves_the_leader() {
    let mut sim = geo_sim();
    let mut rule = eu_rule();
    rule.voter_constraints.clear();
    sim.rules.push(rule);
    sim.add_range(range_view(1, "eu/", "eu0", &[1, 4, 5], 1));
    sim.run_until_stable(10);
    // Voters spread over regions stay; only the leader moved.
    assert_eq!(sim.stores_of(1), BTreeSet::from([1, 4, 5]));
    let leader = sim.ranges[&RangeId(1)].leader.unwrap().store_id.0;
    assert_eq!(sim.label_of(leader, "region"), "eu");
}

#[test]
fn ranges_split_at_rule_boundaries() {
    let mut sim = geo_sim();
    let mut rule = eu_rule();
    rule.voter_constraints.clear();
    rule.leader_preference.clear();
    sim.rules.push(rule);
    sim.add_range(range_view(1, "", "", &[1, 2, 4], 1));
    let output = sim.pass();
    assert_eq!(output.operators.len(), 1);
    assert_eq!(output.operators[0].kind, "split");
    assert_eq!(
        output.operators[0].steps,
        vec![OperatorStep::Split {
            keys: vec![Bytes::from_static(b"eu/"), Bytes::from_static(b"eu0")]
        }]
    );
    sim.drive();
    sim.run_until_stable(10);
    let spans: Vec<(Bytes, Bytes)> = sim
        .ranges
        .values()
        .map(|range| (range.descriptor.start_key.clone(), range.descriptor.end_key.clone()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(
        spans,
        vec![
            (Bytes::new(), Bytes::from_static(b"eu/")),
            (Bytes::from_static(b"eu/"), Bytes::from_static(b"eu0")),
            (Bytes::from_static(b"eu0"), Bytes::new()),
        ]
    );
}

// ---- balancers ----

#[test]
fn leader_balance_converges_and_does_not_flap() {
    let mut sim = Sim::new(test_config());
    for id in 1..=3 {
        sim.add_store(id, &[("host", &format!("h{id}"))]);
    }
    for id in 1..=30 {
        sim.add_range(range_view(
            id,
            &format!("k{id:03}"),
            &format!("k{:03}", id + 1),
            &[1, 2, 3],
            1,
        ));
    }
    let passes = sim.run_until_stable(40);
    assert!(passes > 1);
    let counts = sim.leader_counts();
    let most = counts.values().max().copied().unwrap();
    let fewest = counts.values().min().copied().unwrap();
    assert!(most - fewest <= 2, "{counts:?}");
    assert!(sim.started.iter().all(|(_, kind)| kind == "balance-leader"));
    // Fixed point: more passes change nothing.
    for _ in 0..5 {
        sim.now += 1_000;
        sim.heartbeat_stores();
        assert!(sim.pass().operators.is_empty());
    }
    assert_eq!(sim.leader_counts(), counts);
}

#[test]
fn leader_balance_proposes_a_few_per_pass() {
    let mut sim = Sim::new(test_config());
    for id in 1..=3 {
        sim.add_store(id, &[("host", &format!("h{id}"))]);
    }
    for id in 1..=30 {
        sim.add_range(range_view(
            id,
            &format!("k{id:03}"),
            &format!("k{:03}", id + 1),
            &[1, 2, 3],
            1,
        ));
    }
    let output = sim.pass();
    assert_eq!(output.operators.len(), super::BALANCE_LEADER_OPERATORS_PER_PASS_MAX);
}

#[test]
fn range_size_balance_fills_a_new_store() {
    let mut sim = Sim::new(test_config());
    for id in 1..=4 {
        sim.add_store(id, &[("host", &format!("h{id}"))]);
    }
    for id in 1..=8 {
        let mut range = range_view(
            id,
            &format!("k{id:03}"),
            &format!("k{:03}", id + 1),
            &[1, 2, 3],
            1 + id % 3,
        );
        range.approximate_size_bytes = 10 * MIB;
        sim.add_range(range);
    }
    sim.run_until_stable(60);
    let counts = sim.replica_counts();
    assert!(counts[&4] >= 5, "{counts:?}");
    let most = counts.values().max().copied().unwrap();
    let fewest = counts.values().min().copied().unwrap();
    assert!(most - fewest <= 2, "{counts:?}");
    assert!(sim.started.iter().any(|(_, kind)| kind == "balance-range"));
    for range in sim.ranges.values() {
        assert_eq!(range.descriptor.replicas.len(), 3);
    }
    sim.assert_consistent();
    for _ in 0..5 {
        sim.now += 1_000;
        sim.heartbeat_stores();
        assert!(sim.pass().operators.is_empty());
    }
}

#[test]
fn range_balance_keeps_rules_and_spread() {
    let mut sim = zone_sim();
    // Six ranges on one store per zone; stores 2, 4 and 6 are empty.
    for id in 1..=6 {
        let mut range =
            range_view(id, &format!("k{id:03}"), &format!("k{:03}", id + 1), &[1, 3, 5], 1);
        range.approximate_size_bytes = 10 * MIB;
        sim.add_range(range);
    }
    sim.run_until_stable(60);
    for id in 1..=6 {
        let stores = sim.voter_stores_of(id);
        let zones: BTreeSet<String> = stores.iter().map(|s| sim.label_of(*s, "zone")).collect();
        assert_eq!(zones.len(), 3, "range {id} on {stores:?}");
    }
    let counts = sim.replica_counts();
    assert!(counts.values().all(|count| *count >= 2), "{counts:?}");
}

#[test]
fn hot_leader_moves_off_the_hottest_store() {
    let config = ScheduleConfig { leader_tolerance: 100, ..test_config() };
    let mut sim = Sim::new(config);
    for id in 1..=3 {
        sim.add_store(id, &[("host", &format!("h{id}"))]);
    }
    for (id, written_bytes) in [(1, 100 * MIB), (2, 60 * MIB), (3, 0)] {
        let mut range =
            range_view(id, &format!("k{id:03}"), &format!("k{:03}", id + 1), &[1, 2, 3], 1);
        range.written_bytes = written_bytes;
        range.interval_ms = 10_000;
        sim.add_range(range);
    }
    let output = sim.pass();
    assert_eq!(output.operators.len(), 1, "{output:?}");
    assert_eq!(output.operators[0].kind, "hot-leader");
    assert_eq!(output.operators[0].range, RangeId(1));
    assert_eq!(
        output.operators[0].steps,
        vec![OperatorStep::TransferLeader { to_store: StoreId(2) }]
    );
    sim.drive();
    sim.run_until_stable(10);
    let leader = |id: u64| sim.ranges[&RangeId(id)].leader.unwrap().store_id;
    assert_ne!(leader(1), leader(2), "the two hot ranges end up led by different stores");
    // The cold range stays where it was: not hot, and leader balance is off.
    assert_eq!(leader(3), StoreId(1));
}

// ---- operator controller ----

fn move_steps_1_to_4() -> Vec<OperatorStep> {
    vec![
        OperatorStep::AddLearner { store_id: StoreId(4) },
        OperatorStep::PromoteLearner { store_id: StoreId(4) },
        OperatorStep::TransferLeader { to_store: StoreId(2) },
        OperatorStep::DemoteVoter { store_id: StoreId(1) },
        OperatorStep::RemoveReplica { store_id: StoreId(1) },
    ]
}

#[test]
fn controller_advances_steps_and_resends_commands() {
    let mut controller = OperatorController::new(test_config());
    let mut range = range_view(1, "", "", &[1, 2, 3], 1);
    let info = controller.add(&range, "admin", "test".into(), move_steps_1_to_4(), 0).unwrap();
    assert_eq!(info.status, OperatorStatus::Running);
    assert_eq!(controller.running_count(), 1);
    let allocations = std::cell::Cell::new(0);
    let mut alloc = || {
        allocations.set(allocations.get() + 1);
        Some(77)
    };
    let add = controller.on_range_heartbeat(&range, 10, &mut alloc).unwrap();
    let resent = controller.on_range_heartbeat(&range, 20, &mut alloc).unwrap();
    assert_eq!(add, resent);
    assert_eq!(allocations.get(), 1, "the id is allocated once");
    let ScheduleCommand::ChangeReplicas { changes } = add else { panic!("{add:?}") };
    assert_eq!(changes[0].op, ReplicaChangeOp::AddLearner);
    assert_eq!(changes[0].replica, learner(77, 4));
    assert_eq!(controller.running(RangeId(1)).unwrap().new_replica(0), Some(ReplicaId(77)));

    // The learner joined but is catching up: no promotion yet.
    range.descriptor.replicas.push(learner(77, 4));
    range.descriptor.epoch.conf_ver += 1;
    range.pending_replicas = vec![learner(77, 4)];
    assert_eq!(controller.on_range_heartbeat(&range, 30, &mut alloc), None);
    assert_eq!(controller.running(RangeId(1)).unwrap().info.current_step, 1);
    range.pending_replicas.clear();
    let promote = controller.on_range_heartbeat(&range, 40, &mut alloc).unwrap();
    assert_eq!(
        promote,
        ScheduleCommand::ChangeReplicas {
            changes: vec![tessera_wire::placement::ReplicaChange {
                op: ReplicaChangeOp::AddVoter,
                replica: learner(77, 4)
            }]
        }
    );

    // A stale heartbeat (older epoch) changes nothing.
    let mut stale = range_view(1, "", "", &[1, 2, 3], 1);
    stale.descriptor.epoch.conf_ver = 0;
    assert_eq!(controller.on_range_heartbeat(&stale, 45, &mut alloc), None);
    assert_eq!(controller.running(RangeId(1)).unwrap().info.current_step, 1);

    range.descriptor.replicas[3].role = ReplicaRole::Voter;
    range.descriptor.epoch.conf_ver += 1;
    let transfer = controller.on_range_heartbeat(&range, 50, &mut alloc).unwrap();
    assert_eq!(transfer, ScheduleCommand::TransferLeader { to: voter(102, 2) });
    range.leader = Some(voter(102, 2));
    let demote = controller.on_range_heartbeat(&range, 60, &mut alloc).unwrap();
    let ScheduleCommand::ChangeReplicas { changes } = demote else { panic!() };
    assert_eq!((changes[0].op, changes[0].replica), (ReplicaChangeOp::AddLearner, voter(101, 1)));
    range.descriptor.replicas[0].role = ReplicaRole::Learner;
    range.descriptor.epoch.conf_ver += 1;
    let remove = controller.on_range_heartbeat(&range, 70, &mut alloc).unwrap();
    let ScheduleCommand::ChangeReplicas { changes } = remove else { panic!() };
    assert_eq!((changes[0].op, changes[0].replica), (ReplicaChangeOp::Remove, learner(101, 1)));
    range.descriptor.replicas.remove(0);
    range.descriptor.epoch.conf_ver += 1;
    assert_eq!(controller.on_range_heartbeat(&range, 80, &mut alloc), None);
    assert_eq!(controller.running_count(), 0);
    let list = controller.list();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].status, OperatorStatus::Finished);
    assert_eq!(list[0].current_step, 5);
    assert_eq!(allocations.get(), 1);
}

#[test]
fn controller_sends_nothing_without_an_id() {
    let mut controller = OperatorController::new(test_config());
    let range = range_view(1, "", "", &[1, 2, 3], 1);
    controller.add(&range, "admin", "test".into(), move_steps_1_to_4(), 0).unwrap();
    assert_eq!(controller.on_range_heartbeat(&range, 1, &mut || None), None);
    assert_eq!(controller.running(RangeId(1)).unwrap().new_replica(0), None);
    let command = controller.on_range_heartbeat(&range, 2, &mut || Some(5)).unwrap();
    let ScheduleCommand::ChangeReplicas { changes } = command else { panic!() };
    assert_eq!(changes[0].replica.id, ReplicaId(5));
}

#[test]
fn controller_times_out_a_slow_step() {
    let mut controller = OperatorController::new(test_config());
    let range = range_view(1, "", "", &[1, 2, 3], 1);
    let steps = vec![OperatorStep::TransferLeader { to_store: StoreId(2) }];
    controller.add(&range, "admin", "test".into(), steps, 1_000).unwrap();
    assert!(controller.on_range_heartbeat(&range, 30_999, &mut || None).is_some());
    assert_eq!(controller.on_range_heartbeat(&range, 31_000, &mut || None), None);
    assert_eq!(controller.running_count(), 0);
    assert_eq!(controller.list()[0].status, OperatorStatus::TimedOut);
}

#[test]
fn controller_expires_operators_of_silent_ranges() {
    let mut controller = OperatorController::new(test_config());
    let range = range_view(1, "", "", &[1, 2, 3], 1);
    let steps = vec![OperatorStep::TransferLeader { to_store: StoreId(2) }];
    controller.add(&range, "admin", "test".into(), steps, 0).unwrap();
    controller.expire(29_999);
    assert_eq!(controller.running_count(), 1);
    controller.expire(30_000);
    assert_eq!(controller.running_count(), 0);
    assert_eq!(controller.list()[0].status, OperatorStatus::TimedOut);
}

#[test]
fn controller_cancels_and_clears() {
    let mut controller = OperatorController::new(test_config());
    let range = range_view(1, "", "", &[1, 2, 3], 1);
    let steps = vec![OperatorStep::TransferLeader { to_store: StoreId(2) }];
    controller.add(&range, "admin", "test".into(), steps.clone(), 0).unwrap();
    assert!(controller.cancel(RangeId(1)));
    assert!(!controller.cancel(RangeId(1)));
    assert_eq!(controller.list()[0].status, OperatorStatus::Cancelled);
    assert_eq!(controller.on_range_heartbeat(&range, 1, &mut || None), None);
    let second = controller.add(&range, "admin", "again".into(), steps, 2).unwrap();
    assert_eq!(second.id, 2);
    let list = controller.list();
    assert_eq!((list[0].id, list[0].status), (2, OperatorStatus::Running));
    assert_eq!((list[1].id, list[1].status), (1, OperatorStatus::Cancelled));
    controller.clear();
    assert_eq!(controller.running_count(), 0);
    assert!(controller.list().is_empty());
}

#[test]
fn controller_refuses_invalid_operators() {
    let config = ScheduleConfig { max_operators: 1, ..test_config() };
    let mut controller = OperatorController::new(config);
    let range = range_view(1, "", "m", &[1, 2, 3], 1);
    let mut add = |steps: Vec<OperatorStep>| controller.add(&range, "admin", "t".into(), steps, 0);
    assert!(add(vec![]).is_err());
    assert!(add(vec![OperatorStep::DemoteVoter { store_id: StoreId(1) }]).is_err(), "leader");
    assert!(add(vec![OperatorStep::RemoveReplica { store_id: StoreId(2) }]).is_err(), "voter");
    assert!(add(vec![OperatorStep::AddLearner { store_id: StoreId(2) }]).is_err(), "holds one");
    assert!(add(vec![OperatorStep::PromoteLearner { store_id: StoreId(4) }]).is_err());
    assert!(add(vec![OperatorStep::TransferLeader { to_store: StoreId(4) }]).is_err());
    assert!(add(vec![OperatorStep::Split { keys: vec![Bytes::from_static(b"z")] }]).is_err());
    assert!(add(vec![OperatorStep::Split { keys: vec![Bytes::new()] }]).is_err());
    assert!(add(vec![OperatorStep::Split { keys: vec![] }]).is_ok(), "the store picks the key");
    let steps = vec![OperatorStep::TransferLeader { to_store: StoreId(2) }];
    assert!(
        controller.add(&range, "admin", "t".into(), steps.clone(), 0).is_err(),
        "one per range"
    );
    let other = range_view(2, "m", "", &[1, 2, 3], 1);
    assert!(controller.add(&other, "admin", "t".into(), steps, 0).is_err(), "max_operators");
}

#[test]
fn controller_fails_an_operator_whose_learner_vanished() {
    let mut controller = OperatorController::new(test_config());
    let mut range = range_view(1, "", "", &[1, 2, 3], 1);
    let steps = vec![
        OperatorStep::AddLearner { store_id: StoreId(4) },
        OperatorStep::PromoteLearner { store_id: StoreId(4) },
    ];
    controller.add(&range, "admin", "t".into(), steps, 0).unwrap();
    controller.on_range_heartbeat(&range, 1, &mut || Some(9)).unwrap();
    range.descriptor.replicas.push(learner(9, 4));
    range.descriptor.epoch.conf_ver += 1;
    controller.on_range_heartbeat(&range, 2, &mut || None).unwrap();
    range.descriptor.replicas.pop();
    range.descriptor.epoch.conf_ver += 1;
    assert_eq!(controller.on_range_heartbeat(&range, 3, &mut || None), None);
    assert_eq!(controller.list()[0].status, OperatorStatus::Failed);
}

#[test]
fn controller_split_done_when_version_grows() {
    let mut controller = OperatorController::new(test_config());
    let mut range = range_view(1, "", "", &[1, 2, 3], 1);
    let keys = vec![Bytes::from_static(b"m")];
    controller
        .add(&range, "split", "t".into(), vec![OperatorStep::Split { keys: keys.clone() }], 0)
        .unwrap();
    assert_eq!(
        controller.on_range_heartbeat(&range, 1, &mut || None),
        Some(ScheduleCommand::Split { keys })
    );
    range.descriptor.epoch.conf_ver += 1;
    assert!(controller.on_range_heartbeat(&range, 2, &mut || None).is_some());
    range.descriptor.epoch.version += 1;
    range.descriptor.end_key = Bytes::from_static(b"m");
    assert_eq!(controller.on_range_heartbeat(&range, 3, &mut || None), None);
    assert_eq!(controller.list()[0].status, OperatorStatus::Finished);
}

#[test]
fn controller_limits_snapshots_per_store() {
    let config = ScheduleConfig { max_snapshots_per_store: 2, ..test_config() };
    let mut controller = OperatorController::new(config);
    let add_voter = vec![
        OperatorStep::AddLearner { store_id: StoreId(4) },
        OperatorStep::PromoteLearner { store_id: StoreId(4) },
    ];
    let mut ranges: Vec<RangeView> = (1..=3)
        .map(|id| range_view(id, &format!("k{id}"), &format!("k{}", id + 1), &[1, 2, 3], id))
        .collect();
    for range in &ranges[..2] {
        controller.add(range, "admin", "t".into(), add_voter.clone(), 0).unwrap();
    }
    assert_eq!(controller.snapshot_load(StoreId(4)), 2);
    assert_eq!(controller.snapshot_load(StoreId(1)), 1, "the leader's store sends");
    assert_eq!(controller.snapshot_load(StoreId(3)), 0);
    let refused = controller.add(&ranges[2], "admin", "t".into(), add_voter.clone(), 0);
    assert!(refused.unwrap_err().contains("snapshots"));
    // The first learner joined but still catches up: the slot stays taken.
    controller.on_range_heartbeat(&ranges[0], 1, &mut || Some(50)).unwrap();
    ranges[0].descriptor.replicas.push(learner(50, 4));
    ranges[0].descriptor.epoch.conf_ver += 1;
    ranges[0].pending_replicas = vec![learner(50, 4)];
    assert_eq!(controller.on_range_heartbeat(&ranges[0], 2, &mut || None), None);
    assert_eq!(controller.snapshot_load(StoreId(4)), 2);
    assert!(controller.add(&ranges[2], "admin", "t".into(), add_voter.clone(), 0).is_err());
    // Caught up: the slot is free while the promotion runs.
    ranges[0].pending_replicas.clear();
    assert!(controller.on_range_heartbeat(&ranges[0], 3, &mut || None).is_some());
    assert_eq!(controller.snapshot_load(StoreId(4)), 1);
    assert!(controller.add(&ranges[2], "admin", "t".into(), add_voter, 0).is_ok());
}

#[test]
fn scheduler_respects_snapshot_limit_and_operator_cap() {
    let config = ScheduleConfig { max_snapshots_per_store: 1, ..test_config() };
    let mut sim = Sim::new(config);
    for id in 1..=4 {
        sim.add_store(id, &[("host", &format!("h{id}"))]);
    }
    // Three ranges missing a voter, all led by store 1, which sends one snapshot at a time.
    for id in 1..=3 {
        sim.add_range(range_view(id, &format!("k{id}"), &format!("k{}", id + 1), &[1, 2], 1));
    }
    let output = sim.pass();
    let adds = output.operators.iter().filter(|op| op.kind == "replica-repair").count();
    assert_eq!(adds, 1, "{output:?}");
    sim.drive();
    sim.run_until_stable(20);
    for id in 1..=3 {
        assert_eq!(sim.voter_stores_of(id).len(), 3);
    }

    let config = ScheduleConfig { max_operators: 2, ..test_config() };
    let mut sim = Sim::new(config);
    for id in 1..=3 {
        sim.add_store(id, &[("host", &format!("h{id}"))]);
    }
    for id in 1..=30 {
        sim.add_range(range_view(
            id,
            &format!("k{id:03}"),
            &format!("k{:03}", id + 1),
            &[1, 2, 3],
            1,
        ));
    }
    assert_eq!(sim.pass().operators.len(), 2);
    assert_eq!(sim.pass().operators.len(), 0, "the cap counts running operators");
}

#[test]
fn down_replicas_reported_by_the_leader_block_unsafe_changes() {
    let mut sim = Sim::new(test_config());
    for id in 1..=4 {
        sim.add_store(id, &[("host", &format!("h{id}"))]);
    }
    let mut range = range_view(1, "", "", &[1, 2, 3], 1);
    // Store 3 is down for good; the leader also reports replica 2 as unresponsive.
    range.down_replicas = vec![DownReplica { replica: voter(102, 2), down_ms: 90_000 }];
    sim.add_range(range);
    sim.silent.insert(StoreId(3));
    sim.now += 120_000;
    sim.heartbeat_stores();
    assert!(sim.pass().operators.is_empty());
}
