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

/// Runs one job: the write, then the answers, then the reads.
fn run_job<K: KvEngine>(kv: &K, job: ApplyJob<K::Batch>, scan_bytes_max: u64) -> Done {
    let ApplyJob { batch, answers, reads } = job;
    if let Some(mut batch) = batch {
        let started = std::time::Instant::now();
        if let Err(error) = kv.write(&mut batch, false) {
            // The engine is poisoned: nobody is answered success; the store stops when it
            // collects this.
            let message = format!("apply write failed: {error}");
            for Answer { proposal, .. } in answers {
                proposal.respond.fail(RpcError::Internal { message: message.clone() });
            }
            for read in reads {
                (read.respond)(Err(RpcError::Internal { message: message.clone() }));
            }
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
                        for job in job_rx {
                            if done_tx.send(run_job(&kv, job, scan_bytes_max)).is_err() {
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
        self.check()?;
        let Some(job) = self.staged.take() else { return Ok(()) };
        if job.is_empty() {
            return Ok(());
        }
        match &mut self.mode {
            Mode::Inline => {
                let done = run_job(kv, job, self.scan_bytes_max);
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
                let done = run_job(kv, job, self.scan_bytes_max);
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
            self.on_done(report)?;
        }
        Ok(())
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
            finished.push(run_job(kv, job, self.scan_bytes_max));
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
