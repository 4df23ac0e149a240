//! The threaded runner: a store on its own thread, ticked by the wall clock, driven through
//! its mailbox — data requests, a split and a leader transfer request.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tessera_engine::codec::StoreIdent;
use tessera_engine::mem::{MemKvEngine, MemRaftLogEngine};
use tessera_raft::ReplicaId;
use tessera_store::{
    MailboxCapacity, Network, Store, StoreConfig, StoreHandle, StoreSystem, bootstrap,
};
use tessera_wire::errors::RpcError;
use tessera_wire::ids::{RangeId, StoreId};
use tessera_wire::kv::{
    KvCommand, KvRequest, KvResponse, RawGetRequest, RawPutRequest, RequestContext,
};
use tessera_wire::range::{RangeDescriptor, RangeEpoch, Replica, ReplicaRole};
use tessera_wire::rpc::{StoreAdminRequest, StoreAdminResponse};
use tessera_wire::transport::RaftEnvelope;

/// A one-store cluster sends nothing.
#[derive(Debug)]
struct Alone;

impl Network for Alone {
    fn send(&mut self, envelope: RaftEnvelope) {
        panic!("a single-replica range sent {envelope:?}");
    }
}

/// Sends `command` to `descriptor`'s range; the answer (if any) arrives on the receiver.
fn send(
    handle: &StoreHandle,
    descriptor: &RangeDescriptor,
    command: KvCommand,
) -> mpsc::Receiver<Result<KvResponse, RpcError>> {
    let (sender, receiver) = mpsc::channel();
    let request = KvRequest {
        context: RequestContext {
            range: descriptor.id,
            epoch: descriptor.epoch,
            ..RequestContext::default()
        },
        command,
    };
    handle.kv(request, Box::new(move |result| drop(sender.send(result))));
    receiver
}

fn call(
    handle: &StoreHandle,
    descriptor: &RangeDescriptor,
    command: KvCommand,
) -> Result<KvResponse, RpcError> {
    send(handle, descriptor, command).recv_timeout(Duration::from_secs(10)).unwrap()
}

/// Retries while the range has no leader yet (the first election takes a few ticks).
fn put(handle: &StoreHandle, descriptor: &RangeDescriptor, key: &'static [u8]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let command = KvCommand::RawPut(RawPutRequest {
            key: Bytes::from_static(key),
            value: Bytes::from_static(b"v"),
        });
        match call(handle, descriptor, command) {
            Ok(KvResponse::RawPut) => return,
            Err(RpcError::NotLeader { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            other => panic!("{other:?}"),
        }
    }
}

/// Splits `first` at `m` into ranges 1 and 2; returns both halves.
fn split(handle: &StoreHandle, first: &RangeDescriptor) -> (RangeDescriptor, RangeDescriptor) {
    let (sender, receiver) = mpsc::channel();
    handle.admin(
        StoreAdminRequest::Split {
            range: first.id,
            epoch: first.epoch,
            split_key: Bytes::from_static(b"m"),
            new_range: RangeId(2),
            new_replicas: vec![ReplicaId(2)],
        },
        Box::new(move |result| sender.send(result).unwrap()),
    );
    let StoreAdminResponse::Split { left, right } =
        receiver.recv_timeout(Duration::from_secs(10)).unwrap().unwrap()
    else {
        panic!("a split answers with both halves")
    };
    (left, right)
}

#[test]
fn a_store_on_its_thread_serves_splits_and_refuses_bad_transfers() {
    let (system, first) = one_store(&MemKvEngine::new());
    let handle = system.handle();
    put(&handle, &first, b"a");
    put(&handle, &first, b"x");

    let (left, right) = split(&handle, &first);
    assert_eq!(right.start_key, Bytes::from_static(b"m"));
    // The right half elects itself and serves its key; the left one refuses it.
    put(&handle, &right, b"y");
    let get =
        |key: &'static [u8]| KvCommand::RawGet(RawGetRequest { key: Bytes::from_static(key) });
    assert_eq!(
        call(&handle, &right, get(b"x")).unwrap(),
        KvResponse::RawGet { value: Some(Bytes::from_static(b"v")) }
    );
    assert!(matches!(call(&handle, &left, get(b"x")), Err(RpcError::KeyNotInRange { .. })));
    assert!(matches!(call(&handle, &first, get(b"a")), Err(RpcError::EpochNotMatch { .. })));

    let (sender, receiver) = mpsc::channel();
    handle.admin(
        StoreAdminRequest::TransferLeader { range: RangeId(9), to: ReplicaId(1) },
        Box::new(move |result| sender.send(result).unwrap()),
    );
    assert_eq!(
        receiver.recv_timeout(Duration::from_secs(10)).unwrap(),
        Err(RpcError::RangeNotFound { range: RangeId(9) })
    );
    system.stop();
}

fn one_store(kv: &MemKvEngine) -> (StoreSystem, RangeDescriptor) {
    one_store_with(kv, MailboxCapacity::uniform(1024))
}

fn one_store_with(kv: &MemKvEngine, mailboxes: MailboxCapacity) -> (StoreSystem, RangeDescriptor) {
    let raft = MemRaftLogEngine::new();
    let ident = StoreIdent { cluster_id: 1, store_id: StoreId(1) };
    let first = RangeDescriptor {
        id: RangeId(1),
        start_key: Bytes::new(),
        end_key: Bytes::new(),
        epoch: RangeEpoch { conf_ver: 1, version: 1 },
        replicas: vec![Replica {
            id: ReplicaId(1),
            store_id: StoreId(1),
            role: ReplicaRole::Voter,
        }],
    };
    bootstrap(&raft, kv, ident, &first).unwrap();
    let config = StoreConfig { tick_interval_ms: 5, ..StoreConfig::default() };
    let store = Store::open(config, raft, kv.clone(), Alone, ident).unwrap();
    (StoreSystem::start(store, mailboxes).unwrap(), first)
}

#[test]
fn every_client_reads_its_own_writes_through_the_apply_thread() {
    let kv = MemKvEngine::new();
    let (system, first) = one_store(&kv);
    put(&system.handle(), &first, b"warm");
    let clients: Vec<_> = (0..8u8)
        .map(|client| {
            let handle = system.handle();
            let first = first.clone();
            std::thread::spawn(move || {
                let key = Bytes::from(vec![b'k', client]);
                for n in 0..150u32 {
                    let value = Bytes::from(n.to_be_bytes().to_vec());
                    let command =
                        KvCommand::RawPut(RawPutRequest { key: key.clone(), value: value.clone() });
                    assert_eq!(call(&handle, &first, command).unwrap(), KvResponse::RawPut);
                    let command = KvCommand::RawGet(RawGetRequest { key: key.clone() });
                    assert_eq!(
                        call(&handle, &first, command).unwrap(),
                        KvResponse::RawGet { value: Some(value) },
                        "client {client} did not read its write {n}"
                    );
                }
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    system.stop();
}

#[test]
fn a_failed_apply_write_stops_the_store_without_acknowledging_the_write() {
    let kv = MemKvEngine::new();
    let (system, first) = one_store(&kv);
    let handle = system.handle();
    put(&handle, &first, b"a");
    // The next KV write is the apply batch of the next put.
    kv.inject(tessera_engine::mem::FaultPlan { fail_write_at: Some(1), fail_sync_at: None });
    let put = KvCommand::RawPut(RawPutRequest {
        key: Bytes::from_static(b"b"),
        value: Bytes::from_static(b"v"),
    });
    let answer = send(&handle, &first, put).recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(
        matches!(&answer, Err(RpcError::Internal { message }) if message.contains("apply write failed")),
        "{answer:?}"
    );
    // The store stops: later requests are refused (or dropped unanswered), never served.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let get = KvCommand::RawGet(RawGetRequest { key: Bytes::from_static(b"a") });
        let receiver = send(&handle, &first, get);
        // Refused as the store stops ("store stopped": drained from its mailbox, or the
        // mailbox is closed) — the proof that it stopped. A request that slips into the
        // mailbox after the drain is never answered (`Timeout`): try again.
        match receiver.recv_timeout(Duration::from_secs(2)) {
            Ok(Err(RpcError::Internal { message })) if message == "store stopped" => break,
            Ok(Ok(_)) | Err(_) if Instant::now() < deadline => {
                // Served before the store noticed the failure, slipped in, or dropped
                // unanswered with the stopping store.
                std::thread::sleep(Duration::from_millis(5));
            }
            other => panic!("the store went on after a failed apply write: {other:?}"),
        }
    }
    system.stop();
}

#[test]
fn a_flooded_range_answers_busy_while_the_other_ranges_are_served() {
    let capacity = 8;
    let (system, first) =
        one_store_with(&MemKvEngine::new(), MailboxCapacity { store: 64, range: capacity });
    let handle = system.handle();
    put(&handle, &first, b"a");
    let (left, right) = split(&handle, &first);
    // The right half's first requests reach it through the store's mailbox; it has its own
    // from then on.
    put(&handle, &right, b"x");
    put(&handle, &left, b"a");

    // The raft worker is held inside an inspection: nothing is taken from any mailbox.
    let (entered, worker_held) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    assert!(handle.inspect(Box::new(move |_| {
        entered.send(()).unwrap();
        released.recv_timeout(Duration::from_secs(30)).unwrap();
    })));
    worker_held.recv_timeout(Duration::from_secs(10)).unwrap();

    let put_command = |key: &'static [u8]| {
        KvCommand::RawPut(RawPutRequest {
            key: Bytes::from_static(key),
            value: Bytes::from_static(b"w"),
        })
    };
    let queued: Vec<_> = (0..capacity).map(|_| send(&handle, &left, put_command(b"b"))).collect();
    // The left range's mailbox is full: refused at once, without waiting for the worker.
    let refused = send(&handle, &left, put_command(b"b"));
    assert!(
        matches!(refused.try_recv(), Ok(Err(RpcError::ServerBusy { .. }))),
        "a request beyond a full range mailbox is refused at once"
    );
    // The right range has room of its own.
    let other = send(&handle, &right, put_command(b"y"));
    assert!(
        matches!(other.try_recv(), Err(mpsc::TryRecvError::Empty)),
        "a request for another range waits for the worker, not refused"
    );

    release.send(()).unwrap();
    for answer in queued {
        assert_eq!(answer.recv_timeout(Duration::from_secs(10)).unwrap(), Ok(KvResponse::RawPut));
    }
    assert_eq!(other.recv_timeout(Duration::from_secs(10)).unwrap(), Ok(KvResponse::RawPut));
    system.stop();
}
