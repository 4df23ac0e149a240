//! The world: virtual time, the event queue, the nodes and the network, and the loop that
//! runs one seed (a safety phase with faults, then a liveness phase without).

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use tessera_raft::{
    ConfState, LogIndex, MemStorage, Message, MessageKind, RawNode, ReplicaId, Role, Snapshot,
    SnapshotMetadata, Storage, Term,
};

use crate::checker::{Checker, Property, Violation};
use crate::kv::Kv;
use crate::network::Network;
use crate::node::SimNode;
use crate::options::{Options, TICK};
use crate::rng::Rng;
use crate::stats::Stats;
use crate::trace::{Trace, TraceMode};

/// The index and term of the snapshot a `genesis_snapshot` group starts from.
pub const GENESIS: (LogIndex, Term) = (LogIndex(5), Term(1));

/// Records a trace line if tracing is on (formats nothing otherwise).
macro_rules! trace {
    ($world:expr, $($arg:tt)*) => {
        if $world.trace.enabled() {
            let now = $world.now;
            $world.trace.line(now, format_args!($($arg)*));
        }
    };
}
pub(crate) use trace;

/// Turns a checker's verdict into a failure of the seed.
macro_rules! ensure {
    ($world:expr, $check:expr) => {{
        let verdict = $check;
        if let Err(violation) = verdict {
            $world.fail(&violation);
        }
    }};
}
pub(crate) use ensure;

/// Something that happens at a point of virtual time.
#[derive(Debug)]
pub enum Event {
    /// Every running node ticks.
    Tick,
    /// A client or fault action.
    Action,
    /// A message arrives. `report`: the transport tells the sender whether this snapshot
    /// message arrived (duplicates are not reported).
    Deliver { message: Box<Message>, report: bool },
    /// An fsync of `node` completes (if it is still in the same life).
    Fsync { node: ReplicaId, incarnation: u64 },
    /// The apply worker of `node` runs (if it is still in the same life).
    Apply { node: ReplicaId, incarnation: u64 },
    /// The transport reports a snapshot's fate to the leader that sent it.
    SnapshotReport { leader: ReplicaId, incarnation: u64, to: ReplicaId, success: bool },
    /// A crashed node restarts.
    Restart(ReplicaId),
    /// A node is clogged (swizzle-clog).
    Clog(ReplicaId),
    /// A node is unclogged.
    Unclog(ReplicaId),
    /// Every cut link is restored.
    Heal,
}

/// One seed's simulation.
#[derive(Debug)]
pub struct World {
    pub(crate) opts: Options,
    pub(crate) rng: Rng,
    pub(crate) now: u64,
    sequence: u64,
    queue: BTreeMap<(u64, u64), Event>,
    pub(crate) nodes: BTreeMap<ReplicaId, SimNode>,
    pub(crate) net: Network,
    pub(crate) checker: Checker,
    pub(crate) stats: Stats,
    pub(crate) trace: Trace,
    /// Whether client actions and faults run (the safety phase).
    pub(crate) faults: bool,
    pub(crate) next_value: u64,
    pub(crate) next_read: u64,
    /// Ids whose removal was ever proposed: never added again.
    pub(crate) removal_proposed: BTreeSet<ReplicaId>,
    /// The newest membership applied anywhere, and its index.
    pub(crate) config: (LogIndex, ConfState),
    /// The membership the group was bootstrapped with.
    pub(crate) initial_conf: ConfState,
    /// The highest index applied anywhere, as of the last event.
    max_applied_seen: LogIndex,
    /// Read requests a leader accepted and has not answered: (leader, term, incarnation).
    pub(crate) leader_reads: BTreeMap<Bytes, (ReplicaId, Term, u64)>,
}

impl World {
    /// The world of `opts`: the initial voters started, the first tick and action scheduled.
    #[must_use]
    pub fn new(opts: Options, trace: TraceMode) -> Self {
        let initial_conf = ConfState { voters: opts.voters.clone(), ..ConfState::default() };
        let base = if opts.genesis_snapshot { GENESIS } else { (LogIndex(0), Term(0)) };
        let mut world = Self {
            rng: Rng::new(opts.seed, 1),
            now: 0,
            sequence: 0,
            queue: BTreeMap::new(),
            nodes: BTreeMap::new(),
            net: Network::new(&opts),
            checker: Checker::new(base),
            stats: Stats { seeds: 1, ..Stats::default() },
            trace: Trace::new(trace),
            faults: true,
            next_value: 1,
            next_read: 1,
            removal_proposed: BTreeSet::new(),
            config: (base.0, initial_conf.clone()),
            initial_conf,
            max_applied_seen: base.0,
            leader_reads: BTreeMap::new(),
            opts,
        };
        trace!(world, "options: {}", world.opts);
        for id in world.opts.voters.clone() {
            let durable = world.fresh_store(true);
            world.nodes.insert(id, SimNode::new(id, durable));
            world.start(id);
        }
        world.schedule(TICK, Event::Tick);
        let gap = world.rng.between(world.opts.action_gap.0, world.opts.action_gap.1);
        world.schedule(gap, Event::Action);
        world
    }

    /// The store a replica starts with: for an initial voter, the bootstrap membership (at
    /// index 0, or in the genesis snapshot); for a replica added later, whatever a new replica
    /// of this group is created with.
    pub(crate) fn fresh_store(&self, initial: bool) -> MemStorage {
        if self.opts.genesis_snapshot {
            let mut store = MemStorage::default();
            if initial {
                store.apply_snapshot(Snapshot {
                    metadata: SnapshotMetadata {
                        index: GENESIS.0,
                        term: GENESIS.1,
                        conf_state: self.initial_conf.clone(),
                    },
                    data: Kv::default().encode(),
                });
            }
            store
        } else {
            MemStorage::new_with_conf_state(self.initial_conf.clone())
        }
    }

    /// Queues `event` after `delay`.
    pub(crate) fn schedule(&mut self, delay: u64, event: Event) {
        self.sequence += 1;
        self.queue.insert((self.now + delay, self.sequence), event);
    }

    /// Fails the seed.
    pub(crate) fn fail(&self, violation: &Violation) -> ! {
        let nodes: Vec<String> = self.nodes.values().map(SimNode::describe).collect();
        panic!(
            "seed={} t={}.{:03}: {violation}\n  network: {}\n  nodes:\n    {}",
            self.opts.seed,
            self.now / TICK,
            self.now % TICK,
            self.net.describe(),
            nodes.join("\n    ")
        );
    }

    /// Fails the seed with a violation of `property`.
    pub(crate) fn fail_with(&self, property: Property, detail: String) -> ! {
        self.fail(&Violation { property, detail })
    }

    /// Runs the seed: the safety phase, then the liveness phase. Panics on a violation.
    pub fn run(mut self) -> (Stats, String) {
        while self.stats.events < self.opts.events {
            if !self.step() {
                break;
            }
        }
        self.liveness();
        self.stats.elections = self.checker.elections();
        self.stats.commits = self.checker.max_applied().0;
        self.stats.reads_checked = self.checker.reads_checked;
        self.stats.ticks = self.now / TICK;
        trace!(self, "done: {}", self.stats);
        (self.stats, self.trace.into_captured())
    }

    /// Processes the next event, then drains every Ready and checks every node. Returns false
    /// when nothing is left to happen.
    pub(crate) fn step(&mut self) -> bool {
        let Some(((time, _), event)) = self.queue.pop_first() else { return false };
        self.now = time;
        self.stats.events += 1;
        self.dispatch(event);
        self.drain_readies();
        self.check_nodes();
        let applied = self.checker.max_applied();
        if applied > self.max_applied_seen {
            self.max_applied_seen = applied;
            // A write was just acknowledged: sometimes ask every would-be leader at once.
            if self.faults && self.opts.weights.read > 0 && self.rng.chance(400) {
                self.read_burst();
                self.drain_readies();
                self.check_nodes();
            }
        }
        true
    }

    fn dispatch(&mut self, event: Event) {
        match event {
            Event::Tick => self.tick(),
            Event::Action => self.action(),
            Event::Deliver { message, report } => self.deliver(message, report),
            Event::Fsync { node, incarnation } => self.fsync(node, incarnation),
            Event::Apply { node, incarnation } => self.run_apply_worker(node, incarnation),
            Event::SnapshotReport { leader, incarnation, to, success } => {
                let Some(node) = self.nodes.get_mut(&leader) else { return };
                if node.incarnation == incarnation && node.running() {
                    trace!(self, "snapshot report to {leader}: {to} success={success}");
                    let node = self.nodes.get_mut(&leader).expect("looked up above");
                    node.raw_mut().report_snapshot(to, success);
                }
            }
            Event::Restart(id) => {
                if self.nodes.get(&id).is_some_and(|n| !n.running() && !n.retired) {
                    self.start(id);
                }
            }
            Event::Clog(id) => {
                if self.faults {
                    trace!(self, "clog {id}");
                    self.net.clog(id);
                }
            }
            Event::Unclog(id) => {
                trace!(self, "unclog {id}");
                self.net.unclog(id);
            }
            Event::Heal => {
                trace!(self, "heal");
                self.net.heal();
            }
        }
    }

    fn tick(&mut self) {
        let ids: Vec<ReplicaId> = self.nodes.keys().copied().collect();
        for &id in &ids {
            if let Some(raw) = self.nodes.get_mut(&id).and_then(|n| n.raw.as_mut()) {
                raw.tick();
            }
        }
        // Node liveness: a quiesced follower whose leader is down or cut off is woken.
        for &id in &ids {
            let Some(raw) = self.nodes.get(&id).and_then(|n| n.raw.as_ref()) else { continue };
            if !raw.is_quiesced() || raw.raft().role() == Role::Leader {
                continue;
            }
            let leader = raw.raft().leader();
            let leader_up = self.nodes.get(&leader).is_some_and(SimNode::running);
            if !leader_up || !self.net.reachable(leader, id) || !self.net.reachable(id, leader) {
                trace!(self, "wake {id} (leader {leader} unreachable)");
                self.nodes.get_mut(&id).expect("listed").raw_mut().wake();
            }
        }
        self.schedule(TICK, Event::Tick);
    }

    /// Sends `message` into the network.
    pub(crate) fn send(&mut self, message: &Message) {
        self.stats.messages += 1;
        let delays = self.net.fate(&mut self.rng);
        if delays.is_empty() {
            trace!(self, "lost {message:?}");
            self.stats.dropped += 1;
            if message.kind == MessageKind::Snapshot {
                self.report_snapshot(message.from, message.to, false);
            }
            return;
        }
        for (copy, delay) in delays.into_iter().enumerate() {
            let report = copy == 0 && message.kind == MessageKind::Snapshot;
            let message = Box::new(message.clone());
            self.schedule(delay, Event::Deliver { message, report });
        }
    }

    fn report_snapshot(&mut self, leader: ReplicaId, to: ReplicaId, success: bool) {
        let Some(node) = self.nodes.get(&leader) else { return };
        let incarnation = node.incarnation;
        let delay = self.rng.between(0, TICK);
        let event = Event::SnapshotReport { leader, incarnation, to, success };
        self.schedule(delay, event);
    }

    fn deliver(&mut self, message: Box<Message>, report: bool) {
        let (from, to) = (message.from, message.to);
        if self.net.is_clogged(from) || self.net.is_clogged(to) {
            let retry = self.rng.between(TICK / 2, 2 * TICK);
            self.schedule(retry, Event::Deliver { message, report });
            return;
        }
        let target_up = self.nodes.get(&to).is_some_and(SimNode::running);
        if self.net.is_cut(from, to) || !target_up {
            trace!(self, "dropped {message:?}");
            self.stats.dropped += 1;
            if report {
                self.report_snapshot(from, to, false);
            }
            if self.rng.chance(500)
                && let Some(sender) = self.nodes.get_mut(&from).and_then(|n| n.raw.as_mut())
            {
                sender.report_unreachable(to);
            }
            return;
        }
        trace!(self, "deliver {message:?}");
        let node = self.nodes.get_mut(&to).expect("checked running above");
        let kind = message.kind;
        if let Err(error) = node.raw_mut().step(*message) {
            self.fail_with(
                Property::ReadyContract,
                format!("{to} refused {kind:?} from {from}: {error}"),
            );
        }
        if report {
            self.report_snapshot(from, to, true);
        }
    }

    /// The running leader of the highest term, if any.
    pub(crate) fn current_leader(&self) -> Option<ReplicaId> {
        self.nodes
            .values()
            .filter_map(|n| n.raw.as_ref().map(|raw| (n.id, raw.raft())))
            .filter(|(_, raft)| raft.role() == Role::Leader)
            .max_by_key(|(_, raft)| raft.term())
            .map(|(id, _)| id)
    }

    /// A random running node.
    pub(crate) fn random_running(&mut self) -> Option<ReplicaId> {
        let running: Vec<ReplicaId> =
            self.nodes.values().filter(|n| n.running()).map(|n| n.id).collect();
        (!running.is_empty()).then(|| *self.rng.pick(&running))
    }

    /// After every event: terms never decrease, a new leader is elected safely and holds
    /// every committed entry, a leader's log only grows.
    fn check_nodes(&mut self) {
        let ids: Vec<ReplicaId> = self.nodes.keys().copied().collect();
        for id in ids {
            let node = &self.nodes[&id];
            let Some(raw) = &node.raw else { continue };
            let term = raw.raft().term();
            ensure!(self, self.checker.on_term(id, node.term, term, false));
            let leading = node.leading;
            let next_leading = if raw.raft().role() == Role::Leader {
                self.checker.on_leader_commit(term, raw.committed());
                let last = raw.last_index();
                match leading {
                    Some((led, since)) if led == term => {
                        let last_term = raw.term_at(last);
                        ensure!(self, self.checker.on_leader_log(id, term, since, last, last_term));
                    }
                    _ => {
                        let snapshot_index = raw.store().first_index().prev();
                        let snapshot_term = raw.term_at(snapshot_index).unwrap_or(Term(0));
                        trace!(self, "{id} leads term {term}");
                        let term_at = |index: LogIndex| raw.term_at(index);
                        ensure!(
                            self,
                            self.checker.on_leader(
                                id,
                                term,
                                (snapshot_index, snapshot_term),
                                &term_at
                            )
                        );
                    }
                }
                Some((term, last))
            } else {
                None
            };
            let node = self.nodes.get_mut(&id).expect("listed");
            node.term = term;
            node.leading = next_leading;
        }
    }

    /// Starts (or restarts) `id` from its durable store.
    pub(crate) fn start(&mut self, id: ReplicaId) {
        let seed = self.rng.next_u64();
        let mut config = self.opts.raft_config(id, seed);
        let node = self.nodes.get(&id).expect("started nodes exist");
        let store = node.durable.clone();
        let snapshot = node.durable_snapshot();
        let durable_term = |index: LogIndex| store.term(index).ok();
        ensure!(self, self.checker.on_restart(id, node.applied_durable, snapshot, &durable_term));
        let data = store.snapshot(LogIndex(0)).map(|s| s.data).unwrap_or_default();
        let kv = match Kv::decode(&data) {
            Ok(kv) => kv,
            Err(error) => self.fail_with(Property::StateMachineSafety, format!("{id}: {error}")),
        };
        config.applied = snapshot.0;
        let raw = match RawNode::new(config, store) {
            Ok(raw) => raw,
            Err(error) => {
                self.fail_with(Property::ReadyContract, format!("{id} cannot restart: {error}"))
            }
        };
        let node = self.nodes.get_mut(&id).expect("started nodes exist");
        let durable_term = node.durable_hard_state.term;
        node.term = raw.raft().term();
        node.raw = Some(raw);
        node.kv = kv;
        node.kv_applied = snapshot.0;
        node.leading = None;
        ensure!(self, self.checker.on_term(id, durable_term, self.nodes[&id].term, true));
        trace!(self, "start {}", self.nodes[&id].describe());
    }

    /// Fresh bytes for a proposal: `key=value` with a value never used before.
    pub(crate) fn fresh_write(&mut self, key: u64) -> Bytes {
        let value = self.next_value;
        self.next_value += 1;
        Bytes::from(format!("k{key}=v{value}"))
    }
}
