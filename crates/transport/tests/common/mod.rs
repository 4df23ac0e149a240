//! Helpers shared by the transport's integration tests: real quinn endpoints on loopback,
//! dev certificates in a temporary directory, a recording handler, and deadline-bounded
//! waits (no fixed sleeps).
#![allow(dead_code, clippy::unwrap_used, clippy::type_complexity)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tessera_transport::tls::{NodeTls, TlsSource};
use tessera_transport::{BoxFuture, Handler, SnapshotReceiver, Transport, TransportConfig};
use tessera_wire::ids::{NodeId, RangeId, StoreId};
use tessera_wire::placement::{PlacementRequest, PlacementResponse};
use tessera_wire::raft::{Entry, EntryKind, LogIndex, Message, MessageKind, ReplicaId, Term};
use tessera_wire::rpc::{RpcRequest, RpcRequestBody, RpcResponseBody, RpcResult};
use tessera_wire::transport::{RaftEnvelope, SnapshotHeader, SnapshotStatus};
use tokio::sync::Notify;

/// Every wait in the tests ends by this deadline.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// What a node's handler saw.
#[derive(Debug, Default)]
pub struct Recorder {
    pub raft: Mutex<Vec<(NodeId, RaftEnvelope)>>,
    pub snapshots: Mutex<Vec<(NodeId, SnapshotHeader, Vec<u8>, Option<String>)>>,
    pub changed: Notify,
    /// `AllocId` RPCs started, being served now, and the most served at once.
    pub rpcs: Mutex<RpcCounts>,
}

/// See [`Recorder::rpcs`].
#[derive(Debug, Default, Clone, Copy)]
pub struct RpcCounts {
    pub started: usize,
    pub in_flight: usize,
    pub in_flight_max: usize,
}

impl Recorder {
    pub fn raft_from(&self, from: NodeId) -> Vec<RaftEnvelope> {
        self.raft.lock().iter().filter(|(f, _)| *f == from).map(|(_, e)| e.clone()).collect()
    }

    pub fn raft_count(&self) -> usize {
        self.raft.lock().len()
    }

    /// Waits (at most [`DEADLINE`]) until `condition` holds.
    pub async fn wait_for(&self, what: &str, mut condition: impl FnMut(&Self) -> bool) {
        let result = tokio::time::timeout(DEADLINE, async {
            loop {
                let notified = self.changed.notified();
                if condition(self) {
                    return;
                }
                // Re-check at least every 20 ms in case a change raced the registration.
                let _ = tokio::time::timeout(Duration::from_millis(20), notified).await;
            }
        })
        .await;
        assert!(result.is_ok(), "timed out waiting for {what}");
    }
}

/// A handler recording everything; `AllocId { count }` RPCs sleep `count` ms and answer
/// `AllocId { first: count, count }`.
#[derive(Debug, Default)]
pub struct TestHandler {
    pub recorder: Arc<Recorder>,
}

impl Handler for TestHandler {
    fn on_raft(&self, from: NodeId, envelopes: Vec<RaftEnvelope>) {
        self.recorder.raft.lock().extend(envelopes.into_iter().map(|e| (from, e)));
        self.recorder.changed.notify_waiters();
    }

    fn on_rpc(&self, _from: NodeId, request: RpcRequest) -> BoxFuture<RpcResult> {
        let recorder = self.recorder.clone();
        Box::pin(async move {
            match request.body {
                RpcRequestBody::Placement(PlacementRequest::AllocId { count }) => {
                    {
                        let mut rpcs = recorder.rpcs.lock();
                        rpcs.started += 1;
                        rpcs.in_flight += 1;
                        rpcs.in_flight_max = rpcs.in_flight_max.max(rpcs.in_flight);
                    }
                    recorder.changed.notify_waiters();
                    tokio::time::sleep(Duration::from_millis(count.into())).await;
                    recorder.rpcs.lock().in_flight -= 1;
                    RpcResult::Ok(RpcResponseBody::Placement(PlacementResponse::AllocId {
                        first: count.into(),
                        count,
                    }))
                }
                other => RpcResult::Err(tessera_wire::errors::RpcError::InvalidRequest {
                    message: format!("{other:?}"),
                }),
            }
        })
    }

    fn on_snapshot(
        &self,
        from: NodeId,
        header: SnapshotHeader,
        mut chunks: SnapshotReceiver,
    ) -> BoxFuture<SnapshotStatus> {
        let recorder = self.recorder.clone();
        Box::pin(async move {
            let mut data = Vec::new();
            let mut error = None;
            while let Some(chunk) = chunks.next().await {
                match chunk {
                    Ok(chunk) => {
                        data.extend_from_slice(&chunk.data);
                        if chunk.last {
                            break;
                        }
                    }
                    Err(e) => {
                        error = Some(e.to_string());
                        break;
                    }
                }
            }
            let status = match &error {
                None => SnapshotStatus::Received,
                Some(reason) => SnapshotStatus::Rejected { reason: reason.clone() },
            };
            recorder.snapshots.lock().push((from, header, data, error));
            recorder.changed.notify_waiters();
            status
        })
    }
}

pub const CLUSTER: u64 = 7;

/// A test configuration for node `id` with certificates from the dev directory `dir`.
pub fn config(dir: &Path, id: u64) -> TransportConfig {
    let tls =
        NodeTls::load(&TlsSource::DevGenerated { dir: dir.to_owned() }, &format!("node-{id}"))
            .unwrap();
    let mut config =
        TransportConfig::new(NodeId(id), StoreId(id), CLUSTER, "127.0.0.1:0".parse().unwrap(), tls);
    config.reconnect_backoff_min = Duration::from_millis(20);
    config.reconnect_backoff_max = Duration::from_millis(200);
    config
}

/// A started node and its recorder.
pub struct TestNode {
    pub transport: Transport,
    pub recorder: Arc<Recorder>,
    pub addr: SocketAddr,
}

pub async fn start(config: TransportConfig) -> TestNode {
    let recorder = Arc::new(Recorder::default());
    let handler = Arc::new(TestHandler { recorder: recorder.clone() });
    let transport = Transport::start(config, handler).await.unwrap();
    let addr = transport.local_addr().unwrap();
    TestNode { transport, recorder, addr }
}

/// Tells every node the others' addresses.
pub fn mesh(nodes: &[&TestNode]) {
    for a in nodes {
        for b in nodes {
            if a.transport.node_id() != b.transport.node_id() {
                a.transport.set_peer(b.transport.node_id(), b.addr);
            }
        }
    }
}

/// An append of one 64-byte entry at `index` for `range`, store `from` to store `to`.
pub fn append(range: u64, from: u64, to: u64, index: u64) -> RaftEnvelope {
    let mut message = Message::new(MessageKind::Append, ReplicaId(from), ReplicaId(to), Term(1));
    message.index = LogIndex(index - 1);
    message.log_term = Term(1);
    message.entries = vec![Entry {
        term: Term(1),
        index: LogIndex(index),
        kind: EntryKind::Normal,
        data: Bytes::from(vec![7u8; 64]),
    }];
    RaftEnvelope {
        range: RangeId(range),
        from_store: StoreId(from),
        to_store: StoreId(to),
        message,
    }
}

/// A coalescable heartbeat of `range`.
pub fn heartbeat(range: u64, from: u64, to: u64) -> RaftEnvelope {
    let mut message = Message::new(MessageKind::Heartbeat, ReplicaId(from), ReplicaId(to), Term(3));
    message.commit = LogIndex(range);
    RaftEnvelope {
        range: RangeId(range),
        from_store: StoreId(from),
        to_store: StoreId(to),
        message,
    }
}

/// An RPC body that makes the test handler sleep `ms`.
pub fn sleepy(ms: u32) -> RpcRequestBody {
    RpcRequestBody::Placement(PlacementRequest::AllocId { count: ms })
}
