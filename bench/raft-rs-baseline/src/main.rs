//! Reference figure for Tessera's Raft core: how fast does tikv's `raft` crate (raft-rs)
//! commit entries when three replicas are driven in memory, in one process, on one thread?
//!
//! Nothing here touches a disk or a socket: every node persists into its own `MemStorage`
//! and messages are moved between per-node inboxes. What is measured is therefore the cost
//! of the consensus library itself (log bookkeeping, progress tracking, message building,
//! entry cloning) plus the unavoidable work of shuttling its output around.
//!
//! The driving method is described in README.md and must stay in step with it: Tessera's own
//! core is benchmarked with the same loop so that the two figures are comparable.
//!
//! Usage: `cargo run --release [-- W ...]` (default W = 1, 64, 1024). Human-readable results go
//! to stderr, one JSON object per W goes to stdout.

use std::time::{Duration, Instant};

use raft::eraftpb::{ConfState, Entry, EntryType, Message};
use raft::storage::MemStorage;
use raft::{Config, RawNode, StateRole};

/// The raft-rs version this crate is pinned to in Cargo.toml (`raft = "=..."`).
/// Keep the two in step: it is reported in the JSON output.
const RAFT_RS_VERSION: &str = "0.7.0";

/// Replica ids. Node `id` lives at index `id - 1` of every per-node vector.
const NODE_IDS: [u64; 3] = [1, 2, 3];

/// The node that is elected and receives every proposal.
const LEADER_ID: u64 = 1;

/// Size of every proposed payload, in bytes.
const PAYLOAD_LEN: usize = 16;

/// Default targets for the number of proposals in flight (proposed but not yet applied on the
/// leader).
const DEFAULT_INFLIGHT: [u64; 3] = [1, 64, 1024];

/// Upper bound on driving rounds while electing the leader; a healthy election with pre-vote
/// settles in a handful of rounds.
const MAX_ELECTION_ROUNDS: usize = 1_000;

fn main() {
    let inflight_targets: Vec<u64> = {
        let args: Vec<u64> = std::env::args()
            .skip(1)
            .map(|a| a.parse().expect("arguments must be in-flight targets (positive integers)"))
            .collect();
        if args.is_empty() { DEFAULT_INFLIGHT.to_vec() } else { args }
    };
    assert!(inflight_targets.iter().all(|&w| w > 0), "in-flight targets must be positive");

    for inflight in inflight_targets {
        let entries = entries_for(inflight);
        let result = run(inflight, entries);
        eprintln!(
            "raft-rs {RAFT_RS_VERSION}  W={inflight:<5} entries={:<8} {:>12.0} entries/s  \
             {:>8.1} CPU ns/entry  ({:.2} s wall)",
            result.entries,
            result.entries_per_sec(),
            result.cpu_ns_per_entry(),
            result.wall.as_secs_f64(),
        );
        println!(
            "{{\"impl\":\"raft-rs\",\"version\":\"{RAFT_RS_VERSION}\",\"inflight\":{inflight},\
             \"entries\":{},\"entries_per_sec\":{:.0},\"cpu_ns_per_entry\":{:.1}}}",
            result.entries,
            result.entries_per_sec(),
            result.cpu_ns_per_entry(),
        );
    }
}

/// Number of measured entries for an in-flight target: W = 1 is two orders of magnitude slower
/// per entry wall-clock-wise, so it gets a smaller (still statistically ample) sample.
fn entries_for(inflight: u64) -> u64 {
    if inflight == 1 { 100_000 } else { 1_000_000 }
}

/// Outcome of one measured run.
struct RunResult {
    /// Entries applied on the leader inside the measured window (N, or slightly more because a
    /// single `Ready` can apply several entries at once).
    entries: u64,
    wall: Duration,
    cpu: Duration,
}

impl RunResult {
    fn entries_per_sec(&self) -> f64 {
        self.entries as f64 / self.wall.as_secs_f64()
    }

    fn cpu_ns_per_entry(&self) -> f64 {
        self.cpu.as_nanos() as f64 / self.entries as f64
    }
}

/// Builds a fresh cluster, elects node 1, warms up on 10% of `entries`, then measures the time
/// to apply `entries` more on the leader while keeping `inflight` proposals outstanding.
fn run(inflight: u64, entries: u64) -> RunResult {
    let mut cluster = Cluster::new();
    cluster.elect_leader();

    let warmup = entries / 10;
    cluster.drive_until_applied(inflight, warmup);

    let applied_at_start = cluster.applied;
    let wall_start = Instant::now();
    let cpu_start = process_cpu_time();
    cluster.drive_until_applied(inflight, applied_at_start + entries);
    let cpu = process_cpu_time().saturating_sub(cpu_start);
    let wall = wall_start.elapsed();

    assert_eq!(
        cluster.node(LEADER_ID).raft.state,
        StateRole::Leader,
        "leadership must not change during the run (nothing ticks, so no election can start)"
    );
    // The leader's log is its term-start no-op (index 1, from a fresh storage) followed only
    // by our proposals, so the applied index cross-checks the counting in `drain_ready`.
    assert_eq!(
        cluster.node(LEADER_ID).raft.raft_log.applied,
        1 + cluster.applied,
        "every applied log entry after the no-op must have been counted exactly once"
    );
    RunResult { entries: cluster.applied - applied_at_start, wall, cpu }
}

/// Three raft-rs replicas and their inboxes, all owned by the single driving thread.
struct Cluster {
    /// `RawNode` of node `id` at index `id - 1`. Each owns a `MemStorage` handle; the storage is
    /// an `Arc<RwLock<..>>`, so `node.store()` reaches the same log the node reads from.
    nodes: Vec<RawNode<MemStorage>>,
    /// Messages waiting to be stepped into node `id`, at index `id - 1`.
    inboxes: Vec<Vec<Message>>,
    /// Proposals handed to the leader so far (including warm-up).
    proposed: u64,
    /// Normal, non-empty entries applied on the leader so far (including warm-up).
    applied: u64,
}

impl Cluster {
    fn new() -> Self {
        // Nothing is logged on the hot path: a discarding logger keeps formatting out of the
        // measurement.
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let nodes = NODE_IDS
            .iter()
            .map(|&id| {
                let config = Config {
                    id,
                    election_tick: 10,
                    heartbeat_tick: 2,
                    max_inflight_msgs: 256,
                    max_size_per_msg: 1024 * 1024,
                    pre_vote: true,
                    check_quorum: true,
                    ..Config::default()
                };
                config.validate().expect("the benchmark's raft config is valid");
                // Every node starts from the same initial membership {1, 2, 3}, no learners.
                let storage = MemStorage::new_with_conf_state(ConfState::from((NODE_IDS, [])));
                RawNode::new(&config, storage, &logger)
                    .expect("a RawNode over a fresh MemStorage can always be created")
            })
            .collect();
        Self { nodes, inboxes: vec![Vec::new(); NODE_IDS.len()], proposed: 0, applied: 0 }
    }

    fn node(&self, id: u64) -> &RawNode<MemStorage> {
        &self.nodes[index_of(id)]
    }

    /// Node 1 campaigns; rounds are driven until it is leader and the cluster is quiescent (its
    /// no-op entry committed everywhere and no message left in flight).
    fn elect_leader(&mut self) {
        self.nodes[index_of(LEADER_ID)].campaign().expect("a fresh follower can always campaign");
        for _ in 0..MAX_ELECTION_ROUNDS {
            let busy = self.nodes.iter().any(RawNode::has_ready)
                || self.inboxes.iter().any(|inbox| !inbox.is_empty());
            if !busy {
                break;
            }
            self.round();
        }
        assert_eq!(
            self.node(LEADER_ID).raft.state,
            StateRole::Leader,
            "node {LEADER_ID} must have won the election"
        );
        assert!(
            self.inboxes.iter().all(Vec::is_empty),
            "the election must settle within {MAX_ELECTION_ROUNDS} rounds"
        );
    }

    /// Repeats the main loop until at least `target` entries have been applied on the leader,
    /// keeping `inflight` proposals outstanding.
    fn drive_until_applied(&mut self, inflight: u64, target: u64) {
        while self.applied < target {
            self.top_up(inflight);
            self.round();
        }
    }

    /// Proposes on the leader until `proposed - applied == inflight`, one 16-byte payload per
    /// `propose()` call.
    fn top_up(&mut self, inflight: u64) {
        let leader = &mut self.nodes[index_of(LEADER_ID)];
        while self.proposed - self.applied < inflight {
            // The payload carries the proposal's sequence number so entries are distinct; the
            // remaining bytes are padding up to PAYLOAD_LEN.
            let mut payload = vec![0u8; PAYLOAD_LEN];
            payload[..8].copy_from_slice(&self.proposed.to_le_bytes());
            leader
                .propose(Vec::new(), payload)
                .expect("a stable leader with no pending transfer accepts proposals");
            self.proposed += 1;
        }
    }

    /// One round of the main loop: drain every node's `Ready`s in id order, then step every
    /// queued message into its destination.
    fn round(&mut self) {
        for (index, node) in self.nodes.iter_mut().enumerate() {
            let applied = drain_ready(node, &mut self.inboxes);
            if NODE_IDS[index] == LEADER_ID {
                self.applied += applied;
            }
        }
        for (node, inbox) in self.nodes.iter_mut().zip(&mut self.inboxes) {
            for message in inbox.drain(..) {
                node.step(message).expect("in-memory raft messages between members are valid");
            }
        }
    }
}

/// Handles `Ready`s on one node until it has none left, with synchronous in-memory persistence.
/// Outgoing messages are queued in the destination inboxes. Returns how many normal, non-empty
/// entries were applied (committed entries handed out by this node).
///
/// The sequence follows raft-rs 0.7's contract for synchronous persistence:
/// 1. persist the snapshot, the unstable entries and the hard state into the node's storage;
/// 2. send `messages()` (a leader may send these before persisting) and `persisted_messages()`
///    (only valid once step 1 is done; in-process they are simply queued);
/// 3. apply `committed_entries()`;
/// 4. `advance()` (= `advance_append` + `advance_apply_to` for the entries of step 3), which
///    returns a `LightReady` holding what became possible only after persistence (the leader's
///    own vote for the new entries can move the commit index): record the new commit index in
///    the hard state, send its messages, apply its committed entries, then `advance_apply()`.
fn drain_ready(node: &mut RawNode<MemStorage>, inboxes: &mut [Vec<Message>]) -> u64 {
    let mut applied = 0;
    while node.has_ready() {
        let mut ready = node.ready();
        {
            let mut storage = node.store().wl();
            if !ready.snapshot().is_empty() {
                // Never happens in this benchmark (no compaction), handled for completeness.
                storage
                    .apply_snapshot(ready.snapshot().clone())
                    .expect("a snapshot from our own raft node is newer than its storage");
            }
            storage.append(ready.entries()).expect("unstable entries continue the stored log");
            if let Some(hard_state) = ready.hs() {
                storage.set_hardstate(hard_state.clone());
            }
        }
        route(ready.take_messages(), inboxes);
        route(ready.take_persisted_messages(), inboxes);
        applied += count_applied(&ready.take_committed_entries());

        let mut light = node.advance(ready);
        if let Some(commit) = light.commit_index() {
            node.store().wl().mut_hard_state().set_commit(commit);
        }
        route(light.take_messages(), inboxes);
        applied += count_applied(&light.take_committed_entries());
        node.advance_apply();
    }
    applied
}

/// Queues each message in its destination's inbox.
fn route(messages: Vec<Message>, inboxes: &mut [Vec<Message>]) {
    for message in messages {
        inboxes[index_of(message.get_to())].push(message);
    }
}

/// "Applies" committed entries: the state machine is a no-op, only client proposals are counted
/// (the empty entry a new leader appends, and configuration changes, are not).
fn count_applied(entries: &[Entry]) -> u64 {
    entries
        .iter()
        .filter(|e| e.get_entry_type() == EntryType::EntryNormal && !e.get_data().is_empty())
        .count() as u64
}

/// Position of node `id` in the per-node vectors.
fn index_of(id: u64) -> usize {
    NODE_IDS.iter().position(|&n| n == id).expect("messages are only addressed to members")
}

/// User + system CPU time consumed by this process so far (`getrusage(RUSAGE_SELF)`).
fn process_cpu_time() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: `usage` points to writable memory of the right type; getrusage only writes it.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    assert_eq!(rc, 0, "getrusage(RUSAGE_SELF) cannot fail with a valid pointer");
    // SAFETY: getrusage returned 0, so it filled the whole struct.
    let usage = unsafe { usage.assume_init() };
    let timeval = |tv: libc::timeval| {
        let secs = u64::try_from(tv.tv_sec).expect("CPU time is never negative");
        let micros = u64::try_from(tv.tv_usec).expect("CPU time is never negative");
        Duration::from_secs(secs) + Duration::from_micros(micros)
    };
    timeval(usage.ru_utime) + timeval(usage.ru_stime)
}
