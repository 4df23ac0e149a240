//! Several real transports on loopback: Raft batches, coalesced heartbeats, RPCs,
//! snapshots, restarts, silent and foreign peers, malformed frames, fault hooks.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{DEADLINE, append, config, heartbeat, mesh, sleepy, start};
use tessera_transport::tls::{NodeTls, SERVER_NAME, TlsSource};
use tessera_transport::{MessageClass, TransportError};
use tessera_wire::errors::RpcError;
use tessera_wire::frame::{FrameDecoder, encode_frame};
use tessera_wire::ids::{NodeId, RangeId, StoreId};
use tessera_wire::placement::{PlacementRequest, PlacementResponse};
use tessera_wire::raft::MessageKind;
use tessera_wire::range::RangeEpoch;
use tessera_wire::rpc::{
    RpcRequest, RpcRequestBody, RpcResponse, RpcResponseBody, RpcResult, StoreAdminRequest,
};
use tessera_wire::transport::{
    Heartbeat, Hello, RaftBatch, SnapshotChunk, SnapshotFile, SnapshotHeader, SnapshotStatus,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_exchange_raft_batches_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = [
        start(config(dir.path(), 1)).await,
        start(config(dir.path(), 2)).await,
        start(config(dir.path(), 3)).await,
    ];
    mesh(&[&nodes[0], &nodes[1], &nodes[2]]);
    // Connections first: messages written on a connection that loses to a crossing one are
    // lost (Raft retries), which would spoil the exact count below.
    for from in &nodes {
        for to in &nodes {
            if from.transport.node_id() != to.transport.node_id() {
                send_until_delivered(from, to, 99).await;
            }
        }
    }
    for node in &nodes {
        node.recorder.raft.lock().clear();
    }
    const N: u64 = 2_000;
    for index in 1..=N {
        for from in &nodes {
            for to in &nodes {
                let (f, t) = (from.transport.node_id().get(), to.transport.node_id().get());
                if f != t {
                    from.transport.send_raft(NodeId(t), append(1, f, t, index)).unwrap();
                }
            }
        }
    }
    for to in &nodes {
        to.recorder.wait_for("all raft messages", |r| r.raft_count() == 2 * N as usize).await;
        for from in &nodes {
            if from.transport.node_id() == to.transport.node_id() {
                continue;
            }
            let got: Vec<u64> = to
                .recorder
                .raft_from(from.transport.node_id())
                .iter()
                .map(|e| e.message.entries[0].index.get())
                .collect();
            assert_eq!(
                got,
                (1..=N).collect::<Vec<_>>(),
                "order from {:?}",
                from.transport.node_id()
            );
        }
    }
    // Batching happened: far fewer frames than messages.
    let stats = nodes[0].transport.stats();
    let raft = stats.sent(MessageClass::Raft);
    assert!(raft.messages >= 2 * N, "{raft:?}");
    assert!(raft.frames < raft.messages, "{raft:?}");
    assert!(nodes[0].transport.liveness(NodeId(2)).connected);
    assert!(nodes[0].transport.liveness(NodeId(2)).last_seen.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn coalesced_heartbeats_arrive_as_one_frame_per_tick_and_fan_out() {
    let dir = tempfile::tempdir().unwrap();
    let a = start(config(dir.path(), 1)).await;
    let b = start(config(dir.path(), 2)).await;
    mesh(&[&a, &b]);
    const RANGES: u64 = 1_000;
    for tick in 1..=3u64 {
        for range in 1..=RANGES {
            a.transport.send_raft(NodeId(2), heartbeat(range, 1, 2)).unwrap();
        }
        a.transport.tick();
        b.recorder.wait_for("heartbeats", |r| r.raft_count() == (tick * RANGES) as usize).await;
        let received = b.transport.stats().received(MessageClass::Heartbeat);
        assert_eq!(received.frames, tick, "one coalesced frame per tick");
        assert_eq!(received.messages, tick * RANGES);
    }
    let envelopes = b.recorder.raft_from(NodeId(1));
    assert!(envelopes.iter().all(|e| e.message.kind == MessageKind::Heartbeat));
    let mut ranges: Vec<u64> = envelopes[..RANGES as usize].iter().map(|e| e.range.get()).collect();
    ranges.sort_unstable();
    assert_eq!(ranges, (1..=RANGES).collect::<Vec<_>>());
    assert_eq!(envelopes[0].message.commit.get(), envelopes[0].range.get());

    // Responses coalesce the same way on the way back.
    for range in 1..=RANGES {
        let mut response = heartbeat(range, 2, 1);
        response.message.kind = MessageKind::HeartbeatResponse;
        response.message.commit = tessera_wire::raft::LogIndex(0);
        b.transport.send_raft(NodeId(1), response).unwrap();
    }
    b.transport.tick();
    a.recorder.wait_for("responses", |r| r.raft_count() == RANGES as usize).await;
    assert_eq!(a.transport.stats().received(MessageClass::HeartbeatResponse).frames, 1);
}

/// A store's path: heartbeats handed over as tuples (`send_heartbeats`) or as a round of
/// messages (`send_raft_many`) arrive exactly like heartbeats sent one message at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn heartbeats_handed_over_in_bulk_arrive_like_single_messages() {
    let dir = tempfile::tempdir().unwrap();
    let a = start(config(dir.path(), 1)).await;
    let b = start(config(dir.path(), 2)).await;
    mesh(&[&a, &b]);
    const RANGES: u64 = 500;
    let expected: Vec<_> = (1..=RANGES).map(|range| heartbeat(range, 1, 2)).collect();

    let beats = expected.iter().map(|envelope| {
        Heartbeat::from_message(envelope.range, &envelope.message).expect("a plain heartbeat")
    });
    assert_eq!(a.transport.send_heartbeats(NodeId(2), StoreId(1), StoreId(2), beats), 0);
    a.transport.tick();
    b.recorder.wait_for("tuple heartbeats", |r| r.raft_count() == RANGES as usize).await;
    assert_eq!(b.recorder.raft_from(NodeId(1)), expected);
    assert_eq!(b.transport.stats().received(MessageClass::Heartbeat).frames, 1);

    b.recorder.raft.lock().clear();
    assert_eq!(a.transport.send_raft_many(NodeId(2), expected.clone()), 0);
    a.transport.tick();
    b.recorder.wait_for("bulk heartbeats", |r| r.raft_count() == RANGES as usize).await;
    assert_eq!(b.recorder.raft_from(NodeId(1)), expected);
    assert_eq!(b.transport.stats().received(MessageClass::Heartbeat).frames, 2);
}

/// Starts `count` calls from `from` to node 2 (`b`) that are each served for `ms`, and
/// waits until `b` has received them all.
async fn spawn_slow_rpcs(
    from: &Arc<common::TestNode>,
    b: &common::TestNode,
    count: u64,
    ms: u32,
) -> Vec<tokio::task::JoinHandle<Result<tessera_wire::rpc::RpcResponse, TransportError>>> {
    let served = b.transport.stats().received(MessageClass::Rpc).messages;
    let slow = (0..count)
        .map(|_| {
            let from = from.clone();
            tokio::spawn(async move { from.transport.rpc(NodeId(2), sleepy(ms), DEADLINE).await })
        })
        .collect();
    let deadline = Instant::now() + DEADLINE;
    while b.transport.stats().received(MessageClass::Rpc).messages < served + count {
        assert!(Instant::now() < deadline, "slow RPCs never arrived");
        tokio::task::yield_now().await;
    }
    slow
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rpc_round_trip_deadline_and_server_busy() {
    let dir = tempfile::tempdir().unwrap();
    let mut client_config = config(dir.path(), 1);
    client_config.rpc_inflight_max = 2;
    let a = Arc::new(start(client_config).await);
    let mut server_config = config(dir.path(), 2);
    server_config.rpc_serve_inflight_max = 3;
    let b = start(server_config).await;
    mesh(&[&a, &b]);

    // Round trip.
    let response = a.transport.rpc(NodeId(2), sleepy(0), DEADLINE).await.unwrap();
    assert_eq!(
        response.result,
        RpcResult::Ok(RpcResponseBody::Placement(PlacementResponse::AllocId {
            first: 0,
            count: 0
        }))
    );

    // Deadline: the handler takes 3 s, the caller waits 200 ms.
    let started = Instant::now();
    // Either side's deadline may fire first: the client's (an error) or the server's (a
    // `Timeout` answer).
    let outcome = a.transport.rpc(NodeId(2), sleepy(3_000), Duration::from_millis(200)).await;
    assert!(
        matches!(&outcome, Err(TransportError::Timeout { .. }))
            || matches!(&outcome, Ok(response) if response.result == RpcResult::Err(RpcError::Timeout)),
        "{outcome:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));

    // Client bound: 2 in flight, the third is answered ServerBusy locally at once.
    let slow = spawn_slow_rpcs(&a, &b, 2, 1_500).await;
    let started = Instant::now();
    let response = a.transport.rpc(NodeId(2), sleepy(0), DEADLINE).await.unwrap();
    assert!(
        matches!(&response.result, RpcResult::Err(RpcError::ServerBusy { retry_after_ms, reason })
            if *retry_after_ms > 0 && reason.contains("in flight")),
        "{response:?}"
    );
    assert!(started.elapsed() < Duration::from_millis(500));
    assert!(a.transport.stats().rpc_busy >= 1);
    for task in slow {
        assert!(task.await.unwrap().unwrap().result.into_result().is_ok());
    }

    // Server bound: node 3 (no client bound to speak of) fills node 2's 3 slots.
    let mut c_config = config(dir.path(), 3);
    c_config.rpc_inflight_max = 100;
    let c = Arc::new(start(c_config).await);
    c.transport.set_peer(NodeId(2), b.addr);
    let slow = spawn_slow_rpcs(&c, &b, 3, 2_000).await;
    let response = c.transport.rpc(NodeId(2), sleepy(0), DEADLINE).await.unwrap();
    match &response.result {
        RpcResult::Err(RpcError::ServerBusy { reason, .. }) => {
            assert!(reason.contains("being served"), "{reason}");
        }
        other => panic!("server not busy: {other:?}"),
    }
    for task in slow {
        assert!(task.await.unwrap().unwrap().result.into_result().is_ok());
    }
    assert!(b.transport.stats().rpc_busy >= 1);
}

// One thread: the 300 callers all queue their requests before a lane's writer runs, so the
// shared writes are certain (on several threads a writer may take each request alone).
#[tokio::test(flavor = "current_thread")]
async fn concurrent_rpcs_share_a_few_streams_and_each_gets_its_own_answer() {
    let dir = tempfile::tempdir().unwrap();
    let a = Arc::new(start(config(dir.path(), 1)).await);
    let b = start(config(dir.path(), 2)).await;
    mesh(&[&a, &b]);
    a.transport.rpc(NodeId(2), sleepy(0), DEADLINE).await.unwrap();
    let before = a.transport.stats();
    // 300 calls at once, the later ones answered first (each handler sleeps `count` ms and
    // echoes it): every caller must get its own answer.
    let calls: Vec<_> = (0..300u32)
        .map(|n| {
            let a = a.clone();
            let ms = 60 - n / 5;
            tokio::spawn(
                async move { (ms, a.transport.rpc(NodeId(2), sleepy(ms), DEADLINE).await) },
            )
        })
        .collect();
    for call in calls {
        let (ms, response) = call.await.unwrap();
        assert_eq!(
            response.unwrap().result,
            RpcResult::Ok(RpcResponseBody::Placement(PlacementResponse::AllocId {
                first: ms.into(),
                count: ms
            }))
        );
    }
    let after = a.transport.stats();
    // One stream per lane (4) for all of them, each opened once.
    assert_eq!(after.rpc_lanes_opened, 4);
    // Requests queued together left in shared writes: fewer writes than requests.
    let sent = |stats: &tessera_transport::TransportStats| stats.sent(MessageClass::Rpc);
    let (frames, messages) = (
        sent(&after).frames - sent(&before).frames,
        sent(&after).messages - sent(&before).messages,
    );
    assert_eq!(messages, 300);
    assert!(frames < messages, "{frames} writes for {messages} requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_waiting_on_a_lane_fail_at_once_when_its_connection_goes() {
    let dir = tempfile::tempdir().unwrap();
    let a = Arc::new(start(config(dir.path(), 1)).await);
    let b = start(config(dir.path(), 2)).await;
    mesh(&[&a, &b]);
    a.transport.rpc(NodeId(2), sleepy(0), DEADLINE).await.unwrap();
    let slow = spawn_slow_rpcs(&a, &b, 8, 20_000).await;
    let started = Instant::now();
    drop(b);
    for call in slow {
        let outcome = call.await.unwrap();
        assert!(matches!(outcome, Err(TransportError::ConnectionLost { .. })), "{outcome:?}");
    }
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    // A restarted peer is served on new lanes.
    let b = start(config(dir.path(), 2)).await;
    a.transport.set_peer(NodeId(2), b.addr);
    b.transport.set_peer(NodeId(1), a.addr);
    let deadline = Instant::now() + DEADLINE;
    loop {
        match a.transport.rpc(NodeId(2), sleepy(0), DEADLINE).await {
            Ok(response) => {
                assert!(response.result.into_result().is_ok());
                break;
            }
            Err(error) => assert!(Instant::now() < deadline, "{error:?}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn snapshot_chunks(snapshot_id: u64, count: u32, chunk_bytes: usize) -> Vec<SnapshotChunk> {
    let header = SnapshotHeader {
        from_store: StoreId(1),
        to_store: StoreId(2),
        files: vec![SnapshotFile {
            cf: "default".to_owned(),
            size_bytes: u64::from(count) * chunk_bytes as u64,
            checksum: 0,
            keys: 0,
        }],
        ..SnapshotHeader::default()
    };
    (0..count)
        .map(|seq| {
            SnapshotChunk {
                range: RangeId(9),
                snapshot_id,
                seq,
                header: (seq == 0).then(|| header.clone()),
                file_index: 0,
                offset: u64::from(seq) * chunk_bytes as u64,
                data: Bytes::from(vec![u8::try_from(seq % 251).unwrap(); chunk_bytes]),
                checksum: 0,
                last: seq + 1 == count,
            }
            .sealed()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshot_is_rate_limited_and_a_corrupt_chunk_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut a_config = config(dir.path(), 1);
    a_config.snapshot_send_bytes_per_sec = 1 << 20;
    let a = start(a_config).await;
    let b = start(config(dir.path(), 2)).await;
    mesh(&[&a, &b]);

    // 1 MiB at 1 MiB/s with a 64 KiB burst: about 0.94 s.
    let chunks = snapshot_chunks(1, 16, 64 << 10);
    let started = Instant::now();
    let ack = a.transport.send_snapshot_chunks(NodeId(2), chunks, DEADLINE).await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(ack.status, SnapshotStatus::Received);
    assert_eq!(ack.chunks_received, 16);
    assert!(elapsed >= Duration::from_millis(800), "rate limit not honoured: {elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "far too slow: {elapsed:?}");
    {
        let snapshots = b.recorder.snapshots.lock();
        assert_eq!(snapshots.len(), 1);
        assert_eq!(snapshots[0].2.len(), 16 * (64 << 10));
        assert!(snapshots[0].3.is_none());
    }

    // A chunk whose checksum does not match is refused, and so is the snapshot.
    let mut chunks = snapshot_chunks(2, 4, 1024);
    chunks[2].checksum ^= 1;
    let ack = a.transport.send_snapshot_chunks(NodeId(2), chunks, DEADLINE).await.unwrap();
    match &ack.status {
        SnapshotStatus::Rejected { reason } => assert!(reason.contains("checksum"), "{reason}"),
        other => panic!("corrupt snapshot accepted: {other:?}"),
    }
    assert_eq!(ack.chunks_received, 2);
    b.recorder.wait_for("rejected snapshot", |r| r.snapshots.lock().len() == 2).await;
    assert!(b.recorder.snapshots.lock()[1].3.as_deref().unwrap().contains("checksum"));
    assert!(b.transport.stats().bad_frames >= 1);
}

/// Sends `append`s from `from` to `to` until one arrives.
async fn send_until_delivered(from: &common::TestNode, to: &common::TestNode, range: u64) {
    let (f, t) = (from.transport.node_id().get(), to.transport.node_id().get());
    let result = tokio::time::timeout(DEADLINE, async {
        let mut index = 1;
        loop {
            let _ = from.transport.send_raft(NodeId(t), append(range, f, t, index));
            index += 1;
            let arrived = tokio::time::timeout(Duration::from_millis(50), async {
                to.recorder
                    .wait_for("delivery", |r| {
                        r.raft.lock().iter().any(|(n, e)| n.get() == f && e.range.get() == range)
                    })
                    .await;
            })
            .await;
            if arrived.is_ok() {
                return;
            }
        }
    })
    .await;
    assert!(result.is_ok(), "nothing delivered from {f} to {t}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_restart_is_survived() {
    let dir = tempfile::tempdir().unwrap();
    let a = start(config(dir.path(), 1)).await;
    let b = start(config(dir.path(), 2)).await;
    mesh(&[&a, &b]);
    send_until_delivered(&a, &b, 1).await;
    send_until_delivered(&b, &a, 1).await;

    drop(b);
    let b = start(config(dir.path(), 2)).await;
    a.transport.set_peer(NodeId(2), b.addr);
    b.transport.set_peer(NodeId(1), a.addr);
    send_until_delivered(&a, &b, 2).await;
    send_until_delivered(&b, &a, 2).await;
    let response = a.transport.rpc(NodeId(2), sleepy(0), DEADLINE).await.unwrap();
    assert!(response.result.into_result().is_ok());
    assert!(a.transport.stats().reconnects >= 1);
}

/// A peer that dies without closing its connections (its runtime stops under it, as in a
/// crash) and restarts on the same address at once is reached again well before the idle
/// timeout: its endpoint's stateless-reset key is derived from its node key, so the reset it
/// sends for the old connection is recognised.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_that_crashes_and_restarts_on_its_address_is_reached_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let a = start(config(dir.path(), 1)).await;
    let doomed =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let b = doomed.spawn(start(config(dir.path(), 2))).await.unwrap();
    mesh(&[&a, &b]);
    send_until_delivered(&a, &b, 1).await;
    send_until_delivered(&b, &a, 1).await;

    // Crash: the runtime driving b's endpoint stops without sending CONNECTION_CLOSE.
    doomed.shutdown_background();
    let addr = b.addr;
    drop(b);
    // The stopped runtime releases the old socket in the background.
    let deadline = Instant::now() + DEADLINE;
    while std::net::UdpSocket::bind(addr).is_err() {
        assert!(Instant::now() < deadline, "the crashed node's port was never released");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut restarted = config(dir.path(), 2);
    restarted.listen = addr;
    let b = start(restarted).await;
    b.transport.set_peer(NodeId(1), a.addr);

    let idle_timeout = a_idle_timeout(dir.path());
    let began = Instant::now();
    send_until_delivered(&a, &b, 2).await;
    let took = began.elapsed();
    assert!(
        took < idle_timeout / 2,
        "reaching the restarted peer took {took:?}; the idle timeout is {idle_timeout:?}"
    );
}

fn a_idle_timeout(dir: &std::path::Path) -> Duration {
    config(dir, 1).tls.timeouts().max_idle_timeout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_silent_peer_does_not_delay_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let a = start(config(dir.path(), 1)).await;
    let b = start(config(dir.path(), 2)).await;
    mesh(&[&a, &b]);
    // Node 3 is a UDP socket that never answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    a.transport.set_peer(NodeId(3), silent.local_addr().unwrap());

    let _ = a.transport.send_raft(NodeId(3), append(1, 1, 3, 1));
    {
        let result = tokio::time::timeout(
            Duration::from_millis(300),
            a.transport.rpc(NodeId(3), sleepy(0), DEADLINE),
        )
        .await;
        assert!(result.is_err(), "the silent peer answered?");
    }
    let started = Instant::now();
    for index in 1..=100 {
        a.transport.send_raft(NodeId(2), append(1, 1, 2, index)).unwrap();
        let _ = a.transport.send_raft(NodeId(3), append(1, 1, 3, index + 1));
    }
    b.recorder.wait_for("traffic to the live peer", |r| r.raft_count() == 100).await;
    let response = a.transport.rpc(NodeId(2), sleepy(0), DEADLINE).await.unwrap();
    assert!(response.result.into_result().is_ok());
    // Far below the 5 s connect timeout the silent peer is stuck in.
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert!(!a.transport.liveness(NodeId(3)).connected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_of_another_ca_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let a = start(config(dir.path(), 1)).await;
    let stranger = start(config(other_dir.path(), 2)).await;
    mesh(&[&a, &stranger]);
    for direction in 0..2 {
        let (from, to) = if direction == 0 { (&a, &stranger) } else { (&stranger, &a) };
        let to_id = to.transport.node_id();
        let error = from.transport.rpc(to_id, sleepy(0), DEADLINE).await.unwrap_err();
        assert!(
            matches!(
                error,
                TransportError::Unreachable { .. } | TransportError::ConnectionLost { .. }
            ),
            "{error:?}"
        );
        assert!(!from.transport.liveness(to_id).connected);
    }
    let _ = a.transport.send_raft(NodeId(2), append(1, 1, 2, 1));
    assert_eq!(stranger.recorder.raft_count(), 0);
    assert_eq!(a.recorder.raft_count(), 0);
}

/// A raw quinn client holding a valid certificate of the cluster.
/// Connects the rogue endpoint to `addr` and exchanges Hellos as node 66 (the node answers
/// with its own).
async fn rogue_hello(
    rogue: &quinn::Endpoint,
    client_config: quinn::ClientConfig,
    addr: std::net::SocketAddr,
) -> quinn::Connection {
    let conn = rogue.connect_with(client_config, addr, SERVER_NAME).unwrap().await.unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&encode_frame(&Hello::new(common::CLUSTER, NodeId(66))).unwrap()).await.unwrap();
    let _ = send.finish();
    let answer = tokio::time::timeout(DEADLINE, recv.read_to_end(1024)).await.unwrap().unwrap();
    assert!(!answer.is_empty());
    conn
}

fn rogue_endpoint(dir: &std::path::Path) -> (quinn::Endpoint, quinn::ClientConfig) {
    let tls = NodeTls::load(&TlsSource::DevGenerated { dir: dir.to_owned() }, "rogue").unwrap();
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    (endpoint, tls.client_config().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_frames_are_rejected_and_others_still_served() {
    let dir = tempfile::tempdir().unwrap();
    let a = start(config(dir.path(), 1)).await;
    let b = start(config(dir.path(), 2)).await;
    mesh(&[&a, &b]);
    let (rogue, client_config) = rogue_endpoint(dir.path());

    // Garbage instead of a hello: the connection is refused.
    let conn =
        rogue.connect_with(client_config.clone(), b.addr, SERVER_NAME).unwrap().await.unwrap();
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    send.write_all(&[0xff; 64]).await.unwrap();
    let _ = send.finish();
    let closed = tokio::time::timeout(DEADLINE, conn.closed()).await.unwrap();
    assert!(format!("{closed}").contains("frame"), "{closed}");

    // A proper hello, then garbage on a Raft stream: that stream is stopped, the connection
    // and the node carry on.
    let conn = rogue_hello(&rogue, client_config, b.addr).await;
    let mut garbage = conn.open_uni().await.unwrap();
    // A plausible header announcing a RaftBatch, then bytes that are no archive.
    let mut bad = vec![0, 0, 0, 16, 2, 1, 0, 0];
    bad.extend_from_slice(&[0xAB; 16]);
    garbage.write_all(&bad).await.unwrap();
    let stopped = tokio::time::timeout(DEADLINE, garbage.stopped()).await.unwrap();
    assert!(stopped.is_ok(), "{stopped:?}");
    let mut good = conn.open_uni().await.unwrap();
    let batch = RaftBatch { envelopes: vec![append(5, 66, 2, 1)] };
    good.write_all(&encode_frame(&batch).unwrap()).await.unwrap();
    b.recorder
        .wait_for("the rogue's valid batch", |r| {
            r.raft.lock().iter().any(|(n, e)| n.get() == 66 && e.range.get() == 5)
        })
        .await;
    assert!(b.transport.stats().bad_frames >= 2);
    send_until_delivered(&a, &b, 7).await;
    send_until_delivered(&b, &a, 7).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_stream_has_at_most_1024_requests_served_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let b = start(config(dir.path(), 2)).await;
    let (rogue, client_config) = rogue_endpoint(dir.path());
    let conn = rogue_hello(&rogue, client_config, b.addr).await;

    // 1,500 requests on one stream, each served for 2 s, and the answers left unread
    // until the end.
    const REQUESTS: usize = 1500;
    let (mut send, mut answers) = conn.open_bi().await.unwrap();
    let mut frames = Vec::new();
    for id in 0..REQUESTS as u64 {
        let body = RpcRequestBody::Placement(PlacementRequest::AllocId { count: 2000 });
        frames.extend_from_slice(&encode_frame(&RpcRequest { id, timeout_ms: 0, body }).unwrap());
    }
    send.write_all(&frames).await.unwrap();
    let _ = send.finish();
    b.recorder.wait_for("1,024 requests served", |r| r.rpcs.lock().started >= 1024).await;
    // The rest are read only as the first answers go out.
    b.recorder.wait_for("every request served", |r| r.rpcs.lock().started == REQUESTS).await;
    assert_eq!(b.recorder.rpcs.lock().in_flight_max, 1024);
    let answered =
        tokio::time::timeout(DEADLINE, answers.read_to_end(1 << 20)).await.unwrap().unwrap();
    let mut decoder = FrameDecoder::default();
    decoder.feed(&answered).unwrap();
    let mut ids = Vec::new();
    while let Some(frame) = decoder.next_frame().unwrap() {
        let response = frame.decode_rpc_response().unwrap();
        assert!(matches!(response.result, RpcResult::Ok(_)), "{response:?}");
        ids.push(response.id);
    }
    decoder.finish().unwrap();
    ids.sort_unstable();
    assert_eq!(ids, (0..REQUESTS as u64).collect::<Vec<_>>());
}

/// A raw quinn server holding a valid certificate of the cluster, granting each stream only
/// `stream_window` bytes of flow-control credit until it reads them.
fn rogue_server(dir: &std::path::Path, stream_window: u32) -> quinn::Endpoint {
    let tls =
        NodeTls::load(&TlsSource::DevGenerated { dir: dir.to_owned() }, "rogue-server").unwrap();
    let mut server_config = tls.server_config().unwrap();
    let mut transport = quinn::TransportConfig::default();
    transport.stream_receive_window(quinn::VarInt::from_u32(stream_window));
    server_config.transport_config(Arc::new(transport));
    quinn::Endpoint::server(server_config, "127.0.0.1:0".parse().unwrap()).unwrap()
}

/// An RPC body of a little more than `bytes` bytes, told apart by `tag`.
fn tagged(tag: u64, bytes: usize) -> RpcRequestBody {
    RpcRequestBody::StoreAdmin(StoreAdminRequest::Split {
        range: RangeId(1),
        epoch: RangeEpoch::default(),
        split_key: Bytes::from(vec![0x5a; bytes]),
        new_range: RangeId(tag),
        new_replicas: Vec::new(),
    })
}

/// Reads an RPC lane on the rogue server: records each request's tag in `seen`, answers it.
async fn serve_rogue_lane(
    (mut send, mut recv): (quinn::SendStream, quinn::RecvStream),
    seen: Arc<parking_lot::Mutex<Vec<u64>>>,
) {
    let mut decoder = FrameDecoder::default();
    while let Ok(Some(chunk)) = recv.read_chunk(1 << 20, true).await {
        decoder.feed(&chunk.bytes).unwrap();
        while let Some(frame) = decoder.next_frame().unwrap() {
            let request = frame.decode_rpc_request().unwrap();
            let RpcRequestBody::StoreAdmin(StoreAdminRequest::Split { new_range, .. }) =
                request.body
            else {
                panic!("unexpected request {request:?}");
            };
            seen.lock().push(new_range.get());
            let answer = RpcResponse {
                id: request.id,
                result: RpcResult::Ok(RpcResponseBody::Placement(PlacementResponse::AllocId {
                    first: 0,
                    count: 0,
                })),
            };
            send.write_all(&encode_frame(&answer).unwrap()).await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_whose_caller_gave_up_before_it_was_written_is_never_sent() {
    // Flow-control credit per stream on the server; a filler request is 4 times larger.
    const WINDOW: u32 = 16 << 10;
    // RPC lanes per connection (`rpc::LANES`), taken by the calls in turn.
    const LANES: u64 = 4;
    const DOOMED: u64 = 32;
    let dir = tempfile::tempdir().unwrap();
    let a = Arc::new(start(config(dir.path(), 1)).await);
    let server = rogue_server(dir.path(), WINDOW);
    a.transport.set_peer(NodeId(3), server.local_addr().unwrap());
    // Node 3: answers the Hello, then hands over the RPC lanes, unread.
    let (lanes, mut accepted) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let conn = server.accept().await.unwrap().await.unwrap();
        let (mut send, mut recv) = conn.accept_bi().await.unwrap();
        recv.read_to_end(1024).await.unwrap();
        let hello = encode_frame(&Hello::new(common::CLUSTER, NodeId(3))).unwrap();
        send.write_all(&hello).await.unwrap();
        let _ = send.finish();
        while let Ok(lane) = conn.accept_bi().await {
            let _ = lanes.send(lane);
        }
    });

    // One filler per lane, whose caller keeps waiting: once the server sees a lane, the
    // lane's writer is stuck in its filler's write (4 windows' worth) until the server reads.
    let fillers: Vec<_> = (0..LANES)
        .map(|tag| {
            let a = a.clone();
            let body = tagged(tag, 4 * WINDOW as usize);
            tokio::spawn(async move { a.transport.rpc(NodeId(3), body, DEADLINE).await })
        })
        .collect();
    let mut held = Vec::new();
    for _ in 0..LANES {
        held.push(tokio::time::timeout(DEADLINE, accepted.recv()).await.unwrap().unwrap());
    }
    assert_eq!(a.transport.stats().rpc_lanes_opened, LANES);

    // Calls queued behind the fillers, on every lane, that give up while queued.
    let dropped = a.transport.stats().dropped_msgs;
    let doomed: Vec<_> = (100..100 + DOOMED)
        .map(|tag| {
            let a = a.clone();
            let body = tagged(tag, 64);
            tokio::spawn(async move {
                a.transport.rpc(NodeId(3), body, Duration::from_millis(200)).await
            })
        })
        .collect();
    for call in doomed {
        let outcome = call.await.unwrap();
        assert!(matches!(outcome, Err(TransportError::Timeout { .. })), "{outcome:?}");
    }

    // The server reads again: the fillers go through, the given-up calls do not.
    let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
    for lane in held {
        tokio::spawn(serve_rogue_lane(lane, seen.clone()));
    }
    for filler in fillers {
        assert!(filler.await.unwrap().unwrap().result.into_result().is_ok());
    }
    // One call per lane issued now: each arrives, and after whatever its lane still held.
    for tag in 200..200 + LANES {
        let response = a.transport.rpc(NodeId(3), tagged(tag, 64), DEADLINE).await.unwrap();
        assert!(response.result.into_result().is_ok());
    }
    let mut seen = seen.lock().clone();
    seen.sort_unstable();
    assert_eq!(
        seen,
        (0..LANES).chain(200..200 + LANES).collect::<Vec<_>>(),
        "requests whose callers had given up reached the server"
    );
    assert_eq!(a.transport.stats().dropped_msgs - dropped, DOOMED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fault_hooks_delay_block_and_unblock() {
    let dir = tempfile::tempdir().unwrap();
    let a = start(config(dir.path(), 1)).await;
    let b = start(config(dir.path(), 2)).await;
    mesh(&[&a, &b]);
    send_until_delivered(&a, &b, 1).await;

    // Delay.
    a.transport.faults().set_delay(NodeId(2), Duration::from_millis(300));
    let before = b.recorder.raft_count();
    let started = Instant::now();
    a.transport.send_raft(NodeId(2), append(2, 1, 2, 1)).unwrap();
    b.recorder.wait_for("delayed message", |r| r.raft_count() == before + 1).await;
    assert!(started.elapsed() >= Duration::from_millis(300), "{:?}", started.elapsed());
    a.transport.faults().set_delay(NodeId(2), Duration::ZERO);

    // Block: messages are dropped (counted), RPCs fail fast.
    a.transport.faults().set_blocked(NodeId(2), true);
    let dropped = a.transport.stats().dropped_msgs;
    a.transport.send_raft(NodeId(2), append(3, 1, 2, 1)).unwrap();
    let deadline = Instant::now() + DEADLINE;
    while a.transport.stats().dropped_msgs == dropped {
        assert!(Instant::now() < deadline, "blocked message not dropped");
        tokio::task::yield_now().await;
    }
    let error = a.transport.rpc(NodeId(2), sleepy(0), DEADLINE).await.unwrap_err();
    assert!(matches!(error, TransportError::Blocked { .. }), "{error:?}");
    assert!(!b.recorder.raft.lock().iter().any(|(_, e)| e.range.get() == 3));

    // Unblock: traffic resumes.
    a.transport.faults().set_blocked(NodeId(2), false);
    send_until_delivered(&a, &b, 4).await;
    assert!(
        a.transport.rpc(NodeId(2), sleepy(0), DEADLINE).await.unwrap().result.into_result().is_ok()
    );

    // Total loss: RPCs go unanswered until their deadline, snapshot transfers break.
    a.transport.faults().set_loss(NodeId(2), 1.0);
    let error = a.transport.rpc(NodeId(2), sleepy(0), Duration::from_millis(200)).await;
    assert!(matches!(error, Err(TransportError::Timeout { .. })), "{error:?}");
    let chunks = snapshot_chunks(a.transport.next_snapshot_id(), 2, 1024);
    let error = a.transport.send_snapshot_chunks(NodeId(2), chunks, DEADLINE).await;
    assert!(matches!(error, Err(TransportError::ConnectionLost { .. })), "{error:?}");
    a.transport.faults().set_loss(NodeId(2), 0.0);
    assert!(
        a.transport.rpc(NodeId(2), sleepy(0), DEADLINE).await.unwrap().result.into_result().is_ok()
    );
}
