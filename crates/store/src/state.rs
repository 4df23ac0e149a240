//! What the store persists about each range besides its log: the descriptor and whether the
//! replica is live or a tombstone, in the KV engine's meta column family at
//! `range_state_key(range)`, written in the same batch as the apply state it goes with.

use rkyv::{Archive, Deserialize, Serialize};
use tessera_engine::codec::ApplyState;
use tessera_engine::{Cf, KvBatch, KvRead, keys};
use tessera_wire::ids::RangeId;
use tessera_wire::raft::{ConfState, LogIndex, Term};
use tessera_wire::range::{RangeDescriptor, ReplicaRole};

use crate::codec;
use crate::error::{Result, StoreError};

/// Where a new range's log starts: its first entry is `INITIAL_INDEX + 1`. A range created by
/// bootstrap or split has applied up to here (its initial state) without any log entry, so
/// every replica of it agrees on the prefix without exchanging it.
pub const INITIAL_INDEX: LogIndex = LogIndex(5);
/// The term of [`INITIAL_INDEX`].
pub const INITIAL_TERM: Term = Term(5);

/// A replica's life.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub enum ReplicaState {
    /// Serving.
    Normal,
    /// Removed: its data is gone and it must never come back with an epoch at or below the
    /// tombstone's (a stale message must not resurrect it).
    Tombstone,
}

/// The persisted state of one range on one store.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct RangeLocalState {
    /// Live or removed.
    pub state: ReplicaState,
    /// The range as of the replica's applied index (for a tombstone: as when removed).
    pub descriptor: RangeDescriptor,
}

impl RangeLocalState {
    /// Stages this state for `range` into `batch`.
    pub fn stage<B: KvBatch>(&self, batch: &mut B) {
        batch.put(Cf::Meta, &keys::range_state_key(self.descriptor.id), &codec::encode(self));
    }

    /// Reads `range`'s state.
    ///
    /// # Errors
    /// Engine failures; [`StoreError::Corruption`] if the stored value does not decode or
    /// names another range.
    pub fn load<R: KvRead>(engine: &R, range: RangeId) -> Result<Option<Self>> {
        let Some(bytes) = engine.get(Cf::Meta, &keys::range_state_key(range))? else {
            return Ok(None);
        };
        let location = || format!("range state of range {range}");
        let state: Self =
            codec::decode(&bytes).map_err(|reason| StoreError::corruption(location(), reason))?;
        if state.descriptor.id != range {
            return Err(StoreError::corruption(
                location(),
                format!("holds range {}", state.descriptor.id),
            ));
        }
        Ok(Some(state))
    }
}

/// The apply state of a range created without log entries (bootstrap, split).
#[must_use]
pub fn initial_apply_state() -> ApplyState {
    ApplyState { applied_index: INITIAL_INDEX, applied_term: INITIAL_TERM }
}

/// The Raft membership a descriptor describes.
#[must_use]
pub fn conf_state_of(descriptor: &RangeDescriptor) -> ConfState {
    let joint = descriptor
        .replicas
        .iter()
        .any(|r| matches!(r.role, ReplicaRole::IncomingVoter | ReplicaRole::DemotingVoter));
    let mut conf = ConfState::default();
    for replica in &descriptor.replicas {
        match replica.role {
            ReplicaRole::Voter => {
                conf.voters.push(replica.id);
                if joint {
                    conf.voters_outgoing.push(replica.id);
                }
            }
            ReplicaRole::IncomingVoter => conf.voters.push(replica.id),
            ReplicaRole::DemotingVoter => {
                conf.voters_outgoing.push(replica.id);
                conf.learners_next.push(replica.id);
            }
            ReplicaRole::Learner => conf.learners.push(replica.id),
        }
    }
    conf.auto_leave = joint;
    conf
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use tessera_engine::KvEngine;
    use tessera_engine::mem::MemKvEngine;
    use tessera_wire::ids::StoreId;
    use tessera_wire::raft::ReplicaId;
    use tessera_wire::range::{RangeEpoch, Replica};

    use super::*;

    #[test]
    fn range_state_round_trips_and_corruption_is_named() {
        let engine = MemKvEngine::new();
        let descriptor = RangeDescriptor {
            id: RangeId(3),
            start_key: Bytes::from_static(b"a"),
            end_key: Bytes::from_static(b"m"),
            epoch: RangeEpoch { conf_ver: 1, version: 2 },
            replicas: vec![Replica {
                id: ReplicaId(4),
                store_id: StoreId(1),
                role: ReplicaRole::Voter,
            }],
        };
        let state = RangeLocalState { state: ReplicaState::Normal, descriptor };
        let mut batch = engine.batch();
        state.stage(&mut batch);
        engine.write(&mut batch, true).unwrap();
        assert_eq!(RangeLocalState::load(&engine, RangeId(3)).unwrap(), Some(state));
        assert_eq!(RangeLocalState::load(&engine, RangeId(4)).unwrap(), None);
        let mut batch = engine.batch();
        batch.put(Cf::Meta, &keys::range_state_key(RangeId(4)), b"\x01garbage");
        engine.write(&mut batch, true).unwrap();
        let error = RangeLocalState::load(&engine, RangeId(4)).unwrap_err().to_string();
        assert!(error.contains("range state of range 4"), "{error}");
    }
}
