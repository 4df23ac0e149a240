//! The raft worker's helpers: a small pool of threads that step ranges in parallel.
//!
//! A round's per-range work — stepping a range's Raft messages, taking its Ready — touches
//! that range alone, so the ranges with work are split among the raft worker and its
//! helpers, each range going to exactly one of them. The replicas themselves travel: a
//! chunk of them is moved into a job, stepped on a helper, and moved back, so no range is
//! ever reachable from two threads and nothing is shared but the channels. Results come
//! back in the order the ranges went out, so a round's outcome does not depend on which
//! thread finished first — the simulator stays deterministic with a pool.
//!
//! Everything that crosses ranges (creating or removing replicas, snapshots, the shared
//! write batch and its sync, sending) stays on the raft worker.

use std::thread::JoinHandle;

use crossbeam_channel::{Sender, unbounded};

type Job = Box<dyn FnOnce() + Send>;

/// Helper threads of one store's raft worker.
pub struct RaftPool {
    jobs: Option<Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
    /// Fewer ranges with work than this are stepped on the raft worker alone: handing
    /// them out would cost more than it saves.
    parallel_min: usize,
}

impl std::fmt::Debug for RaftPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftPool")
            .field("helpers", &self.threads.len())
            .field("parallel_min", &self.parallel_min)
            .finish()
    }
}

/// A helper panicked while stepping ranges: the replicas it held are gone, so the store
/// must stop and recover from its engines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a raft pool helper failed while stepping ranges")]
pub struct HelperFailed;

impl RaftPool {
    /// A threshold of ranges with work for [`new`](Self::new): below it, handing ranges to
    /// helpers (a queued job and a thread wake-up each) costs more than stepping them here.
    pub const PARALLEL_MIN: usize = 8;

    /// A pool of `workers` threads in all: the raft worker and `workers - 1` helpers
    /// (named `{name}-{n}`). Rounds with fewer than `parallel_min` ranges with work run on
    /// the raft worker alone.
    ///
    /// # Errors
    /// A thread could not be spawned.
    pub fn new(name: &str, workers: usize, parallel_min: usize) -> std::io::Result<Self> {
        let (jobs, receiver) = unbounded::<Job>();
        let mut threads = Vec::new();
        for n in 1..workers.max(1) {
            let receiver = receiver.clone();
            let thread =
                std::thread::Builder::new().name(format!("{name}-{n}")).spawn(move || {
                    for job in receiver {
                        // A panicking job drops its result sender: the raft worker learns of
                        // it and stops the store; the helper stays for the next job.
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                    }
                })?;
            threads.push(thread);
        }
        Ok(Self { jobs: Some(jobs), threads, parallel_min: parallel_min.max(2) })
    }

    /// Threads in all, the raft worker included.
    #[must_use]
    pub fn workers(&self) -> usize {
        self.threads.len() + 1
    }

    /// Whether `ranges` ranges with work are worth handing out.
    pub(crate) fn worth_it(&self, ranges: usize) -> bool {
        !self.threads.is_empty() && ranges >= self.parallel_min
    }

    /// Runs `work` on every item, the items split among the raft worker (the caller) and
    /// the helpers; returns the results in the items' order.
    ///
    /// # Errors
    /// A helper panicked: the items it held are lost.
    pub(crate) fn map<T, U>(&self, items: Vec<T>, work: fn(T) -> U) -> Result<Vec<U>, HelperFailed>
    where
        T: Send + 'static,
        U: Send + 'static,
    {
        let Some(jobs) = self.jobs.as_ref().filter(|_| !self.threads.is_empty()) else {
            return Ok(items.into_iter().map(work).collect());
        };
        let chunks = split_evenly(items, self.workers());
        let (results, received) = unbounded();
        let mut chunks = chunks.into_iter().enumerate();
        let own = chunks.next();
        let mut handed_out = 0;
        for (index, chunk) in chunks {
            let results = results.clone();
            let job: Job = Box::new(move || {
                let done: Vec<U> = chunk.into_iter().map(work).collect();
                let _ = results.send((index, done));
            });
            if jobs.send(job).is_err() {
                return Err(HelperFailed);
            }
            handed_out += 1;
        }
        drop(results);
        let mut parts: Vec<(usize, Vec<U>)> = Vec::with_capacity(handed_out + 1);
        if let Some((index, chunk)) = own {
            parts.push((index, chunk.into_iter().map(work).collect()));
        }
        for _ in 0..handed_out {
            // Every job sends once, or drops its sender by panicking; once all are dropped
            // without a result, `recv` fails.
            parts.push(received.recv().map_err(|_| HelperFailed)?);
        }
        parts.sort_unstable_by_key(|(index, _)| *index);
        Ok(parts.into_iter().flat_map(|(_, part)| part).collect())
    }
}

impl Drop for RaftPool {
    fn drop(&mut self) {
        // Closing the queue ends every helper's loop.
        self.jobs = None;
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                tracing::error!("raft pool helper panicked");
            }
        }
    }
}

/// Splits `items` into at most `parts` runs of nearly equal length, in order.
fn split_evenly<T>(items: Vec<T>, parts: usize) -> Vec<Vec<T>> {
    let parts = parts.clamp(1, items.len().max(1));
    let base = items.len() / parts;
    let extra = items.len() % parts;
    let mut items = items.into_iter();
    (0..parts).map(|part| items.by_ref().take(base + usize::from(part < extra)).collect()).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn results_come_back_in_order_from_every_split() {
        for workers in 1..=4 {
            let pool = RaftPool::new("test-pool", workers, 2).unwrap();
            assert_eq!(pool.workers(), workers);
            for count in [0, 1, 2, 3, 7, 100] {
                let items: Vec<u64> = (0..count).collect();
                let doubled = pool.map(items, |n| n * 2).unwrap();
                assert_eq!(doubled, (0..count).map(|n| n * 2).collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn work_runs_on_the_helpers_too() {
        let pool = RaftPool::new("test-pool", 3, 2).unwrap();
        let names = pool
            .map((0..3).collect::<Vec<u32>>(), |_| {
                std::thread::current().name().map(str::to_owned).unwrap_or_default()
            })
            .unwrap();
        let helpers = names.iter().filter(|name| name.starts_with("test-pool-")).count();
        assert_eq!(helpers, 2, "{names:?}");
    }

    #[test]
    fn a_panicking_helper_is_reported_and_the_pool_goes_on() {
        let pool = RaftPool::new("test-pool", 2, 2).unwrap();
        // The second half goes to the helper; 3 panics there.
        let failed = pool.map(vec![0_u32, 1, 2, 3], |n| {
            assert!(n != 3, "a bug while stepping");
            n
        });
        assert_eq!(failed, Err(HelperFailed));
        assert_eq!(pool.map(vec![5_u32, 6], |n| n + 1).unwrap(), vec![6, 7]);
    }

    #[test]
    fn splits_are_even_and_keep_order() {
        let parts = split_evenly((0..7).collect::<Vec<u32>>(), 3);
        assert_eq!(parts, vec![vec![0, 1, 2], vec![3, 4], vec![5, 6]]);
        assert_eq!(split_evenly(Vec::<u32>::new(), 3), vec![Vec::<u32>::new()]);
        assert_eq!(split_evenly(vec![1_u32], 4), vec![vec![1]]);
    }
}
