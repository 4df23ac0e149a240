//! Real `tessera store` processes on loopback with RocksDB and QUIC: the store leading the
//! first range is killed with SIGKILL while clients write, writes continue on the others,
//! the store restarts from its directory and catches up; no acknowledged write is lost.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tessera_transport::tls::{NodeTls, TlsSource};
use tessera_transport::{Handler, Transport, TransportConfig};
use tessera_wire::errors::RpcError;
use tessera_wire::ids::{NodeId, RangeId, StoreId};
use tessera_wire::kv::{
    KvCommand, KvRequest, KvResponse, RawGetRequest, RawPutRequest, ReadMode, RequestContext,
};
use tessera_wire::range::RangeEpoch;
use tessera_wire::rpc::{RpcRequestBody, RpcResponseBody, RpcResult};
use tessera_wire::transport::RaftEnvelope;

const CLUSTER_ID: u64 = 7;
const DEADLINE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(20);

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
    let mut command = Command::new(env!("CARGO_BIN_EXE_tessera"));
    command
        .arg("store")
        .args(["--store-id", &id.to_string(), "--cluster-id", &CLUSTER_ID.to_string()])
        .arg("--data-dir")
        .arg(data.join(format!("store-{id}")))
        .args(["--listen", &addrs[id as usize - 1].to_string()])
        .args(["--initial-stores", "1,2,3", "--tick-ms", "20"])
        .arg("--insecure-dev-certs")
        .arg(certs);
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

fn request(store: u64, command: KvCommand, read_mode: ReadMode) -> KvRequest {
    KvRequest {
        context: RequestContext {
            range: RangeId(1),
            epoch: RangeEpoch { conf_ver: 1, version: 1 },
            store_id: StoreId(store),
            replica: None,
            read_mode,
        },
        command,
    }
}

struct Client {
    runtime: tokio::runtime::Runtime,
    transport: Transport,
    /// The store believed to lead.
    guess: u64,
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
        Self { runtime, transport, guess: 1 }
    }

    fn call(&self, store: u64, command: KvCommand, mode: ReadMode) -> Result<KvResponse, String> {
        let body = RpcRequestBody::Kv(request(store, command, mode));
        let answer =
            self.runtime.block_on(self.transport.rpc(NodeId(store), body, Duration::from_secs(2)));
        match answer.map(|response| response.result) {
            Ok(RpcResult::Ok(RpcResponseBody::Kv(response))) => Ok(response),
            Ok(RpcResult::Err(RpcError::NotLeader { leader: Some(leader), .. })) => {
                Err(format!("leader:{}", leader.store_id))
            }
            Ok(other) => Err(format!("{other:?}")),
            Err(error) => Err(error.to_string()),
        }
    }

    /// Puts at the leader, following `NotLeader`, until acknowledged.
    fn put(&mut self, key: &Bytes, value: &Bytes) {
        let deadline = Instant::now() + DEADLINE;
        let command = KvCommand::RawPut(RawPutRequest { key: key.clone(), value: value.clone() });
        let mut last = String::new();
        while Instant::now() < deadline {
            match self.call(self.guess, command.clone(), ReadMode::Leader) {
                Ok(KvResponse::RawPut) => return,
                Ok(other) => panic!("unexpected answer {other:?}"),
                Err(error) => {
                    if let Some(leader) = error.strip_prefix("leader:") {
                        self.guess = leader.parse().unwrap();
                    } else {
                        self.guess = self.guess % 3 + 1;
                        std::thread::sleep(POLL);
                    }
                    last = error;
                }
            }
        }
        panic!("put of {key:?} never acknowledged; last answer {last}");
    }

    /// Reads `key` from `store` (a follower read by read index when `mode` says so).
    fn get_from(&self, store: u64, key: &Bytes, mode: ReadMode) -> Result<Option<Bytes>, String> {
        match self.call(store, KvCommand::RawGet(RawGetRequest { key: key.clone() }), mode)? {
            KvResponse::RawGet { value } => Ok(value),
            other => panic!("unexpected answer {other:?}"),
        }
    }
}

fn key(n: usize) -> Bytes {
    Bytes::from(format!("key-{n:04}"))
}

fn value(n: usize) -> Bytes {
    Bytes::from(format!("value-{n}"))
}

#[test]
fn killed_leader_restarts_and_catches_up_without_losing_acknowledged_writes() {
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
    let killed = client.guess;
    stores[killed as usize - 1] = None; // SIGKILL
    for n in 100..200 {
        client.put(&key(n), &value(n));
    }
    assert_ne!(client.guess, killed, "a new leader took the writes");
    stores[killed as usize - 1] = Some(spawn(killed, &addrs, dir.path(), &certs));

    // Every acknowledged write reads back from the leader, and from the restarted store by
    // a follower read (read index from the leader, then its own applied state).
    for n in 0..200 {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let leader = client.get_from(client.guess, &key(n), ReadMode::Leader);
            let restarted = client.get_from(killed, &key(n), ReadMode::ReplicaRead);
            if leader == Ok(Some(value(n))) && restarted == Ok(Some(value(n))) {
                break;
            }
            if let Err(error) = &leader
                && let Some(store) = error.strip_prefix("leader:")
            {
                client.guess = store.parse().unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "key {n}: leader answered {leader:?}, restarted store {restarted:?}"
            );
            std::thread::sleep(POLL);
        }
    }
    drop(stores);
}
