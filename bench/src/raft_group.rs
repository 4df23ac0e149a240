//! One Raft group whose replicas all live in this process and are driven on the calling
//! thread: every replica persists into its own [`MemStorage`], and messages move between
//! per-replica inboxes (a [`Network`]) as Rust values (nothing is encoded, written to disk or
//! sent).
//!
//! Ready handling follows the contract of `tessera_raft` (crate documentation) with
//! synchronous persistence, the same steps as the raft-rs baseline
//! (`bench/raft-rs-baseline/README.md`, "Driving method"):
//!
//! 1. `ready()`;
//! 2. persist into the replica's `MemStorage`: the snapshot if any (never in these
//!    benchmarks), `append(entries)`, and the hard state if it changed;
//! 3. route `messages` and `persisted_messages` into the destinations' inboxes (persistence
//!    is synchronous, so both may leave at once);
//! 4. count the committed entries: normal entries with a payload (not a leader's no-op);
//! 5. `advance(&ready)`. Our core has no `LightReady`: what the acknowledgement makes
//!    possible (the leader counting its own durable entries toward a commit) shows up in the
//!    next `ready()`, which the same `while has_ready()` loop picks up at once.

use tessera_raft::{
    ConfState, Config, Entry, EntryKind, MemStorage, Message, RawNode, ReplicaId, Role,
};

/// The replicas of one group, ids `1..=n`. Replica `id` is at index `id - 1`.
#[derive(Debug)]
pub struct Group {
    nodes: Vec<RawNode<MemStorage>>,
}

/// Messages on their way to the replicas of the group being driven: inbox `id - 1` holds what
/// replica `id` has yet to step. A group is always settled before the next one is driven, so
/// many groups can share one network (and its buffers stay warm, as a store's would).
#[derive(Debug, Default)]
pub struct Network {
    inboxes: Vec<Vec<Message>>,
}

impl Network {
    /// Empty inboxes for replicas `1..=replicas`.
    #[must_use]
    pub fn new(replicas: u64) -> Self {
        Self { inboxes: (0..replicas).map(|_| Vec::new()).collect() }
    }

    /// Whether every inbox is empty.
    #[must_use]
    pub fn is_idle(&self) -> bool {
        self.inboxes.iter().all(Vec::is_empty)
    }
}

/// What driving a group did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Activity {
    /// Readys handled (on every replica).
    pub readys: u64,
    /// Messages routed from one replica to another (each is one message on the network).
    pub messages: u64,
    /// Normal entries with a payload applied on the replica the caller counts (see
    /// [`Group::round`]).
    pub applied: u64,
}

impl std::ops::AddAssign for Activity {
    fn add_assign(&mut self, other: Self) {
        self.readys += other.readys;
        self.messages += other.messages;
        self.applied += other.applied;
    }
}

impl Group {
    /// A new group of `replicas` voters, ids `1..=replicas`, each over an empty
    /// `MemStorage` whose membership is all of them. `config` gives each replica's config.
    ///
    /// # Panics
    /// If `config` gives an invalid configuration.
    pub fn new(replicas: u64, config: impl Fn(ReplicaId) -> Config) -> Self {
        let voters: Vec<ReplicaId> = (1..=replicas).map(ReplicaId).collect();
        let nodes = voters
            .iter()
            .map(|&id| {
                let storage = MemStorage::new_with_conf_state(ConfState {
                    voters: voters.clone(),
                    ..ConfState::default()
                });
                RawNode::new(config(id), storage).expect("the benchmark's raft config is valid")
            })
            .collect();
        Self { nodes }
    }

    /// Replica `id`.
    pub fn node(&self, id: ReplicaId) -> &RawNode<MemStorage> {
        &self.nodes[index_of(id)]
    }

    /// Replica `id`, mutably.
    pub fn node_mut(&mut self, id: ReplicaId) -> &mut RawNode<MemStorage> {
        &mut self.nodes[index_of(id)]
    }

    /// Every replica, in id order.
    pub fn nodes(&self) -> &[RawNode<MemStorage>] {
        &self.nodes
    }

    /// The replicas that are leader (one in a healthy group).
    pub fn leaders(&self) -> Vec<ReplicaId> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, node)| node.raft().role() == Role::Leader)
            .map(|(index, _)| id_of(index))
            .collect()
    }

    /// Whether any replica has a Ready or any inbox of `network` holds a message.
    pub fn is_busy(&self, network: &Network) -> bool {
        !network.is_idle() || self.nodes.iter().any(RawNode::has_ready)
    }

    /// One tick for every replica, or only for those not quiesced when `skip_quiesced`
    /// (as the store does: it stops ticking quiesced groups). Returns how many were ticked.
    pub fn tick(&mut self, skip_quiesced: bool) -> usize {
        let mut ticked = 0;
        for node in &mut self.nodes {
            if skip_quiesced && node.is_quiesced() {
                continue;
            }
            node.tick();
            ticked += 1;
        }
        ticked
    }

    /// One round: every replica's Readys handled in id order (until it has none left), then
    /// every inbox stepped into its replica in id order. Messages produced by `step` are
    /// picked up by the next round. `applied` in the result counts entries applied on
    /// `count_applied_on` only.
    pub fn round(&mut self, network: &mut Network, count_applied_on: ReplicaId) -> Activity {
        let mut activity = Activity::default();
        for (index, node) in self.nodes.iter_mut().enumerate() {
            let drained = drain_ready(node, &mut network.inboxes);
            activity.readys += drained.readys;
            activity.messages += drained.messages;
            if id_of(index) == count_applied_on {
                activity.applied += drained.applied;
            }
        }
        for (node, inbox) in self.nodes.iter_mut().zip(&mut network.inboxes) {
            for message in inbox.drain(..) {
                node.step(message).expect("in-memory raft messages between members are valid");
            }
        }
        activity
    }

    /// Rounds until no replica has a Ready and every inbox is empty.
    ///
    /// # Panics
    /// If the group is still busy after `max_rounds` rounds.
    pub fn settle(
        &mut self,
        network: &mut Network,
        count_applied_on: ReplicaId,
        max_rounds: usize,
    ) -> Activity {
        let mut activity = Activity::default();
        for _ in 0..max_rounds {
            if !self.is_busy(network) {
                return activity;
            }
            activity += self.round(network, count_applied_on);
        }
        assert!(!self.is_busy(network), "the group must settle within {max_rounds} rounds");
        activity
    }
}

/// Handles Readys on one replica until it has none left, with synchronous in-memory
/// persistence (the steps in the module documentation). Outgoing messages are queued in the
/// destinations' inboxes. `applied` in the result counts this replica's applied entries.
fn drain_ready(node: &mut RawNode<MemStorage>, inboxes: &mut [Vec<Message>]) -> Activity {
    let mut activity = Activity::default();
    while node.has_ready() {
        let mut ready = node.ready();
        activity.readys += 1;
        let storage = node.store_mut();
        if let Some(snapshot) = ready.snapshot.take() {
            // Never happens here (nothing compacts); handled for completeness. `advance`
            // acknowledges the snapshot from the Ready's record, not from this field.
            storage.apply_snapshot(snapshot);
        }
        storage.append(&ready.entries);
        if let Some(hard_state) = ready.hard_state {
            storage.set_hard_state(hard_state);
        }
        activity.messages += route(std::mem::take(&mut ready.messages), inboxes);
        activity.messages += route(std::mem::take(&mut ready.persisted_messages), inboxes);
        activity.applied += count_applied(&ready.committed_entries);
        node.advance(&ready);
    }
    activity
}

/// Queues each message in its destination's inbox; returns how many.
fn route(messages: Vec<Message>, inboxes: &mut [Vec<Message>]) -> u64 {
    let count = messages.len() as u64;
    for message in messages {
        inboxes[index_of(message.to)].push(message);
    }
    count
}

/// "Applies" committed entries: the state machine is a no-op; only client proposals count
/// (not the empty entry a new leader appends, nor membership changes).
fn count_applied(entries: &[Entry]) -> u64 {
    entries.iter().filter(|e| e.kind == EntryKind::Normal && !e.data.is_empty()).count() as u64
}

/// Position of replica `id` in the per-replica vectors.
fn index_of(id: ReplicaId) -> usize {
    usize::try_from(id.0).expect("replica ids are small").checked_sub(1).expect("ids start at 1")
}

fn id_of(index: usize) -> ReplicaId {
    ReplicaId(index as u64 + 1)
}
