//! What an operator sees of a running store (the admin endpoints' `/status` and
//! `/ranges`), and the hand-off of its leaders before it stops.

use tessera_engine::{KvEngine, RaftLogEngine};
use tessera_raft::{LogIndex, ReplicaId, Term};
use tessera_wire::ids::StoreId;
use tessera_wire::range::{RangeDescriptor, ReplicaRole};

use crate::env::Network;
use crate::fsm::{Store, StoreStats};

/// One replica on the store, as its range sees it now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaInfo {
    /// The range as of the applied index (no replicas: waiting for its first snapshot).
    pub descriptor: RangeDescriptor,
    /// This replica's id.
    pub replica_id: ReplicaId,
    /// Its role in the descriptor (`None`: not in it yet).
    pub role: Option<ReplicaRole>,
    /// Whether it leads.
    pub is_leader: bool,
    /// The leader it knows of (`ReplicaId(0)`: none).
    pub leader: ReplicaId,
    /// Its current term.
    pub term: Term,
    /// Commit, apply and last log indexes.
    pub committed: LogIndex,
    /// The applied index.
    pub applied: LogIndex,
    /// The last index in its log.
    pub last_index: LogIndex,
    /// Whether the range sleeps.
    pub quiesced: bool,
}

/// A store at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreInspection {
    /// The store.
    pub store_id: StoreId,
    /// The cluster it belongs to.
    pub cluster_id: u64,
    /// Its counters.
    pub stats: StoreStats,
    /// Every replica, by range id.
    pub replicas: Vec<ReplicaInfo>,
}

impl StoreInspection {
    /// Ranges this store leads.
    #[must_use]
    pub fn leaders(&self) -> usize {
        self.replicas.iter().filter(|replica| replica.is_leader).count()
    }
}

impl<R: RaftLogEngine, K: KvEngine, N: Network> Store<R, K, N> {
    /// The store as it is now.
    #[must_use]
    pub fn inspect(&self) -> StoreInspection {
        let mut replicas: Vec<ReplicaInfo> = self
            .peers
            .values()
            .map(|peer| ReplicaInfo {
                descriptor: peer.descriptor.clone(),
                replica_id: peer.replica_id,
                role: peer.descriptor.replica(peer.replica_id).map(|replica| replica.role),
                is_leader: peer.is_leader(),
                leader: peer.leader,
                term: peer.raw.raft().term(),
                committed: peer.raw.committed(),
                applied: peer.applied_index(),
                last_index: peer.raw.last_index(),
                quiesced: peer.is_quiesced(),
            })
            .collect();
        replicas.sort_by_key(|replica| replica.descriptor.id);
        StoreInspection {
            store_id: self.ident.store_id,
            cluster_id: self.ident.cluster_id,
            stats: self.stats(),
            replicas,
        }
    }

    /// Starts handing the leadership of every range this store leads to the voter on
    /// another store that is furthest along in the log; returns how many transfers started.
    /// A range with no other voter keeps its leader.
    ///
    /// Used when the store is asked to stop: clients then find the new leaders at once
    /// instead of waiting for an election timeout.
    pub fn transfer_leaders_away(&mut self) -> usize {
        let mut moves = Vec::new();
        for peer in self.peers.values().filter(|peer| peer.is_leader()) {
            let matched = peer.raw.matched();
            let target = peer
                .descriptor
                .replicas
                .iter()
                .filter(|replica| {
                    replica.role == ReplicaRole::Voter && replica.store_id != self.ident.store_id
                })
                .max_by_key(|replica| {
                    matched
                        .iter()
                        .find(|(id, _)| *id == replica.id)
                        .map_or(LogIndex::default(), |(_, index)| *index)
                });
            if let Some(target) = target {
                moves.push((peer.range(), target.id));
            }
        }
        moves
            .into_iter()
            .filter(|(range, to)| match self.transfer_leader(*range, *to) {
                Ok(()) => true,
                Err(error) => {
                    tracing::debug!(%range, %error, "leader hand-off not started");
                    false
                }
            })
            .count()
    }
}
