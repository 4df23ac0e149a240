//! Three whole stores in one process on the real stack: RocksDB engines in temporary
//! directories, the QUIC transport on loopback ([`TransportNetwork`] and
//! [`StoreRpcHandler`]), each store on its own thread ([`StoreSystem`]). Writes survive a
//! follower's stop and restart: the restarted store catches up from the leader's log.
//!
//! A fourth store joins by snapshot: added as a learner (the leader streams the range's SST
//! files over the transport's snapshot stream), promoted, and a voter leaves (demoted, then
//! removed, its data deleted).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tempfile::TempDir;
use tessera_engine::codec::StoreIdent;
use tessera_engine::{Cf, KvRead, keys};
use tessera_engine_rocks::{EngineOptions, RocksKvEngine};
use tessera_raft::ReplicaId;
use tessera_store::transport_net::node_of;
use tessera_store::{
    Store, StoreConfig, StoreHandle, StoreRpcHandler, StoreSystem, TransportNetwork, bootstrap,
    bootstrap_store,
};
use tessera_transport::tls::{NodeTls, TlsSource};
use tessera_transport::{Transport, TransportConfig};
use tessera_wire::errors::RpcError;
use tessera_wire::ids::{NodeId, RangeId, StoreId};
use tessera_wire::kv::{
    KvCommand, KvRequest, KvResponse, RawGetRequest, RawPutRequest, RequestContext,
};
use tessera_wire::range::{RangeDescriptor, RangeEpoch, Replica, ReplicaRole};
use tessera_wire::rpc::{
    ReplicaChange, RpcRequestBody, RpcResponseBody, RpcResult, StoreAdminRequest,
    StoreAdminResponse,
};
use tokio::runtime::Runtime;

const CLUSTER_ID: u64 = 77;
const TICK_MS: u64 = 20;
/// Every wait ends by this deadline.
const DEADLINE: Duration = Duration::from_secs(20);
/// Between two polls of a condition.
const POLL: Duration = Duration::from_millis(10);

fn store_config() -> StoreConfig {
    StoreConfig { tick_interval_ms: TICK_MS, ..StoreConfig::default() }
}

fn first_range() -> RangeDescriptor {
    RangeDescriptor {
        id: RangeId(1),
        start_key: Bytes::new(),
        end_key: Bytes::new(),
        epoch: RangeEpoch { conf_ver: 1, version: 1 },
        replicas: (1..=3)
            .map(|id| Replica {
                id: ReplicaId(id),
                store_id: StoreId(id),
                role: ReplicaRole::Voter,
            })
            .collect(),
    }
}

fn ident(id: u64) -> StoreIdent {
    StoreIdent { cluster_id: CLUSTER_ID, store_id: StoreId(id) }
}

/// One store and its transport, running.
struct Running {
    system: StoreSystem,
    transport: Arc<Transport>,
    handler: Arc<StoreRpcHandler>,
    /// A clone of the store's KV engine, to read it directly.
    kv: RocksKvEngine,
    addr: SocketAddr,
}

struct Node {
    id: u64,
    dir: TempDir,
    running: Option<Running>,
}

impl Node {
    fn running(&self) -> &Running {
        self.running.as_ref().expect("node is running")
    }
}

/// Opens (bootstrapping first if `fresh`) node `id`'s engines in `dir`, starts its transport
/// on a free loopback port and its store on a thread.
fn start(rt: &Runtime, certs: &Path, id: u64, dir: &Path, fresh: bool) -> Running {
    let options = EngineOptions { block_cache_bytes: 8 << 20, ..EngineOptions::default() };
    let (raft, kv) = tessera_engine_rocks::open(dir, &options).unwrap();
    if fresh && id <= 3 {
        bootstrap(&raft, &kv, ident(id), &first_range()).unwrap();
    } else if fresh {
        bootstrap_store(&raft, &kv, ident(id)).unwrap();
    }
    let tls =
        NodeTls::load(&TlsSource::DevGenerated { dir: certs.to_owned() }, &format!("node-{id}"))
            .unwrap();
    let mut config = TransportConfig::new(
        NodeId(id),
        StoreId(id),
        CLUSTER_ID,
        "127.0.0.1:0".parse().unwrap(),
        tls,
    );
    config.reconnect_backoff_min = Duration::from_millis(20);
    config.reconnect_backoff_max = Duration::from_millis(200);
    let snapshot_dir = dir.join("snapshots");
    let handler = Arc::new(StoreRpcHandler::with_snapshot_dir(snapshot_dir.clone()));
    let transport = Arc::new(rt.block_on(Transport::start(config, handler.clone())).unwrap());
    let addr = transport.local_addr().unwrap();
    let net = TransportNetwork::new(transport.clone(), rt.handle().clone());
    let config = StoreConfig { snapshot_dir, ..store_config() };
    let store = Store::open(config, raft, kv.clone(), net, ident(id)).unwrap();
    let system = StoreSystem::start(store, tessera_store::MailboxCapacity::uniform(4096)).unwrap();
    handler.set_store(system.handle());
    Running { system, transport, handler, kv, addr }
}

/// Stops the store (its thread drops the engines and its network), then the transport.
fn stop(rt: &Runtime, running: Running) {
    let Running { system, transport, handler, kv, addr: _ } = running;
    system.stop();
    handler.clear_store();
    drop(kv);
    let transport = Arc::try_unwrap(transport).expect("the stopped store released the transport");
    rt.block_on(transport.shutdown(Duration::from_secs(1)));
}

/// Tells every running node every other running node's address.
fn mesh(nodes: &[Node]) {
    for a in nodes.iter().filter_map(|n| n.running.as_ref()) {
        for (b_id, b) in nodes.iter().filter_map(|n| n.running.as_ref().map(|r| (n.id, r))) {
            if a.transport.node_id() != NodeId(b_id) {
                a.transport.set_peer(NodeId(b_id), b.addr);
            }
        }
    }
}

fn request(store: StoreId, command: KvCommand) -> KvRequest {
    let range = first_range();
    KvRequest {
        context: RequestContext {
            range: range.id,
            epoch: range.epoch,
            store_id: store,
            ..RequestContext::default()
        },
        command,
    }
}

/// Sends `command` straight to a store's mailbox and waits for the answer.
fn call(handle: &StoreHandle, store: StoreId, command: KvCommand) -> Result<KvResponse, RpcError> {
    let (sender, receiver) = mpsc::channel();
    handle.kv(
        request(store, command),
        Box::new(move |result| {
            let _ = sender.send(result);
        }),
    );
    receiver.recv_timeout(Duration::from_secs(5)).unwrap_or(Err(RpcError::Timeout))
}

/// Puts `key` at the leader, found by following `NotLeader` answers (starting at `*guess`,
/// an index into `nodes`); retries until acknowledged or [`DEADLINE`].
fn put(nodes: &[Node], guess: &mut usize, key: &Bytes, value: &Bytes) {
    let deadline = Instant::now() + DEADLINE;
    let mut last = None;
    while Instant::now() < deadline {
        let node = &nodes[*guess];
        let Some(running) = node.running.as_ref() else {
            *guess = (*guess + 1) % nodes.len();
            continue;
        };
        let command = KvCommand::RawPut(RawPutRequest { key: key.clone(), value: value.clone() });
        match call(&running.system.handle(), StoreId(node.id), command) {
            Ok(KvResponse::RawPut) => return,
            Ok(other) => panic!("unexpected answer to a put: {other:?}"),
            Err(RpcError::NotLeader { leader: Some(leader), .. })
                if leader.store_id.0 != node.id =>
            {
                *guess = nodes.iter().position(|n| n.id == leader.store_id.0).unwrap();
                // The named leader may be down: the next loop moves on if so.
                last = Some(RpcError::NotLeader { range: RangeId(1), leader: Some(leader) });
            }
            Err(error) => {
                last = Some(error);
                *guess = (*guess + 1) % nodes.len();
                std::thread::sleep(POLL);
            }
        }
    }
    panic!("put of {key:?} not acknowledged by the deadline; last answer {last:?}");
}

/// The store currently leading range 1, as the put loop found it.
fn leader(nodes: &[Node], guess: &mut usize) -> usize {
    put(nodes, guess, &Bytes::from_static(b"leader-probe"), &Bytes::from_static(b"x"));
    *guess
}

/// Gets `key` from node `leader` by a KV RPC sent from node `via` over QUIC (through
/// [`StoreRpcHandler::on_rpc`]); retries retryable failures until [`DEADLINE`].
fn rpc_get(rt: &Runtime, via: &Running, leader: StoreId, key: &Bytes) -> Option<Bytes> {
    let deadline = Instant::now() + DEADLINE;
    let mut last = None;
    while Instant::now() < deadline {
        let body = RpcRequestBody::Kv(request(
            leader,
            KvCommand::RawGet(RawGetRequest { key: key.clone() }),
        ));
        let answer = rt.block_on(via.transport.rpc(node_of(leader), body, Duration::from_secs(5)));
        match answer.map(|response| response.result) {
            Ok(RpcResult::Ok(RpcResponseBody::Kv(KvResponse::RawGet { value }))) => return value,
            Ok(other) => last = Some(format!("{other:?}")),
            Err(error) => last = Some(error.to_string()),
        }
        std::thread::sleep(POLL);
    }
    panic!("get of {key:?} failed until the deadline; last answer {last:?}");
}

fn key(n: usize) -> Bytes {
    Bytes::from(format!("key-{n:04}"))
}

fn value(n: usize) -> Bytes {
    Bytes::from(format!("value-{n}"))
}

#[test]
fn writes_survive_a_follower_restart_over_quic_and_rocksdb() {
    let started = Instant::now();
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let mut nodes: Vec<Node> =
        (1..=3).map(|id| Node { id, dir: tempfile::tempdir().unwrap(), running: None }).collect();
    for node in &mut nodes {
        node.running = Some(start(&rt, certs.path(), node.id, node.dir.path(), true));
    }
    mesh(&nodes);

    let mut guess = 0;
    for n in 0..200 {
        put(&nodes, &mut guess, &key(n), &value(n));
    }
    let leader_index = leader(&nodes, &mut guess);
    eprintln!(
        "200 puts acknowledged after {:?}; leader store {}",
        started.elapsed(),
        nodes[leader_index].id
    );

    // Stop a follower: store, engines and transport.
    let follower = (leader_index + 1) % nodes.len();
    stop(&rt, nodes[follower].running.take().unwrap());
    for n in 200..300 {
        put(&nodes, &mut guess, &key(n), &value(n));
    }
    eprintln!(
        "300 puts acknowledged after {:?} (store {} down)",
        started.elapsed(),
        nodes[follower].id
    );

    // Reopen it from its directory on a new port; everyone learns the new address.
    let id = nodes[follower].id;
    nodes[follower].running = Some(start(&rt, certs.path(), id, nodes[follower].dir.path(), false));
    mesh(&nodes);

    // The restarted store's own RocksDB catches up with every acknowledged key.
    let deadline = Instant::now() + DEADLINE;
    let restarted = nodes[follower].running();
    let missing = |kv: &RocksKvEngine| {
        (0..300)
            .filter(|&n| {
                kv.get(Cf::Default, &keys::data_key(&key(n))).unwrap().as_deref()
                    != Some(&value(n)[..])
            })
            .count()
    };
    loop {
        let count = missing(&restarted.kv);
        if count == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "restarted store still misses {count} keys");
        std::thread::sleep(POLL);
    }
    eprintln!("restarted store {id} caught up after {:?}", started.elapsed());

    // Every acknowledged key reads back through the leader, by KV RPC over QUIC from
    // another node.
    let leader_index = leader(&nodes, &mut guess);
    let leader_store = StoreId(nodes[leader_index].id);
    let via = &nodes[(leader_index + 1) % nodes.len()];
    for n in 0..300 {
        assert_eq!(rpc_get(&rt, via.running(), leader_store, &key(n)), Some(value(n)), "key {n}");
    }

    for node in &mut nodes {
        if let Some(running) = node.running.take() {
            stop(&rt, running);
        }
    }
    eprintln!("test done in {:?}", started.elapsed());
}

/// Sends an admin request to a store's mailbox and waits for the answer.
fn admin(handle: &StoreHandle, request: StoreAdminRequest) -> Result<StoreAdminResponse, RpcError> {
    let (sender, receiver) = mpsc::channel();
    handle.admin(
        request,
        Box::new(move |result| {
            let _ = sender.send(result);
        }),
    );
    receiver.recv_timeout(Duration::from_secs(5)).unwrap_or(Err(RpcError::Timeout))
}

/// Applies one membership change at the leader (`nodes[*guess]` after a put finds it),
/// retrying retryable refusals until [`DEADLINE`]; returns the new descriptor.
fn change(nodes: &[Node], guess: &mut usize, change: ReplicaChange) -> RangeDescriptor {
    let deadline = Instant::now() + DEADLINE;
    let mut last = None;
    while Instant::now() < deadline {
        let leader = leader(nodes, guess);
        let handle = nodes[leader].running().system.handle();
        // The current epoch comes back with an EpochNotMatch, as a client would learn it.
        let stale = StoreAdminRequest::ChangeReplicas {
            range: RangeId(1),
            epoch: RangeEpoch::default(),
            changes: vec![change],
        };
        let epoch = match admin(&handle, stale) {
            Err(RpcError::EpochNotMatch { ranges }) => ranges[0].epoch,
            other => {
                last = Some(format!("{other:?}"));
                continue;
            }
        };
        let request =
            StoreAdminRequest::ChangeReplicas { range: RangeId(1), epoch, changes: vec![change] };
        match admin(&handle, request) {
            Ok(StoreAdminResponse::ChangeReplicas { descriptor }) => return descriptor,
            other => last = Some(format!("{other:?}")),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{change:?} not applied by the deadline; last answer {last:?}");
}

/// Waits until `kv` holds exactly the keys `present` with their values and none of
/// `absent`.
fn wait_for_keys(kv: &RocksKvEngine, present: std::ops::Range<usize>, what: &str) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let missing = present
            .clone()
            .filter(|&n| {
                kv.get(Cf::Default, &keys::data_key(&key(n))).unwrap().as_deref()
                    != Some(&value(n)[..])
            })
            .count();
        if missing == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: still {missing} keys missing");
        std::thread::sleep(POLL);
    }
}

#[test]
fn a_store_joins_by_snapshot_and_a_voter_leaves_over_quic_and_rocksdb() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let started = Instant::now();
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let certs = tempfile::tempdir().unwrap();
    let mut nodes: Vec<Node> =
        (1..=4).map(|id| Node { id, dir: tempfile::tempdir().unwrap(), running: None }).collect();
    for node in &mut nodes {
        node.running = Some(start(&rt, certs.path(), node.id, node.dir.path(), true));
    }
    mesh(&nodes);
    let mut guess = 0;
    for n in 0..300 {
        put(&nodes, &mut guess, &key(n), &value(n));
    }

    // Store 4 holds nothing; as a learner it gets the range by snapshot.
    let descriptor = change(
        &nodes,
        &mut guess,
        ReplicaChange::AddLearner { id: ReplicaId(4), store_id: StoreId(4) },
    );
    assert_eq!(descriptor.replica(ReplicaId(4)).unwrap().role, ReplicaRole::Learner);
    wait_for_keys(&nodes[3].running().kv, 0..300, "the learner on store 4");
    eprintln!("store 4 caught up by snapshot after {:?}", started.elapsed());
    let received = nodes[3].dir.path().join("snapshots");
    let deadline = Instant::now() + DEADLINE;
    while std::fs::read_dir(&received).unwrap().count() > 0 {
        assert!(Instant::now() < deadline, "received snapshot files are never deleted");
        std::thread::sleep(POLL);
    }

    // Promote it (through a joint configuration), then demote and remove a voter that does
    // not lead.
    let descriptor = change(&nodes, &mut guess, ReplicaChange::Promote { id: ReplicaId(4) });
    assert!(descriptor.replica(ReplicaId(4)).unwrap().role.is_voter());
    let leader_store = nodes[leader(&nodes, &mut guess)].id;
    let leaving = (1..=3).find(|id| *id != leader_store).unwrap();
    change(&nodes, &mut guess, ReplicaChange::Demote { id: ReplicaId(leaving) });
    let descriptor = change(&nodes, &mut guess, ReplicaChange::Remove { id: ReplicaId(leaving) });
    assert!(descriptor.replica(ReplicaId(leaving)).is_none());
    assert_eq!(descriptor.replicas.iter().filter(|r| r.role == ReplicaRole::Voter).count(), 3);

    // The removed store deletes the range's data; writes go on and reach store 4.
    let removed_kv = nodes[(leaving - 1) as usize].running().kv.clone();
    let deadline = Instant::now() + DEADLINE;
    while removed_kv.get(Cf::Default, &keys::data_key(&key(0))).unwrap().is_some() {
        assert!(Instant::now() < deadline, "store {leaving} kept the removed replica's data");
        std::thread::sleep(POLL);
    }
    for n in 300..350 {
        put(&nodes, &mut guess, &key(n), &value(n));
    }
    wait_for_keys(&nodes[3].running().kv, 0..350, "store 4 as a voter");
    eprintln!("membership changes done after {:?}", started.elapsed());
    drop(removed_kv);
    for node in &mut nodes {
        if let Some(running) = node.running.take() {
            stop(&rt, running);
        }
    }
}
