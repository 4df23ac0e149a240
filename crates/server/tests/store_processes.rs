//! Real `tessera store` processes on loopback with RocksDB and QUIC: 121 ranges after
//! splits; the store leading the most of them is killed with SIGKILL, writes to every range
//! continue on the others, the store restarts from its directory and catches up; no
//! acknowledged write is lost. A fourth store process joins holding nothing and gets a
//! replica of every range by snapshot, surviving a SIGKILL halfway.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tessera_raft::ReplicaId;
use tessera_transport::tls::{NodeTls, TlsSource};
use tessera_transport::{Handler, Transport, TransportConfig};
use tessera_wire::errors::RpcError;
use tessera_wire::ids::{NodeId, RangeId, StoreId};
use tessera_wire::kv::{
    KvCommand, KvRequest, KvResponse, RawGetRequest, RawPutRequest, ReadMode, RequestContext,
};
use tessera_wire::range::{RangeDescriptor, RangeEpoch, ReplicaRole};
use tessera_wire::rpc::{
    ReplicaChange, RpcRequestBody, RpcResponseBody, RpcResult, StoreAdminRequest,
    StoreAdminResponse,
};
use tessera_wire::transport::RaftEnvelope;

const CLUSTER_ID: u64 = 7;
const DEADLINE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(20);
/// Splits made before the kill.
const RANGES: usize = 120;

/// The test's client node: sends RPCs, serves nothing.
struct ClientNode;

impl Handler for ClientNode {
    fn on_raft(&self, _from: NodeId, _envelopes: Vec<RaftEnvelope>) {}
}

/// A store process, killed when dropped.
struct StoreProcess {
    child: Child,
}

impl Drop for StoreProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap()
}

fn spawn(id: u64, addrs: &[SocketAddr], data: &Path, certs: &Path) -> StoreProcess {
    spawn_with(id, addrs, data, certs, true)
}

/// Starts store `id`; `initial`: it is one of the stores that bootstrap the first range
/// (stores 1 to 3), else it joins holding nothing.
fn spawn_with(
    id: u64,
    addrs: &[SocketAddr],
    data: &Path,
    certs: &Path,
    initial: bool,
) -> StoreProcess {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tessera"));
    command
        .arg("store")
        .args(["--store-id", &id.to_string(), "--cluster-id", &CLUSTER_ID.to_string()])
        .arg("--data-dir")
        .arg(data.join(format!("store-{id}")))
        .args(["--listen", &addrs[id as usize - 1].to_string()])
        .args(["--tick-ms", "20"])
        // Two threads step each store's ranges: the restart's catch-up of 121 ranges runs on
        // the raft pool.
        .args(["--raft-workers", "2"])
        .arg("--insecure-dev-certs")
        .arg(certs);
    if initial {
        command.args(["--initial-stores", "1,2,3"]);
    }
    for (index, addr) in addrs.iter().enumerate() {
        let peer = index as u64 + 1;
        if peer != id {
            command.args(["--peer", &format!("{peer}={addr}")]);
        }
    }
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (ready, wait) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if line.contains("ready on") {
                let _ = ready.send(line);
            }
        }
    });
    let process = StoreProcess { child };
    wait.recv_timeout(DEADLINE).expect("store process never became ready");
    process
}

fn request(
    descriptor: &RangeDescriptor,
    store: u64,
    command: KvCommand,
    read_mode: ReadMode,
) -> KvRequest {
    KvRequest {
        context: RequestContext {
            range: descriptor.id,
            epoch: descriptor.epoch,
            store_id: StoreId(store),
            replica: None,
            read_mode,
        },
        command,
    }
}

/// What the client knows of the ranges: descriptors by start key, and who leads each.
struct Routes {
    ranges: BTreeMap<Bytes, RangeDescriptor>,
    leaders: BTreeMap<RangeId, u64>,
}

impl Routes {
    fn range_of(&self, key: &Bytes) -> RangeDescriptor {
        self.ranges.range(..=key.clone()).next_back().expect("ranges tile the key space").1.clone()
    }

    fn learn(&mut self, descriptor: RangeDescriptor) {
        self.ranges.retain(|_, known| known.id != descriptor.id);
        self.ranges.insert(descriptor.start_key.clone(), descriptor);
    }
}

struct Client {
    runtime: tokio::runtime::Runtime,
    transport: Transport,
    routes: Routes,
}

impl Client {
    fn new(certs: &Path, addrs: &[SocketAddr]) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let tls = NodeTls::load(&TlsSource::DevGenerated { dir: certs.to_owned() }, "client-100")
            .unwrap();
        let mut config = TransportConfig::new(
            NodeId(100),
            StoreId(100),
            CLUSTER_ID,
            "127.0.0.1:0".parse().unwrap(),
            tls,
        );
        config.reconnect_backoff_min = Duration::from_millis(20);
        config.reconnect_backoff_max = Duration::from_millis(200);
        config.connect_timeout = Duration::from_secs(1);
        let transport = runtime.block_on(Transport::start(config, Arc::new(ClientNode))).unwrap();
        for (index, addr) in addrs.iter().enumerate() {
            transport.set_peer(NodeId(index as u64 + 1), *addr);
        }
        let first = RangeDescriptor {
            id: RangeId(1),
            start_key: Bytes::new(),
            end_key: Bytes::new(),
            epoch: RangeEpoch { conf_ver: 1, version: 1 },
            replicas: Vec::new(),
        };
        let mut routes = Routes { ranges: BTreeMap::new(), leaders: BTreeMap::new() };
        routes.learn(first);
        Self { runtime, transport, routes }
    }

    fn rpc(&self, store: u64, body: RpcRequestBody) -> Result<RpcResponseBody, RpcError> {
        let answer =
            self.runtime.block_on(self.transport.rpc(NodeId(store), body, Duration::from_secs(2)));
        match answer.map(|response| response.result) {
            Ok(RpcResult::Ok(body)) => Ok(body),
            Ok(RpcResult::Err(error)) => Err(error),
            Err(error) => Err(RpcError::Internal { message: error.to_string() }),
        }
    }

    /// Learns from a routing refusal (`NotLeader` naming the leader, `EpochNotMatch`);
    /// false for any other error.
    fn learn_route(&mut self, error: &RpcError) -> bool {
        match error {
            RpcError::NotLeader { leader: Some(leader), range } => {
                self.routes.leaders.insert(*range, leader.store_id.0);
                true
            }
            RpcError::EpochNotMatch { ranges } => {
                for range in ranges {
                    self.routes.learn(range.clone());
                }
                true
            }
            _ => false,
        }
    }

    /// Sends what `body` builds for the range holding `key` to its leader, following
    /// `NotLeader` and `EpochNotMatch`, until an answer that is not a routing error.
    fn routed(
        &mut self,
        key: &Bytes,
        body: impl Fn(&RangeDescriptor, u64) -> RpcRequestBody,
    ) -> RpcResponseBody {
        let deadline = Instant::now() + DEADLINE;
        let mut last = None;
        while Instant::now() < deadline {
            let descriptor = self.routes.range_of(key);
            let store = *self.routes.leaders.get(&descriptor.id).unwrap_or(&1);
            match self.rpc(store, body(&descriptor, store)) {
                Ok(answer) => return answer,
                Err(error) if self.learn_route(&error) => {}
                Err(error) => {
                    self.routes.leaders.insert(descriptor.id, store % 3 + 1);
                    last = Some(error);
                    std::thread::sleep(POLL);
                }
            }
        }
        panic!("request for {key:?} never answered; last error {last:?}");
    }

    fn put(&mut self, key: &Bytes, value: &Bytes) {
        let command = KvCommand::RawPut(RawPutRequest { key: key.clone(), value: value.clone() });
        let answer = self.routed(key, |descriptor, store| {
            RpcRequestBody::Kv(request(descriptor, store, command.clone(), ReadMode::Leader))
        });
        assert_eq!(answer, RpcResponseBody::Kv(KvResponse::RawPut));
    }

    /// Splits the range holding `at` there, with fresh ids `base..`.
    fn split(&mut self, at: &Bytes, base: u64) {
        let answer = self.routed(at, |descriptor, _| {
            RpcRequestBody::StoreAdmin(StoreAdminRequest::Split {
                range: descriptor.id,
                epoch: descriptor.epoch,
                split_key: at.clone(),
                new_range: RangeId(base),
                new_replicas: (1..=3).map(|n| ReplicaId(base * 10 + n)).collect(),
            })
        });
        let RpcResponseBody::StoreAdmin(StoreAdminResponse::Split { left, right }) = answer else {
            panic!("unexpected answer {answer:?}");
        };
        let leader = self.routes.leaders.get(&left.id).copied();
        self.routes.learn(left);
        if let Some(leader) = leader {
            // The right half campaigns on the store that led the parent.
            self.routes.leaders.insert(right.id, leader);
        }
        self.routes.learn(right);
    }

    /// Applies one membership change to the range holding `at`, at its leader; a change
    /// already in place (a retry after a lost answer) counts as done.
    fn change(&mut self, at: &Bytes, change: ReplicaChange) {
        let deadline = Instant::now() + DEADLINE;
        let done = |descriptor: &RangeDescriptor| match change {
            ReplicaChange::AddLearner { id, .. } => descriptor.replica(id).is_some(),
            ReplicaChange::Promote { id } => {
                descriptor.replica(id).is_some_and(|r| r.role == ReplicaRole::Voter)
            }
            ReplicaChange::Demote { id } => {
                descriptor.replica(id).is_some_and(|r| r.role == ReplicaRole::Learner)
            }
            ReplicaChange::Remove { id } => descriptor.replica(id).is_none(),
        };
        let mut last = None;
        while Instant::now() < deadline {
            let descriptor = self.routes.range_of(at);
            if done(&descriptor) && !descriptor.replicas.is_empty() {
                return;
            }
            let store = *self.routes.leaders.get(&descriptor.id).unwrap_or(&1);
            let body = RpcRequestBody::StoreAdmin(StoreAdminRequest::ChangeReplicas {
                range: descriptor.id,
                epoch: descriptor.epoch,
                changes: vec![change],
            });
            match self.rpc(store, body) {
                Ok(RpcResponseBody::StoreAdmin(StoreAdminResponse::ChangeReplicas {
                    descriptor,
                })) => {
                    self.routes.learn(descriptor);
                    return;
                }
                Ok(other) => panic!("unexpected answer {other:?}"),
                Err(error) if self.learn_route(&error) => {}
                Err(error) => {
                    if !matches!(error, RpcError::ServerBusy { .. }) {
                        self.routes.leaders.insert(descriptor.id, store % 3 + 1);
                    }
                    last = Some(error);
                    std::thread::sleep(POLL);
                }
            }
        }
        panic!("{change:?} at {at:?} never applied; last error {last:?}");
    }

    /// Reads `key` from `store` (the leader, or any replica by a follower read).
    fn get_from(&self, store: u64, key: &Bytes, mode: ReadMode) -> Result<Option<Bytes>, RpcError> {
        let descriptor = self.routes.range_of(key);
        let command = KvCommand::RawGet(RawGetRequest { key: key.clone() });
        match self.rpc(store, RpcRequestBody::Kv(request(&descriptor, store, command, mode)))? {
            RpcResponseBody::Kv(KvResponse::RawGet { value }) => Ok(value),
            other => panic!("unexpected answer {other:?}"),
        }
    }

    /// The store leading most ranges, as far as the client knows.
    fn busiest_leader(&self) -> u64 {
        let mut counts = BTreeMap::new();
        for store in self.routes.leaders.values() {
            *counts.entry(*store).or_insert(0) += 1;
        }
        counts.into_iter().max_by_key(|(_, count)| *count).map_or(1, |(store, _)| store)
    }
}

fn key(n: usize) -> Bytes {
    Bytes::from(format!("key-{n:04}"))
}

fn value(n: usize) -> Bytes {
    Bytes::from(format!("value-{n}"))
}

#[test]
fn killed_store_restarts_and_catches_up_without_losing_acknowledged_writes() {
    let dir = tempfile::tempdir().unwrap();
    let certs: PathBuf = dir.path().join("certs");
    let addrs: Vec<SocketAddr> = (0..3).map(|_| free_port()).collect();
    // Generate the CA once, before the processes race to create it.
    let mut client = Client::new(&certs, &addrs);
    let mut stores: Vec<Option<StoreProcess>> =
        (1..=3).map(|id| Some(spawn(id, &addrs, dir.path(), &certs))).collect();

    for n in 0..100 {
        client.put(&key(n), &value(n));
    }
    // 120 splits: 121 ranges, each holding some of the keys written so far.
    for n in 1..=RANGES {
        client.split(&key(n), 1_000 + n as u64);
    }
    assert_eq!(client.routes.ranges.len(), RANGES + 1);

    // SIGKILL to the store leading the most ranges; writes to every range go on.
    let killed = client.busiest_leader();
    stores[killed as usize - 1] = None;
    for n in 100..250 {
        client.put(&key(n), &value(n));
    }
    stores[killed as usize - 1] = Some(spawn(killed, &addrs, dir.path(), &certs));

    // Every acknowledged write reads back from its leader, and from the restarted store by
    // a follower read (read index from the leader, then its own applied state).
    for n in 0..250 {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let range = client.routes.range_of(&key(n)).id;
            let leader = *client.routes.leaders.get(&range).unwrap_or(&1);
            let from_leader = client.get_from(leader, &key(n), ReadMode::Leader);
            let restarted = client.get_from(killed, &key(n), ReadMode::ReplicaRead);
            if from_leader == Ok(Some(value(n))) && restarted == Ok(Some(value(n))) {
                break;
            }
            match &from_leader {
                Err(RpcError::NotLeader { leader: Some(replica), range }) => {
                    client.routes.leaders.insert(*range, replica.store_id.0);
                }
                Err(_) => {
                    client.routes.leaders.insert(range, leader % 3 + 1);
                }
                Ok(_) => {}
            }
            assert!(
                Instant::now() < deadline,
                "key {n}: leader answered {from_leader:?}, restarted store {restarted:?}"
            );
            std::thread::sleep(POLL);
        }
    }
    drop(stores);
}

#[test]
fn a_joining_store_process_gets_every_range_by_snapshot_across_a_kill() {
    const SPLITS: usize = 12;
    let dir = tempfile::tempdir().unwrap();
    let certs: PathBuf = dir.path().join("certs");
    let addrs: Vec<SocketAddr> = (0..4).map(|_| free_port()).collect();
    let mut client = Client::new(&certs, &addrs);
    let _stores: Vec<StoreProcess> =
        (1..=3).map(|id| spawn(id, &addrs, dir.path(), &certs)).collect();
    for n in 0..200 {
        client.put(&key(n), &value(n));
    }
    for n in 1..=SPLITS {
        client.split(&key(n * 15), 2_000 + n as u64);
    }
    let starts: Vec<Bytes> = client.routes.ranges.keys().cloned().collect();
    assert_eq!(starts.len(), SPLITS + 1);

    // Store 4 joins holding nothing; each range adds it as a learner (by snapshot). It is
    // killed halfway and restarted.
    let mut joiner = Some(spawn_with(4, &addrs, dir.path(), &certs, false));
    for (index, start) in starts.iter().enumerate() {
        if index == starts.len() / 2 {
            // SIGKILL (dropping the process kills it), then restart from its directory.
            drop(joiner.take());
            joiner = Some(spawn_with(4, &addrs, dir.path(), &certs, false));
        }
        let id = client.routes.range_of(start).id;
        let learner = ReplicaId(id.0 * 10 + 4);
        client.change(start, ReplicaChange::AddLearner { id: learner, store_id: StoreId(4) });
    }
    for n in 200..260 {
        client.put(&key(n), &value(n));
    }
    // Promotion waits for each learner to catch up; then every key reads from store 4.
    for start in &starts {
        let id = client.routes.range_of(start).id;
        client.change(start, ReplicaChange::Promote { id: ReplicaId(id.0 * 10 + 4) });
    }
    for n in 0..260 {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let got = client.get_from(4, &key(n), ReadMode::ReplicaRead);
            if got == Ok(Some(value(n))) {
                break;
            }
            if let Err(RpcError::EpochNotMatch { ranges }) = &got {
                for range in ranges.clone() {
                    client.routes.learn(range);
                }
            }
            assert!(Instant::now() < deadline, "key {n} from store 4: {got:?}");
            std::thread::sleep(POLL);
        }
    }
    drop(joiner);
}
