//! Requests: checks against range id, epoch and key span, then writes are proposed to Raft
//! and answered at apply; reads go to `operation::read`.

use bytes::Bytes;
use tessera_engine::{KvEngine, RaftLogEngine};
use tessera_raft::RaftError;
use tessera_wire::errors::RpcError;
use tessera_wire::kv::{KvCommand, KvRequest, KvResponse, ReadMode};
use tessera_wire::range::RangeDescriptor;

use crate::command::{Command, CommandHeader, WriteOp};
use crate::env::Network;
use crate::fsm::Store;
use crate::peer::{KvResponder, Peer, Proposal, Responder};

/// The first key of `keys` outside `descriptor`, as a `KeyNotInRange` answer.
pub(crate) fn check_keys<'a>(
    descriptor: &RangeDescriptor,
    keys: impl IntoIterator<Item = &'a Bytes>,
) -> Result<(), RpcError> {
    for key in keys {
        if !descriptor.contains_key(key) {
            return Err(key_not_in_range(descriptor, key));
        }
    }
    Ok(())
}

pub(crate) fn key_not_in_range(descriptor: &RangeDescriptor, key: &Bytes) -> RpcError {
    RpcError::KeyNotInRange {
        key: key.clone(),
        range: descriptor.id,
        start_key: descriptor.start_key.clone(),
        end_key: descriptor.end_key.clone(),
    }
}

/// A `[start, end)` span (end empty: unbounded) that must lie within the range.
pub(crate) fn check_span(
    descriptor: &RangeDescriptor,
    start: &Bytes,
    end: &Bytes,
) -> Result<(), RpcError> {
    check_keys(descriptor, [start])?;
    let end_ok = if descriptor.end_key.is_empty() {
        true
    } else {
        !end.is_empty() && end <= &descriptor.end_key
    };
    if !end_ok || (!end.is_empty() && end < start) {
        return Err(key_not_in_range(descriptor, end));
    }
    Ok(())
}

impl<R: RaftLogEngine, K: KvEngine, N: Network> Store<R, K, N> {
    /// Serves a data request: raw reads and writes. Transactional commands belong to the
    /// transaction layer and are refused here.
    pub fn on_kv_request(&mut self, request: KvRequest, respond: KvResponder) {
        let context = request.context;
        let range = context.range;
        if context.store_id.0 != 0 && context.store_id != self.ident.store_id {
            respond(Err(RpcError::StoreNotMatch {
                requested: context.store_id,
                actual: self.ident.store_id,
            }));
            return;
        }
        let Some(peer) = self.peers.get_mut(&range).filter(|peer| peer.is_initialized()) else {
            respond(Err(RpcError::RangeNotFound { range }));
            return;
        };
        if context.epoch.version != peer.descriptor.epoch.version
            || context.epoch.conf_ver > peer.descriptor.epoch.conf_ver
        {
            let current = peer.descriptor.clone();
            respond(Err(self.epoch_not_match(current, &request.command)));
            return;
        }
        peer.idle_ticks = 0;
        if peer.is_leader()
            && let Some(key) = sample_key(&request.command)
        {
            let draw = self.rng.next_u64();
            peer.load.record(key, draw);
        }
        let header = CommandHeader { range, epoch: peer.descriptor.epoch };
        let (command, ok) = match request.command {
            command
            @ (KvCommand::RawGet(_) | KvCommand::RawBatchGet(_) | KvCommand::RawScan(_)) => {
                if context.read_mode == ReadMode::StaleRead {
                    respond(Err(RpcError::InvalidRequest {
                        message: "stale reads are not served by raw KV".to_owned(),
                    }));
                    return;
                }
                self.start_read(range, command, context.read_mode, respond);
                return;
            }
            KvCommand::RawPut(put) => (
                Command::Write {
                    header,
                    ops: vec![WriteOp::Put { key: put.key, value: put.value }],
                },
                Some(KvResponse::RawPut),
            ),
            KvCommand::RawBatchPut(put) => (
                Command::Write {
                    header,
                    ops: put
                        .pairs
                        .into_iter()
                        .map(|pair| WriteOp::Put { key: pair.key, value: pair.value })
                        .collect(),
                },
                Some(KvResponse::RawBatchPut),
            ),
            KvCommand::RawDelete(delete) => (
                Command::Write { header, ops: vec![WriteOp::Delete { key: delete.key }] },
                Some(KvResponse::RawDelete),
            ),
            KvCommand::RawDeleteRange(delete) => (
                Command::Write {
                    header,
                    ops: vec![WriteOp::DeleteRange {
                        start: delete.start_key,
                        end: delete.end_key,
                    }],
                },
                Some(KvResponse::RawDeleteRange),
            ),
            KvCommand::RawCompareAndSwap(cas) => (
                Command::CompareAndSwap {
                    header,
                    key: cas.key,
                    expected: cas.expected,
                    value: cas.value,
                },
                None,
            ),
            _ => {
                respond(Err(RpcError::InvalidRequest {
                    message: "transactional commands are not served by raw KV".to_owned(),
                }));
                return;
            }
        };
        self.propose(range, &command, ok, Responder::Kv(respond));
    }

    /// Proposes `command` on `range`'s leader after checking the keys it touches; `respond`
    /// is answered at apply (or now, if the proposal is refused).
    pub(crate) fn propose(
        &mut self,
        range: RangeId,
        command: &Command,
        ok: Option<KvResponse>,
        respond: Responder,
    ) {
        let Some(peer) = self.peers.get_mut(&range) else {
            respond.fail(RpcError::RangeNotFound { range });
            return;
        };
        if let Err(error) = check_command_keys(&peer.descriptor, command) {
            respond.fail(error);
            return;
        }
        let data = command.encode();
        if data.len() as u64 > self.config.raft_entry_bytes_max {
            respond.fail(RpcError::RaftEntryTooLarge {
                range,
                entry_bytes: data.len() as u64,
                entry_bytes_max: self.config.raft_entry_bytes_max,
            });
            return;
        }
        if !peer.is_leader() {
            respond.fail(peer.not_leader());
            return;
        }
        match peer.raw.propose(data) {
            Ok(index) => {
                Self::track_proposal(peer, index, ok, respond);
                self.dirty.insert(range);
            }
            Err(error) => respond.fail(refusal(peer, &error)),
        }
    }

    /// Queues the answer to a proposal the core accepted at `index` in the current term.
    pub(crate) fn track_proposal(
        peer: &mut Peer<R>,
        index: tessera_raft::LogIndex,
        ok: Option<KvResponse>,
        respond: Responder,
    ) {
        // Proposals at this index or above were made in an earlier term and their entries
        // are gone from this leader's log: they were never committed and never will be.
        // (Left queued, they would sit ahead of this one and have it answered as stale when
        // it applies.)
        while peer.proposals.back().is_some_and(|back| back.index >= index) {
            let stale = peer.proposals.pop_back().expect("back exists");
            stale.respond.fail(RpcError::StaleCommand);
        }
        let term = peer.raw.raft().term();
        peer.proposals.push_back(Proposal {
            index,
            term,
            ok,
            respond,
            proposed_at: std::time::Instant::now(),
        });
        metrics::counter!("tessera_store_proposals_total").increment(1);
    }
}

use tessera_wire::ids::RangeId;

impl<R: RaftLogEngine, K: KvEngine, N: Network> Store<R, K, N> {
    /// `EpochNotMatch` for a request that `current` refused: with `current`, the descriptor
    /// of the range on this store that now holds the request's key, when a split moved it.
    /// The client then learns the new range at once; the placement driver may not know it
    /// yet, and a route from there would be refused again. (A scan of the store's ranges:
    /// only refusals pay for it.)
    pub(crate) fn epoch_not_match(
        &self,
        current: RangeDescriptor,
        command: &KvCommand,
    ) -> RpcError {
        self.epoch_not_match_at(current, sample_key(command), [])
    }

    /// `EpochNotMatch` with `current` and, when `key` left it, the descriptor of the range
    /// holding `key` now: one of this store's ranges, or of `created` (right-hand ranges
    /// split off in the batch being applied, not yet replicas here). See
    /// [`Self::epoch_not_match`].
    pub(crate) fn epoch_not_match_at<'a>(
        &'a self,
        current: RangeDescriptor,
        key: Option<&Bytes>,
        created: impl IntoIterator<Item = &'a RangeDescriptor>,
    ) -> RpcError {
        let holder = key.filter(|key| !current.contains_key(key)).and_then(|key| {
            self.peers
                .values()
                .filter(|peer| peer.is_initialized())
                .map(|peer| &peer.descriptor)
                .chain(created)
                .find(|descriptor| descriptor.contains_key(key))
        });
        let mut ranges = vec![current];
        ranges.extend(holder.cloned());
        RpcError::EpochNotMatch { ranges }
    }
}

/// The key a request is sampled by for load-based splitting.
fn sample_key(command: &KvCommand) -> Option<&Bytes> {
    match command {
        KvCommand::RawGet(get) => Some(&get.key),
        KvCommand::RawBatchGet(get) => get.keys.first(),
        KvCommand::RawPut(put) => Some(&put.key),
        KvCommand::RawBatchPut(put) => put.pairs.first().map(|pair| &pair.key),
        KvCommand::RawDelete(delete) => Some(&delete.key),
        KvCommand::RawScan(scan) => Some(&scan.start_key),
        KvCommand::RawCompareAndSwap(cas) => Some(&cas.key),
        _ => None,
    }
}

/// Maps the Raft core's refusal of a proposal to what the client is told.
pub(crate) fn refusal<R: RaftLogEngine>(peer: &Peer<R>, error: &RaftError) -> RpcError {
    match error {
        RaftError::NotLeader { .. } | RaftError::NotAVoter { .. } => peer.not_leader(),
        RaftError::UncommittedLogFull => RpcError::ServerBusy {
            reason: format!("range {}: too many uncommitted writes", peer.range()),
            retry_after_ms: 20,
        },
        RaftError::TransferInProgress { .. } => RpcError::ServerBusy {
            reason: format!("range {}: leadership transfer in progress", peer.range()),
            retry_after_ms: 50,
        },
        RaftError::ConfChangePending { index } => RpcError::ServerBusy {
            reason: format!(
                "range {}: the membership change at {index} is not applied yet",
                peer.range()
            ),
            retry_after_ms: 50,
        },
        RaftError::ConfChange(error) => RpcError::InvalidRequest { message: error.to_string() },
        other => RpcError::Internal { message: other.to_string() },
    }
}

/// Checks the keys a data command touches against the range.
pub(crate) fn check_command_keys(
    descriptor: &RangeDescriptor,
    command: &Command,
) -> Result<(), RpcError> {
    match command {
        Command::Write { ops, .. } => {
            for op in ops {
                match op {
                    WriteOp::Put { key, .. } | WriteOp::Delete { key } => {
                        check_keys(descriptor, [key])?;
                    }
                    WriteOp::DeleteRange { start, end } => check_span(descriptor, start, end)?,
                }
            }
            Ok(())
        }
        Command::CompareAndSwap { key, .. } => check_keys(descriptor, [key]),
        Command::CompactLog { .. } => Ok(()),
        Command::Split { split_key, .. } => {
            if split_key.as_ref() <= descriptor.start_key.as_ref()
                || !descriptor.contains_key(split_key)
            {
                return Err(key_not_in_range(descriptor, split_key));
            }
            Ok(())
        }
    }
}
