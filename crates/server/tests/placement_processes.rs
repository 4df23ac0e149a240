//! Real `tessera placement` and `tessera store` processes on loopback (RocksDB, QUIC).
//!
//! - A placement group of three: its leader is killed with SIGKILL twice; another member
//!   serves within a few election timeouts, and every timestamp handed out is above every
//!   earlier one, every id unique.
//! - A placement member and stores: the first store bootstraps the cluster, the ranges
//!   split and get three replicas spread over the stores, leaders balance; a store is
//!   killed and, `max_store_down` later, every range is back to three replicas on the live
//!   stores; a rule pinning `[eu/, eu0)` to `region=eu` moves those ranges' replicas and
//!   leaders there and leaves the other ranges with three replicas.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tessera_client::placement::PlacementRpc;
use tessera_transport::tls::{NodeTls, TlsSource};
use tessera_transport::{Handler, Transport, TransportConfig};
use tessera_wire::errors::RpcError;
use tessera_wire::ids::{NodeId, RangeId, StoreId};
use tessera_wire::placement::{
    ConstraintOp, LabelConstraint, OperatorStep, PlacementRequest, PlacementResponse,
    PlacementRule, RangeRoute,
};
use tessera_wire::range::ReplicaRole;
use tessera_wire::timestamp::Timestamp;
use tessera_wire::transport::RaftEnvelope;

use common::{Process, free_port, placement_args, spawn, store_args};

const CLUSTER_ID: u64 = 9;
const POLL: Duration = Duration::from_millis(50);
const CLIENT: u64 = 900;

/// The test's node: calls, serves nothing.
struct ClientNode;

impl Handler for ClientNode {
    fn on_raft(&self, _from: NodeId, _envelopes: Vec<RaftEnvelope>) {}
}

/// The test's placement client.
struct Client {
    runtime: tokio::runtime::Runtime,
    rpc: PlacementRpc,
}

impl Client {
    fn new(certs: &Path, members: &[(u64, SocketAddr)]) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let tls = NodeTls::load(
            &TlsSource::DevGenerated { dir: certs.to_owned() },
            &format!("client-{CLIENT}"),
        )
        .unwrap();
        let mut config = TransportConfig::new(
            NodeId(CLIENT),
            StoreId(CLIENT),
            CLUSTER_ID,
            "127.0.0.1:0".parse().unwrap(),
            tls,
        );
        config.reconnect_backoff_min = Duration::from_millis(20);
        config.reconnect_backoff_max = Duration::from_millis(200);
        config.connect_timeout = Duration::from_secs(1);
        let transport =
            Arc::new(runtime.block_on(Transport::start(config, Arc::new(ClientNode))).unwrap());
        for (id, addr) in members {
            transport.set_peer(NodeId(*id), *addr);
        }
        let rpc = PlacementRpc::new(transport, members.iter().map(|(id, _)| NodeId(*id)).collect());
        Self { runtime, rpc }
    }

    fn call(&self, request: PlacementRequest) -> Result<PlacementResponse, RpcError> {
        self.runtime.block_on(self.rpc.call(request, Duration::from_secs(20)))
    }

    fn timestamps(&self, count: u32) -> (Timestamp, u32) {
        match self.call(PlacementRequest::GetTimestamp { count }) {
            Ok(PlacementResponse::GetTimestamp { first, count }) => (first, count),
            other => panic!("timestamps: {other:?}"),
        }
    }

    fn leader(&self) -> NodeId {
        match self.call(PlacementRequest::ClusterStatus) {
            Ok(PlacementResponse::ClusterStatus { status }) => status.leader,
            other => panic!("status: {other:?}"),
        }
    }

    fn routes(&self) -> Vec<RangeRoute> {
        match self.call(PlacementRequest::ScanRanges {
            start_key: Bytes::new(),
            end_key: Bytes::new(),
            limit: 1_000,
        }) {
            Ok(PlacementResponse::ScanRanges { routes }) => routes,
            other => panic!("scan: {other:?}"),
        }
    }

    fn route(&self, key: &[u8]) -> RangeRoute {
        match self.call(PlacementRequest::GetRangeByKey { key: Bytes::copy_from_slice(key) }) {
            Ok(PlacementResponse::GetRangeByKey { route }) => route,
            other => panic!("route: {other:?}"),
        }
    }

    /// Waits until `done` holds for the ranges, printing them if it never does.
    fn wait_ranges(
        &self,
        what: &str,
        deadline: Duration,
        done: impl Fn(&[RangeRoute]) -> bool,
    ) -> Duration {
        let started = Instant::now();
        loop {
            let routes = self.routes();
            if done(&routes) {
                return started.elapsed();
            }
            if started.elapsed() > deadline {
                for route in &routes {
                    eprintln!("{route:?}");
                }
                panic!("{what}: not within {deadline:?}");
            }
            std::thread::sleep(POLL);
        }
    }
}

#[test]
fn the_placement_group_survives_losing_its_leader() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let members: Vec<(u64, SocketAddr)> = (101..=103).map(|id| (id, free_port())).collect();
    let mut processes: BTreeMap<u64, Process> = members
        .iter()
        .map(|(id, _)| {
            (*id, spawn(&placement_args(CLUSTER_ID, *id, &members, dir.path(), &certs, &[])))
        })
        .collect();
    let client = Client::new(&certs, &members);
    let mut last = Timestamp::ZERO;
    let mut ids = BTreeSet::new();
    let mut take = |client: &Client, last: &mut Timestamp| {
        let (first, count) = client.timestamps(5);
        assert!(first > *last, "timestamp {first:?} after {last:?}");
        *last = Timestamp(first.0 + u64::from(count) - 1);
        match client.call(PlacementRequest::AllocId { count: 3 }) {
            Ok(PlacementResponse::AllocId { first, count }) => {
                for id in first..first + u64::from(count) {
                    assert!(ids.insert(id), "id {id} handed out twice");
                }
            }
            other => panic!("ids: {other:?}"),
        }
    };
    for round in 0..2 {
        for _ in 0..100 {
            take(&client, &mut last);
        }
        let leader = client.leader();
        processes.remove(&leader.0).unwrap().kill();
        let killed = Instant::now();
        // Ask the survivors themselves (a client still waiting on the dead leader would
        // measure its own attempt timeout): one of them serves as leader.
        let survivors: Vec<u64> =
            members.iter().map(|(id, _)| *id).filter(|id| *id != leader.0).collect();
        let took = loop {
            let serving = survivors.iter().any(|id| {
                let direct = PlacementRpc::new(client.rpc.transport().clone(), vec![NodeId(*id)]);
                let status = client.runtime.block_on(
                    direct.call(PlacementRequest::ClusterStatus, Duration::from_millis(200)),
                );
                matches!(status, Ok(PlacementResponse::ClusterStatus { status }) if status.leader.0 == *id)
            });
            if serving {
                break killed.elapsed();
            }
            assert!(killed.elapsed() < Duration::from_secs(20), "no new leader");
        };
        take(&client, &mut last);
        eprintln!(
            "round {round}: leader {leader} killed; a new leader served after {took:?}, the \
             client after {:?}",
            killed.elapsed()
        );
        // An election timeout is 10–20 ticks of 20 ms: a few of them, with room for
        // process scheduling on a loaded machine.
        assert!(took < Duration::from_secs(5), "no new leader within {took:?}");
        assert_ne!(client.leader(), leader);
        for _ in 0..100 {
            take(&client, &mut last);
        }
        processes.insert(
            leader.0,
            spawn(&placement_args(CLUSTER_ID, leader.0, &members, dir.path(), &certs, &[])),
        );
    }
    // Throughput of one caller, for orientation (the bench measures it properly).
    let started = Instant::now();
    let mut served = 0u64;
    while started.elapsed() < Duration::from_millis(500) {
        take(&client, &mut last);
        served += 1;
    }
    eprintln!("{served} timestamp+id round trips in {:?}", started.elapsed());
}

fn replicas_on(route: &RangeRoute) -> BTreeSet<u64> {
    route.descriptor.replicas.iter().map(|replica| replica.store_id.0).collect()
}

fn voters_on(route: &RangeRoute) -> BTreeSet<u64> {
    route
        .descriptor
        .replicas
        .iter()
        .filter(|replica| replica.role == ReplicaRole::Voter)
        .map(|replica| replica.store_id.0)
        .collect()
}

#[test]
fn stores_bootstrap_spread_get_repaired_and_follow_rules() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let members = vec![(201, free_port())];
    let _placement = spawn(&placement_args(
        CLUSTER_ID,
        201,
        &members,
        dir.path(),
        &certs,
        &["--max-store-down-secs", "3", "--location-labels", "zone"],
    ));
    let client = Client::new(&certs, &members);
    let labels = |store: u64| -> Vec<String> {
        let region = if store <= 2 { "us" } else { "eu" };
        vec![format!("region={region}"), format!("zone=z{store}")]
    };
    let start_store = |store: u64| {
        let labels = labels(store);
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        spawn(&store_args(CLUSTER_ID, store, free_port(), &members, &labels, dir.path(), &certs))
    };
    // Store 1 creates the cluster; 2 to 4 join it holding nothing.
    let mut stores: BTreeMap<u64, Process> = BTreeMap::new();
    stores.insert(1, start_store(1));
    for store in 2..=4 {
        stores.insert(store, start_store(store));
    }
    // Split into five ranges by hand (operators through the placement driver).
    for key in [&b"c"[..], b"f", b"m", b"t"] {
        let route = client.route(key);
        client
            .call(PlacementRequest::AddOperator {
                range: route.descriptor.id,
                steps: vec![OperatorStep::Split { keys: vec![Bytes::copy_from_slice(key)] }],
            })
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while client.route(key).descriptor.start_key.as_ref() != key {
            assert!(Instant::now() < deadline, "split at {key:?} never happened");
            std::thread::sleep(POLL);
        }
    }
    // Every range gets three voters on distinct stores, and leaders spread.
    let took = client.wait_ranges(
        "three replicas each, leaders spread",
        Duration::from_secs(120),
        |routes| {
            let mut leaders: BTreeMap<u64, usize> = BTreeMap::new();
            for route in routes {
                if let Some(leader) = route.leader {
                    *leaders.entry(leader.store_id.0).or_default() += 1;
                }
            }
            routes.len() == 5
                && routes
                    .iter()
                    .all(|route| voters_on(route).len() == 3 && replicas_on(route).len() == 3)
                && routes.iter().all(|route| route.leader.is_some())
                && leaders.values().all(|count| *count <= 2)
        },
    );
    eprintln!("replicated and balanced in {took:?}");
    // Store 2 dies; after max_store_down (3 s) its replicas are rebuilt on the others.
    let killed = Instant::now();
    stores.remove(&2).unwrap().kill();
    client.wait_ranges("repair after a store loss", Duration::from_secs(120), |routes| {
        routes.iter().all(|route| voters_on(route).len() == 3 && !replicas_on(route).contains(&2))
    });
    eprintln!("every range back to 3 replicas {:?} after the kill", killed.elapsed());
    // A fifth store in eu; then the rule pins [eu/, eu0) to eu stores, leaders there too.
    stores.insert(5, start_store(5));
    let eu = vec![LabelConstraint {
        key: "region".to_owned(),
        op: ConstraintOp::In,
        values: vec!["eu".to_owned()],
    }];
    client
        .call(PlacementRequest::PutRule {
            rule: PlacementRule {
                id: "eu".to_owned(),
                start_key: Bytes::from_static(b"eu/"),
                end_key: Bytes::from_static(b"eu0"),
                voters: 3,
                learners: 0,
                voter_constraints: eu.clone(),
                learner_constraints: vec![],
                leader_preference: eu,
                location_labels: vec![],
            },
        })
        .unwrap();
    let eu_stores: BTreeSet<u64> = [3, 4, 5].into();
    let took = client.wait_ranges("the eu rule followed", Duration::from_secs(120), |routes| {
        let eu_range = routes.iter().find(|route| route.descriptor.start_key.as_ref() == b"eu/");
        eu_range.is_some_and(|route| {
            route.descriptor.end_key.as_ref() == b"eu0"
                && voters_on(route) == eu_stores
                && replicas_on(route) == eu_stores
                && route.leader.is_some_and(|leader| eu_stores.contains(&leader.store_id.0))
        }) && routes
            .iter()
            .filter(|route| route.descriptor.start_key.as_ref() != b"eu/")
            .all(|route| voters_on(route).len() == 3 && !replicas_on(route).contains(&2))
    });
    eprintln!("rule followed in {took:?}");
    let ranges: Vec<RangeId> = client.routes().iter().map(|route| route.descriptor.id).collect();
    assert!(ranges.len() >= 7, "{ranges:?}");
}
