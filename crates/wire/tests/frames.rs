//! The frame decoder: any chunking of a stream yields the same frames, every `FrameError` is
//! reachable, and no input — random or a mutated valid stream — makes it or any `decode`
//! panic.
//!
//! The fuzz case count is `PROPTEST_CASES` (default 20,000).

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::BytesMut;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tessera_wire::frame::{
    Frame, FrameDecoder, FrameError, FrameKind, FrameMessage, HEADER_BYTES, HELLO_VERSION,
    MAX_FRAME_BYTES, PROTOCOL_VERSION, decode,
};
use tessera_wire::rpc::{RpcRequest, RpcResponse};
use tessera_wire::transport::{
    HeartbeatBatch, HeartbeatResponseBatch, Hello, RaftBatch, SnapshotAck, SnapshotChunk,
    SnapshotStatus,
};

fn encode_all(messages: &[FrameMessage]) -> BytesMut {
    let mut stream = BytesMut::new();
    for message in messages {
        message.encode_into(&mut stream).unwrap();
    }
    stream
}

/// Feeds `stream` in pieces cut at `cuts` (offsets, any order, clamped) and collects the frames.
fn frames_when_cut(stream: &[u8], cuts: &[usize]) -> Vec<Frame> {
    let mut cuts: Vec<usize> = cuts.iter().map(|&c| c.min(stream.len())).collect();
    cuts.push(0);
    cuts.push(stream.len());
    cuts.sort_unstable();
    let mut decoder = FrameDecoder::default();
    let mut frames = Vec::new();
    for piece in cuts.windows(2) {
        decoder.feed(&stream[piece[0]..piece[1]]).unwrap();
        while let Some(frame) = decoder.next_frame().unwrap() {
            frames.push(frame);
        }
    }
    decoder.finish().unwrap();
    frames
}

fn header(payload_bytes: u32, kind: u8, version: u8, reserved: u16) -> [u8; HEADER_BYTES] {
    let mut bytes = [0u8; HEADER_BYTES];
    bytes[..4].copy_from_slice(&payload_bytes.to_be_bytes());
    bytes[4] = kind;
    bytes[5] = version;
    bytes[6..].copy_from_slice(&reserved.to_be_bytes());
    bytes
}

/// The error a decoder gives for `bytes`, fed whole.
fn decoder_error(bytes: &[u8]) -> FrameError {
    let mut decoder = FrameDecoder::new(1024);
    let error = match decoder.feed(bytes) {
        Err(error) => error,
        Ok(()) => decoder.next_frame().unwrap_err(),
    };
    // The decoder stays failed and holds nothing.
    assert_eq!(decoder.buffered_bytes(), 0);
    assert_eq!(decoder.next_frame().unwrap_err(), error);
    assert_eq!(decoder.feed(b"more").unwrap_err(), error);
    assert_eq!(decoder.finish().unwrap_err(), error);
    error
}

#[test]
fn byte_by_byte_feeding_yields_the_same_frames() {
    let messages = support::sample_messages();
    let stream = encode_all(&messages);
    let whole = frames_when_cut(&stream, &[]);
    let every_byte: Vec<usize> = (0..stream.len()).collect();
    assert_eq!(frames_when_cut(&stream, &every_byte), whole);
    let decoded: Vec<FrameMessage> = whole.iter().map(|f| f.decode_message().unwrap()).collect();
    assert_eq!(decoded, messages);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_chunking_yields_the_same_frames(
        messages in vec(support::frame_message(), 0..6),
        cuts in vec(any::<usize>(), 0..24),
    ) {
        let stream = encode_all(&messages);
        let whole = frames_when_cut(&stream, &[]);
        let cuts: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
        prop_assert_eq!(frames_when_cut(&stream, &cuts), whole.clone());
        let decoded: Vec<FrameMessage> = whole.iter().map(|f| f.decode_message().unwrap()).collect();
        prop_assert_eq!(decoded, messages);
    }
}

#[test]
fn an_oversize_length_is_refused_before_the_payload_is_buffered() {
    let mut decoder = FrameDecoder::new(100);
    assert_eq!(decoder.frame_bytes_max(), 100);
    let announced = header(101, FrameKind::RaftBatch.as_u8(), PROTOCOL_VERSION, 0);
    decoder.feed(&announced[..7]).unwrap();
    assert_eq!(decoder.next_frame().unwrap(), None);
    // The eighth byte completes the header: refused at once, nothing kept.
    assert_eq!(
        decoder.feed(&announced[7..]),
        Err(FrameError::Oversize { payload_bytes: 101, frame_bytes_max: 100 })
    );
    assert_eq!(decoder.buffered_bytes(), 0);
}

#[test]
fn each_frame_error_is_reachable() {
    // Oversize: the default bound, and a custom one, refused on the header alone.
    let mut decoder = FrameDecoder::default();
    let too_big = u32::try_from(MAX_FRAME_BYTES + 1).unwrap();
    assert_eq!(
        decoder.feed(&header(too_big, 2, PROTOCOL_VERSION, 0)),
        Err(FrameError::Oversize {
            payload_bytes: u64::from(too_big),
            frame_bytes_max: MAX_FRAME_BYTES as u64
        })
    );
    assert_eq!(decoder.buffered_bytes(), 0);
    assert_eq!(
        decoder_error(&header(1025, 2, PROTOCOL_VERSION, 0)),
        FrameError::Oversize { payload_bytes: 1025, frame_bytes_max: 1024 }
    );
    // Exactly the bound is fine: the decoder waits for the payload.
    let mut decoder = FrameDecoder::new(1024);
    decoder.feed(&header(1024, 2, PROTOCOL_VERSION, 0)).unwrap();
    assert_eq!(decoder.next_frame().unwrap(), None);

    // Unknown kinds.
    for kind in [0u8, 9, 0x7f, 0xff] {
        assert_eq!(
            decoder_error(&header(0, kind, PROTOCOL_VERSION, 0)),
            FrameError::UnknownKind { kind }
        );
    }

    // Unsupported versions, and a Hello only ever at HELLO_VERSION.
    for version in [0u8, PROTOCOL_VERSION + 1, 0xff] {
        assert_eq!(
            decoder_error(&header(0, 7, version, 0)),
            FrameError::UnsupportedVersion { kind: FrameKind::RpcRequest, version }
        );
    }
    assert_eq!(
        decoder_error(&header(0, 1, HELLO_VERSION + 1, 0)),
        FrameError::UnsupportedVersion { kind: FrameKind::Hello, version: HELLO_VERSION + 1 }
    );

    // Reserved bits.
    for reserved in [1u16, 0x8000, 0xffff] {
        assert_eq!(
            decoder_error(&header(0, 2, PROTOCOL_VERSION, reserved)),
            FrameError::ReservedNotZero { reserved }
        );
    }

    // Truncated: the stream ends inside a header, or inside a payload.
    let hello = FrameMessage::Hello(Hello::new(1, tessera_wire::ids::NodeId(1))).encode().unwrap();
    for cut in [1, HEADER_BYTES, hello.len() - 1] {
        let mut decoder = FrameDecoder::default();
        decoder.feed(&hello[..cut]).unwrap();
        assert_eq!(decoder.next_frame().unwrap(), None);
        assert_eq!(decoder.finish(), Err(FrameError::Truncated { buffered_bytes: cut }));
    }

    // Kind mismatch.
    let mut decoder = FrameDecoder::default();
    decoder.feed(&hello).unwrap();
    let frame = decoder.next_frame().unwrap().unwrap();
    assert_eq!(
        decode::<RaftBatch>(&frame),
        Err(FrameError::KindMismatch { expected: FrameKind::RaftBatch, actual: FrameKind::Hello })
    );
    assert!(matches!(frame.access::<RpcRequest>(), Err(FrameError::KindMismatch { .. })));

    // Invalid payloads: empty, garbage, a valid archive of another type, a cut archive.
    let invalid = |kind: FrameKind, payload: &[u8]| {
        let mut bytes =
            header(u32::try_from(payload.len()).unwrap(), kind.as_u8(), kind.write_version(), 0)
                .to_vec();
        bytes.extend_from_slice(payload);
        let mut decoder = FrameDecoder::default();
        decoder.feed(&bytes).unwrap();
        let error = decoder.next_message().unwrap_err();
        assert!(
            matches!(&error, FrameError::Invalid { kind: k, .. } if *k == kind),
            "{kind:?}: {error:?}"
        );
        assert!(!error.to_string().is_empty());
        assert_eq!(decoder.next_frame().unwrap_err(), error, "the decoder stays failed");
    };
    invalid(FrameKind::RaftBatch, b"");
    invalid(FrameKind::RpcRequest, &[0xff; 64]);
    invalid(FrameKind::Hello, &frame.payload[..frame.payload.len() - 1]);
    // An enum tag no variant has: find the status tag by encoding two acks that differ only
    // in it, then set it out of range.
    let ack = |status| {
        FrameMessage::SnapshotAck(SnapshotAck {
            range: tessera_wire::ids::RangeId(1),
            snapshot_id: 2,
            chunks_received: 3,
            status,
        })
        .encode()
        .unwrap()
    };
    let receiving = ack(SnapshotStatus::Receiving);
    let received = ack(SnapshotStatus::Received);
    let differing: Vec<usize> =
        (0..receiving.len()).filter(|&i| receiving[i] != received[i]).collect();
    assert_eq!(differing.len(), 1, "only the status tag differs");
    let mut bad_tag = receiving[HEADER_BYTES..].to_vec();
    bad_tag[differing[0] - HEADER_BYTES] = 0xff;
    invalid(FrameKind::SnapshotAck, &bad_tag);
    // FrameError::Encode needs an archive beyond rkyv's 2 GiB relative-pointer reach; it is
    // not exercised here.
}

/// Outcomes seen by the fuzz test, to show it reaches both the accepting and refusing paths.
static FRAMES_DECODED: AtomicU64 = AtomicU64::new(0);
static FRAMES_REFUSED: AtomicU64 = AtomicU64::new(0);
static STREAMS_FAILED: AtomicU64 = AtomicU64::new(0);

/// Decodes `frame` as every type, and through the generic dispatch; errors are fine, panics
/// are not.
fn decode_every_way(frame: &Frame) {
    let counter = if frame.decode_message().is_ok() { &FRAMES_DECODED } else { &FRAMES_REFUSED };
    counter.fetch_add(1, Ordering::Relaxed);
    for kind in FrameKind::ALL {
        let frame = Frame { kind, version: frame.version, payload: frame.payload.clone() };
        let _ = decode::<Hello>(&frame);
        let _ = decode::<RaftBatch>(&frame);
        let _ = decode::<HeartbeatBatch>(&frame);
        let _ = decode::<HeartbeatResponseBatch>(&frame);
        let _ = decode::<SnapshotChunk>(&frame);
        let _ = decode::<SnapshotAck>(&frame);
        let _ = decode::<RpcRequest>(&frame);
        let _ = decode::<RpcResponse>(&frame);
    }
}

/// How to damage a valid stream.
#[derive(Clone, Debug)]
enum Damage {
    FlipBit { position: usize, bit: u8 },
    SetByte { position: usize, byte: u8 },
    Truncate { len: usize },
    SetLength { frame: usize, payload_bytes: u32 },
    NudgeLength { frame: usize, delta: i8 },
    Insert { position: usize, bytes: Vec<u8> },
    Remove { position: usize, count: usize },
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        3 => (any::<usize>(), 0u8..8).prop_map(|(position, bit)| Damage::FlipBit { position, bit }),
        2 => (any::<usize>(), any::<u8>()).prop_map(|(position, byte)| Damage::SetByte { position, byte }),
        1 => any::<usize>().prop_map(|len| Damage::Truncate { len }),
        1 => (any::<usize>(), any::<u32>()).prop_map(|(frame, payload_bytes)| Damage::SetLength { frame, payload_bytes }),
        2 => (any::<usize>(), any::<i8>()).prop_map(|(frame, delta)| Damage::NudgeLength { frame, delta }),
        1 => (any::<usize>(), vec(any::<u8>(), 1..16)).prop_map(|(position, bytes)| Damage::Insert { position, bytes }),
        1 => (any::<usize>(), 1usize..16).prop_map(|(position, count)| Damage::Remove { position, count }),
    ]
}

/// Applies `damage` to `stream`, whose frames start at `starts`.
fn apply(stream: &mut Vec<u8>, starts: &[usize], damage: &Damage) {
    if stream.is_empty() {
        return;
    }
    let len = stream.len();
    match damage {
        Damage::FlipBit { position, bit } => stream[position % len] ^= 1 << bit,
        Damage::SetByte { position, byte } => stream[position % len] = *byte,
        Damage::Truncate { len: keep } => stream.truncate(keep % len),
        Damage::SetLength { frame, .. } | Damage::NudgeLength { frame, .. }
            if starts[frame % starts.len()] + 4 > len => {}
        Damage::SetLength { frame, payload_bytes } => {
            let start = starts[frame % starts.len()];
            stream[start..start + 4].copy_from_slice(&payload_bytes.to_be_bytes());
        }
        Damage::NudgeLength { frame, delta } => {
            let start = starts[frame % starts.len()];
            let old = u32::from_be_bytes(stream[start..start + 4].try_into().unwrap());
            let new = old.wrapping_add_signed(i32::from(*delta));
            stream[start..start + 4].copy_from_slice(&new.to_be_bytes());
        }
        Damage::Insert { position, bytes } => {
            let at = position % (len + 1);
            stream.splice(at..at, bytes.iter().copied());
        }
        Damage::Remove { position, count } => {
            let at = position % len;
            let end = (at + count).min(len);
            stream.drain(at..end);
        }
    }
}

/// Feeds `stream` cut at `cuts` into a decoder bounded at `frame_bytes_max`, decoding every
/// frame every way, until the stream ends or the decoder fails.
fn feed_and_decode(stream: &[u8], cuts: &[usize], frame_bytes_max: usize) {
    let mut decoder = FrameDecoder::new(frame_bytes_max);
    let mut offsets: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    offsets.push(0);
    offsets.push(stream.len());
    offsets.sort_unstable();
    for piece in offsets.windows(2) {
        if decoder.feed(&stream[piece[0]..piece[1]]).is_err() {
            STREAMS_FAILED.fetch_add(1, Ordering::Relaxed);
            return;
        }
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => decode_every_way(&frame),
                Ok(None) => break,
                Err(_) => {
                    STREAMS_FAILED.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
    }
    if decoder.finish().is_err() {
        STREAMS_FAILED.fetch_add(1, Ordering::Relaxed);
    }
}

fn fuzz_cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000)
}

/// Random bytes, and valid streams damaged in up to four ways, never panic the decoder or any
/// `decode`. Errors are the expected outcome.
#[test]
fn damaged_and_random_input_never_panics() {
    let cases = fuzz_cases();
    let mut runner =
        TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
    let started = Instant::now();
    let input = (
        vec(support::frame_message(), 1..4),
        vec(damage(), 0..4),
        vec(any::<u8>(), 0..512),
        vec(any::<usize>(), 0..8),
        prop_oneof![Just(MAX_FRAME_BYTES), 0usize..4096],
    );
    runner
        .run(&input, |(messages, damages, noise, cuts, frame_bytes_max)| {
            // A valid stream, damaged.
            let mut stream = Vec::new();
            let mut starts = Vec::new();
            for message in &messages {
                starts.push(stream.len());
                stream.extend_from_slice(&message.encode().unwrap());
            }
            for damage in &damages {
                apply(&mut stream, &starts, damage);
            }
            feed_and_decode(&stream, &cuts, frame_bytes_max);

            // Random bytes as a stream, after a valid header, and as a payload of every kind.
            feed_and_decode(&noise, &cuts, frame_bytes_max);
            let kind = FrameKind::ALL[noise.len() % FrameKind::ALL.len()];
            let mut framed = Vec::with_capacity(HEADER_BYTES + noise.len());
            framed.extend_from_slice(&header(
                u32::try_from(noise.len()).unwrap(),
                kind.as_u8(),
                kind.write_version(),
                0,
            ));
            framed.extend_from_slice(&noise);
            feed_and_decode(&framed, &cuts, frame_bytes_max);
            let mut payload = rkyv::util::AlignedVec::<16>::new();
            payload.extend_from_slice(&noise);
            decode_every_way(&Frame { kind, version: PROTOCOL_VERSION, payload });
            Ok(())
        })
        .unwrap();
    let elapsed = started.elapsed();
    let decoded = FRAMES_DECODED.load(Ordering::Relaxed);
    let refused = FRAMES_REFUSED.load(Ordering::Relaxed);
    let failed = STREAMS_FAILED.load(Ordering::Relaxed);
    println!(
        "fuzz: {cases} cases in {:.2} s; frames decoded {decoded}, frames refused {refused}, \
         streams failed {failed}",
        elapsed.as_secs_f64()
    );
    if cases >= 1000 {
        assert!(decoded > 0 && refused > 0 && failed > 0, "the fuzz misses a path");
    }
}
