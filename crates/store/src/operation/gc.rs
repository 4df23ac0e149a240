//! Log truncation. The leader proposes `CompactLog` once a range's log holds more than the
//! configured number of applied entries, up to the slowest replica's match among replicas on
//! stores believed up (one on a store that is down, or one that never answered, gets a
//! snapshot instead of holding the log back forever). Every replica
//! applies it and truncates no further than its own durable apply index, so an entry whose
//! effects could still vanish in a crash is never removed.

use tessera_engine::{KvEngine, RaftLogEngine};
use tessera_raft::LogIndex;

use crate::command::{Command, CommandHeader};
use crate::env::Network;
use crate::error::Result;
use crate::fsm::Store;
use crate::peer::Responder;

impl<R: RaftLogEngine, K: KvEngine, N: Network> Store<R, K, N> {
    /// One truncation check over every range (every `log_gc_ticks`).
    pub(crate) fn log_gc(&mut self) -> Result<()> {
        // Makes every apply so far durable, which advances the durable apply indexes.
        self.kv.sync_wal()?;
        let mut batch = self.raft_engine.batch();
        let mut proposals = Vec::new();
        for (range, peer) in &mut self.peers {
            let truncated = peer.raw.store().raft_state().truncated_index;
            if peer.is_leader()
                && peer.applied.applied_index.0 > truncated.0 + self.config.log_gc_count_limit
            {
                // Replicas on stores believed down, and replicas that never answered (new
                // learners), catch up by snapshot: they do not hold the log back.
                let slowest = peer
                    .raw
                    .matched()
                    .iter()
                    .filter(|(id, matched)| {
                        *matched > LogIndex(0)
                            && peer.store_of(*id).is_some_and(|store| self.net.store_alive(store))
                    })
                    .map(|(_, matched)| *matched)
                    .min();
                let index = slowest.unwrap_or(LogIndex(0)).min(peer.applied.applied_index);
                if index > truncated && index > peer.compact_wanted {
                    proposals.push(Command::CompactLog {
                        header: CommandHeader { range: *range, epoch: peer.descriptor.epoch },
                        index,
                    });
                }
            }
            if peer.compact_wanted > truncated {
                let durable = self.kv.durable_apply_index(*range).unwrap_or(LogIndex(0));
                if let Some(to) = peer.raw.store_mut().stage_compaction(
                    &mut batch,
                    peer.compact_wanted,
                    durable,
                )? {
                    metrics::counter!("tessera_store_log_truncations_total").increment(1);
                    tracing::debug!(%range, %to, "log truncated");
                }
            }
        }
        // Not synced: a truncation lost in a crash is redone at the next check.
        self.write_raft(&mut batch, false)?;
        for command in proposals {
            let range = command.header().range;
            self.propose(range, &command, None, Responder::Nobody);
        }
        Ok(())
    }
}
