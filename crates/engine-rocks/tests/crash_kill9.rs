//! Crash recovery for real: a child process appends to several ranges' logs with synced group
//! commits and applies to the KV engine with periodic WAL syncs, printing what it has been
//! told is durable; the parent kills it with SIGKILL at a random point, reopens the engines
//! and checks that everything acknowledged is there and that no batch is half visible. The
//! same directory is reused across rounds, so each round also recovers from the last one.
//!
//! The child is this test binary again, started with `TESSERA_CRASH_CHILD_DIR` set and asked
//! to run only [`crash_child`]. `TESSERA_CRASH_SEED` replays a run; `TESSERA_CRASH_ROUNDS`
//! overrides the number of rounds.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tessera_engine::{
    ApplyState, Cf, Direction, KeySpan, KvBatch, KvEngine, KvRead, RaftLogBatch, RaftLogEngine,
    RaftLogState, keys,
};
use tessera_engine_rocks::EngineOptions;
use tessera_wire::ids::RangeId;
use tessera_wire::raft::{Entry, EntryKind, HardState, LogIndex, ReplicaId, Term};

const CHILD_DIR_ENV: &str = "TESSERA_CRASH_CHILD_DIR";
const RANGES: u64 = 4;
/// The child syncs the KV WAL after every this many applied batches.
const KV_SYNC_EVERY: u64 = 3;
const ROUND_DEADLINE: Duration = Duration::from_secs(60);

fn payload(range: RangeId, index: LogIndex) -> Bytes {
    // Varying lengths, so a torn value cannot look whole by accident.
    let len = 16 + ((range.0 * 31 + index.0 * 7) % 200) as usize;
    Bytes::from(
        (0..len)
            .map(|i| (range.0 as u8) ^ (index.0 as u8).wrapping_mul(13) ^ i as u8)
            .collect::<Vec<_>>(),
    )
}

fn data_key(range: RangeId, index: LogIndex) -> Vec<u8> {
    let mut user_key = range.0.to_be_bytes().to_vec();
    user_key.extend_from_slice(&index.0.to_be_bytes());
    keys::data_key(&user_key)
}

fn ranges() -> impl Iterator<Item = RangeId> {
    (1..=RANGES).map(RangeId)
}

/// The child: appends and applies forever, printing `raft N` once entry N of every range is
/// synced and `kv N` once apply state N of every range is synced.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else { return };
    let (raft, kv) =
        tessera_engine_rocks::open(Path::new(&dir), &EngineOptions::default()).unwrap();
    let mut next =
        raft.stored_index_bounds(RangeId(1)).unwrap().map_or(LogIndex(1), |(_, last)| last.next());
    let mut stdout = std::io::stdout().lock();
    let mut raft_batch = raft.batch();
    let mut kv_batch = kv.batch();
    // Like a restarting store: re-apply what the log has beyond the recovered apply state.
    for range in ranges() {
        let applied =
            kv.apply_state(range).unwrap().map_or(LogIndex(0), |state| state.applied_index);
        let mut index = applied.next();
        while index < next {
            kv_batch.put(Cf::Default, &data_key(range, index), &payload(range, index));
            kv_batch.put_apply_state(
                range,
                &ApplyState { applied_index: index, applied_term: Term(1) },
            );
            kv.write(&mut kv_batch, false).unwrap();
            index = index.next();
        }
    }
    loop {
        for range in ranges() {
            let entry = Entry {
                term: Term(1),
                index: next,
                kind: EntryKind::Normal,
                data: payload(range, next),
            };
            raft_batch.append(range, &[entry]);
            let state = RaftLogState {
                hard_state: HardState { term: Term(1), vote: ReplicaId(1), commit: next },
                ..RaftLogState::default()
            };
            raft_batch.put_raft_state(range, &state);
        }
        raft.write(&mut raft_batch, true).unwrap();
        writeln!(stdout, "raft {}", next.0).unwrap();
        stdout.flush().unwrap();

        for range in ranges() {
            kv_batch.put(Cf::Default, &data_key(range, next), &payload(range, next));
            kv_batch
                .put_apply_state(range, &ApplyState { applied_index: next, applied_term: Term(1) });
        }
        kv.write(&mut kv_batch, false).unwrap();
        if next.0 % KV_SYNC_EVERY == 0 {
            kv.sync_wal().unwrap();
            writeln!(stdout, "kv {}", next.0).unwrap();
            stdout.flush().unwrap();
        }
        next = next.next();
    }
}

/// A small deterministic generator (xorshift64*), seeded per run and printed on failure.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }
}

struct Acknowledged {
    raft: LogIndex,
    kv: LogIndex,
}

/// Starts a child on `dir`, lets it acknowledge `target` raft appends, waits `jitter`, kills
/// it with SIGKILL and returns what it acknowledged before dying.
fn run_child_and_kill(dir: &Path, target: u64, jitter: Duration) -> Acknowledged {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR_ENV, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut acknowledged = Acknowledged { raft: LogIndex(0), kv: LogIndex(0) };
    let mut seen = 0;
    let deadline = Instant::now() + ROUND_DEADLINE;
    let record = |line: &str, acknowledged: &mut Acknowledged| {
        if let Some(index) = line.strip_prefix("raft ") {
            acknowledged.raft = LogIndex(index.parse().unwrap());
            return true;
        }
        if let Some(index) = line.strip_prefix("kv ") {
            acknowledged.kv = LogIndex(index.parse().unwrap());
        }
        false
    };
    while seen < target {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let line = match lines.recv_timeout(remaining) {
            Ok(line) => line,
            Err(error) => {
                let _ = child.kill();
                panic!("child stopped acknowledging after {seen} appends: {error:?}");
            }
        };
        if record(&line, &mut acknowledged) {
            seen += 1;
        }
    }
    std::thread::sleep(jitter);
    child.kill().unwrap();
    child.wait().unwrap();
    reader.join().unwrap();
    // Lines printed before the kill were acknowledged too.
    while let Ok(line) = lines.try_recv() {
        record(&line, &mut acknowledged);
    }
    acknowledged
}

/// Reopens the engines and checks them against what the child acknowledged. Returns the last
/// index of the logs.
fn check_recovered(dir: &Path, acknowledged: &Acknowledged, context: &str) -> LogIndex {
    let (raft, kv) = tessera_engine_rocks::open(dir, &EngineOptions::default())
        .unwrap_or_else(|error| panic!("{context}: reopening after SIGKILL failed: {error}"));
    let mut lasts = Vec::new();
    for range in ranges() {
        let (first, last) = raft
            .stored_index_bounds(range)
            .unwrap()
            .unwrap_or_else(|| panic!("{context}: range {range} lost its whole log"));
        assert_eq!(first, LogIndex(1), "{context}: range {range} lost its head");
        assert!(
            last >= acknowledged.raft,
            "{context}: range {range} ends at {last}, but {} was acknowledged as synced",
            acknowledged.raft
        );
        let mut entries = Vec::new();
        raft.fetch_entries(range, first, last.next(), u64::MAX, &mut entries)
            .unwrap_or_else(|error| panic!("{context}: range {range}: {error}"));
        assert_eq!(entries.len() as u64, last.0, "{context}: range {range} has a gap");
        for entry in &entries {
            assert_eq!(
                entry.data,
                payload(range, entry.index),
                "{context}: {range}/{}",
                entry.index
            );
        }
        let state = raft.raft_state(range).unwrap().unwrap();
        assert_eq!(
            state.hard_state.commit, last,
            "{context}: range {range}: state and entries of one batch disagree (half-written)"
        );
        lasts.push(last);
    }
    assert!(
        lasts.iter().all(|last| *last == lasts[0]),
        "{context}: one batch is visible for some ranges only: {lasts:?}"
    );
    let last = lasts[0];
    assert!(
        last.0 <= acknowledged.raft.0 + 1,
        "{context}: log ends at {last}, past the one write in flight after {}",
        acknowledged.raft
    );

    for range in ranges() {
        let applied =
            kv.apply_state(range).unwrap().map_or(LogIndex(0), |state| state.applied_index);
        assert!(
            applied >= acknowledged.kv,
            "{context}: range {range} applied {applied}, but {} was synced",
            acknowledged.kv
        );
        assert!(applied <= last, "{context}: range {range} applied {applied} past its log {last}");
        assert_eq!(kv.durable_apply_index(range).unwrap_or_default(), applied, "{context}");
        let mut user_key = range.0.to_be_bytes().to_vec();
        let start = keys::data_key(&user_key);
        user_key.extend_from_slice(&u64::MAX.to_be_bytes());
        let span = KeySpan::new(start, keys::data_key(&user_key));
        let rows = kv.scan(Cf::Default, &span, Direction::Forward, usize::MAX).unwrap();
        assert_eq!(
            rows.len() as u64,
            applied.0,
            "{context}: range {range}: data and apply state of one batch disagree"
        );
        for (index, (key, value)) in (1..).map(LogIndex).zip(&rows) {
            assert_eq!(key, &data_key(range, index), "{context}");
            assert_eq!(value.as_slice(), payload(range, index).as_ref(), "{context}");
        }
    }
    last
}

#[test]
fn sigkill_loses_nothing_acknowledged_and_shows_no_half_batch() {
    if std::env::var(CHILD_DIR_ENV).is_ok() {
        return;
    }
    let seed = std::env::var("TESSERA_CRASH_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
                as u64
                | 1
        });
    let rounds: u64 = std::env::var("TESSERA_CRASH_ROUNDS")
        .ok()
        .and_then(|rounds| rounds.parse().ok())
        .unwrap_or(20);
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut last = LogIndex(0);
    for round in 1..=rounds {
        let target = 1 + rng.below(120);
        let jitter = Duration::from_micros(rng.below(3_000));
        let context = format!(
            "TESSERA_CRASH_SEED={seed} round {round}/{rounds} (target {target}, jitter {jitter:?})"
        );
        let acknowledged = run_child_and_kill(dir.path(), target, jitter);
        assert!(acknowledged.raft > last, "{context}: child made no progress");
        last = check_recovered(dir.path(), &acknowledged, &context);
    }
}
