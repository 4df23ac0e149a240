//! Apply: committed entries become KV writes, all ranges of a round in one batch with each
//! range's apply state; then proposers are answered by (term, index).

use std::collections::HashMap;

use bytes::Bytes;
use tessera_engine::codec::ApplyState;
use tessera_engine::{Cf, KeySpan, KvBatch, KvEngine, KvRead, RaftLogEngine, keys};
use tessera_raft::{Entry, EntryKind};
use tessera_wire::errors::RpcError;
use tessera_wire::ids::RangeId;
use tessera_wire::kv::KvResponse;
use tessera_wire::range::RangeDescriptor;

use crate::command::{Command, WriteOp};
use crate::env::Network;
use crate::error::Result;
use crate::fsm::Store;
use crate::operation::write::check_command_keys;
use crate::peer::{Proposal, Responder};

/// The result of applying one entry, for its proposer.
#[derive(Debug)]
pub(crate) enum Applied {
    /// Nothing to answer (an empty entry, a membership change).
    Nothing,
    /// The data write or CAS happened (or was refused by the state machine).
    Kv(Result<Option<KvResponse>, RpcError>),
    /// The split happened: left and right descriptors.
    Split(Result<(RangeDescriptor, RangeDescriptor), RpcError>),
    /// The membership change happened: the new descriptor.
    Change(Result<RangeDescriptor, RpcError>),
}

/// An answer waiting until the round's KV batch is written.
pub(crate) struct Answer {
    pub(crate) proposal: Proposal,
    pub(crate) applied: Applied,
}

/// A range created by a split applied this round, to start once the batch is written.
pub(crate) struct NewRange {
    pub(crate) descriptor: RangeDescriptor,
    /// Whether this store led the parent: the new range campaigns at once.
    pub(crate) campaign: bool,
}

/// The KV batch of a round and what must happen once it is written.
pub(crate) struct ApplyContext<B: KvBatch> {
    batch: B,
    // Values written by this batch so far (`None`: deleted), so that a compare-and-swap
    // sees the effects of earlier entries of the same round.
    overlay: HashMap<Vec<u8>, Option<Bytes>>,
    deleted_spans: Vec<KeySpan>,
    pub(crate) answers: Vec<Answer>,
    pub(crate) new_ranges: Vec<NewRange>,
    pub(crate) applied_to: Vec<(RangeId, tessera_raft::LogIndex)>,
    /// Replicas on this store that applied their own removal: deleted once the batch is
    /// written, each leaving a tombstone with this descriptor.
    pub(crate) destroyed: Vec<RangeDescriptor>,
}

impl<B: KvBatch> ApplyContext<B> {
    pub(crate) fn new(batch: B) -> Self {
        Self {
            batch,
            overlay: HashMap::new(),
            deleted_spans: Vec::new(),
            answers: Vec::new(),
            new_ranges: Vec::new(),
            applied_to: Vec::new(),
            destroyed: Vec::new(),
        }
    }

    fn get<K: KvRead>(&self, kv: &K, data_key: &[u8]) -> Result<Option<Bytes>> {
        if let Some(value) = self.overlay.get(data_key) {
            return Ok(value.clone());
        }
        if self.deleted_spans.iter().any(|span| span.contains(data_key)) {
            return Ok(None);
        }
        Ok(kv.get(Cf::Default, data_key)?.map(Bytes::from))
    }

    fn put(&mut self, data_key: Vec<u8>, value: Bytes) {
        self.batch.put(Cf::Default, &data_key, &value);
        // `Bytes` shares the command's buffer: no copy of the value.
        self.overlay.insert(data_key, Some(value));
    }

    fn delete(&mut self, data_key: Vec<u8>) {
        self.batch.delete(Cf::Default, &data_key);
        self.overlay.insert(data_key, None);
    }

    fn delete_span(&mut self, span: KeySpan) {
        self.batch.delete_span(Cf::Default, &span);
        self.overlay.retain(|key, _| !span.contains(key));
        self.deleted_spans.push(span);
    }

    pub(crate) fn batch_mut(&mut self) -> &mut B {
        &mut self.batch
    }
}

/// Answers one proposer (on the apply worker, once the batch holding its entry is written).
pub(crate) fn answer(Answer { proposal, applied }: Answer) {
    metrics::histogram!("tessera_store_propose_to_apply_seconds")
        .record(proposal.proposed_at.elapsed().as_secs_f64());
    match (proposal.respond, applied) {
        (Responder::Kv(respond), Applied::Kv(result)) => {
            respond(result.and_then(|response| {
                response.or(proposal.ok).ok_or_else(|| RpcError::Internal {
                    message: "write applied without a response".to_owned(),
                })
            }));
        }
        (Responder::Split(respond), Applied::Split(result)) => respond(result),
        (Responder::ChangeReplicas(respond), Applied::Change(result)) => respond(result),
        (respond, _) => respond.fail(RpcError::Internal {
            message: "proposal answered by an entry of another kind".to_owned(),
        }),
    }
}

impl<R: RaftLogEngine, K: KvEngine, N: Network> Store<R, K, N> {
    /// Applies `entries` of `range` into `apply`, in order.
    pub(crate) fn apply_entries(
        &mut self,
        range: RangeId,
        entries: &[Entry],
        apply: &mut ApplyContext<K::Batch>,
    ) -> Result<()> {
        for entry in entries {
            let applied = match entry.kind {
                EntryKind::ConfChange => self.apply_conf_change(range, entry, apply),
                EntryKind::Normal if entry.data.is_empty() => Applied::Nothing,
                EntryKind::Normal => match Command::decode(&entry.data) {
                    Ok(command) => self.apply_command(range, command, apply)?,
                    Err(reason) => {
                        // Every replica decodes the same bytes the same way, so skipping is
                        // deterministic; the proposer learns why.
                        tracing::error!(%range, index = %entry.index, %reason, "undecodable command skipped");
                        Applied::Kv(Err(RpcError::Internal {
                            message: format!("undecodable command: {reason}"),
                        }))
                    }
                },
            };
            let peer = self.peers.get_mut(&range).expect("applying ranges exist");
            peer.applied = ApplyState { applied_index: entry.index, applied_term: entry.term };
            // Answer (or expire) the proposals up to this index.
            let mut result = Some(applied);
            while let Some(front) = peer.proposals.front() {
                if front.index > entry.index {
                    break;
                }
                let proposal = peer.proposals.pop_front().expect("front exists");
                if proposal.index == entry.index && proposal.term == entry.term {
                    // Committed entries are applied in the round that learns they committed.
                    metrics::histogram!("tessera_store_propose_to_commit_seconds")
                        .record(proposal.proposed_at.elapsed().as_secs_f64());
                    let applied = result.take().unwrap_or(Applied::Nothing);
                    apply.answers.push(Answer { proposal, applied });
                } else {
                    // Another leader's entry took its index: it was never committed.
                    proposal.respond.fail(RpcError::StaleCommand);
                }
            }
        }
        let peer = self.peers.get_mut(&range).expect("applying ranges exist");
        apply.batch_mut().put_apply_state(range, &peer.applied);
        apply.applied_to.push((range, peer.applied.applied_index));
        Ok(())
    }
}

impl<R: RaftLogEngine, K: KvEngine, N: Network> Store<R, K, N> {
    fn apply_command(
        &mut self,
        range: RangeId,
        command: Command,
        apply: &mut ApplyContext<K::Batch>,
    ) -> Result<Applied> {
        if matches!(command, Command::CompareAndSwap { .. }) {
            // Its read must see every earlier round's writes, which the apply worker may
            // still hold (this round's are in the overlay).
            self.settle_applies()?;
        }
        let peer = self.peers.get_mut(&range).expect("applying ranges exist");
        let descriptor = &peer.descriptor;
        if let Command::CompactLog { index, .. } = command {
            // Valid under any epoch: it concerns the log, not the keys.
            peer.compact_wanted = peer.compact_wanted.max(index);
            return Ok(Applied::Nothing);
        }
        let header = *command.header();
        if header.range != range || header.epoch.version != descriptor.epoch.version {
            // A split applied since the proposal may have moved the key: name its holder.
            let current = descriptor.clone();
            let created = apply.new_ranges.iter().map(|new| &new.descriptor);
            let refusal = self.epoch_not_match_at(current, command.first_key(), created);
            return Ok(match command {
                Command::Split { .. } => Applied::Split(Err(refusal)),
                _ => Applied::Kv(Err(refusal)),
            });
        }
        if let Err(error) = check_command_keys(descriptor, &command) {
            return Ok(match command {
                Command::Split { .. } => Applied::Split(Err(error)),
                _ => Applied::Kv(Err(error)),
            });
        }
        match command {
            Command::Write { ops, .. } => {
                for op in ops {
                    match op {
                        WriteOp::Put { key, value } => {
                            peer.write_load.bytes += (key.len() + value.len()) as u64;
                            peer.write_load.keys += 1;
                            peer.traffic.write(key.len() + value.len());
                            peer.store_traffic.write(key.len() + value.len());
                            apply.put(keys::data_key(&key), value);
                        }
                        WriteOp::Delete { key } => apply.delete(keys::data_key(&key)),
                        WriteOp::DeleteRange { start, end } => {
                            let end = if end.is_empty() { descriptor.end_key.clone() } else { end };
                            apply.delete_span(keys::data_span(&start, &end));
                        }
                    }
                }
                Ok(Applied::Kv(Ok(None)))
            }
            Command::CompareAndSwap { key, expected, value, .. } => {
                let data_key = keys::data_key(&key);
                let previous = apply.get(&self.kv, &data_key)?;
                let succeeded = previous.as_deref() == expected.as_deref();
                if succeeded {
                    let written = key.len() + value.as_ref().map_or(0, Bytes::len);
                    peer.write_load.bytes += written as u64;
                    peer.write_load.keys += 1;
                    peer.traffic.write(written);
                    peer.store_traffic.write(written);
                    match value {
                        Some(value) => apply.put(data_key, value),
                        None => apply.delete(data_key),
                    }
                }
                Ok(Applied::Kv(Ok(Some(KvResponse::RawCompareAndSwap { succeeded, previous }))))
            }
            Command::CompactLog { .. } => Ok(Applied::Nothing),
            Command::Split { split_key, new_range, new_replicas, .. } => Ok(Applied::Split(
                self.apply_split(range, &split_key, new_range, &new_replicas, apply),
            )),
        }
    }

    /// After the round's entries are applied logically: hands the KV batch and the answers
    /// to the apply worker, tells the Raft core how far each range applied, and starts
    /// split-off ranges and destroys removed replicas (once the batch is in the engine:
    /// both read or rewrite what it holds).
    pub(crate) fn after_apply(&mut self, apply: ApplyContext<K::Batch>) -> Result<()> {
        let ApplyContext { batch, answers, new_ranges, applied_to, destroyed, .. } = apply;
        if self.applier.staged().batch.is_some() {
            // One batch per job: an earlier one goes out first.
            self.applier.submit(&self.kv)?;
        }
        let job = self.applier.staged();
        if !batch.is_empty() {
            job.batch = Some(batch);
        }
        job.answers.extend(answers);
        for (range, index) in applied_to {
            if let Some(peer) = self.peers.get_mut(&range) {
                peer.raw.advance_apply_to(index);
                self.dirty.insert(range);
            }
        }
        if new_ranges.is_empty() && destroyed.is_empty() {
            return Ok(());
        }
        self.settle_applies()?;
        for new in new_ranges {
            let range = new.descriptor.id;
            self.replace_uninitialized(range)?;
            self.start_peer(new.descriptor)?;
            self.stats.splits += 1;
            if new.campaign {
                self.campaign(range);
            }
        }
        for tombstone in destroyed {
            self.destroy_peer(tombstone)?;
        }
        Ok(())
    }
}
