//! Range metadata: descriptors, epochs and replicas (ARCHITECTURE.md §2).
//!
//! A range is the span `[start_key, end_key)` of user keys served by one Raft group. Ranges
//! tile the key space with no gap and no overlap; every request is routed with a range id and
//! epoch and refused with `EpochNotMatch` when the epoch is stale.

use bytes::Bytes;
use rkyv::{Archive, Deserialize, Serialize};

use crate::ids::{RangeId, StoreId};
use crate::raft::ReplicaId;

/// The version of a range's metadata. Both counters only grow.
#[derive(
    Archive,
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
)]
#[rkyv(derive(Debug, PartialEq, Eq))]
pub struct RangeEpoch {
    /// Increases on every membership change.
    pub conf_ver: u64,
    /// Increases on every split and merge (every change of the key span).
    pub version: u64,
}

impl RangeEpoch {
    /// Whether `self` is behind `other` in either counter (a request routed with `self`
    /// against a range at `other` must be refused).
    #[must_use]
    pub const fn is_stale_against(self, other: Self) -> bool {
        self.conf_ver < other.conf_ver || self.version < other.version
    }
}

/// What a replica does in its group. The two joint roles exist only while a membership change
/// is in flight (Raft thesis §4.3).
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug, PartialEq, Eq))]
pub enum ReplicaRole {
    /// Votes in the (only, or both) configuration.
    Voter,
    /// Receives the log, does not vote.
    Learner,
    /// Votes in the incoming configuration only: being added as a voter.
    IncomingVoter,
    /// Votes in the outgoing configuration only: becomes a learner when the joint
    /// configuration is left.
    DemotingVoter,
}

impl ReplicaRole {
    /// Whether the replica votes in at least one configuration.
    #[must_use]
    pub const fn is_voter(self) -> bool {
        !matches!(self, Self::Learner)
    }
}

/// One replica of a range: its id within the group, the store holding it, and its role.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug, PartialEq, Eq))]
pub struct Replica {
    /// The replica's id, unique within the range and never reused.
    pub id: ReplicaId,
    /// The store that holds it.
    pub store_id: StoreId,
    /// Its role.
    pub role: ReplicaRole,
}

/// A range: its key span, epoch and replicas.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct RangeDescriptor {
    /// The range's id, never reused.
    pub id: RangeId,
    /// The first key of the range (inclusive). Empty: the start of the key space.
    pub start_key: Bytes,
    /// The end of the range (exclusive). Empty: +∞.
    pub end_key: Bytes,
    /// The metadata version.
    pub epoch: RangeEpoch,
    /// The replicas, in no particular order, each on a different store.
    pub replicas: Vec<Replica>,
}

impl RangeDescriptor {
    /// Whether `key` falls in `[start_key, end_key)` (an empty `end_key` is +∞).
    #[must_use]
    pub fn contains_key(&self, key: &[u8]) -> bool {
        key >= self.start_key.as_ref() && (self.end_key.is_empty() || key < self.end_key.as_ref())
    }

    /// The replica with id `id`, if it is a member.
    #[must_use]
    pub fn replica(&self, id: ReplicaId) -> Option<&Replica> {
        self.replicas.iter().find(|replica| replica.id == id)
    }

    /// The replica held by store `store_id`, if any.
    #[must_use]
    pub fn replica_on_store(&self, store_id: StoreId) -> Option<&Replica> {
        self.replicas.iter().find(|replica| replica.store_id == store_id)
    }
}
