//! A deterministic cluster of whole stores on one thread: in-memory engines that lose
//! unsynced writes on a crash, and a seeded network with delay, loss and partitions.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tessera_engine::codec::StoreIdent;
use tessera_engine::mem::{MemKvEngine, MemRaftLogEngine};
use tessera_engine::{Cf, Direction, KvRead, keys};
use tessera_raft::{ReplicaId, SplitMix64};
use tessera_store::snapshot::SnapshotData;
use tessera_store::{ApplyMode, Network, RaftPool, Store, StoreConfig, bootstrap, bootstrap_store};
use tessera_wire::ids::{RangeId, StoreId};
use tessera_wire::raft::MessageKind;
use tessera_wire::range::{RangeDescriptor, RangeEpoch, Replica, ReplicaRole};
use tessera_wire::transport::RaftEnvelope;

/// Key-value pairs as the engine holds them.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

pub type SimStore = Store<MemRaftLogEngine, MemKvEngine, SimNet>;

/// Stores believed down (crashed or cut off), shared by every store's liveness view.
pub type Down = Arc<Mutex<BTreeSet<StoreId>>>;

/// A store's view of the network: an outbox the cluster empties after every poll.
#[derive(Debug)]
pub struct SimNet {
    pub outbox: Vec<RaftEnvelope>,
    down: Down,
}

impl Network for SimNet {
    fn send(&mut self, envelope: RaftEnvelope) {
        self.outbox.push(envelope);
    }

    fn store_alive(&self, store: StoreId) -> bool {
        !self.down.lock().unwrap().contains(&store)
    }
}

pub struct Node {
    pub id: StoreId,
    pub store: Option<SimStore>,
    pub raft: MemRaftLogEngine,
    pub kv: MemKvEngine,
}

pub struct Cluster {
    pub config: StoreConfig,
    pub nodes: Vec<Node>,
    pub rng: SplitMix64,
    pub now: u64,
    /// (deliver at, envelope)
    pub in_flight: Vec<(u64, RaftEnvelope)>,
    pub down: Down,
    /// Stores cut off from everyone.
    pub isolated: BTreeSet<StoreId>,
    pub loss_percent: u64,
    pub next_id: u64,
    /// Snapshot directories (one per store below it).
    pub snapshots: tempfile::TempDir,
    /// Deliver snapshots whose manifests miscount their keys (checksums intact), which
    /// only the engine's ingest notices.
    pub damage_snapshots: bool,
    /// Stores hand their apply work to a deferred apply worker, which runs a random
    /// number of jobs (0, 1 or 3, mostly 0) per step — as a real apply thread lags its raft thread.
    pub deferred_apply: bool,
    /// Threads stepping each store's ranges (1: the raft worker alone).
    pub raft_workers: usize,
}

/// A pool that steps ranges in parallel as soon as two have work.
fn sim_pool(store: StoreId, workers: usize) -> RaftPool {
    RaftPool::new(&format!("sim-store-{store}"), workers, 2).unwrap()
}

pub const CLUSTER_ID: u64 = 42;

/// A data request for `descriptor`'s range, addressed to `store`.
pub fn request(
    descriptor: &RangeDescriptor,
    store: StoreId,
    command: tessera_wire::kv::KvCommand,
) -> tessera_wire::kv::KvRequest {
    tessera_wire::kv::KvRequest {
        context: tessera_wire::kv::RequestContext {
            range: descriptor.id,
            epoch: descriptor.epoch,
            store_id: store,
            ..tessera_wire::kv::RequestContext::default()
        },
        command,
    }
}

impl Cluster {
    /// `stores` stores, each holding a replica of the first range (the whole key space).
    pub fn new(stores: u64, seed: u64, config: StoreConfig) -> Self {
        Self::with_spares(stores, 0, seed, config)
    }

    /// `stores` stores holding the first range, and `spares` more stores holding nothing.
    pub fn with_spares(stores: u64, spares: u64, seed: u64, config: StoreConfig) -> Self {
        let descriptor = RangeDescriptor {
            id: RangeId(1),
            start_key: Bytes::new(),
            end_key: Bytes::new(),
            epoch: RangeEpoch { conf_ver: 1, version: 1 },
            replicas: (1..=stores)
                .map(|id| Replica {
                    id: ReplicaId(id),
                    store_id: StoreId(id),
                    role: ReplicaRole::Voter,
                })
                .collect(),
        };
        let down: Down = Arc::default();
        let mut nodes = Vec::new();
        for id in 1..=stores + spares {
            let raft = MemRaftLogEngine::new();
            let kv = MemKvEngine::new();
            let ident = StoreIdent { cluster_id: CLUSTER_ID, store_id: StoreId(id) };
            if id <= stores {
                bootstrap(&raft, &kv, ident, &descriptor).unwrap();
            } else {
                bootstrap_store(&raft, &kv, ident).unwrap();
            }
            nodes.push(Node { id: StoreId(id), store: None, raft, kv });
        }
        let mut cluster = Self {
            config,
            nodes,
            rng: SplitMix64::new(seed),
            now: 0,
            in_flight: Vec::new(),
            down,
            isolated: BTreeSet::new(),
            loss_percent: 0,
            next_id: 100,
            snapshots: tempfile::tempdir().unwrap(),
            damage_snapshots: false,
            deferred_apply: false,
            raft_workers: 1,
        };
        for index in 0..cluster.nodes.len() {
            cluster.start(index);
        }
        cluster
    }

    pub fn start(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        let ident = StoreIdent { cluster_id: CLUSTER_ID, store_id: node.id };
        let net = SimNet { outbox: Vec::new(), down: self.down.clone() };
        let config = StoreConfig {
            snapshot_dir: self.snapshots.path().join(format!("store-{}", node.id)),
            ..self.config.clone()
        };
        let mut store =
            Store::open(config, node.raft.clone(), node.kv.clone(), net, ident).unwrap();
        if self.deferred_apply {
            store.set_apply_mode(ApplyMode::Deferred).unwrap();
        }
        if self.raft_workers > 1 {
            store.set_raft_pool(sim_pool(node.id, self.raft_workers));
        }
        node.store = Some(store);
        self.down.lock().unwrap().remove(&node.id);
    }

    /// kill -9: the store vanishes with whatever was not synced (a random prefix of it kept).
    pub fn crash(&mut self, index: usize) {
        let keep_raft = self.rng.range(0, 3) as usize;
        let keep_kv = self.rng.range(0, 4) as usize;
        let node = &mut self.nodes[index];
        node.store = None;
        node.raft = node.raft.crash(keep_raft);
        node.kv = node.kv.crash(keep_kv);
        self.down.lock().unwrap().insert(node.id);
    }

    pub fn store(&mut self, id: StoreId) -> Option<&mut SimStore> {
        self.nodes.iter_mut().find(|node| node.id == id)?.store.as_mut()
    }

    pub fn fresh_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn reachable(&self, from: StoreId, to: StoreId) -> bool {
        !self.isolated.contains(&from) && !self.isolated.contains(&to)
    }

    /// One step: deliver due messages, tick every `tick_every` steps, poll every store.
    pub fn step(&mut self, tick_every: u64) {
        self.now += 1;
        let now = self.now;
        let due: Vec<RaftEnvelope> = {
            let (due, later) = std::mem::take(&mut self.in_flight)
                .into_iter()
                .partition::<Vec<_>, _>(|(at, _)| *at <= now);
            self.in_flight = later;
            due.into_iter().map(|(_, envelope)| envelope).collect()
        };
        // Each store takes what reached it in one batch, as a running store takes what its
        // mailboxes hold (with a pool, plain steps run in parallel).
        let mut batches: BTreeMap<StoreId, Vec<RaftEnvelope>> = BTreeMap::new();
        let mut reports = Vec::new();
        for mut envelope in due {
            if envelope.message.kind == MessageKind::Snapshot
                && !self.copy_snapshot_files(&mut envelope)
            {
                // The sender could not read its files: the stream fails before the
                // receiver's Raft sees the message, and the sender hears of it.
                let (range, from, to) = (envelope.range, envelope.from_store, envelope.message.to);
                self.report_snapshot(range, from, to, false);
                continue;
            }
            let delivered = self.store(envelope.to_store).is_some();
            if envelope.message.kind == MessageKind::Snapshot {
                reports.push((envelope.range, envelope.from_store, envelope.message.to, delivered));
            }
            if delivered {
                batches.entry(envelope.to_store).or_default().push(envelope);
            }
        }
        for (to, batch) in batches {
            self.store(to).expect("checked above").on_raft_messages(batch).unwrap();
        }
        for (range, from, to, delivered) in reports {
            self.report_snapshot(range, from, to, delivered);
        }
        for index in 0..self.nodes.len() {
            let Some(store) = self.nodes[index].store.as_mut() else { continue };
            if now.is_multiple_of(tick_every) {
                store.tick();
            }
            store.poll_until_idle(8).unwrap();
            if self.deferred_apply {
                // Mostly lagging by a few rounds, now and then far behind.
                let jobs = match self.rng.range(0, 10) {
                    0..=5 => 0,
                    6..=8 => 1,
                    _ => 3,
                };
                store.run_deferred_applies(jobs).unwrap();
            }
            let outbox = std::mem::take(&mut store.network_mut().outbox);
            for envelope in outbox {
                let lost = !self.reachable(envelope.from_store, envelope.to_store)
                    || self.rng.range(0, 100) < self.loss_percent;
                if !lost {
                    let delay = self.rng.range(1, 4);
                    self.in_flight.push((now + delay, envelope));
                } else if envelope.message.kind == MessageKind::Snapshot {
                    let (range, from, to) =
                        (envelope.range, envelope.from_store, envelope.message.to);
                    self.report_snapshot(range, from, to, false);
                }
            }
        }
    }

    /// Copies a snapshot's files to the receiver's side, as the QUIC transport streams them
    /// (the sender may delete its own copies at any time). `false` if a file could not be
    /// read: the stream fails.
    fn copy_snapshot_files(&mut self, envelope: &mut RaftEnvelope) -> bool {
        let Some(snapshot) = envelope.message.snapshot.as_mut() else { return true };
        let Ok(mut data) = SnapshotData::decode(&snapshot.data) else { return true };
        self.next_id += 1;
        let dir = self
            .snapshots
            .path()
            .join(format!("store-{}", envelope.to_store))
            .join(format!("rcv-{}-{}-{}", envelope.to_store, envelope.range, self.next_id));
        std::fs::create_dir_all(&dir).unwrap();
        for (index, file) in data.files.iter_mut().enumerate() {
            let target = dir.join(format!("{index}.sst"));
            if std::fs::copy(&file.path, &target).is_err() {
                let _ = std::fs::remove_dir_all(&dir);
                return false;
            }
            file.path = target.display().to_string();
            if self.damage_snapshots {
                file.keys += 1;
            }
        }
        snapshot.data = data.encode();
        true
    }

    /// Tells the sending store how a snapshot fared (a streaming network reports this).
    fn report_snapshot(&mut self, range: RangeId, from: StoreId, to: ReplicaId, ok: bool) {
        if let Some(store) = self.store(from) {
            store.report_snapshot(range, to, ok);
        }
    }

    /// Steps until `done` holds, at most `steps` steps.
    pub fn run_until(&mut self, steps: u64, mut done: impl FnMut(&mut Self) -> bool) -> bool {
        for _ in 0..steps {
            if done(self) {
                return true;
            }
            self.step(2);
        }
        done(self)
    }

    /// The store leading the range that holds `key`, as that store sees it.
    pub fn leader_of(&self, key: &[u8]) -> Option<(StoreId, RangeDescriptor)> {
        for node in &self.nodes {
            let Some(store) = &node.store else { continue };
            for peer in store.peers().filter(|peer| peer.is_initialized()) {
                if peer.is_leader() && peer.descriptor().contains_key(key) {
                    return Some((node.id, peer.descriptor().clone()));
                }
            }
        }
        None
    }

    /// Gives every store a pool of `workers` threads stepping its ranges, restarts
    /// included (see `RaftPool`).
    pub fn set_raft_workers(&mut self, workers: usize) {
        self.raft_workers = workers;
        for node in &mut self.nodes {
            if let Some(store) = node.store.as_mut()
                && workers > 1
            {
                store.set_raft_pool(sim_pool(node.id, workers));
            }
        }
    }

    /// Lets every store's apply worker run what it holds from now on (or go back to
    /// applying inline), restarts included.
    pub fn set_deferred_apply(&mut self, on: bool) {
        self.deferred_apply = on;
        let mode = if on { ApplyMode::Deferred } else { ApplyMode::Inline };
        for node in &mut self.nodes {
            if let Some(store) = node.store.as_mut() {
                store.set_apply_mode(mode).unwrap();
            }
        }
    }

    /// Every (range, data) of every live store, for convergence checks (after each
    /// store's apply worker has written what it holds).
    pub fn replica_data(&mut self) -> Vec<(RangeId, StoreId, Pairs)> {
        let mut out = Vec::new();
        for node in &mut self.nodes {
            let Some(store) = node.store.as_mut() else { continue };
            store.settle_applies().unwrap();
            for peer in store.peers().filter(|peer| peer.is_initialized()) {
                let descriptor = peer.descriptor();
                let span = keys::data_span(&descriptor.start_key, &descriptor.end_key);
                let data =
                    store.kv().scan(Cf::Default, &span, Direction::Forward, usize::MAX).unwrap();
                out.push((descriptor.id, node.id, data));
            }
        }
        out
    }
}

impl SimNet {
    /// A network with nothing down, for tests that never send.
    pub fn default_for_tests() -> Self {
        Self { outbox: Vec::new(), down: Down::default() }
    }
}

impl Cluster {
    /// Every live store holding a replica whose range (as that store sees it) holds `key`.
    pub fn replicas_of(&self, key: &[u8]) -> Vec<(StoreId, RangeDescriptor)> {
        let mut out = Vec::new();
        for node in &self.nodes {
            let Some(store) = &node.store else { continue };
            for peer in store.peers().filter(|peer| peer.is_initialized()) {
                if peer.descriptor().contains_key(key) {
                    out.push((node.id, peer.descriptor().clone()));
                }
            }
        }
        out
    }
}
