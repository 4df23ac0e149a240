//! Linearizable reads: every read asks the Raft core for a read index — the leader answers
//! from its lease while it holds (no network round), by a heartbeat round otherwise; a
//! follower (replica read) forwards to the leader — and is served once the replica has
//! applied up to that index, after re-checking its keys against the range as then applied.

use bytes::Bytes;
use tessera_engine::{Cf, KvCursor, KvEngine, KvRead, RaftLogEngine, keys};
use tessera_raft::ReadState;
use tessera_wire::errors::RpcError;
use tessera_wire::ids::RangeId;
use tessera_wire::kv::{KvCommand, KvPair, KvResponse, ReadMode};
use tessera_wire::range::RangeDescriptor;

use crate::env::Network;
use crate::error::StoreError;
use crate::fsm::Store;
use crate::fsm::apply_worker::ReadJob;
use crate::operation::write::{check_keys, check_span};
use crate::peer::{KvResponder, PendingRead};

impl<R: RaftLogEngine, K: KvEngine, N: Network> Store<R, K, N> {
    pub(crate) fn start_read(
        &mut self,
        range: RangeId,
        command: KvCommand,
        mode: ReadMode,
        respond: KvResponder,
    ) {
        let Some(peer) = self.peers.get_mut(&range) else {
            respond(Err(RpcError::RangeNotFound { range }));
            return;
        };
        let keys_ok = match &command {
            KvCommand::RawGet(get) => check_keys(&peer.descriptor, [&get.key]),
            KvCommand::RawBatchGet(get) => check_keys(&peer.descriptor, &get.keys),
            KvCommand::RawScan(scan) => {
                check_span(&peer.descriptor, &scan.start_key, &scan.end_key)
            }
            _ => Err(RpcError::InvalidRequest { message: "not a read".to_owned() }),
        };
        if let Err(error) = keys_ok {
            respond(Err(error));
            return;
        }
        if mode == ReadMode::Leader && !peer.is_leader() {
            respond(Err(peer.not_leader()));
            return;
        }
        let id = self.next_read_id;
        self.next_read_id += 1;
        if let Err(error) = peer.raw.read_index(Bytes::copy_from_slice(&id.to_be_bytes())) {
            respond(Err(crate::operation::write::refusal(peer, &error)));
            return;
        }
        peer.reads.push_back(PendingRead {
            id,
            command,
            epoch_version: peer.descriptor.epoch.version,
            index: None,
            deadline_tick: self.ticks + u64::from(self.config.read_timeout_ticks),
            respond,
        });
        self.dirty.insert(range);
    }

    /// Records answered read indexes.
    pub(crate) fn on_read_states(&mut self, range: RangeId, states: Vec<ReadState>) {
        let Some(peer) = self.peers.get_mut(&range) else { return };
        for state in states {
            let Ok(bytes) = <[u8; 8]>::try_from(state.context.as_ref()) else { continue };
            let id = u64::from_be_bytes(bytes);
            if let Some(read) = peer.reads.iter_mut().find(|read| read.id == id) {
                read.index = Some(state.index);
            }
        }
    }

    /// Serves every read whose index has been applied: at once when the apply worker holds
    /// no write, else behind the writes it holds (which the read must see).
    pub(crate) fn serve_reads(&mut self) {
        let inline = self.applier.is_idle();
        for peer in self.peers.values_mut() {
            if peer.reads.is_empty() {
                continue;
            }
            let applied = peer.applied.applied_index;
            let mut waiting = std::collections::VecDeque::new();
            for read in std::mem::take(&mut peer.reads) {
                match read.index {
                    Some(index) if index <= applied => {
                        if read.epoch_version != peer.descriptor.epoch.version {
                            (read.respond)(Err(RpcError::EpochNotMatch {
                                ranges: vec![peer.descriptor.clone()],
                            }));
                        } else if inline {
                            let result = execute_read(
                                &self.kv,
                                &peer.descriptor,
                                read.command,
                                self.config.scan_bytes_max,
                            );
                            if let Ok(response) = &result {
                                let (keys, bytes) = read_load(response);
                                peer.count_read(keys, bytes);
                            }
                            (read.respond)(result);
                        } else {
                            self.applier.staged().reads.push(ReadJob {
                                range: peer.range(),
                                descriptor: peer.descriptor.clone(),
                                command: read.command,
                                respond: read.respond,
                            });
                        }
                    }
                    _ => waiting.push_back(read),
                }
            }
            peer.reads = waiting;
        }
    }
}

/// Keys and bytes a read returned, for the range's traffic counters.
pub(crate) fn read_load(response: &tessera_wire::kv::KvResponse) -> (u64, u64) {
    use tessera_wire::kv::KvResponse;
    match response {
        KvResponse::RawGet { value } => (1, value.as_ref().map_or(0, |v| v.len() as u64)),
        KvResponse::RawBatchGet { pairs } | KvResponse::RawScan { pairs } => (
            pairs.len() as u64,
            pairs.iter().map(|pair| (pair.key.len() + pair.value.len()) as u64).sum(),
        ),
        _ => (0, 0),
    }
}

fn internal(error: &StoreError) -> RpcError {
    RpcError::Internal { message: error.to_string() }
}

/// Runs a read on the engine, against the range as applied.
pub(crate) fn execute_read<K: KvRead>(
    kv: &K,
    descriptor: &RangeDescriptor,
    command: KvCommand,
    scan_bytes_max: u64,
) -> Result<KvResponse, RpcError> {
    let engine_error = |error: tessera_engine::EngineError| internal(&StoreError::from(error));
    match command {
        KvCommand::RawGet(get) => {
            check_keys(descriptor, [&get.key])?;
            let value = kv.get(Cf::Default, &keys::data_key(&get.key)).map_err(engine_error)?;
            Ok(KvResponse::RawGet { value: value.map(Bytes::from) })
        }
        KvCommand::RawBatchGet(get) => {
            check_keys(descriptor, &get.keys)?;
            let mut pairs = Vec::new();
            for key in get.keys {
                if let Some(value) =
                    kv.get(Cf::Default, &keys::data_key(&key)).map_err(engine_error)?
                {
                    pairs.push(KvPair { key, value: Bytes::from(value) });
                }
            }
            Ok(KvResponse::RawBatchGet { pairs })
        }
        KvCommand::RawScan(scan) => {
            check_span(descriptor, &scan.start_key, &scan.end_key)?;
            let end =
                if scan.end_key.is_empty() { descriptor.end_key.clone() } else { scan.end_key };
            let span = keys::data_span(&scan.start_key, &end);
            let mut cursor = kv.cursor(Cf::Default, &span).map_err(engine_error)?;
            let mut valid = if scan.reverse {
                cursor.seek_to_last().map_err(engine_error)?
            } else {
                cursor.seek_to_first().map_err(engine_error)?
            };
            let limit = if scan.limit == 0 { usize::MAX } else { scan.limit as usize };
            let mut pairs = Vec::new();
            let mut bytes = 0u64;
            while valid && pairs.len() < limit && bytes < scan_bytes_max {
                let Some(key) = keys::user_key(cursor.key()) else { break };
                let value = if scan.key_only {
                    Bytes::new()
                } else {
                    Bytes::copy_from_slice(cursor.value())
                };
                bytes += (key.len() + value.len()) as u64;
                pairs.push(KvPair { key: Bytes::copy_from_slice(key), value });
                valid = if scan.reverse {
                    cursor.prev().map_err(engine_error)?
                } else {
                    cursor.next().map_err(engine_error)?
                };
            }
            Ok(KvResponse::RawScan { pairs })
        }
        _ => Err(RpcError::InvalidRequest { message: "not a read".to_owned() }),
    }
}
