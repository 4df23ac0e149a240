//! `PlacementRpc` against real QUIC transports on loopback: three placement "nodes" whose
//! test handlers answer placement RPCs as a leader, as followers pointing at a leader (or at
//! nobody), or as a busy server; a client transport calls them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tessera_client::placement::{PlacementRpc, SUSPECT_FOR};
use tessera_transport::tls::{NodeTls, TlsSource};
use tessera_transport::{BoxFuture, Handler, Transport, TransportConfig};
use tessera_wire::errors::RpcError;
use tessera_wire::ids::{NodeId, StoreId};
use tessera_wire::placement::{PlacementRequest, PlacementResponse};
use tessera_wire::rpc::{
    RpcRequest, RpcRequestBody, RpcResponseBody, RpcResult, StoreAdminResponse,
};
use tessera_wire::timestamp::Timestamp;
use tessera_wire::transport::RaftEnvelope;

const CLUSTER: u64 = 11;
/// Every call in these tests ends by this deadline.
const DEADLINE: Duration = Duration::from_secs(20);
/// The client's node id.
const CLIENT: u64 = 100;

/// How a test placement node answers.
#[derive(Debug, Clone)]
enum Role {
    /// Answers `GetTimestamp`, `AlreadyBootstrapped` to `Bootstrap`, and
    /// `InvalidRequest` to anything else.
    Leader,
    /// `NotPlacementLeader { leader }`.
    Follower(Option<NodeId>),
    /// `NotPlacementLeader` naming a leader and the address it gives for it.
    FollowerNaming(NodeId, String),
    /// `ServerBusy`.
    Busy,
    /// A store-admin body instead of a placement answer.
    WrongBody,
}

#[derive(Debug)]
struct TestPlacement {
    id: NodeId,
    role: Mutex<Role>,
    calls: AtomicUsize,
}

impl Handler for TestPlacement {
    fn on_raft(&self, _from: NodeId, _envelopes: Vec<RaftEnvelope>) {}

    fn on_rpc(&self, _from: NodeId, request: RpcRequest) -> BoxFuture<RpcResult> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let role = self.role.lock().clone();
        let id = self.id;
        Box::pin(async move {
            let RpcRequestBody::Placement(request) = request.body else {
                return RpcResult::Err(RpcError::InvalidRequest {
                    message: "not placement".into(),
                });
            };
            match (role, request) {
                (Role::Leader, PlacementRequest::GetTimestamp { count }) => {
                    RpcResult::Ok(RpcResponseBody::Placement(PlacementResponse::GetTimestamp {
                        first: Timestamp(id.0 << 20),
                        count,
                    }))
                }
                (Role::Leader, PlacementRequest::Bootstrap { .. }) => {
                    RpcResult::Err(RpcError::AlreadyBootstrapped)
                }
                (Role::Leader, other) => {
                    RpcResult::Err(RpcError::InvalidRequest { message: format!("{other:?}") })
                }
                (Role::Follower(leader), _) => {
                    RpcResult::Err(RpcError::NotPlacementLeader { leader, address: None })
                }
                (Role::FollowerNaming(leader, address), _) => {
                    RpcResult::Err(RpcError::NotPlacementLeader {
                        leader: Some(leader),
                        address: Some(address),
                    })
                }
                (Role::Busy, _) => RpcResult::Err(RpcError::ServerBusy {
                    reason: "test".into(),
                    retry_after_ms: 10,
                }),
                (Role::WrongBody, _) => {
                    RpcResult::Ok(RpcResponseBody::StoreAdmin(StoreAdminResponse::TransferLeader))
                }
            }
        })
    }
}

fn config(dir: &Path, id: u64) -> TransportConfig {
    let tls =
        NodeTls::load(&TlsSource::DevGenerated { dir: dir.to_owned() }, &format!("node-{id}"))
            .unwrap();
    let mut config =
        TransportConfig::new(NodeId(id), StoreId(id), CLUSTER, "127.0.0.1:0".parse().unwrap(), tls);
    config.reconnect_backoff_min = Duration::from_millis(20);
    config.reconnect_backoff_max = Duration::from_millis(200);
    config
}

struct Node {
    transport: Transport,
    handler: Arc<TestPlacement>,
    addr: SocketAddr,
}

impl Node {
    fn calls(&self) -> usize {
        self.handler.calls.load(Ordering::SeqCst)
    }

    fn set_role(&self, role: Role) {
        *self.handler.role.lock() = role;
    }
}

async fn start_node(dir: &Path, id: u64, role: Role) -> Node {
    let handler = Arc::new(TestPlacement {
        id: NodeId(id),
        role: Mutex::new(role),
        calls: AtomicUsize::new(0),
    });
    let transport = Transport::start(config(dir, id), handler.clone()).await.unwrap();
    let addr = transport.local_addr().unwrap();
    Node { transport, handler, addr }
}

/// Three placement nodes 1, 2, 3 with the given roles, and a client over all three.
async fn cluster(dir: &Path, roles: [Role; 3]) -> (Vec<Node>, PlacementRpc) {
    let mut nodes = Vec::new();
    for (id, role) in (1..).zip(roles) {
        nodes.push(start_node(dir, id, role).await);
    }
    let client = Arc::new(
        Transport::start(
            config(dir, CLIENT),
            Arc::new(TestPlacement {
                id: NodeId(CLIENT),
                role: Mutex::new(Role::Busy),
                calls: AtomicUsize::new(0),
            }),
        )
        .await
        .unwrap(),
    );
    for node in &nodes {
        client.set_peer(node.transport.node_id(), node.addr);
    }
    let members = nodes.iter().map(|node| node.transport.node_id()).collect();
    (nodes, PlacementRpc::new(client, members))
}

fn timestamp_from(answer: &PlacementResponse) -> u64 {
    match answer {
        PlacementResponse::GetTimestamp { first, count: 1 } => first.0 >> 20,
        other => panic!("unexpected answer {other:?}"),
    }
}

const GET_TS: PlacementRequest = PlacementRequest::GetTimestamp { count: 1 };

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_the_redirect_and_remembers_the_leader() {
    let dir = tempfile::tempdir().unwrap();
    let to_3 = Role::Follower(Some(NodeId(3)));
    let (nodes, rpc) = cluster(dir.path(), [to_3.clone(), to_3, Role::Leader]).await;
    assert_eq!(rpc.leader_hint(), None);

    let answer = rpc.call(GET_TS, DEADLINE).await.unwrap();
    assert_eq!(timestamp_from(&answer), 3);
    assert_eq!(rpc.leader_hint(), Some(NodeId(3)));
    assert_eq!([nodes[0].calls(), nodes[1].calls(), nodes[2].calls()], [1, 0, 1]);

    // The next call goes straight to the leader.
    let answer = rpc.call(GET_TS, DEADLINE).await.unwrap();
    assert_eq!(timestamp_from(&answer), 3);
    assert_eq!([nodes[0].calls(), nodes[1].calls(), nodes[2].calls()], [1, 0, 2]);
}

/// Node 4, which joined after the client was configured with 1, 2 and 3, leads: 1 and 2
/// name it with its address, 3 knows no leader.
async fn led_by_a_newcomer(dir: &Path) -> (Node, Vec<Node>, PlacementRpc) {
    let newcomer = start_node(dir, 4, Role::Leader).await;
    let to_4 = Role::FollowerNaming(NodeId(4), newcomer.addr.to_string());
    let (nodes, rpc) = cluster(dir, [to_4.clone(), to_4, Role::Follower(None)]).await;
    (newcomer, nodes, rpc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_joined_since_is_reached_at_the_address_a_member_gives() {
    let dir = tempfile::tempdir().unwrap();
    let (newcomer, nodes, rpc) = led_by_a_newcomer(dir.path()).await;

    let answer = rpc.call(GET_TS, DEADLINE).await.unwrap();
    assert_eq!(timestamp_from(&answer), 4);
    assert_eq!(rpc.leader_hint(), Some(NodeId(4)));
    assert_eq!(
        [nodes[0].calls(), nodes[1].calls(), nodes[2].calls(), newcomer.calls()],
        [1, 0, 0, 1]
    );
    // The next call goes straight to it.
    assert_eq!(timestamp_from(&rpc.call(GET_TS, DEADLINE).await.unwrap()), 4);
    assert_eq!(newcomer.calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learned_leader_that_moved_is_followed_to_its_new_address() {
    let dir = tempfile::tempdir().unwrap();
    let (newcomer, nodes, rpc) = led_by_a_newcomer(dir.path()).await;
    assert_eq!(timestamp_from(&rpc.call(GET_TS, DEADLINE).await.unwrap()), 4);

    // Node 4 restarts elsewhere (same id, new port); the members name its new address.
    newcomer.transport.shutdown(Duration::from_secs(2)).await;
    let moved = start_node(dir.path(), 4, Role::Leader).await;
    assert_ne!(moved.addr, newcomer.addr);
    let to_moved = Role::FollowerNaming(NodeId(4), moved.addr.to_string());
    nodes[0].set_role(to_moved.clone());
    nodes[1].set_role(to_moved);

    let started = Instant::now();
    let answer = rpc.call(GET_TS, Duration::from_secs(8)).await.unwrap();
    assert_eq!(timestamp_from(&answer), 4);
    assert_eq!(moved.calls(), 1);
    // The failure at the old address made node 4 suspect; its new address clears that, so
    // the call does not wait the suspicion out.
    assert!(started.elapsed() < SUSPECT_FOR, "took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_named_without_a_usable_address_counts_as_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let nowhere = Role::FollowerNaming(NodeId(4), "not an address".to_owned());
    let (nodes, rpc) = cluster(dir.path(), [nowhere, Role::Leader, Role::Follower(None)]).await;

    let answer = rpc.call(GET_TS, DEADLINE).await.unwrap();
    assert_eq!(timestamp_from(&answer), 2);
    assert_eq!([nodes[0].calls(), nodes[1].calls(), nodes[2].calls()], [1, 1, 0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_hint_tries_the_next_members() {
    let dir = tempfile::tempdir().unwrap();
    let none = Role::Follower(None);
    let (nodes, rpc) = cluster(dir.path(), [none.clone(), none, Role::Leader]).await;

    let answer = rpc.call(GET_TS, DEADLINE).await.unwrap();
    assert_eq!(timestamp_from(&answer), 3);
    assert_eq!(rpc.leader_hint(), Some(NodeId(3)));
    assert_eq!([nodes[0].calls(), nodes[1].calls(), nodes[2].calls()], [1, 1, 1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_member_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let (nodes, rpc) = cluster(dir.path(), [Role::Busy, Role::Leader, Role::Follower(None)]).await;

    let answer = rpc.call(GET_TS, DEADLINE).await.unwrap();
    assert_eq!(timestamp_from(&answer), 2);
    assert_eq!(rpc.leader_hint(), Some(NodeId(2)));
    assert_eq!([nodes[0].calls(), nodes[1].calls(), nodes[2].calls()], [1, 1, 0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_leader_makes_the_client_move_on() {
    let dir = tempfile::tempdir().unwrap();
    let to_3 = Role::Follower(Some(NodeId(3)));
    let (mut nodes, rpc) = cluster(dir.path(), [to_3.clone(), to_3, Role::Leader]).await;
    assert_eq!(timestamp_from(&rpc.call(GET_TS, DEADLINE).await.unwrap()), 3);
    assert_eq!(rpc.leader_hint(), Some(NodeId(3)));

    // Node 3 stops; node 2 takes over and node 1 learns of it.
    let leader = nodes.pop().unwrap();
    leader.transport.shutdown(Duration::from_secs(2)).await;
    nodes[1].set_role(Role::Leader);
    nodes[0].set_role(Role::Follower(Some(NodeId(2))));

    let started = Instant::now();
    let answer = rpc.call(GET_TS, DEADLINE).await.unwrap();
    assert_eq!(timestamp_from(&answer), 2);
    assert_eq!(rpc.leader_hint(), Some(NodeId(2)));
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_error_is_not_retried() {
    let dir = tempfile::tempdir().unwrap();
    let to_3 = Role::Follower(Some(NodeId(3)));
    let (nodes, rpc) = cluster(dir.path(), [to_3.clone(), to_3, Role::Leader]).await;
    let bootstrap = PlacementRequest::Bootstrap {
        store: tessera_wire::placement::Store::default(),
        range: tessera_wire::range::RangeDescriptor::default(),
    };

    let error = rpc.call(bootstrap, DEADLINE).await.unwrap_err();
    assert_eq!(error, RpcError::AlreadyBootstrapped);
    assert_eq!([nodes[0].calls(), nodes[1].calls(), nodes[2].calls()], [1, 0, 1]);
    // The node answered, so it is the leader even though the request failed.
    assert_eq!(rpc.leader_hint(), Some(NodeId(3)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_placement_body_is_an_internal_error() {
    let dir = tempfile::tempdir().unwrap();
    let (nodes, rpc) = cluster(dir.path(), [Role::WrongBody, Role::Leader, Role::Leader]).await;

    let error = rpc.call(GET_TS, DEADLINE).await.unwrap_err();
    assert!(matches!(error, RpcError::Internal { .. }), "{error:?}");
    assert_eq!([nodes[0].calls(), nodes[1].calls(), nodes[2].calls()], [1, 0, 0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gives_up_at_the_deadline_with_the_last_error() {
    let dir = tempfile::tempdir().unwrap();
    let none = Role::Follower(None);
    let (nodes, rpc) = cluster(dir.path(), [none.clone(), none.clone(), none]).await;

    let started = Instant::now();
    let error = rpc.call(GET_TS, Duration::from_millis(500)).await.unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(error, RpcError::NotPlacementLeader { leader: None, address: None });
    assert!(elapsed >= Duration::from_millis(500), "gave up after {elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "gave up after {elapsed:?}");
    // Every member was tried, more than once, with pauses in between.
    assert!(nodes.iter().all(|node| node.calls() >= 1));
    assert!(nodes.iter().map(Node::calls).sum::<usize>() < 40);
    assert_eq!(rpc.leader_hint(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_members_down_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let (mut nodes, rpc) = cluster(dir.path(), [Role::Leader, Role::Leader, Role::Leader]).await;
    while let Some(node) = nodes.pop() {
        node.transport.shutdown(Duration::from_secs(1)).await;
    }

    let started = Instant::now();
    let error = rpc.call(GET_TS, Duration::from_secs(1)).await.unwrap_err();
    let elapsed = started.elapsed();
    assert!(
        matches!(
            error,
            RpcError::Timeout | RpcError::ServerBusy { .. } | RpcError::Internal { .. }
        ),
        "{error:?}"
    );
    assert!(elapsed < Duration::from_secs(4), "gave up after {elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_members_is_an_invalid_request() {
    let dir = tempfile::tempdir().unwrap();
    let transport = Arc::new(
        Transport::start(
            config(dir.path(), CLIENT),
            Arc::new(TestPlacement {
                id: NodeId(CLIENT),
                role: Mutex::new(Role::Busy),
                calls: AtomicUsize::new(0),
            }),
        )
        .await
        .unwrap(),
    );
    let rpc = PlacementRpc::new(transport, Vec::new());
    let error = rpc.call(GET_TS, DEADLINE).await.unwrap_err();
    assert!(matches!(error, RpcError::InvalidRequest { .. }), "{error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_naming_each_other_do_not_spin() {
    let dir = tempfile::tempdir().unwrap();
    let roles = [Role::Follower(Some(NodeId(2))), Role::Follower(Some(NodeId(1))), Role::Leader];
    let (nodes, rpc) = cluster(dir.path(), roles).await;

    let answer = rpc.call(GET_TS, DEADLINE).await.unwrap();
    assert_eq!(timestamp_from(&answer), 3);
    assert_eq!(rpc.leader_hint(), Some(NodeId(3)));
    assert!(nodes[0].calls() + nodes[1].calls() <= 4, "{} {}", nodes[0].calls(), nodes[1].calls());
}
