//! The apply worker: what a round decided, written and answered behind the raft worker.
//!
//! The raft worker applies committed entries *logically* on its own thread — it checks
//! epochs and keys, runs compare-and-swaps against what earlier entries wrote, moves each
//! range's apply index and builds the round's KV batch — and hands that batch, with the
//! proposers to answer and the reads to serve after it, to the apply worker as one job.
//! The worker writes the batch into the KV engine, then answers the proposers by (term,
//! index) and serves the reads, in job order. The raft worker meanwhile goes on with the
//! next round: its fsync overlaps the previous round's memtable inserts and answers.
//!
//! Anything on the raft worker that reads or rewrites KV state the jobs may still be
//! writing (a compare-and-swap's read, a snapshot built or installed, a replica created by
//! a split or destroyed) first waits for every job handed out ([`Applier::settle`]).
//! A read whose apply index is reached is served on the raft worker at once when no job is
//! outstanding, and rides behind the outstanding jobs otherwise, so it always sees every
//! write applied before its read index.
//!
//! Three modes: `Inline` runs each job as it is handed out (the deterministic default);
//! `Deferred` queues jobs until the driver runs them (the simulator runs a random number
//! per step, so the store's correctness never depends on when the worker gets to them);
//! `Thread` runs them on a dedicated thread behind a bounded crossbeam channel (the
//! product) — except a job handed out while that thread holds nothing and nothing else
//! waits for the raft worker, which runs at once on the raft worker: the hand-off would
//! only add a thread wake-up to a lone request's latency.

use std::collections::VecDeque;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, bounded, unbounded};
use tessera_engine::KvEngine;
use tessera_wire::errors::RpcError;
use tessera_wire::ids::RangeId;
use tessera_wire::kv::KvCommand;
use tessera_wire::range::RangeDescriptor;

use crate::error::{Result, StoreError};
use crate::operation::apply::{Answer, answer};
use crate::operation::read::{execute_read, read_load};
use crate::peer::KvResponder;

/// Jobs the apply thread may hold before the raft worker waits for it.
const THREAD_JOBS_MAX: usize = 64;

/// A read to serve once the writes before it are in the engine.
pub(crate) struct ReadJob {
    pub(crate) range: RangeId,
    /// The range as applied when the read's index was reached.
    pub(crate) descriptor: RangeDescriptor,
    pub(crate) command: KvCommand,
    pub(crate) respond: KvResponder,
}

/// One round's work for the apply worker.
pub(crate) struct ApplyJob<B> {
    /// The round's KV writes and apply states (may be empty).
    pub(crate) batch: Option<B>,
    /// Proposers to answer once the batch is written.
    pub(crate) answers: Vec<Answer>,
    /// Reads to serve once the batch is written.
    pub(crate) reads: Vec<ReadJob>,
}

impl<B> ApplyJob<B> {
    fn is_empty(&self) -> bool {
        self.batch.is_none() && self.answers.is_empty() && self.reads.is_empty()
    }
}

/// Keys and bytes a range's reads returned (for its load counters on the raft worker).
pub(crate) type ReadLoad = (RangeId, u64, u64);

/// What a finished job reports back.
struct Done {
    result: std::result::Result<(), String>,
    loads: Vec<ReadLoad>,
}

/// Fails every proposer and read of a job that will not be written.
fn fail_job<B>(job: ApplyJob<B>, message: &str) {
    for Answer { proposal, .. } in job.answers {
        proposal.respond.fail(RpcError::Internal { message: message.to_owned() });
    }
    for read in job.reads {
        (read.respond)(Err(RpcError::Internal { message: message.to_owned() }));
    }
}

/// Runs one job: the write, then the answers, then the reads. After a failed write
/// (`failed`, kept by the caller), no later job is written or answered success: a later
/// batch would otherwise land on top of the missing one, move the apply state past it and
/// leave the replica diverged.
fn run_job<K: KvEngine>(
    kv: &K,
    job: ApplyJob<K::Batch>,
    scan_bytes_max: u64,
    failed: &mut Option<String>,
) -> Done {
    if let Some(message) = failed.as_ref() {
        fail_job(job, message);
        return Done { result: Err(message.clone()), loads: Vec::new() };
    }
    let ApplyJob { batch, answers, reads } = job;
    if let Some(mut batch) = batch {
        let started = std::time::Instant::now();
        if let Err(error) = kv.write(&mut batch, false) {
            // Nobody is answered success; the store stops when it collects this.
            let message = format!("apply write failed: {error}");
            fail_job(ApplyJob::<K::Batch> { batch: None, answers, reads }, &message);
            *failed = Some(message.clone());
            return Done { result: Err(message), loads: Vec::new() };
        }
        metrics::histogram!("tessera_store_apply_write_seconds")
            .record(started.elapsed().as_secs_f64());
    }
    for done in answers {
        answer(done);
    }
    let mut loads: Vec<ReadLoad> = Vec::new();
    for ReadJob { range, descriptor, command, respond } in reads {
        let result = execute_read(kv, &descriptor, command, scan_bytes_max);
        if let Ok(response) = &result {
            let (keys, bytes) = read_load(response);
            match loads.last_mut() {
                Some(last) if last.0 == range => {
                    last.1 += keys;
                    last.2 += bytes;
                }
                _ => loads.push((range, keys, bytes)),
            }
        }
        respond(result);
    }
    Done { result: Ok(()), loads }
}

enum Mode<B> {
    Inline,
    Deferred(VecDeque<ApplyJob<B>>),
    Thread {
        jobs: Option<Sender<ApplyJob<B>>>,
        done: Receiver<Done>,
        thread: Option<JoinHandle<()>>,
    },
}

/// The raft worker's side of the apply worker.
pub(crate) struct Applier<K: KvEngine> {
    mode: Mode<K::Batch>,
    /// Jobs handed out and not reported done (`Thread`) or queued (`Deferred`).
    outstanding: usize,
    /// The round's job, built until it is handed out.
    staged: Option<ApplyJob<K::Batch>>,
    /// Read loads reported and not yet counted on the ranges.
    loads: Vec<ReadLoad>,
    scan_bytes_max: u64,
    /// The first failed write, if any.
    failed: Option<String>,
    /// Whether more work waits for the raft worker (its mailbox): only then does a job go
    /// to the apply thread while that thread is idle.
    backlog: Option<Box<dyn Fn() -> bool + Send>>,
}

impl<K: KvEngine> std::fmt::Debug for Applier<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match &self.mode {
            Mode::Inline => "inline",
            Mode::Deferred(_) => "deferred",
            Mode::Thread { .. } => "thread",
        };
        f.debug_struct("Applier")
            .field("mode", &mode)
            .field("outstanding", &self.outstanding)
            .finish_non_exhaustive()
    }
}

/// How a store runs its apply work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyMode {
    /// On the raft worker, as each round hands it out.
    Inline,
    /// Queued until [`Store::run_deferred_applies`](crate::Store::run_deferred_applies)
    /// runs it (the simulator).
    Deferred,
    /// On a dedicated apply thread (the product).
    Thread,
}

impl<K: KvEngine> Applier<K> {
    pub(crate) fn new(scan_bytes_max: u64) -> Self {
        Self {
            mode: Mode::Inline,
            outstanding: 0,
            staged: None,
            loads: Vec::new(),
            scan_bytes_max,
            failed: None,
            backlog: None,
        }
    }

    /// Switches mode, after running everything outstanding.
    pub(crate) fn set_mode(&mut self, kv: &K, store: u64, mode: ApplyMode) -> Result<()> {
        self.settle(kv)?;
        self.stop_thread();
        self.mode = match mode {
            ApplyMode::Inline => Mode::Inline,
            ApplyMode::Deferred => Mode::Deferred(VecDeque::new()),
            ApplyMode::Thread => {
                let (jobs, job_rx) = bounded::<ApplyJob<K::Batch>>(THREAD_JOBS_MAX);
                let (done_tx, done) = unbounded();
                let kv = kv.clone();
                let scan_bytes_max = self.scan_bytes_max;
                let thread = std::thread::Builder::new()
                    .name(format!("apply-{store}"))
                    .spawn(move || {
                        let mut failed = None;
                        for job in job_rx {
                            let done = run_job(&kv, job, scan_bytes_max, &mut failed);
                            if done_tx.send(done).is_err() {
                                return;
                            }
                        }
                    })
                    .map_err(|error| {
                        StoreError::ApplyWorker(format!("cannot start the apply thread: {error}"))
                    })?;
                Mode::Thread { jobs: Some(jobs), done, thread: Some(thread) }
            }
        };
        Ok(())
    }

    /// Tells the `Thread` mode how to see whether work waits for the raft worker.
    pub(crate) fn set_backlog(&mut self, backlog: Box<dyn Fn() -> bool + Send>) {
        self.backlog = Some(backlog);
    }

    /// Whether every write handed out is in the engine (reads may run on the caller).
    pub(crate) fn is_idle(&self) -> bool {
        self.outstanding == 0 && self.staged.as_ref().is_none_or(ApplyJob::is_empty)
    }

    /// The round's job, to add writes, answers or reads to.
    pub(crate) fn staged(&mut self) -> &mut ApplyJob<K::Batch> {
        self.staged.get_or_insert_with(|| ApplyJob {
            batch: None,
            answers: Vec::new(),
            reads: Vec::new(),
        })
    }

    /// Hands the round's job out.
    pub(crate) fn submit(&mut self, kv: &K) -> Result<()> {
        let Some(job) = self.staged.take() else { return self.check() };
        if let Some(message) = &self.failed {
            fail_job(job, message);
            return self.check();
        }
        if job.is_empty() {
            return Ok(());
        }
        match &mut self.mode {
            Mode::Inline => {
                let done = run_job(kv, job, self.scan_bytes_max, &mut self.failed);
                self.on_done(done)?;
            }
            Mode::Deferred(queue) => {
                queue.push_back(job);
                self.outstanding += 1;
            }
            Mode::Thread { .. }
                if self.outstanding == 0
                    && !self.backlog.as_ref().is_some_and(|backlog| backlog()) =>
            {
                // Nothing else waits for the raft worker and the apply thread holds nothing:
                // a hand-off would only add a thread wake-up to this round's answers.
                metrics::counter!("tessera_store_apply_jobs_total", "on" => "raft").increment(1);
                let done = run_job(kv, job, self.scan_bytes_max, &mut self.failed);
                self.on_done(done)?;
            }
            Mode::Thread { jobs, .. } => {
                metrics::counter!("tessera_store_apply_jobs_total", "on" => "apply").increment(1);
                let Some(sender) = jobs.as_ref() else {
                    return Err(StoreError::ApplyWorker("the apply thread stopped".to_owned()));
                };
                let started = std::time::Instant::now();
                if sender.send(job).is_err() {
                    return Err(StoreError::ApplyWorker("the apply thread stopped".to_owned()));
                }
                metrics::histogram!("tessera_store_apply_queue_wait_seconds")
                    .record(started.elapsed().as_secs_f64());
                self.outstanding += 1;
            }
        }
        Ok(())
    }

    fn on_done(&mut self, done: Done) -> Result<()> {
        self.loads.extend(done.loads);
        if let Err(message) = done.result {
            self.failed.get_or_insert(message);
        }
        self.check()
    }

    /// A failed write stays failed: every later call reports it until the store stops.
    fn check(&self) -> Result<()> {
        match &self.failed {
            Some(message) => Err(StoreError::ApplyWorker(message.clone())),
            None => Ok(()),
        }
    }

    /// Takes the reports of finished jobs without waiting.
    pub(crate) fn collect(&mut self) -> Result<()> {
        let Mode::Thread { done, .. } = &self.mode else { return self.check() };
        let finished: Vec<Done> = done.try_iter().collect();
        for report in finished {
            self.outstanding -= 1;
            let _ = self.on_done(report);
        }
        self.check()
    }

    /// Hands out the staged job and waits until every job is done.
    pub(crate) fn settle(&mut self, kv: &K) -> Result<()> {
        self.submit(kv)?;
        if self.outstanding > 0 {
            metrics::counter!("tessera_store_apply_settles_total").increment(1);
        }
        match &mut self.mode {
            Mode::Inline => self.check(),
            Mode::Deferred(_) => self.run_deferred(kv, usize::MAX),
            Mode::Thread { done, .. } => {
                let mut reports = Vec::new();
                while self.outstanding > reports.len() {
                    match done.recv() {
                        Ok(report) => reports.push(report),
                        Err(_) => {
                            return Err(StoreError::ApplyWorker(
                                "the apply thread stopped".to_owned(),
                            ));
                        }
                    }
                }
                self.outstanding = 0;
                for report in reports {
                    let _ = self.on_done(report);
                }
                self.check()
            }
        }
    }

    /// Runs up to `count` queued jobs (`Deferred` only).
    pub(crate) fn run_deferred(&mut self, kv: &K, count: usize) -> Result<()> {
        let Mode::Deferred(queue) = &mut self.mode else { return self.check() };
        let mut finished = Vec::new();
        for _ in 0..count {
            let Some(job) = queue.pop_front() else { break };
            finished.push(run_job(kv, job, self.scan_bytes_max, &mut self.failed));
        }
        for report in finished {
            self.outstanding -= 1;
            let _ = self.on_done(report);
        }
        self.check()
    }

    /// Read loads reported since the last call.
    pub(crate) fn take_loads(&mut self) -> Vec<ReadLoad> {
        std::mem::take(&mut self.loads)
    }

    fn stop_thread(&mut self) {
        if let Mode::Thread { jobs, thread, .. } = &mut self.mode {
            // Closing the channel ends the thread after the jobs it holds.
            jobs.take();
            if let Some(thread) = thread.take()
                && thread.join().is_err()
            {
                tracing::error!("apply thread panicked");
            }
        }
    }
}

impl<K: KvEngine> Drop for Applier<K> {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::{Arc, Mutex};

    use bytes::Bytes;
    use tessera_engine::mem::{FaultPlan, MemKvEngine};
    use tessera_engine::{Cf, KvBatch, KvRead};
    use tessera_raft::{LogIndex, Term};
    use tessera_wire::kv::{KvResponse, RawGetRequest};

    use super::*;
    use crate::operation::apply::Applied;
    use crate::peer::{Proposal, Responder};

    type Seen = Arc<Mutex<Vec<(String, Result<KvResponse, RpcError>)>>>;

    /// A job writing `key`, answering one proposer and serving one get of `key`, which
    /// record their answers in `seen`.
    fn job(
        kv: &MemKvEngine,
        key: &'static str,
        seen: &Seen,
    ) -> ApplyJob<<MemKvEngine as KvEngine>::Batch> {
        let mut batch = kv.batch();
        batch.put(Cf::Default, &tessera_engine::keys::data_key(key.as_bytes()), b"v");
        let (put_seen, get_seen) = (seen.clone(), seen.clone());
        let proposal = Proposal {
            index: LogIndex(1),
            term: Term(1),
            ok: Some(KvResponse::RawPut),
            respond: Responder::Kv(Box::new(move |result| {
                put_seen.lock().unwrap().push((format!("put {key}"), result));
            })),
            proposed_at: std::time::Instant::now(),
        };
        let descriptor = RangeDescriptor { id: RangeId(1), ..RangeDescriptor::default() };
        ApplyJob {
            batch: Some(batch),
            answers: vec![Answer { proposal, applied: Applied::Kv(Ok(None)) }],
            reads: vec![ReadJob {
                range: RangeId(1),
                descriptor,
                command: KvCommand::RawGet(RawGetRequest {
                    key: Bytes::from_static(key.as_bytes()),
                }),
                respond: Box::new(move |result| {
                    get_seen.lock().unwrap().push((format!("get {key}"), result));
                }),
            }],
        }
    }

    /// Two jobs handed out, the first one's write fails: the second is neither written
    /// nor answered success — in every mode that defers jobs.
    fn after_a_failed_write_nothing_later_is_written_or_acknowledged(mode: ApplyMode) {
        let kv = MemKvEngine::new();
        let seen: Seen = Arc::default();
        let mut applier = Applier::<MemKvEngine>::new(u64::MAX);
        applier.set_mode(&kv, 1, mode).unwrap();
        // Every job goes to the thread (as when the mailbox holds more work).
        applier.set_backlog(Box::new(|| true));
        kv.inject(FaultPlan { fail_write_at: Some(1), fail_sync_at: None });
        *applier.staged() = job(&kv, "a", &seen);
        applier.submit(&kv).unwrap();
        *applier.staged() = job(&kv, "b", &seen);
        // The thread may already have failed the first job: then the second is refused
        // here, never written.
        let _ = applier.submit(&kv);
        assert!(matches!(applier.settle(&kv), Err(StoreError::ApplyWorker(_))));
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 4, "{seen:?}");
        for (what, result) in seen.iter() {
            assert!(matches!(result, Err(RpcError::Internal { .. })), "{what}: {result:?}");
        }
        for key in ["a", "b"] {
            let data_key = tessera_engine::keys::data_key(key.as_bytes());
            assert_eq!(kv.get(Cf::Default, &data_key).unwrap(), None, "{key} was written");
        }
        // And the store keeps refusing.
        *applier.staged() = job(&kv, "c", &Arc::default());
        assert!(applier.submit(&kv).is_err());
    }

    #[test]
    fn after_a_failed_write_on_the_apply_thread_nothing_later_is_written_or_acknowledged() {
        after_a_failed_write_nothing_later_is_written_or_acknowledged(ApplyMode::Thread);
    }

    #[test]
    fn after_a_failed_deferred_write_nothing_later_is_written_or_acknowledged() {
        after_a_failed_write_nothing_later_is_written_or_acknowledged(ApplyMode::Deferred);
    }

    #[test]
    fn a_read_behind_a_write_sees_it_and_answers_come_in_job_order() {
        let kv = MemKvEngine::new();
        let seen: Seen = Arc::default();
        let mut applier = Applier::<MemKvEngine>::new(u64::MAX);
        applier.set_mode(&kv, 1, ApplyMode::Thread).unwrap();
        applier.set_backlog(Box::new(|| true));
        for key in ["a", "b", "c"] {
            *applier.staged() = job(&kv, key, &seen);
            applier.submit(&kv).unwrap();
        }
        applier.settle(&kv).unwrap();
        let seen = seen.lock().unwrap();
        let order: Vec<&str> = seen.iter().map(|(what, _)| what.as_str()).collect();
        assert_eq!(order, ["put a", "get a", "put b", "get b", "put c", "get c"]);
        for (what, result) in seen.iter() {
            let expected = if what.starts_with("put") {
                KvResponse::RawPut
            } else {
                KvResponse::RawGet { value: Some(Bytes::from_static(b"v")) }
            };
            assert_eq!(result.as_ref().unwrap(), &expected, "{what}");
        }
    }
}
