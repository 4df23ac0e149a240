//! The frame format: how messages are cut out of a byte stream and checked before use.
//!
//! # Layout
//!
//! A frame is an 8-byte header followed by `len` payload bytes:
//!
//! | offset | size | field      | meaning                                                      |
//! |--------|------|------------|--------------------------------------------------------------|
//! | 0      | 4    | `len`      | payload length in bytes, unsigned big-endian                 |
//! | 4      | 1    | `kind`     | what the payload is ([`FrameKind`])                          |
//! | 5      | 1    | `version`  | the frame version the payload is laid out in                 |
//! | 6      | 2    | `reserved` | zero; a reader refuses anything else                         |
//! | 8      | len  | payload    | an rkyv 0.8 archive of the kind's type, root at the end      |
//!
//! There is no per-frame magic number or checksum: QUIC and TLS already protect the bytes,
//! the connection opens with a [`Hello`], and a stream that lost
//! its framing is caught by the header checks (a known kind, a known version and two zero
//! bytes: a random header passes with odds below 1 in 10^8), then by payload validation.
//!
//! # Reading untrusted bytes
//!
//! [`FrameDecoder`] is fed bytes in any chunking and yields [`Frame`]s. It refuses a header
//! as soon as its 8 bytes are in (an oversize length before any payload is buffered; it never
//! reserves memory on a peer's say-so), and after one error it stays failed: the caller closes
//! the stream. [`Frame::decode`] (or [`decode`]) copies nothing further: the payload already
//! sits in a 16-byte aligned buffer; it runs bytecheck validation (`rkyv::access`) over it,
//! then deserializes the owned type and runs the type's own semantic check
//! ([`FramePayload::check`], e.g. a snapshot chunk's checksum). A bad frame is always an
//! `Err`, never a panic.
//!
//! # The version rule
//!
//! - The `version` byte names the exact archived layout of the payload of every kind: the set
//!   of kinds, and for each its type's fields, their order and their meaning, as of that
//!   version. Version 1 is the types of this crate as they are today.
//! - A field's meaning is never changed and a field is never reused for something else, in
//!   any version. Adding a field, a variant or a message kind (or changing any type that is
//!   part of a payload, such as `raft::Message`) makes a new version: `PROTOCOL_VERSION` goes
//!   up by one, the previous layout stays available to the encoder for peers that negotiated
//!   it (old types move to a `v<N>` module), and the decoder keeps reading every version from
//!   `PROTOCOL_VERSION_MIN` on. A version is dropped only by raising `PROTOCOL_VERSION_MIN`,
//!   once no supported release writes it.
//! - A reader refuses a frame whose version it does not know
//!   ([`FrameError::UnsupportedVersion`]) and a kind it does not know
//!   ([`FrameError::UnknownKind`]). It never guesses at a newer layout: rkyv archives are not
//!   self-describing, so a guess would read garbage that might validate.
//! - Each side opens a connection with a [`Hello`] naming its
//!   supported range `version_min..=version_max`; both then use the highest version in both
//!   ranges ([`Hello::negotiate`]), or close the
//!   connection if there is none. Hello frames themselves are always version
//!   [`HELLO_VERSION`], and the `Hello` type never changes, so any two releases can
//!   handshake.
//!
//! `docs/wire.md` restates this with the rationale.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};
use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::ser::writer::{Positional, Writer};
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};

use crate::rpc::{RpcRequest, RpcResponse};
use crate::transport::{
    HeartbeatBatch, HeartbeatResponseBatch, Hello, RaftBatch, SnapshotAck, SnapshotChunk,
};

/// Bytes in a frame header.
pub const HEADER_BYTES: usize = 8;

/// The default bound on a frame's payload: 64 MiB.
pub const MAX_FRAME_BYTES: usize = 64 << 20;

/// The newest frame version this build reads and writes.
pub const PROTOCOL_VERSION: u8 = 1;

/// The oldest frame version this build reads and writes.
pub const PROTOCOL_VERSION_MIN: u8 = 1;

/// The version of every [`FrameKind::Hello`] frame, forever.
pub const HELLO_VERSION: u8 = 1;

/// What a frame's payload is. The discriminant is the `kind` byte of the header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameKind {
    /// [`Hello`]: the handshake, first on every connection.
    Hello = 1,
    /// [`RaftBatch`]: Raft messages for one node.
    RaftBatch = 2,
    /// [`HeartbeatBatch`]: coalesced heartbeats.
    HeartbeatBatch = 3,
    /// [`HeartbeatResponseBatch`]: coalesced heartbeat answers.
    HeartbeatResponseBatch = 4,
    /// [`SnapshotChunk`]: a piece of a snapshot stream.
    SnapshotChunk = 5,
    /// [`SnapshotAck`]: the receiver's answer on a snapshot stream.
    SnapshotAck = 6,
    /// [`RpcRequest`]: a client or placement request.
    RpcRequest = 7,
    /// [`RpcResponse`]: its answer.
    RpcResponse = 8,
}

impl FrameKind {
    /// Every kind, in discriminant order.
    pub const ALL: [Self; 8] = [
        Self::Hello,
        Self::RaftBatch,
        Self::HeartbeatBatch,
        Self::HeartbeatResponseBatch,
        Self::SnapshotChunk,
        Self::SnapshotAck,
        Self::RpcRequest,
        Self::RpcResponse,
    ];

    /// The header byte.
    #[must_use]
    pub const fn as_u8(self) -> u8 {
        self as u8
    }

    /// The kind for a header byte, if there is one.
    #[must_use]
    pub const fn from_u8(byte: u8) -> Option<Self> {
        Some(match byte {
            1 => Self::Hello,
            2 => Self::RaftBatch,
            3 => Self::HeartbeatBatch,
            4 => Self::HeartbeatResponseBatch,
            5 => Self::SnapshotChunk,
            6 => Self::SnapshotAck,
            7 => Self::RpcRequest,
            8 => Self::RpcResponse,
            _ => return None,
        })
    }

    /// The first version in which this kind exists.
    #[must_use]
    pub const fn since_version(self) -> u8 {
        match self {
            Self::Hello
            | Self::RaftBatch
            | Self::HeartbeatBatch
            | Self::HeartbeatResponseBatch
            | Self::SnapshotChunk
            | Self::SnapshotAck
            | Self::RpcRequest
            | Self::RpcResponse => 1,
        }
    }

    /// Whether this build reads a frame of this kind at `version`.
    #[must_use]
    pub const fn reads_version(self, version: u8) -> bool {
        match self {
            Self::Hello => version == HELLO_VERSION,
            _ => {
                let oldest = if self.since_version() > PROTOCOL_VERSION_MIN {
                    self.since_version()
                } else {
                    PROTOCOL_VERSION_MIN
                };
                oldest <= version && version <= PROTOCOL_VERSION
            }
        }
    }

    /// The version this build writes frames of this kind in.
    #[must_use]
    pub const fn write_version(self) -> u8 {
        match self {
            Self::Hello => HELLO_VERSION,
            _ => PROTOCOL_VERSION,
        }
    }
}

/// Why bytes could not be framed, or a frame not decoded. Any of these closes the stream.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The header announces a payload above the reader's bound (refused before the payload is
    /// read), or an encoder was given a value that does not fit a frame.
    #[error("frame payload of {payload_bytes} bytes exceeds the limit of {frame_bytes_max}")]
    Oversize {
        /// The announced (or encoded) payload length.
        payload_bytes: u64,
        /// The bound.
        frame_bytes_max: u64,
    },
    /// The `kind` byte names no kind this build knows.
    #[error("unknown frame kind {kind}")]
    UnknownKind {
        /// The byte.
        kind: u8,
    },
    /// This build does not read `kind` at `version`.
    #[error(
        "unsupported frame version {version} for {kind:?} (this build reads {PROTOCOL_VERSION_MIN}..={PROTOCOL_VERSION}, hello {HELLO_VERSION})"
    )]
    UnsupportedVersion {
        /// The frame's kind.
        kind: FrameKind,
        /// The version byte.
        version: u8,
    },
    /// The reserved header bytes are not zero.
    #[error("reserved frame header bits set: {reserved:#06x}")]
    ReservedNotZero {
        /// The two bytes, big-endian.
        reserved: u16,
    },
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame ({buffered_bytes} bytes buffered)")]
    Truncated {
        /// The bytes of the incomplete frame.
        buffered_bytes: usize,
    },
    /// The frame was decoded as another kind's type.
    #[error("frame is {actual:?}, expected {expected:?}")]
    KindMismatch {
        /// The kind asked for.
        expected: FrameKind,
        /// The frame's kind.
        actual: FrameKind,
    },
    /// The payload failed validation: not a well-formed archive of the kind's type, or a
    /// well-formed one that fails the type's check.
    #[error("invalid {kind:?} payload: {reason}")]
    Invalid {
        /// The frame's kind.
        kind: FrameKind,
        /// What was wrong.
        reason: String,
    },
    /// Serializing a value failed (an archive beyond rkyv's 32-bit relative pointers).
    #[error("cannot encode {kind:?}: {reason}")]
    Encode {
        /// The kind being encoded.
        kind: FrameKind,
        /// What went wrong.
        reason: String,
    },
}

/// A parsed frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Payload length.
    pub payload_bytes: u32,
    /// What the payload is.
    pub kind: FrameKind,
    /// The layout version of the payload.
    pub version: u8,
}

impl FrameHeader {
    /// The header's bytes.
    #[must_use]
    pub fn to_bytes(&self) -> [u8; HEADER_BYTES] {
        let mut bytes = [0u8; HEADER_BYTES];
        bytes[..4].copy_from_slice(&self.payload_bytes.to_be_bytes());
        bytes[4] = self.kind.as_u8();
        bytes[5] = self.version;
        bytes
    }

    /// Parses and checks a header against this build and the bound `frame_bytes_max`.
    pub fn parse(bytes: [u8; HEADER_BYTES], frame_bytes_max: usize) -> Result<Self, FrameError> {
        let [l0, l1, l2, l3, kind, version, r0, r1] = bytes;
        let reserved = u16::from_be_bytes([r0, r1]);
        if reserved != 0 {
            return Err(FrameError::ReservedNotZero { reserved });
        }
        let kind = FrameKind::from_u8(kind).ok_or(FrameError::UnknownKind { kind })?;
        if !kind.reads_version(version) {
            return Err(FrameError::UnsupportedVersion { kind, version });
        }
        let payload_bytes = u32::from_be_bytes([l0, l1, l2, l3]);
        if u64::from(payload_bytes) > frame_bytes_max as u64 {
            return Err(FrameError::Oversize {
                payload_bytes: payload_bytes.into(),
                frame_bytes_max: frame_bytes_max as u64,
            });
        }
        Ok(Self { payload_bytes, kind, version })
    }
}

/// A type that travels as the payload of one [`FrameKind`].
pub trait FramePayload: Archive + Sized {
    /// The kind of frame that carries it.
    const KIND: FrameKind;

    /// Semantic checks beyond archive validation, run after deserializing a received value
    /// (a snapshot chunk's checksum, say). The default accepts everything.
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

impl FramePayload for Hello {
    const KIND: FrameKind = FrameKind::Hello;
}

impl FramePayload for RaftBatch {
    const KIND: FrameKind = FrameKind::RaftBatch;
}

impl FramePayload for HeartbeatBatch {
    const KIND: FrameKind = FrameKind::HeartbeatBatch;
}

impl FramePayload for HeartbeatResponseBatch {
    const KIND: FrameKind = FrameKind::HeartbeatResponseBatch;
}

impl FramePayload for SnapshotChunk {
    const KIND: FrameKind = FrameKind::SnapshotChunk;

    fn check(&self) -> Result<(), String> {
        if self.header.is_some() != (self.seq == 0) {
            return Err(format!(
                "chunk {} {} a header",
                self.seq,
                if self.header.is_some() { "has" } else { "lacks" }
            ));
        }
        if !self.checksum_matches() {
            return Err(format!("chunk {} checksum mismatch", self.seq));
        }
        Ok(())
    }
}

impl FramePayload for SnapshotAck {
    const KIND: FrameKind = FrameKind::SnapshotAck;
}

impl FramePayload for RpcRequest {
    const KIND: FrameKind = FrameKind::RpcRequest;
}

impl FramePayload for RpcResponse {
    const KIND: FrameKind = FrameKind::RpcResponse;
}

/// The rkyv writer behind [`encode_frame_into`]: appends to a buffer, with positions counted
/// from the start of the payload so that the archive is valid once copied out on its own.
/// Public only because it appears in the encoders' bounds.
#[derive(Debug)]
pub struct FrameWriter {
    buffer: BytesMut,
    payload_start: usize,
}

impl Positional for FrameWriter {
    fn pos(&self) -> usize {
        self.buffer.len() - self.payload_start
    }
}

impl<E> Writer<E> for FrameWriter {
    fn write(&mut self, bytes: &[u8]) -> Result<(), E> {
        self.buffer.extend_from_slice(bytes);
        Ok(())
    }
}

/// Appends `value` as one frame to `buffer`. On error `buffer` is left as it was.
pub fn encode_frame_into<T>(value: &T, buffer: &mut BytesMut) -> Result<(), FrameError>
where
    T: FramePayload
        + for<'a> Serialize<HighSerializer<FrameWriter, ArenaHandle<'a>, rancor::Error>>,
{
    let kind = T::KIND;
    let mut frame = buffer.split_off(buffer.len());
    frame.put_bytes(0, HEADER_BYTES);
    let writer = rkyv::api::high::to_bytes_in::<_, rancor::Error>(
        value,
        FrameWriter { buffer: frame, payload_start: HEADER_BYTES },
    )
    .map_err(|error| FrameError::Encode { kind, reason: error.to_string() })?;
    let mut frame = writer.buffer;
    let payload_len = frame.len() - HEADER_BYTES;
    let payload_bytes = u32::try_from(payload_len).map_err(|_| FrameError::Oversize {
        payload_bytes: payload_len as u64,
        frame_bytes_max: u32::MAX.into(),
    })?;
    let header = FrameHeader { payload_bytes, kind, version: kind.write_version() };
    frame[..HEADER_BYTES].copy_from_slice(&header.to_bytes());
    buffer.unsplit(frame);
    Ok(())
}

/// `value` as one frame.
pub fn encode_frame<T>(value: &T) -> Result<Bytes, FrameError>
where
    T: FramePayload
        + for<'a> Serialize<HighSerializer<FrameWriter, ArenaHandle<'a>, rancor::Error>>,
{
    let mut buffer = BytesMut::new();
    encode_frame_into(value, &mut buffer)?;
    Ok(buffer.freeze())
}

/// One framed message, its payload not yet validated.
#[derive(Clone)]
pub struct Frame {
    /// What the payload is.
    pub kind: FrameKind,
    /// The payload's layout version.
    pub version: u8,
    /// The payload, aligned for rkyv.
    pub payload: AlignedVec<16>,
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} v{} ({} bytes)", self.kind, self.version, self.payload.len())
    }
}

impl PartialEq for Frame {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
            && self.version == other.version
            && self.payload.as_slice() == other.payload.as_slice()
    }
}

impl Eq for Frame {}

impl Frame {
    /// The frame's size on the wire.
    #[must_use]
    pub fn wire_bytes(&self) -> usize {
        HEADER_BYTES + self.payload.len()
    }

    /// Validates the payload as `T` and returns it archived, readable in place without
    /// deserializing. Only archive validation runs, not [`FramePayload::check`].
    pub fn access<T>(&self) -> Result<&T::Archived, FrameError>
    where
        T: FramePayload,
        T::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>,
    {
        if self.kind != T::KIND {
            return Err(FrameError::KindMismatch { expected: T::KIND, actual: self.kind });
        }
        rkyv::access::<T::Archived, rancor::Error>(&self.payload)
            .map_err(|error| FrameError::Invalid { kind: self.kind, reason: error.to_string() })
    }

    /// Validates and deserializes the payload as `T`, then runs `T`'s check.
    pub fn decode<T>(&self) -> Result<T, FrameError>
    where
        T: FramePayload,
        T::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
            + Deserialize<T, HighDeserializer<rancor::Error>>,
    {
        let archived = self.access::<T>()?;
        let value = rkyv::deserialize::<T, rancor::Error>(archived)
            .map_err(|error| FrameError::Invalid { kind: self.kind, reason: error.to_string() })?;
        value.check().map_err(|reason| FrameError::Invalid { kind: self.kind, reason })?;
        Ok(value)
    }

    /// Decodes the payload as whatever its kind says.
    pub fn decode_message(&self) -> Result<FrameMessage, FrameError> {
        Ok(match self.kind {
            FrameKind::Hello => FrameMessage::Hello(self.decode()?),
            FrameKind::RaftBatch => FrameMessage::RaftBatch(self.decode()?),
            FrameKind::HeartbeatBatch => FrameMessage::HeartbeatBatch(self.decode()?),
            FrameKind::HeartbeatResponseBatch => {
                FrameMessage::HeartbeatResponseBatch(self.decode()?)
            }
            FrameKind::SnapshotChunk => FrameMessage::SnapshotChunk(self.decode()?),
            FrameKind::SnapshotAck => FrameMessage::SnapshotAck(self.decode()?),
            FrameKind::RpcRequest => FrameMessage::RpcRequest(self.decode()?),
            FrameKind::RpcResponse => FrameMessage::RpcResponse(self.decode()?),
        })
    }

    /// Decodes a [`Hello`].
    pub fn decode_hello(&self) -> Result<Hello, FrameError> {
        self.decode()
    }

    /// Decodes a [`RaftBatch`].
    pub fn decode_raft_batch(&self) -> Result<RaftBatch, FrameError> {
        self.decode()
    }

    /// Decodes a [`HeartbeatBatch`].
    pub fn decode_heartbeat_batch(&self) -> Result<HeartbeatBatch, FrameError> {
        self.decode()
    }

    /// Decodes a [`HeartbeatResponseBatch`].
    pub fn decode_heartbeat_response_batch(&self) -> Result<HeartbeatResponseBatch, FrameError> {
        self.decode()
    }

    /// Decodes a [`SnapshotChunk`] (checksum checked).
    pub fn decode_snapshot_chunk(&self) -> Result<SnapshotChunk, FrameError> {
        self.decode()
    }

    /// Decodes a [`SnapshotAck`].
    pub fn decode_snapshot_ack(&self) -> Result<SnapshotAck, FrameError> {
        self.decode()
    }

    /// Decodes an [`RpcRequest`].
    pub fn decode_rpc_request(&self) -> Result<RpcRequest, FrameError> {
        self.decode()
    }

    /// Decodes an [`RpcResponse`].
    pub fn decode_rpc_response(&self) -> Result<RpcResponse, FrameError> {
        self.decode()
    }
}

/// Validates and deserializes `frame` as `T`: see [`Frame::decode`].
pub fn decode<T>(frame: &Frame) -> Result<T, FrameError>
where
    T: FramePayload,
    T::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
        + Deserialize<T, HighDeserializer<rancor::Error>>,
{
    frame.decode()
}

/// Any frame's content, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameMessage {
    /// See [`FrameKind::Hello`].
    Hello(Hello),
    /// See [`FrameKind::RaftBatch`].
    RaftBatch(RaftBatch),
    /// See [`FrameKind::HeartbeatBatch`].
    HeartbeatBatch(HeartbeatBatch),
    /// See [`FrameKind::HeartbeatResponseBatch`].
    HeartbeatResponseBatch(HeartbeatResponseBatch),
    /// See [`FrameKind::SnapshotChunk`].
    SnapshotChunk(SnapshotChunk),
    /// See [`FrameKind::SnapshotAck`].
    SnapshotAck(SnapshotAck),
    /// See [`FrameKind::RpcRequest`].
    RpcRequest(RpcRequest),
    /// See [`FrameKind::RpcResponse`].
    RpcResponse(RpcResponse),
}

impl FrameMessage {
    /// The kind of frame that carries it.
    #[must_use]
    pub const fn kind(&self) -> FrameKind {
        match self {
            Self::Hello(_) => FrameKind::Hello,
            Self::RaftBatch(_) => FrameKind::RaftBatch,
            Self::HeartbeatBatch(_) => FrameKind::HeartbeatBatch,
            Self::HeartbeatResponseBatch(_) => FrameKind::HeartbeatResponseBatch,
            Self::SnapshotChunk(_) => FrameKind::SnapshotChunk,
            Self::SnapshotAck(_) => FrameKind::SnapshotAck,
            Self::RpcRequest(_) => FrameKind::RpcRequest,
            Self::RpcResponse(_) => FrameKind::RpcResponse,
        }
    }

    /// Appends it as one frame to `buffer`.
    pub fn encode_into(&self, buffer: &mut BytesMut) -> Result<(), FrameError> {
        match self {
            Self::Hello(value) => encode_frame_into(value, buffer),
            Self::RaftBatch(value) => encode_frame_into(value, buffer),
            Self::HeartbeatBatch(value) => encode_frame_into(value, buffer),
            Self::HeartbeatResponseBatch(value) => encode_frame_into(value, buffer),
            Self::SnapshotChunk(value) => encode_frame_into(value, buffer),
            Self::SnapshotAck(value) => encode_frame_into(value, buffer),
            Self::RpcRequest(value) => encode_frame_into(value, buffer),
            Self::RpcResponse(value) => encode_frame_into(value, buffer),
        }
    }

    /// It as one frame.
    pub fn encode(&self) -> Result<Bytes, FrameError> {
        let mut buffer = BytesMut::new();
        self.encode_into(&mut buffer)?;
        Ok(buffer.freeze())
    }
}

/// Cuts frames out of a byte stream fed in arbitrary pieces.
///
/// Memory is bounded by the frame being assembled plus the last piece fed: a header is
/// checked (bound included) as soon as its 8 bytes arrive, and no memory is reserved for an
/// announced payload before its bytes come. After the first error every call returns that
/// error again; the stream must be closed.
#[derive(Debug)]
pub struct FrameDecoder {
    buffer: BytesMut,
    frame_bytes_max: usize,
    failed: Option<FrameError>,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new(MAX_FRAME_BYTES)
    }
}

impl FrameDecoder {
    /// A decoder refusing payloads above `frame_bytes_max`.
    #[must_use]
    pub fn new(frame_bytes_max: usize) -> Self {
        Self { buffer: BytesMut::new(), frame_bytes_max, failed: None }
    }

    /// The payload bound.
    #[must_use]
    pub const fn frame_bytes_max(&self) -> usize {
        self.frame_bytes_max
    }

    /// Bytes fed and not yet returned as frames.
    #[must_use]
    pub fn buffered_bytes(&self) -> usize {
        self.buffer.len()
    }

    /// Adds received bytes. Fails at once if they complete a bad header at the front.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), FrameError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        self.buffer.extend_from_slice(bytes);
        self.front_header().map(drop)
    }

    /// The next complete frame, or `None` until more bytes are fed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        let Some(header) = self.front_header()? else { return Ok(None) };
        let payload_bytes = header.payload_bytes as usize;
        if self.buffer.len() - HEADER_BYTES < payload_bytes {
            return Ok(None);
        }
        let frame = self.buffer.split_to(HEADER_BYTES + payload_bytes);
        let mut payload = AlignedVec::<16>::with_capacity(payload_bytes);
        payload.extend_from_slice(&frame[HEADER_BYTES..]);
        Ok(Some(Frame { kind: header.kind, version: header.version, payload }))
    }

    /// The next complete frame, validated and decoded. A frame that fails validation fails
    /// the decoder like a bad header.
    pub fn next_message(&mut self) -> Result<Option<FrameMessage>, FrameError> {
        let Some(frame) = self.next_frame()? else { return Ok(None) };
        frame.decode_message().map(Some).map_err(|error| self.fail(error))
    }

    /// Call at the end of the stream: fails if it ended inside a frame.
    pub fn finish(&self) -> Result<(), FrameError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        if self.buffer.is_empty() {
            Ok(())
        } else {
            Err(FrameError::Truncated { buffered_bytes: self.buffer.len() })
        }
    }

    /// The header at the front of the buffer, once its bytes are in.
    fn front_header(&mut self) -> Result<Option<FrameHeader>, FrameError> {
        let Some(bytes) = self.buffer.first_chunk::<HEADER_BYTES>() else { return Ok(None) };
        FrameHeader::parse(*bytes, self.frame_bytes_max).map(Some).map_err(|error| self.fail(error))
    }

    /// Records `error` as final and drops what is buffered.
    fn fail(&mut self, error: FrameError) -> FrameError {
        self.buffer = BytesMut::new();
        self.failed = Some(error.clone());
        error
    }
}
