//! Time: ticks drive elections and heartbeats of awake ranges only; idle ranges quiesce and
//! stay asleep until traffic or node liveness wakes them. Reads past their deadline are
//! answered `Timeout`, and leadership lost fails reads still waiting for a read index.

use std::collections::VecDeque;

use tessera_engine::{KvEngine, RaftLogEngine};
use tessera_raft::ReplicaId;
use tessera_wire::errors::RpcError;
use tessera_wire::ids::{RangeId, StoreId};

use crate::env::Network;
use crate::fsm::Store;

impl<R: RaftLogEngine, K: KvEngine, N: Network> Store<R, K, N> {
    /// One tick for every awake range.
    pub fn tick(&mut self) {
        self.ticks += 1;
        self.net.tick();
        let now = self.ticks;
        if now.is_multiple_of(u64::from(self.config.election_ticks)) && !self.early.is_empty() {
            // Held past an election timeout: the senders have moved on.
            self.stats.messages_dropped += self.early.len() as u64;
            self.early.clear();
        }
        if now.is_multiple_of(u64::from(self.config.log_gc_ticks)) {
            self.gc_due = true;
        }
        if now.is_multiple_of(u64::from(self.config.heartbeat_ticks)) {
            self.send_tombstones();
        }
        self.placement_tick();
        if now.is_multiple_of(u64::from(self.config.election_ticks)) {
            self.check_stale_replicas();
        }
        let quiesce_after = self.config.quiesce_after_ticks;
        let mut quiesced = 0u64;
        // Node liveness, asked once per store per tick (the network may take locks to
        // answer, and thousands of sleeping ranges ask about the same few stores).
        let mut liveness: Vec<(StoreId, bool)> = Vec::new();
        let net = &self.net;
        let mut alive = |store: StoreId| {
            if let Some((_, up)) = liveness.iter().find(|(id, _)| *id == store) {
                return *up;
            }
            let up = net.store_alive(store);
            liveness.push((store, up));
            up
        };
        for (range, peer) in &mut self.peers {
            // Expire reads whatever the range's state.
            if peer.reads.iter().any(|read| read.deadline_tick <= now) {
                let (expired, kept): (VecDeque<_>, _) = std::mem::take(&mut peer.reads)
                    .into_iter()
                    .partition(|r| r.deadline_tick <= now);
                peer.reads = kept;
                for read in expired {
                    (read.respond)(Err(RpcError::Timeout));
                }
            }
            if peer.raw.is_quiesced() {
                // A sleeping follower whose leader's store is down wakes and will campaign; a
                // sleeping leader wakes when a follower it slept without comes back.
                let wake = if peer.is_leader() {
                    peer.slept_without.iter().any(|store| alive(*store))
                } else {
                    peer.leader == ReplicaId::NONE
                        || peer.store_of(peer.leader).is_none_or(|store| !alive(store))
                };
                if !wake {
                    quiesced += 1;
                    continue;
                }
                peer.raw.wake();
            }
            peer.raw.tick();
            peer.idle_ticks = peer.idle_ticks.saturating_add(1);
            self.dirty.insert(*range);
            if quiesce_after > 0
                && peer.is_leader()
                && peer.idle_ticks >= quiesce_after
                && peer.reads.is_empty()
                && peer.proposals.is_empty()
            {
                let down: Vec<_> = peer
                    .descriptor
                    .replicas
                    .iter()
                    .filter(|replica| !alive(replica.store_id))
                    .copied()
                    .collect();
                let unreachable: Vec<ReplicaId> = down.iter().map(|replica| replica.id).collect();
                if peer.raw.quiesce(&unreachable) {
                    peer.slept_without = down.iter().map(|replica| replica.store_id).collect();
                }
            }
        }
        metrics::gauge!("tessera_store_quiesced_ranges").set(quiesced as f64);
        metrics::gauge!("tessera_store_leaders")
            .set(self.peers.values().filter(|peer| peer.is_leader()).count() as f64);
    }

    /// The range lost (or never had) leadership: reads still waiting for a read index from
    /// this replica as leader will not get one.
    pub(crate) fn on_lost_leadership(&mut self, range: RangeId) {
        let Some(peer) = self.peers.get_mut(&range) else { return };
        let error = peer.not_leader();
        let (lost, kept): (Vec<_>, Vec<_>) =
            std::mem::take(&mut peer.reads).into_iter().partition(|read| read.index.is_none());
        peer.reads = kept.into();
        for read in lost {
            (read.respond)(Err(error.clone()));
        }
    }
}
