//! Group commit of the raft-log engine: appends per second and per fsync with many groups
//! appending at once, beside the raw fsync rate of the same disk measured in the same run.
//!
//! Two ways to drive the engine, side by side:
//! - **store** (Tessera's write path, ARCHITECTURE.md §3): one client thread per group
//!   submits an append and waits for its acknowledgement (closed loop); one writer thread
//!   drains every queued append into one `RaftLogBatch` (entry + raft state per group),
//!   writes it with `sync = true` — one fsync — and acknowledges them all.
//! - **direct**: every client thread writes its own one-append batch with `sync = true`, so
//!   only the engine's own write grouping merges their fsyncs.
//!
//! The raw rate is a loop of 4 KiB appends, each followed by `fdatasync`, on a file in the
//! same directory.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use tessera_engine::{RaftLogBatch, RaftLogEngine, RaftLogState};
use tessera_wire::ids::RangeId;
use tessera_wire::raft::{Entry, EntryKind, HardState, LogIndex, ReplicaId, Term};

use crate::cpu::process_cpu_time;

/// How clients reach the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// One writer thread batches all queued appends into one synced write.
    Store,
    /// Each client writes and syncs its own batch.
    Direct,
}

impl Mode {
    /// The mode's name in reports.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Store => "store",
            Self::Direct => "direct",
        }
    }
}

/// What one case measured.
#[derive(Clone, Debug)]
pub struct CaseResult {
    /// How clients reached the engine.
    pub mode: Mode,
    /// Concurrent groups (one client each).
    pub groups: usize,
    /// Appends acknowledged durable.
    pub appends: u64,
    /// Synced writes issued by the writer (store mode only; 0 in direct mode).
    pub fsyncs: u64,
    /// Measured wall time.
    pub wall: Duration,
    /// CPU time of the whole process over the case.
    pub cpu: Duration,
    /// Median append latency (submit to durable acknowledgement).
    pub latency_p50: Duration,
    /// 99th percentile append latency.
    pub latency_p99: Duration,
}

impl CaseResult {
    /// Appends per second.
    #[must_use]
    pub fn appends_per_sec(&self) -> f64 {
        self.appends as f64 / self.wall.as_secs_f64()
    }

    /// Appends per fsync (store mode), or `None` in direct mode.
    #[must_use]
    pub fn appends_per_fsync(&self) -> Option<f64> {
        (self.fsyncs > 0).then(|| self.appends as f64 / self.fsyncs as f64)
    }

    /// One JSON object.
    #[must_use]
    pub fn to_json(&self) -> String {
        format!(
            "{{\"bench\":\"storage-group-commit\",\"mode\":\"{}\",\"groups\":{},\"appends\":{},\
             \"fsyncs\":{},\"seconds\":{:.3},\"appends_per_sec\":{:.0},\"appends_per_fsync\":{},\
             \"cpu_percent\":{:.0},\"p50_us\":{},\"p99_us\":{}}}",
            self.mode.name(),
            self.groups,
            self.appends,
            self.fsyncs,
            self.wall.as_secs_f64(),
            self.appends_per_sec(),
            self.appends_per_fsync().map_or_else(|| "null".to_owned(), |v| format!("{v:.1}")),
            100.0 * self.cpu.as_secs_f64() / self.wall.as_secs_f64(),
            self.latency_p50.as_micros(),
            self.latency_p99.as_micros(),
        )
    }
}

/// The raw fsync rate of a disk.
#[derive(Clone, Debug)]
pub struct RawFsyncResult {
    /// `fdatasync` calls completed.
    pub syncs: u64,
    /// Measured wall time.
    pub wall: Duration,
    /// Median latency of write + fdatasync.
    pub latency_p50: Duration,
    /// 99th percentile latency.
    pub latency_p99: Duration,
}

impl RawFsyncResult {
    /// Syncs per second.
    #[must_use]
    pub fn syncs_per_sec(&self) -> f64 {
        self.syncs as f64 / self.wall.as_secs_f64()
    }

    /// One JSON object.
    #[must_use]
    pub fn to_json(&self) -> String {
        format!(
            "{{\"bench\":\"raw-fdatasync\",\"syncs\":{},\"seconds\":{:.3},\"syncs_per_sec\":{:.0},\
             \"p50_us\":{},\"p99_us\":{}}}",
            self.syncs,
            self.wall.as_secs_f64(),
            self.syncs_per_sec(),
            self.latency_p50.as_micros(),
            self.latency_p99.as_micros(),
        )
    }
}

/// Appends 4 KiB and calls `fdatasync`, in a loop, for `duration`, on a new file in `dir`.
///
/// # Errors
/// File-system failures.
pub fn raw_fsync(dir: &Path, duration: Duration) -> std::io::Result<RawFsyncResult> {
    let path = dir.join("raw-fdatasync.bin");
    let mut file = OpenOptions::new().create(true).truncate(true).write(true).open(&path)?;
    let block = vec![0x5a_u8; 4096];
    let mut latencies = Vec::new();
    let start = Instant::now();
    while start.elapsed() < duration {
        let began = Instant::now();
        file.write_all(&block)?;
        file.sync_data()?;
        latencies.push(began.elapsed());
    }
    let wall = start.elapsed();
    std::fs::remove_file(&path)?;
    let (latency_p50, latency_p99) = percentiles(&mut latencies);
    Ok(RawFsyncResult { syncs: latencies.len() as u64, wall, latency_p50, latency_p99 })
}

/// An append request from a client: its group and the entry's index, and where to answer.
struct Append {
    group: usize,
    index: LogIndex,
    done: Sender<()>,
}

/// Runs one case: `groups` closed-loop clients appending `payload_bytes` entries to their
/// own range for `duration` (after `warmup`).
///
/// # Panics
/// If the engine fails (a benchmark has no way to go on).
pub fn run_case<E: RaftLogEngine>(
    engine: &E,
    mode: Mode,
    groups: usize,
    payload_bytes: usize,
    warmup: Duration,
    duration: Duration,
) -> CaseResult {
    let payload = Bytes::from(vec![0xa5_u8; payload_bytes]);
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let fsyncs = Arc::new(AtomicU64::new(0));
    let (queue_tx, queue_rx) = crossbeam_channel::unbounded::<Append>();

    let writer = (mode == Mode::Store).then(|| {
        let engine = engine.clone();
        let payload = payload.clone();
        let stop = Arc::clone(&stop);
        let measuring = Arc::clone(&measuring);
        let fsyncs = Arc::clone(&fsyncs);
        std::thread::spawn(move || {
            store_writer(&engine, &queue_rx, &payload, &stop, &measuring, &fsyncs);
        })
    });

    let clients: Vec<_> = (0..groups)
        .map(|group| {
            let engine = engine.clone();
            let payload = payload.clone();
            let stop = Arc::clone(&stop);
            let measuring = Arc::clone(&measuring);
            let queue = queue_tx.clone();
            std::thread::spawn(move || {
                client(&engine, mode, group, &payload, &queue, &stop, &measuring)
            })
        })
        .collect();
    drop(queue_tx);

    std::thread::sleep(warmup);
    let cpu_before = process_cpu_time().expect("reads /proc/self/stat");
    let fsyncs_before = fsyncs.load(Ordering::Relaxed);
    let start = Instant::now();
    measuring.store(true, Ordering::Release);
    std::thread::sleep(duration);
    measuring.store(false, Ordering::Release);
    let wall = start.elapsed();
    let fsyncs = fsyncs.load(Ordering::Relaxed) - fsyncs_before;
    let cpu = process_cpu_time().expect("reads /proc/self/stat") - cpu_before;
    stop.store(true, Ordering::Release);

    let mut latencies = Vec::new();
    for handle in clients {
        latencies.extend(handle.join().expect("client thread"));
    }
    if let Some(handle) = writer {
        handle.join().expect("writer thread");
    }
    let (latency_p50, latency_p99) = percentiles(&mut latencies);
    CaseResult {
        mode,
        groups,
        appends: latencies.len() as u64,
        fsyncs,
        wall,
        cpu,
        latency_p50,
        latency_p99,
    }
}

fn entry(index: LogIndex, payload: &Bytes) -> Entry {
    Entry { term: Term(1), index, kind: EntryKind::Normal, data: payload.clone() }
}

fn raft_state(index: LogIndex) -> RaftLogState {
    RaftLogState {
        hard_state: HardState { term: Term(1), vote: ReplicaId(1), commit: index.prev() },
        ..RaftLogState::default()
    }
}

/// A range id per group, away from 0.
fn range_of(group: usize) -> RangeId {
    RangeId(group as u64 + 1)
}

fn client<E: RaftLogEngine>(
    engine: &E,
    mode: Mode,
    group: usize,
    payload: &Bytes,
    queue: &Sender<Append>,
    stop: &AtomicBool,
    measuring: &AtomicBool,
) -> Vec<Duration> {
    let range = range_of(group);
    let mut index = engine
        .stored_index_bounds(range)
        .expect("engine readable")
        .map_or(LogIndex(0), |(_, last)| last);
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    let mut batch = engine.batch();
    let mut latencies = Vec::new();
    while !stop.load(Ordering::Acquire) {
        index = index.next();
        let began = Instant::now();
        match mode {
            Mode::Store => {
                if queue.send(Append { group, index, done: done_tx.clone() }).is_err() {
                    break;
                }
                // The writer may stop with this append still queued: look at `stop` while
                // waiting instead of blocking forever.
                loop {
                    match done_rx.recv_timeout(Duration::from_millis(20)) {
                        Ok(()) => break,
                        Err(RecvTimeoutError::Timeout) if !stop.load(Ordering::Acquire) => {}
                        Err(_) => return latencies,
                    }
                }
            }
            Mode::Direct => {
                batch.append(range, &[entry(index, payload)]);
                batch.put_raft_state(range, &raft_state(index));
                engine.write(&mut batch, true).expect("synced write");
            }
        }
        if measuring.load(Ordering::Acquire) {
            latencies.push(began.elapsed());
        }
    }
    latencies
}

fn store_writer<E: RaftLogEngine>(
    engine: &E,
    queue: &Receiver<Append>,
    payload: &Bytes,
    stop: &AtomicBool,
    measuring: &AtomicBool,
    fsyncs: &AtomicU64,
) {
    let mut batch = engine.batch();
    let mut pending = Vec::new();
    while !stop.load(Ordering::Acquire) {
        // Block for the first append, then take everything already queued: the appends that
        // arrived while the previous fsync ran share the next one.
        let Ok(first) = queue.recv_timeout(Duration::from_millis(50)) else { continue };
        pending.push(first);
        pending.extend(queue.try_iter());
        for append in &pending {
            let range = range_of(append.group);
            batch.append(range, &[entry(append.index, payload)]);
            batch.put_raft_state(range, &raft_state(append.index));
        }
        engine.write(&mut batch, true).expect("synced group commit");
        if measuring.load(Ordering::Acquire) {
            fsyncs.fetch_add(1, Ordering::Relaxed);
        }
        for append in pending.drain(..) {
            // A client that stopped waiting is fine to miss.
            let _ = append.done.send(());
        }
    }
    // Release clients still waiting so they observe `stop`.
    for append in queue.try_iter() {
        let _ = append.done.send(());
    }
}

/// Median and 99th percentile (zero when empty).
fn percentiles(latencies: &mut [Duration]) -> (Duration, Duration) {
    if latencies.is_empty() {
        return (Duration::ZERO, Duration::ZERO);
    }
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99))
}

#[cfg(test)]
mod tests {
    use tessera_engine::mem::MemRaftLogEngine;

    use super::*;

    #[test]
    fn store_mode_batches_many_groups_per_sync() {
        let engine = MemRaftLogEngine::new();
        let result = run_case(
            &engine,
            Mode::Store,
            8,
            16,
            Duration::from_millis(20),
            Duration::from_millis(200),
        );
        assert!(result.appends > 0 && result.fsyncs > 0, "{result:?}");
        assert!(result.appends >= result.fsyncs, "{result:?}");
        // Every group's log is contiguous from 1: nothing lost or duplicated.
        for group in 0..8 {
            let (first, last) = engine.stored_index_bounds(range_of(group)).unwrap().unwrap();
            assert_eq!(first, LogIndex(1));
            let mut out = Vec::new();
            engine.fetch_entries(range_of(group), first, last.next(), u64::MAX, &mut out).unwrap();
            assert_eq!(out.len() as u64, last.0);
        }
        assert!(result.to_json().contains("\"mode\":\"store\""));
    }

    #[test]
    fn direct_mode_and_raw_fsync_run() {
        let engine = MemRaftLogEngine::new();
        let result = run_case(
            &engine,
            Mode::Direct,
            2,
            16,
            Duration::from_millis(10),
            Duration::from_millis(50),
        );
        assert!(result.appends > 0 && result.appends_per_fsync().is_none(), "{result:?}");
        let dir = tempfile::tempdir().unwrap();
        let raw = raw_fsync(dir.path(), Duration::from_millis(50)).unwrap();
        assert!(raw.syncs > 0 && raw.to_json().contains("raw-fdatasync"));
    }
}
