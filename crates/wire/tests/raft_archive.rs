//! Raft messages survive an rkyv round trip, and malformed bytes are refused, not trusted.

use bytes::Bytes;
use proptest::prelude::*;
use rkyv::rancor::Error;
use tessera_wire::raft::{
    ArchivedMessage, ConfChange, ConfChangeStep, ConfState, Entry, EntryKind, LogIndex, Message,
    MessageKind, ReplicaId, Snapshot, SnapshotMetadata, Term, decode_conf_change,
    encode_conf_change,
};

fn sample_message() -> Message {
    let mut message = Message::new(MessageKind::Append, ReplicaId(1), ReplicaId(2), Term(7));
    message.index = LogIndex(41);
    message.log_term = Term(6);
    message.commit = LogIndex(40);
    message.entries = vec![
        Entry {
            term: Term(7),
            index: LogIndex(42),
            kind: EntryKind::Normal,
            data: Bytes::from_static(b"put a 1"),
        },
        Entry {
            term: Term(7),
            index: LogIndex(43),
            kind: EntryKind::ConfChange,
            data: Bytes::new(),
        },
    ];
    message.snapshot = Some(Box::new(Snapshot {
        metadata: SnapshotMetadata {
            index: LogIndex(30),
            term: Term(5),
            conf_state: ConfState {
                voters: vec![ReplicaId(1), ReplicaId(2)],
                ..Default::default()
            },
        },
        data: Bytes::from_static(b"state"),
    }));
    message.context = Bytes::from_static(b"ctx");
    message
}

#[test]
fn a_message_round_trips_and_is_readable_in_place() {
    let message = sample_message();
    let bytes = rkyv::to_bytes::<Error>(&message).unwrap();
    let archived = rkyv::access::<ArchivedMessage, Error>(&bytes).unwrap();
    assert_eq!(archived.entries.len(), 2);
    assert_eq!(archived.entries[0].data.as_slice(), b"put a 1");
    let back: Message = rkyv::deserialize::<Message, Error>(archived).unwrap();
    assert_eq!(back, message);
}

#[test]
fn a_conf_change_round_trips_as_an_entry_payload() {
    let change = ConfChange {
        steps: vec![ConfChangeStep::AddLearner(ReplicaId(4)), ConfChangeStep::Remove(ReplicaId(2))],
        explicit_leave: true,
        context: bytes::Bytes::from_static(b"stores"),
    };
    assert_eq!(decode_conf_change(&encode_conf_change(&change)).unwrap(), change);
}

#[test]
fn garbage_is_refused_as_a_conf_change() {
    assert!(decode_conf_change(b"").is_err());
    assert!(decode_conf_change(&[0xff; 7]).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Validation never panics: random bytes and single-byte mutations of a real message are
    /// either refused or decode to some value; a mutation of a length or offset is refused.
    #[test]
    fn mutated_messages_are_validated_without_panicking(
        position in 0usize..4096,
        byte in any::<u8>(),
        noise in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let bytes = rkyv::to_bytes::<Error>(&sample_message()).unwrap();
        let mut mutated = rkyv::util::AlignedVec::<16>::new();
        mutated.extend_from_slice(&bytes);
        let position = position % mutated.len();
        mutated[position] = byte;
        if let Ok(archived) = rkyv::access::<ArchivedMessage, Error>(&mutated) {
            let _ = rkyv::deserialize::<Message, Error>(archived);
        }
        let mut random = rkyv::util::AlignedVec::<16>::new();
        random.extend_from_slice(&noise);
        let _ = rkyv::access::<ArchivedMessage, Error>(&random);
        let _ = decode_conf_change(&noise);
    }
}

#[test]
fn a_truncated_message_is_refused() {
    let bytes = rkyv::to_bytes::<Error>(&sample_message()).unwrap();
    for cut in [0, 1, bytes.len() / 2, bytes.len() - 1] {
        let mut truncated = rkyv::util::AlignedVec::<16>::new();
        truncated.extend_from_slice(&bytes[..cut]);
        assert!(rkyv::access::<ArchivedMessage, Error>(&truncated).is_err(), "cut at {cut}");
    }
}

/// `MessageKind::ALL` lists every kind once, in order. The match is exhaustive, so a new
/// kind does not compile here until it is placed, and then this fails until `ALL` has it.
#[test]
fn message_kind_all_lists_every_kind() {
    fn position(kind: MessageKind) -> usize {
        match kind {
            MessageKind::Append => 0,
            MessageKind::AppendResponse => 1,
            MessageKind::RequestVote => 2,
            MessageKind::RequestVoteResponse => 3,
            MessageKind::RequestPreVote => 4,
            MessageKind::RequestPreVoteResponse => 5,
            MessageKind::Heartbeat => 6,
            MessageKind::HeartbeatResponse => 7,
            MessageKind::Snapshot => 8,
            MessageKind::TimeoutNow => 9,
            MessageKind::ReadIndex => 10,
            MessageKind::ReadIndexResponse => 11,
            MessageKind::Tombstone => 12,
        }
    }
    for (index, kind) in MessageKind::ALL.into_iter().enumerate() {
        assert_eq!(position(kind), index, "{kind:?}");
    }
}

/// Raft messages are moved through queues by value many times per send (batcher, frames,
/// fan-out), so their size is a cost; the snapshot is boxed to keep it small.
#[test]
fn a_message_stays_small_in_memory() {
    let size = std::mem::size_of::<Message>();
    eprintln!("size_of::<Message>() = {size}");
    assert!(size <= 144, "Message grew to {size} bytes");
}
