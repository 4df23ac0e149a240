//! The commands a range replicates through its Raft log. Every replica applies the same
//! commands in the same order, so applying must depend on nothing but the command and the
//! replica's applied state (never on time, leadership or local configuration).

use bytes::Bytes;
use rkyv::{Archive, Deserialize, Serialize};
use tessera_wire::ids::RangeId;
use tessera_wire::raft::ReplicaId;
use tessera_wire::range::RangeEpoch;

use crate::codec;

/// One change to user data.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum WriteOp {
    /// Sets `key` to `value`.
    Put {
        /// The user key.
        key: Bytes,
        /// The value.
        value: Bytes,
    },
    /// Removes `key`.
    Delete {
        /// The user key.
        key: Bytes,
    },
    /// Removes every key in `[start, end)` (clipped to the range at apply time).
    DeleteRange {
        /// First key removed.
        start: Bytes,
        /// First key kept; empty means the range's end.
        end: Bytes,
    },
}

/// What every command carries: where it was proposed and under which epoch.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct CommandHeader {
    /// The range it was proposed to.
    pub range: RangeId,
    /// The range's epoch when it was proposed. A data command whose `version` is older than
    /// the range's at apply time is refused (`EpochNotMatch`): its keys may have moved.
    pub epoch: RangeEpoch,
}

/// A replicated command.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum Command {
    /// Data writes, applied atomically.
    Write {
        /// Header.
        header: CommandHeader,
        /// The writes, in order.
        ops: Vec<WriteOp>,
    },
    /// Sets `key` to `value` (`None`: deletes it) if its current value is `expected`
    /// (`None`: absent).
    CompareAndSwap {
        /// Header.
        header: CommandHeader,
        /// The user key.
        key: Bytes,
        /// The value it must have.
        expected: Option<Bytes>,
        /// The value to set, or `None` to delete the key.
        value: Option<Bytes>,
    },
    /// Truncates the log of every replica up to `index` (each replica no further than its
    /// own durable apply index).
    CompactLog {
        /// Header.
        header: CommandHeader,
        /// The last index to remove.
        index: tessera_wire::raft::LogIndex,
    },
    /// Splits the range at `split_key`: the left part keeps the range id, the right part
    /// becomes `new_range` with one replica per current replica, in descriptor order.
    Split {
        /// Header.
        header: CommandHeader,
        /// The first key of the right-hand range.
        split_key: Bytes,
        /// The right-hand range's id.
        new_range: RangeId,
        /// Replica ids of the right-hand range, matching the current replicas in order.
        new_replicas: Vec<ReplicaId>,
    },
}

impl Command {
    /// The command's header.
    #[must_use]
    pub fn header(&self) -> &CommandHeader {
        match self {
            Self::Write { header, .. }
            | Self::CompareAndSwap { header, .. }
            | Self::CompactLog { header, .. }
            | Self::Split { header, .. } => header,
        }
    }

    /// The first user key a data command touches (`None` for the others): where a refusal
    /// looks for the range now holding it.
    #[must_use]
    pub fn first_key(&self) -> Option<&Bytes> {
        match self {
            Self::Write { ops, .. } => ops.first().map(|op| match op {
                WriteOp::Put { key, .. } | WriteOp::Delete { key } => key,
                WriteOp::DeleteRange { start, .. } => start,
            }),
            Self::CompareAndSwap { key, .. } => Some(key),
            Self::CompactLog { .. } | Self::Split { .. } => None,
        }
    }

    /// The bytes proposed to Raft.
    #[must_use]
    pub fn encode(&self) -> Bytes {
        Bytes::from(codec::encode(self))
    }

    /// Decodes a committed entry's payload.
    ///
    /// # Errors
    /// A description of what is wrong with `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        codec::decode(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip_and_garbage_is_refused() {
        let header =
            CommandHeader { range: RangeId(7), epoch: RangeEpoch { conf_ver: 2, version: 3 } };
        let command = Command::Write {
            header,
            ops: vec![
                WriteOp::Put { key: Bytes::from_static(b"k"), value: Bytes::from_static(b"v") },
                WriteOp::Delete { key: Bytes::from_static(b"d") },
            ],
        };
        let bytes = command.encode();
        assert_eq!(Command::decode(&bytes).unwrap(), command);
        assert!(Command::decode(&[]).is_err());
        assert!(Command::decode(&[9, 1, 2]).unwrap_err().contains("version 9"));
        for cut in 1..bytes.len() {
            // Truncations decode to something valid or fail cleanly; never panic.
            let _ = Command::decode(&bytes[..cut]);
        }
        let mut flipped = bytes.to_vec();
        for index in 1..flipped.len() {
            flipped[index] ^= 0xff;
            let _ = Command::decode(&flipped);
            flipped[index] ^= 0xff;
        }
    }
}
