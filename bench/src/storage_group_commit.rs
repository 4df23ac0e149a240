//! Group commit of the raft-log engine: appends per second and per fsync with many groups
//! appending at once, beside the raw fsync rate of the same disk measured in the same run.
//!
//! Two ways to drive the engine, side by side:
//! - **store** (Tessera's write path, ARCHITECTURE.md §3): every group has one append in
//!   flight at a time (closed loop); [`STORE_CLIENT_THREADS`] client threads own the groups
//!   and submit the next append of each acknowledged group together, as a store's network
//!   threads hand proposals to its raft worker. One writer thread drains every queued append
//!   into one `RaftLogBatch` (entry + raft state per group), writes it with `sync = true` —
//!   one fsync — and acknowledges them all.
//! - **direct**: every client thread writes its own one-append batch with `sync = true`, so
//!   only the engine's own write grouping merges their fsyncs.
//!
//! The raw rate is a loop of 4 KiB appends, each followed by `fdatasync`, on a file in the
//! same directory.

use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
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
    /// Concurrent groups.
    pub groups: usize,
    /// Appends in flight per group (store mode; 1 in direct mode).
    pub inflight: usize,
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
            "{{\"bench\":\"storage-group-commit\",\"mode\":\"{}\",\"groups\":{},\"inflight\":{},\"appends\":{},\
             \"fsyncs\":{},\"seconds\":{:.3},\"appends_per_sec\":{:.0},\"appends_per_fsync\":{},\
             \"cpu_percent\":{:.0},\"p50_us\":{},\"p99_us\":{}}}",
            self.mode.name(),
            self.groups,
            self.inflight,
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
    /// How blocks were written.
    pub mode: RawWrite,
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
            "{{\"bench\":\"raw-fdatasync\",\"mode\":\"{}\",\"syncs\":{},\"seconds\":{:.3},\"syncs_per_sec\":{:.0},\
             \"p50_us\":{},\"p99_us\":{}}}",
            self.mode.name(),
            self.syncs,
            self.wall.as_secs_f64(),
            self.syncs_per_sec(),
            self.latency_p50.as_micros(),
            self.latency_p99.as_micros(),
        )
    }
}

/// How the raw loop writes its 4 KiB blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RawWrite {
    /// Append to a growing file: every `fdatasync` also commits the new file size.
    Append,
    /// Overwrite a preallocated file in place: `fdatasync` flushes only data, as for a WAL
    /// that writes into space it already owns.
    Overwrite,
}

impl RawWrite {
    /// The mode's name in reports.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Append => "append",
            Self::Overwrite => "overwrite",
        }
    }
}

/// Writes 4 KiB and calls `fdatasync`, in a loop, for `duration`, on a new file in `dir`.
///
/// # Errors
/// File-system failures.
pub fn raw_fsync(
    dir: &Path,
    mode: RawWrite,
    duration: Duration,
) -> std::io::Result<RawFsyncResult> {
    const BLOCK: usize = 4096;
    const PREALLOCATED_BLOCKS: u64 = 16 * 1024; // 64 MiB, wrapped around
    let path = dir.join(format!("raw-fdatasync-{}.bin", mode.name()));
    let mut file = OpenOptions::new().create(true).truncate(true).write(true).open(&path)?;
    let block = vec![0x5a_u8; BLOCK];
    if mode == RawWrite::Overwrite {
        for _ in 0..PREALLOCATED_BLOCKS {
            file.write_all(&block)?;
        }
        file.sync_all()?;
    }
    let mut latencies = Vec::new();
    let mut written = 0u64;
    let start = Instant::now();
    while start.elapsed() < duration {
        let began = Instant::now();
        if mode == RawWrite::Overwrite {
            file.seek(SeekFrom::Start((written % PREALLOCATED_BLOCKS) * BLOCK as u64))?;
        }
        file.write_all(&block)?;
        file.sync_data()?;
        written += 1;
        latencies.push(began.elapsed());
    }
    let wall = start.elapsed();
    std::fs::remove_file(&path)?;
    let (latency_p50, latency_p99) = percentiles(&mut latencies);
    Ok(RawFsyncResult { mode, syncs: latencies.len() as u64, wall, latency_p50, latency_p99 })
}

/// Threads that submit appends in store mode; each owns a share of the groups.
pub const STORE_CLIENT_THREADS: usize = 4;

/// Appends submitted together by one client thread (one per free group it owns), and where
/// to acknowledge them.
struct Submission {
    appends: Vec<(usize, LogIndex)>,
    ack: Sender<Vec<usize>>,
}

/// Runs one case: `groups` ranges, each with up to `inflight` appends of `payload_bytes` in
/// flight (store mode; direct mode has exactly one per group), for `duration` after `warmup`.
///
/// # Panics
/// If the engine fails (a benchmark has no way to go on).
pub fn run_case<E: RaftLogEngine>(
    engine: &E,
    mode: Mode,
    groups: usize,
    inflight: usize,
    payload_bytes: usize,
    warmup: Duration,
    duration: Duration,
) -> CaseResult {
    let payload = Bytes::from(vec![0xa5_u8; payload_bytes]);
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let fsyncs = Arc::new(AtomicU64::new(0));
    let (queue_tx, queue_rx) = crossbeam_channel::unbounded::<Submission>();

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

    let threads = match mode {
        Mode::Store => groups.min(STORE_CLIENT_THREADS),
        Mode::Direct => groups,
    };
    let clients: Vec<_> = (0..threads)
        .map(|thread| {
            let engine = engine.clone();
            let payload = payload.clone();
            let stop = Arc::clone(&stop);
            let measuring = Arc::clone(&measuring);
            let queue = queue_tx.clone();
            let owned: Vec<usize> = (thread..groups).step_by(threads).collect();
            std::thread::spawn(move || match mode {
                Mode::Store => store_client(&engine, &owned, inflight, &queue, &stop, &measuring),
                Mode::Direct => direct_client(&engine, owned[0], &payload, &stop, &measuring),
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
        inflight: if mode == Mode::Store { inflight } else { 1 },
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

fn last_index<E: RaftLogEngine>(engine: &E, group: usize) -> LogIndex {
    engine
        .stored_index_bounds(range_of(group))
        .expect("engine readable")
        .map_or(LogIndex(0), |(_, last)| last)
}

/// One closed-loop client per group: append, sync, repeat.
fn direct_client<E: RaftLogEngine>(
    engine: &E,
    group: usize,
    payload: &Bytes,
    stop: &AtomicBool,
    measuring: &AtomicBool,
) -> Vec<Duration> {
    let range = range_of(group);
    let mut index = last_index(engine, group);
    let mut batch = engine.batch();
    let mut latencies = Vec::new();
    while !stop.load(Ordering::Acquire) {
        index = index.next();
        let began = Instant::now();
        batch.append(range, &[entry(index, payload)]);
        batch.put_raft_state(range, &raft_state(index));
        engine.write(&mut batch, true).expect("synced write");
        if measuring.load(Ordering::Acquire) {
            latencies.push(began.elapsed());
        }
    }
    latencies
}

/// Closed loop over the groups this thread owns: each group has at most one append in
/// flight; every free group submits its next append, then the thread waits for acks.
fn store_client<E: RaftLogEngine>(
    engine: &E,
    owned: &[usize],
    inflight: usize,
    queue: &Sender<Submission>,
    stop: &AtomicBool,
    measuring: &AtomicBool,
) -> Vec<Duration> {
    let mut next: Vec<LogIndex> = owned.iter().map(|&group| last_index(engine, group)).collect();
    let position = |group: usize| owned.iter().position(|&g| g == group).expect("own group");
    // Submission times of each group's appends in flight, oldest first (acks come in order:
    // one writer, one batch per fsync).
    let mut in_flight: Vec<VecDeque<Instant>> = vec![VecDeque::new(); owned.len()];
    let (ack_tx, ack_rx) = crossbeam_channel::unbounded::<Vec<usize>>();
    let mut latencies = Vec::new();
    while !stop.load(Ordering::Acquire) {
        let now = Instant::now();
        let mut appends = Vec::new();
        for (slot, &group) in owned.iter().enumerate() {
            while in_flight[slot].len() < inflight {
                next[slot] = next[slot].next();
                in_flight[slot].push_back(now);
                appends.push((group, next[slot]));
            }
        }
        if !appends.is_empty() && queue.send(Submission { appends, ack: ack_tx.clone() }).is_err() {
            break;
        }
        // The writer may stop with this submission still queued: look at `stop` while
        // waiting instead of blocking forever.
        let acked = loop {
            match ack_rx.recv_timeout(Duration::from_millis(20)) {
                Ok(groups) => break groups,
                Err(RecvTimeoutError::Timeout) if !stop.load(Ordering::Acquire) => {}
                Err(_) => return latencies,
            }
        };
        let measured = measuring.load(Ordering::Acquire);
        let done = Instant::now();
        for group in acked.into_iter().chain(ack_rx.try_iter().flatten()) {
            let slot = position(group);
            if let Some(submitted) = in_flight[slot].pop_front()
                && measured
            {
                latencies.push(done - submitted);
            }
        }
    }
    latencies
}

fn store_writer<E: RaftLogEngine>(
    engine: &E,
    queue: &Receiver<Submission>,
    payload: &Bytes,
    stop: &AtomicBool,
    measuring: &AtomicBool,
    fsyncs: &AtomicU64,
) {
    let mut batch = engine.batch();
    let mut pending = Vec::new();
    while !stop.load(Ordering::Acquire) {
        // Block for the first submission, then take everything already queued: the appends
        // that arrived while the previous fsync ran share the next one.
        let Ok(first) = queue.recv_timeout(Duration::from_millis(50)) else { continue };
        pending.push(first);
        pending.extend(queue.try_iter());
        for submission in &pending {
            for &(group, index) in &submission.appends {
                let range = range_of(group);
                batch.append(range, &[entry(index, payload)]);
                batch.put_raft_state(range, &raft_state(index));
            }
        }
        engine.write(&mut batch, true).expect("synced group commit");
        if measuring.load(Ordering::Acquire) {
            fsyncs.fetch_add(1, Ordering::Relaxed);
        }
        for submission in pending.drain(..) {
            let groups = submission.appends.iter().map(|(group, _)| *group).collect();
            // A client that stopped waiting is fine to miss.
            let _ = submission.ack.send(groups);
        }
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
            2,
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
            1,
            16,
            Duration::from_millis(10),
            Duration::from_millis(50),
        );
        assert!(result.appends > 0 && result.appends_per_fsync().is_none(), "{result:?}");
        let dir = tempfile::tempdir().unwrap();
        let raw = raw_fsync(dir.path(), RawWrite::Overwrite, Duration::from_millis(50)).unwrap();
        assert!(raw.syncs > 0 && raw.to_json().contains("raw-fdatasync"));
    }
}
