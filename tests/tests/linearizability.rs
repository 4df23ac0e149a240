//! End-to-end linearizability under faults, with real processes: three placement members and
//! three stores on loopback (RocksDB, QUIC, 20 ms ticks), eight clients running a random mix
//! of get, put, compare-and-swap and delete over six keys that end up in different ranges,
//! while one fault scenario runs:
//!
//! 1. the store leading the most ranges is killed (SIGKILL) and restarted on its data;
//! 2. the store leading the most ranges is frozen (SIGSTOP) for a few seconds, then thawed;
//! 3. ranges are split between the keys and leaders moved, over and over;
//! 4. the placement leader is killed and restarted (twice), once together with a store, so
//!    that the clients' routing lookups must find the new placement leader.
//!
//! Then the cluster heals (every process answers, every range has three voters and a
//! leader), the load stops, every key is read once more, and the whole history, final
//! reads included, must be linearizable per key (`tessera_tests::history`, the WGL
//! algorithm of the todc-utils crate). The final reads make a lost acknowledged write a
//! violation too.
//!
//! How outcomes are recorded: a get that fails constrains nothing and is dropped. A put or
//! delete that fails has an unknown outcome whatever the error (conservative: the client
//! does not resend writes after ambiguous failures, so a definite refusal means nothing was
//! applied, but the history does not lean on it). A compare-and-swap that fails with
//! `Timeout` or `OutcomeUnknown` has an unknown outcome, and any other error means it was
//! not applied (the client's documented contract, checked here). An unknown outcome may
//! take effect at any time after its invocation, later faults included. After one, the
//! client goes on as a new process of the history.
//!
//! The clients keep the default `retry_ambiguous_writes = false`: with resent writes, an
//! attempt held by the frozen store is applied after its retry was acknowledged and after
//! later writes, and the history is (rightly) not linearizable.
//!
//! `LIN_SEED=n` replays the workload's choices (not the timing of the faults). On failure
//! the test's directory (every process's log, the data) is kept and its path printed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tessera_client::{ClientError, RawClient};
use tessera_raft::SplitMix64;
use tessera_tests::cluster::Cluster;
use tessera_tests::history::{Op, Outcome, Recorder};

/// The keys of the workload: `lin/0` … `lin/5`.
const KEYS: u64 = 6;
/// Concurrent clients.
const WORKERS: u64 = 8;
/// Operations issued per key at most (the final read comes on top).
const OPS_PER_KEY: usize = 280;
/// Placement members and stores.
const PLACEMENT_MEMBERS: u64 = 3;
const STORES: u64 = 3;
const VOTERS: usize = 3;
/// One client call, retries included; one attempt.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(1);
/// Every wait for the cluster ends by this deadline.
const WAIT: Duration = Duration::from_secs(45);
/// The process ids of the final reads (workers start at 0 and count up).
const FINAL_READER: u64 = 1_000_000;
/// Operations that must complete before the history is checked (the budget, `KEYS *
/// OPS_PER_KEY`, is far above).
const MIN_COMPLETED: usize = 300;

fn key(k: u64) -> Bytes {
    Bytes::from(format!("lin/{k}"))
}

/// A split point between `key(k)` and `key(k + 1)`.
fn split_key(k: u64) -> Bytes {
    Bytes::from(format!("lin/{k}/"))
}

fn encode(value: u64) -> Bytes {
    Bytes::from(format!("v{value}"))
}

/// The value written as `encode(value)`; anything else (never written) as `u64::MAX`.
fn decode(bytes: &Bytes) -> u64 {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|text| text.strip_prefix('v'))
        .and_then(|digits| digits.parse().ok())
        .unwrap_or(u64::MAX)
}

fn seed() -> u64 {
    std::env::var("LIN_SEED").ok().and_then(|seed| seed.parse().ok()).unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        u64::from(nanos) ^ u64::from(std::process::id()) << 32
    })
}

/// What one worker's failed calls were, by kind: how many, and the first one's message.
type Errors = BTreeMap<&'static str, (usize, String)>;

fn note(errors: &mut Errors, op: Op, error: &ClientError) {
    let entry = errors.entry(kind(error)).or_insert_with(|| (0, format!("{op:?}: {error}")));
    entry.0 += 1;
}

fn kind(error: &ClientError) -> &'static str {
    match error {
        ClientError::Timeout { .. } => "timeout",
        ClientError::OutcomeUnknown { .. } => "outcome unknown",
        ClientError::Unavailable { .. } => "unavailable",
        ClientError::Server(_) => "server",
        ClientError::Placement(_) => "placement",
        ClientError::InvalidArgument(_) => "invalid argument",
        ClientError::Transport(_) => "transport",
        ClientError::UnexpectedResponse(_) => "unexpected response",
        _ => "other",
    }
}

/// The clients running against the cluster, recording into one history.
struct Workload {
    recorder: Arc<Recorder>,
    stop: Arc<AtomicBool>,
    workers: Vec<tokio::task::JoinHandle<Errors>>,
    /// Workers that stopped because every key's budget of operations was spent.
    finished: Arc<AtomicUsize>,
    started: Instant,
}

/// How one call ended, for the history.
enum Ended {
    Done(Outcome),
    /// Certainly not applied.
    Failed(ClientError),
    /// Perhaps applied.
    Unknown(ClientError),
}

async fn execute(client: &RawClient, op: Op) -> Ended {
    let ended = match op {
        Op::Get { key: k } => match client.get(key(k)).await {
            Ok(value) => return Ended::Done(Outcome::Get(value.as_ref().map(decode))),
            Err(error) => Ended::Failed(error),
        },
        Op::Put { key: k, value } => match client.put(key(k), encode(value)).await {
            Ok(()) => return Ended::Done(Outcome::Put),
            Err(error) => Ended::Unknown(error),
        },
        Op::Delete { key: k } => match client.delete(key(k)).await {
            Ok(()) => return Ended::Done(Outcome::Delete),
            Err(error) => Ended::Unknown(error),
        },
        Op::Cas { key: k, expected, new } => {
            match client.compare_and_swap(key(k), expected.map(encode), Some(encode(new))).await {
                Ok((succeeded, previous)) => {
                    let previous = previous.as_ref().map(decode);
                    return Ended::Done(Outcome::Cas { succeeded, previous });
                }
                Err(error) if error.outcome_unknown() => Ended::Unknown(error),
                Err(error) => Ended::Failed(error),
            }
        }
    };
    match ended {
        // Nothing was sent: whatever the operation, it did not happen.
        Ended::Unknown(error @ ClientError::InvalidArgument(_)) => Ended::Failed(error),
        other => other,
    }
}

impl Workload {
    /// Starts `WORKERS` clients, each with its own connection and route cache.
    fn start(cluster: &Cluster, seed: u64) -> Self {
        let recorder = Arc::new(Recorder::new());
        let stop = Arc::new(AtomicBool::new(false));
        let issued: Arc<Vec<AtomicUsize>> =
            Arc::new((0..KEYS).map(|_| AtomicUsize::new(0)).collect());
        let values = Arc::new(AtomicU64::new(1));
        let processes = Arc::new(AtomicU64::new(WORKERS));
        let finished = Arc::new(AtomicUsize::new(0));
        let mut workers = Vec::new();
        for worker in 0..WORKERS {
            let client = cluster.client(REQUEST_TIMEOUT, ATTEMPT_TIMEOUT);
            let (recorder, stop, issued, values, processes) =
                (recorder.clone(), stop.clone(), issued.clone(), values.clone(), processes.clone());
            let finished = finished.clone();
            let mut rng = SplitMix64::new(seed ^ (worker + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            workers.push(cluster.runtime().spawn(async move {
                let mut errors = Errors::new();
                let mut process = worker;
                // The last value this worker saw for each key, for its compare-and-swaps.
                let mut seen: Vec<Option<u64>> = vec![None; KEYS as usize];
                while !stop.load(Ordering::Relaxed) {
                    let k = rng.range(0, KEYS);
                    if issued[k as usize].fetch_add(1, Ordering::Relaxed) >= OPS_PER_KEY {
                        if issued.iter().all(|n| n.load(Ordering::Relaxed) >= OPS_PER_KEY) {
                            finished.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        continue;
                    }
                    let op = match rng.range(0, 20) {
                        0..=7 => Op::Get { key: k },
                        8..=12 => Op::Put { key: k, value: values.fetch_add(1, Ordering::Relaxed) },
                        13..=17 => {
                            let expected = match rng.range(0, 4) {
                                0 | 1 => seen[k as usize],
                                2 => None,
                                _ => Some(rng.range(1, values.load(Ordering::Relaxed) + 1)),
                            };
                            let new = values.fetch_add(1, Ordering::Relaxed);
                            Op::Cas { key: k, expected, new }
                        }
                        _ => Op::Delete { key: k },
                    };
                    let id = recorder.invoke(process, op);
                    match execute(&client, op).await {
                        Ended::Done(outcome) => {
                            recorder.complete(id, outcome);
                            match outcome {
                                Outcome::Get(read) => seen[k as usize] = read,
                                Outcome::Cas { succeeded: true, .. } => {
                                    if let Op::Cas { new, .. } = op {
                                        seen[k as usize] = Some(new);
                                    }
                                }
                                Outcome::Cas { previous, .. } => seen[k as usize] = previous,
                                _ => {}
                            }
                        }
                        Ended::Failed(error) => {
                            note(&mut errors, op, &error);
                            recorder.fail(id);
                        }
                        Ended::Unknown(error) => {
                            note(&mut errors, op, &error);
                            recorder.complete(id, Outcome::Unknown);
                            process = processes.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    let pause = Duration::from_millis(rng.range(60, 200));
                    tokio::time::sleep(pause).await;
                }
                errors
            }));
        }
        Self { recorder, stop, workers, finished, started: Instant::now() }
    }

    /// Waits until at least `ops` more operations completed (so that a fault hits a loaded
    /// cluster), or the workers spent their budget.
    fn wait_for_ops(&self, ops: usize) {
        self.wait_for_completed(self.recorder.counts().completed + ops);
    }

    /// Waits until at least `target` operations completed in all, or the workers spent
    /// their budget.
    fn wait_for_completed(&self, target: usize) {
        let started = Instant::now();
        while self.recorder.counts().completed < target {
            if self.finished.load(Ordering::Relaxed) == WORKERS as usize {
                eprintln!("the workload spent its budget of {OPS_PER_KEY} operations per key");
                return;
            }
            assert!(
                started.elapsed() < WAIT,
                "the workload does not progress: {:?}",
                self.recorder.counts()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the clients and waits for their last calls.
    fn stop(self, cluster: &Cluster) -> Arc<Recorder> {
        self.stop.store(true, Ordering::Relaxed);
        let mut errors = Errors::new();
        for worker in self.workers {
            for (kind, (count, first)) in cluster.block_on(worker).unwrap() {
                errors.entry(kind).or_insert((0, first)).0 += count;
            }
        }
        eprintln!("workload ran {:?}; failed calls by kind: {errors:?}", self.started.elapsed());
        self.recorder
    }
}

/// Reads every key once more, after the faults, into the history.
fn final_reads(cluster: &Cluster, recorder: &Recorder) -> BTreeMap<u64, Option<u64>> {
    let client = cluster.client(REQUEST_TIMEOUT, ATTEMPT_TIMEOUT);
    let mut values = BTreeMap::new();
    for k in 0..KEYS {
        let started = Instant::now();
        loop {
            let id = recorder.invoke(FINAL_READER + k, Op::Get { key: k });
            match cluster.block_on(client.get(key(k))) {
                Ok(value) => {
                    let value = value.as_ref().map(decode);
                    recorder.complete(id, Outcome::Get(value));
                    values.insert(k, value);
                    break;
                }
                Err(error) => {
                    recorder.fail(id);
                    assert!(started.elapsed() < WAIT, "final read of {:?}: {error}", key(k));
                }
            }
        }
    }
    values
}

/// Starts a cluster, splits it at `pre_splits`, runs the workload through `faults` (which
/// returns the number of ranges the cluster has afterwards), heals, and checks the history.
fn run(
    name: &str,
    cluster_id: u64,
    pre_splits: &[u64],
    faults: impl FnOnce(&mut Cluster, &Workload) -> usize,
) {
    let test_started = Instant::now();
    let seed = seed();
    eprintln!("{name}: seed {seed} (replay the workload's choices with LIN_SEED={seed})");
    let mut cluster = Cluster::start(cluster_id, PLACEMENT_MEMBERS, STORES);
    let took = cluster.wait_replicated(1, VOTERS, WAIT);
    eprintln!(
        "{name}: processes ready, range 1 with {VOTERS} voters after {:?} ({took:?} waiting)",
        test_started.elapsed()
    );
    for k in pre_splits {
        cluster.split(&split_key(*k), WAIT);
    }
    cluster.wait_replicated(1 + pre_splits.len(), VOTERS, WAIT);
    eprintln!(
        "{name}: {} ranges ready after {:?}; leaders {:?}",
        1 + pre_splits.len(),
        test_started.elapsed(),
        cluster.leader_counts()
    );

    let workload = Workload::start(&cluster, seed);
    workload.wait_for_ops(100);
    let faults_started = Instant::now();
    let ranges = faults(&mut cluster, &workload);
    eprintln!("{name}: faults over after {:?}", faults_started.elapsed());
    let took = cluster.wait_healthy(ranges, VOTERS, WAIT);
    eprintln!("{name}: healthy {took:?} later; leaders {:?}", cluster.leader_counts());
    // Some load on the healed cluster, and enough operations in all for the history to mean
    // something (a slow machine completes fewer while the faults run).
    workload.wait_for_ops(50);
    workload.wait_for_completed(MIN_COMPLETED);
    let recorder = workload.stop(&cluster);
    let finals = final_reads(&cluster, &recorder);

    let counts = recorder.counts();
    eprintln!(
        "{name}: {counts:?} operations; per key {:?}; final values {finals:?}",
        recorder.counts_by_key()
    );
    assert!(
        counts.completed >= MIN_COMPLETED,
        "too few operations completed to mean anything: {counts:?}"
    );
    let started = Instant::now();
    let verdict = recorder.check();
    eprintln!("{name}: history checked in {:?}", started.elapsed());
    if let Err(violation) = verdict {
        let path = cluster.keep();
        panic!(
            "{name}: NOT LINEARIZABLE (seed {seed}): key {:?}; logs and data in {}\n{violation}",
            key(violation.key),
            path.display()
        );
    }
    drop(cluster);
    eprintln!("{name}: passed in {:?}", test_started.elapsed());
}

/// Waits `duration` of load on the cluster as it is (a fault's duration, not a readiness
/// wait).
fn under_load(duration: Duration) {
    std::thread::sleep(duration);
}

#[test]
fn linearizable_across_a_store_kill_and_restart() {
    run("store kill", 41, &[1, 3], |cluster, workload| {
        let victim = cluster.store_with_most_leaders();
        eprintln!("killing store {victim} (leaders {:?})", cluster.leader_counts());
        cluster.kill_store(victim);
        let killed = Instant::now();
        let took = cluster.wait_ranges("new leaders away from the killed store", WAIT, |routes| {
            routes
                .iter()
                .all(|route| route.leader.is_some_and(|leader| leader.store_id.0 != victim))
        });
        eprintln!("every range led elsewhere {took:?} after the kill");
        workload.wait_for_ops(100);
        under_load(Duration::from_secs(2).saturating_sub(killed.elapsed()));
        cluster.restart_store(victim);
        eprintln!("store {victim} restarted {:?} after the kill", killed.elapsed());
        // A leader transfer needs the target caught up with the leader's log.
        let took = cluster.transfer_leader(&key(0), victim, WAIT);
        eprintln!("store {victim} caught up and leads {:?} {took:?} after its restart", key(0));
        workload.wait_for_ops(50);
        3
    });
}

#[test]
fn linearizable_across_a_store_pause() {
    run("store pause", 42, &[1, 3], |cluster, workload| {
        let victim = cluster.store_with_most_leaders();
        eprintln!("stopping store {victim} (leaders {:?})", cluster.leader_counts());
        cluster.signal_store(victim, "STOP");
        let stopped = Instant::now();
        workload.wait_for_ops(50);
        under_load(Duration::from_secs(4).saturating_sub(stopped.elapsed()));
        cluster.signal_store(victim, "CONT");
        eprintln!("store {victim} continued after {:?}", stopped.elapsed());
        // Its stale leaderships must step down or be fenced; it catches up.
        let took = cluster.transfer_leader(&key(5), victim, WAIT);
        eprintln!("store {victim} caught up and leads {:?} {took:?} later", key(5));
        3
    });
}

#[test]
fn linearizable_across_splits_and_leader_transfers() {
    run("splits and transfers", 43, &[2], |cluster, workload| {
        let stores = cluster.store_ids();
        let mut rng = SplitMix64::new(seed());
        for (n, k) in [0, 4, 1, 3].into_iter().enumerate() {
            let took = cluster.split(&split_key(k), WAIT);
            eprintln!("split at {:?} in {took:?}", split_key(k));
            // Move the leader of the range right of the split point.
            let moved = key(k + 1);
            let current = cluster.route(&moved).leader.map(|leader| leader.store_id.0);
            let others: Vec<u64> = stores.iter().copied().filter(|s| Some(*s) != current).collect();
            let to = others[rng.range(0, others.len() as u64) as usize];
            let took = cluster.transfer_leader(&moved, to, WAIT);
            eprintln!("leader of {moved:?} {current:?} -> {to} in {took:?}");
            workload.wait_for_ops(20 + 10 * n);
        }
        // The range split first moves once more, with everything split.
        let to = cluster.route(&key(0)).leader.map_or(1, |leader| leader.store_id.0 % 3 + 1);
        cluster.transfer_leader(&key(0), to, WAIT);
        6
    });
}

#[test]
fn linearizable_across_placement_leader_kills() {
    run("placement leader kills", 44, &[1], |cluster, workload| {
        // Round 1: the placement leader and the busiest store die together, so the clients
        // must look routes up (at the new placement leader) to get around the store.
        let leader = cluster.placement_leader();
        let victim = cluster.store_with_most_leaders();
        eprintln!("killing placement leader {leader} and store {victim}");
        cluster.kill_placement(leader);
        cluster.kill_store(victim);
        let killed = Instant::now();
        let took = cluster.wait_ranges("new leaders away from the killed store", WAIT, |routes| {
            routes
                .iter()
                .all(|route| route.leader.is_some_and(|leader| leader.store_id.0 != victim))
        });
        eprintln!(
            "placement leader now {}; ranges led elsewhere {took:?} after the kills",
            cluster.placement_leader()
        );
        workload.wait_for_ops(50);
        under_load(Duration::from_secs(2).saturating_sub(killed.elapsed()));
        cluster.restart_placement(leader);
        cluster.restart_store(victim);
        eprintln!(
            "placement {leader} and store {victim} restarted {:?} after the kills",
            killed.elapsed()
        );
        let took = cluster.transfer_leader(&key(0), victim, WAIT);
        eprintln!("store {victim} caught up {took:?} later");

        // Round 2: the placement leader dies again; the new one splits and moves a leader.
        let leader = cluster.placement_leader();
        eprintln!("killing placement leader {leader}");
        cluster.kill_placement(leader);
        let killed = Instant::now();
        let took = cluster.split(&split_key(3), WAIT);
        eprintln!(
            "split at {:?} {took:?} after the kill, by placement leader {}",
            split_key(3),
            cluster.placement_leader()
        );
        let current = cluster.route(&key(4)).leader.map(|leader| leader.store_id.0);
        let to = current.map_or(1, |store| store % 3 + 1);
        cluster.transfer_leader(&key(4), to, WAIT);
        workload.wait_for_ops(50);
        cluster.restart_placement(leader);
        eprintln!("placement {leader} restarted {:?} after the kill", killed.elapsed());
        3
    });
}
