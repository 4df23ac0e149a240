//! A small in-memory network of `RawNode`s for the protocol tests: nodes by id, messages
//! delivered in rounds, partitions and message filters, ticks, crashes and restarts, and
//! persistence that is either synchronous or held back to exercise the asynchronous path of
//! the Ready contract.
//!
//! Every Ready is checked against the contract as it is handled (committed entries are
//! durable before they are handed out, applied exactly once and in order, terms never go
//! back, one leader per term, a leader's commit index is durable on a quorum), and
//! [`Network::check_safety`] checks log matching and state machine safety across nodes.
//!
//! With tracing on, every Ready and every delivery is written to [`Network::trace`] in the
//! format of the scripted interaction tests.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;

use bytes::Bytes;
use tessera_raft::{
    ConfChange, ConfState, Config, Entry, EntryKind, LogIndex, MemStorage, Message, MessageKind,
    RawNode, ReadState, Ready, ReplicaId, Role, SplitMix64, Storage, Term, decode_conf_change,
};

/// `ReplicaId(n)`.
pub fn rid(n: u64) -> ReplicaId {
    ReplicaId(n)
}

/// Replica ids from numbers.
pub fn rids(ns: &[u64]) -> Vec<ReplicaId> {
    ns.iter().copied().map(ReplicaId).collect()
}

/// A plain configuration of `voters`.
pub fn conf(voters: &[u64]) -> ConfState {
    ConfState { voters: rids(voters), ..ConfState::default() }
}

/// A seed for replica `id` whose first election timeout is in the upper half of
/// `[election, 2 * election)`, so that a node can be "warmed up" with `election` ticks
/// (after which it no longer refuses votes as a node that just started) without
/// campaigning.
pub fn seed_for(id: u64, election_ticks: u32) -> u64 {
    let low = u64::from(election_ticks);
    (id * 1000..).find(|&seed| SplitMix64::new(seed).range(low, 2 * low) >= low + low / 2).unwrap()
}

/// The first randomized election timeout a node with this config draws.
pub fn first_timeout(config: &Config) -> u32 {
    let low = u64::from(config.election_ticks);
    u32::try_from(SplitMix64::new(config.seed).range(low, 2 * low)).unwrap()
}

/// The test default for replica `id`: `Config::new` with a harness seed.
pub fn config(id: u64) -> Config {
    let mut config = Config::new(rid(id));
    config.seed = seed_for(id, config.election_ticks);
    config
}

/// A configuration change from steps.
pub fn change(steps: Vec<tessera_raft::ConfChangeStep>) -> ConfChange {
    ConfChange { steps, explicit_leave: false, context: bytes::Bytes::new() }
}

/// A node's replicated state machine: the data of applied non-empty normal entries.
#[derive(Debug, Clone, Default)]
pub struct StateMachine {
    /// The index of the snapshot the state started from.
    pub base_index: LogIndex,
    /// The data the snapshot held.
    pub base: Vec<Bytes>,
    /// Entries applied since, in order.
    pub applied: Vec<Entry>,
}

impl StateMachine {
    /// The last applied index.
    pub fn index(&self) -> LogIndex {
        self.applied.last().map_or(self.base_index, |e| e.index)
    }

    /// The state as of `index` (which must be applied).
    pub fn data_at(&self, index: LogIndex) -> Vec<Bytes> {
        assert!(index >= self.base_index && index <= self.index());
        let mut data = self.base.clone();
        for entry in self.applied.iter().take_while(|e| e.index <= index) {
            if entry.kind == EntryKind::Normal && !entry.data.is_empty() {
                data.push(entry.data.clone());
            }
        }
        data
    }

    /// The whole state.
    pub fn data(&self) -> Vec<Bytes> {
        self.data_at(self.index())
    }

    /// The state as strings.
    pub fn strings(&self) -> Vec<String> {
        self.data().iter().map(|d| String::from_utf8_lossy(d).into_owned()).collect()
    }

    fn encode(data: &[Bytes]) -> Bytes {
        let parts: Vec<&[u8]> = data.iter().map(AsRef::as_ref).collect();
        Bytes::from(parts.join(&b'\n'))
    }

    fn restore(index: LogIndex, bytes: &[u8]) -> Self {
        let base = if bytes.is_empty() {
            Vec::new()
        } else {
            bytes.split(|&b| b == b'\n').map(Bytes::copy_from_slice).collect()
        };
        Self { base_index: index, base, applied: Vec::new() }
    }
}

/// One node of the network.
#[derive(Debug)]
pub struct Node {
    /// Its id.
    pub id: u64,
    /// The Raft node.
    pub raw: RawNode<MemStorage>,
    /// Its configuration (kept to restart it).
    pub config: Config,
    /// Hold Readys back instead of persisting them at once.
    pub hold: bool,
    /// Readys handed out but not yet persisted (with their persisted messages).
    pub held: VecDeque<Ready>,
    /// The state machine.
    pub sm: StateMachine,
    /// Read states answered so far.
    pub read_states: Vec<ReadState>,
    /// Membership history, with the index it took effect at: the snapshot the node started
    /// from, then every conf change applied and every snapshot installed.
    pub conf_changes: Vec<(LogIndex, ConfState)>,
    /// Errors returned by `apply_conf_change`.
    pub conf_change_errors: Vec<String>,
    /// The highest hard-state term persisted.
    pub last_term: Term,
    /// The term this node last handed out a Ready in as leader, if it did in its last one.
    led_in: Option<Term>,
}

impl Node {
    /// The node's role.
    pub fn role(&self) -> Role {
        self.raw.raft().role()
    }

    /// The node's term.
    pub fn term(&self) -> Term {
        self.raw.raft().term()
    }

    /// The leader the node knows.
    pub fn leader(&self) -> u64 {
        self.raw.raft().leader().0
    }

    /// One status line.
    pub fn status(&self) -> String {
        let raft = self.raw.raft();
        let hs = raft.hard_state();
        let mut line = format!(
            "{}: {:?} term={} vote={} leader={} commit={} applied={} last={}",
            self.id,
            raft.role(),
            hs.term,
            hs.vote,
            raft.leader(),
            self.raw.committed(),
            self.raw.applied(),
            self.raw.last_index(),
        );
        if raft.lease_valid() {
            line.push_str(" lease");
        }
        if raft.lead_transferee().is_some() {
            let _ = write!(line, " transferee={}", raft.lead_transferee());
        }
        if self.raw.is_quiesced() {
            line.push_str(" quiesced");
        }
        if !self.held.is_empty() {
            let _ = write!(line, " held={}", self.held.len());
        }
        let cs = self.raw.conf_state();
        let _ = write!(line, " voters={}", fmt_ids(&cs.voters));
        if !cs.voters_outgoing.is_empty() {
            let _ = write!(line, " outgoing={}", fmt_ids(&cs.voters_outgoing));
        }
        if !cs.learners.is_empty() {
            let _ = write!(line, " learners={}", fmt_ids(&cs.learners));
        }
        if !cs.learners_next.is_empty() {
            let _ = write!(line, " learners_next={}", fmt_ids(&cs.learners_next));
        }
        if cs.auto_leave {
            line.push_str(" auto_leave");
        }
        line
    }

    /// The node's log as `term/index` pairs (what `term_at` can see).
    pub fn log_terms(&self) -> Vec<(u64, u64)> {
        let first = self.raw.store().first_index().0;
        (first..=self.raw.last_index().0)
            .filter_map(|i| self.raw.term_at(LogIndex(i)).map(|t| (t.0, i)))
            .collect()
    }
}

/// An entry as its `Debug` shows it, except that a membership change is decoded:
/// `1/2 conf(add 4, remove 3)`, `1/3 conf(leave)`.
pub fn fmt_entry(entry: &Entry) -> String {
    if entry.kind != EntryKind::ConfChange {
        return format!("{entry:?}");
    }
    let Ok(change) = decode_conf_change(&entry.data) else { return format!("{entry:?}") };
    let mut parts: Vec<String> = change
        .steps
        .iter()
        .map(|step| match step {
            tessera_raft::ConfChangeStep::AddVoter(id) => format!("add {id}"),
            tessera_raft::ConfChangeStep::AddLearner(id) => format!("add-learner {id}"),
            tessera_raft::ConfChangeStep::Remove(id) => format!("remove {id}"),
        })
        .collect();
    if parts.is_empty() {
        parts.push("leave".to_string());
    }
    if change.explicit_leave {
        parts.push("explicit-leave".to_string());
    }
    format!("{}/{} conf({})", entry.term, entry.index, parts.join(", "))
}

/// `[1/1, 1/2 conf(leave)]`.
pub fn fmt_entries(entries: &[Entry]) -> String {
    let parts: Vec<String> = entries.iter().map(fmt_entry).collect();
    format!("[{}]", parts.join(", "))
}

/// A message as its `Debug` shows it, with membership changes decoded (see [`fmt_entry`]).
pub fn fmt_msg(message: &Message) -> String {
    let mut s = format!("{message:?}");
    if !message.entries.is_empty() {
        let raw = format!("{:?}", message.entries);
        s = s.replace(&raw, &fmt_entries(&message.entries));
    }
    s
}

/// `(1 2 3)`.
pub fn fmt_ids(ids: &[ReplicaId]) -> String {
    let parts: Vec<String> = ids.iter().map(ToString::to_string).collect();
    format!("({})", parts.join(" "))
}

fn fmt_conf(cs: &ConfState) -> String {
    let mut s = format!("voters={}", fmt_ids(&cs.voters));
    if !cs.voters_outgoing.is_empty() {
        let _ = write!(s, " outgoing={}", fmt_ids(&cs.voters_outgoing));
    }
    if !cs.learners.is_empty() {
        let _ = write!(s, " learners={}", fmt_ids(&cs.learners));
    }
    if !cs.learners_next.is_empty() {
        let _ = write!(s, " learners_next={}", fmt_ids(&cs.learners_next));
    }
    if cs.auto_leave {
        s.push_str(" auto_leave");
    }
    s
}

/// A crashed node: only what it persisted survives.
#[derive(Debug)]
struct Down {
    store: MemStorage,
    config: Config,
    last_term: Term,
}

type DropFilter = Box<dyn FnMut(&Message) -> bool>;

/// The network.
pub struct Network {
    /// Live nodes by id.
    pub nodes: BTreeMap<u64, Node>,
    down: BTreeMap<u64, Down>,
    /// Messages sent and not yet delivered, in send order.
    pub in_flight: Vec<Message>,
    cut: BTreeSet<(u64, u64)>,
    /// Drops every message for which it returns true (in addition to partitions).
    pub drop_if: Option<DropFilter>,
    /// Every message sent, in order.
    pub sent: Vec<Message>,
    /// Every message dropped, in order.
    pub dropped: Vec<Message>,
    /// Errors returned by `step`.
    pub step_errors: Vec<String>,
    /// The leader of each term seen.
    pub leaders: BTreeMap<Term, u64>,
    /// The trace, when tracing.
    pub trace: Option<String>,
    /// Act as a transport: report every Snapshot message delivered or lost to its sender
    /// (`report_snapshot`).
    pub report_snapshots: bool,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network").field("nodes", &self.nodes.keys()).finish_non_exhaustive()
    }
}

impl Drop for Network {
    /// On a failure, shows the end of the trace (when tracing) for diagnosis.
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(trace) = &self.trace
        {
            if let Ok(path) = std::env::var("RAFT_TRACE_FILE") {
                let _ = std::fs::write(path, trace);
            }
            let lines: Vec<&str> = trace.lines().collect();
            let tail = &lines[lines.len().saturating_sub(300)..];
            eprintln!("--- last {} lines of the trace ---\n{}", tail.len(), tail.join("\n"));
        }
    }
}

impl Network {
    /// An empty network.
    pub fn empty() -> Self {
        Self {
            nodes: BTreeMap::new(),
            down: BTreeMap::new(),
            in_flight: Vec::new(),
            cut: BTreeSet::new(),
            drop_if: None,
            sent: Vec::new(),
            dropped: Vec::new(),
            step_errors: Vec::new(),
            leaders: BTreeMap::new(),
            // RAFT_TRACE=1: trace every network, shown (the tail) when a test fails.
            trace: std::env::var("RAFT_TRACE").is_ok().then(String::new),
            report_snapshots: false,
        }
    }

    /// A group of `voters` with the test defaults (pre-vote, check-quorum and lease reads
    /// on), changed by `tweak`, warmed up.
    pub fn new(voters: &[u64], tweak: impl Fn(&mut Config)) -> Self {
        let mut net = Self::empty();
        for &id in voters {
            let mut config = config(id);
            tweak(&mut config);
            net.add_node(config, conf(voters));
        }
        net.warm_up();
        net
    }

    /// A group of `voters` with the test defaults.
    pub fn voters(voters: &[u64]) -> Self {
        Self::new(voters, |_| {})
    }

    /// Adds a node with an empty log and membership `conf_state`.
    pub fn add_node(&mut self, config: Config, conf_state: ConfState) {
        self.add_node_with_store(config, MemStorage::new_with_conf_state(conf_state));
    }

    /// Adds a node over `store`.
    pub fn add_node_with_store(&mut self, config: Config, store: MemStorage) {
        let id = config.id.0;
        let snapshot = store.snapshot(LogIndex(0)).unwrap();
        let sm = StateMachine::restore(snapshot.metadata.index, &snapshot.data);
        let meta = snapshot.metadata;
        let last_term = store.hard_state().term;
        let raw = RawNode::new(config.clone(), store).unwrap();
        let node = Node {
            id,
            raw,
            config,
            hold: false,
            held: VecDeque::new(),
            sm,
            read_states: Vec::new(),
            conf_changes: vec![(meta.index, meta.conf_state)],
            conf_change_errors: Vec::new(),
            last_term,
            led_in: None,
        };
        self.nodes.insert(id, node);
    }

    /// Ticks every node `election_ticks` times, so that no node refuses votes as one that
    /// just started. The harness seeds make sure nobody campaigns meanwhile.
    pub fn warm_up(&mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.warm_up_node(id);
        }
    }

    /// Warms up one node (see [`Network::warm_up`]).
    pub fn warm_up_node(&mut self, id: u64) {
        let node = self.node_mut(id);
        for _ in 0..node.config.election_ticks {
            node.raw.tick();
        }
        assert_eq!(node.role(), Role::Follower, "node {id} campaigned while warming up");
        assert!(!node.raw.has_ready(), "node {id} has work after warming up");
    }

    /// The node `id`.
    pub fn node(&self, id: u64) -> &Node {
        self.nodes.get(&id).unwrap_or_else(|| panic!("no live node {id}"))
    }

    /// The node `id`, mutably.
    pub fn node_mut(&mut self, id: u64) -> &mut Node {
        self.nodes.get_mut(&id).unwrap_or_else(|| panic!("no live node {id}"))
    }

    /// The Raft node `id`.
    pub fn raw(&mut self, id: u64) -> &mut RawNode<MemStorage> {
        &mut self.node_mut(id).raw
    }

    /// Whether `id` is crashed.
    pub fn is_down(&self, id: u64) -> bool {
        self.down.contains_key(&id)
    }

    fn log(&mut self, line: impl AsRef<str>) {
        if let Some(trace) = &mut self.trace {
            trace.push_str(line.as_ref());
            trace.push('\n');
        }
    }

    /// Takes the trace written so far.
    pub fn take_trace(&mut self) -> String {
        self.trace.as_mut().map(std::mem::take).unwrap_or_default()
    }

    // ------------------------------------------------------------------ network faults

    /// Cuts both directions between `a` and `b`.
    pub fn cut(&mut self, a: u64, b: u64) {
        self.cut.insert((a, b));
        self.cut.insert((b, a));
    }

    /// Cuts `id` off from everyone.
    pub fn isolate(&mut self, id: u64) {
        let ids: Vec<u64> = self.nodes.keys().chain(self.down.keys()).copied().collect();
        for other in ids {
            if other != id {
                self.cut(id, other);
            }
        }
    }

    /// Cuts every link between different groups (replacing earlier cuts; a drop filter
    /// stays).
    pub fn partition(&mut self, groups: &[&[u64]]) {
        self.cut.clear();
        for (i, a) in groups.iter().enumerate() {
            for b in &groups[i + 1..] {
                for &x in *a {
                    for &y in *b {
                        self.cut(x, y);
                    }
                }
            }
        }
    }

    /// Restores every link and removes the drop filter.
    pub fn heal(&mut self) {
        self.cut.clear();
        self.drop_if = None;
    }

    fn should_drop(&mut self, message: &Message) -> bool {
        let (from, to) = (message.from.0, message.to.0);
        if self.cut.contains(&(from, to)) || !self.nodes.contains_key(&to) {
            return true;
        }
        self.drop_if.as_mut().is_some_and(|f| f(message))
    }

    // ------------------------------------------------------------------ crash and restart

    /// Crashes `id`: what it did not persist is lost, and so are its held Readys.
    pub fn crash(&mut self, id: u64) {
        let node = self.nodes.remove(&id).unwrap();
        let store = node.raw.store().clone();
        self.down.insert(id, Down { store, config: node.config, last_term: node.last_term });
        self.log(format!("> {id} crashed"));
    }

    /// Restarts `id` from what it persisted. Its state machine is rebuilt from the latest
    /// snapshot and the log is applied again.
    pub fn restart(&mut self, id: u64) {
        let down = self.down.remove(&id).unwrap();
        let mut config = down.config;
        config.applied = down.store.first_index().prev();
        self.add_node_with_store(config, down.store);
        self.node_mut(id).last_term = down.last_term;
        self.log(format!("> {id} restarted"));
    }

    // ------------------------------------------------------------------ Ready handling

    /// Handles every Ready `id` has. Returns whether there was one.
    pub fn process_ready(&mut self, id: u64) -> bool {
        let mut any = false;
        while self.nodes.get(&id).is_some_and(|n| n.raw.has_ready()) {
            any = true;
            let ready = self.node_mut(id).raw.ready();
            self.handle_ready(id, ready);
        }
        any
    }

    /// Handles the Readys of every node. Returns whether there was one.
    pub fn process_all_readys(&mut self) -> bool {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        let mut any = false;
        for id in ids {
            any |= self.process_ready(id);
        }
        any
    }

    fn handle_ready(&mut self, id: u64, ready: Ready) {
        self.trace_ready(id, &ready);
        self.check_ready(id, &ready);
        let hold = self.node(id).hold;
        for message in &ready.messages {
            self.send(message.clone());
        }
        if hold {
            // Messages go now; durable state and the messages vouching for it wait for
            // `persist`. Committed entries are durable already and can be applied now.
            self.apply(id, &ready);
            let last = ready.committed_entries.last().map(|e| e.index);
            let node = self.node_mut(id);
            if let Some(last) = last {
                node.raw.advance_apply_to(last);
            }
            node.held.push_back(Ready {
                number: ready.number,
                hard_state: ready.hard_state,
                snapshot: ready.snapshot,
                entries: ready.entries,
                persisted_messages: ready.persisted_messages,
                ..Ready::default()
            });
        } else {
            self.write(id, &ready);
            for message in &ready.persisted_messages {
                self.send(message.clone());
            }
            self.apply(id, &ready);
            self.node_mut(id).raw.advance(&ready);
        }
    }

    /// Persists every held Ready of `id` in order, sends their persisted messages and
    /// acknowledges them.
    pub fn persist(&mut self, id: u64) {
        while let Some(ready) = self.node_mut(id).held.pop_front() {
            self.log(format!("> {id} persisted Ready #{}", ready.number));
            self.write(id, &ready);
            for message in &ready.persisted_messages {
                self.log(format!("  {}", fmt_msg(message)));
                self.send(message.clone());
            }
            self.node_mut(id).raw.on_persist_ready(ready.number);
        }
    }

    /// Holds (or stops holding) `id`'s Readys. Stopping persists what is held.
    pub fn set_hold(&mut self, id: u64, hold: bool) {
        if !hold {
            self.persist(id);
        }
        self.node_mut(id).hold = hold;
    }

    fn write(&mut self, id: u64, ready: &Ready) {
        let node = self.node_mut(id);
        if let Some(snapshot) = &ready.snapshot {
            node.raw.store_mut().apply_snapshot(snapshot.clone());
            node.sm = StateMachine::restore(snapshot.metadata.index, &snapshot.data);
            let meta = &snapshot.metadata;
            node.conf_changes.push((meta.index, meta.conf_state.clone()));
        }
        node.raw.store_mut().append(&ready.entries);
        if let Some(hs) = ready.hard_state {
            assert!(
                hs.term >= node.last_term,
                "node {id}: term went back {} -> {}",
                node.last_term,
                hs.term
            );
            node.last_term = hs.term;
            node.raw.store_mut().set_hard_state(hs);
            let last = node.raw.store().last_index();
            assert!(
                hs.commit <= last,
                "node {id}: persisted commit {} past its log {last}",
                hs.commit
            );
        }
    }

    fn apply(&mut self, id: u64, ready: &Ready) {
        let trace = self.trace.is_some();
        let mut lines = Vec::new();
        let node = self.node_mut(id);
        for entry in &ready.committed_entries {
            assert_eq!(
                entry.index,
                node.sm.index().next(),
                "node {id}: applied out of order (state machine at {})",
                node.sm.index()
            );
            node.sm.applied.push(entry.clone());
            if entry.kind == EntryKind::ConfChange {
                let change = decode_conf_change(&entry.data).unwrap();
                match node.raw.apply_conf_change(&change) {
                    Ok(cs) => {
                        if trace {
                            lines.push(format!(
                                "  Applied {}/{}: {}",
                                entry.term,
                                entry.index,
                                fmt_conf(&cs)
                            ));
                        }
                        node.conf_changes.push((entry.index, cs));
                    }
                    Err(error) => {
                        lines.push(format!(
                            "  Conf change {}/{} failed: {error}",
                            entry.term, entry.index
                        ));
                        node.conf_change_errors.push(error.to_string());
                    }
                }
            }
        }
        node.read_states.extend(ready.read_states.iter().cloned());
        for line in lines {
            self.log(line);
        }
    }

    /// The Ready contract, checked on every Ready.
    fn check_ready(&mut self, id: u64, ready: &Ready) {
        let node = self.node(id);
        // Committed entries are handed out only once durable here, in order.
        for entry in &ready.committed_entries {
            assert_eq!(
                node.raw.store().term(entry.index),
                Ok(entry.term),
                "node {id}: entry {entry:?} handed out for apply before it is durable"
            );
        }
        if !ready.committed_entries.is_empty() {
            assert!(ready.snapshot.is_none(), "node {id}: snapshot and entries to apply together");
        }
        // Vote and append responses vouch for durable state.
        for message in &ready.messages {
            assert!(
                !matches!(
                    message.kind,
                    MessageKind::RequestVote | MessageKind::RequestVoteResponse
                ),
                "node {id}: {message:?} sent before persisting"
            );
            if message.kind == MessageKind::AppendResponse {
                // Only the answer to a stale leader (which vouches for nothing) may leave early.
                assert!(
                    message.index == LogIndex(0) && !message.reject,
                    "node {id}: {message:?} sent before persisting"
                );
            }
        }
        // One leader per term.
        let role = node.role();
        let term = node.term();
        let led_in = node.led_in;
        // §5.4.2 (Figure 8): a leader advances its commit index only to an entry of its own
        // term (the earlier entries commit with it).
        if role == Role::Leader
            && led_in == Some(term)
            && let Some(hs) = ready.hard_state
            && hs.commit > LogIndex(0)
        {
            let at = node.raw.term_at(hs.commit);
            assert!(
                at.is_none_or(|t| t == term),
                "leader {id} of term {term} committed {} of term {at:?} by counting replicas",
                hs.commit
            );
        }
        if role == Role::Leader
            && let Some(&other) = self.leaders.get(&term)
        {
            assert_eq!(other, id, "two leaders in term {term}");
        }
        if role == Role::Leader {
            self.leaders.insert(term, id);
            if let Some(hs) = ready.hard_state {
                self.check_commit_durable(id, hs.commit);
            }
        }
        self.node_mut(id).led_in = (role == Role::Leader).then_some(term);
    }

    /// A leader's commit index must be durable on a quorum (of both halves when joint).
    fn check_commit_durable(&self, leader: u64, commit: LogIndex) {
        if commit == LogIndex(0) {
            return;
        }
        let node = self.node(leader);
        let Some(term) = node.raw.term_at(commit) else { return };
        let durable_on = |id: &ReplicaId| -> bool {
            let store = match (self.nodes.get(&id.0), self.down.get(&id.0)) {
                (Some(node), _) => node.raw.store(),
                (None, Some(down)) => &down.store,
                (None, None) => return false,
            };
            store.term(commit) == Ok(term) || store.first_index() > commit
        };
        let cs = node.raw.conf_state();
        for half in [&cs.voters, &cs.voters_outgoing] {
            if half.is_empty() {
                continue;
            }
            let durable = half.iter().filter(|id| durable_on(id)).count();
            assert!(
                durable > half.len() / 2,
                "leader {leader} committed {commit} (term {term}) which is durable on only {durable} of {}",
                fmt_ids(half)
            );
        }
    }

    fn trace_ready(&mut self, id: u64, ready: &Ready) {
        if self.trace.is_none() {
            return;
        }
        let hold = self.node(id).hold;
        let mut out = format!("> {id} handling Ready #{}", ready.number);
        if hold {
            out.push_str(" (held)");
        }
        if let Some(soft) = ready.soft_state {
            let _ = write!(out, "\n  Soft: {:?} leader={}", soft.role, soft.leader);
        }
        if let Some(hs) = ready.hard_state {
            let _ = write!(
                out,
                "\n  HardState: term={} vote={} commit={}",
                hs.term, hs.vote, hs.commit
            );
        }
        if let Some(snapshot) = &ready.snapshot {
            let meta = &snapshot.metadata;
            let _ = write!(
                out,
                "\n  Snapshot: {}/{} {}",
                meta.term,
                meta.index,
                fmt_conf(&meta.conf_state)
            );
        }
        if !ready.entries.is_empty() {
            let _ = write!(out, "\n  Entries: {}", fmt_entries(&ready.entries));
        }
        for message in &ready.messages {
            let _ = write!(out, "\n  Send: {}", fmt_msg(message));
        }
        for message in &ready.persisted_messages {
            let _ = write!(out, "\n  Send after persist: {}", fmt_msg(message));
        }
        if !ready.committed_entries.is_empty() {
            let _ = write!(out, "\n  Apply: {}", fmt_entries(&ready.committed_entries));
        }
        for rs in &ready.read_states {
            let _ = write!(
                out,
                "\n  ReadState: index={} context={:?}",
                rs.index,
                String::from_utf8_lossy(&rs.context)
            );
        }
        self.log(out);
    }

    // ------------------------------------------------------------------ delivery

    /// Puts `message` in flight.
    pub fn send(&mut self, message: Message) {
        self.sent.push(message.clone());
        self.in_flight.push(message);
    }

    /// Takes every message in flight (without delivering it).
    pub fn take_msgs(&mut self) -> Vec<Message> {
        std::mem::take(&mut self.in_flight)
    }

    /// Takes the messages in flight that match `pred`, leaving the others.
    pub fn take_msgs_where(&mut self, pred: impl Fn(&Message) -> bool) -> Vec<Message> {
        let (taken, kept) = std::mem::take(&mut self.in_flight).into_iter().partition(|m| pred(m));
        self.in_flight = kept;
        taken
    }

    /// Steps `message` into its recipient at once (unless the network drops it).
    pub fn deliver_msg(&mut self, message: Message) {
        if self.should_drop(&message) {
            self.drop_msg(message);
            return;
        }
        self.log(format!("  {}", fmt_msg(&message)));
        let (from, to, kind) = (message.from, message.to, message.kind);
        if let Err(error) = self.raw(to.0).step(message) {
            self.log(format!("  error: {error}"));
            self.step_errors.push(error.to_string());
        }
        if kind == MessageKind::Snapshot {
            self.report_snapshot(from, to, true);
        }
    }

    /// Loses `message`.
    pub fn drop_msg(&mut self, message: Message) {
        self.log(format!("  {} DROPPED", fmt_msg(&message)));
        if message.kind == MessageKind::Snapshot {
            self.report_snapshot(message.from, message.to, false);
        }
        self.dropped.push(message);
    }

    fn report_snapshot(&mut self, from: ReplicaId, to: ReplicaId, success: bool) {
        if self.report_snapshots
            && let Some(node) = self.nodes.get_mut(&from.0)
        {
            node.raw.report_snapshot(to, success);
            self.log(format!(
                "> {from} report-snapshot {to} {}",
                if success { "ok" } else { "failed" }
            ));
        }
    }

    /// Delivers every message now in flight, grouped by recipient. Returns whether there
    /// was any.
    pub fn deliver_round(&mut self) -> bool {
        let messages = self.take_msgs();
        if messages.is_empty() {
            return false;
        }
        let mut by_recipient: BTreeMap<u64, Vec<Message>> = BTreeMap::new();
        for message in messages {
            by_recipient.entry(message.to.0).or_default().push(message);
        }
        for (to, messages) in by_recipient {
            self.log(format!("> {to} receiving messages"));
            for message in messages {
                self.deliver_msg(message);
            }
        }
        true
    }

    /// Handles Readys and delivers messages until nothing is left to do.
    pub fn stabilize(&mut self) {
        for _ in 0..10_000 {
            let readys = self.process_all_readys();
            let messages = self.deliver_round();
            if !readys && !messages {
                self.check_safety();
                return;
            }
        }
        panic!("the network did not stabilize");
    }

    // ------------------------------------------------------------------ driving

    /// Ticks `id` `n` times (without handling Readys).
    pub fn tick(&mut self, id: u64, n: u32) {
        for _ in 0..n {
            self.raw(id).tick();
        }
    }

    /// Ticks every live node once, then stabilizes; `n` times.
    pub fn tick_all(&mut self, n: u32) {
        for _ in 0..n {
            let ids: Vec<u64> = self.nodes.keys().copied().collect();
            for id in ids {
                self.raw(id).tick();
            }
            self.stabilize();
        }
    }

    /// Campaigns `id` and stabilizes.
    pub fn campaign(&mut self, id: u64) {
        self.raw(id).campaign();
        self.stabilize();
    }

    /// Campaigns `id`, stabilizes and checks it won.
    pub fn elect(&mut self, id: u64) {
        self.campaign(id);
        assert_eq!(self.node(id).role(), Role::Leader, "node {id} did not win");
    }

    /// Proposes `data` at `id`.
    pub fn propose(&mut self, id: u64, data: &str) -> LogIndex {
        self.raw(id).propose(Bytes::copy_from_slice(data.as_bytes())).unwrap()
    }

    /// Proposes `data` at `id` and stabilizes.
    pub fn propose_and_stabilize(&mut self, id: u64, data: &str) -> LogIndex {
        let index = self.propose(id, data);
        self.stabilize();
        index
    }

    /// Compacts `id`'s log to a snapshot at `index` (which it must have applied).
    pub fn compact(&mut self, id: u64, index: LogIndex) {
        let node = self.node_mut(id);
        assert!(node.sm.index() >= index, "compact past applied");
        let data = StateMachine::encode(&node.sm.data_at(index));
        // The membership as of `index`: the last change applied at or before it (the node's
        // history starts with the snapshot it started from or installed).
        let cs = node.conf_changes.iter().rev().find(|(at, _)| *at <= index).unwrap().1.clone();
        node.raw.store_mut().compact_to_snapshot(index, cs, data).unwrap();
    }

    /// The only leader among live nodes (of the highest term), if any.
    pub fn leader(&self) -> Option<u64> {
        self.nodes
            .values()
            .filter(|n| n.role() == Role::Leader)
            .max_by_key(|n| n.term())
            .map(|n| n.id)
    }

    /// Messages sent so far matching `pred`.
    pub fn sent_where(&self, pred: impl Fn(&Message) -> bool) -> Vec<Message> {
        self.sent.iter().filter(|m| pred(m)).cloned().collect()
    }

    // ------------------------------------------------------------------ safety

    /// Log matching (§5.3) and state machine safety (§5.4.3) across live nodes.
    pub fn check_safety(&self) {
        let nodes: Vec<&Node> = self.nodes.values().collect();
        for (i, a) in nodes.iter().enumerate() {
            for b in &nodes[i + 1..] {
                // If two logs hold an entry with the same index and term, they are identical
                // up to it: walking down from the highest common index, once terms agree
                // they agree all the way down.
                let low = a.raw.store().first_index().max(b.raw.store().first_index()).0;
                let high = a.raw.last_index().min(b.raw.last_index()).0;
                let mut agreed = false;
                for index in (low..=high).rev() {
                    let (ta, tb) = (a.raw.term_at(LogIndex(index)), b.raw.term_at(LogIndex(index)));
                    if ta.is_some() && ta == tb {
                        agreed = true;
                    } else if agreed && ta.is_some() && tb.is_some() {
                        panic!("log matching violated at {index} between {} and {}", a.id, b.id);
                    }
                }
                // Applied state machines are prefixes of one another.
                let (da, db) = (a.sm.data(), b.sm.data());
                let n = da.len().min(db.len());
                assert_eq!(da[..n], db[..n], "state machines of {} and {} diverge", a.id, b.id);
            }
        }
    }
}

/// Ids of messages of `kind` in `messages`, as `(from, to)`.
pub fn pairs(messages: &[Message], kind: MessageKind) -> Vec<(u64, u64)> {
    messages.iter().filter(|m| m.kind == kind).map(|m| (m.from.0, m.to.0)).collect()
}

/// The entry at `index` in `id`'s state machine history.
pub fn applied_data(node: &Node) -> Vec<String> {
    node.sm.strings()
}
