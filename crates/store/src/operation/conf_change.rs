//! Membership changes: add a learner (it catches up by snapshot), promote it, demote a
//! voter, remove a learner. The leader proposes one Raft membership change carrying, in its
//! context, the epoch it checked and the stores of new replicas; every replica applies it at
//! the same index and derives the new descriptor from the Raft configuration. Changes of
//! voters go through a joint configuration that the leader leaves on its own once applied.
//!
//! A removed replica deletes itself when it applies its removal; since it may never get that
//! far (the leader stops replicating to it), the leader also sends its store `Tombstone`
//! messages for a while, and a store deletes a replica told it is gone by a newer epoch.

use rkyv::{Archive, Deserialize, Serialize};
use tessera_engine::{Cf, KvBatch, KvEngine, RaftLogEngine, keys};
use tessera_raft::{ConfChange, ConfChangeStep, ConfState, Entry, decode_conf_change};
use tessera_wire::errors::RpcError;
use tessera_wire::ids::RangeId;
use tessera_wire::raft::{Message, MessageKind};
use tessera_wire::range::{RangeDescriptor, RangeEpoch, Replica, ReplicaRole};
use tessera_wire::rpc::ReplicaChange;

use crate::codec;
use crate::env::Network;
use crate::fsm::Store;
use crate::operation::apply::{Applied, ApplyContext};
use crate::operation::write::refusal;
use crate::peer::{ChangeResponder, RemovedReplica, Responder};
use crate::state::{RangeLocalState, ReplicaState};

/// What the store puts in a membership change's context.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub(crate) struct ChangeContext {
    /// The epoch the leader checked the change against; a replica applying it under another
    /// epoch skips it (deterministically, on every replica).
    pub(crate) epoch: RangeEpoch,
    /// New replicas with their stores.
    pub(crate) added: Vec<Replica>,
}

/// Checks `changes` against `descriptor` and turns them into Raft steps and the replicas
/// they add.
fn plan(
    descriptor: &RangeDescriptor,
    changes: &[ReplicaChange],
) -> Result<(Vec<ConfChangeStep>, Vec<Replica>), RpcError> {
    let invalid = |message: String| Err(RpcError::InvalidRequest { message });
    if changes.is_empty() {
        return invalid("a membership change needs at least one change".to_owned());
    }
    let mut steps = Vec::with_capacity(changes.len());
    let mut added = Vec::new();
    let mut touched = Vec::new();
    for change in changes {
        let id = match *change {
            ReplicaChange::AddLearner { id, .. }
            | ReplicaChange::Promote { id }
            | ReplicaChange::Demote { id }
            | ReplicaChange::Remove { id } => id,
        };
        if touched.contains(&id) || !id.is_some() {
            return invalid(format!("replica {id} is named twice or is not a replica id"));
        }
        touched.push(id);
        let role = descriptor.replica(id).map(|replica| replica.role);
        match (*change, role) {
            (ReplicaChange::AddLearner { id, store_id }, None) => {
                if descriptor.replica_on_store(store_id).is_some()
                    || added.iter().any(|r: &Replica| r.store_id == store_id)
                {
                    return invalid(format!(
                        "store {store_id} already holds a replica of range {}",
                        descriptor.id
                    ));
                }
                added.push(Replica { id, store_id, role: ReplicaRole::Learner });
                steps.push(ConfChangeStep::AddLearner(id));
            }
            (ReplicaChange::Promote { id }, Some(ReplicaRole::Learner)) => {
                steps.push(ConfChangeStep::AddVoter(id));
            }
            (ReplicaChange::Demote { id }, Some(ReplicaRole::Voter)) => {
                steps.push(ConfChangeStep::AddLearner(id));
            }
            (ReplicaChange::Remove { id }, Some(ReplicaRole::Learner)) => {
                steps.push(ConfChangeStep::Remove(id));
            }
            (ReplicaChange::Remove { id }, Some(ReplicaRole::Voter)) => {
                return invalid(format!("replica {id} is a voter: demote it before removing it"));
            }
            (change, role) => {
                return invalid(format!(
                    "{change:?} does not apply to a replica that is {}",
                    role.map_or_else(
                        || "not in the range".to_owned(),
                        |role| format!("a {role:?}")
                    )
                ));
            }
        }
    }
    Ok((steps, added))
}

/// The descriptor after a membership change: the replicas of `conf`, with roles as the
/// configuration says and stores from `old` or `added`; the membership version goes up.
fn descriptor_after(old: &RangeDescriptor, conf: &ConfState, added: &[Replica]) -> RangeDescriptor {
    let joint = !conf.voters_outgoing.is_empty();
    let store_of = |id| {
        old.replica(id)
            .or_else(|| added.iter().find(|replica| replica.id == id))
            .map(|replica| replica.store_id)
    };
    let mut replicas = Vec::new();
    let mut push = |id, role| {
        if let Some(store_id) = store_of(id) {
            replicas.push(Replica { id, store_id, role });
        } else {
            tracing::error!(range = %old.id, %id, "replica of unknown store left out");
        }
    };
    for &id in &conf.voters {
        let role = if joint && !conf.voters_outgoing.contains(&id) {
            ReplicaRole::IncomingVoter
        } else {
            ReplicaRole::Voter
        };
        push(id, role);
    }
    for &id in &conf.voters_outgoing {
        if !conf.voters.contains(&id) {
            // Voters leave only through demotion (see `plan`): an outgoing-only voter is
            // always a learner-to-be.
            push(id, ReplicaRole::DemotingVoter);
        }
    }
    for &id in &conf.learners {
        push(id, ReplicaRole::Learner);
    }
    let mut epoch = old.epoch;
    epoch.conf_ver += 1;
    RangeDescriptor {
        id: old.id,
        start_key: old.start_key.clone(),
        end_key: old.end_key.clone(),
        epoch,
        replicas,
    }
}

impl<R: RaftLogEngine, K: KvEngine, N: Network> Store<R, K, N> {
    /// Changes `range`'s membership (leader only). `respond` gets the descriptor once the
    /// change is applied on this replica.
    pub fn change_replicas(
        &mut self,
        range: RangeId,
        epoch: RangeEpoch,
        changes: &[ReplicaChange],
        respond: ChangeResponder,
    ) {
        let Some(peer) = self.peers.get_mut(&range).filter(|peer| peer.is_initialized()) else {
            respond(Err(RpcError::RangeNotFound { range }));
            return;
        };
        if epoch != peer.descriptor.epoch {
            respond(Err(RpcError::EpochNotMatch { ranges: vec![peer.descriptor.clone()] }));
            return;
        }
        if !peer.is_leader() {
            respond(Err(peer.not_leader()));
            return;
        }
        let (steps, added) = match plan(&peer.descriptor, changes) {
            Ok(plan) => plan,
            Err(error) => {
                respond(Err(error));
                return;
            }
        };
        // A learner votes only once it holds the range: promoting one still waiting for its
        // snapshot would add a voter that cannot vote or append.
        let log_start = peer.raw.store().raft_state().truncated_index;
        let matched = peer.raw.matched();
        for change in changes {
            if let ReplicaChange::Promote { id } = change
                && !matched.iter().any(|(replica, index)| replica == id && *index >= log_start)
            {
                respond(Err(RpcError::ServerBusy {
                    reason: format!("learner {id} of range {range} has not caught up yet"),
                    retry_after_ms: 100,
                }));
                return;
            }
        }
        let context = codec::encode(&ChangeContext { epoch, added });
        let change = ConfChange { steps, explicit_leave: false, context: context.into() };
        match peer.raw.propose_conf_change(&change) {
            Ok(index) => {
                tracing::info!(%range, ?changes, %index, "membership change proposed");
                Self::track_proposal(peer, index, None, Responder::ChangeReplicas(respond));
                self.dirty.insert(range);
            }
            Err(error) => respond(Err(refusal(peer, &error))),
        }
    }

    /// Applies a committed membership change of `range` (every replica).
    pub(crate) fn apply_conf_change(
        &mut self,
        range: RangeId,
        entry: &Entry,
        apply: &mut ApplyContext<K::Batch>,
    ) -> Applied {
        let store_id = self.ident.store_id;
        let sends = self.config.tombstone_sends;
        let peer = self.peers.get_mut(&range).expect("applying ranges exist");
        let change = match decode_conf_change(&entry.data) {
            Ok(change) => change,
            Err(error) => {
                // Every replica decodes the same bytes the same way: skipping is
                // deterministic.
                tracing::error!(%range, %error, "undecodable membership change skipped");
                return Applied::Change(Err(RpcError::Internal {
                    message: format!("undecodable membership change: {error}"),
                }));
            }
        };
        // Leaving a joint configuration (proposed by the Raft core itself) has no context.
        let context = if change.context.is_empty() {
            ChangeContext { epoch: peer.descriptor.epoch, added: Vec::new() }
        } else {
            match codec::decode::<ChangeContext>(&change.context) {
                Ok(context) => context,
                Err(reason) => {
                    tracing::error!(%range, %reason, "membership change with a bad context skipped");
                    return Applied::Change(Err(RpcError::Internal {
                        message: format!("membership change context: {reason}"),
                    }));
                }
            }
        };
        if context.epoch != peer.descriptor.epoch {
            return Applied::Change(Err(RpcError::EpochNotMatch {
                ranges: vec![peer.descriptor.clone()],
            }));
        }
        let conf = match peer.raw.apply_conf_change(&change) {
            Ok(conf) => conf,
            Err(error) => {
                tracing::warn!(%range, %error, "membership change refused at apply");
                return Applied::Change(Err(RpcError::InvalidRequest {
                    message: error.to_string(),
                }));
            }
        };
        let next = descriptor_after(&peer.descriptor, &conf, &context.added);
        let old = std::mem::replace(&mut peer.descriptor, next);
        let descriptor = peer.descriptor.clone();
        peer.raw.store_mut().set_conf_state(conf);
        // A snapshot built before the change does not list replicas it added.
        peer.raw.store_mut().clear_snapshot();
        let removed: Vec<Replica> = old
            .replicas
            .iter()
            .filter(|replica| descriptor.replica(replica.id).is_none())
            .copied()
            .collect();
        if removed.iter().any(|replica| replica.store_id == store_id) {
            // This replica is gone. Its tombstone (with the epoch that removed it) and the
            // deletion of its data go in this very batch, atomically with the change: a
            // crash after the batch must not find a live range state that no longer lists
            // this store. The log and the in-memory replica go once the batch is written.
            let mut tombstone = old.clone();
            tombstone.epoch = descriptor.epoch;
            let span = keys::data_span(&old.start_key, &old.end_key);
            for cf in Cf::DATA {
                apply.batch_mut().delete_span(cf, &span);
            }
            RangeLocalState { state: ReplicaState::Tombstone, descriptor: tombstone.clone() }
                .stage(apply.batch_mut());
            apply.destroyed.push(tombstone);
        } else {
            RangeLocalState { state: ReplicaState::Normal, descriptor: descriptor.clone() }
                .stage(apply.batch_mut());
        }
        for replica in &removed {
            if replica.store_id != store_id && peer.is_leader() {
                peer.removed.push(RemovedReplica {
                    replica: *replica,
                    conf_ver: descriptor.epoch.conf_ver,
                    sends_left: sends,
                });
            }
        }
        for replica in &descriptor.replicas {
            peer.peer_stores.remove(&replica.id);
        }
        self.heartbeat_due.insert(range);
        self.stats.conf_changes += 1;
        metrics::counter!("tessera_store_conf_changes_total").increment(1);
        tracing::info!(%range, ?descriptor, "membership changed");
        Applied::Change(Ok(descriptor))
    }

    /// Sends a tombstone to every replica this store's leaders removed and still owe one
    /// (every heartbeat interval).
    pub(crate) fn send_tombstones(&mut self) {
        for peer in self.peers.values_mut() {
            if peer.removed.is_empty() {
                continue;
            }
            let term = peer.raw.raft().term();
            let mut removed = std::mem::take(&mut peer.removed);
            for entry in &mut removed {
                if !self.net.store_alive(entry.replica.store_id) {
                    continue;
                }
                let mut message =
                    Message::new(MessageKind::Tombstone, peer.replica_id, entry.replica.id, term);
                message.index = tessera_raft::LogIndex(entry.conf_ver);
                self.stats.messages_sent += 1;
                self.net.send(tessera_wire::transport::RaftEnvelope {
                    range: peer.descriptor.id,
                    from_store: peer.store_id,
                    to_store: entry.replica.store_id,
                    message,
                });
                entry.sends_left = entry.sends_left.saturating_sub(1);
            }
            removed.retain(|entry| entry.sends_left > 0);
            peer.removed = removed;
        }
    }
}

#[cfg(test)]
mod tests {
    use tessera_wire::ids::StoreId;
    use tessera_wire::raft::ReplicaId;

    use super::*;

    fn replica(id: u64, role: ReplicaRole) -> Replica {
        Replica { id: ReplicaId(id), store_id: StoreId(id), role }
    }

    fn three_voters_and_a_learner() -> RangeDescriptor {
        RangeDescriptor {
            id: RangeId(1),
            replicas: vec![
                replica(1, ReplicaRole::Voter),
                replica(2, ReplicaRole::Voter),
                replica(3, ReplicaRole::Voter),
                replica(4, ReplicaRole::Learner),
            ],
            ..RangeDescriptor::default()
        }
    }

    #[test]
    fn plans_check_roles_stores_and_duplicates() {
        let descriptor = three_voters_and_a_learner();
        let add = ReplicaChange::AddLearner { id: ReplicaId(9), store_id: StoreId(9) };
        let (steps, added) = plan(&descriptor, &[add]).unwrap();
        assert_eq!(steps, vec![ConfChangeStep::AddLearner(ReplicaId(9))]);
        assert_eq!(added[0].store_id, StoreId(9));
        let on_taken_store = ReplicaChange::AddLearner { id: ReplicaId(9), store_id: StoreId(2) };
        assert!(format!("{:?}", plan(&descriptor, &[on_taken_store])).contains("already holds"));
        let remove_voter = ReplicaChange::Remove { id: ReplicaId(2) };
        assert!(format!("{:?}", plan(&descriptor, &[remove_voter])).contains("demote"));
        let promote_voter = ReplicaChange::Promote { id: ReplicaId(2) };
        assert!(plan(&descriptor, &[promote_voter]).is_err());
        let twice = [
            ReplicaChange::Promote { id: ReplicaId(4) },
            ReplicaChange::Remove { id: ReplicaId(4) },
        ];
        assert!(plan(&descriptor, &twice).is_err());
        assert!(plan(&descriptor, &[]).is_err());
        let swap = [
            ReplicaChange::Promote { id: ReplicaId(4) },
            ReplicaChange::Demote { id: ReplicaId(1) },
        ];
        let (steps, _) = plan(&descriptor, &swap).unwrap();
        assert_eq!(
            steps,
            vec![ConfChangeStep::AddVoter(ReplicaId(4)), ConfChangeStep::AddLearner(ReplicaId(1))]
        );
    }

    #[test]
    fn descriptors_follow_the_joint_configuration_and_round_trip() {
        let old = three_voters_and_a_learner();
        // Promote 4 and demote 1: joint.
        let joint = ConfState {
            voters: vec![ReplicaId(2), ReplicaId(3), ReplicaId(4)],
            voters_outgoing: vec![ReplicaId(1), ReplicaId(2), ReplicaId(3)],
            learners: vec![],
            learners_next: vec![ReplicaId(1)],
            auto_leave: true,
        };
        let during = descriptor_after(&old, &joint, &[]);
        assert_eq!(during.epoch.conf_ver, old.epoch.conf_ver + 1);
        assert_eq!(during.replica(ReplicaId(4)).unwrap().role, ReplicaRole::IncomingVoter);
        assert_eq!(during.replica(ReplicaId(1)).unwrap().role, ReplicaRole::DemotingVoter);
        assert_eq!(during.replica(ReplicaId(2)).unwrap().role, ReplicaRole::Voter);
        let back = crate::state::conf_state_of(&during);
        let sorted = |mut v: Vec<ReplicaId>| {
            v.sort();
            v
        };
        assert_eq!(sorted(back.voters), sorted(joint.voters.clone()));
        assert_eq!(sorted(back.voters_outgoing), sorted(joint.voters_outgoing.clone()));
        assert_eq!(back.learners_next, joint.learners_next);
        assert!(back.auto_leave);
        let left = ConfState {
            voters: vec![ReplicaId(2), ReplicaId(3), ReplicaId(4)],
            learners: vec![ReplicaId(1)],
            ..ConfState::default()
        };
        let after = descriptor_after(&during, &left, &[]);
        assert_eq!(after.replica(ReplicaId(1)).unwrap().role, ReplicaRole::Learner);
        assert_eq!(after.replica(ReplicaId(4)).unwrap().role, ReplicaRole::Voter);
        assert_eq!(after.replicas.len(), 4);
    }
}
