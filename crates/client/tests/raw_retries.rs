//! `RawClient`'s retries after an ambiguous failure, against real QUIC transports on loopback.
//!
//! A fake placement node serves one range over all keys with voters on stores 1, 2 and 3,
//! led by store 1; three fake stores count the KV requests they receive. Store 1 (a paused
//! leader) never answers, so every attempt sent to it times out at the client. Checked:
//! writes (put, delete, batch put, delete range) fail at once with an outcome-unknown
//! `Timeout` and are not resent to stores 2 or 3; a get is retried there; with
//! `retry_ambiguous_writes` a put is resent and succeeds; a compare-and-swap is never resent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tessera_client::{ClientConfig, ClientError, RawClient};
use tessera_transport::tls::{NodeTls, TlsSource};
use tessera_transport::{BoxFuture, Handler, Transport, TransportConfig};
use tessera_wire::errors::RpcError;
use tessera_wire::ids::{NodeId, RangeId, StoreId};
use tessera_wire::kv::{KvCommand, KvResponse};
use tessera_wire::placement::{
    ClusterStatus, PlacementMember, PlacementRequest, PlacementResponse, RangeRoute, Store,
    StoreState,
};
use tessera_wire::raft::ReplicaId;
use tessera_wire::range::{RangeDescriptor, RangeEpoch, Replica, ReplicaRole};
use tessera_wire::rpc::{RpcRequest, RpcRequestBody, RpcResponseBody, RpcResult};
use tessera_wire::timestamp::Timestamp;
use tessera_wire::transport::RaftEnvelope;

const CLUSTER: u64 = 12;
/// The placement node's id.
const PLACEMENT: u64 = 10;
/// How long the client waits for one attempt: store 1 never answers, so every attempt sent
/// to it ends after this. Long enough that the first dial of a store (QUIC and TLS) fits
/// in it on a loaded machine, so the request reaches the store before the attempt ends.
const ATTEMPT: Duration = Duration::from_secs(1);
/// How long one call may take overall; a write that is not resent fails well before it.
const REQUEST: Duration = Duration::from_secs(10);

/// The placement driver, as far as connecting and routing need it.
#[derive(Debug)]
struct FakePlacement {
    stores: Vec<Store>,
    route: RangeRoute,
}

impl Handler for FakePlacement {
    fn on_raft(&self, _from: NodeId, _envelopes: Vec<RaftEnvelope>) {}

    fn on_rpc(&self, _from: NodeId, request: RpcRequest) -> BoxFuture<RpcResult> {
        let RpcRequestBody::Placement(request) = request.body else {
            return Box::pin(async {
                RpcResult::Err(RpcError::InvalidRequest { message: "not placement".into() })
            });
        };
        let answer = match request {
            PlacementRequest::ClusterStatus => Ok(PlacementResponse::ClusterStatus {
                status: ClusterStatus {
                    cluster_id: CLUSTER,
                    bootstrapped: true,
                    leader: NodeId(PLACEMENT),
                    members: vec![PlacementMember {
                        node_id: NodeId(PLACEMENT),
                        address: String::new(),
                        voter: true,
                    }],
                    stores: self.stores.clone(),
                    range_count: 1,
                    running_operators: 0,
                    gc_safe_point: Timestamp::ZERO,
                },
            }),
            PlacementRequest::GetRangeByKey { .. } => {
                Ok(PlacementResponse::GetRangeByKey { route: self.route.clone() })
            }
            PlacementRequest::ScanRanges { .. } => {
                Ok(PlacementResponse::ScanRanges { routes: vec![self.route.clone()] })
            }
            PlacementRequest::GetStore { store_id } => {
                match self.stores.iter().find(|store| store.id == store_id) {
                    Some(store) => {
                        Ok(PlacementResponse::GetStore { store: store.clone(), stats: None })
                    }
                    None => Err(RpcError::StoreNotFound { store: store_id }),
                }
            }
            other => Err(RpcError::InvalidRequest { message: format!("{other:?}") }),
        };
        Box::pin(async move {
            match answer {
                Ok(answer) => RpcResult::Ok(RpcResponseBody::Placement(answer)),
                Err(error) => RpcResult::Err(error),
            }
        })
    }
}

/// A store that counts its KV requests and answers them with success, or never (`paused`).
#[derive(Debug)]
struct FakeStore {
    paused: bool,
    kv_requests: AtomicUsize,
}

impl Handler for FakeStore {
    fn on_raft(&self, _from: NodeId, _envelopes: Vec<RaftEnvelope>) {}

    fn on_rpc(&self, _from: NodeId, request: RpcRequest) -> BoxFuture<RpcResult> {
        let RpcRequestBody::Kv(request) = request.body else {
            return Box::pin(async {
                RpcResult::Err(RpcError::InvalidRequest { message: "not kv".into() })
            });
        };
        self.kv_requests.fetch_add(1, Ordering::SeqCst);
        if self.paused {
            // The transport drops this at the request's deadline.
            return Box::pin(std::future::pending());
        }
        let answer = match request.command {
            KvCommand::RawGet(_) => Ok(KvResponse::RawGet { value: None }),
            KvCommand::RawPut(_) => Ok(KvResponse::RawPut),
            KvCommand::RawDelete(_) => Ok(KvResponse::RawDelete),
            KvCommand::RawBatchPut(_) => Ok(KvResponse::RawBatchPut),
            KvCommand::RawDeleteRange(_) => Ok(KvResponse::RawDeleteRange),
            KvCommand::RawCompareAndSwap(_) => {
                Ok(KvResponse::RawCompareAndSwap { succeeded: true, previous: None })
            }
            other => Err(RpcError::InvalidRequest { message: format!("{other:?}") }),
        };
        Box::pin(async move {
            match answer {
                Ok(answer) => RpcResult::Ok(RpcResponseBody::Kv(answer)),
                Err(error) => RpcResult::Err(error),
            }
        })
    }
}

fn transport_config(dir: &Path, id: u64) -> TransportConfig {
    let tls =
        NodeTls::load(&TlsSource::DevGenerated { dir: dir.to_owned() }, &format!("node-{id}"))
            .unwrap();
    TransportConfig::new(NodeId(id), StoreId(id), CLUSTER, "127.0.0.1:0".parse().unwrap(), tls)
}

/// The fake nodes (kept running) and a client connected to them.
struct Cluster {
    _placement: Transport,
    stores: Vec<(Transport, Arc<FakeStore>)>,
    client: RawClient,
}

impl Cluster {
    /// Starts stores 1 (paused), 2 and 3 on nodes 1, 2, 3, the placement node, and a client
    /// with the given `retry_ambiguous_writes`.
    async fn start(dir: &Path, retry_ambiguous_writes: bool) -> Self {
        let mut stores = Vec::new();
        for id in 1..=3 {
            let handler = Arc::new(FakeStore { paused: id == 1, kv_requests: AtomicUsize::new(0) });
            let transport =
                Transport::start(transport_config(dir, id), handler.clone()).await.unwrap();
            stores.push((transport, handler));
        }
        let registrations = stores
            .iter()
            .map(|(transport, _)| Store {
                // Each store runs on the node of the same id.
                id: StoreId(transport.node_id().0),
                node_id: transport.node_id(),
                address: transport.local_addr().unwrap().to_string(),
                labels: Vec::new(),
                state: StoreState::Up,
            })
            .collect();
        let replicas: Vec<Replica> = (1..=3)
            .map(|id| Replica {
                id: ReplicaId(10 + id),
                store_id: StoreId(id),
                role: ReplicaRole::Voter,
            })
            .collect();
        let route = RangeRoute {
            descriptor: RangeDescriptor {
                id: RangeId(1),
                start_key: Bytes::new(),
                end_key: Bytes::new(),
                epoch: RangeEpoch { conf_ver: 1, version: 1 },
                replicas: replicas.clone(),
            },
            leader: Some(replicas[0]),
        };
        let placement = Transport::start(
            transport_config(dir, PLACEMENT),
            Arc::new(FakePlacement { stores: registrations, route }),
        )
        .await
        .unwrap();
        let placement_addr: SocketAddr = placement.local_addr().unwrap();

        let mut config = ClientConfig::new(CLUSTER, dir);
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.attempt_timeout = ATTEMPT;
        config.request_timeout = REQUEST;
        config.backoff_min = Duration::from_millis(5);
        config.backoff_max = Duration::from_millis(50);
        config.retry_ambiguous_writes = retry_ambiguous_writes;
        let client = RawClient::connect(&[(PLACEMENT, placement_addr)], config).await.unwrap();
        Self { _placement: placement, stores, client }
    }

    /// The KV requests stores 1, 2 and 3 received.
    fn kv_requests(&self) -> [usize; 3] {
        let count = |i: usize| self.stores[i].1.kv_requests.load(Ordering::SeqCst);
        [count(0), count(1), count(2)]
    }
}

/// Checks that a write failed after its one attempt timed out, with its outcome unknown,
/// at once rather than at the call's deadline.
#[track_caller]
fn assert_failed_after_one_attempt<T: std::fmt::Debug>(
    result: Result<T, ClientError>,
    expected: &str,
) {
    let error = result.expect_err("the write should have failed");
    assert!(error.outcome_unknown(), "{error:?}");
    match error {
        ClientError::Timeout { operation, attempts: 1, elapsed, .. } => {
            assert_eq!(operation, expected);
            assert!(elapsed >= ATTEMPT, "failed after {elapsed:?}");
            assert!(elapsed < REQUEST / 2, "failed after {elapsed:?}");
        }
        other => panic!("{expected}: expected a timeout after one attempt, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_is_not_resent_after_its_attempt_timed_out() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), false).await;

    assert_failed_after_one_attempt(cluster.client.put("k", "v").await, "put");
    assert_eq!(cluster.kv_requests(), [1, 0, 0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_and_batch_puts_are_not_resent_after_their_attempt_timed_out() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), false).await;
    let client = &cluster.client;

    // A write that is not resent leaves store 1 unsuspected: every call goes to it again.
    assert_failed_after_one_attempt(client.delete("k").await, "delete");
    assert_eq!(cluster.kv_requests(), [1, 0, 0]);
    let pairs = vec![(Bytes::from("a"), Bytes::from("1")), (Bytes::from("b"), Bytes::from("2"))];
    assert_failed_after_one_attempt(client.batch_put(pairs).await, "batch_put");
    assert_eq!(cluster.kv_requests(), [2, 0, 0]);
    assert_failed_after_one_attempt(client.delete_range("a", "z").await, "delete_range");
    assert_eq!(cluster.kv_requests(), [3, 0, 0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_is_retried_on_another_replica() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), false).await;

    assert_eq!(cluster.client.get("k").await.unwrap(), None);
    let [paused, second, third] = cluster.kv_requests();
    assert_eq!(paused, 1, "the leader was tried first");
    assert_eq!(second + third, 1, "then one other replica");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_ambiguous_writes_resends_a_put() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), true).await;

    cluster.client.put("k", "v").await.unwrap();
    let [paused, second, third] = cluster.kv_requests();
    assert_eq!(paused, 1, "the leader was tried first");
    assert_eq!(second + third, 1, "then one other replica");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_swap_is_never_resent() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(dir.path(), true).await;

    let result = cluster.client.compare_and_swap("k", None, Some(Bytes::from("v"))).await;
    assert_failed_after_one_attempt(result, "compare_and_swap");
    assert_eq!(cluster.kv_requests(), [1, 0, 0]);
}
