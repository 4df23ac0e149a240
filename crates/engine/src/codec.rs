//! Value encodings of the records the engines own: log entries, raft states, apply states and
//! the store identity. Fixed layouts, big-endian integers, a leading format version byte.
//! Every decoder validates length, version and enum tags and answers
//! [`EngineError::Corruption`] instead of guessing; `docs/storage.md` lists the bytes.

use bytes::Bytes;
use tessera_wire::ids::StoreId;
use tessera_wire::raft::{Entry, EntryKind, HardState, LogIndex, ReplicaId, Term};

use crate::error::{EngineError, Result};

/// The format version every record written today starts with.
pub const FORMAT_VERSION: u8 = 1;

/// Bytes before an entry's payload: version, kind, term.
pub const ENTRY_HEADER_LEN: usize = 10;

/// Encodes a log entry's value (its index is in the key): version (1), kind (1: 0 normal,
/// 1 conf change), term (8), payload.
pub fn encode_entry(entry: &Entry, out: &mut Vec<u8>) {
    out.reserve(ENTRY_HEADER_LEN + entry.data.len());
    out.push(FORMAT_VERSION);
    out.push(match entry.kind {
        EntryKind::Normal => 0,
        EntryKind::ConfChange => 1,
    });
    out.extend_from_slice(&entry.term.0.to_be_bytes());
    out.extend_from_slice(&entry.data);
}

/// Decodes a log entry stored at `index`.
///
/// # Errors
/// [`EngineError::Corruption`] if the value is too short or has an unknown version or kind.
pub fn decode_entry(index: LogIndex, value: &[u8]) -> Result<Entry> {
    let location = || format!("log entry {index}");
    if value.len() < ENTRY_HEADER_LEN {
        return Err(EngineError::corruption(location(), format!("{} bytes", value.len())));
    }
    check_version(value[0], location)?;
    let kind = match value[1] {
        0 => EntryKind::Normal,
        1 => EntryKind::ConfChange,
        other => return Err(EngineError::corruption(location(), format!("entry kind {other}"))),
    };
    let term = Term(read_u64(&value[2..10]));
    if term.0 == 0 {
        return Err(EngineError::corruption(location(), "term 0"));
    }
    Ok(Entry { term, index, kind, data: Bytes::copy_from_slice(&value[ENTRY_HEADER_LEN..]) })
}

/// The term of an encoded entry, without copying its payload.
///
/// # Errors
/// As [`decode_entry`].
pub fn decode_entry_term(index: LogIndex, value: &[u8]) -> Result<Term> {
    if value.len() < ENTRY_HEADER_LEN {
        return Err(EngineError::corruption(format!("log entry {index}"), "short value"));
    }
    check_version(value[0], || format!("log entry {index}"))?;
    Ok(Term(read_u64(&value[2..10])))
}

/// What the raft-log engine keeps per range besides entries: the hard state and where the log
/// was truncated (everything at or before `truncated_index` is gone; `truncated_term` is the
/// term of that entry, which answers `term(first_index - 1)`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RaftLogState {
    /// Term, vote and commit index.
    pub hard_state: HardState,
    /// The last index removed from the log (a snapshot's index, or a compaction point).
    pub truncated_index: LogIndex,
    /// The term of the entry at `truncated_index`.
    pub truncated_term: Term,
}

/// Encoded length of a [`RaftLogState`].
pub const RAFT_LOG_STATE_LEN: usize = 41;

impl RaftLogState {
    /// The first index the log can hold.
    #[must_use]
    pub fn first_index(&self) -> LogIndex {
        self.truncated_index.next()
    }

    /// Encodes: version (1), term (8), vote (8), commit (8), truncated index (8), truncated
    /// term (8).
    #[must_use]
    pub fn encode(&self) -> [u8; RAFT_LOG_STATE_LEN] {
        let mut out = [0u8; RAFT_LOG_STATE_LEN];
        out[0] = FORMAT_VERSION;
        out[1..9].copy_from_slice(&self.hard_state.term.0.to_be_bytes());
        out[9..17].copy_from_slice(&self.hard_state.vote.0.to_be_bytes());
        out[17..25].copy_from_slice(&self.hard_state.commit.0.to_be_bytes());
        out[25..33].copy_from_slice(&self.truncated_index.0.to_be_bytes());
        out[33..41].copy_from_slice(&self.truncated_term.0.to_be_bytes());
        out
    }

    /// Decodes and checks a stored state.
    ///
    /// # Errors
    /// [`EngineError::Corruption`] on a wrong length or version, or a state that breaks
    /// `truncated_term <= term`.
    pub fn decode(location: &str, value: &[u8]) -> Result<Self> {
        if value.len() != RAFT_LOG_STATE_LEN {
            return Err(EngineError::corruption(location, format!("{} bytes", value.len())));
        }
        check_version(value[0], || location.to_owned())?;
        let state = Self {
            hard_state: HardState {
                term: Term(read_u64(&value[1..9])),
                vote: ReplicaId(read_u64(&value[9..17])),
                commit: LogIndex(read_u64(&value[17..25])),
            },
            truncated_index: LogIndex(read_u64(&value[25..33])),
            truncated_term: Term(read_u64(&value[33..41])),
        };
        if state.truncated_term > state.hard_state.term {
            return Err(EngineError::corruption(location, "truncated term above the current term"));
        }
        Ok(state)
    }
}

/// How far a range has applied its log, written in the same KV batch as the data it covers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApplyState {
    /// The last log index whose effects are in the KV engine.
    pub applied_index: LogIndex,
    /// The term of that entry.
    pub applied_term: Term,
}

/// Encoded length of an [`ApplyState`].
pub const APPLY_STATE_LEN: usize = 17;

impl ApplyState {
    /// Encodes: version (1), applied index (8), applied term (8).
    #[must_use]
    pub fn encode(&self) -> [u8; APPLY_STATE_LEN] {
        let mut out = [0u8; APPLY_STATE_LEN];
        out[0] = FORMAT_VERSION;
        out[1..9].copy_from_slice(&self.applied_index.0.to_be_bytes());
        out[9..17].copy_from_slice(&self.applied_term.0.to_be_bytes());
        out
    }

    /// Decodes a stored apply state.
    ///
    /// # Errors
    /// [`EngineError::Corruption`] on a wrong length or version.
    pub fn decode(location: &str, value: &[u8]) -> Result<Self> {
        if value.len() != APPLY_STATE_LEN {
            return Err(EngineError::corruption(location, format!("{} bytes", value.len())));
        }
        check_version(value[0], || location.to_owned())?;
        Ok(Self {
            applied_index: LogIndex(read_u64(&value[1..9])),
            applied_term: Term(read_u64(&value[9..17])),
        })
    }
}

/// Which cluster and store a data directory belongs to; written once at bootstrap, checked
/// at every start so a directory is never served under another identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreIdent {
    /// The cluster's id, chosen when the cluster was created.
    pub cluster_id: u64,
    /// This store's id.
    pub store_id: StoreId,
}

/// Encoded length of a [`StoreIdent`].
pub const STORE_IDENT_LEN: usize = 17;

impl StoreIdent {
    /// Encodes: version (1), cluster id (8), store id (8).
    #[must_use]
    pub fn encode(&self) -> [u8; STORE_IDENT_LEN] {
        let mut out = [0u8; STORE_IDENT_LEN];
        out[0] = FORMAT_VERSION;
        out[1..9].copy_from_slice(&self.cluster_id.to_be_bytes());
        out[9..17].copy_from_slice(&self.store_id.0.to_be_bytes());
        out
    }

    /// Decodes a stored identity.
    ///
    /// # Errors
    /// [`EngineError::Corruption`] on a wrong length or version, or a zero id.
    pub fn decode(value: &[u8]) -> Result<Self> {
        let location = "store identity";
        if value.len() != STORE_IDENT_LEN {
            return Err(EngineError::corruption(location, format!("{} bytes", value.len())));
        }
        check_version(value[0], || location.to_owned())?;
        let ident =
            Self { cluster_id: read_u64(&value[1..9]), store_id: StoreId(read_u64(&value[9..17])) };
        if ident.cluster_id == 0 || ident.store_id.0 == 0 {
            return Err(EngineError::corruption(location, "zero cluster or store id"));
        }
        Ok(ident)
    }
}

fn check_version(version: u8, location: impl FnOnce() -> String) -> Result<()> {
    if version == FORMAT_VERSION {
        Ok(())
    } else {
        Err(EngineError::corruption(location(), format!("unknown format version {version}")))
    }
}

fn read_u64(bytes: &[u8]) -> u64 {
    let mut buf = [0u8; 8];
    buf.copy_from_slice(bytes);
    u64::from_be_bytes(buf)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn entries_round_trip(term in 1u64.., index in any::<u64>(), conf in any::<bool>(),
                              data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let entry = Entry {
                term: Term(term),
                index: LogIndex(index),
                kind: if conf { EntryKind::ConfChange } else { EntryKind::Normal },
                data: Bytes::from(data),
            };
            let mut buf = Vec::new();
            encode_entry(&entry, &mut buf);
            prop_assert_eq!(decode_entry(entry.index, &buf).unwrap(), entry.clone());
            prop_assert_eq!(decode_entry_term(entry.index, &buf).unwrap(), entry.term);
        }

        // Any byte string either decodes or is refused as corruption; nothing panics.
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            for result in [
                decode_entry(LogIndex(1), &bytes).map(|_| ()),
                RaftLogState::decode("state", &bytes).map(|_| ()),
                ApplyState::decode("apply", &bytes).map(|_| ()),
                StoreIdent::decode(&bytes).map(|_| ()),
            ] {
                if let Err(error) = result {
                    prop_assert!(matches!(error, EngineError::Corruption { .. }), "{error}");
                }
            }
        }

        #[test]
        fn states_round_trip(term in 0u64..1000, vote in any::<u64>(), commit in any::<u64>(),
                             truncated_index in any::<u64>(), truncated_term in 0u64..1000,
                             applied in any::<u64>()) {
            let state = RaftLogState {
                hard_state: HardState {
                    term: Term(term.max(truncated_term)),
                    vote: ReplicaId(vote),
                    commit: LogIndex(commit),
                },
                truncated_index: LogIndex(truncated_index),
                truncated_term: Term(truncated_term),
            };
            prop_assert_eq!(RaftLogState::decode("s", &state.encode()).unwrap(), state);
            let apply = ApplyState { applied_index: LogIndex(applied), applied_term: Term(term) };
            prop_assert_eq!(ApplyState::decode("a", &apply.encode()).unwrap(), apply);
        }
    }

    #[test]
    fn decoders_name_what_is_wrong() {
        let mut buf = Vec::new();
        encode_entry(
            &Entry {
                term: Term(3),
                index: LogIndex(9),
                kind: EntryKind::Normal,
                data: Bytes::new(),
            },
            &mut buf,
        );
        buf[0] = 9;
        let error = decode_entry(LogIndex(9), &buf).unwrap_err().to_string();
        assert!(error.contains("log entry 9") && error.contains("version 9"), "{error}");
        let error = decode_entry(LogIndex(9), &buf[..4]).unwrap_err().to_string();
        assert!(error.contains("4 bytes"), "{error}");
        let ident = StoreIdent { cluster_id: 1, store_id: StoreId(2) };
        assert_eq!(StoreIdent::decode(&ident.encode()).unwrap(), ident);
        assert!(StoreIdent::decode(&[1; 3]).is_err());
    }
}
