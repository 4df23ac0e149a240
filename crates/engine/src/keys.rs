//! The on-disk key layout, byte by byte. `docs/storage.md` is the same layout in prose; the
//! two change together.
//!
//! All integers are big-endian, so byte order is numeric order.
//!
//! KV engine (`kv/`):
//!
//! | column family | key | value |
//! |---|---|---|
//! | `default`, `lock`, `write` | `'z'` (0x7A) + key | owned by the transaction layer |
//! | `meta` | `0x01 0x01` | [`StoreIdent`](crate::codec::StoreIdent) |
//! | `meta` | `0x02` + range id (8) + `0x01` | [`ApplyState`](crate::codec::ApplyState) |
//! | `meta` | `0x02` + range id (8) + `0x02` | the range's state (descriptor), owned by the store |
//!
//! Raft-log engine (`raft/`, one column family):
//!
//! | key | value |
//! |---|---|
//! | `0x03` + range id (8) + log index (8) | one [`Entry`](tessera_wire::raft::Entry), see [`codec`](crate::codec) |
//! | `0x04` + range id (8) | [`RaftLogState`](crate::codec::RaftLogState) |
//!
//! So a range's data is the contiguous span `['z' + start, 'z' + end)` (an empty end is
//! `'z' + 1` = `'{'`), one range's log is the contiguous span `[0x03 id, 0x03 id+1)` in index
//! order, and all ranges' raft states are one contiguous span read at recovery.

use tessera_wire::ids::RangeId;
use tessera_wire::raft::LogIndex;

/// Prefix of user data keys in the data column families.
pub const DATA_PREFIX: u8 = b'z';
/// One past [`DATA_PREFIX`]: the exclusive end of all data.
pub const DATA_END: u8 = DATA_PREFIX + 1;
/// Prefix of store-wide system keys (`meta` column family).
pub const STORE_PREFIX: u8 = 0x01;
/// Prefix of range-local keys (`meta` column family).
pub const RANGE_LOCAL_PREFIX: u8 = 0x02;
/// Prefix of raft log entries (raft-log engine).
pub const RAFT_LOG_PREFIX: u8 = 0x03;
/// Prefix of raft states (raft-log engine).
pub const RAFT_STATE_PREFIX: u8 = 0x04;

/// Suffix of a range's apply state key.
pub const APPLY_STATE_SUFFIX: u8 = 0x01;
/// Suffix of a range's state (descriptor) key.
pub const RANGE_STATE_SUFFIX: u8 = 0x02;
/// Suffix of a range's snapshot-being-installed record (present only while an install is
/// under way; see the store).
pub const SNAPSHOT_APPLYING_SUFFIX: u8 = 0x03;

/// The store identity key.
pub const STORE_IDENT_KEY: &[u8] = &[STORE_PREFIX, 0x01];

/// Length of a raft log entry key.
pub const RAFT_LOG_KEY_LEN: usize = 17;
/// Length of a raft state key.
pub const RAFT_STATE_KEY_LEN: usize = 9;

/// The engine key of a user key: `'z' + key`.
#[must_use]
pub fn data_key(user_key: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + user_key.len());
    key.push(DATA_PREFIX);
    key.extend_from_slice(user_key);
    key
}

/// The user key of a data key, or `None` if `key` is not a data key.
#[must_use]
pub fn user_key(key: &[u8]) -> Option<&[u8]> {
    match key.split_first() {
        Some((&DATA_PREFIX, rest)) => Some(rest),
        _ => None,
    }
}

/// The span of data keys of the user-key range `[start, end)`; an empty `end` is +∞.
#[must_use]
pub fn data_span(start: &[u8], end: &[u8]) -> KeySpan {
    let end = if end.is_empty() { vec![DATA_END] } else { data_key(end) };
    KeySpan { start: data_key(start), end }
}

fn range_local_key(range: RangeId, suffix: u8) -> [u8; 10] {
    let mut key = [0u8; 10];
    key[0] = RANGE_LOCAL_PREFIX;
    key[1..9].copy_from_slice(&range.0.to_be_bytes());
    key[9] = suffix;
    key
}

/// The key of a range's apply state (`meta` column family).
#[must_use]
pub fn apply_state_key(range: RangeId) -> [u8; 10] {
    range_local_key(range, APPLY_STATE_SUFFIX)
}

/// The key of a range's state, its descriptor (`meta` column family).
#[must_use]
pub fn range_state_key(range: RangeId) -> [u8; 10] {
    range_local_key(range, RANGE_STATE_SUFFIX)
}

/// The key of a range's snapshot-being-installed record (`meta` column family).
#[must_use]
pub fn snapshot_applying_key(range: RangeId) -> [u8; 10] {
    range_local_key(range, SNAPSHOT_APPLYING_SUFFIX)
}

/// The span of all of a range's local keys (`meta` column family).
#[must_use]
pub fn range_local_span(range: RangeId) -> KeySpan {
    KeySpan::new(
        range_prefix(RANGE_LOCAL_PREFIX, range),
        range_prefix_end(RANGE_LOCAL_PREFIX, range),
    )
}

/// The span of all range-local keys of all ranges: apply states and descriptors, read at
/// recovery.
#[must_use]
pub fn all_range_local_span() -> KeySpan {
    KeySpan::new(vec![RANGE_LOCAL_PREFIX], vec![RANGE_LOCAL_PREFIX + 1])
}

/// The range id and suffix of a range-local key.
#[must_use]
pub fn decode_range_local_key(key: &[u8]) -> Option<(RangeId, u8)> {
    if key.len() != 10 || key[0] != RANGE_LOCAL_PREFIX {
        return None;
    }
    let id = u64::from_be_bytes(key[1..9].try_into().ok()?);
    Some((RangeId(id), key[9]))
}

/// The key of a log entry.
#[must_use]
pub fn raft_log_key(range: RangeId, index: LogIndex) -> [u8; RAFT_LOG_KEY_LEN] {
    let mut key = [0u8; RAFT_LOG_KEY_LEN];
    key[0] = RAFT_LOG_PREFIX;
    key[1..9].copy_from_slice(&range.0.to_be_bytes());
    key[9..17].copy_from_slice(&index.0.to_be_bytes());
    key
}

/// The range id and index of a log entry key, or `None` if `key` is not one.
#[must_use]
pub fn decode_raft_log_key(key: &[u8]) -> Option<(RangeId, LogIndex)> {
    if key.len() != RAFT_LOG_KEY_LEN || key[0] != RAFT_LOG_PREFIX {
        return None;
    }
    let range = u64::from_be_bytes(key[1..9].try_into().ok()?);
    let index = u64::from_be_bytes(key[9..17].try_into().ok()?);
    Some((RangeId(range), LogIndex(index)))
}

/// The span of one range's whole log.
#[must_use]
pub fn raft_log_span(range: RangeId) -> KeySpan {
    KeySpan::new(range_prefix(RAFT_LOG_PREFIX, range), range_prefix_end(RAFT_LOG_PREFIX, range))
}

/// The span of one range's log entries with indexes in `[from, to)`.
#[must_use]
pub fn raft_log_entries_span(range: RangeId, from: LogIndex, to: LogIndex) -> KeySpan {
    KeySpan::new(raft_log_key(range, from).to_vec(), raft_log_key(range, to).to_vec())
}

/// The key of a range's raft state.
#[must_use]
pub fn raft_state_key(range: RangeId) -> [u8; RAFT_STATE_KEY_LEN] {
    let mut key = [0u8; RAFT_STATE_KEY_LEN];
    key[0] = RAFT_STATE_PREFIX;
    key[1..9].copy_from_slice(&range.0.to_be_bytes());
    key
}

/// The range id of a raft state key, or `None` if `key` is not one.
#[must_use]
pub fn decode_raft_state_key(key: &[u8]) -> Option<RangeId> {
    if key.len() != RAFT_STATE_KEY_LEN || key[0] != RAFT_STATE_PREFIX {
        return None;
    }
    Some(RangeId(u64::from_be_bytes(key[1..9].try_into().ok()?)))
}

/// The span of all ranges' raft states.
#[must_use]
pub fn all_raft_states_span() -> KeySpan {
    KeySpan::new(vec![RAFT_STATE_PREFIX], vec![RAFT_STATE_PREFIX + 1])
}

fn range_prefix(prefix: u8, range: RangeId) -> Vec<u8> {
    let mut key = Vec::with_capacity(9);
    key.push(prefix);
    key.extend_from_slice(&range.0.to_be_bytes());
    key
}

/// The first key after every key that starts with `prefix` + `range`.
fn range_prefix_end(prefix: u8, range: RangeId) -> Vec<u8> {
    match range.0.checked_add(1) {
        Some(next) => range_prefix(prefix, RangeId(next)),
        None => vec![prefix + 1],
    }
}

/// A half-open key span `[start, end)`. An empty `end` means "to the end of the key space".
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct KeySpan {
    /// First key in the span.
    pub start: Vec<u8>,
    /// First key after the span; empty for no upper bound.
    pub end: Vec<u8>,
}

impl KeySpan {
    /// The span `[start, end)`.
    #[must_use]
    pub fn new(start: impl Into<Vec<u8>>, end: impl Into<Vec<u8>>) -> Self {
        Self { start: start.into(), end: end.into() }
    }

    /// The whole key space.
    #[must_use]
    pub fn all() -> Self {
        Self::default()
    }

    /// Whether `key` lies in the span.
    #[must_use]
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && (self.end.is_empty() || key < self.end.as_slice())
    }

    /// Whether the span holds no key at all (`start >= end` with a bounded end).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        !self.end.is_empty() && self.start >= self.end
    }

    /// The exclusive upper bound, if any.
    #[must_use]
    pub fn end_bound(&self) -> Option<&[u8]> {
        (!self.end.is_empty()).then_some(self.end.as_slice())
    }
}

impl std::fmt::Debug for KeySpan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}, ", escape(&self.start))?;
        if self.end.is_empty() { write!(f, "∞)") } else { write!(f, "{})", escape(&self.end)) }
    }
}

/// Printable form of a key: ASCII kept, other bytes as `\xNN`.
#[must_use]
pub fn escape(key: &[u8]) -> String {
    key.escape_ascii().to_string()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn layout_is_byte_exact() {
        assert_eq!(data_key(b"ab"), b"zab");
        assert_eq!(
            raft_log_key(RangeId(0x0102), LogIndex(0x0a0b)),
            [0x03, 0, 0, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0, 0, 0x0a, 0x0b]
        );
        assert_eq!(raft_state_key(RangeId(7)), [0x04, 0, 0, 0, 0, 0, 0, 0, 7]);
        assert_eq!(apply_state_key(RangeId(7)), [0x02, 0, 0, 0, 0, 0, 0, 0, 7, 0x01]);
        assert_eq!(range_state_key(RangeId(7)), [0x02, 0, 0, 0, 0, 0, 0, 0, 7, 0x02]);
        assert_eq!(data_span(b"a", b""), KeySpan::new(b"za".to_vec(), b"{".to_vec()));
        assert_eq!(data_span(b"", b"m"), KeySpan::new(b"z".to_vec(), b"zm".to_vec()));
    }

    #[test]
    fn system_keys_sort_before_data_and_apart_from_each_other() {
        let system = [
            STORE_IDENT_KEY.to_vec(),
            apply_state_key(RangeId(u64::MAX)).to_vec(),
            raft_log_key(RangeId(u64::MAX), LogIndex(u64::MAX)).to_vec(),
            raft_state_key(RangeId(u64::MAX)).to_vec(),
        ];
        for key in &system {
            assert!(key.as_slice() < data_key(b"").as_slice());
        }
        assert!(raft_log_span(RangeId(u64::MAX)).contains(&system[2]));
        assert!(!raft_log_span(RangeId(u64::MAX)).contains(&system[3]));
    }

    proptest! {
        // Big-endian encoding: key order is (range, index) order, and a range's log keys
        // stay inside its span and out of every other range's span.
        #[test]
        fn raft_log_keys_order_like_their_numbers(
            a in (any::<u64>(), any::<u64>()),
            b in (any::<u64>(), any::<u64>()),
        ) {
            let key_a = raft_log_key(RangeId(a.0), LogIndex(a.1));
            let key_b = raft_log_key(RangeId(b.0), LogIndex(b.1));
            prop_assert_eq!(key_a.cmp(&key_b), a.cmp(&b));
            prop_assert_eq!(decode_raft_log_key(&key_a), Some((RangeId(a.0), LogIndex(a.1))));
            prop_assert!(raft_log_span(RangeId(a.0)).contains(&key_a));
            prop_assert_eq!(raft_log_span(RangeId(b.0)).contains(&key_a), a.0 == b.0);
        }

        #[test]
        fn data_spans_tile_without_gap_or_overlap(
            mut cuts in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..4), 0..6),
            probe in proptest::collection::vec(any::<u8>(), 0..5),
        ) {
            cuts.sort();
            cuts.dedup();
            let mut bounds = vec![Vec::new()];
            bounds.extend(cuts);
            bounds.push(Vec::new());
            let spans: Vec<KeySpan> =
                bounds.windows(2).map(|w| data_span(&w[0], &w[1])).collect();
            let key = data_key(&probe);
            prop_assert_eq!(spans.iter().filter(|span| span.contains(&key)).count(), 1);
            prop_assert_eq!(user_key(&key), Some(probe.as_slice()));
        }
    }
}
