//! Heartbeats to the placement driver and the work its answers carry: a store heartbeat
//! (capacity, usage, counts, labels, traffic) every `store_heartbeat_ticks`, a range
//! heartbeat from every leader (descriptor, leader, pending and down replicas, size, keys,
//! traffic) every `range_heartbeat_ticks` and at the next tick after its range split,
//! changed membership or got this leader, and split checks every `split_check_ticks` (by
//! size and key count, and by load: a leader whose sampled requests per second pass
//! `load_split_qps` splits at the median sampled key). Splits ask the placement driver for
//! ids, then report the result. Commands in range-heartbeat answers (leader transfer,
//! membership change, split) run on the leader if the range's epoch still matches.

use bytes::Bytes;
use tessera_engine::{KvEngine, RaftLogEngine, keys};
use tessera_wire::errors::RpcError;
use tessera_wire::ids::RangeId;
use tessera_wire::placement::{
    DownReplica, PlacementRequest, PlacementResponse, RangeHeartbeat, ReplicaChangeOp,
    ScheduleCommand, StoreStats,
};
use tessera_wire::range::{RangeDescriptor, RangeEpoch, ReplicaRole};
use tessera_wire::rpc::ReplicaChange;

use crate::env::Network;
use crate::fsm::Store;
use crate::operation::split::SplitWanted;
use crate::placement::{PlacementClient, PlacementState, SplitAsked};

/// Disk size and free space of the file system holding `path` (or its nearest existing
/// ancestor); zeros if it cannot be read.
pub(crate) fn disk_space(path: &std::path::Path) -> (u64, u64) {
    let mut path = path;
    while !path.exists() {
        match path.parent() {
            Some(parent) => path = parent,
            None => return (0, 0),
        }
    }
    match rustix::fs::statvfs(path) {
        Ok(stat) => (
            stat.f_blocks.saturating_mul(stat.f_frsize),
            stat.f_bavail.saturating_mul(stat.f_frsize),
        ),
        Err(error) => {
            tracing::debug!(path = %path.display(), %error, "cannot read disk space");
            (0, 0)
        }
    }
}

/// A scheduling command's membership change in the store's terms: learners first, voters
/// leave by demotion.
fn replica_change(
    descriptor: &RangeDescriptor,
    change: &tessera_wire::placement::ReplicaChange,
) -> Result<ReplicaChange, String> {
    let id = change.replica.id;
    let role = descriptor.replica(id).map(|replica| replica.role);
    match (change.op, role) {
        (ReplicaChangeOp::AddLearner, None) => {
            Ok(ReplicaChange::AddLearner { id, store_id: change.replica.store_id })
        }
        (ReplicaChangeOp::AddLearner, Some(ReplicaRole::Voter)) => Ok(ReplicaChange::Demote { id }),
        (ReplicaChangeOp::AddVoter, Some(ReplicaRole::Learner)) => {
            Ok(ReplicaChange::Promote { id })
        }
        (ReplicaChangeOp::Remove, Some(ReplicaRole::Learner)) => Ok(ReplicaChange::Remove { id }),
        (op, role) => Err(format!(
            "{op:?} of replica {id} ({role:?}): add replicas as learners, demote voters before \
             removing them"
        )),
    }
}

impl<R: RaftLogEngine, K: KvEngine, N: Network> Store<R, K, N> {
    /// Connects the store to the placement driver: from the next tick on it sends
    /// heartbeats, asks for split ids and runs the commands the answers carry.
    pub fn set_placement(&mut self, client: Box<dyn PlacementClient>) {
        self.placement = Some(PlacementState::new(client, self.ticks));
    }

    /// The placement work of one tick.
    pub(crate) fn placement_tick(&mut self) {
        let Some(mut state) = self.placement.take() else {
            self.heartbeat_due.clear();
            return;
        };
        for request in state.take_outbox() {
            state.send(request);
        }
        let answers = state.client.take_answers();
        let now = self.ticks;
        for store in self.peers.values().flat_map(|peer| &peer.descriptor.replicas) {
            if self.net.store_alive(store.store_id) {
                state.down_since.remove(&store.store_id);
            } else {
                state.down_since.entry(store.store_id).or_insert(now);
            }
        }
        for (token, answer) in answers {
            self.on_placement_answer(&mut state, token, answer);
        }
        for peer in self.peers.values_mut().filter(|peer| peer.reported_pending) {
            let committed = peer.raw.committed();
            let matched = peer.raw.matched();
            let caught_up = peer.descriptor.replicas.iter().all(|replica| {
                replica.id == peer.replica_id
                    || state.down_since.contains_key(&replica.store_id)
                    || matched.iter().any(|(id, index)| *id == replica.id && *index >= committed)
            });
            if caught_up || !peer.is_leader() {
                peer.reported_pending = false;
                if caught_up && peer.is_leader() {
                    self.heartbeat_due.insert(peer.range());
                }
            }
        }
        if state.store_heartbeat_due
            || now - state.last_store_heartbeat >= u64::from(self.config.store_heartbeat_ticks)
        {
            self.store_heartbeat(&mut state);
        }
        let all = now - state.last_range_heartbeat >= u64::from(self.config.range_heartbeat_ticks);
        if all || !self.heartbeat_due.is_empty() {
            self.range_heartbeats(&mut state, all);
        }
        if now.is_multiple_of(u64::from(self.config.split_check_ticks)) {
            self.ask_splits(&mut state);
        }
        self.placement = Some(state);
    }

    fn store_heartbeat(&mut self, state: &mut PlacementState) {
        let interval_ticks = self.ticks - state.last_store_heartbeat;
        state.last_store_heartbeat = self.ticks;
        state.store_heartbeat_due = false;
        let (capacity_bytes, available_bytes) = disk_space(&self.config.snapshot_dir);
        let used_bytes = self
            .kv
            .span_stats(&keys::data_span(b"", b""))
            .map(|stats| stats.size_bytes)
            .unwrap_or_default();
        let mut stats = StoreStats {
            store_id: self.ident.store_id,
            capacity_bytes,
            available_bytes,
            used_bytes,
            interval_ms: interval_ticks * self.config.tick_interval_ms,
            ..StoreStats::default()
        };
        for peer in self.peers.values_mut().filter(|peer| peer.is_initialized()) {
            stats.range_count += 1;
            stats.leader_count += u32::from(peer.is_leader());
            let traffic = std::mem::take(&mut peer.store_traffic);
            stats.written_bytes += traffic.written_bytes;
            stats.written_keys += traffic.written_keys;
            stats.read_bytes += traffic.read_bytes;
            stats.read_keys += traffic.read_keys;
        }
        state.send(PlacementRequest::StoreHeartbeat { stats, labels: self.config.labels.clone() });
        metrics::counter!("tessera_store_placement_heartbeats_total", "kind" => "store")
            .increment(1);
    }

    /// Range heartbeats from every leader here (`all`), or only from those whose range
    /// split, changed membership or gained its leader since the last tick.
    fn range_heartbeats(&mut self, state: &mut PlacementState, all: bool) {
        if all {
            state.last_range_heartbeat = self.ticks;
        }
        let due = std::mem::take(&mut self.heartbeat_due);
        let tick_ms = self.config.tick_interval_ms;
        for peer in self.peers.values_mut() {
            if !peer.is_leader() || !peer.is_initialized() || !(all || due.contains(&peer.range()))
            {
                continue;
            }
            let interval_ms = (self.ticks - peer.last_heartbeat) * tick_ms;
            peer.last_heartbeat = self.ticks;
            let traffic = std::mem::take(&mut peer.traffic);
            let span = keys::data_span(&peer.descriptor.start_key, &peer.descriptor.end_key);
            let size = self.kv.span_stats(&span).unwrap_or_default();
            let matched = peer.raw.matched();
            let committed = peer.raw.committed();
            let mut pending_replicas = Vec::new();
            let mut down_replicas = Vec::new();
            for replica in &peer.descriptor.replicas {
                if replica.id == peer.replica_id {
                    continue;
                }
                if let Some(since) = state.down_since.get(&replica.store_id) {
                    down_replicas.push(DownReplica {
                        replica: *replica,
                        down_ms: (self.ticks - since) * tick_ms,
                    });
                    continue;
                }
                let caught_up =
                    matched.iter().any(|(id, index)| *id == replica.id && *index >= committed);
                if !caught_up {
                    pending_replicas.push(*replica);
                }
            }
            peer.reported_pending = !pending_replicas.is_empty();
            let heartbeat = RangeHeartbeat {
                descriptor: peer.descriptor.clone(),
                leader: peer.leader_replica(),
                term: peer.raw.raft().term(),
                approximate_size_bytes: size.size_bytes,
                approximate_keys: size.keys,
                pending_replicas,
                down_replicas,
                written_bytes: traffic.written_bytes,
                written_keys: traffic.written_keys,
                read_bytes: traffic.read_bytes,
                read_keys: traffic.read_keys,
                interval_ms,
            };
            state.send(PlacementRequest::RangeHeartbeat(heartbeat));
            metrics::counter!("tessera_store_placement_heartbeats_total", "kind" => "range")
                .increment(1);
        }
    }

    /// Split checks by size, key count and load; asks ids for each split wanted.
    fn ask_splits(&mut self, state: &mut PlacementState) {
        let mut wanted = match self.split_check() {
            Ok(wanted) => wanted,
            Err(error) => {
                tracing::warn!(%error, "split check failed");
                Vec::new()
            }
        };
        let window_ms = u64::from(self.config.split_check_ticks) * self.config.tick_interval_ms;
        for peer in self.peers.values_mut() {
            let load = std::mem::take(&mut peer.load);
            if self.config.load_split_qps == 0
                || !peer.is_leader()
                || wanted.iter().any(|w| w.range == peer.range())
            {
                continue;
            }
            let qps = load.requests.saturating_mul(1000) / window_ms.max(1);
            if qps < self.config.load_split_qps {
                continue;
            }
            let Some(key) = load.median() else { continue };
            if key.as_ref() <= peer.descriptor.start_key.as_ref()
                || !peer.descriptor.contains_key(&key)
            {
                continue;
            }
            tracing::info!(range = %peer.range(), qps, "hot range: splitting by load");
            metrics::counter!("tessera_store_load_splits_asked_total").increment(1);
            wanted.push(SplitWanted {
                range: peer.range(),
                epoch: peer.descriptor.epoch,
                split_key: key,
            });
        }
        for split in wanted {
            let Some(peer) = self.peers.get(&split.range) else { continue };
            if state.splits_asked.values().any(|asked| asked.range == split.range) {
                continue;
            }
            let token = state.send(PlacementRequest::AskSplit {
                descriptor: peer.descriptor.clone(),
                split_count: 1,
            });
            state.splits_asked.insert(
                token,
                SplitAsked { range: split.range, epoch: split.epoch, key: split.split_key },
            );
        }
    }

    fn on_placement_answer(
        &mut self,
        state: &mut PlacementState,
        token: u64,
        answer: Result<PlacementResponse, RpcError>,
    ) {
        if let Some(stale) = state.stale_asked.remove(&token) {
            match answer {
                Ok(PlacementResponse::GetRangeById { route }) => {
                    self.on_stale_answer(stale, &route.descriptor);
                }
                Ok(_) => {}
                Err(error) => tracing::debug!(range = %stale.range, %error, "range lookup failed"),
            }
            return;
        }
        let asked = state.splits_asked.remove(&token);
        match (answer, asked) {
            (Ok(PlacementResponse::AskSplit { splits }), Some(asked)) => {
                let Some(ids) = splits.into_iter().next() else { return };
                let outbox = state.outbox.clone();
                let range = asked.range;
                self.split(
                    range,
                    asked.epoch,
                    asked.key,
                    ids.new_range,
                    ids.new_replica_ids,
                    Box::new(move |result| match result {
                        Ok((left, right)) => outbox
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .push(PlacementRequest::ReportSplit { ranges: vec![left, right] }),
                        Err(error) => tracing::info!(%range, %error, "split not done"),
                    }),
                );
            }
            (Ok(PlacementResponse::RangeHeartbeat { range, epoch, command: Some(command) }), _) => {
                self.run_command(state, range, epoch, command);
            }
            (Ok(_), _) => {}
            (Err(error), asked) => {
                tracing::debug!(%error, split = asked.is_some(), "placement request failed");
            }
        }
    }

    /// Runs a scheduling command on `range`'s leader, if the epoch still matches.
    fn run_command(
        &mut self,
        state: &mut PlacementState,
        range: RangeId,
        epoch: RangeEpoch,
        command: ScheduleCommand,
    ) {
        let Some(peer) = self.peers.get(&range) else { return };
        if !peer.is_leader() || peer.descriptor.epoch != epoch {
            tracing::debug!(%range, ?command, "stale scheduling command ignored");
            return;
        }
        let kind = match &command {
            ScheduleCommand::TransferLeader { .. } => "transfer_leader",
            ScheduleCommand::ChangeReplicas { .. } => "change_replicas",
            ScheduleCommand::Split { .. } => "split",
            ScheduleCommand::Merge { .. } => "merge",
        };
        metrics::counter!("tessera_store_operators_total", "kind" => kind).increment(1);
        tracing::info!(%range, ?command, "running a scheduling command");
        match command {
            ScheduleCommand::TransferLeader { to } => {
                if let Err(error) = self.transfer_leader(range, to.id) {
                    tracing::info!(%range, %error, "leader transfer refused");
                }
            }
            ScheduleCommand::ChangeReplicas { changes } => {
                let mapped: Result<Vec<_>, String> =
                    changes.iter().map(|change| replica_change(&peer.descriptor, change)).collect();
                match mapped {
                    Ok(changes) => self.change_replicas(
                        range,
                        epoch,
                        &changes,
                        Box::new(move |result| {
                            if let Err(error) = result {
                                tracing::info!(%range, %error, "membership change not done");
                            }
                        }),
                    ),
                    Err(reason) => tracing::warn!(%range, %reason, "membership change refused"),
                }
            }
            ScheduleCommand::Split { keys: split_keys } => {
                let key = match split_keys.into_iter().next() {
                    Some(key) => Some(key),
                    None => {
                        let span =
                            keys::data_span(&peer.descriptor.start_key, &peer.descriptor.end_key);
                        self.kv
                            .split_key(&span)
                            .ok()
                            .flatten()
                            .and_then(|key| keys::user_key(&key).map(Bytes::copy_from_slice))
                    }
                };
                let Some(key) = key.filter(|key| {
                    key.as_ref() > peer.descriptor.start_key.as_ref()
                        && peer.descriptor.contains_key(key)
                }) else {
                    tracing::info!(%range, "no key to split at");
                    return;
                };
                let token = state.send(PlacementRequest::AskSplit {
                    descriptor: peer.descriptor.clone(),
                    split_count: 1,
                });
                state.splits_asked.insert(token, SplitAsked { range, epoch, key });
            }
            ScheduleCommand::Merge { .. } => {
                tracing::warn!(%range, "merge asked, which this store does not do yet");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use tessera_wire::ids::StoreId;
    use tessera_wire::raft::ReplicaId;
    use tessera_wire::range::Replica;

    use super::*;

    #[test]
    fn scheduling_changes_map_to_learner_first_steps() {
        let voter = Replica { id: ReplicaId(1), store_id: StoreId(1), role: ReplicaRole::Voter };
        let learner =
            Replica { id: ReplicaId(2), store_id: StoreId(2), role: ReplicaRole::Learner };
        let descriptor = RangeDescriptor { replicas: vec![voter, learner], ..Default::default() };
        let change = |op, replica| tessera_wire::placement::ReplicaChange { op, replica };
        let new = Replica { id: ReplicaId(9), store_id: StoreId(9), role: ReplicaRole::Learner };
        assert_eq!(
            replica_change(&descriptor, &change(ReplicaChangeOp::AddLearner, new)),
            Ok(ReplicaChange::AddLearner { id: ReplicaId(9), store_id: StoreId(9) })
        );
        assert_eq!(
            replica_change(&descriptor, &change(ReplicaChangeOp::AddVoter, learner)),
            Ok(ReplicaChange::Promote { id: ReplicaId(2) })
        );
        assert_eq!(
            replica_change(&descriptor, &change(ReplicaChangeOp::AddLearner, voter)),
            Ok(ReplicaChange::Demote { id: ReplicaId(1) })
        );
        assert_eq!(
            replica_change(&descriptor, &change(ReplicaChangeOp::Remove, learner)),
            Ok(ReplicaChange::Remove { id: ReplicaId(2) })
        );
        assert!(replica_change(&descriptor, &change(ReplicaChangeOp::Remove, voter)).is_err());
        assert!(replica_change(&descriptor, &change(ReplicaChangeOp::AddVoter, new)).is_err());
    }

    #[test]
    fn disk_space_reads_the_nearest_existing_directory() {
        let dir = tempfile::tempdir().unwrap();
        let (capacity, available) = disk_space(&dir.path().join("not/yet/there"));
        assert!(capacity > 0 && available <= capacity);
    }
}
