//! The Rust `RawClient` against real processes on loopback: one placement member and three
//! stores (RocksDB, QUIC). Once the first range has three voters: single-key operations;
//! batches of 200 keys; the key space split into four ranges behind the client's back
//! (batches, scans and range deletes then span them); compare-and-swap; a leader transfer
//! followed transparently; and eight tasks writing while a store is killed with SIGKILL,
//! every write acknowledged and every acknowledged write read back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tessera_client::{ClientConfig, ClientError, RawClient};
use tessera_wire::ids::StoreId;
use tessera_wire::placement::{OperatorStep, PlacementRequest, PlacementResponse, RangeRoute};
use tessera_wire::range::ReplicaRole;

use common::{Process, free_port, placement_args, spawn, store_args};

const CLUSTER_ID: u64 = 13;
const PLACEMENT: u64 = 100;
const POLL: Duration = Duration::from_millis(20);
/// Every wait for the cluster ends by this deadline.
const WAIT: Duration = Duration::from_secs(30);
/// The writers of the kill scenario.
const WRITERS: usize = 8;

fn key(n: usize) -> Bytes {
    Bytes::from(format!("key-{n:03}"))
}

fn value(n: usize) -> Bytes {
    Bytes::from(format!("value-{n}"))
}

/// A placement call that must succeed.
async fn placement(client: &RawClient, request: PlacementRequest) -> PlacementResponse {
    client.placement().call(request, Duration::from_secs(10)).await.unwrap()
}

async fn routes(client: &RawClient) -> Vec<RangeRoute> {
    let request =
        PlacementRequest::ScanRanges { start_key: Bytes::new(), end_key: Bytes::new(), limit: 100 };
    match placement(client, request).await {
        PlacementResponse::ScanRanges { routes } => routes,
        other => panic!("scan ranges: {other:?}"),
    }
}

async fn route(client: &RawClient, key: &Bytes) -> RangeRoute {
    match placement(client, PlacementRequest::GetRangeByKey { key: key.clone() }).await {
        PlacementResponse::GetRangeByKey { route } => route,
        other => panic!("route: {other:?}"),
    }
}

fn voters(route: &RangeRoute) -> BTreeSet<u64> {
    route
        .descriptor
        .replicas
        .iter()
        .filter(|replica| replica.role == ReplicaRole::Voter)
        .map(|replica| replica.store_id.0)
        .collect()
}

/// Polls the placement driver's view until `done` holds; returns how long it took.
async fn wait_until(
    client: &RawClient,
    what: &str,
    done: impl Fn(&[RangeRoute]) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        let routes = routes(client).await;
        if done(&routes) {
            return started.elapsed();
        }
        if started.elapsed() > WAIT {
            for route in &routes {
                eprintln!("{route:?}");
            }
            panic!("{what}: not within {WAIT:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Splits the range holding `at` there, through the placement driver, and waits for it.
async fn split(client: &RawClient, at: &Bytes) -> Duration {
    let range = route(client, at).await.descriptor.id;
    let steps = vec![OperatorStep::Split { keys: vec![at.clone()] }];
    placement(client, PlacementRequest::AddOperator { range, steps }).await;
    let started = Instant::now();
    while route(client, at).await.descriptor.start_key != *at {
        assert!(started.elapsed() < WAIT, "split at {at:?} never happened");
        tokio::time::sleep(POLL).await;
    }
    started.elapsed()
}

#[test]
fn raw_client_routes_retries_and_survives_a_store_kill() {
    let test_started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let members: Vec<(u64, SocketAddr)> = vec![(PLACEMENT, free_port())];
    let _placement =
        spawn(&placement_args(CLUSTER_ID, PLACEMENT, &members, dir.path(), &certs, &[]));
    // Store 1 creates the cluster; 2 and 3 join it and get replicas from the placement driver.
    let mut stores: Vec<Option<Process>> = (1..=3)
        .map(|id| {
            Some(spawn(&store_args(CLUSTER_ID, id, free_port(), &members, &[], dir.path(), &certs)))
        })
        .collect();
    eprintln!("processes ready after {:?}", test_started.elapsed());

    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap();
    runtime.block_on(async {
        let config = ClientConfig::new(CLUSTER_ID, &certs);
        let client = RawClient::connect(&members, config).await.unwrap();
        let took = wait_until(&client, "range 1 with three voters", |routes| {
            routes.len() == 1 && voters(&routes[0]).len() == 3
        })
        .await;
        eprintln!("three voters after {took:?} more");

        // Single keys.
        let started = Instant::now();
        assert_eq!(client.get("absent").await.unwrap(), None);
        client.put("k", "v1").await.unwrap();
        assert_eq!(client.get("k").await.unwrap(), Some(Bytes::from("v1")));
        client.put(Bytes::from("k"), Bytes::from("v2")).await.unwrap();
        assert_eq!(client.get("k").await.unwrap(), Some(Bytes::from("v2")));
        client.delete("k").await.unwrap();
        assert_eq!(client.get("k").await.unwrap(), None);
        client.delete("never-written").await.unwrap();
        eprintln!("single-key operations in {:?}", started.elapsed());

        // 200 keys in one range.
        let started = Instant::now();
        client.batch_put((0..200).map(|n| (key(n), value(n))).collect()).await.unwrap();
        let mut asked: Vec<Bytes> = (0..200).rev().map(key).collect();
        asked.insert(7, Bytes::from("key-missing"));
        let got = client.batch_get(asked).await.unwrap();
        let expected: Vec<(Bytes, Bytes)> = (0..200).rev().map(|n| (key(n), value(n))).collect();
        assert_eq!(got, expected, "batch_get answers in request order, found keys only");
        eprintln!("batch put and get of 200 keys in {:?}", started.elapsed());

        // Four ranges, split behind the client's back: its cache still has range 1 whole.
        assert_eq!(client.cached_routes().len(), 1);
        for n in [50, 100, 150] {
            let took = split(&client, &key(n)).await;
            eprintln!("split at {:?} seen by the placement driver after {took:?}", key(n));
        }
        let layout = routes(&client).await;
        assert_eq!(layout.len(), 4, "{layout:?}");

        let started = Instant::now();
        let got = client.batch_get((0..200).map(key).collect()).await.unwrap();
        assert_eq!(got, (0..200).map(|n| (key(n), value(n))).collect::<Vec<_>>());
        eprintln!(
            "batch_get across 4 ranges with a stale cache in {:?}; cache now {} ranges",
            started.elapsed(),
            client.cached_routes().len()
        );
        assert_eq!(client.cached_routes().len(), 4);

        // Scans cross range boundaries in key order and stop at the limit.
        let all = client.scan("key-", "key.", 1_000).await.unwrap();
        assert_eq!(all, (0..200).map(|n| (key(n), value(n))).collect::<Vec<_>>());
        let first = client.scan("", "", 120).await.unwrap();
        assert_eq!(first, (0..120).map(|n| (key(n), value(n))).collect::<Vec<_>>());
        let middle = client.scan(key(45), key(155), 1_000).await.unwrap();
        assert_eq!(middle, (45..155).map(|n| (key(n), value(n))).collect::<Vec<_>>());
        let limited = client.scan(key(45), key(155), 7).await.unwrap();
        assert_eq!(limited, (45..52).map(|n| (key(n), value(n))).collect::<Vec<_>>());
        assert!(client.scan(key(10), key(10), 10).await.unwrap().is_empty());
        assert!(matches!(
            client.scan(key(10), key(5), 10).await,
            Err(ClientError::InvalidArgument(_))
        ));

        // A range delete over four ranges.
        client.delete_range(key(40), key(160)).await.unwrap();
        let left: Vec<usize> = (0..40).chain(160..200).collect();
        let got = client.batch_get((0..200).map(key).collect()).await.unwrap();
        assert_eq!(got, left.iter().map(|n| (key(*n), value(*n))).collect::<Vec<_>>());
        let scanned = client.scan("", "", 1_000).await.unwrap();
        assert_eq!(scanned, got);

        // Compare-and-swap.
        let cas = Bytes::from("key-100-cas");
        let (v1, v2) = (Bytes::from("one"), Bytes::from("two"));
        assert_eq!(
            client.compare_and_swap(cas.clone(), None, Some(v1.clone())).await.unwrap(),
            (true, None),
            "created when expected absent"
        );
        assert_eq!(
            client.compare_and_swap(cas.clone(), None, Some(v2.clone())).await.unwrap(),
            (false, Some(v1.clone())),
            "not swapped: it exists"
        );
        assert_eq!(
            client
                .compare_and_swap(cas.clone(), Some(Bytes::from("zero")), Some(v2.clone()))
                .await
                .unwrap(),
            (false, Some(v1.clone())),
            "not swapped: another value"
        );
        assert_eq!(
            client.compare_and_swap(cas.clone(), Some(v1.clone()), Some(v2.clone())).await.unwrap(),
            (true, Some(v1.clone())),
            "swapped"
        );
        assert_eq!(client.get(cas.clone()).await.unwrap(), Some(v2.clone()));
        // Deleting by compare-and-swap: refused on a stale value, done on the current one.
        assert_eq!(
            client.compare_and_swap(cas.clone(), Some(v1.clone()), None).await.unwrap(),
            (false, Some(v2.clone())),
        );
        assert_eq!(client.get(cas.clone()).await.unwrap(), Some(v2.clone()));
        assert_eq!(
            client.compare_and_swap(cas.clone(), Some(v2.clone()), None).await.unwrap(),
            (true, Some(v2.clone())),
        );
        assert_eq!(client.get(cas.clone()).await.unwrap(), None);

        // A leader transfer, followed without the caller noticing.
        let moved = key(120);
        let before = route(&client, &moved).await;
        let old_leader = before.leader.expect("the range has a leader").store_id;
        let new_leader =
            voters(&before).into_iter().map(StoreId).find(|s| *s != old_leader).unwrap();
        client.put(moved.clone(), "before transfer").await.unwrap();
        let range = before.descriptor.id;
        let steps = vec![OperatorStep::TransferLeader { to_store: new_leader }];
        placement(&client, PlacementRequest::AddOperator { range, steps }).await;
        let started = Instant::now();
        while route(&client, &moved).await.leader.map(|leader| leader.store_id) != Some(new_leader)
        {
            assert!(started.elapsed() < WAIT, "leadership never moved to {new_leader}");
            tokio::time::sleep(POLL).await;
        }
        eprintln!("leader {old_leader} -> {new_leader} after {:?}", started.elapsed());
        client.put(moved.clone(), "after transfer").await.unwrap();
        assert_eq!(client.get(moved.clone()).await.unwrap(), Some(Bytes::from("after transfer")));
        let cached = client.cached_routes();
        let cached = cached.iter().find(|cached| cached.descriptor.id == range).unwrap();
        assert_eq!(cached.leader.map(|leader| leader.store_id), Some(new_leader));

        // Eight writers across the four ranges; the store leading `moved`'s range dies.
        let stop = Arc::new(AtomicBool::new(false));
        let mut writers = Vec::new();
        for writer in 0..WRITERS {
            let client = client.clone();
            let stop = stop.clone();
            writers.push(tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                let mut unknown = 0usize;
                let mut slowest = Duration::ZERO;
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let key = Bytes::from(format!("key-{:03}/w{writer}/{n:05}", writer * 25));
                    let value = Bytes::from(format!("{writer}-{n}"));
                    let started = Instant::now();
                    match client.put(key.clone(), value.clone()).await {
                        Ok(()) => acknowledged.push((key, value)),
                        // Sent to the store as it died: not resent, applied or not.
                        Err(error) if error.outcome_unknown() => unknown += 1,
                        Err(error) => panic!("writer {writer}, write {n}: {error}"),
                    }
                    slowest = slowest.max(started.elapsed());
                    n += 1;
                }
                (acknowledged, unknown, slowest)
            }));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let victim = new_leader;
        stores[victim.0 as usize - 1].take().unwrap().kill();
        let killed = Instant::now();
        eprintln!("store {victim} killed");
        // Writes go on until every range answers again and then some.
        tokio::time::sleep(Duration::from_secs(5)).await;
        stop.store(true, Ordering::Relaxed);
        let mut acknowledged = Vec::new();
        for writer in writers {
            let (writes, unknown, slowest) = writer.await.unwrap();
            eprintln!(
                "writer: {} writes, {unknown} of unknown outcome, slowest {slowest:?}",
                writes.len()
            );
            assert!(!writes.is_empty());
            acknowledged.extend(writes);
        }
        eprintln!(
            "{} writes acknowledged by 8 writers, store killed {:?} before the end",
            acknowledged.len(),
            killed.elapsed()
        );
        // Every acknowledged write reads back, single and batched.
        let started = Instant::now();
        for (key, value) in acknowledged.iter().step_by(7) {
            assert_eq!(client.get(key.clone()).await.unwrap().as_ref(), Some(value), "{key:?}");
        }
        let keys: Vec<Bytes> = acknowledged.iter().map(|(key, _)| key.clone()).collect();
        let got = client.batch_get(keys).await.unwrap();
        assert_eq!(got, acknowledged, "every acknowledged write reads back");
        eprintln!("read back in {:?}", started.elapsed());
        assert_eq!(client.get(moved.clone()).await.unwrap(), Some(Bytes::from("after transfer")));
    });
    drop(stores);
    eprintln!("test took {:?}", test_started.elapsed());
}
