//! Per-range checks: rule-boundary splits, the replica checker (repair, drain, counts,
//! constraints, spread) and leader preference.

use tessera_wire::ids::StoreId;
use tessera_wire::placement::{LabelConstraint, OperatorStep, PlacementRule, StoreState};
use tessera_wire::range::{Replica, ReplicaRole};

use super::{
    Pass, RangeView, in_joint_state, is_voter, move_steps, removal_steps, rule_for,
    rule_split_keys, spread, store_matches,
};

/// An operator a check wants: kind, reason, steps.
type Proposal = (&'static str, String, Vec<OperatorStep>);
/// How good a new store is for a replica (bigger is better): spread, fewest replicas, most
/// available bytes.
type TargetScore = (Vec<usize>, std::cmp::Reverse<u64>, u64);
/// How good removing a replica is (bigger is better): spread left, not the leader, most
/// replicas on its store, store id (for determinism).
type RemovalScore = (Vec<usize>, bool, u64, StoreId);

impl Pass<'_> {
    /// Runs the checks of one range (with no running operator) in priority order and
    /// proposes the first operator one of them asks for.
    pub(super) fn check_range(&mut self, range: &RangeView) {
        let descriptor = &range.descriptor;
        let id = descriptor.id.0;
        if in_joint_state(descriptor) {
            tracing::debug!(range = id, "range in a joint configuration: not checked");
            return;
        }
        let keys = rule_split_keys(descriptor, self.view.rules);
        if !keys.is_empty() {
            let reason = format!("placement rule boundaries inside the range: {keys:?}");
            self.propose(range, "split", reason, vec![OperatorStep::Split { keys }]);
            return;
        }
        if range.leader.is_none() {
            tracing::debug!(range = id, "range has no known leader: not checked");
            return;
        }
        let voters: Vec<Replica> = descriptor.replicas.iter().copied().filter(is_voter).collect();
        let live_voters = voters
            .iter()
            .filter(|voter| self.alive(voter.store_id) && !range.is_reported_down(voter))
            .count();
        if live_voters < voters.len() / 2 + 1 {
            tracing::warn!(
                range = id,
                voters = voters.len(),
                live_voters,
                "fewer than a quorum of voters alive: no safe repair"
            );
            return;
        }
        let rule = rule_for(descriptor, self.view.rules, self.config);
        if let Some((kind, reason, steps)) = self.replica_check(range, &rule) {
            self.propose(range, kind, reason, steps);
            return;
        }
        if let Some((kind, reason, steps)) = self.leader_preference_check(range, &rule) {
            self.propose(range, kind, reason, steps);
        }
    }

    fn replica_check(&self, range: &RangeView, rule: &PlacementRule) -> Option<Proposal> {
        let voters = role_group(range, true);
        let learners = role_group(range, false);
        self.repair_check(range, rule, &voters, true)
            .or_else(|| self.repair_check(range, rule, &learners, false))
            .or_else(|| self.missing_voters_check(range, rule, &voters, &learners))
            .or_else(|| self.missing_learners_check(range, rule, &voters, &learners))
            .or_else(|| self.misplaced_check(range, rule, &voters, true))
            .or_else(|| self.misplaced_check(range, rule, &learners, false))
            .or_else(|| self.surplus_check(range, rule, &voters, true))
            .or_else(|| self.surplus_check(range, rule, &learners, false))
            .or_else(|| self.spread_check(range, rule, &voters, true))
            .or_else(|| self.spread_check(range, rule, &learners, false))
    }

    fn wanted(rule: &PlacementRule, voter: bool) -> (usize, &[LabelConstraint]) {
        let (count, constraints) = if voter {
            (rule.voters, &rule.voter_constraints)
        } else {
            (rule.learners, &rule.learner_constraints)
        };
        (usize::try_from(count).unwrap_or(usize::MAX), constraints)
    }

    /// Replaces (or, when surplus, removes) a replica on a `Down` or tombstoned store, then
    /// one on an `Offline` store.
    fn repair_check(
        &self,
        range: &RangeView,
        rule: &PlacementRule,
        group: &[Replica],
        voter: bool,
    ) -> Option<Proposal> {
        let (wanted, constraints) = Self::wanted(rule, voter);
        let role = if voter { "voter" } else { "learner" };
        for (kind, states) in [
            ("replica-repair", &[StoreState::Down, StoreState::Tombstone][..]),
            ("offline", &[StoreState::Offline][..]),
        ] {
            for replica in
                group.iter().filter(|replica| states.contains(&self.state(replica.store_id)))
            {
                let from = replica.store_id;
                let state = self.state(from);
                let leader_to = self.leader_target(range, rule, from, false);
                let leads = range.leader_store() == Some(from);
                if group.len() > wanted && (!leads || leader_to.is_some()) {
                    let reason = format!(
                        "remove surplus {role} on {state:?} store {from} ({} {role}s, rule {} wants {wanted})",
                        group.len(),
                        rule.id
                    );
                    return Some((kind, reason, removal_steps(range, from, voter, leader_to)));
                }
                let others = stores_except(group, from);
                let Some(to) = self.pick_target(range, &others, constraints, &rule.location_labels)
                else {
                    tracing::warn!(
                        range = range.descriptor.id.0,
                        store = from.0,
                        ?state,
                        "no store can take the {role} to replace"
                    );
                    continue;
                };
                let reason = format!("replace {role} on {state:?} store {from} with store {to}");
                let steps = move_steps(range, from, to, voter, leader_to.or(Some(to)));
                return Some((kind, reason, steps));
            }
        }
        None
    }

    fn missing_voters_check(
        &self,
        range: &RangeView,
        rule: &PlacementRule,
        voters: &[Replica],
        learners: &[Replica],
    ) -> Option<Proposal> {
        let (wanted, constraints) = Self::wanted(rule, true);
        if voters.len() >= wanted {
            return None;
        }
        let (wanted_learners, _) = Self::wanted(rule, false);
        if learners.len() > wanted_learners {
            let promotable = learners.iter().find(|learner| {
                self.state(learner.store_id) == StoreState::Up
                    && self.alive(learner.store_id)
                    && !range.is_pending(learner)
                    && self
                        .store(learner.store_id)
                        .is_some_and(|store| store_matches(store, constraints))
            });
            if let Some(learner) = promotable {
                let reason = format!(
                    "{} voters, rule {} wants {wanted}: promote surplus learner on store {}",
                    voters.len(),
                    rule.id,
                    learner.store_id
                );
                let steps = vec![OperatorStep::PromoteLearner { store_id: learner.store_id }];
                return Some(("replica-repair", reason, steps));
            }
        }
        let others = stores_except(voters, StoreId(0));
        let Some(to) = self.pick_target(range, &others, constraints, &rule.location_labels) else {
            tracing::warn!(range = range.descriptor.id.0, "no store can take a missing voter");
            return None;
        };
        let reason = format!(
            "{} voters, rule {} wants {wanted}: add one on store {to}",
            voters.len(),
            rule.id
        );
        let steps = vec![
            OperatorStep::AddLearner { store_id: to },
            OperatorStep::PromoteLearner { store_id: to },
        ];
        Some(("replica-repair", reason, steps))
    }

    fn missing_learners_check(
        &self,
        range: &RangeView,
        rule: &PlacementRule,
        voters: &[Replica],
        learners: &[Replica],
    ) -> Option<Proposal> {
        let (wanted, constraints) = Self::wanted(rule, false);
        if learners.len() >= wanted {
            return None;
        }
        let (wanted_voters, _) = Self::wanted(rule, true);
        if voters.len() > wanted_voters {
            let demotable = voters.iter().find(|voter| {
                self.state(voter.store_id) == StoreState::Up
                    && self
                        .store(voter.store_id)
                        .is_some_and(|store| store_matches(store, constraints))
                    && (range.leader_store() != Some(voter.store_id)
                        || self.leader_target(range, rule, voter.store_id, false).is_some())
            });
            if let Some(voter) = demotable {
                let from = voter.store_id;
                let mut steps = Vec::new();
                if range.leader_store() == Some(from)
                    && let Some(to_store) = self.leader_target(range, rule, from, false)
                {
                    steps.push(OperatorStep::TransferLeader { to_store });
                }
                steps.push(OperatorStep::DemoteVoter { store_id: from });
                let reason = format!(
                    "{} learners, rule {} wants {wanted}: demote surplus voter on store {from}",
                    learners.len(),
                    rule.id
                );
                return Some(("replica-repair", reason, steps));
            }
        }
        let others = stores_except(learners, StoreId(0));
        let Some(to) = self.pick_target(range, &others, constraints, &rule.location_labels) else {
            tracing::warn!(range = range.descriptor.id.0, "no store can take a missing learner");
            return None;
        };
        let reason = format!(
            "{} learners, rule {} wants {wanted}: add one on store {to}",
            learners.len(),
            rule.id
        );
        Some(("replica-repair", reason, vec![OperatorStep::AddLearner { store_id: to }]))
    }

    /// Moves a replica whose store violates the rule's constraints (or removes it when the
    /// group has a surplus and no store fits).
    fn misplaced_check(
        &self,
        range: &RangeView,
        rule: &PlacementRule,
        group: &[Replica],
        voter: bool,
    ) -> Option<Proposal> {
        let (wanted, constraints) = Self::wanted(rule, voter);
        let role = if voter { "voter" } else { "learner" };
        for replica in group {
            let from = replica.store_id;
            if self.store(from).is_some_and(|store| store_matches(store, constraints)) {
                continue;
            }
            let leader_to = self.leader_target(range, rule, from, false);
            let leads = range.leader_store() == Some(from);
            let others = stores_except(group, from);
            if let Some(to) = self.pick_target(range, &others, constraints, &rule.location_labels) {
                let reason = format!(
                    "{role} on store {from} violates rule {} constraints: move it to store {to}",
                    rule.id
                );
                let steps = move_steps(range, from, to, voter, leader_to.or(Some(to)));
                return Some(("rule", reason, steps));
            }
            if group.len() > wanted && (!leads || leader_to.is_some()) {
                let reason = format!(
                    "surplus {role} on store {from} violates rule {} constraints: remove it",
                    rule.id
                );
                return Some(("rule", reason, removal_steps(range, from, voter, leader_to)));
            }
            tracing::debug!(
                range = range.descriptor.id.0,
                store = from.0,
                "no store fits a misplaced {role}"
            );
        }
        None
    }

    fn surplus_check(
        &self,
        range: &RangeView,
        rule: &PlacementRule,
        group: &[Replica],
        voter: bool,
    ) -> Option<Proposal> {
        let (wanted, _) = Self::wanted(rule, voter);
        if group.len() <= wanted {
            return None;
        }
        let role = if voter { "voter" } else { "learner" };
        let removable: Vec<Replica> = group
            .iter()
            .copied()
            .filter(|replica| {
                range.leader_store() != Some(replica.store_id)
                    || self.leader_target(range, rule, replica.store_id, false).is_some()
            })
            .collect();
        let from = self.pick_removal(range, &removable, group, &rule.location_labels)?;
        let leader_to = self.leader_target(range, rule, from, false);
        let reason = format!(
            "{} {role}s, rule {} wants {wanted}: remove the one on store {from}",
            group.len(),
            rule.id
        );
        Some(("rule", reason, removal_steps(range, from, voter, leader_to)))
    }

    /// Moves one replica when another store spreads the group better over the location
    /// labels (only for settled ranges: nothing pending or down).
    fn spread_check(
        &self,
        range: &RangeView,
        rule: &PlacementRule,
        group: &[Replica],
        voter: bool,
    ) -> Option<Proposal> {
        if !range.pending_replicas.is_empty() || !range.down_replicas.is_empty() || group.len() < 2
        {
            return None;
        }
        if group.iter().any(|replica| self.state(replica.store_id) != StoreState::Up) {
            return None;
        }
        let (_, constraints) = Self::wanted(rule, voter);
        let labels = &rule.location_labels;
        let current = self.spread_of(&stores_except(group, StoreId(0)), labels);
        let mut best: Option<(Vec<usize>, bool, StoreId, StoreId)> = None;
        for replica in group {
            let from = replica.store_id;
            let leads = range.leader_store() == Some(from);
            if leads && self.leader_target(range, rule, from, false).is_none() {
                continue;
            }
            let mut others = stores_except(group, from);
            let Some(to) = self.pick_target(range, &others, constraints, labels) else {
                continue;
            };
            others.push(to);
            let candidate = self.spread_of(&others, labels);
            let better = match &best {
                None => candidate > current,
                Some((best_spread, best_leads, _, _)) => {
                    (&candidate, !leads) > (best_spread, !*best_leads)
                }
            };
            if better {
                best = Some((candidate, leads, from, to));
            }
        }
        let (new_spread, _, from, to) = best?;
        let role = if voter { "voter" } else { "learner" };
        let reason = format!(
            "move {role} from store {from} to store {to}: spread over {labels:?} {current:?} -> {new_spread:?}"
        );
        let leader_to = self.leader_target(range, rule, from, false);
        Some(("rule", reason, move_steps(range, from, to, voter, leader_to.or(Some(to)))))
    }

    fn leader_preference_check(&self, range: &RangeView, rule: &PlacementRule) -> Option<Proposal> {
        if rule.leader_preference.is_empty() {
            return None;
        }
        let from = range.leader_store()?;
        if self.store(from).is_some_and(|store| store_matches(store, &rule.leader_preference)) {
            return None;
        }
        let to = self.leader_target(range, rule, from, true)?;
        let reason = format!("rule {} prefers the leader on store {to}, not store {from}", rule.id);
        Some(("rule", reason, vec![OperatorStep::TransferLeader { to_store: to }]))
    }

    /// The best voter store to lead instead of `exclude`: a caught-up voter on a live `Up`
    /// store, matching the rule's leader preference if one can (or, with `preferred_only`,
    /// must), with the fewest leaders.
    pub(super) fn leader_target(
        &self,
        range: &RangeView,
        rule: &PlacementRule,
        exclude: StoreId,
        preferred_only: bool,
    ) -> Option<StoreId> {
        let mut best: Option<(bool, std::cmp::Reverse<u64>, std::cmp::Reverse<StoreId>)> = None;
        for replica in &range.descriptor.replicas {
            let store_id = replica.store_id;
            if store_id == exclude || !self.can_lead(range, replica) {
                continue;
            }
            let preferred = !rule.leader_preference.is_empty()
                && self
                    .store(store_id)
                    .is_some_and(|store| store_matches(store, &rule.leader_preference));
            if preferred_only && !preferred {
                continue;
            }
            let key = (
                preferred,
                std::cmp::Reverse(self.load(store_id).leaders),
                std::cmp::Reverse(store_id),
            );
            if best.as_ref().is_none_or(|best| key > *best) {
                best = Some(key);
            }
        }
        best.map(|(_, _, std::cmp::Reverse(store))| store)
    }

    /// Whether the replica may take leadership: a caught-up voter on a live `Up` store.
    pub(super) fn can_lead(&self, range: &RangeView, replica: &Replica) -> bool {
        replica.role == ReplicaRole::Voter
            && self.state(replica.store_id) == StoreState::Up
            && self.alive(replica.store_id)
            && !range.is_pending(replica)
            && !range.is_reported_down(replica)
    }

    pub(super) fn spread_of(&self, stores: &[StoreId], labels: &[String]) -> Vec<usize> {
        let stores: Vec<_> = stores.iter().filter_map(|id| self.store(*id)).collect();
        spread(&stores, labels)
    }

    /// The best new store for a replica joining `group` (the stores of the other replicas of
    /// its role): `Up`, matching `constraints`, not holding the range, with a snapshot slot;
    /// best spread over `labels` first, then fewest replicas, then most available space.
    pub(super) fn pick_target(
        &self,
        range: &RangeView,
        group: &[StoreId],
        constraints: &[LabelConstraint],
        labels: &[String],
    ) -> Option<StoreId> {
        let mut set: Vec<StoreId> = group.to_vec();
        let mut best: Option<(TargetScore, StoreId)> = None;
        for (id, view) in self.view.stores {
            if self.state(*id) != StoreState::Up
                || range.descriptor.replica_on_store(*id).is_some()
                || !store_matches(&view.store, constraints)
                || !self.has_snapshot_slot(*id)
            {
                continue;
            }
            set.push(*id);
            let key = (
                self.spread_of(&set, labels),
                std::cmp::Reverse(self.load(*id).replicas),
                self.available_bytes(*id),
            );
            set.pop();
            if best.as_ref().is_none_or(|(best, _)| key > *best) {
                best = Some((key, *id));
            }
        }
        best.map(|(_, id)| id)
    }

    /// The replica of `candidates` whose removal leaves `group` best spread; then not the
    /// leader; then on the store with the most replicas.
    fn pick_removal(
        &self,
        range: &RangeView,
        candidates: &[Replica],
        group: &[Replica],
        labels: &[String],
    ) -> Option<StoreId> {
        let mut best: Option<(RemovalScore, StoreId)> = None;
        for candidate in candidates {
            let store = candidate.store_id;
            let key = (
                self.spread_of(&stores_except(group, store), labels),
                range.leader_store() != Some(store),
                self.load(store).replicas,
                store,
            );
            if best.as_ref().is_none_or(|(best, _)| key > *best) {
                best = Some((key, store));
            }
        }
        best.map(|(_, store)| store)
    }
}

/// The stores of `group` without `except`.
fn stores_except(group: &[Replica], except: StoreId) -> Vec<StoreId> {
    group.iter().map(|replica| replica.store_id).filter(|store| *store != except).collect()
}

/// The range's voters (`voter`) or learners.
fn role_group(range: &RangeView, voter: bool) -> Vec<Replica> {
    range.descriptor.replicas.iter().copied().filter(|replica| is_voter(replica) == voter).collect()
}
