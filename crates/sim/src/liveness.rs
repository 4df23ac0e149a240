//! The liveness phase: faults stop, the network heals, every crashed member restarts and
//! removed replicas are shut down; then within a bound a leader must emerge, a fresh write
//! must commit and be applied by every member of the final configuration, and all members
//! must converge on the same state.

use bytes::Bytes;
use tessera_raft::{ConfChange, LogIndex, Membership, ReplicaId, Role, Term};

use crate::checker::Property;
use crate::options::TICK;
use crate::world::{World, trace};

/// The write the liveness phase waits for.
#[derive(Debug, Clone)]
struct Goal {
    index: LogIndex,
    term: Term,
    data: Bytes,
}

impl World {
    pub(crate) fn liveness(&mut self) {
        self.faults = false;
        // Raft's timing requirement, broadcast time well below the election timeout: message
        // delays and fsyncs at most a twentieth of it (a vote takes two of each).
        let election = u64::from(self.opts.election_ticks) * TICK;
        let cap = election / 20;
        self.net.calm(cap);
        self.opts.fsync.0 = self.opts.fsync.0.min(cap);
        self.opts.fsync.1 = self.opts.fsync.1.min(cap);
        trace!(self, "liveness phase: network healed, faults off");
        let ids: Vec<ReplicaId> = self.nodes.keys().copied().collect();
        for id in ids {
            let node = &self.nodes[&id];
            if !node.running() && !node.retired {
                self.start(id);
            }
        }
        let start = self.now;
        // A leader within 20 election timeouts (of at most 2 * election_ticks each); then the
        // write and the catch-up of every member, which may need many round trips when the
        // in-flight window and the messages are small.
        let last = self.nodes.values().filter_map(|n| n.raw.as_ref()).map(|r| r.last_index().0);
        let applied = self.nodes.values().filter(|n| n.running()).map(|n| n.kv_applied.0);
        let lag = last.max().unwrap_or(0) - applied.min().unwrap_or(0) + 20;
        let window = (self.opts.inflight_msgs_max as u64).min(4);
        let catch_up = lag * 6 * cap.max(TICK) / window;
        // Without pre-vote, every candidate with a short log resets everyone's timer: elections
        // may take many rounds, each failing with a fair probability.
        let leader_deadline = start + 40 * election;
        let deadline = leader_deadline + 20 * election + catch_up;
        let mut goal: Option<Goal> = None;
        let mut last_attempt = 0;
        loop {
            self.retire_removed();
            let leader = self.current_leader();
            if leader.is_none() && self.now > leader_deadline && goal.is_none() {
                self.fail_with(
                    Property::Liveness,
                    format!(
                        "no leader {} ticks into the liveness phase",
                        (self.now - start) / TICK
                    ),
                );
            }
            if self.now > deadline {
                self.fail_with(
                    Property::Liveness,
                    format!(
                        "no convergence {} ticks into the liveness phase (goal {goal:?})",
                        (self.now - start) / TICK
                    ),
                );
            }
            if let Some(leader) = leader {
                if goal.as_ref().is_some_and(|g| self.goal_lost(leader, g)) {
                    trace!(self, "liveness goal {goal:?} lost");
                    goal = None;
                }
                if self.now >= last_attempt + TICK {
                    last_attempt = self.now;
                    self.leave_joint(leader);
                    if goal.is_none() {
                        goal = self.propose_goal(leader);
                    }
                }
                if let Some(g) = &goal
                    && self.converged(leader, g)
                {
                    let ticks = (self.now - start) / TICK;
                    self.stats.liveness_ticks_max = ticks;
                    trace!(self, "liveness: converged after {ticks} ticks");
                    self.await_reads(self.now + 4 * election);
                    return;
                }
            }
            if !self.step() {
                self.fail_with(Property::Liveness, "the event queue ran dry".to_owned());
            }
        }
    }

    /// Every read a leader accepted must be answered while it stays leader (of that term, in
    /// that life): a client would wait for it forever.
    fn await_reads(&mut self, deadline: u64) {
        loop {
            let pending: Vec<(Bytes, ReplicaId)> = self
                .leader_reads
                .iter()
                .filter(|(_, (id, term, incarnation))| {
                    self.nodes.get(id).is_some_and(|n| {
                        n.incarnation == *incarnation
                            && n.raw.as_ref().is_some_and(|raw| {
                                raw.raft().role() == Role::Leader && raw.raft().term() == *term
                            })
                    })
                })
                .map(|(context, (id, _, _))| (context.clone(), *id))
                .collect();
            if pending.is_empty() {
                return;
            }
            if self.now > deadline {
                self.fail_with(
                    Property::Liveness,
                    format!("reads accepted by a leader that still leads are never answered: {pending:?}"),
                );
            }
            if !self.step() {
                self.fail_with(Property::Liveness, "the event queue ran dry".to_owned());
            }
        }
    }

    /// Shuts down, for good, replicas removed by an applied membership change, once every
    /// remaining member has applied that change too (until then a lagging member may still
    /// need the removed replica's vote, in the joint configuration it still applies).
    fn retire_removed(&mut self) {
        let (removed_at, members) =
            (self.config.0, Membership::from_conf_state(&self.config.1).all_ids());
        // A member still needs `id` while it has not applied the change (its membership, say
        // the snapshot's right after a restart, may still count `id`'s vote).
        let still_needed = |id: ReplicaId| {
            members.iter().any(|m| {
                self.nodes.get(m).is_none_or(|n| {
                    n.raw.as_ref().is_none_or(|raw| {
                        n.kv_applied < removed_at
                            || Membership::from_conf_state(&raw.conf_state())
                                .all_ids()
                                .contains(&id)
                    })
                })
            })
        };
        let removed: Vec<ReplicaId> = self
            .nodes
            .values()
            .filter(|n| !n.retired && self.removal_proposed.contains(&n.id))
            .filter(|n| !members.contains(&n.id) && !still_needed(n.id))
            .map(|n| n.id)
            .collect();
        for id in removed {
            trace!(self, "retire {id} (removed at {})", self.config.0);
            let node = self.nodes.get_mut(&id).expect("listed");
            node.raw = None;
            node.retired = true;
            node.incarnation += 1;
            node.disk.clear();
            node.fsync_scheduled = false;
            node.leading = None;
        }
    }

    /// A joint configuration that waits for an explicit leave gets one.
    fn leave_joint(&mut self, leader: ReplicaId) {
        let raw = self.nodes.get_mut(&leader).expect("running").raw_mut();
        let conf = raw.conf_state();
        if !conf.voters_outgoing.is_empty() && !conf.auto_leave {
            let result = raw.propose_conf_change(&ConfChange::default());
            trace!(self, "liveness: leave joint on {leader}: {result:?}");
        }
    }

    fn propose_goal(&mut self, leader: ReplicaId) -> Option<Goal> {
        let (index, data) = self.propose_to(leader)?;
        let term = self.nodes[&leader].raw().raft().term();
        trace!(self, "liveness: goal {term}/{index} on {leader}");
        Some(Goal { index, term, data })
    }

    /// Whether the goal write can no longer commit: another entry was applied at its index,
    /// or the current leader's log has another term there.
    fn goal_lost(&self, leader: ReplicaId, goal: &Goal) -> bool {
        if let Some((term, _, _)) = self.checker.applied_at(goal.index) {
            return term != goal.term;
        }
        let raw = self.nodes[&leader].raw();
        raw.raft().term() != goal.term && raw.term_at(goal.index) != Some(goal.term)
    }

    /// Whether the goal is applied by every member of the leader's configuration and every
    /// member has applied the leader's whole log. Members that did must hold the same state.
    fn converged(&self, leader: ReplicaId, goal: &Goal) -> bool {
        let Some((term, _, data)) = self.checker.applied_at(goal.index) else { return false };
        if term != goal.term || *data != goal.data {
            return false;
        }
        let raw = self.nodes[&leader].raw();
        let last = raw.last_index();
        let leader_node = &self.nodes[&leader];
        if raw.committed() != last || leader_node.kv_applied != last {
            return false;
        }
        let members = Membership::from_conf_state(&raw.conf_state()).all_ids();
        let mut all = true;
        for id in &members {
            let Some(node) = self.nodes.get(id).filter(|n| n.running() && n.kv_applied == last)
            else {
                all = false;
                continue;
            };
            if node.kv != leader_node.kv {
                self.fail_with(
                    Property::StateMachineSafety,
                    format!(
                        "{id} and leader {leader} both applied up to {last} but hold {:?} and {:?}",
                        node.kv.encode(),
                        leader_node.kv.encode()
                    ),
                );
            }
        }
        all
    }
}
