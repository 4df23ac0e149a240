//! The store and the placement driver, in the simulator with an in-process placement fake:
//! heartbeats carry what they should, scheduling commands move leaders and replicas, and
//! ranges split by size and by load, asking the placement driver for ids and reporting
//! the result.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::cluster::{Cluster, request};
use common::placement::FakePlacement;
use tessera_raft::ReplicaId;
use tessera_store::StoreConfig;
use tessera_wire::errors::RpcError;
use tessera_wire::ids::{RangeId, StoreId};
use tessera_wire::kv::{KvCommand, KvResponse, RawGetRequest, RawPutRequest};
use tessera_wire::placement::{PlacementRequest, ReplicaChange, ReplicaChangeOp, ScheduleCommand};
use tessera_wire::range::{Replica, ReplicaRole};

type Slot = Arc<Mutex<Option<Result<KvResponse, RpcError>>>>;

fn config() -> StoreConfig {
    StoreConfig {
        quiesce_after_ticks: 0,
        store_heartbeat_ticks: 5,
        range_heartbeat_ticks: 5,
        split_check_ticks: 10,
        load_split_qps: 0,
        ..StoreConfig::default()
    }
}

fn connect(cluster: &mut Cluster, fake: &FakePlacement) {
    for node in &mut cluster.nodes {
        node.store.as_mut().unwrap().set_placement(fake.client());
    }
}

/// Sends `command` for `key` to its leader without waiting; the answer lands in the slot.
fn send(cluster: &mut Cluster, key: &Bytes, command: KvCommand) -> Slot {
    assert!(cluster.run_until(2_000, |c| c.leader_of(key).is_some()), "no leader");
    let (store_id, descriptor) = cluster.leader_of(key).unwrap();
    let slot: Slot = Arc::default();
    let answer = slot.clone();
    cluster.store(store_id).unwrap().on_kv_request(
        request(&descriptor, store_id, command),
        Box::new(move |result| *answer.lock().unwrap() = Some(result)),
    );
    slot
}

/// Puts `key`, retrying when a split or leader change races the request (as a client
/// does after refreshing its route).
fn put(cluster: &mut Cluster, key: &Bytes) {
    for _ in 0..20 {
        let command =
            KvCommand::RawPut(RawPutRequest { key: key.clone(), value: Bytes::from("v") });
        let slot = send(cluster, key, command);
        assert!(cluster.run_until(2_000, |_| slot.lock().unwrap().is_some()));
        match slot.lock().unwrap().take().unwrap() {
            Ok(response) => {
                assert_eq!(response, KvResponse::RawPut);
                return;
            }
            Err(RpcError::EpochNotMatch { .. } | RpcError::NotLeader { .. }) => {}
            Err(error) => panic!("put of {key:?}: {error}"),
        }
    }
    panic!("put of {key:?} kept failing");
}

fn key(n: u64) -> Bytes {
    Bytes::from(format!("k{n:03}"))
}

fn ranges(cluster: &mut Cluster) -> usize {
    let mut ids: Vec<RangeId> =
        cluster.replica_data().into_iter().map(|(range, _, _)| range).collect();
    ids.sort();
    ids.dedup();
    ids.len()
}

#[test]
fn heartbeats_report_the_store_and_its_leaders() {
    let mut cluster = Cluster::new(3, 7, config());
    let fake = FakePlacement::new();
    connect(&mut cluster, &fake);
    for n in 0..10 {
        put(&mut cluster, &key(n));
    }
    for _ in 0..40 {
        cluster.step(2);
    }
    let (leader, _) = cluster.leader_of(b"k").unwrap();
    let requests = fake.requests();
    for id in 1..=3 {
        let stats = requests
            .iter()
            .filter_map(|request| match request {
                PlacementRequest::StoreHeartbeat { stats, .. } if stats.store_id == StoreId(id) => {
                    Some(stats)
                }
                _ => None,
            })
            .next_back()
            .unwrap_or_else(|| panic!("no store heartbeat from store {id}"));
        assert_eq!(stats.range_count, 1);
        assert_eq!(stats.leader_count, u32::from(StoreId(id) == leader));
        assert!(stats.capacity_bytes > 0 && stats.interval_ms > 0, "{stats:?}");
    }
    let range_heartbeats: Vec<_> = requests
        .iter()
        .filter_map(|request| match request {
            PlacementRequest::RangeHeartbeat(heartbeat) => Some(heartbeat),
            _ => None,
        })
        .collect();
    assert!(!range_heartbeats.is_empty());
    assert!(range_heartbeats.iter().all(|h| h.leader.unwrap().store_id == leader));
    let written: u64 = range_heartbeats.iter().map(|h| h.written_keys).sum();
    assert!(written >= 10, "written keys reported: {written}");
    assert!(range_heartbeats.last().unwrap().approximate_keys >= 10);
}

#[test]
fn scheduling_commands_move_the_leader_and_add_a_voter_by_snapshot() {
    let mut cluster = Cluster::with_spares(3, 1, 11, config());
    let fake = FakePlacement::new();
    connect(&mut cluster, &fake);
    for n in 0..20 {
        put(&mut cluster, &key(n));
    }
    let (leader, descriptor) = cluster.leader_of(b"k").unwrap();
    let target = descriptor.replicas.iter().find(|r| r.store_id != leader).copied().unwrap();
    fake.script(descriptor.id, ScheduleCommand::TransferLeader { to: target });
    assert!(
        cluster.run_until(2_000, |c| c.leader_of(b"k").is_some_and(|(s, _)| s == target.store_id)),
        "leadership did not move to {target:?}"
    );
    let learner = Replica { id: ReplicaId(50), store_id: StoreId(4), role: ReplicaRole::Learner };
    let add = ReplicaChange { op: ReplicaChangeOp::AddLearner, replica: learner };
    fake.script(descriptor.id, ScheduleCommand::ChangeReplicas { changes: vec![add] });
    assert!(
        cluster.run_until(3_000, |c| {
            c.replicas_of(b"k").iter().any(|(store, _)| *store == StoreId(4))
        }),
        "store 4 never got the range"
    );
    let (_, descriptor) = cluster.leader_of(b"k").unwrap();
    let promote = ReplicaChange { op: ReplicaChangeOp::AddVoter, replica: learner };
    fake.script(descriptor.id, ScheduleCommand::ChangeReplicas { changes: vec![promote] });
    assert!(
        cluster.run_until(3_000, |c| c.leader_of(b"k").is_some_and(|(_, d)| {
            d.replica(ReplicaId(50)).is_some_and(|r| r.role == ReplicaRole::Voter)
        })),
        "the learner was not promoted"
    );
    // The new voter holds every key.
    let data = cluster.replica_data();
    let on_four = data.iter().find(|(_, store, _)| *store == StoreId(4)).unwrap();
    assert_eq!(on_four.2.len(), 20);
}

#[test]
fn ranges_split_by_size_through_placement_ids() {
    let mut cluster = Cluster::new(3, 13, StoreConfig { split_keys: 20, ..config() });
    let fake = FakePlacement::new();
    connect(&mut cluster, &fake);
    for n in 0..50 {
        put(&mut cluster, &key(n));
    }
    assert!(cluster.run_until(3_000, |c| ranges(c) >= 2), "no split");
    assert!(
        cluster
            .run_until(200, |_| fake.requests().iter().any(
                |r| matches!(r, PlacementRequest::ReportSplit { ranges } if ranges.len() == 2)
            )),
        "the split was not reported"
    );
    // New ranges carry the ids placement handed out.
    assert!(cluster.replica_data().iter().any(|(range, _, _)| range.0 > 10_000));
}

#[test]
fn a_hot_range_splits_by_load() {
    let mut cluster = Cluster::new(3, 17, StoreConfig { load_split_qps: 50, ..config() });
    let fake = FakePlacement::new();
    connect(&mut cluster, &fake);
    for n in 0..40 {
        put(&mut cluster, &key(n));
    }
    // Bursts of reads spread over the keys, far above 50 per second (10 ticks of 100 ms).
    let mut split = false;
    for _ in 0..20 {
        let mut slots = Vec::new();
        for n in 0..200 {
            let k = key(n % 40);
            slots.push(send(&mut cluster, &k, KvCommand::RawGet(RawGetRequest { key: k.clone() })));
        }
        cluster.run_until(200, |_| slots.iter().all(|s| s.lock().unwrap().is_some()));
        if ranges(&mut cluster) >= 2 {
            split = true;
            break;
        }
    }
    assert!(split, "the hot range never split");
    // The new range has an id from the placement driver, and the split asked by load
    // (size and key count are far below the thresholds) was reported.
    assert!(cluster.replica_data().iter().any(|(range, _, _)| range.0 > 10_000));
    assert!(
        cluster.run_until(200, |_| fake
            .requests()
            .iter()
            .any(|r| matches!(r, PlacementRequest::ReportSplit { .. }))),
        "the split was not reported"
    );
}

#[test]
fn leader_changes_and_splits_are_reported_at_once() {
    // Periodic range heartbeats practically never: only the immediate ones show.
    let config = StoreConfig { range_heartbeat_ticks: 100_000, split_keys: 20, ..config() };
    let mut cluster = Cluster::new(3, 19, config);
    let fake = FakePlacement::new();
    connect(&mut cluster, &fake);
    put(&mut cluster, &key(0));
    let heartbeats = |fake: &FakePlacement| -> Vec<RangeId> {
        fake.requests()
            .iter()
            .filter_map(|request| match request {
                PlacementRequest::RangeHeartbeat(heartbeat) => Some(heartbeat.descriptor.id),
                _ => None,
            })
            .collect()
    };
    // Leadership was gained after the fake connected (the first election).
    assert!(cluster.run_until(50, |_| heartbeats(&fake).contains(&RangeId(1))));
    let before = heartbeats(&fake).len();
    for n in 1..50 {
        put(&mut cluster, &key(n));
    }
    assert!(cluster.run_until(3_000, |c| ranges(c) >= 2), "no split");
    assert!(
        cluster.run_until(50, |_| {
            let after = heartbeats(&fake);
            after.len() >= before + 2 && after.iter().any(|range| range.0 > 10_000)
        }),
        "the split's ranges did not report: {:?}",
        heartbeats(&fake)
    );
}

#[test]
fn a_new_store_reports_at_once_and_a_caught_up_learner_is_reported_without_waiting() {
    // Periodic heartbeats far apart: what arrives early is what this test checks.
    let config =
        StoreConfig { store_heartbeat_ticks: 10_000, range_heartbeat_ticks: 10_000, ..config() };
    let mut cluster = Cluster::with_spares(3, 1, 13, config);
    let fake = FakePlacement::new();
    connect(&mut cluster, &fake);
    let store_heartbeats = |fake: &FakePlacement| {
        fake.requests()
            .iter()
            .filter(|r| matches!(r, PlacementRequest::StoreHeartbeat { .. }))
            .count()
    };
    assert!(
        cluster.run_until(50, |_| store_heartbeats(&fake) >= 3),
        "stores did not report at start"
    );
    for n in 0..5 {
        put(&mut cluster, &key(n));
    }
    let (leader, descriptor) = cluster.leader_of(b"k").unwrap();
    cluster.store(leader).unwrap().change_replicas(
        descriptor.id,
        descriptor.epoch,
        &[tessera_wire::rpc::ReplicaChange::AddLearner { id: ReplicaId(60), store_id: StoreId(4) }],
        Box::new(|_| {}),
    );
    // The change is reported at once (with the learner pending), then again once the
    // learner has caught up — long before the periodic heartbeat.
    let reported_caught_up = |fake: &FakePlacement| {
        fake.requests().iter().any(|r| match r {
            PlacementRequest::RangeHeartbeat(heartbeat) => {
                heartbeat.descriptor.replica(ReplicaId(60)).is_some()
                    && heartbeat.pending_replicas.is_empty()
            }
            _ => false,
        })
    };
    assert!(
        cluster.run_until(3_000, |_| reported_caught_up(&fake)),
        "the caught-up learner was never reported"
    );
}

#[test]
fn a_removed_replica_cut_off_from_every_voter_asks_the_placement_driver() {
    // No tombstone messages, and store 4 stays cut off from the range's voters for good:
    // only the placement driver can tell its replica that it was removed.
    let config = StoreConfig { tombstone_sends: 0, stale_replica_ticks: 40, ..config() };
    let run = |with_placement: bool| {
        let mut cluster = Cluster::with_spares(3, 1, 5, config.clone());
        let fake = FakePlacement::new();
        if with_placement {
            connect(&mut cluster, &fake);
        }
        put(&mut cluster, &key(1));
        let (leader, descriptor) = cluster.leader_of(&key(1)).unwrap();
        cluster.store(leader).unwrap().change_replicas(
            descriptor.id,
            descriptor.epoch,
            &[tessera_wire::rpc::ReplicaChange::AddLearner {
                id: ReplicaId(40),
                store_id: StoreId(4),
            }],
            Box::new(|_| {}),
        );
        assert!(cluster.run_until(2_000, |c| {
            c.replica_data().iter().any(|(_, store, data)| *store == StoreId(4) && data.len() == 1)
        }));
        cluster.isolated.insert(StoreId(4));
        cluster.down.lock().unwrap().insert(StoreId(4));
        let removed: Arc<Mutex<Option<bool>>> = Arc::default();
        let answer = removed.clone();
        let (leader, descriptor) = cluster.leader_of(&key(1)).unwrap();
        cluster.store(leader).unwrap().change_replicas(
            descriptor.id,
            descriptor.epoch,
            &[tessera_wire::rpc::ReplicaChange::Remove { id: ReplicaId(40) }],
            Box::new(move |result| *answer.lock().unwrap() = Some(result.is_ok())),
        );
        assert!(cluster.run_until(2_000, |_| removed.lock().unwrap().is_some()));
        assert_eq!(*removed.lock().unwrap(), Some(true));
        let gone =
            cluster.run_until(2_000, |c| c.store(StoreId(4)).unwrap().peer(RangeId(1)).is_none());
        (gone, cluster)
    };
    let (gone, _) = run(false);
    assert!(!gone, "without the placement driver nothing could have told the replica");
    let (gone, mut cluster) = run(true);
    assert!(gone, "the removed replica is still there");
    assert!(cluster.replica_data().iter().all(|(_, store, _)| *store != StoreId(4)));
}
