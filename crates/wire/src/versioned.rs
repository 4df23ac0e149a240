//! Versioned rkyv encoding of what a member replicates (Raft commands) and persists (range
//! and cluster state): one format-version byte, then the archive. Decoding copies into an
//! aligned buffer (log entries and engine values carry no alignment) and validates before
//! use, so a damaged value is an error, never undefined behaviour or a panic.

use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};

/// The only format version written so far.
pub const FORMAT_VERSION: u8 = 1;

/// Encodes `value` behind the version byte.
///
/// # Panics
/// Never for the owned, in-memory types Tessera encodes (rkyv serializing into a growable
/// buffer cannot fail).
#[must_use]
pub fn encode<T>(value: &T) -> Vec<u8>
where
    T: for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>,
{
    let archive = rkyv::to_bytes::<rancor::Error>(value)
        .expect("serializing plain owned data into memory cannot fail");
    let mut out = Vec::with_capacity(archive.len() + 1);
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&archive);
    out
}

/// Decodes what [`encode`] wrote; the error says what is wrong.
///
/// # Errors
/// A missing or unknown version byte, or an archive that does not validate.
pub fn decode<T>(bytes: &[u8]) -> Result<T, String>
where
    T: Archive,
    T::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
        + Deserialize<T, HighDeserializer<rancor::Error>>,
{
    let Some((&version, archive)) = bytes.split_first() else {
        return Err("empty value".to_owned());
    };
    if version != FORMAT_VERSION {
        return Err(format!("unknown format version {version}"));
    }
    let mut aligned = AlignedVec::<16>::with_capacity(archive.len());
    aligned.extend_from_slice(archive);
    rkyv::from_bytes::<T, rancor::Error>(&aligned).map_err(|error| error.to_string())
}
