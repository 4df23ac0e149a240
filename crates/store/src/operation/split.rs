//! Splits: a Raft admin command applied atomically on every replica, metadata only (both
//! halves keep their data where it is); the right-hand range starts at once and campaigns
//! if this store led the parent. Split checks propose splits of ranges that grew past the
//! configured size or key count.

use bytes::Bytes;
use tessera_engine::{KvBatch, KvEngine, RaftLogEngine, keys};
use tessera_raft::ReplicaId;
use tessera_wire::errors::RpcError;
use tessera_wire::ids::RangeId;
use tessera_wire::range::{RangeDescriptor, RangeEpoch, Replica};

use crate::command::{Command, CommandHeader};
use crate::env::Network;
use crate::error::Result;
use crate::fsm::Store;
use crate::operation::apply::{ApplyContext, NewRange};
use crate::peer::{Peer, Responder, SplitResponder};
use crate::state::{RangeLocalState, ReplicaState, initial_apply_state};

/// A split the store wants: the range has grown past its thresholds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitWanted {
    /// The range.
    pub range: RangeId,
    /// Its epoch when checked.
    pub epoch: RangeEpoch,
    /// Where to split.
    pub split_key: Bytes,
}

impl<R: RaftLogEngine, K: KvEngine, N: Network> Store<R, K, N> {
    /// Splits `range` at `split_key` (the first key of the right-hand range), which the
    /// leader proposes; `new_range` and `new_replicas` (one per current replica, in
    /// descriptor order) are ids allocated by the placement driver.
    pub fn split(
        &mut self,
        range: RangeId,
        epoch: RangeEpoch,
        split_key: Bytes,
        new_range: RangeId,
        new_replicas: Vec<ReplicaId>,
        respond: SplitResponder,
    ) {
        let Some(peer) = self.peers.get(&range).filter(|peer| peer.is_initialized()) else {
            respond(Err(RpcError::RangeNotFound { range }));
            return;
        };
        if epoch != peer.descriptor.epoch {
            respond(Err(RpcError::EpochNotMatch { ranges: vec![peer.descriptor.clone()] }));
            return;
        }
        if new_replicas.len() != peer.descriptor.replicas.len()
            || self.peers.contains_key(&new_range)
        {
            respond(Err(RpcError::InvalidRequest {
                message: format!(
                    "split of range {range} needs {} fresh replica ids and a fresh range id",
                    peer.descriptor.replicas.len()
                ),
            }));
            return;
        }
        let command = Command::Split {
            header: CommandHeader { range, epoch },
            split_key,
            new_range,
            new_replicas,
        };
        self.propose(range, &command, None, Responder::Split(respond));
    }

    /// Applies a split (on every replica): stages both descriptors and the right-hand
    /// range's initial apply state in the round's batch.
    pub(crate) fn apply_split(
        &mut self,
        range: RangeId,
        split_key: &Bytes,
        new_range: RangeId,
        new_replicas: &[ReplicaId],
        apply: &mut ApplyContext<K::Batch>,
    ) -> Result<(RangeDescriptor, RangeDescriptor), RpcError> {
        // The right-hand replica may already be here and newer: a snapshot of it arrived
        // before this store applied the split, or it was even removed since. Then the split
        // changes only the left side here.
        let right_exists = self.peers.get(&new_range).is_some_and(Peer::is_initialized)
            || RangeLocalState::load(&self.kv, new_range)
                .ok()
                .flatten()
                .is_some_and(|state| state.state == ReplicaState::Tombstone);
        let peer = self.peers.get_mut(&range).expect("applying ranges exist");
        if new_replicas.len() != peer.descriptor.replicas.len() {
            return Err(RpcError::InvalidRequest {
                message: "split replica ids do not match the replicas".to_owned(),
            });
        }
        let mut left = peer.descriptor.clone();
        left.epoch.version += 1;
        let right = RangeDescriptor {
            id: new_range,
            start_key: split_key.clone(),
            end_key: left.end_key.clone(),
            epoch: left.epoch,
            replicas: left
                .replicas
                .iter()
                .zip(new_replicas)
                .map(|(replica, id)| Replica { id: *id, ..*replica })
                .collect(),
        };
        left.end_key = split_key.clone();
        let batch = apply.batch_mut();
        RangeLocalState { state: ReplicaState::Normal, descriptor: left.clone() }.stage(batch);
        if !right_exists {
            RangeLocalState { state: ReplicaState::Normal, descriptor: right.clone() }.stage(batch);
            batch.put_apply_state(new_range, &initial_apply_state());
        }
        peer.descriptor = left.clone();
        peer.write_load = Default::default();
        // A snapshot built before the split covers both halves' keys: never send it.
        peer.raw.store_mut().clear_snapshot();
        // Reads queued on the left side re-check their keys against the new descriptor when
        // they are served; proposals in flight are refused at apply by their epoch.
        let campaign = peer.is_leader();
        if !right_exists {
            apply.new_ranges.push(NewRange { descriptor: right.clone(), campaign });
        }
        self.heartbeat_due.insert(range);
        self.heartbeat_due.insert(new_range);
        tracing::info!(%range, %new_range, split_key = %keys::escape(split_key), "range split");
        metrics::counter!("tessera_store_splits_total").increment(1);
        Ok((left, right))
    }

    /// Checks the ranges this store leads against the split thresholds; returns the splits
    /// to ask ids for (the placement driver allocates them, then [`Store::split`] runs).
    ///
    /// # Errors
    /// Engine failures.
    pub fn split_check(&mut self) -> Result<Vec<SplitWanted>> {
        let mut wanted = Vec::new();
        for peer in self.peers.values_mut() {
            if !peer.is_leader() || peer.write_load.keys == 0 {
                continue;
            }
            peer.write_load = Default::default();
            let span = keys::data_span(&peer.descriptor.start_key, &peer.descriptor.end_key);
            let stats = self.kv.span_stats(&span)?;
            if stats.size_bytes < self.config.split_size_bytes
                && stats.keys < self.config.split_keys
            {
                continue;
            }
            let Some(key) = self.kv.split_key(&span)? else { continue };
            let Some(user_key) = keys::user_key(&key) else { continue };
            let user_key = Bytes::copy_from_slice(user_key);
            if !peer.descriptor.contains_key(&user_key)
                || user_key.as_ref() <= peer.descriptor.start_key.as_ref()
            {
                continue;
            }
            wanted.push(SplitWanted {
                range: peer.descriptor.id,
                epoch: peer.descriptor.epoch,
                split_key: user_key,
            });
        }
        Ok(wanted)
    }
}
