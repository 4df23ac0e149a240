//! Random client and fault actions: writes, reads, membership changes, leader transfers,
//! quiescence, crashes, partitions, compactions and forced campaigns.

use bytes::Bytes;
use tessera_raft::{ConfChange, ConfChangeStep, LogIndex, Membership, RaftError, ReplicaId, Role};

use crate::checker::Property;
use crate::kv::KEYS;
use crate::node::SimNode;
use crate::options::{ID_POOL, TICK};
use crate::world::{Event, World, trace};

impl World {
    /// One random action, then the next one scheduled (safety phase only).
    pub(crate) fn action(&mut self) {
        if !self.faults {
            return;
        }
        let w = self.opts.weights;
        let weights = [
            w.propose,
            w.read,
            w.conf_change,
            w.transfer,
            w.quiesce,
            w.crash,
            w.partition,
            w.compact,
            w.campaign,
        ];
        match self.rng.weighted(&weights) {
            0 => self.propose(),
            1 => self.read(),
            2 => self.change_membership(),
            3 => self.transfer(),
            4 => self.quiesce(),
            5 => self.crash_random(),
            6 => self.partition(),
            7 => {
                if let Some(id) = self.random_running() {
                    self.compact(id);
                }
            }
            _ => {
                if let Some(id) = self.random_running() {
                    trace!(self, "campaign {id}");
                    self.nodes.get_mut(&id).expect("running").raw_mut().campaign();
                }
            }
        }
        let gap = self.rng.between(self.opts.action_gap.0, self.opts.action_gap.1);
        self.schedule(gap, Event::Action);
    }

    /// The running nodes that believe they lead (deposed leaders included).
    fn believed_leaders(&self) -> Vec<ReplicaId> {
        self.nodes
            .values()
            .filter(|n| n.raw.as_ref().is_some_and(|raw| raw.raft().role() == Role::Leader))
            .map(|n| n.id)
            .collect()
    }

    /// Mostly a node that believes it leads (a client with a stale routing cache may well
    /// reach a deposed leader), then the leader of the highest term, sometimes any node.
    fn target(&mut self) -> Option<ReplicaId> {
        let leaders = self.believed_leaders();
        match self.rng.below(10) {
            0..=4 if !leaders.is_empty() => Some(*self.rng.pick(&leaders)),
            5..=7 if !leaders.is_empty() => self.current_leader(),
            _ => self.random_running(),
        }
    }

    /// Proposes a fresh write to `id`. A non-leader must refuse with `NotLeader`.
    pub(crate) fn propose_to(&mut self, id: ReplicaId) -> Option<(LogIndex, Bytes)> {
        let key = self.rng.below(KEYS);
        let data = self.fresh_write(key);
        let raw = self.nodes.get_mut(&id).expect("running").raw_mut();
        let leader = raw.raft().role() == Role::Leader;
        let result = raw.propose(data.clone());
        trace!(self, "propose {:?} to {id}: {result:?}", String::from_utf8_lossy(&data));
        match result {
            Ok(index) if leader => {
                self.stats.proposals += 1;
                return Some((index, data));
            }
            Err(RaftError::NotLeader { .. }) if !leader => {}
            Err(RaftError::TransferInProgress { .. } | RaftError::UncommittedLogFull) if leader => {
            }
            other => self.fail_with(
                Property::ReadyContract,
                format!("propose to {id} (leader: {leader}) returned {other:?}"),
            ),
        }
        None
    }

    fn propose(&mut self) {
        if let Some(id) = self.target() {
            self.propose_to(id);
        }
    }

    fn read(&mut self) {
        if self.rng.chance(300) {
            self.read_burst();
        } else if let Some(id) = self.target() {
            self.read_on(id);
        }
    }

    /// Reads on every node that believes it leads, at once: a deposed leader still holding
    /// a lease is where stale reads would come from.
    pub(crate) fn read_burst(&mut self) {
        let leaders = self.believed_leaders();
        for id in leaders {
            self.read_on(id);
        }
    }

    fn read_on(&mut self, id: ReplicaId) {
        let context = Bytes::from(format!("r{}", self.next_read));
        self.next_read += 1;
        // The read begins now: it must see everything applied anywhere so far.
        self.checker.on_read_request(id, context.clone());
        let raw = self.nodes.get_mut(&id).expect("running").raw_mut();
        let (role, leader) = (raw.raft().role(), raw.raft().leader());
        let result = raw.read_index(context.clone());
        trace!(self, "read_index {context:?} on {id}: {result:?}");
        match result {
            Ok(()) if role == Role::Leader => {
                let node = &self.nodes[&id];
                let asked = (id, node.raw().raft().term(), node.incarnation);
                self.leader_reads.insert(context, asked);
            }
            Ok(()) => {}
            Err(RaftError::NotLeader { .. }) if role != Role::Leader && !leader.is_some() => {}
            other => self.fail_with(
                Property::ReadyContract,
                format!("read_index on {id} ({role:?}, leader {leader}) returned {other:?}"),
            ),
        }
    }

    /// Ids that may join: never removed, not a member now.
    fn fresh_ids(&self, membership: &Membership) -> Vec<ReplicaId> {
        let members = membership.all_ids();
        (1..=ID_POOL)
            .map(ReplicaId)
            .filter(|id| !members.contains(id) && !self.removal_proposed.contains(id))
            .collect()
    }

    /// Proposes a random membership change on the leader (one at a time; at least one voter).
    pub(crate) fn change_membership(&mut self) {
        let Some(leader) = self.current_leader() else { return };
        let conf = self.nodes[&leader].raw().conf_state();
        let membership = Membership::from_conf_state(&conf);
        let change = if membership.is_joint() {
            if conf.auto_leave {
                return;
            }
            ConfChange::default()
        } else {
            let fresh = self.fresh_ids(&membership);
            let voters: Vec<ReplicaId> = membership.incoming.iter().copied().collect();
            let learners: Vec<ReplicaId> = membership.learners.iter().copied().collect();
            let mut steps = Vec::new();
            match self.rng.below(7) {
                0 | 1 if !fresh.is_empty() => {
                    steps.push(ConfChangeStep::AddLearner(*self.rng.pick(&fresh)));
                }
                2 if !fresh.is_empty() => {
                    steps.push(ConfChangeStep::AddVoter(*self.rng.pick(&fresh)));
                }
                3 if !learners.is_empty() => {
                    steps.push(ConfChangeStep::AddVoter(*self.rng.pick(&learners)));
                }
                4 if voters.len() > 1 => {
                    steps.push(ConfChangeStep::AddLearner(*self.rng.pick(&voters)));
                }
                5 if voters.len() > 1 || !learners.is_empty() => {
                    let mut removable = learners.clone();
                    if voters.len() > 1 {
                        removable.extend(&voters);
                    }
                    steps.push(ConfChangeStep::Remove(*self.rng.pick(&removable)));
                }
                6 if !fresh.is_empty() => {
                    steps.push(ConfChangeStep::AddVoter(*self.rng.pick(&fresh)));
                    steps.push(ConfChangeStep::Remove(*self.rng.pick(&voters)));
                }
                _ => return,
            }
            ConfChange { steps, explicit_leave: self.rng.chance(300), context: Bytes::new() }
        };
        let raw = self.nodes.get_mut(&leader).expect("running").raw_mut();
        let result = raw.propose_conf_change(&change);
        trace!(self, "propose {change:?} to {leader}: {result:?}");
        match result {
            Ok(_) => {
                self.stats.conf_changes += 1;
                for step in &change.steps {
                    match *step {
                        ConfChangeStep::AddVoter(id) | ConfChangeStep::AddLearner(id) => {
                            self.spawn(id);
                        }
                        ConfChangeStep::Remove(id) => {
                            self.removal_proposed.insert(id);
                        }
                    }
                }
            }
            Err(
                RaftError::ConfChangePending { .. }
                | RaftError::TransferInProgress { .. }
                | RaftError::UncommittedLogFull,
            ) => {}
            Err(error) => self.fail_with(
                Property::ReadyContract,
                format!("leader {leader} with {conf:?} refused {change:?}: {error}"),
            ),
        }
    }

    /// Creates and starts replica `id` if it never existed.
    fn spawn(&mut self, id: ReplicaId) {
        if self.nodes.contains_key(&id) {
            return;
        }
        let durable = self.fresh_store(false);
        self.nodes.insert(id, SimNode::new(id, durable));
        self.start(id);
    }

    fn transfer(&mut self) {
        let Some(leader) = self.current_leader() else { return };
        let conf = self.nodes[&leader].raw().conf_state();
        let others: Vec<ReplicaId> = conf
            .voters
            .iter()
            .chain(&conf.voters_outgoing)
            .copied()
            .filter(|&id| id != leader)
            .collect();
        if others.is_empty() {
            return;
        }
        let to = *self.rng.pick(&others);
        let result = self.nodes.get_mut(&leader).expect("running").raw_mut().transfer_leader(to);
        trace!(self, "transfer {leader} -> {to}: {result:?}");
        if let Err(error) = result {
            self.fail_with(
                Property::ReadyContract,
                format!("leader {leader} refused to transfer to voter {to}: {error}"),
            );
        }
    }

    fn quiesce(&mut self) {
        let Some(leader) = self.current_leader() else { return };
        let conf = self.nodes[&leader].raw().conf_state();
        let unreachable: Vec<ReplicaId> = Membership::from_conf_state(&conf)
            .all_ids()
            .into_iter()
            .filter(|&id| {
                id != leader
                    && (!self.nodes.get(&id).is_some_and(SimNode::running)
                        || !self.net.reachable(leader, id)
                        || !self.net.reachable(id, leader))
            })
            .collect();
        let raw = self.nodes.get_mut(&leader).expect("running").raw_mut();
        let quiesced = raw.quiesce(&unreachable);
        trace!(self, "quiesce {leader} (unreachable {unreachable:?}): {quiesced}");
    }

    fn crash_random(&mut self) {
        // Often the leader: leader changes in the middle of replication are where Raft's
        // subtle cases (Figure 8, lost acknowledgements) live.
        let leader = self.current_leader().filter(|_| self.rng.coin());
        let Some(id) = leader.or_else(|| self.random_running()) else { return };
        self.crash(id);
        let downtime = self.rng.between(self.opts.downtime.0, self.opts.downtime.1);
        self.schedule(downtime, Event::Restart(id));
    }

    fn partition(&mut self) {
        let mut all: Vec<ReplicaId> = self.nodes.keys().copied().collect();
        let heal_after = self.rng.between(2, 8) * u64::from(self.opts.election_ticks) * TICK;
        match self.rng.below(5) {
            0 => {
                self.rng.shuffle(&mut all);
                let size = usize::try_from(self.rng.between(1, all.len().max(2) as u64 - 1))
                    .expect("small");
                let side: Vec<ReplicaId> = all[..size.min(all.len())].to_vec();
                trace!(self, "split {side:?} from the rest");
                self.net.split(&side, &all);
                self.schedule(heal_after, Event::Heal);
            }
            1 => {
                // One-way cuts, often on the leader's links: a follower that stops hearing
                // the leader campaigns while the others still hear it (leases, check-quorum).
                let leader = self.current_leader();
                let cuts = self.rng.between(1, 4);
                for _ in 0..cuts {
                    let (mut from, mut to) = (*self.rng.pick(&all), *self.rng.pick(&all));
                    match leader {
                        Some(leader) if self.rng.chance(350) => from = leader,
                        Some(leader) if self.rng.chance(200) => to = leader,
                        _ => {}
                    }
                    if from != to {
                        trace!(self, "cut {from} -> {to}");
                        self.net.cut(from, to);
                    }
                }
                self.schedule(heal_after, Event::Heal);
            }
            2 => {
                // Mostly the leader: the partition that tests leases and check-quorum.
                let node = match self.current_leader() {
                    Some(leader) if self.rng.coin() => leader,
                    _ => *self.rng.pick(&all),
                };
                trace!(self, "isolate {node}");
                self.net.split(&[node], &all);
                self.schedule(heal_after, Event::Heal);
            }
            3 => {
                // Swizzle-clog: clog nodes one at a time, then unclog them in another order.
                self.rng.shuffle(&mut all);
                let count = usize::try_from(self.rng.between(1, all.len() as u64)).expect("small");
                let clogged: Vec<ReplicaId> = all[..count].to_vec();
                let step = self.rng.between(TICK / 2, 3 * TICK);
                let mut at = 0;
                for &id in &clogged {
                    self.schedule(at, Event::Clog(id));
                    at += step;
                }
                let mut order = clogged.clone();
                self.rng.shuffle(&mut order);
                at += self.rng.between(0, heal_after);
                for id in order {
                    self.schedule(at, Event::Unclog(id));
                    at += step;
                }
                trace!(self, "swizzle-clog {clogged:?}");
            }
            _ => {
                trace!(self, "heal");
                self.net.heal();
            }
        }
    }
}
