//! Building snapshots off the raft worker.
//!
//! Writing a range's snapshot files reads every key of the range and writes them out: for a
//! range near its split size, long enough that the store's other ranges would miss their
//! heartbeats and leases if the raft worker did it. The raft worker only takes what must be
//! taken at the applied index — a point-in-time view of the KV engine, the descriptor and
//! the membership — after the apply worker has written everything before it, and hands the
//! rest to this thread. The result comes back at the start of a later round, when the
//! snapshot is handed to the range's Raft storage; until then the range's leader finds no
//! snapshot to send and asks again, as it does while a snapshot is built inline.
//!
//! A store without one (the simulator, `Store::open`) builds inline, in the round that
//! asked.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, unbounded};
use tessera_engine::KvEngine;
use tessera_engine::keys::KeySpan;
use tessera_raft::SnapshotMetadata;
use tessera_wire::ids::RangeId;
use tessera_wire::range::RangeDescriptor;

use crate::error::{Result, StoreError};
use crate::snapshot::SnapshotData;

/// A snapshot to build: everything taken at the applied index.
pub(crate) struct BuildJob<K: KvEngine> {
    pub(crate) range: RangeId,
    pub(crate) kv: K,
    /// The engine as of the applied index.
    pub(crate) view: K::Snapshot,
    pub(crate) descriptor: RangeDescriptor,
    pub(crate) metadata: SnapshotMetadata,
    /// Where the files go (created here, deleted on failure).
    pub(crate) dir: PathBuf,
    pub(crate) started: Instant,
}

/// A snapshot built, or why not.
pub(crate) struct Built {
    pub(crate) range: RangeId,
    pub(crate) metadata: SnapshotMetadata,
    pub(crate) dir: PathBuf,
    pub(crate) started: Instant,
    pub(crate) data: Result<SnapshotData>,
}

/// Writes the job's files.
pub(crate) fn build<K: KvEngine>(job: BuildJob<K>) -> Built {
    let BuildJob { range, kv, view, descriptor, metadata, dir, started } = job;
    let data = (|| -> Result<SnapshotData> {
        if dir.exists() {
            crate::operation::snapshot::remove_snapshot_dir(&dir);
        }
        std::fs::create_dir_all(&dir).map_err(|error| {
            StoreError::Unsupported(format!("creating {}: {error}", dir.display()))
        })?;
        let span: KeySpan =
            tessera_engine::keys::data_span(&descriptor.start_key, &descriptor.end_key);
        let manifest = kv.export_snapshot(&view, &span, &dir)?;
        Ok(SnapshotData::new(descriptor, &manifest))
    })();
    Built { range, metadata, dir, started, data }
}

/// The thread that builds a store's snapshots, one at a time.
pub(crate) struct SnapshotWorker<K: KvEngine> {
    jobs: Option<Sender<BuildJob<K>>>,
    done: Receiver<Built>,
    thread: Option<JoinHandle<()>>,
    /// Ranges whose snapshot is being built.
    building: BTreeSet<RangeId>,
}

impl<K: KvEngine> SnapshotWorker<K> {
    /// Starts the thread, named `name`.
    pub(crate) fn start(name: String) -> std::io::Result<Self> {
        let (jobs, receiver) = unbounded::<BuildJob<K>>();
        let (sender, done) = unbounded();
        let thread = std::thread::Builder::new().name(name).spawn(move || {
            for job in receiver {
                if sender.send(build(job)).is_err() {
                    return;
                }
            }
        })?;
        Ok(Self { jobs: Some(jobs), done, thread: Some(thread), building: BTreeSet::new() })
    }

    /// Whether `range`'s snapshot is being built.
    pub(crate) fn is_building(&self, range: RangeId) -> bool {
        self.building.contains(&range)
    }

    /// Hands `job` to the thread; the job back if the thread is gone.
    pub(crate) fn submit(&mut self, job: BuildJob<K>) -> std::result::Result<(), Box<BuildJob<K>>> {
        let Some(jobs) = &self.jobs else { return Err(Box::new(job)) };
        let range = job.range;
        jobs.send(job).map_err(|error| Box::new(error.into_inner()))?;
        self.building.insert(range);
        Ok(())
    }

    /// The snapshots built since the last call.
    pub(crate) fn take_done(&mut self) -> Vec<Built> {
        let done: Vec<Built> = self.done.try_iter().collect();
        for built in &done {
            self.building.remove(&built.range);
        }
        done
    }
}

impl<K: KvEngine> Drop for SnapshotWorker<K> {
    fn drop(&mut self) {
        // Closing the queue ends the thread after the job it is on.
        self.jobs = None;
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("snapshot worker panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use bytes::Bytes;
    use tessera_engine::mem::MemKvEngine;
    use tessera_engine::{Cf, KvBatch, keys};

    use super::*;

    fn job(kv: &MemKvEngine, range: u64, dir: PathBuf) -> BuildJob<MemKvEngine> {
        BuildJob {
            range: RangeId(range),
            kv: kv.clone(),
            view: kv.snapshot(),
            descriptor: RangeDescriptor {
                id: RangeId(range),
                start_key: Bytes::from_static(b"a"),
                end_key: Bytes::from_static(b"m"),
                ..RangeDescriptor::default()
            },
            metadata: SnapshotMetadata::default(),
            dir,
            started: Instant::now(),
        }
    }

    /// The worker's next result, within a deadline.
    fn wait_for_result(worker: &mut SnapshotWorker<MemKvEngine>) -> Built {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(built) = worker.take_done().pop() {
                return built;
            }
            assert!(Instant::now() < deadline, "no result from the snapshot worker");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn a_snapshot_is_built_on_the_thread_from_the_view_taken_before() {
        let kv = MemKvEngine::new();
        let mut batch = kv.batch();
        batch.put(Cf::Default, &keys::data_key(b"b"), b"before");
        kv.write(&mut batch, true).unwrap();
        let dirs = tempfile::tempdir().unwrap();
        let mut worker = SnapshotWorker::<MemKvEngine>::start("test-snap".to_owned()).unwrap();
        let job = job(&kv, 7, dirs.path().join("gen-7"));
        // Written after the view was taken: not in the snapshot.
        let mut batch = kv.batch();
        batch.put(Cf::Default, &keys::data_key(b"c"), b"after");
        kv.write(&mut batch, true).unwrap();
        assert!(worker.submit(job).is_ok());
        assert!(worker.is_building(RangeId(7)));
        assert!(!worker.is_building(RangeId(8)));

        let built = wait_for_result(&mut worker);
        assert!(!worker.is_building(RangeId(7)), "a taken result ends the build");
        assert_eq!(built.range, RangeId(7));
        let data = built.data.unwrap();
        assert_eq!(data.descriptor.id, RangeId(7));
        let keys_in_files: u64 = data.files.iter().map(|file| file.keys).sum();
        assert_eq!(keys_in_files, 1, "only the key written before the view: {data:?}");
        assert!(built.dir.exists());
    }

    #[test]
    fn a_failed_build_is_reported_not_lost() {
        let kv = MemKvEngine::new();
        let dirs = tempfile::tempdir().unwrap();
        // A file where the directory should go: it cannot be created.
        let blocked = dirs.path().join("file");
        std::fs::write(&blocked, b"x").unwrap();
        let mut worker = SnapshotWorker::<MemKvEngine>::start("test-snap".to_owned()).unwrap();
        assert!(worker.submit(job(&kv, 3, blocked.join("gen-3"))).is_ok());
        let built = wait_for_result(&mut worker);
        assert!(built.data.is_err());
        assert!(!worker.is_building(RangeId(3)));
    }
}
