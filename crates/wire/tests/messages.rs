//! Every wire type survives a frame round trip; heartbeats coalesce losslessly; the helpers on
//! ids, timestamps, ranges, hellos and errors do what their docs say.

#![allow(clippy::unwrap_used)]

mod support;

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use tessera_wire::errors::RpcError;
use tessera_wire::frame::{
    FrameDecoder, FrameError, FrameKind, FrameMessage, HEADER_BYTES, PROTOCOL_VERSION, decode,
    encode_frame, encode_frame_into,
};
use tessera_wire::ids::{NodeId, RangeId, StoreId};
use tessera_wire::kv::KvResponse;
use tessera_wire::raft::{LogIndex, Message, MessageKind, ReplicaId, Term};
use tessera_wire::range::{RangeDescriptor, RangeEpoch, Replica, ReplicaRole};
use tessera_wire::rpc::{RpcResponseBody, RpcResult};
use tessera_wire::timestamp::Timestamp;
use tessera_wire::transport::{
    HandshakeError, Heartbeat, HeartbeatBatch, HeartbeatResponse, HeartbeatResponseBatch, Hello,
    SnapshotChunk,
};

/// Encodes `message` as a frame, reads it back through a decoder, and checks both the
/// generic and the typed decode give the original.
fn assert_round_trips(message: &FrameMessage) {
    let bytes = message.encode().unwrap();
    assert_eq!(bytes[4], message.kind().as_u8());
    let mut decoder = FrameDecoder::default();
    decoder.feed(&bytes).unwrap();
    let frame = decoder.next_frame().unwrap().unwrap();
    assert_eq!(frame.wire_bytes(), bytes.len());
    assert!(decoder.next_frame().unwrap().is_none());
    decoder.finish().unwrap();
    assert_eq!(&frame.decode_message().unwrap(), message);
    match message {
        FrameMessage::Hello(value) => {
            assert_eq!(&frame.decode_hello().unwrap(), value);
        }
        FrameMessage::RaftBatch(value) => {
            assert_eq!(&frame.decode_raft_batch().unwrap(), value);
        }
        FrameMessage::HeartbeatBatch(value) => {
            assert_eq!(&frame.decode_heartbeat_batch().unwrap(), value);
        }
        FrameMessage::HeartbeatResponseBatch(value) => {
            assert_eq!(&frame.decode_heartbeat_response_batch().unwrap(), value);
        }
        FrameMessage::SnapshotChunk(value) => {
            assert_eq!(&frame.decode_snapshot_chunk().unwrap(), value);
        }
        FrameMessage::SnapshotAck(value) => {
            assert_eq!(&frame.decode_snapshot_ack().unwrap(), value);
        }
        FrameMessage::RpcRequest(value) => {
            assert_eq!(&frame.decode_rpc_request().unwrap(), value);
        }
        FrameMessage::RpcResponse(value) => {
            assert_eq!(&frame.decode_rpc_response().unwrap(), value);
        }
    }
}

#[test]
fn every_sample_round_trips() {
    let samples = support::sample_messages();
    for kind in FrameKind::ALL {
        assert!(samples.iter().any(|m| m.kind() == kind), "no sample of {kind:?}");
    }
    for message in &samples {
        assert_round_trips(message);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn any_frame_message_round_trips(message in support::frame_message()) {
        assert_round_trips(&message);
    }

    #[test]
    fn any_rpc_request_round_trips(request in support::rpc_request()) {
        assert_round_trips(&FrameMessage::RpcRequest(request));
    }

    #[test]
    fn any_rpc_response_round_trips(response in support::rpc_response()) {
        assert_round_trips(&FrameMessage::RpcResponse(response));
    }

    /// A tuple stands for exactly the message it came from, and every tuple comes back.
    #[test]
    fn heartbeat_tuples_are_lossless(message in support::message(), beat in support::heartbeat()) {
        if let Some(tuple) = Heartbeat::from_message(RangeId(3), &message) {
            prop_assert_eq!(tuple.to_message(), message.clone());
            prop_assert_eq!(tuple.range, RangeId(3));
        }
        if let Some(tuple) = HeartbeatResponse::from_message(RangeId(3), &message) {
            prop_assert_eq!(tuple.to_message(), message);
        }
        prop_assert_eq!(Heartbeat::from_message(beat.range, &beat.to_message()), Some(beat));
    }

    #[test]
    fn heartbeat_response_tuples_come_back(response in support::heartbeat_response()) {
        prop_assert_eq!(
            HeartbeatResponse::from_message(response.range, &response.to_message()),
            Some(response)
        );
    }

    #[test]
    fn timestamps_split_and_join(physical_ms in 0..=Timestamp::PHYSICAL_MS_MAX, logical in 0..=Timestamp::LOGICAL_MAX) {
        let ts = Timestamp::from_parts(physical_ms, logical);
        prop_assert_eq!(ts.physical_ms(), physical_ms);
        prop_assert_eq!(ts.logical(), logical);
        prop_assert!(Timestamp::from_parts(physical_ms, 0) <= ts);
        if let Some(next) = ts.checked_next() {
            prop_assert!(next > ts);
            prop_assert_eq!(next.prev(), ts);
        }
    }
}

#[test]
fn heartbeats_with_a_read_context_are_not_coalesced() {
    let mut beat = Message::new(MessageKind::Heartbeat, ReplicaId(1), ReplicaId(2), Term(3));
    beat.commit = LogIndex(9);
    assert!(Heartbeat::from_message(RangeId(1), &beat).is_some());
    beat.context = Bytes::from_static(b"read-1");
    assert_eq!(Heartbeat::from_message(RangeId(1), &beat), None);

    let mut response =
        Message::new(MessageKind::HeartbeatResponse, ReplicaId(2), ReplicaId(1), Term(3));
    assert!(HeartbeatResponse::from_message(RangeId(1), &response).is_some());
    response.context = Bytes::from_static(b"read-1");
    assert_eq!(HeartbeatResponse::from_message(RangeId(1), &response), None);

    let append = Message::new(MessageKind::Append, ReplicaId(1), ReplicaId(2), Term(3));
    assert_eq!(Heartbeat::from_message(RangeId(1), &append), None);
    assert_eq!(HeartbeatResponse::from_message(RangeId(1), &append), None);
}

/// Coalescing must make heartbeats cheap: a tuple in a batch of 10,000 costs at most 64 bytes
/// on the wire (header and batch fields included), and so does a response tuple.
#[test]
fn a_coalesced_heartbeat_costs_few_bytes() {
    const BEATS: u64 = 10_000;
    let batch = HeartbeatBatch {
        from_store: StoreId(1),
        to_store: StoreId(2),
        tick: 1234,
        beats: (0..BEATS)
            .map(|i| Heartbeat {
                range: RangeId(i + 1),
                from: ReplicaId(i * 3 + 1),
                to: ReplicaId(i * 3 + 2),
                term: Term(7),
                commit: LogIndex(1_000_000 + i),
                quiesce: i % 2 == 0,
            })
            .collect(),
    };
    let bytes = encode_frame(&batch).unwrap();
    let per_beat = bytes.len() as f64 / BEATS as f64;
    println!(
        "heartbeat batch: {} bytes for {BEATS} heartbeats = {per_beat:.2} B each",
        bytes.len()
    );
    assert!(per_beat <= 64.0, "{per_beat} bytes per heartbeat");

    let responses = HeartbeatResponseBatch {
        from_store: StoreId(2),
        to_store: StoreId(1),
        tick: 1234,
        responses: batch
            .beats
            .iter()
            .map(|b| HeartbeatResponse { range: b.range, from: b.to, to: b.from, term: b.term })
            .collect(),
    };
    let response_bytes = encode_frame(&responses).unwrap();
    let per_response = response_bytes.len() as f64 / BEATS as f64;
    println!("heartbeat response batch: {} bytes = {per_response:.2} B each", response_bytes.len());
    assert!(per_response <= 64.0, "{per_response} bytes per heartbeat response");

    // The receiver reads the tuples in place, without deserializing the batch.
    let mut decoder = FrameDecoder::default();
    decoder.feed(&bytes).unwrap();
    let frame = decoder.next_frame().unwrap().unwrap();
    let archived = frame.access::<HeartbeatBatch>().unwrap();
    assert_eq!(archived.beats.len(), BEATS as usize);
    assert_eq!(archived.beats[9_999].commit.0, 1_000_000 + 9_999);
    assert_eq!(decode::<HeartbeatBatch>(&frame).unwrap(), batch);
}

#[test]
fn frames_append_to_a_buffer_and_keep_what_was_there() {
    let samples = support::sample_messages();
    let mut buffer = BytesMut::from(&b"prefix"[..]);
    for message in &samples {
        message.encode_into(&mut buffer).unwrap();
    }
    assert_eq!(&buffer[..6], b"prefix");
    let mut decoder = FrameDecoder::default();
    decoder.feed(&buffer[6..]).unwrap();
    for message in &samples {
        assert_eq!(&decoder.next_message().unwrap().unwrap(), message);
    }
    assert!(decoder.next_message().unwrap().is_none());
    decoder.finish().unwrap();

    // The typed encoder writes the same bytes as the enum's.
    let hello = Hello::new(1, NodeId(2));
    let mut typed = BytesMut::new();
    encode_frame_into(&hello, &mut typed).unwrap();
    assert_eq!(typed.freeze(), FrameMessage::Hello(hello).encode().unwrap());
}

#[test]
fn frame_headers_are_laid_out_as_documented() {
    let bytes = encode_frame(&Hello::new(9, NodeId(4))).unwrap();
    let payload_bytes = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
    assert_eq!(payload_bytes, bytes.len() - HEADER_BYTES);
    assert_eq!(bytes[4], 1, "Hello is kind 1");
    assert_eq!(bytes[5], 1, "Hello is always version 1");
    assert_eq!(&bytes[6..8], &[0, 0]);

    let batch = encode_frame(&HeartbeatBatch::default()).unwrap();
    assert_eq!(batch[4], 3);
    assert_eq!(batch[5], PROTOCOL_VERSION);
    for kind in FrameKind::ALL {
        assert_eq!(FrameKind::from_u8(kind.as_u8()), Some(kind));
    }
    assert_eq!(FrameKind::from_u8(0), None);
}

#[test]
fn hellos_negotiate_the_highest_common_version() {
    let local = Hello { cluster_id: 1, node_id: NodeId(1), version_min: 1, version_max: 3 };
    let peer = |version_min, version_max| Hello {
        cluster_id: 1,
        node_id: NodeId(2),
        version_min,
        version_max,
    };
    assert_eq!(local.negotiate(&peer(1, 1)), Ok(1));
    assert_eq!(local.negotiate(&peer(2, 5)), Ok(3));
    assert_eq!(peer(2, 5).negotiate(&local), Ok(3));
    assert!(matches!(local.negotiate(&peer(4, 6)), Err(HandshakeError::NoCommonVersion { .. })));
    assert!(matches!(local.negotiate(&peer(3, 2)), Err(HandshakeError::EmptyVersionRange { .. })));
    let stranger = Hello { cluster_id: 2, ..peer(1, 3) };
    assert_eq!(
        local.negotiate(&stranger),
        Err(HandshakeError::ClusterMismatch { local: 1, remote: 2 })
    );
    let this_build = Hello::new(1, NodeId(5));
    assert_eq!(this_build.negotiate(&this_build), Ok(PROTOCOL_VERSION));
}

#[test]
fn descriptors_contain_their_span() {
    let mut range = RangeDescriptor {
        id: RangeId(1),
        start_key: Bytes::from_static(b"b"),
        end_key: Bytes::from_static(b"d"),
        epoch: RangeEpoch::default(),
        replicas: vec![Replica {
            id: ReplicaId(4),
            store_id: StoreId(8),
            role: ReplicaRole::Learner,
        }],
    };
    assert!(!range.contains_key(b"a"));
    assert!(!range.contains_key(b""));
    assert!(range.contains_key(b"b"));
    assert!(range.contains_key(b"c\xff"));
    assert!(!range.contains_key(b"d"));
    range.end_key = Bytes::new();
    assert!(range.contains_key(b"\xff\xff\xff"));
    range.start_key = Bytes::new();
    assert!(range.contains_key(b""));
    assert_eq!(range.replica(ReplicaId(4)).map(|r| r.store_id), Some(StoreId(8)));
    assert_eq!(range.replica_on_store(StoreId(8)).map(|r| r.id), Some(ReplicaId(4)));
    assert!(range.replica(ReplicaId(5)).is_none());
    assert!(!ReplicaRole::Learner.is_voter());
    assert!(ReplicaRole::DemotingVoter.is_voter());
    let epoch = RangeEpoch { conf_ver: 2, version: 2 };
    assert!(RangeEpoch { conf_ver: 1, version: 2 }.is_stale_against(epoch));
    assert!(RangeEpoch { conf_ver: 3, version: 1 }.is_stale_against(epoch));
    assert!(!RangeEpoch { conf_ver: 3, version: 2 }.is_stale_against(epoch));
}

#[test]
fn timestamps_compose_as_documented() {
    let ts = Timestamp::from_parts(1, 5);
    assert_eq!(ts.0, (1 << 18) | 5);
    assert_eq!(
        Timestamp::from_parts(0, Timestamp::LOGICAL_MAX).checked_next(),
        Some(Timestamp::from_parts(1, 0))
    );
    assert_eq!(Timestamp::MAX.checked_next(), None);
    assert_eq!(Timestamp::ZERO.prev(), Timestamp::ZERO);
    assert!(Timestamp::ZERO.is_zero());
    assert_eq!(Timestamp::MAX.physical_ms(), Timestamp::PHYSICAL_MS_MAX);
}

#[test]
#[should_panic(expected = "logical part")]
fn a_logical_overflow_is_a_broken_invariant() {
    let _ = Timestamp::from_parts(1, Timestamp::LOGICAL_MAX + 1);
}

#[test]
fn snapshot_chunks_are_checked_after_validation() {
    let FrameMessage::SnapshotChunk(chunk) = support::sample_messages().swap_remove(4) else {
        panic!("sample 4 is a snapshot chunk");
    };
    assert!(chunk.checksum_matches());
    let decode_chunk = |chunk: &SnapshotChunk| {
        let mut decoder = FrameDecoder::default();
        decoder.feed(&encode_frame(chunk).unwrap()).unwrap();
        decoder.next_frame().unwrap().unwrap().decode_snapshot_chunk()
    };
    assert_eq!(decode_chunk(&chunk).unwrap(), chunk);

    let mut corrupted = chunk.clone();
    corrupted.data = Bytes::from_static(b"sst bytes!!");
    assert!(matches!(
        decode_chunk(&corrupted),
        Err(FrameError::Invalid { kind: FrameKind::SnapshotChunk, .. })
    ));

    let mut moved = chunk.clone();
    moved.offset += 1;
    assert!(!moved.checksum_matches());

    let mut headless = chunk.clone();
    headless.header = None;
    assert!(matches!(decode_chunk(&headless.sealed()), Err(FrameError::Invalid { .. })));

    let mut late_header = chunk;
    late_header.seq = 1;
    assert!(matches!(decode_chunk(&late_header.sealed()), Err(FrameError::Invalid { .. })));
}

#[test]
fn rpc_errors_display_and_classify() {
    let errors = [
        RpcError::NotLeader { range: RangeId(1), leader: None },
        RpcError::EpochNotMatch { ranges: vec![] },
        RpcError::KeyNotInRange {
            key: Bytes::from_static(b"z"),
            range: RangeId(1),
            start_key: Bytes::new(),
            end_key: Bytes::from_static(b"m"),
        },
        RpcError::ServerBusy { reason: "mailbox full".into(), retry_after_ms: 50 },
        RpcError::Timeout,
    ];
    for error in &errors {
        let as_std: &dyn std::error::Error = error;
        assert!(!as_std.to_string().is_empty());
    }
    assert_eq!(errors[3].to_string(), "server busy (mailbox full), retry after 50 ms");
    assert!(errors[0].invalidates_route());
    assert!(errors[2].invalidates_route());
    assert!(!errors[3].invalidates_route());

    let ok: Result<RpcResponseBody, RpcError> = Ok(RpcResponseBody::Kv(KvResponse::RawPut));
    assert_eq!(RpcResult::from(ok.clone()).into_result(), ok);
    let err: Result<RpcResponseBody, RpcError> = Err(RpcError::StaleCommand);
    assert_eq!(RpcResult::from(err.clone()).into_result(), err);
}
