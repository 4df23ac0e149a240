//! Commit throughput of our Raft core (`tessera_raft`) with three replicas in memory, in one
//! process, on one thread: the same benchmark, driven the same way, as the raft-rs reference
//! in `bench/raft-rs-baseline` (its README, "Driving method"), so that the two figures can be
//! set side by side.
//!
//! Nothing touches a disk or a socket: what is measured is the consensus core (log
//! bookkeeping, progress tracking, building messages, cloning entries) plus the work of
//! moving its output around. See bench/README.md for the method and the results.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tessera_raft::{Config, ReplicaId, Role};

use crate::cpu;
use crate::raft_group::{Group, Network};

/// The number of replicas.
const REPLICAS: u64 = 3;

/// The replica that is elected and receives every proposal.
pub const LEADER: ReplicaId = ReplicaId(1);

/// Size of every proposed payload, in bytes: an 8-byte sequence number and 8 zero bytes.
pub const PAYLOAD_LEN: usize = 16;

/// Default targets for the number of proposals in flight (proposed, not yet applied on the
/// leader).
pub const DEFAULT_INFLIGHT: [u64; 3] = [1, 64, 1024];

/// Election-timeout seeds are `SEED_BASE + id`. Our core draws each node's first timeout from
/// `[10, 20)` ticks at start; with these seeds replicas 1, 2, 3 draw 13, 13 and 15 ticks, so
/// none campaigns on its own during the start-up ticks (the default seed, the id, would give
/// replica 2 exactly 10). `elect_leader` asserts it.
const SEED_BASE: u64 = 10;

/// Upper bound on rounds for the election to settle; it takes a handful.
const MAX_ELECTION_ROUNDS: usize = 1_000;

/// Measured entries for an in-flight target: W = 1 is much slower per entry, so it gets a
/// smaller sample, as in the baseline.
#[must_use]
pub fn entries_for(inflight: u64) -> u64 {
    if inflight == 1 { 100_000 } else { 1_000_000 }
}

/// The configuration of every replica: `Config::new` (ARCHITECTURE.md §11 defaults) with the
/// settings of the baseline spelled out. `lease_read` stays on as in production; it has no
/// effect here, because nothing reads and nothing ticks during the run. The byte bounds that
/// raft-rs leaves unlimited (`inflight_bytes_max` 32 MiB, `uncommitted_bytes_max` 64 MiB,
/// `apply_bytes_max` 4 MiB) keep their defaults: at most 1,024 entries of 40 counted bytes
/// are ever in flight, so none of them binds.
#[must_use]
pub fn config(id: ReplicaId) -> Config {
    let mut config = Config::new(id);
    config.election_ticks = 10;
    config.heartbeat_ticks = 2;
    config.inflight_msgs_max = 256;
    config.append_bytes_max = 1 << 20;
    config.pre_vote = true;
    config.check_quorum = true;
    config.lease_read = true;
    config.seed = SEED_BASE + id.0;
    config
}

/// Outcome of one measured run.
#[derive(Debug, Clone, Copy)]
pub struct RunResult {
    /// The in-flight target.
    pub inflight: u64,
    /// Entries applied on the leader inside the measured window (N, or slightly more, because
    /// one Ready can apply several entries).
    pub entries: u64,
    /// Wall-clock time of the window.
    pub wall: Duration,
    /// CPU time (user + system) of the window.
    pub cpu: Duration,
    /// Peak resident set size of the process at the end of the run, in bytes.
    pub peak_rss: u64,
}

impl RunResult {
    /// Entries per wall-clock second.
    #[must_use]
    pub fn entries_per_sec(&self) -> f64 {
        self.entries as f64 / self.wall.as_secs_f64()
    }

    /// CPU nanoseconds per entry.
    #[must_use]
    pub fn cpu_ns_per_entry(&self) -> f64 {
        self.cpu.as_nanos() as f64 / self.entries as f64
    }

    /// One JSON object, the same shape as the baseline's with `"impl":"tessera-raft"`.
    #[must_use]
    pub fn to_json(&self) -> String {
        format!(
            "{{\"impl\":\"tessera-raft\",\"version\":\"{}\",\"inflight\":{},\"entries\":{},\
             \"entries_per_sec\":{:.0},\"cpu_ns_per_entry\":{:.1}}}",
            env!("CARGO_PKG_VERSION"),
            self.inflight,
            self.entries,
            self.entries_per_sec(),
            self.cpu_ns_per_entry(),
        )
    }
}

/// Builds a fresh cluster, elects replica 1, warms up on 10% of `entries`, then measures the
/// time to apply `entries` more on the leader while keeping `inflight` proposals outstanding.
///
/// # Panics
/// If a self-check fails: leadership moved, or the applied index does not match the count.
#[must_use]
pub fn run(inflight: u64, entries: u64) -> RunResult {
    assert!(inflight > 0, "the in-flight target must be positive");
    let mut cluster = Cluster::new();
    let noops = cluster.elect_leader();

    cluster.drive_until_applied(inflight, entries / 10);

    let applied_at_start = cluster.applied;
    let wall_start = Instant::now();
    let cpu_start = cpu::cpu_time().expect("the benchmark reads CPU time from Linux /proc");
    cluster.drive_until_applied(inflight, applied_at_start + entries);
    let cpu_end = cpu::cpu_time().expect("the benchmark reads CPU time from Linux /proc");
    let wall = wall_start.elapsed();

    let leader = cluster.group.node(LEADER);
    assert_eq!(
        leader.raft().role(),
        Role::Leader,
        "leadership must not change during the run (nothing ticks, so no election can start)"
    );
    // The leader's log is the election's no-op followed only by our proposals, so the applied
    // index cross-checks the counting.
    assert_eq!(
        leader.applied().0,
        noops + cluster.applied,
        "every applied entry after the election's no-op must have been counted exactly once"
    );
    RunResult {
        inflight,
        entries: cluster.applied - applied_at_start,
        wall,
        cpu: cpu_end.saturating_sub(cpu_start),
        peak_rss: cpu::peak_rss_bytes().unwrap_or(0),
    }
}

/// Three replicas and the proposal counters, all owned by the driving thread.
#[derive(Debug)]
struct Cluster {
    group: Group,
    network: Network,
    /// Proposals handed to the leader so far (including warm-up).
    proposed: u64,
    /// Normal entries with a payload applied on the leader so far (including warm-up).
    applied: u64,
}

impl Cluster {
    fn new() -> Self {
        Self {
            group: Group::new(REPLICAS, config),
            network: Network::new(REPLICAS),
            proposed: 0,
            applied: 0,
        }
    }

    /// Elects replica 1 and lets the cluster settle; returns the leader's applied index then
    /// (its term-start no-op).
    ///
    /// One difference from the baseline: our core makes a replica that started less than an
    /// election timeout ago ignore vote requests (it cannot know whether it granted a lease
    /// just before a restart), and raft-rs has no such rule. So every replica first gets
    /// `election_ticks` ticks; the seeds keep each one's own timeout beyond that. After the
    /// election nothing ticks again.
    fn elect_leader(&mut self) -> u64 {
        let election_ticks = config(LEADER).election_ticks;
        for _ in 0..election_ticks {
            self.group.tick(false);
            self.group.settle(&mut self.network, LEADER, MAX_ELECTION_ROUNDS);
        }
        assert!(
            self.group.nodes().iter().all(|node| node.raft().role() == Role::Follower),
            "no replica may campaign on its own during the start-up ticks (see SEED_BASE)"
        );
        self.group.node_mut(LEADER).campaign();
        let activity = self.group.settle(&mut self.network, LEADER, MAX_ELECTION_ROUNDS);
        assert_eq!(activity.applied, 0, "nothing but the no-op is applied during the election");
        assert_eq!(self.group.leaders(), [LEADER], "replica {LEADER} must have won the election");
        let leader = self.group.node(LEADER);
        assert_eq!(leader.applied(), leader.last_index(), "the no-op is committed and applied");
        leader.applied().0
    }

    /// Repeats the main loop until at least `target` entries have been applied on the
    /// leader, keeping `inflight` proposals outstanding.
    fn drive_until_applied(&mut self, inflight: u64, target: u64) {
        while self.applied < target {
            self.top_up(inflight);
            self.applied += self.group.round(&mut self.network, LEADER).applied;
        }
    }

    /// Proposes on the leader until `proposed - applied == inflight`, one 16-byte payload per
    /// `propose()` call.
    fn top_up(&mut self, inflight: u64) {
        let leader = self.group.node_mut(LEADER);
        while self.proposed - self.applied < inflight {
            let mut payload = vec![0u8; PAYLOAD_LEN];
            payload[..8].copy_from_slice(&self.proposed.to_le_bytes());
            leader
                .propose(Bytes::from(payload))
                .expect("a stable leader with no transfer and a bounded backlog accepts proposals");
            self.proposed += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_run_applies_every_entry_on_a_stable_leader() {
        for inflight in [1, 64] {
            let result = run(inflight, 2_000);
            assert!(result.entries >= 2_000 && result.entries < 2_000 + inflight);
            assert!(result.to_json().starts_with("{\"impl\":\"tessera-raft\""));
        }
    }
}
