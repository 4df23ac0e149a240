//! Balancers: leaders by count, ranges by size, hot leaders by bytes per second. Each moves
//! load only from a store to a less loaded one by more than the move itself, so repeated
//! passes settle (see the module docs of `schedule`).

use std::cmp::Reverse;

use tessera_wire::ids::StoreId;
use tessera_wire::placement::{OperatorStep, PlacementRule, StoreState};

use super::{
    BALANCE_LEADER_OPERATORS_PER_PASS_MAX, BALANCE_RANGE_OPERATORS_PER_PASS_MAX,
    HOT_LEADER_OPERATORS_PER_PASS_MAX, Pass, RangeView, in_joint_state, is_voter, move_steps,
    range_weight, rule_for, store_matches,
};

impl<'a> Pass<'a> {
    /// Live `Up` stores, the only ones balancers move load to or between.
    fn balance_stores(&self) -> Vec<StoreId> {
        self.view
            .stores
            .keys()
            .copied()
            .filter(|id| self.state(*id) == StoreState::Up && self.alive(*id))
            .collect()
    }

    /// Whether a range is settled enough to balance: no operator, a leader, nothing pending
    /// or down, every replica on a live `Up` store, and exactly what its rule asks for.
    fn settled(&self, range: &RangeView, rule: &PlacementRule) -> bool {
        let descriptor = &range.descriptor;
        if !self.schedulable(descriptor.id)
            || range.leader.is_none()
            || in_joint_state(descriptor)
            || !range.pending_replicas.is_empty()
            || !range.down_replicas.is_empty()
        {
            return false;
        }
        let mut voters = 0_u64;
        let mut learners = 0_u64;
        for replica in &descriptor.replicas {
            let Some(store) = self.store(replica.store_id) else {
                return false;
            };
            if self.state(replica.store_id) != StoreState::Up || !self.alive(replica.store_id) {
                return false;
            }
            let constraints = if is_voter(replica) {
                voters += 1;
                &rule.voter_constraints
            } else {
                learners += 1;
                &rule.learner_constraints
            };
            if !store_matches(store, constraints) {
                return false;
            }
        }
        voters == u64::from(rule.voters) && learners == u64::from(rule.learners)
    }

    /// Voter stores of the range that may take its leadership from `from`: caught up, live,
    /// and matching the rule's leader preference when `from` does.
    fn leader_candidates(
        &self,
        range: &RangeView,
        rule: &PlacementRule,
        from: StoreId,
    ) -> Vec<StoreId> {
        let keep_preference = !rule.leader_preference.is_empty()
            && self.store(from).is_some_and(|store| store_matches(store, &rule.leader_preference));
        range
            .descriptor
            .replicas
            .iter()
            .filter(|replica| replica.store_id != from && self.can_lead(range, replica))
            .map(|replica| replica.store_id)
            .filter(|store_id| {
                !keep_preference
                    || self
                        .store(*store_id)
                        .is_some_and(|store| store_matches(store, &rule.leader_preference))
            })
            .collect()
    }

    /// Moves leaders from the stores with the most to voter stores with the fewest when the
    /// difference exceeds `leader_tolerance` (hot ranges are left to the hot balancer).
    pub(super) fn balance_leaders(&mut self) {
        let tolerance = u64::from(self.config.leader_tolerance.max(1));
        for _ in 0..BALANCE_LEADER_OPERATORS_PER_PASS_MAX {
            if self.operator_cap_reached() {
                return;
            }
            let stores = self.balance_stores();
            let Some(fewest) = stores.iter().map(|id| self.load(*id).leaders).min() else {
                return;
            };
            let mut sources = stores;
            sources.sort_by_key(|id| (Reverse(self.load(*id).leaders), *id));
            let mut found = None;
            'sources: for from in sources {
                let most = self.load(from).leaders;
                if most <= fewest + tolerance {
                    break;
                }
                for range in self.view.ranges.values() {
                    if range.leader_store() != Some(from) || self.is_hot(range) {
                        continue;
                    }
                    let rule = rule_for(&range.descriptor, self.view.rules, self.config);
                    if !self.settled(range, &rule) {
                        continue;
                    }
                    let target = self
                        .leader_candidates(range, &rule, from)
                        .into_iter()
                        .min_by_key(|id| (self.load(*id).leaders, *id));
                    if let Some(to) = target {
                        let fewer = self.load(to).leaders;
                        if most > fewer + tolerance {
                            found = Some((range, from, to, most, fewer));
                            break 'sources;
                        }
                    }
                }
            }
            let Some((range, from, to, most, fewer)) = found else {
                return;
            };
            let reason = format!(
                "store {from} has {most} leaders, store {to} {fewer} (tolerance {tolerance})"
            );
            let steps = vec![OperatorStep::TransferLeader { to_store: to }];
            if !self.propose(range, "balance-leader", reason, steps) {
                return;
            }
        }
    }

    /// Moves replicas from the stores with the most range bytes to ones with the least when
    /// the difference exceeds twice the range's size and `range_tolerance_ratio` of the
    /// mean, the target satisfies the rule and the spread does not get worse.
    pub(super) fn balance_ranges(&mut self) {
        for _ in 0..BALANCE_RANGE_OPERATORS_PER_PASS_MAX {
            if self.operator_cap_reached() {
                return;
            }
            let stores = self.balance_stores();
            if stores.len() < 2 {
                return;
            }
            let total: u64 = stores.iter().map(|id| self.load(*id).range_bytes).sum();
            #[allow(clippy::cast_precision_loss)]
            let tolerance = self.config.range_tolerance_ratio * total as f64 / stores.len() as f64;
            let least = stores.iter().map(|id| self.load(*id).range_bytes).min().unwrap_or(0);
            let mut sources = stores.clone();
            sources.sort_by_key(|id| (Reverse(self.load(*id).range_bytes), *id));
            let mut targets = stores;
            targets.sort_by_key(|id| (self.load(*id).range_bytes, *id));
            let found = sources
                .iter()
                .take_while(|from| self.load(**from).range_bytes > least)
                .find_map(|from| self.range_move_from(*from, &targets, tolerance));
            let Some((range, from, to, voter)) = found else {
                return;
            };
            let rule = rule_for(&range.descriptor, self.view.rules, self.config);
            let reason = format!(
                "store {from} holds {} range bytes, store {to} {} (range {} bytes)",
                self.load(from).range_bytes,
                self.load(to).range_bytes,
                range.approximate_size_bytes
            );
            let leader_to = self.leader_target(range, &rule, from, false).or(Some(to));
            let steps = move_steps(range, from, to, voter, leader_to);
            if !self.propose(range, "balance-range", reason, steps) {
                return;
            }
        }
    }

    /// A replica on `from` worth moving to one of `targets` (ascending by range bytes).
    fn range_move_from(
        &self,
        from: StoreId,
        targets: &[StoreId],
        tolerance: f64,
    ) -> Option<(&'a RangeView, StoreId, StoreId, bool)> {
        let source_bytes = self.load(from).range_bytes;
        for range in self.view.ranges.values() {
            let Some(replica) = range.descriptor.replica_on_store(from) else {
                continue;
            };
            if range.leader_store() == Some(from) && self.is_hot(range) {
                continue;
            }
            let rule = rule_for(&range.descriptor, self.view.rules, self.config);
            if !self.settled(range, &rule) {
                continue;
            }
            let Some(leader) = range.leader_store() else {
                continue;
            };
            if !self.has_snapshot_slot(leader) {
                continue;
            }
            let voter = is_voter(replica);
            let constraints =
                if voter { &rule.voter_constraints } else { &rule.learner_constraints };
            let mut group: Vec<StoreId> = range
                .descriptor
                .replicas
                .iter()
                .filter(|other| is_voter(other) == voter && other.store_id != from)
                .map(|other| other.store_id)
                .collect();
            group.push(from);
            let current = self.spread_of(&group, &rule.location_labels);
            group.pop();
            let weight = range_weight(range);
            for to in targets {
                let target_bytes = self.load(*to).range_bytes;
                let difference = source_bytes.saturating_sub(target_bytes);
                #[allow(clippy::cast_precision_loss)]
                if difference <= weight.saturating_mul(2) || difference as f64 <= tolerance {
                    break;
                }
                let fits = range.descriptor.replica_on_store(*to).is_none()
                    && self.has_snapshot_slot(*to)
                    && self.store(*to).is_some_and(|store| store_matches(store, constraints));
                if !fits {
                    continue;
                }
                group.push(*to);
                let moved = self.spread_of(&group, &rule.location_labels);
                group.pop();
                if moved >= current {
                    return Some((range, from, *to, voter));
                }
            }
        }
        None
    }

    /// Moves the leader of the hottest range off the store whose hot leaders carry the most
    /// bytes per second, to the coolest voter store, when that store stays cooler than the
    /// source was.
    pub(super) fn balance_hot_leaders(&mut self) {
        for _ in 0..HOT_LEADER_OPERATORS_PER_PASS_MAX {
            if self.operator_cap_reached() {
                return;
            }
            let mut sources = self.balance_stores();
            sources.retain(|id| self.load(*id).hot_bytes_per_sec > 0.0);
            sources.sort_by(|a, b| {
                self.load(*b).hot_bytes_per_sec.total_cmp(&self.load(*a).hot_bytes_per_sec)
            });
            let mut found = None;
            'sources: for from in sources {
                let source_load = self.load(from).hot_bytes_per_sec;
                let mut hot: Vec<&RangeView> = self
                    .view
                    .ranges
                    .values()
                    .filter(|range| range.leader_store() == Some(from) && self.is_hot(range))
                    .collect();
                hot.sort_by(|a, b| b.bytes_per_sec().total_cmp(&a.bytes_per_sec()));
                for range in hot {
                    let rule = rule_for(&range.descriptor, self.view.rules, self.config);
                    if !self.settled(range, &rule) {
                        continue;
                    }
                    let rate = range.bytes_per_sec();
                    let target =
                        self.leader_candidates(range, &rule, from).into_iter().min_by(|a, b| {
                            self.load(*a)
                                .hot_bytes_per_sec
                                .total_cmp(&self.load(*b).hot_bytes_per_sec)
                                .then(a.cmp(b))
                        });
                    if let Some(to) = target
                        && self.load(to).hot_bytes_per_sec + rate < source_load
                    {
                        found = Some((range, from, to, rate, source_load));
                        break 'sources;
                    }
                }
            }
            let Some((range, from, to, rate, source_load)) = found else {
                return;
            };
            let reason = format!(
                "store {from} leads {source_load:.0} hot bytes/s, store {to} {:.0}; range carries {rate:.0}",
                self.load(to).hot_bytes_per_sec
            );
            let steps = vec![OperatorStep::TransferLeader { to_store: to }];
            if !self.propose(range, "hot-leader", reason, steps) {
                return;
            }
        }
    }
}
